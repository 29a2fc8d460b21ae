"""Local stand-in for the EventBridge Pipe: DynamoDB stream -> Kinesis, in the Pipe payload format.

In AWS the Pipe is deployed by CloudFormation; locally (moto) this process plays its part:
- reads every shard of the table's stream, parents before children (a split's child shard is read
  only after its parent is drained, as DynamoDB Streams requires for ordering);
- puts each stream record as JSON (epoch-second ``ApproximateCreationDateTime``, base64 binaries) with
  PartitionKey = the order id, PutRecords batches of at most 500, re-sending only the failed entries;
- remembers the last sequence number put per shard in a JSON state file, written atomically after
  each successful put, so it stops and resumes without loss (at-least-once: a crash between a put and
  the state write re-sends that batch, which the job's sequence guard and dedupe absorb).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sales_cdc.sources.kinesis_put import put_records

from .records import json_safe

log = logging.getLogger(__name__)

# How long a listing of the stream's shards is used before the next DescribeStream (a shard that closes
# triggers one at once: its children become readable). Polling it with every GetRecords (10 times a second)
# was a third of the requests the emulated DynamoDB served at 2,000 writes/s.
SHARD_LIST_SECONDS = 10.0


def pipe_payload(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A DynamoDB Streams GetRecords record -> the JSON the Pipe puts on Kinesis (docs/design.md §1)."""
    payload = json_safe(record)
    payload.setdefault("eventSourceARN", stream_arn)
    return payload


@dataclass
class PipeState:
    """Per-shard progress: last sequence number put, and shards already drained."""

    path: Path | None
    positions: dict[str, str] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: Path | None) -> PipeState:
        if path is None or not path.exists():
            return cls(path)
        data = json.loads(path.read_text())
        return cls(path, dict(data.get("positions", {})), set(data.get("finished", [])))

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"positions": self.positions, "finished": sorted(self.finished)}))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new state, never half


class PipeEmulator:
    """DynamoDB stream -> Kinesis as an EventBridge Pipe does it. ``put_records`` is the one step a subclass
    may extend (the benchmarks time it)."""

    MAX_RECORDS_PER_CALL = 1000  # GetRecords' Limit

    def __init__(self, streams, kinesis, *, stream_arn: str, kinesis_stream: str, partition_key: str,
                 state_path: Path | None = None):
        self.streams = streams
        self.kinesis = kinesis
        self.stream_arn = stream_arn
        self.kinesis_stream = kinesis_stream
        self.partition_key = partition_key  # the table's partition key attribute: the Kinesis partition key
        self.state = PipeState.load(state_path)
        self._iterators: dict[str, str | None] = {}
        self._listed: tuple[float, list[dict]] | None = None  # (when, shards)
        self.records_put = 0

    # --- reading the DynamoDB stream ------------------------------------------------------------
    def _shards(self) -> list[dict]:
        """The stream's shards, listed again after ``SHARD_LIST_SECONDS`` or once a shard has closed."""
        if self._listed is None or time.monotonic() - self._listed[0] >= SHARD_LIST_SECONDS:
            self._listed = (time.monotonic(), self._describe_shards())
        return self._listed[1]

    def _describe_shards(self) -> list[dict]:
        shards, start = [], None
        while True:
            kwargs = {"StreamArn": self.stream_arn, **({"ExclusiveStartShardId": start} if start else {})}
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            shards += description["Shards"]
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards

    def _iterator(self, shard_id: str) -> str | None:
        if shard_id not in self._iterators:
            position = self.state.positions.get(shard_id)
            kwargs = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": position} if position
                      else {"ShardIteratorType": "TRIM_HORIZON"})
            self._iterators[shard_id] = self.streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard_id, **kwargs)["ShardIterator"]
        return self._iterators[shard_id]

    def _readable(self, shards: list[dict]) -> list[dict]:
        known = {s["ShardId"] for s in shards}
        return [s for s in shards if s["ShardId"] not in self.state.finished
                and (s.get("ParentShardId") not in known or s["ParentShardId"] in self.state.finished)]

    def poll_once(self) -> int:
        """Move everything currently in the stream to Kinesis; return the number of records put."""
        moved = 0
        for shard in self._readable(self._shards()):
            shard_id = shard["ShardId"]
            while (iterator := self._iterator(shard_id)) is not None:
                response = self.streams.get_records(ShardIterator=iterator, Limit=self.MAX_RECORDS_PER_CALL)
                records = response["Records"]
                if records:
                    self.put_records(records)
                    self.state.positions[shard_id] = records[-1]["dynamodb"]["SequenceNumber"]
                    moved += len(records)
                next_iterator = response.get("NextShardIterator")
                self._iterators[shard_id] = next_iterator
                if next_iterator is None:  # closed shard fully read: its children may start
                    self.state.finished.add(shard_id)
                    self._listed = None
                if records or next_iterator is None:
                    self.state.save()
                if not records:
                    break
        return moved

    def run(self, *, idle_seconds: float = 2.0, poll_interval: float = 0.2, stop=None) -> int:
        """Poll until nothing new arrived for ``idle_seconds`` (or ``stop()`` is true); return records put."""
        idle_since = time.monotonic()
        while not (stop and stop()):
            if self.poll_once():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= idle_seconds:
                break
            time.sleep(poll_interval)
        return self.records_put

    # --- writing to Kinesis ---------------------------------------------------------------------
    def _entry(self, record: dict) -> dict:
        keys = record["dynamodb"]["Keys"]
        partition_key = next(iter(keys[self.partition_key].values()))
        data = json.dumps(pipe_payload(record, self.stream_arn), separators=(",", ":"))
        return {"Data": data.encode("utf-8"), "PartitionKey": str(partition_key)}

    def put_records(self, records: list[dict], max_rounds: int = 10) -> None:
        self.records_put += put_records(self.kinesis, self.kinesis_stream, [self._entry(r) for r in records],
                                        max_rounds)
