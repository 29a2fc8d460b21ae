"""Lake sink: raw events, current state and quarantine as Delta tables (delta-rs), per micro-batch.

Layout under the lake root (a local path or ``s3://bucket/prefix``):
  raw/<entity>_events      every record as received + decode outcome + batch id, partitioned by event_date
  silver/<entity>          current state, same contract as the warehouse (sequence guard, deletes)
  silver/<entity>_tombstones   hard-delete mode: key + sequence of deleted keys (no resurrection)
  quarantine/<entity>      rejected records with reasons

Every commit carries a Delta app transaction ``(job/stream/table, batch_id)``. Before writing a table
the sink reads that table's last committed batch id and skips it when the batch is already there, so
a replayed batch (Spark retry, restart after a crash between two commits) changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from pyspark.sql import DataFrame

from . import schema as S
from .config import LakeConfig
from .faults import crash_point
from .lake_parquet import ParquetLayers, check_filesystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LakeResult:
    raw_rows: int | None  # None: a Parquet raw layer, written by Spark without collecting the rows
    silver_rows: int  # staged rows merged into silver by this call (0 when it was already committed)
    quarantine_rows: int
    skipped_tables: tuple[str, ...]  # already committed for this batch (replay)


def moto_storage_options(endpoint: str, region: str = "us-east-1") -> dict[str, str]:
    """delta-rs options for a moto S3 server (docs/design.md §3); single writer, so unsafe rename is acceptable."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": region, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ALLOW_HTTP": "true", "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}


