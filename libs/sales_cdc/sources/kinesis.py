"""Kinesis as a Spark Structured Streaming source, on Spark 4's Python Data Source API, over boto3.

Used locally (moto) where Spark's Kinesis connector jar cannot be fetched; in Glue the job uses
Glue's native ``kinesis`` source instead (same output columns, see ``schema.SOURCE_FIELDS``).

It is a ``SimpleDataSourceStreamReader``: records are read where Spark plans the batch, which suits a
laptop-sized stream, and Spark hands it the start offset of every batch, so restarts are exact:
- offsets are per shard (``{shard_id: {"seq": last sequence read, "done": closed and drained}}``) and
  live in Spark's checkpoint; a batch that is re-run after a crash is re-read with
  ``readBetweenOffsets`` (same records, no loss, no repeat);
- starting position TRIM_HORIZON, LATEST or AT_TIMESTAMP (LATEST is pinned to the query's start time,
  so the position survives restarts);
- at most ``maxRecordsPerShard`` records per shard per batch;
- resharding: a child shard is read only after all its parents are drained (per-key order holds).

Options: ``streamName`` (required), ``endpointUrl``, ``region``, ``startingPosition``
(TRIM_HORIZON | LATEST | AT_TIMESTAMP), ``startingTimestamp`` (epoch seconds or ISO-8601, with
AT_TIMESTAMP), ``maxRecordsPerShard`` (default ``KinesisConfig.max_records_per_shard``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime

from pyspark.sql.datasource import DataSource, SimpleDataSourceStreamReader
from pyspark.sql.types import StructType

from .. import schema as S
from ..config import REGION, KinesisConfig

FORMAT = "sales_cdc_kinesis"
START = ""  # "seq" of a shard nothing has been read from yet


def _epoch(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class KinesisDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> StructType:
        return S.SOURCE_SCHEMA

    def simpleStreamReader(self, schema: StructType) -> KinesisStreamReader:
        return KinesisStreamReader(self.options)


class KinesisStreamReader(SimpleDataSourceStreamReader):
    def __init__(self, options: dict[str, str]):
        if "streamName" not in options:
            raise ValueError(f"{FORMAT}: option streamName is required")
        self.stream = options["streamName"]
        self.endpoint = options.get("endpointUrl")
        self.region = options.get("region", REGION)
        self.max_per_shard = int(options.get("maxRecordsPerShard", KinesisConfig.max_records_per_shard))
        position = options.get("startingPosition", "TRIM_HORIZON").upper()
        if position not in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
            raise ValueError(f"{FORMAT}: startingPosition must be TRIM_HORIZON, LATEST or AT_TIMESTAMP")
        if position == "AT_TIMESTAMP" and "startingTimestamp" not in options:
            raise ValueError(f"{FORMAT}: startingPosition AT_TIMESTAMP needs option startingTimestamp")
        self.position = position
        self.starting_timestamp = _epoch(options["startingTimestamp"]) if position == "AT_TIMESTAMP" else None
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from ..aws import aws_client  # boto3 is imported where the reader runs

            self._client = aws_client("kinesis", endpoint=self.endpoint, region=self.region)
        return self._client

    # --- offsets ------------------------------------------------------------------------------------
    def _shards(self) -> list[dict]:
        shards, token = [], None
        while True:
            response = (self.client.list_shards(NextToken=token) if token
                        else self.client.list_shards(StreamName=self.stream))
            shards += response["Shards"]
            token = response.get("NextToken")
            if not token:
                return shards

    @staticmethod
    def _new_entry(shard: dict, after_ts: float | None = None) -> dict:
        parents = [p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p]
        entry = {"seq": START, "done": False, "parents": ",".join(parents)}
        if after_ts is not None:
            entry["after_ts"] = after_ts
        return entry

    def initialOffset(self) -> dict:
        # LATEST is pinned to a timestamp now, so that a restart does not skip what arrived meanwhile
        start = {"TRIM_HORIZON": None, "LATEST": time.time(), "AT_TIMESTAMP": self.starting_timestamp}[self.position]
        return {shard["ShardId"]: self._new_entry(shard, start) for shard in self._shards()}

    def _iterator(self, shard_id: str, entry: dict) -> str:
        if entry["seq"] != START:
            kwargs = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": entry["seq"]}
        elif "after_ts" in entry:
            kwargs = {"ShardIteratorType": "AT_TIMESTAMP", "Timestamp": datetime.fromtimestamp(entry["after_ts"])}
        else:
            kwargs = {"ShardIteratorType": "TRIM_HORIZON"}
        return self.client.get_shard_iterator(StreamName=self.stream, ShardId=shard_id, **kwargs)["ShardIterator"]

    @staticmethod
    def _row(shard_id: str, record: dict) -> tuple:
        payload = bytes(record["Data"]).decode("utf-8", errors="replace")  # bad bytes -> quarantined as bad JSON
        return (payload, shard_id, record["SequenceNumber"], record.get("PartitionKey"),
                record.get("ApproximateArrivalTimestamp"))

    def _read_shard(self, shard_id: str, entry: dict, stop_at: str | None, limit: int) -> tuple[list[tuple], dict]:
        """Records after ``entry`` (up to ``stop_at`` inclusive, or ``limit``) and the shard's new entry."""
        rows: list[tuple] = []
        entry = dict(entry)
        if stop_at is not None and entry["seq"] == stop_at:
            return rows, entry
        iterator = self._iterator(shard_id, entry)
        while iterator and len(rows) < limit:
            response = self.client.get_records(ShardIterator=iterator, Limit=min(10000, limit - len(rows)))
            for record in response["Records"]:
                rows.append(self._row(shard_id, record))
                entry["seq"] = record["SequenceNumber"]
                if stop_at is not None and entry["seq"] == stop_at:
                    return rows, entry
            iterator = response.get("NextShardIterator")
            if iterator is None:
                entry["done"] = True  # closed and drained: its children may be read
            if not response["Records"] and (stop_at is None or iterator is None):
                break
        return rows, entry

    def _plan(self, start: dict) -> dict:
        """Known shards with their entries; shards created since (resharding) start from their beginning."""
        offsets = {k: dict(v) for k, v in start.items()}
        listed = self._shards()
        for shard in listed:
            offsets.setdefault(shard["ShardId"], self._new_entry(shard))
        for shard_id in offsets.keys() - {s["ShardId"] for s in listed}:
            offsets[shard_id]["done"] = True  # expired past retention: nothing left to read there
        return offsets

    @staticmethod
    def _readable(offsets: dict, shard_id: str) -> bool:
        """Not drained yet, and every parent still known is drained (expired parents are gone)."""
        entry = offsets[shard_id]
        parents = [p for p in entry.get("parents", "").split(",") if p]
        return not entry["done"] and all(offsets.get(p, {"done": True})["done"] for p in parents)

    def read(self, start: dict) -> tuple[Iterator[tuple], dict]:
        offsets = self._plan(start)
        rows: list[tuple] = []
        progressed = True
        while progressed:  # a drained parent makes its children readable in the same batch
            progressed = False
            for shard_id in sorted(offsets):
                if not self._readable(offsets, shard_id):
                    continue
                shard_rows, entry = self._read_shard(shard_id, offsets[shard_id], None, self.max_per_shard)
                rows += shard_rows
                progressed |= entry["done"] and not offsets[shard_id]["done"]
                offsets[shard_id] = entry
        return iter(rows), offsets

    def readBetweenOffsets(self, start: dict, end: dict) -> Iterator[tuple]:
        rows: list[tuple] = []
        for shard_id in sorted(end):
            begin = start.get(shard_id, {"seq": START, "done": False})
            target = end[shard_id]
            if begin.get("done") or (target["seq"] == begin["seq"] and not target["done"]):
                continue
            stop_at = None if target["done"] else target["seq"]
            shard_rows, _ = self._read_shard(shard_id, begin, stop_at, 10**12)
            rows += shard_rows
        return iter(rows)

    def commit(self, end: dict) -> None:
        """Nothing to release: Kinesis keeps the records for its retention period."""
