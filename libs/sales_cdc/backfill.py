"""The initial load of an existing table (docs/backfill.md): its items, read by a parallel Scan or from a DynamoDB
export, become snapshot records (``sources.snapshot``, sequence 0) fed to the running job's own input — the Kinesis
stream it reads, or the folder its file source watches. The job applies them like any record (the same decode,
data quality, quarantine, lake and warehouse, one writer per sink), and the merge rules make the order of snapshot
and stream records irrelevant: a stream event always wins, a tombstone stops a snapshot row, a second snapshot
changes nothing.

Start the backfill after the stream job runs (the stream then carries every change the snapshot may miss).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import DataFrame

from . import schema as S
from .aws import aws_client
from .config import REGION
from .sources.export import Export, export_records
from .sources.feeds import Feed, FolderFeed, KinesisFeed
from .sources.kinesis_put import put_records
from .sources.scan import LocalText, S3Text, ScanCheckpoint, ScanResult, SnapshotScan


@dataclass(frozen=True)
class KinesisTarget:
    """The job's Kinesis stream."""

    stream_name: str
    endpoint_url: str | None = None
    region: str = REGION


@dataclass(frozen=True)
class FolderTarget:
    """The folder the job's file source watches."""

    folder: Path


Target = KinesisTarget | FolderTarget


def feed_for(target: Target, entity: S.EntitySchema) -> Feed:
    if isinstance(target, FolderTarget):
        return FolderFeed(target.folder)
    return KinesisFeed(aws_client("kinesis", endpoint=target.endpoint_url, region=target.region), target.stream_name,
                       entity)


@dataclass(frozen=True)
class ScanSettings:
    table: str
    checkpoint: LocalText | S3Text  # the backfill's progress (resume with the same one)
    segments: int = 4
    page_size: int = 1000
    rate: float | None = None  # read capacity units per second, all segments together; None: as fast as it goes


def scan_backfill(dynamodb, entity: S.EntitySchema, target: Target, settings: ScanSettings,
                  progress: Callable[[int], None] = lambda n: None, scan: list | None = None) -> ScanResult:
    """Scan the table into the job's input, resumable from ``settings.checkpoint``; ``scan`` (a list) receives
    the running :class:`SnapshotScan`, so that a signal handler can stop it between pages."""
    checkpoint = ScanCheckpoint.open(settings.checkpoint, settings.table, settings.segments)
    snapshot = SnapshotScan(dynamodb, settings.table, entity, feed_for(target, entity), checkpoint,
                            page_size=settings.page_size, rate=settings.rate)
    if scan is not None:
        scan.append(snapshot)
    return snapshot.run(progress)


def export_backfill(spark, export: Export, entity: S.EntitySchema, target: Target, table: str = "") -> int:
    """The export's items into the job's input, written by Spark's executors; the number of records."""
    records = export_records(spark, export, entity, table)
    if isinstance(target, FolderTarget):
        return _to_folder(records, target.folder, f"backfill-export-{export.export_time}")
    return _to_kinesis(records, target, entity.keys[0])


def _to_folder(records: DataFrame, folder: Path, name: str) -> int:
    """Spark writes the records under a hidden folder (the file source ignores it); each part file is then renamed
    into the watched folder, whole, under a stable name (a repeated backfill writes the same names)."""
    staging = folder / f".{name}"
    records.write.mode("overwrite").text(str(staging))
    parts = sorted(p for p in staging.glob("part-*") if p.stat().st_size)
    count = 0
    for index, part in enumerate(parts):
        count += sum(1 for _ in part.open("rb"))
        os.replace(part, folder / f"{name}-{index:05d}.jsonl")
    shutil.rmtree(staging)
    return count


def _to_kinesis(records: DataFrame, target: KinesisTarget, partition_key: str) -> int:
    """PutRecords from each partition, on the executors (their own clients)."""
    def put(rows) -> None:
        import json

        kinesis = aws_client("kinesis", endpoint=target.endpoint_url, region=target.region)
        entries = []
        for row in rows:
            key = json.loads(row[S.PAYLOAD])["dynamodb"]["Keys"][partition_key]
            entries.append({"Data": row[S.PAYLOAD].encode("utf-8"), "PartitionKey": str(next(iter(key.values())))})
        put_records(kinesis, target.stream_name, entries)

    records = records.cache()
    try:
        records.foreachPartition(put)
        return records.count()
    finally:
        records.unpersist()