class DeltaLake:
    def __init__(self, config: LakeConfig, job_name: str, entity: S.EntitySchema, soft_delete: bool = False):
        self.config = config
        self.soft_delete = soft_delete
        self.job_name = job_name
        self.entity = entity
        root = config.root.rstrip("/")
        self.raw_uri = f"{root}/raw/{entity.name}_events"
        self.silver_uri = f"{root}/silver/{entity.name}"
        self.tombstones_uri = f"{root}/silver/{entity.name}_tombstones"
        self.quarantine_uri = f"{root}/quarantine/{entity.name}"
        self.parquet = ParquetLayers(config.root, entity, soft_delete) if config.parquet_layers else None
        # uri -> the table as last read: loading a table reads its whole log since the last checkpoint
        # (up to 100 commits, a request each on S3) where bringing it up to date reads the new commits only
        self._tables: dict[str, DeltaTable] = {}

    def check(self, spark) -> None:
        """Start-up check: Spark can write the Parquet layers' location."""
        if self.parquet is not None:
            check_filesystem(spark, self.config.root)

    # --- helpers ------------------------------------------------------------------------------------
    def table(self, uri: str) -> DeltaTable | None:
        """The Delta table at ``uri`` (one of this lake's) at its latest version, or None before its first
        commit. Loaded once, then brought up to date with the commits made since (by this job or another)."""
        table = self._tables.get(uri)
        if table is not None:
            table.update_incremental()
            return table
        if not DeltaTable.is_deltatable(uri, storage_options=self.config.storage_options):
            return None
        table = self._tables[uri] = DeltaTable(uri, storage_options=self.config.storage_options)
        return table

    def _app_id(self, stream_id: str, uri: str) -> str:
        return f"{self.job_name}/{stream_id}/{uri.rsplit('/', 2)[-2]}/{uri.rsplit('/', 1)[-1]}"

    def _existing_or_created(self, uri: str, table: DeltaTable | None, like: pa.Table) -> DeltaTable:
        """A MERGE needs a target: on the first batch, create the table empty with ``like``'s schema."""
        if table is not None:
            return table
        write_deltalake(uri, like.slice(0, 0), mode="append", storage_options=self.config.storage_options)
        return self.table(uri)

    def _commit(self, app_id: str, batch_id: int) -> CommitProperties:
        return CommitProperties(app_transactions=[Transaction(app_id, batch_id)])

    def _append(self, uri: str, data: pa.Table, app_id: str, batch_id: int, partition_by=None) -> None:
        write_deltalake(uri, data, mode="append", partition_by=partition_by, schema_mode="merge",
                        storage_options=self.config.storage_options, target_file_size=self.config.target_file_size,
                        commit_properties=self._commit(app_id, batch_id))

    # --- silver -------------------------------------------------------------------------------------
    def _key_sequences(self, uri: str, like: pa.Schema) -> pa.Table | None:
        """Key + sequence of every row of the Delta table at ``uri``, the key typed as in ``like`` (None: no
        table). Read whole and joined by the caller: pyarrow's dataset filter fails on delta-rs' string_view
        statistics. Short columns; compaction keeps the tables' files few."""
        table = self.table(uri)
        if table is None:
            return None
        columns = [*self.entity.keys, S.CDC_SEQUENCE]
        rows = table.to_pyarrow_table(columns=columns)
        return rows.cast(pa.schema([like.field(k) for k in self.entity.keys] + [(S.CDC_SEQUENCE, pa.string())]))

    def _newer_than(self, state: pa.Table, uri: str) -> pa.Table:
        """The sequence guard against one stored table: ``state``'s rows whose key has no row at ``uri``
        or an older one (the warehouse's ``sql.MergeSql.prune_stale``, for Delta)."""
        if state.num_rows == 0:
            return state
        stored = self._key_sequences(uri, state.schema)
        if stored is None or stored.num_rows == 0:
            return state
        keys = list(self.entity.keys)
        joined = state.join(stored.rename_columns([*keys, "_stored_seq"]), keys=keys, join_type="left outer")
        # Kleene logic: "no stored row (null) OR newer" must be true for a key without a stored row;
        # plain or_ gives null there, and a null filter drops the row
        keep = pc.or_kleene(pc.is_null(joined["_stored_seq"]),
                            pc.greater(joined[S.CDC_SEQUENCE], joined["_stored_seq"]))
        return joined.filter(keep).select(state.column_names).cast(state.schema)

    @property
    def _key_match(self) -> str:
        """The merge predicate: target ``t`` and source ``s`` hold the same item (every key column equal)."""
        return " AND ".join(f"t.{k} = s.{k}" for k in self.entity.keys)

    def _with_soft_delete(self, state: pa.Table) -> pa.Table:
        removed = pc.equal(state[S.CDC_OP], "REMOVE")
        deleted_at = pc.if_else(removed, state[S.CDC_EVENT_TIME], pa.scalar(None, state[S.CDC_EVENT_TIME].type))
        return state.append_column(S.IS_DELETED, removed).append_column(S.DELETED_AT, deleted_at)

    def _merge_silver(self, silver: DeltaTable | None, state: pa.Table, app_id: str, batch_id: int) -> None:
        newer = f"s.{S.CDC_SEQUENCE} > t.{S.CDC_SEQUENCE}"
        is_remove = f"s.{S.CDC_OP} = 'REMOVE'"
        if self.soft_delete:
            state = self._with_soft_delete(state)
        silver = self._existing_or_created(self.silver_uri, silver, state)
        merge = silver.merge(state, predicate=self._key_match, source_alias="s",
                             target_alias="t", commit_properties=self._commit(app_id, batch_id))
        if self.soft_delete:
            merge = merge.when_matched_update_all(predicate=newer).when_not_matched_insert_all()
        else:
            merge = (merge.when_matched_delete(predicate=f"{newer} AND {is_remove}")
                     .when_matched_update_all(predicate=f"{newer} AND NOT {is_remove}")
                     .when_not_matched_insert_all(predicate=f"NOT {is_remove}"))
        merge.execute()

    def _not_older_than_silver(self, state: pa.Table) -> pa.Table:
        """``state`` without the REMOVE rows that a live silver row outranks: a late, older REMOVE deletes
        nothing and leaves no tombstone. Read after the silver merge (so also on a replay that finds
        silver committed): a REMOVE that applied has taken its key's row out of silver."""
        removes = state.filter(pc.equal(state[S.CDC_OP], "REMOVE"))
        if removes.num_rows == 0:
            return state
        fresh = self._newer_than(removes, self.silver_uri)
        return pa.concat_tables([state.filter(pc.not_equal(state[S.CDC_OP], "REMOVE")), fresh])

    def _merge_tombstones(self, tombstones: DeltaTable | None, state: pa.Table, app_id: str, batch_id: int) -> None:
        columns = [*self.entity.keys, S.CDC_SEQUENCE, S.CDC_EVENT_TIME, S.CDC_EVENT_ID, S.CDC_BATCH_ID]
        source = state.select(columns)
        tombstones = self._existing_or_created(self.tombstones_uri, tombstones, source)
        ops = state[S.CDC_OP]
        source = source.append_column("_is_remove", pc.equal(ops, "REMOVE"))
        newer = f"s.{S.CDC_SEQUENCE} > t.{S.CDC_SEQUENCE}"
        (tombstones.merge(source, predicate=self._key_match, source_alias="s",
                          target_alias="t", commit_properties=self._commit(app_id, batch_id))
         .when_matched_update({c: f"s.{c}" for c in columns}, predicate=f"{newer} AND s._is_remove")
         .when_matched_delete(predicate=f"{newer} AND NOT s._is_remove")  # re-inserted: no longer deleted
         .when_not_matched_insert({c: f"s.{c}" for c in columns}, predicate="s._is_remove")
         .execute())

    # --- the batch ----------------------------------------------------------------------------------
    def write_batch(self, *, batch_id: int, stream_id: str, raw: DataFrame, state: pa.Table, quarantine: pa.Table,
                    state_df: DataFrame | None = None, quarantine_df: DataFrame | None = None) -> LakeResult:
        """Raw rows as a DataFrame (collected only for Delta); state and quarantine as Arrow (Delta) and
        as DataFrames (needed by Parquet layers, which Spark writes itself)."""
        skipped: list[str] = []
        merged = 0
        cfg = self.config

        def once(uri: str, write) -> None:
            """Run ``write(table, app_id)`` unless this batch is already committed to ``uri``; the table
            is loaded once, for the check and the write."""
            table = self.table(uri)
            app_id = self._app_id(stream_id, uri)
            version = table.transaction_version(app_id) if table is not None else None
            if version is not None and version >= batch_id:
                skipped.append(uri)
                return
            write(table, app_id)

        def merge_silver(table: DeltaTable | None, app_id: str) -> None:
            nonlocal merged
            # tombstones are read here, so a replay that finds silver committed does not read them
            live = state if self.soft_delete else self._newer_than(state, self.tombstones_uri)
            self._merge_silver(table, live, app_id, batch_id)
            merged = live.num_rows

        raw_rows = None
        if cfg.raw_format == "parquet":
            self.parquet.write_raw(raw, stream_id, batch_id)
        else:
            raw_rows = raw.toArrow()
            once(self.raw_uri, lambda _, app: self._append(self.raw_uri, raw_rows, app, batch_id,
                                                           partition_by=["event_date"]))
        crash_point("between-lake-layers")
        if quarantine.num_rows:
            if cfg.quarantine_format == "parquet":
                self.parquet.write_quarantine(_required(quarantine_df, "quarantine_df"), stream_id, batch_id)
            else:
                once(self.quarantine_uri, lambda _, app: self._append(self.quarantine_uri, quarantine, app, batch_id))
        if state.num_rows:
            if cfg.silver_format == "parquet":
                spark = _required(state_df, "state_df").sparkSession
                if self.parquet.merge_silver(spark, state_df, stream_id, batch_id):
                    merged = state.num_rows
                else:
                    skipped.append(self.silver_uri)
            else:
                once(self.silver_uri, merge_silver)
                if not self.soft_delete:
                    once(self.tombstones_uri, lambda table, app: self._merge_tombstones(
                        table, self._not_older_than_silver(state), app, batch_id))
        if skipped:
            log.info("batch %s: already in the lake for %s (replay)", batch_id, ", ".join(skipped))
        return LakeResult(raw_rows.num_rows if raw_rows is not None else None, merged, quarantine.num_rows,
                          tuple(skipped))


