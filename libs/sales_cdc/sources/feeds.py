"""Where a backfill puts a table's snapshot records: into the running job's own input, so that one job writes
every sink (docs/backfill.md) — the Kinesis stream it reads, or the folder its file source watches.

Both are idempotent per name: a batch delivered again after a crash (its checkpoint not yet saved) is the same
records, which the job applies once (merge rule 6 and the raw layer's event identity)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from .. import schema as S
from .kinesis_put import put_records
from .snapshot import record_line


class Feed(Protocol):
    def deliver(self, name: str, records: list[Mapping[str, Any]]) -> None:
        """Hand ``records`` (stream records) to the job; ``name`` is the batch's stable name."""
        ...


class KinesisFeed:
    """PutRecords on the job's stream, the item's partition key as the Kinesis partition key (as the Pipe does)."""

    def __init__(self, kinesis, stream_name: str, entity: S.EntitySchema):
        self.kinesis, self.stream_name, self.partition_key = kinesis, stream_name, entity.keys[0]

    def deliver(self, name: str, records: list[Mapping[str, Any]]) -> None:
        entries = [{"Data": record_line(r).encode("utf-8"),
                    "PartitionKey": str(next(iter(r["dynamodb"]["Keys"][self.partition_key].values())))}
                   for r in records]
        put_records(self.kinesis, self.stream_name, entries)


class FolderFeed:
    """A JSON-lines file per batch in the folder the job's file source watches, written under a hidden name and
    renamed into place (the file source ignores names starting with '.', and a rename is atomic)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def deliver(self, name: str, records: list[Mapping[str, Any]]) -> None:
        target = self.folder / f"{name}.jsonl"
        hidden = self.folder / f".{name}.jsonl.tmp"
        hidden.write_text("".join(record_line(r) + "\n" for r in records))
        os.replace(hidden, target)
