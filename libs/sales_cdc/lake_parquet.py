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
import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import schema as S

log = logging.getLogger(__name__)

BATCH_PARTITION = "cdc_batch"  # <stream id>-<batch id>: unique across checkpoints, so overwrite is safe
COMMITS = "_commits"
TOMBSTONE_COLUMNS = (S.CDC_SEQUENCE, S.CDC_EVENT_TIME, S.CDC_EVENT_ID, S.CDC_BATCH_ID)


@dataclass(frozen=True)
class SilverCommit:
    version: int
    stream_id: str
    batch_id: int
    state_path: str
    tombstones_path: str | None


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


def latest_silver_path(spark: SparkSession, silver_uri: str) -> str | None:
    """Where readers find the current state (``spark.read.parquet(path)``), or None before the first batch."""
    commits = silver_commits(spark, silver_uri)
    return commits[-1].state_path if commits else None


class ParquetLayers:
    def __init__(self, root: str, entity: S.EntitySchema, soft_delete: bool = False):
        root = root.rstrip("/")
        self.entity = entity
        self.soft_delete = soft_delete
        self.raw_uri = f"{root}/raw/{entity.name}_events"
        self.silver_uri = f"{root}/silver/{entity.name}"
        self.quarantine_uri = f"{root}/quarantine/{entity.name}"

    @staticmethod
    def _append_batch(df: DataFrame, uri: str, stream_id: str, batch_id: int, partitions: list[str]) -> None:
        (df.withColumn(BATCH_PARTITION, F.lit(f"{stream_id}-{batch_id}"))
         .write.mode("overwrite").option("partitionOverwriteMode", "dynamic")
         .partitionBy(*partitions, BATCH_PARTITION).parquet(uri))

    def write_raw(self, raw: DataFrame, stream_id: str, batch_id: int) -> None:
        self._append_batch(raw, self.raw_uri, stream_id, batch_id, [S.EVENT_DATE])

    def write_quarantine(self, quarantine: DataFrame, stream_id: str, batch_id: int) -> None:
        self._append_batch(quarantine, self.quarantine_uri, stream_id, batch_id, [])

    # --- silver ------------------------------------------------------------------------------------
    def _with_soft_delete(self, state: DataFrame) -> DataFrame:
        removed = F.col(S.CDC_OP) == F.lit("REMOVE")
        return state.withColumn(S.IS_DELETED, removed).withColumn(
            S.DELETED_AT, F.when(removed, F.col(S.CDC_EVENT_TIME)).cast(T.TimestampType()))

    def merge_silver(self, spark: SparkSession, state: DataFrame, stream_id: str, batch_id: int) -> bool:
        """Write the next snapshot; False when this batch is already committed (replay)."""
        commits = silver_commits(spark, self.silver_uri)
        if any(c.stream_id == stream_id and c.batch_id == batch_id for c in commits):
            log.info("batch %s: already in the Parquet silver snapshots (replay)", batch_id)
            return False
        previous = commits[-1] if commits else None
        version = previous.version + 1 if previous else 1
        columns = [f.name for f in S.state_fields(self.entity)]
        staged = state.select(*columns)
        if self.soft_delete:
            staged = self._with_soft_delete(staged)
        candidates = staged.withColumn("_stored", F.lit(0))
        if previous is not None:
            stored = spark.read.parquet(previous.state_path)
            if previous.tombstones_path:  # deleted keys compete as REMOVE rows, so they cannot come back
                tombstones = spark.read.parquet(previous.tombstones_path).withColumn(S.CDC_OP, F.lit("REMOVE"))
                stored = stored.unionByName(tombstones, allowMissingColumns=True)
            candidates = candidates.unionByName(stored.withColumn("_stored", F.lit(1)))
        # the sequence guard: the highest sequence wins; on a tie the stored row stays
        newest = Window.partitionBy(*self.entity.keys).orderBy(F.col(S.CDC_SEQUENCE).desc(), F.col("_stored").desc())
        current = (candidates.withColumn("_rank", F.row_number().over(newest)).where("_rank = 1")
                   .drop("_rank", "_stored").localCheckpoint())  # computed once for both outputs
        snapshot = f"{self.silver_uri}/snapshot={version:09d}"
        state_path, tombstones_path = f"{snapshot}/state", None
        if self.soft_delete:
            current.write.mode("overwrite").parquet(state_path)
        else:
            is_remove = F.col(S.CDC_OP) == F.lit("REMOVE")
            current.where(~is_remove).write.mode("overwrite").parquet(state_path)
            tombstones_path = f"{snapshot}/tombstones"
            (current.where(is_remove).select(*self.entity.keys, *TOMBSTONE_COLUMNS)
             .write.mode("overwrite").parquet(tombstones_path))
        commit = SilverCommit(version, stream_id, batch_id, state_path, tombstones_path)
        _write_file_once(spark, f"{self.silver_uri}/{COMMITS}/{version:09d}.json", json.dumps(commit.__dict__))
        return True

    def prune_snapshots(self, spark: SparkSession, keep: int = 10) -> int:
        """Delete silver snapshots older than the ``keep`` most recent commits; returns how many."""
        commits = silver_commits(spark, self.silver_uri)
        removed = 0
        for commit in commits[:-keep] if keep > 0 else []:
            fs, path = _jvm_fs(spark, commit.state_path.rsplit("/", 1)[0])
            if fs.exists(path):
                fs.delete(path, True)
                removed += 1
        return removed