def _required(value, name: str):
    if value is None:
        raise ValueError(f"{name} is needed when that layer is Parquet")
    return value


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    files_before: int
    files_after: int
    files_vacuumed: int


def maintain(lake: DeltaLake, *, retention_hours: int = 168, vacuum: bool = True, spark=None,
             keep_snapshots: int = 10) -> list[MaintenanceResult]:
    """Compact small files (one per batch per partition otherwise) and vacuum files older than the
    retention that no version within it references. Readers of older versions need the retention: the
    default keeps 7 days of time travel. Run it from a scheduled job, not inside the stream.
    Parquet layers: a Parquet silver keeps its ``keep_snapshots`` newest snapshots (needs ``spark``);
    Parquet raw/quarantine partitions are left as written (no transaction to compact them safely)."""
    results = []
    cfg = lake.config
    delta_uris = [uri for uri, fmt in ((lake.raw_uri, cfg.raw_format), (lake.silver_uri, cfg.silver_format),
                                       (lake.tombstones_uri, cfg.silver_format),
                                       (lake.quarantine_uri, cfg.quarantine_format)) if fmt == "delta"]
    for uri in delta_uris:
        table = lake.table(uri)
        if table is None:
            continue
        before = len(table.file_uris())
        table.optimize.compact(target_size=cfg.target_file_size)
        removed = 0
        if vacuum:
            removed = len(table.vacuum(retention_hours=retention_hours, dry_run=False,
                                       enforce_retention_duration=retention_hours >= 168))
        table = lake.table(uri)
        results.append(MaintenanceResult(uri, before, len(table.file_uris()), removed))
    if cfg.silver_format == "parquet" and spark is not None:
        pruned = lake.parquet.prune_snapshots(spark, keep=keep_snapshots)
        results.append(MaintenanceResult(lake.silver_uri + " (snapshots)", pruned + keep_snapshots, keep_snapshots,
                                         pruned))
    return results
