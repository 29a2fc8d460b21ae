"""The raw layer's files, written by Spark's tasks and committed by delta-rs (``lake.delta_files``): each record
once against a model over random held and incoming records, the lookup reads only the files that can hold a
batch's records, a batch commits once, and the driver gets one short row per file."""

from __future__ import annotations

import hashlib
from datetime import date

import pyarrow as pa
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sales_cdc import schema as S
from sales_cdc.config import LakeConfig
from sales_cdc.lake import Lake
from sales_cdc.lake.delta import DeltaTables
from sales_cdc.lake.delta_files import DeltaFilesAppend, FileTarget, committed_files
from sales_cdc.lake.layers import LakeBatch
from sales_cdc.merge_rules import STORED_SNAPSHOT_SEQUENCE
from tests.helpers import ORDERS

DAYS = (date(2026, 12, 4), date(2026, 12, 5))
# a record: its payload (the identity is its hash), its sequence (a stream record's, the snapshot's, or none:
# undecodable) and its event date; the same record always has the same sequence, and the same date unless it is
# undecodable (no event time: the date it arrived, or was read by a source that gives no arrival time)
SEQUENCES = st.one_of(st.none(), st.just(STORED_SNAPSHOT_SEQUENCE),
                      st.integers(10**20, 10**20 + 60).map(lambda n: str(n).zfill(S.SEQUENCE_WIDTH)))
RECORDS = st.lists(st.tuples(SEQUENCES, st.sampled_from(DAYS)), min_size=1, max_size=12)


def rows_of(records: dict[str, tuple]) -> pa.Table:
    payloads = sorted(records)
    return pa.table({S.PAYLOAD: payloads, S.RECORD_ID: [hashlib.sha256(p.encode()).hexdigest() for p in payloads],
                     S.CDC_SEQUENCE: pa.array([records[p][0] for p in payloads], pa.string()),
                     S.EVENT_DATE: pa.array([records[p][1] for p in payloads], pa.date32())})


def writer(root) -> DeltaFilesAppend:
    return DeltaFilesAppend(DeltaTables(LakeConfig(str(root)), "test"), str(root / "raw"), None, S.RAW_IDENTITY,
                            S.EVENT_DATE)


def append(layer: DeltaFilesAppend, rows: pa.Table, batch_id: int, tasks: int = 2) -> list[dict]:
    """What the layer's Spark job does, without Spark: ``tasks`` tasks write their share, the driver commits."""
    table = layer.tables.table(layer.uri)
    target = FileTarget(layer.uri, {}, layer.partition, layer.identity, f"part-{batch_id:08d}",
                        committed_files(table))
    shares = [rows.take(pa.array(range(i, rows.num_rows, tasks), pa.int64())) for i in range(tasks)]
    files = [f for share in shares for b in target.write(iter(share.to_batches())) for f in b.to_pylist()]
    if files:
        layer.commit(table, rows.schema, files, CommitProperties(app_transactions=[Transaction("t", batch_id)]))
    return files


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(held=RECORDS, incoming=RECORDS, overlap=st.integers(0, 12), next_day=st.booleans())
def test_a_batch_adds_exactly_the_records_raw_does_not_hold(tmp_path_factory, held, incoming, overlap, next_day):
    root = tmp_path_factory.mktemp("raw")
    layer = writer(root)
    first = {f"r{i}": r for i, r in enumerate(held)}
    # some of the incoming records are records raw holds (a reset checkpoint, a backfill run again), the
    # undecodable ones maybe read on another day
    again = {p: (seq, DAYS[1 - DAYS.index(day)] if seq is None and next_day else day)
             for p, (seq, day) in list(first.items())[:overlap]}
    second = {**{f"n{i}": r for i, r in enumerate(incoming)}, **again}
    append(layer, rows_of(first), 0)
    append(layer, rows_of(second), 1)
    stored = DeltaTable(layer.uri).to_pyarrow_table()
    assert sorted(stored[S.PAYLOAD].to_pylist()) == sorted({**first, **second})  # each record once
    expected = rows_of({**second, **first}).sort_by(S.PAYLOAD)  # a record held stays as it was first written
    assert stored.select(expected.column_names).sort_by(S.PAYLOAD).cast(expected.schema) == expected


