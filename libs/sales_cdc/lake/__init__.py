"""Lake sink: raw events, current state and quarantine, per micro-batch.

Layout under the lake root (a local path or ``s3://bucket/prefix``):
  raw/<entity>_events      every record as received + decode outcome + batch id, partitioned by event_date
  silver/<entity>          current state under the merge rules (``merge_rules``), like the warehouse
  silver/<entity>_tombstones   hard-delete mode: key + sequence of deleted keys (no resurrection)
  silver/<entity>_history   with ``history: true``: every version of every item (``lake.history``)
  quarantine/<entity>      rejected records with reasons
  meta/<entity>_schema_changes   the schema history of silver (docs/schema-evolution.md), a Delta table

Each layer has one writer, chosen when the lake is built from its format: Delta (transactional, the default;
committed by delta-rs: raw's files written by Spark's executors, ``lake.delta_files``, silver and quarantine by
delta-rs from the rows the warehouse merges too, ``lake.delta``) or Parquet (``lake.parquet``, Spark's own
writer). A replayed batch changes nothing: a Delta table or the Parquet silver skips a batch it already holds;
Parquet raw and quarantine rewrite exactly that batch's own partition.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from deltalake import CommitProperties
from pyspark.sql import DataFrame

from .. import schema as S
from ..config import REGION, LakeConfig
from ..evolution import ChangeKind
from ..faults import crash_point
from ..merge_rules import MergeRules
from .delta import DeltaAppend, DeltaSilver, DeltaTables
from .delta_files import DeltaFilesAppend
from .history import DeltaHistory, ParquetHistory
from .layers import LakeBatch, LayerWriter, Rows, StagedFiles, Written
from .parquet import ParquetAppend, ParquetSilver, check_filesystem

log = logging.getLogger(__name__)

__all__ = ["Lake", "LakeBatch", "LakeResult", "MaintenanceResult", "Rows", "maintain", "moto_storage_options"]


@dataclass(frozen=True)
class LakeResult:
    """Rows each layer wrote in this call: 0 for a layer that already held the batch (a replay), None for a
    Parquet layer Spark wrote without counting."""

    raw_rows: int | None
    silver_rows: int | None
    quarantine_rows: int | None
    skipped_tables: tuple[str, ...]  # already committed for this batch (replay)


def moto_storage_options(endpoint: str, region: str = REGION) -> dict[str, str]:
    """delta-rs options for a moto S3 server (docs/design.md §3); single writer, so unsafe rename is acceptable."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": region, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}


