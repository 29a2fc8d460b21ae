"""Plain-Parquet lake layers, written by Spark itself (a local folder here; S3 in Glue through EMRFS).

Parquet has no transactions, so each layer gets the smallest protocol that makes a replayed or
crashed batch harmless:

- raw and quarantine (append-only): partitioned by ``cdc_batch`` = ``<stream id>-<batch id>`` (raw
  also by ``event_date``) and written with *dynamic partition overwrite*: a replay rewrites exactly
  the partitions of its own batch, never another batch's.
- silver (current state): one full snapshot per batch under ``snapshot=<n>/state`` (and
  ``snapshot=<n>/tombstones`` in hard-delete mode), computed by Spark from the previous snapshot and
  the batch with the same sequence guard as the warehouse; then a write-once commit file
  ``_commits/<n>.json`` names it. Readers take the highest commit (:func:`latest_silver_path`). A crash
  before the commit file leaves an orphan snapshot that the replay overwrites; a replayed batch
  finds its commit and is skipped. ``prune_snapshots`` deletes old snapshots (the maintenance command).

Rewriting silver costs O(table) per batch: fine for modest tables; Delta (the default) merges in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from .. import column_types as CT
from .. import schema as S
from ..merge_rules import REMOVE, MergeRules
from .layers import LakeBatch, Written

MIGRATION_STREAM = "schema-migration"  # the stream id of a snapshot a migration commits (no stream has it)
BATCH_PARTITION = "cdc_batch"  # <stream id>-<batch id>: unique across checkpoints, so overwrite is safe
COMMITS = "_commits"


@dataclass(frozen=True)
class SilverCommit:
    version: int
    stream_id: str
    batch_id: int
    state_path: str
    tombstones_path: str | None
    contract_version: str | None = None  # of the contract the snapshot was written with (absent before 2026-12)


def _jvm_fs(spark: SparkSession, uri: str):
    """The Hadoop FileSystem Spark itself uses for ``uri`` (file:// here, s3:// in Glue)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def check_filesystem(spark: SparkSession, uri: str) -> None:
    """Fail at start-up, not in the first batch, when Spark cannot write ``uri`` (e.g. s3:// without EMRFS)."""
    try:
        _jvm_fs(spark, uri)
    except Exception as exc:  # py4j wraps the Java exception
        raise ValueError(f"Spark cannot write Parquet to {uri}: {str(exc).splitlines()[0]}. Parquet layers need a "
                         "filesystem Spark knows (a local folder here; s3:// in Glue); use the Delta format "
                         "(delta-rs) for s3:// locally.") from None


def _write_file_once(spark: SparkSession, uri: str, text: str) -> None:
    fs, path = _jvm_fs(spark, uri)
    stream = fs.create(path, True)  # same content on a replay of the same batch: overwrite is harmless
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


def _read_text(spark: SparkSession, fs, path) -> str:
    stream = fs.open(path)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def write_commit(spark: SparkSession, uri: str, commit: SilverCommit) -> None:
    """The commit file that makes a snapshot the table's latest (write-once per version)."""
    _write_file_once(spark, f"{uri}/{COMMITS}/{commit.version:09d}.json", json.dumps(commit.__dict__))


def silver_commits(spark: SparkSession, silver_uri: str) -> list[SilverCommit]:
    fs, root = _jvm_fs(spark, f"{silver_uri}/{COMMITS}")
    if not fs.exists(root):
        return []
    commits = []
    for status in fs.listStatus(root):
        name = status.getPath().getName()
        if name.endswith(".json"):
            commits.append(SilverCommit(**json.loads(_read_text(spark, fs, status.getPath()))))
    return sorted(commits, key=lambda c: c.version)


def next_snapshot(spark: SparkSession, uri: str, batch: LakeBatch) -> tuple[int, SilverCommit | None] | None:
    """The version ``batch``'s snapshot of the table at ``uri`` takes, and the latest commit before it; None when
    the batch is committed there already (a replay)."""
    commits = silver_commits(spark, uri)
    if any(c.stream_id == batch.stream_id and c.batch_id == batch.id for c in commits):
        return None
    previous = commits[-1] if commits else None
    return (previous.version + 1 if previous else 1), previous


def latest_silver_path(spark: SparkSession, silver_uri: str) -> str | None:
    """Where readers find the current state (``spark.read.parquet(path)``), or None before the first batch."""
    commits = silver_commits(spark, silver_uri)
    return commits[-1].state_path if commits else None


class ParquetAppend:
    """An append-only layer: the batch's rows (``frame_of``) that the layer does not hold yet, by ``identity``,
    as the batch's own partitions, rewritten on a replay. Rows held by another batch (the same records under
    another stream id: a reset checkpoint, a backfill run again) are looked up in the batch's partitions only
    (raw: its event dates)."""

    delta_tables = ()

    def __init__(self, uri: str, frame_of: Callable[[LakeBatch], DataFrame], identity: tuple[str, ...],
                 partitions: list[str], count_of: Callable[[LakeBatch], int | None] = lambda _: None):
        self.uri, self.frame_of, self.identity, self.partitions = uri, frame_of, identity, partitions
        self.count_of = count_of

    def write(self, batch: LakeBatch) -> Written:
        rows = self.count_of(batch)
        if rows == 0:
            return Written(0)
        label = f"{batch.stream_id}-{batch.id}"
        frame = self._not_held(self.frame_of(batch), label).withColumn(BATCH_PARTITION, F.lit(label))
        (frame.write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
         .partitionBy(*self.partitions, BATCH_PARTITION).parquet(self.uri))
        return Written(None)

    def _not_held(self, frame: DataFrame, label: str) -> DataFrame:
        """``frame`` without the rows another batch's partitions hold (this batch's own are rewritten)."""
        spark = frame.sparkSession
        fs, root = _jvm_fs(spark, self.uri)
        folders = self._folders(frame, fs) if fs.exists(root) else []
        if not folders:
            return frame
        held = spark.read.option("mergeSchema", "true").option("basePath", self.uri).parquet(*folders)
        if not set(self.identity) <= set(held.columns):  # written before records had an identity
            return frame
        held = held.where(F.col(BATCH_PARTITION) != label)
        return frame.join(held.select(*self.identity).distinct(), list(self.identity), "left_anti")

    def _folders(self, frame: DataFrame, fs) -> list[str]:
        """The layer's folders that hold ``frame``'s partitions (raw: its event dates), or the whole layer when it
        has none: a batch lists and reads those, not every file the layer has gathered over the years."""
        if not self.partitions:
            return [self.uri]
        jvm = frame.sparkSession.sparkContext._jvm
        folder_of = jvm.org.apache.spark.sql.catalyst.catalog.ExternalCatalogUtils.getPartitionPathString
        folders = [f"{self.uri}/" + "/".join(folder_of(column, None if value is None else str(value))
                                             for column, value in zip(self.partitions, row, strict=True))
                   for row in frame.select(*self.partitions).distinct().collect()]
        return [folder for folder in folders if fs.exists(jvm.org.apache.hadoop.fs.Path(folder))]


class ParquetSilver:
    """Current state as snapshots under the merge rules (tombstones beside each in hard-delete mode)."""

    delta_tables = ()

    def __init__(self, rules: MergeRules, uri: str):
        self.rules, self.uri = rules, uri

    def write(self, batch: LakeBatch) -> Written:
        """The next snapshot; skipped when this batch is already committed (a replay)."""
        if batch.state.arrow.num_rows == 0:
            return Written(0)
        spark = batch.state.frame.sparkSession
        following = next_snapshot(spark, self.uri, batch)
        if following is None:
            return Written(0, (self.uri,))
        version, previous = following
        current = self._current(spark, batch.state.frame, previous).alias("s")
        snapshot = f"{self.uri}/snapshot={version:09d}"
        state_path, tombstones_path = f"{snapshot}/state", None
        if not self.rules.keeps_tombstones:
            current.write.mode("overwrite").parquet(state_path)
        else:
            is_remove = F.expr(self.rules.is_remove("s"))
            current.where(~is_remove).write.mode("overwrite").parquet(state_path)
            tombstones_path = f"{snapshot}/tombstones"
            current.where(is_remove).select(*self.rules.tombstone_columns).write.mode("overwrite").parquet(
                tombstones_path)
        self._commit(spark, SilverCommit(version, batch.stream_id, batch.id, state_path, tombstones_path,
                                         self.rules.entity.version))
        return Written(batch.state.arrow.num_rows)

    def _commit(self, spark: SparkSession, commit: SilverCommit) -> None:
        write_commit(spark, self.uri, commit)

    # --- schema migration (``migration``; docs/schema-evolution.md) ----------------------------------------
    def stored_columns(self, spark: SparkSession) -> dict[str, CT.ColumnType | None] | None:
        commits = silver_commits(spark, self.uri)
        if not commits:
            return None
        return {f.name: CT.of_lake(f.dataType.simpleString())
                for f in spark.read.parquet(commits[-1].state_path).schema.fields}

    def migrate(self, spark: SparkSession, target: T.StructType, promote: Callable[[DataFrame], DataFrame]) -> None:
        """A new snapshot: the latest one with the ``target`` columns (added null, widened by a cast), then
        ``promote``d; its commit names the previous tombstones (unchanged). Nothing before the first batch."""
        commits = silver_commits(spark, self.uri)
        if not commits:
            return
        previous = commits[-1]
        stored = spark.read.parquet(previous.state_path)
        converted = stored.select(*[(F.col(f.name) if f.name in stored.columns else F.lit(None))
                                    .cast(f.dataType).alias(f.name) for f in target.fields])
        version = previous.version + 1
        snapshot = f"{self.uri}/snapshot={version:09d}"
        promote(converted).select(*target.fieldNames()).write.mode("overwrite").parquet(f"{snapshot}/state")
        tombstones = None
        if previous.tombstones_path:  # copied: each snapshot stands alone (pruning deletes whole snapshots)
            tombstones = f"{snapshot}/tombstones"
            spark.read.parquet(previous.tombstones_path).write.mode("overwrite").parquet(tombstones)
        self._commit(spark, SilverCommit(version, MIGRATION_STREAM, version, f"{snapshot}/state", tombstones,
                                         self.rules.entity.version))

    def _current(self, spark: SparkSession, staged: DataFrame, previous: SilverCommit | None) -> DataFrame:
        """Per key, the row that applies under the merge rules among the staged rows and the previous
        snapshot's rows and tombstones (which compete as REMOVE rows, so deleted keys cannot come back)."""
        candidates = staged.select(*self.rules.row_columns).withColumn("_stored", F.lit(False))
        if previous is not None:
            stored = spark.read.parquet(previous.state_path)
            if previous.tombstones_path:
                tombstones = spark.read.parquet(previous.tombstones_path).withColumn(S.CDC_OP, F.lit(REMOVE))
                stored = stored.unionByName(tombstones, allowMissingColumns=True)
            candidates = candidates.unionByName(stored.withColumn("_stored", F.lit(True)))
        latest = Window.partitionBy(*self.rules.keys).orderBy(*self.rules.latest_first(F.col("_stored")))
        return (candidates.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1")
                .drop("_rank", "_stored").localCheckpoint())  # computed once for both outputs

    def prune_snapshots(self, spark: SparkSession, keep: int = 10) -> int:
        """Delete silver snapshots older than the ``keep`` most recent commits; returns how many."""
        commits = silver_commits(spark, self.uri)
        removed = 0
        for commit in commits[:-keep] if keep > 0 else []:
            fs, path = _jvm_fs(spark, commit.state_path.rsplit("/", 1)[0])
            if fs.exists(path):
                fs.delete(path, True)
                removed += 1
        return removed
