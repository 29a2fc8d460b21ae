"""Raw's write of one batch as the day's partition grows. Raw holds each record once (``schema.RECORD_ID``), so a
write looks up the records the layer holds, narrowed to the batch's partitions and sequence range
(``lake.delta_files.SequenceScope``; the files are written by Spark's tasks); its baseline, measured beside it,
is a plain append of the same rows (the write before records had an identity, which a deleted checkpoint
doubled)."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import date
from pathlib import Path

import pyarrow as pa
from deltalake import write_deltalake

from bench.cases import timed
from sales_cdc import schema as S
from sales_cdc.config import LakeConfig
from sales_cdc.lake.delta import DeltaTables
from sales_cdc.lake.delta_files import DeltaFilesAppend
from sales_cdc.lake.layers import LakeBatch

DAY = date(2026, 12, 4)


def raw_rows(start: int, count: int) -> pa.Table:
    """``count`` raw rows of one day, with growing sequences (as a stream's batches have) and ~400-byte payloads."""
    numbers = range(start, start + count)
    payloads = [json.dumps({"eventID": f"e{i}", "eventName": "MODIFY", "dynamodb": {
        "Keys": {"orderid": {"S": f"o{i % 50_000}"}}, "SequenceNumber": str(10**20 + 10 * i),
        "NewImage": {"orderid": {"S": f"o{i % 50_000}"}, "product_name": {"S": "Phone " * 20},
                     "quantity": {"N": "3"}, "price": {"N": "199.00"}}}}) for i in numbers]
    return pa.table({S.PAYLOAD: payloads, S.CDC_EVENT_ID: [f"e{i}" for i in numbers],
                     S.RECORD_ID: [hashlib.sha256(p.encode()).hexdigest() for p in payloads],
                     S.CDC_SEQUENCE: [str(10**20 + 10 * i).zfill(S.SEQUENCE_WIDTH) for i in numbers],
                     S.EVENT_DATE: pa.array([DAY] * count, pa.date32())})


def raw_write(spark, workdir: Path, held: int, batch: int) -> dict:
    """Seconds of raw's write of a ``batch``-event batch into a day that holds ``held`` rows (in batches of that
    size, as a stream leaves them), and of a plain append of another such batch."""
    uri = str(workdir / f"raw-{uuid.uuid4().hex[:8]}")
    for start in range(0, held, batch):
        write_deltalake(uri, raw_rows(start, batch), mode="append", partition_by=[S.EVENT_DATE])
    rows, appended = spark.createDataFrame(raw_rows(held, batch)).cache(), raw_rows(held + batch, batch)
    rows.count()
    writer = DeltaFilesAppend(DeltaTables(LakeConfig(str(workdir)), "bench"), uri, lambda _: rows, S.RAW_IDENTITY,
                              S.EVENT_DATE)
    try:
        seconds = timed(lambda: writer.write(LakeBatch(1, "bench", None, None, None)))
        append = timed(lambda: write_deltalake(uri, appended, mode="append", partition_by=[S.EVENT_DATE]))
    finally:
        rows.unpersist()
        shutil.rmtree(uri, ignore_errors=True)
    return {"seconds": seconds, "append_s": append}
