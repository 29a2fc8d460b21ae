"""Every SQL statement the warehouse sinks run, for PostgreSQL (local stand-in) and Redshift.

Built from the schema module only. Identifiers are validated (``schema.check_identifier``) and
double-quoted; values are always bound parameters (``%(name)s`` for psycopg, ``:name`` for the
Redshift Data API), never formatted into the text.

The merge rules (``merge_rules``) per micro-batch, inside one transaction:
  1. drop staged rows that are not newer than the stored row or its delete tombstone (sequence guard);
  2. record the batch in the ledger, with counts computed from the stage;
  3. delete target rows that a staged row supersedes; insert the staged non-delete rows
     (soft delete: every staged row, already marked ``is_deleted``);
  4. hard delete: refresh the tombstones of deleted keys, so an older event arriving later cannot
     resurrect a deleted item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import types as T

from . import schema as S
from .column_types import Dialect
from .merge_rules import SNAPSHOT_EVENT_PREFIX, STORED_SNAPSHOT_SEQUENCE, MergeRules

_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9_.=\-]+)+$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z\-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/\-]{1,512}$")


def check_s3_uri(uri: str) -> str:
    """An S3 URI safe to place in a COPY literal (bucket rules; key of letters, digits, _ . = - /)."""
    if not _S3_URI.match(uri):
        raise ValueError(f"not a plain s3:// URI for COPY: {uri!r}")
    return uri


def check_role_arn(arn: str) -> str:
    if not _ROLE_ARN.match(arn):
        raise ValueError(f"not an IAM role ARN: {arn!r}")
    return arn


def quote(name: str) -> str:
    return '"' + S.check_identifier(name) + '"'


_IAM_ROLE_NAME = re.compile(r"^[A-Za-z0-9+=,.@_\-]{1,64}$")


def iam_role_user(role_name: str) -> str:
    """The quoted Redshift user an IAM role maps to through the Data API (``"IAMR:<role name>"``)."""
    if not _IAM_ROLE_NAME.match(role_name):
        raise ValueError(f"not an IAM role name: {role_name!r}")
    return f'"IAMR:{role_name}"'


def job_user_grants(db_schema: str, database: str, user: str) -> list[str]:
    """What the job's own database user (``user``, quoted) may do: create and use its schema's tables and
    temporary stage tables; nothing in other schemas, no admin rights."""
    schema = quote(db_schema)
    return [f"CREATE SCHEMA IF NOT EXISTS {schema}",
            f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {user}",
            f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {user}",  # tables an earlier version created
            f"GRANT TEMP ON DATABASE {quote(database)} TO {user}"]


def sql_type(field: S.Field, dialect: Dialect) -> str:
    column_type = field.column_type
    if column_type is None:
        raise ValueError(f"column {field.name}: no warehouse type for {field.spark_type.simpleString()}")
    return column_type.sql(dialect)


LEDGER_FIELDS: tuple[S.Field, ...] = (
    S.Field("job_name", T.StringType(), nullable=False),
    S.Field("stream_id", T.StringType(), nullable=False, description="Streaming query id (checkpoint identity)"),
    S.Field("batch_id", T.LongType(), nullable=False),
    S.Field("staged_rows", T.LongType(), nullable=False),
    S.Field("upserted_rows", T.LongType(), nullable=False),
    S.Field("deleted_rows", T.LongType(), nullable=False),
    S.Field("stale_rows", T.LongType(), nullable=False, description="Staged rows older than the stored state"),
    S.Field("quarantined_rows", T.LongType(), nullable=False),
    S.Field("contract_version", T.StringType(), description="The contract's version the batch was written with"),
    # a backfill's rows (merge rule 6), told apart from the stream's; null in batches recorded before 2026-12
    S.Field("snapshot_rows", T.LongType(), description="Staged rows from a backfill's snapshot"),
    S.Field("snapshot_loaded_rows", T.LongType(),
            description="Snapshot rows applied; the others found a stored row as new or newer, and were skipped"),
    S.Field("snapshot_quarantined_rows", T.LongType(), description="Snapshot records quarantined"),
    # what the batch did before its merge (warehouse.base.BatchFacts); null in batches recorded before 2026-12-05
    S.Field("events_read", T.LongType(), description="Stream records the batch read"),
    S.Field("stage_seconds", T.StringType(), description="Seconds per stage up to the merge, as a JSON object"),
)
BATCH_FACTS = ("events_read", "stage_seconds")
SNAPSHOT_COUNTS = ("snapshot_rows", "snapshot_loaded_rows", "snapshot_quarantined_rows")
# Columns added to the pipeline's own tables after their first release: an existing table gets them at start-up
LEDGER_TABLE = "cdc_batch_ledger"
QUARANTINE_SUFFIX = "_quarantine"
ADDED_LEDGER_COLUMNS = ("contract_version", *SNAPSHOT_COUNTS, *BATCH_FACTS)
ADDED_QUARANTINE_COLUMNS = (S.RECORD_ID,)
# One-row stage with the batch's ledger values (Redshift Data API batches take no bound parameters).
BATCH_META_FIELDS: tuple[S.Field, ...] = (
    S.Field("job_name", T.StringType(), nullable=False),
    S.Field("stream_id", T.StringType(), nullable=False),
    S.Field("batch_id", T.LongType(), nullable=False),
    S.Field("staged_rows", T.LongType(), nullable=False),
    S.Field("quarantined_rows", T.LongType(), nullable=False),
    S.Field("contract_version", T.StringType()),
    S.Field("snapshot_rows", T.LongType(), nullable=False),
    S.Field("snapshot_quarantined_rows", T.LongType(), nullable=False),
    S.Field("events_read", T.LongType()),
    S.Field("stage_seconds", T.StringType()),
)


def batch_values(job_name: str, stream_id: str, batch_id: int, state: pa.Table, quarantine: pa.Table | None,
                 contract_version: str, facts: dict | None = None) -> dict:
    """The ledger values of one batch known before its merge (``BATCH_META_FIELDS``): the staged and quarantined
    rows (``quarantine`` None: none), how many of each came from a backfill's snapshot, and ``facts``
    (``BatchFacts.ledger_values()``: events read, stage times; None where not given)."""
    snapshot_rows = pc.sum(pc.equal(state[S.CDC_SEQUENCE], STORED_SNAPSHOT_SEQUENCE)).as_py() or 0
    snapshot_records = 0 if quarantine is None else (
        pc.sum(pc.starts_with(quarantine[S.RECORD_ID], SNAPSHOT_EVENT_PREFIX)).as_py() or 0)
    return {"job_name": job_name, "stream_id": stream_id, "batch_id": batch_id, "staged_rows": state.num_rows,
            "quarantined_rows": 0 if quarantine is None else quarantine.num_rows, "contract_version": contract_version,
            "snapshot_rows": snapshot_rows, "snapshot_quarantined_rows": snapshot_records,
            **dict.fromkeys(BATCH_FACTS), **(facts or {})}


@dataclass(frozen=True)
class MergeSql:
    """SQL for one entity's current-state table and its companions in one database schema."""

    dialect: Dialect
    entity: S.EntitySchema
    db_schema: str = "sales"
    soft_delete: bool = False
    table: str | None = None  # defaults to the entity name

    def __post_init__(self) -> None:
        S.check_identifier(self.db_schema)
        S.check_identifier(self.table_name)

    # --- names ---------------------------------------------------------------------------------
    @property
    def table_name(self) -> str:
        return self.entity.name if self.table is None else self.table

    def qualified(self, table: str) -> str:
        return f"{quote(self.db_schema)}.{quote(table)}"

    @property
    def target(self) -> str:
        return self.qualified(self.table_name)

    @property
    def tombstones(self) -> str:
        return self.qualified(self.table_name + "_tombstones")

    @property
    def quarantine(self) -> str:
        return self.qualified(self.table_name + QUARANTINE_SUFFIX)

    @property
    def ledger(self) -> str:
        return self.qualified(LEDGER_TABLE)

    @property
    def dq_results(self) -> str:
        """Data-quality results history: one row per rule per validated batch (``schema.DQ_RESULT_FIELDS``)."""
        return self.qualified("dq_results")

    @property
    def schema_changes(self) -> str:
        """Schema history: one row per schema change per sink (``schema.SCHEMA_CHANGE_FIELDS``)."""
        return self.qualified("schema_changes")

    @property
    def dq_result_columns(self) -> list[str]:
        return [f.name for f in S.DQ_RESULT_FIELDS]

    @property
    def stage(self) -> str:
        return quote("stage_" + self.table_name)  # a temp table: lives in the session's temp schema

    # --- columns -------------------------------------------------------------------------------
    @property
    def rules(self) -> MergeRules:
        return MergeRules(self.entity, self.soft_delete)

    @property
    def stored_fields(self) -> tuple[S.Field, ...]:
        """Columns of the target table (also the stage, which is loaded with exactly these)."""
        return self.rules.row_fields

    @property
    def stage_columns(self) -> list[str]:
        return self.rules.row_columns

    @property
    def quarantine_columns(self) -> list[str]:
        return [f.name for f in S.QUARANTINE_FIELDS]

    def _param(self, name: str) -> str:
        return f"%({name})s" if self.dialect is Dialect.POSTGRES else f":{name}"

    def _column_defs(self, fields, extra: tuple[str, ...] = ()) -> str:
        defs = [f"{quote(f.name)} {sql_type(f, self.dialect)}{'' if f.nullable else ' NOT NULL'}" for f in fields]
        return ",\n  ".join([*defs, *extra])

    def key_clauses(self, keys: list[str]) -> tuple[str, ...]:
        cols = ", ".join(quote(k) for k in keys)
        return (f"PRIMARY KEY ({cols})",)

    def _table_suffix(self) -> str:
        # Redshift: co-locate by the partition key and sort by the whole key so DELETE ... USING joins locally.
        sort = ", ".join(quote(k) for k in self.entity.keys)
        return f" DISTKEY({quote(self.entity.keys[0])}) SORTKEY({sort})" if self.dialect is Dialect.REDSHIFT else ""

    # --- DDL -----------------------------------------------------------------------------------
    def create_table(self, table: str, fields, extra: tuple[str, ...] = (), keyed: bool = False) -> str:
        suffix = self._table_suffix() if keyed else ""
        return f"CREATE TABLE IF NOT EXISTS {table} (\n  {self._column_defs(fields, extra)}\n){suffix}"

    def create_statements(self) -> list[str]:
        key = list(self.entity.keys)

        def now_column(name: str) -> str:
            return f"{quote(name)} TIMESTAMP DEFAULT CURRENT_TIMESTAMP"

        ledger_key = self.key_clauses(["job_name", "stream_id", "batch_id"])
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {quote(self.db_schema)}",
            self.create_table(self.target, self.stored_fields, (now_column("loaded_at"), *self.key_clauses(key)),
                               keyed=True),
            self.create_table(self.quarantine, S.QUARANTINE_FIELDS, (now_column("quarantined_at"),)),
            self.create_table(self.ledger, LEDGER_FIELDS, (now_column("committed_at"), *ledger_key)),
            self.create_table(self.dq_results, S.DQ_RESULT_FIELDS,
                               self.key_clauses(["job_name", "stream_id", "batch_id", "validated_at", "rule"])),
            self.create_table(self.schema_changes, S.SCHEMA_CHANGE_FIELDS),
        ]
        if self.rules.keeps_tombstones:
            statements.append(self.create_table(self.tombstones, self.rules.tombstone_fields, self.key_clauses(key),
                                                 keyed=True))
        if self.entity.history:
            from .sql_history import HistorySql  # (which builds on this module)

            statements.append(HistorySql(self).create_table())
        return statements

    def added_columns(self) -> dict[str, tuple[S.Field, ...]]:
        """Per table (its name in the schema): the columns a table created by an earlier release may lack."""
        added = {LEDGER_TABLE: (LEDGER_FIELDS, ADDED_LEDGER_COLUMNS),
                 self.table_name + QUARANTINE_SUFFIX: (S.QUARANTINE_FIELDS, ADDED_QUARANTINE_COLUMNS)}
        return {table: tuple(f for f in fields if f.name in columns) for table, (fields, columns) in added.items()}

    def create_stage(self) -> str:
        return self.temp_stage(self.table_name, self.stored_fields)[1]

    # --- ledger --------------------------------------------------------------------------------
    def ledger_lookup(self) -> str:
        return f"SELECT {quote('batch_id')} FROM {self.ledger} WHERE {self._ledger_where()}"

    def _ledger_where(self) -> str:
        return " AND ".join(f"{quote(c)} = {self._param(c)}" for c in ("job_name", "stream_id", "batch_id"))

    LEDGER_COUNTS = ("staged_rows", "upserted_rows", "deleted_rows", "stale_rows", "quarantined_rows", *SNAPSHOT_COUNTS)

    def ledger_counts(self) -> str:
        """The counts of one recorded batch, in ``LEDGER_COUNTS`` order (0 where a ledger of an earlier release
        has none)."""
        columns = ", ".join(f"COALESCE({quote(c)}, 0)" for c in self.LEDGER_COUNTS)
        return f"SELECT {columns} FROM {self.ledger} WHERE {self._ledger_where()}"

    def ledger_insert(self) -> str:
        """Counts come from the stage after the sequence guard pruned it (so they are what is applied)."""
        op, k = quote(S.CDC_OP), quote(self.entity.keys[0])
        return (
            f"INSERT INTO {self.ledger} ({', '.join(quote(f.name) for f in LEDGER_FIELDS)})\n"
            f"SELECT {self._param('job_name')}, {self._param('stream_id')}, {self._param('batch_id')},"
            f" {self._param('staged_rows')},\n"
            f"  COALESCE(SUM(CASE WHEN {op} <> 'REMOVE' THEN 1 ELSE 0 END), 0),\n"
            f"  COALESCE(SUM(CASE WHEN {op} = 'REMOVE' THEN 1 ELSE 0 END), 0),\n"
            f"  {self._param('staged_rows')} - COUNT({k}), {self._param('quarantined_rows')},"
            f" {self._param('contract_version')},\n"
            f"  {self._param('snapshot_rows')}, {self._snapshot_rows_left()},"
            f" {self._param('snapshot_quarantined_rows')}, {self._param('events_read')},"
            f" {self._param('stage_seconds')}\n"
            f"FROM {self.stage}"
        )

    # --- Redshift Data API: no bound parameters in batch_execute_statement ------------------------
    # The batch's values travel as staged Parquet files (COPY), never as SQL text: a one-row "batch"
    # stage carries job, stream, batch id and counts for the ledger row.
    def temp_stage(self, name: str, fields) -> tuple[str, str]:
        """(quoted name, CREATE TEMP TABLE) of a stage with exactly ``fields``, in order (COPY of Parquet
        maps columns by position)."""
        table = quote("stage_" + name)
        on_commit = " ON COMMIT DROP" if self.dialect is Dialect.POSTGRES else ""
        return table, f"CREATE TEMP TABLE {table} (\n  {self._column_defs(fields)}\n){on_commit}"

    def copy_parquet(self, table: str, s3_uri: str, iam_role_arn: str) -> str:
        """Redshift COPY of one staged Parquet object (the URI and role are checked, not user data)."""
        return (f"COPY {table} FROM '{check_s3_uri(s3_uri)}'\n"
                f"IAM_ROLE '{check_role_arn(iam_role_arn)}'\nFORMAT AS PARQUET")

    def insert_from(self, target: str, stage: str, columns: list[str]) -> str:
        cols = ", ".join(quote(c) for c in columns)
        return f"INSERT INTO {target} ({cols})\nSELECT {cols} FROM {stage}"

    def quarantine_insert(self, stage: str) -> str:
        """The staged quarantine rows the quarantine does not hold yet (``schema.QUARANTINE_IDENTITY``): a batch
        written again under another stream id (a reset checkpoint, a backfill run twice) adds nothing."""
        same = " AND ".join(f"q.{quote(c)} = s.{quote(c)}" for c in S.QUARANTINE_IDENTITY)
        return (f"{self.insert_from(self.quarantine, stage + ' s', self.quarantine_columns)}\n"
                f"WHERE NOT EXISTS (SELECT 1 FROM {self.quarantine} q WHERE {same})")

    def ledger_insert_from_meta(self, meta: str) -> str:
        """The ledger row with the batch's values read from the one-row ``meta`` stage."""
        op, k = quote(S.CDC_OP), quote(self.entity.keys[0])
        m = {f.name: f"m.{quote(f.name)}" for f in BATCH_META_FIELDS}
        return (
            f"INSERT INTO {self.ledger} ({', '.join(quote(f.name) for f in LEDGER_FIELDS)})\n"
            f"SELECT {m['job_name']}, {m['stream_id']}, {m['batch_id']}, {m['staged_rows']},\n"
            f"  (SELECT COALESCE(SUM(CASE WHEN {op} <> 'REMOVE' THEN 1 ELSE 0 END), 0) FROM {self.stage}),\n"
            f"  (SELECT COALESCE(SUM(CASE WHEN {op} = 'REMOVE' THEN 1 ELSE 0 END), 0) FROM {self.stage}),\n"
            f"  {m['staged_rows']} - (SELECT COUNT({k}) FROM {self.stage}), {m['quarantined_rows']},"
            f" {m['contract_version']},\n"
            f"  {m['snapshot_rows']}, (SELECT {self._snapshot_rows_left()} FROM {self.stage}),"
            f" {m['snapshot_quarantined_rows']}, {m['events_read']}, {m['stage_seconds']}\n"
            f"FROM {meta} AS m"
        )

    def _snapshot_rows_left(self) -> str:
        """The stage's snapshot rows once the sequence guard pruned it: those applied (an aggregate)."""
        sequence = quote(S.CDC_SEQUENCE)
        # a constant of the pipeline's own (digits only), not a value from the data
        return f"COALESCE(SUM(CASE WHEN {sequence} = '{STORED_SNAPSHOT_SEQUENCE}' THEN 1 ELSE 0 END), 0)"

    def merge_statements_from_meta(self, meta: str) -> list[str]:
        """:meth:`merge_statements` without bound parameters (Redshift ``batch_execute_statement``)."""
        return [*self.prune_stale(), self.ledger_insert_from_meta(meta), *self.apply()]

    # --- merge ---------------------------------------------------------------------------------
    def _not_newer_than(self, table: str, alias: str) -> str:
        """Rule 1: drop the staged rows that do not apply over ``table``'s rows."""
        rules = self.rules
        return (f"DELETE FROM {self.stage} USING {table} AS {alias}\n"
                f"WHERE {rules.same_item(self.stage, alias, quote)} AND NOT {rules.newer(alias, self.stage, quote)}")

    def _superseded(self, table: str, table_name: str) -> str:
        same_item = self.rules.same_item(quote(table_name), "s", quote)
        return f"DELETE FROM {table} USING {self.stage} AS s\nWHERE {same_item}"

    def prune_stale(self) -> list[str]:
        statements = [self._not_newer_than(self.target, "t")]
        if self.rules.keeps_tombstones:
            statements.append(self._not_newer_than(self.tombstones, "d"))
        return statements

    def apply(self) -> list[str]:
        """Rules 2-4: staged rows replace the rows they supersede; with hard deletes a REMOVE is not inserted
        but refreshes its key's tombstone, and an upsert clears it."""
        rules = self.rules
        col_list = ", ".join(quote(c) for c in self.stage_columns)
        statements = [self._superseded(self.target, self.table_name)]
        if not rules.keeps_tombstones:  # soft delete: every row, REMOVEs already marked deleted
            return [*statements, self.insert_from(self.target, self.stage, self.stage_columns)]
        is_remove = rules.is_remove(self.stage, quote)
        tomb_cols = ", ".join(quote(c) for c in rules.tombstone_columns)
        return [
            *statements,
            f"INSERT INTO {self.target} ({col_list})\nSELECT {col_list} FROM {self.stage} WHERE NOT {is_remove}",
            self._superseded(self.tombstones, self.table_name + "_tombstones"),
            f"INSERT INTO {self.tombstones} ({tomb_cols})\nSELECT {tomb_cols} FROM {self.stage} WHERE {is_remove}",
        ]

    def merge_statements(self) -> list[str]:
        """Everything after the stage is loaded, in order, for one transaction."""
        return [*self.prune_stale(), self.ledger_insert(), *self.apply()]
