"""Every sink at once (PostgreSQL warehouse, Delta or Parquet lake) behind one batch handler, fed histories of
CDC events, and read back as comparable rows: the model test and the merge-rule cases share it."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
from deltalake import DeltaTable

from sales_cdc import schema as S
from sales_cdc.config import DqConfig, LakeConfig
from sales_cdc.lake import Lake
from sales_cdc.lake.parquet import silver_commits
from sales_cdc.migration import Migration, Plan
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.quality import DataQuality
from sales_cdc.quality.suites import ENVELOPE_SUITE
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.sql_history import HistorySql
from sales_cdc.warehouse import PostgresWarehouse
from sales_cdc_local.records import stream_record
from tests.helpers import ORDERS, copy_project, source_rows


@dataclass(frozen=True)
class Event:
    op: str
    key: tuple  # the entity's key values
    sequence: int
    image: dict  # NewImage (INSERT/MODIFY) or OldImage (REMOVE): the values the state row carries
    entity: S.EntitySchema = ORDERS
    event_time: int | None = None  # ApproximateCreationDateTime (epoch seconds); None: the records' default

    def record(self) -> dict:
        image = {**dict(zip(self.entity.keys, self.key, strict=True)), **self.image}  # images hold the key too
        other = {"new": image} if self.op != "REMOVE" else {"old": image}
        return stream_record(self.op, self.sequence, key=self.key, **other, entity=self.entity,
                             event_time=self.event_time)


@dataclass
class History:
    events: list[Event]  # in delivery order, duplicates included
    batches: list[list[Event]] = field(default_factory=list)


def actual_rows(rows: list[dict], soft_delete: bool, entity: S.EntitySchema) -> dict:
    def one(r: dict) -> tuple:
        extra = json.loads(r[S.UNMAPPED]) if r[S.UNMAPPED] else None
        row = (r["product_name"], r["quantity"], Decimal(r["price"]), r["customer_id"], extra,
               int(r[S.CDC_SEQUENCE]), r[S.CDC_OP])
        return (*row, r[S.IS_DELETED]) if soft_delete else row
    return {tuple(r[k] for k in entity.keys): one(r) for r in rows}


def tombstone_rows(rows: list[dict], entity: S.EntitySchema) -> dict:
    return {tuple(r[k] for k in entity.keys): int(r[S.CDC_SEQUENCE]) for r in rows}


# --- the sinks ----------------------------------------------------------------------------------------
class SimulatedCrash(Exception):
    """The job died between two sinks' commits (raised in place of a SIGKILL, so that one process goes on)."""


class CrashingWarehouse:
    """The warehouse, except that a merge after :meth:`arm` dies once the lake has committed the batch and before
    the warehouse's own commit: what a crash between the two sinks leaves behind."""

    def __init__(self, warehouse):
        self._warehouse, self._armed = warehouse, False

    def __getattr__(self, name):
        return getattr(self._warehouse, name)

    def arm(self) -> None:
        self._armed = True

    def merge_batch(self, **kwargs):
        if self._armed:
            self._armed = False
            lake_committed = kwargs["before_commit"]

            def crash() -> None:
                lake_committed()
                raise SimulatedCrash

            kwargs["before_commit"] = crash
        return self._warehouse.merge_batch(**kwargs)


def envelope_quality(root: Path, entity: S.EntitySchema) -> DataQuality:
    """Data quality with the shipped envelope suite and the contract's rules, which every generated record passes
    (the orders suite's business rules would quarantine random values): a batch the pandas screen clears."""
    project = copy_project(root)
    for suite in (project / "expectations").glob("*.json"):
        if suite.stem != ENVELOPE_SUITE:
            suite.unlink()
    return DataQuality(DqConfig(expectations_dir=str(project)), entity, "model")


LOOKUP_ROW_GROUP_ROWS = 3