def test_a_batch_of_new_records_reads_no_committed_file(tmp_path):
    """An unreadable committed file of the same day, of an older sequence range, is not opened."""
    layer = writer(tmp_path)
    day = DAYS[0]
    old = {f"old{i}": (str(10**20 + i).zfill(S.SEQUENCE_WIDTH), day) for i in range(5)}
    files = append(layer, rows_of(old), 0)
    for f in files:
        (tmp_path / "raw" / f["path"]).write_bytes(b"not parquet")
    new = {f"new{i}": (str(10**20 + 100 + i).zfill(S.SEQUENCE_WIDTH), day) for i in range(5)}
    assert sum(f["num_records"] for f in append(layer, rows_of(new), 1)) == 5
    with pytest.raises(pa.ArrowInvalid):  # the same records again: their range is that file's, which is then read
        append(layer, rows_of(old), 2)


def test_the_spark_job_writes_each_record_once_in_one_commit_per_batch(spark, tmp_path):
    layer = writer(tmp_path)
    records = {f"p{i}": (str(10**20 + i).zfill(S.SEQUENCE_WIDTH), DAYS[i % 2]) for i in range(40)}
    frame = spark.createDataFrame(rows_of(records)).repartition(3)
    layer.frame_of = lambda batch: frame
    first = layer.write(LakeBatch(7, "s1", None, None, None))
    table = DeltaTable(layer.uri)
    assert first.rows == 40 and table.version() == 0
    assert table.metadata().partition_columns == [S.EVENT_DATE]
    replay = layer.write(LakeBatch(7, "s1", None, None, None))  # the same batch: skipped by its app transaction
    assert replay.rows == 0 and replay.skipped == (layer.uri,)
    again = layer.write(LakeBatch(0, "s2", None, None, None))  # the same records under another stream id
    assert again.rows == 0 and DeltaTable(layer.uri).to_pyarrow_table().num_rows == 40
    actions = pa.table(DeltaTable(layer.uri).get_add_actions(flatten=True))
    assert actions.num_rows <= 6 and pa.compute.sum(actions["num_records"]).as_py() == 40
    assert set(actions[f"min.{S.CDC_SEQUENCE}"].to_pylist()) <= {v[0] for v in records.values()}


def test_a_new_column_is_added_to_the_table_before_the_files_that_carry_it(spark, tmp_path):
    layer = writer(tmp_path)
    append(layer, rows_of({"a": ("1", DAYS[0])}), 0)
    rows = rows_of({"b": ("2", DAYS[0])})
    rows = rows.append_column("sk", pa.array(["x"]))  # a contract that gained a sort key
    layer.frame_of = lambda batch: spark.createDataFrame(rows)
    assert layer.write(LakeBatch(1, "s1", None, None, None)).rows == 1
    stored = DeltaTable(layer.uri).to_pyarrow_table()
    assert sorted(stored["sk"].to_pylist(), key=str) == [None, "x"]


def test_files_staged_ahead_are_committed_with_their_batch_and_a_batch_raw_holds_stages_nothing(spark, tmp_path):
    lake = Lake(LakeConfig(str(tmp_path)), "test", ORDERS)
    records = {f"p{i}": (str(10**20 + i).zfill(S.SEQUENCE_WIDTH), DAYS[i % 2]) for i in range(10)}
    staged = lake.stage_raw(lambda: spark.createDataFrame(rows_of(records)), 7, "s1")
    assert sum(f["num_records"] for f in staged.files) == 10
    assert not DeltaTable.is_deltatable(lake.raw_uri)  # written, not committed: no reader sees them
    written = lake.raw.write(LakeBatch(7, "s1", None, None, None, raw_staged=lambda: staged))
    assert written.rows == 10 and DeltaTable(lake.raw_uri).version() == 0
    # the batch's replay (the warehouse lacked it): no Spark job, its raw rows are not even made
    assert lake.stage_raw(lambda: pytest.fail("a batch raw holds was staged again"), 7, "s1") is None
    replay = lake.raw.write(LakeBatch(7, "s1", None, None, None, raw_staged=lambda: None))
    assert replay.skipped == (lake.raw_uri,) and DeltaTable(lake.raw_uri).version() == 0
    assert lake.stage_raw(lambda: spark.createDataFrame(rows_of(records)), 8, "s1").files == []  # held by identity