class Lake:
    def __init__(self, config: LakeConfig, job_name: str, entity: S.EntitySchema, soft_delete: bool = False):
        self.config, self.job_name = config, job_name
        self.rules = MergeRules(entity, soft_delete)
        root = config.root.rstrip("/")
        self.schema_changes_uri = f"{root}/meta/{entity.name}_schema_changes"
        self.raw_uri = f"{root}/raw/{entity.name}_events"
        self.silver_uri = f"{root}/silver/{entity.name}"
        self.tombstones_uri = f"{self.silver_uri}_tombstones"
        self.quarantine_uri = f"{root}/quarantine/{entity.name}"
        self.delta = DeltaTables(config, job_name)
        self.raw: LayerWriter = (
            DeltaFilesAppend(self.delta, self.raw_uri, lambda batch: batch.raw, S.RAW_IDENTITY, S.EVENT_DATE)
            if config.raw_format == "delta"
            else ParquetAppend(self.raw_uri, lambda batch: batch.raw, S.RAW_IDENTITY, [S.EVENT_DATE]))
        self.quarantine: LayerWriter = (
            DeltaAppend(self.delta, self.quarantine_uri, lambda batch: batch.quarantine.arrow, S.QUARANTINE_IDENTITY)
            if config.quarantine_format == "delta"
            else ParquetAppend(self.quarantine_uri, lambda batch: batch.quarantine.frame, S.QUARANTINE_IDENTITY, [],
                               count_of=lambda batch: batch.quarantine.arrow.num_rows))
        self.silver: DeltaSilver | ParquetSilver = (
            DeltaSilver(self.delta, self.rules, self.silver_uri) if config.silver_format == "delta"
            else ParquetSilver(self.rules, self.silver_uri))
        self.history_uri = f"{self.silver_uri}_history"
        self.history: DeltaHistory | ParquetHistory | None = None if not entity.history else (
            DeltaHistory(self.delta, self.rules, self.history_uri) if config.silver_format == "delta"
            else ParquetHistory(self.rules, self.history_uri))

    @property
    def entity(self) -> S.EntitySchema:
        return self.rules.entity

    def with_entity(self, entity: S.EntitySchema) -> Lake:
        """The same lake, writing ``entity``'s columns (after a migration gave silver them)."""
        return Lake(self.config, self.job_name, entity, self.soft_delete)

    # --- the schema history (``migration``) ---------------------------------------------------------------
    def record_changes(self, history: pa.Table) -> None:
        """Append rows to the lake's schema history (``schema.SCHEMA_CHANGE_FIELDS``)."""
        if history.num_rows:
            self.delta.append(self.schema_changes_uri, history, CommitProperties())

    def recorded_contract(self, sink: str) -> str | None:
        """The contract ``sink`` last recorded in the lake's schema history, as its JSON text."""
        table = self.delta.table(self.schema_changes_uri)
        if table is None:
            return None
        rows = table.to_pyarrow_table(columns=["changed_at", "change", "sink", "statement"]).to_pylist()
        recorded = [r for r in rows if r["change"] == ChangeKind.CONTRACT and r["sink"] == sink]
        return max(recorded, key=lambda r: r["changed_at"])["statement"] if recorded else None

    @property
    def soft_delete(self) -> bool:
        return self.rules.soft_delete

    @property
    def delta_tables(self) -> tuple[str, ...]:
        """Every Delta table this lake writes (the maintenance command compacts and vacuums them)."""
        history = self.history.delta_tables if self.history is not None else ()
        return self.raw.delta_tables + self.silver.delta_tables + self.quarantine.delta_tables + history

    def table(self, uri: str):
        """The Delta table at ``uri`` (one of this lake's) at its latest version, or None before its first commit."""
        return self.delta.table(uri)

    def check(self, spark) -> None:
        """Start-up check: Spark can write the Parquet layers' location."""
        if self.config.parquet_layers:
            check_filesystem(spark, self.config.root)

    @property
    def stages_raw(self) -> bool:
        """Whether raw's files can be written ahead of the batch's commit (:meth:`stage_raw`): a Delta raw layer,
        whose files no reader sees before its commit."""
        return isinstance(self.raw, DeltaFilesAppend)

    def stage_raw(self, raw_of: Callable[[], DataFrame], batch_id: int, stream_id: str) -> StagedFiles | None:
        """Raw's files for the batch's raw rows (``raw_of()``), written by Spark's tasks and not committed: hand
        them to :meth:`write_batch` as ``LakeBatch.raw_staged``, which commits them with the batch. None, and no
        Spark job, when raw holds the batch already (a replay after a crash between the lake and the warehouse)."""
        if self.delta.holds(self.raw_uri, stream_id, batch_id):
            return None
        return self.raw.stage(raw_of(), batch_id)

    def write_batch(self, batch: LakeBatch) -> LakeResult:
        """Raw, then quarantine, then silver: each layer once, each skipping what it already holds."""
        raw = self.raw.write(batch)
        crash_point("between-lake-layers")
        quarantine = self.quarantine.write(batch)
        silver = self.silver.write(batch)
        history = self.history.write(batch) if self.history is not None else Written(0)
        skipped = raw.skipped + quarantine.skipped + silver.skipped + history.skipped
        if skipped:
            log.info("batch %s: already in the lake for %s (replay)", batch.id, ", ".join(skipped))
        return LakeResult(raw.rows, silver.rows, quarantine.rows, skipped)


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    files_before: int
    files_after: int
    files_vacuumed: int


def maintain(lake: Lake, *, retention_hours: int = 168, vacuum: bool = True, spark=None,
             keep_snapshots: int = 10) -> list[MaintenanceResult]:
    """Compact small files (one per batch per partition otherwise) and vacuum files older than the
    retention that no version within it references. Readers of older versions need the retention: the
    default keeps 7 days of time travel. Run it from a scheduled job, not inside the stream.
    Parquet layers: a Parquet silver keeps its ``keep_snapshots`` newest snapshots (needs ``spark``);
    Parquet raw/quarantine partitions are left as written (no transaction to compact them safely)."""
    results = []
    for uri in lake.delta_tables:
        table = lake.table(uri)
        if table is None:
            continue
        before = len(table.file_uris())
        # (row groups kept small: the job looks keys up in silver, its tombstones and the history a row group at a
        # time)
        table.optimize.compact(target_size=lake.config.target_file_size, writer_properties=lake.delta.lookup_writer)
        removed = 0
        if vacuum:  # full: also the files of a batch that crashed before its commit (``lake.delta_files``)
            removed = len(table.vacuum(retention_hours=retention_hours, dry_run=False, full=True,
                                       enforce_retention_duration=retention_hours >= 168))
        table = lake.table(uri)
        results.append(MaintenanceResult(uri, before, len(table.file_uris()), removed))
    if isinstance(lake.silver, ParquetSilver) and spark is not None:
        pruned = lake.silver.prune_snapshots(spark, keep=keep_snapshots)
        results.append(MaintenanceResult(lake.silver_uri + " (snapshots)", pruned + keep_snapshots, keep_snapshots,
                                         pruned))
    return results