class Sinks:
    def __init__(self, spark, pg_url, db_schema, root, soft_delete: bool, lake_format: str, entity: S.EntitySchema,
                 quality: DataQuality | None = None):
        self.spark, self.soft_delete, self.lake_format, self.entity = spark, soft_delete, lake_format, entity
        sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, soft_delete=soft_delete, entity=entity)
        self.warehouse = CrashingWarehouse(PostgresWarehouse(pg_url, sql, job_name="model"))
        self.warehouse.ensure_tables()
        formats = {f"{layer}_format": lake_format for layer in ("raw", "silver", "quarantine")}
        # row groups of a few rows: the model's small tables then span many, as a real silver does, and every lookup
        # in them (``DeltaTables.row_groups``: silver, its tombstones, the history) is held against the model across
        # row groups
        config = LakeConfig(str(root), lookup_row_group_rows=LOOKUP_ROW_GROUP_ROWS, **formats)
        self.lake = Lake(config, "model", entity, soft_delete=soft_delete)
        self.handler = BatchHandler(warehouse=self.warehouse, lake=self.lake, quality=quality,
                                    options=HandlerOptions(default_stream_id="model"))

    def run(self, histories: list[History], replayed: set[int], reset: set[int] = frozenset()) -> None:
        """Every history's batches in turn (:meth:`run_batches`)."""
        self.run_batches([[e.record() for h in histories if b < len(h.batches) for e in h.batches[b]]
                          for b in range(max(len(h.batches) for h in histories))], replayed, reset)

    def run_batches(self, batches: list[list[dict]], replayed: set[int], reset: set[int] = frozenset()) -> None:
        """The batches of records in turn (``replayed`` batch ids twice: a Spark retry); then the ``reset`` batch
        ids again under another stream id, as a job whose checkpoint was deleted reads its stream again."""
        frames = [source_rows(self.spark, *records) for records in batches]
        for batch_id, frame in enumerate(frames):
            for _ in range(2 if batch_id in replayed else 1):
                result = self.handler(frame, batch_id)
                assert result.quarantined == 0, "every generated record is valid"
        after_reset = BatchHandler(warehouse=self.warehouse, lake=self.lake,
                                   options=HandlerOptions(default_stream_id="model-after-a-checkpoint-reset"))
        for batch_id in sorted(reset & set(range(len(frames)))):
            after_reset(frames[batch_id], batch_id)

    # --- schema evolution --------------------------------------------------------------------------------
    def migrate(self, entity: S.EntitySchema, steps: int | None = None) -> Plan:
        """Migrate every sink to ``entity``, as a job start does (``steps``: only the first ones, as a job that
        died half-way), then write its columns; the plan."""
        migration = Migration(self.spark, self.warehouse, self.lake, "model")
        plan = migration.plan(entity, "tests")
        migration.apply(replace(plan, steps=plan.steps[:steps]) if steps is not None else plan)
        if steps is None:
            self.use(plan.entity)
        return plan

    def use(self, entity: S.EntitySchema) -> None:
        self.entity = entity
        self.handler.use(entity)
        self.lake = self.handler.lake

    def warehouse_rows(self) -> dict[tuple, dict]:
        """Every stored row of the warehouse by key, as column -> value (``loaded_at`` left out)."""
        rows = self._query(self.warehouse.sql.target)
        return {tuple(r[k] for k in self.entity.keys): {c: v for c, v in r.items() if c != "loaded_at"} for r in rows}

    def silver_rows(self) -> dict[tuple, dict]:
        if self.lake_format == "parquet":
            rows = self._parquet_silver()[0]
        else:
            rows = DeltaTable(self.lake.silver_uri).to_pyarrow_table().to_pylist()
        return {tuple(r[k] for k in self.entity.keys): r for r in rows}

    def _query(self, table: str) -> list[dict]:
        # a connection of its own: a read on the job's would leave a transaction open under its next batch
        with pg_connection(self.warehouse.url) as conn:
            cursor = conn.execute(f"SELECT * FROM {table}")
            columns = [c.name for c in cursor.description]
            return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]

    def warehouse_state(self) -> dict:
        return actual_rows(self._query(self.warehouse.sql.target), self.soft_delete, self.entity)

    def warehouse_history(self) -> list[dict]:
        """Every row of the warehouse's history table (a contract with ``history: true``)."""
        return self._query(HistorySql(self.warehouse.sql).table)

    def lake_history(self) -> list[dict]:
        """Every row of the lake's history (its latest snapshot, for Parquet)."""
        if self.lake_format == "parquet":
            path = self.lake_history_path()
            return [r.asDict() for r in self.spark.read.parquet(path).collect()] if path else []
        return DeltaTable(self.lake.history_uri).to_pyarrow_table().to_pylist()

    def lake_history_path(self) -> str | None:
        """Where the Parquet history's latest snapshot is (None before its first batch)."""
        commits = silver_commits(self.spark, self.lake.history_uri)
        return commits[-1].state_path if commits else None

    def warehouse_tombstones(self) -> dict:
        return {} if self.soft_delete else tombstone_rows(self._query(self.warehouse.sql.tombstones), self.entity)

    def _parquet_silver(self) -> tuple[list[dict], list[dict]]:
        commit = silver_commits(self.spark, self.lake.silver_uri)[-1]
        state = [r.asDict() for r in self.spark.read.parquet(commit.state_path).collect()]
        tombs = [r.asDict() for r in self.spark.read.parquet(commit.tombstones_path).collect()] \
            if commit.tombstones_path else []
        return state, tombs

    def silver(self) -> tuple[dict, dict]:
        if self.lake_format == "parquet":
            state, tombs = self._parquet_silver()
        else:
            state = DeltaTable(self.lake.silver_uri).to_pyarrow_table().to_pylist()
            tombs = [] if self.soft_delete else DeltaTable(self.lake.tombstones_uri).to_pyarrow_table().to_pylist()
        return actual_rows(state, self.soft_delete, self.entity), tombstone_rows(tombs, self.entity)

    def row_groups(self, *uris: str) -> int:
        """How many Parquet row groups the Delta tables at ``uris`` are stored in."""
        files = [f for uri in uris if DeltaTable.is_deltatable(uri) for f in DeltaTable(uri).file_uris()]
        return sum(pq.ParquetFile(f).num_row_groups for f in files)

    def raw_payloads(self) -> list[str]:
        return self._lake_column(self.lake.raw_uri, S.PAYLOAD)

    def raw_records(self) -> list[dict]:
        return [json.loads(payload) for payload in self.raw_payloads()]

    def quarantine_payloads(self) -> list[str]:
        """The payload of every quarantine row of the lake (none before the first)."""
        return self._lake_column(self.lake.quarantine_uri, S.PAYLOAD)

    def _lake_column(self, uri: str, column: str) -> list:
        if self.lake_format == "parquet":
            if not Path(uri).exists():
                return []
            return [r[0] for r in self.spark.read.parquet(uri).select(column).collect()]
        if not DeltaTable.is_deltatable(uri):
            return []
        return DeltaTable(uri).to_pyarrow_table(columns=[column])[column].to_pylist()


def pg_connection(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True)


def into_batches(rnd, deliveries: list[list], count: int) -> list[list]:
    """Each history's deliveries cut at random points into ``count`` consecutive parts; batch ``b`` holds every
    history's part ``b`` (histories have their own keys, so each sees its own random batching)."""
    batches: list[list] = [[] for _ in range(count)]
    for delivered in deliveries:
        cuts = sorted(rnd.randint(0, len(delivered)) for _ in range(count - 1))
        for b, (start, end) in enumerate(itertools.pairwise([0, *cuts, len(delivered)])):
            batches[b] += delivered[start:end]
    return batches


def fresh_sinks(spark, pg_url, root, schema: str, soft_delete: bool, lake_format: str, entity) -> Sinks:
    """Every sink, in a warehouse schema of their own (dropped first) and a new lake."""
    with pg_connection(pg_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return Sinks(spark, pg_url, schema, root, soft_delete, lake_format, entity)
