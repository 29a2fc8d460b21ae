"""Redshift adapter through the Redshift Data API: the same merge contract as PostgreSQL (``sales_cdc.sql``).

Per batch:
  1. ledger lookup (``execute_statement`` with bound parameters): a batch already recorded is skipped;
  2. the batch is staged as Parquet objects under ``<staging_uri>/<job>/<stream>/<batch>/`` (state,
     quarantine, dq results and a one-row ``batch`` file with the ledger values);
  3. one ``batch_execute_statement`` — which Redshift runs as a single transaction — creates the temp
     stages, COPYs the objects (``FORMAT AS PARQUET``, ``IAM_ROLE``), prunes stale rows, writes the
     ledger row from the ``batch`` stage, applies DELETE USING + INSERT, appends quarantine and results;
  4. the statement is polled with backoff; a failure raises with Redshift's own error text.

No value of the batch is ever placed in SQL text: ``batch_execute_statement`` takes no parameters, so
values travel in the staged files. Credentials come from Secrets Manager (``secret_arn``) or the
job's IAM identity (``db_user`` with a provisioned cluster).
"""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import column_types as CT
from .. import schema as S
from ..evolution import ChangeKind
from ..merge_rules import MergeRules
from ..sql import BATCH_META_FIELDS, Dialect, MergeSql, batch_values, check_role_arn, check_s3_uri
from ..sql_history import HistorySql
from ..sql_migrate import MigrationSql
from .base import BatchFacts, MergeResult

log = logging.getLogger(__name__)

_SAFE_KEY_PART = re.compile(r"[^A-Za-z0-9_.=\-]")


class RedshiftStatementError(RuntimeError):
    """A Data API statement failed or timed out; the message carries Redshift's error text."""


@dataclass(frozen=True)
class DataApiConnection:
    """Which Redshift the Data API reaches, and as whom."""

    database: str
    workgroup_name: str | None = None  # Redshift Serverless …
    cluster_identifier: str | None = None  # … or a provisioned cluster
    secret_arn: str | None = None  # Secrets Manager secret with the database credentials; None with
    # db_user None: the caller's IAM identity (Serverless: the user "IAMR:<role>", the deployed job's way)
    db_user: str | None = None  # provisioned cluster with temporary IAM credentials instead of a secret

    def __post_init__(self) -> None:
        if (self.workgroup_name is None) == (self.cluster_identifier is None):
            raise ValueError("set exactly one of workgroup_name (Serverless) or cluster_identifier")

    def params(self) -> dict[str, str]:
        """The Data API request parameters that name the database and the credentials."""
        params = {"Database": self.database}
        if self.workgroup_name:
            params["WorkgroupName"] = self.workgroup_name
        else:
            params["ClusterIdentifier"] = self.cluster_identifier
        if self.secret_arn:
            params["SecretArn"] = self.secret_arn
        elif self.db_user:
            params["DbUser"] = self.db_user
        return params


@dataclass(frozen=True)
class Polling:
    """How a statement's status is polled: after ``initial_seconds``, growing up to ``max_seconds``; a
    statement still running after ``timeout_seconds`` is cancelled."""

    timeout_seconds: float = 900.0
    initial_seconds: float = 0.25
    max_seconds: float = 5.0


@dataclass(frozen=True)
class RedshiftTarget:
    connection: DataApiConnection
    iam_role_arn: str  # role Redshift assumes to read the staged Parquet (COPY ... IAM_ROLE)
    staging_uri: str  # s3://bucket/prefix for staged batches (lifecycle-expire it)
    polling: Polling = field(default_factory=Polling)

    def __post_init__(self) -> None:
        if self.staging_uri:  # empty for a connection that only runs SQL (the deploy's grants)
            check_s3_uri(self.staging_uri.rstrip("/") + "/x")


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, coerce_timestamps="us", allow_truncated_timestamps=False)
    return buffer.getvalue()


def _field_value(field: dict[str, Any]) -> Any:
    if field.get("isNull"):
        return None
    return next(iter(field.values()))


class DataApi:
    """Statements through the Redshift Data API: one with bound parameters, or a list in one transaction;
    each waited for (polled), and cancelled when it runs past the polling timeout."""

    def __init__(self, data_api, connection: DataApiConnection, polling: Polling = Polling(),
                 statement_name: str = "sales-cdc"):
        self.data_api, self.connection, self.polling = data_api, connection, polling
        self.statement_name = statement_name

    def _wait(self, statement_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.polling.timeout_seconds
        delay = self.polling.initial_seconds
        while True:
            description = self.data_api.describe_statement(Id=statement_id)
            status = description["Status"]
            if status == "FINISHED":
                return description
            if status in ("FAILED", "ABORTED"):
                failed = [s for s in description.get("SubStatements", []) if s.get("Status") == "FAILED"]
                where = f" (statement {failed[0].get('Id')}: {failed[0].get('QueryString', '')[:200]!r})" \
                    if failed else ""
                raise RedshiftStatementError(f"Redshift {status}: {description.get('Error', 'no error text')}{where}")
            if time.monotonic() > deadline:
                self.data_api.cancel_statement(Id=statement_id)
                raise RedshiftStatementError(f"statement {statement_id} still {status} after "
                                             f"{self.polling.timeout_seconds:.0f} s: cancelled")
            time.sleep(delay)
            delay = min(delay * 1.6, self.polling.max_seconds)

    def query(self, statement: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        """One statement with bound parameters (``:name``), waited for; rows when it returns any."""
        request: dict[str, Any] = {**self.connection.params(), "Sql": statement}
        if parameters:
            request["Parameters"] = [{"name": k, "value": str(v)} for k, v in parameters.items()]
        description = self._wait(self.data_api.execute_statement(**request)["Id"])
        if not description.get("HasResultSet"):
            return []
        rows, token = [], None
        while True:
            page = self.data_api.get_statement_result(Id=description["Id"], **({"NextToken": token} if token else {}))
            rows += [tuple(_field_value(f) for f in record) for record in page.get("Records", [])]
            token = page.get("NextToken")
            if not token:
                return rows

    def run_transaction(self, statements: list[str]) -> None:
        """``batch_execute_statement``: Redshift runs the statements in order, in one transaction."""
        response = self.data_api.batch_execute_statement(**self.connection.params(), Sqls=statements,
                                                         StatementName=self.statement_name[:500])
        self._wait(response["Id"])


class RedshiftDataApiWarehouse:
    def __init__(self, data_api, s3, sql: MergeSql, job_name: str, target: RedshiftTarget):
        if sql.dialect is not Dialect.REDSHIFT:
            raise ValueError("RedshiftDataApiWarehouse needs MergeSql(dialect=Dialect.REDSHIFT)")
        self.api = DataApi(data_api, target.connection, target.polling, f"{job_name}-merge")
        self.s3, self.sql, self.job_name, self.target = s3, sql, job_name, target

    def query(self, statement: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        return self.api.query(statement, parameters)

    def run_transaction(self, statements: list[str]) -> None:
        self.api.run_transaction(statements)

    # --- the Warehouse interface ----------------------------------------------------------------------
    def ensure_tables(self) -> None:
        """The tables, created if missing; a table of an earlier release gets the columns added since (Redshift
        has no ADD COLUMN IF NOT EXISTS: the columns are looked up first)."""
        self.run_transaction(self.sql.create_statements())
        migration = MigrationSql(self.sql)
        for table, fields in self.sql.added_columns().items():
            present = {row[0] for row in self.query(migration.columns_query(),
                                                    {"db_schema": self.sql.db_schema, "table": table})}
            missing = [migration.add_column(f, self.sql.qualified(table)) for f in fields if f.name not in present]
            if missing:
                self.run_transaction(missing)

    # --- schema migration (``migration.Migration`` drives it) --------------------------------------------
    def use(self, entity: S.EntitySchema) -> None:
        """Write ``entity``'s columns from now on (after a migration gave the table them)."""
        self.sql = replace(self.sql, entity=entity)

    def stored_columns(self) -> dict[str, CT.ColumnType | None] | None:
        rows = self.query(MigrationSql(self.sql).columns_query(),
                          {"db_schema": self.sql.db_schema, "table": self.sql.table_name})
        return {name: CT.of_sql(kind, *[None if v is None else int(v) for v in sizes])
                for name, kind, *sizes in rows} or None

    def _migration_prefix(self) -> str:
        """A prefix of its own for each call: an UNLOAD's files never mix with an earlier one's (ALLOWOVERWRITE
        replaces files of the same names only)."""
        parts = [_SAFE_KEY_PART.sub("_", p) for p in (self.job_name, "migration", uuid.uuid4().hex)]
        return "/".join([self.target.staging_uri.rstrip("/"), *parts])

    def unmapped_rows(self) -> pa.Table:
        """UNLOADed to the staging prefix as Parquet, then read: a table's rows do not travel through the Data
        API's result pages."""
        prefix = f"{self._migration_prefix()}/unmapped/"
        select = MigrationSql(self.sql).unmapped_rows_query()  # identifiers only: no quote to escape
        self.query(f"UNLOAD ('{select}')\nTO '{check_s3_uri(prefix + 'part')}'\n"
                   f"IAM_ROLE '{check_role_arn(self.target.iam_role_arn)}'\nFORMAT AS PARQUET ALLOWOVERWRITE")
        bucket, _, key = prefix.removeprefix("s3://").partition("/")
        parts = [pq.read_table(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()))
                 for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                 for o in page.get("Contents", [])]
        fields = MigrationSql(self.sql).promotion_fields([])
        schema = pa.schema([(f.name, f.arrow_type) for f in fields])
        return pa.concat_tables([t.select(schema.names).cast(schema) for t in parts]) if parts \
            else schema.empty_table()

    def recorded_contract(self, sink: str) -> str | None:
        rows = self.query(MigrationSql(self.sql).recorded_contract_query(),
                          {"table_name": self.sql.table_name, "change": ChangeKind.CONTRACT.value, "sink": sink})
        return rows[0][0] if rows else None

    def migrate(self, groups: list[list[str]], promoted: pa.Table | None, history: pa.Table) -> None:
        """``batch_execute_statement``s (one transaction each, at most MAX_STATEMENTS statements): the DDL, then,
        in the last, the promotion from a staged stage and the history rows (staged too: no value is placed in SQL
        text). A migration with more DDL than one call takes is split between whole changes; one that dies between
        two calls is planned again at the next start from the columns it left, and its history not yet written."""
        migration, sql, role = MigrationSql(self.sql), self.sql, self.target.iam_role_arn
        prefix = self._migration_prefix()
        transaction: list[str] = []
        if promoted is not None and promoted.num_rows:
            columns = [c for c in promoted.column_names if c not in (*sql.entity.keys, S.CDC_SEQUENCE, S.UNMAPPED)]
            fields = migration.promotion_fields(columns)
            stage, create = sql.temp_stage("promotion", fields)
            uri = self._stage_object(prefix, "promotion", promoted.select([f.name for f in fields]))
            transaction += [create, sql.copy_parquet(stage, uri, role), migration.promote(stage, columns)]
        stage, create = sql.temp_stage("schema_changes", S.SCHEMA_CHANGE_FIELDS)
        uri = self._stage_object(prefix, f"schema_changes_{int(time.time() * 1000)}", history)
        names = [f.name for f in S.SCHEMA_CHANGE_FIELDS]
        transaction += [create, sql.copy_parquet(stage, uri, role), sql.insert_from(sql.schema_changes, stage, names)]
        for statements in _packed(groups, transaction):
            self.run_transaction(statements)

    def _stage_object(self, prefix: str, name: str, table: pa.Table) -> str:
        bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
        key = f"{key_prefix}/{name}.parquet"
        self.s3.put_object(Bucket=bucket, Key=key, Body=_parquet_bytes(table), ServerSideEncryption="aws:kms")
        return f"s3://{bucket}/{key}"

    def _batch_prefix(self, stream_id: str, batch_id: int) -> str:
        parts = [_SAFE_KEY_PART.sub("_", p) for p in (self.job_name, stream_id, str(batch_id))]
        return "/".join([self.target.staging_uri.rstrip("/"), *parts])

    def staged_batch_statements(self, objects: dict[str, str]) -> list[str]:
        """Every statement of one batch's transaction, given the staged objects' URIs."""
        sql, role = self.sql, self.target.iam_role_arn
        meta, create_meta = sql.temp_stage("batch", BATCH_META_FIELDS)
        statements = [sql.create_stage(), sql.copy_parquet(sql.stage, objects["state"], role),
                      create_meta, sql.copy_parquet(meta, objects["batch"], role)]
        if "quarantine" in objects:
            stage, create = sql.temp_stage("quarantine", S.QUARANTINE_FIELDS)
            statements += [create, sql.copy_parquet(stage, objects["quarantine"], role),
                           sql.quarantine_insert(stage)]
        if "dq_results" in objects:
            stage, create = sql.temp_stage("dq_results", S.DQ_RESULT_FIELDS)
            statements += [create, sql.copy_parquet(stage, objects["dq_results"], role),
                           sql.insert_from(sql.dq_results, stage, sql.dq_result_columns)]
        if sql.entity.history:  # before the merge, which drops the stage's stale rows
            history = HistorySql(sql)
            stage, create = history.stage()
            copy = [sql.copy_parquet(stage, objects["superseded"], role)] if "superseded" in objects else []
            statements += [create, *copy, *history.statements(stage, sql.stage)]
        return statements + sql.merge_statements_from_meta(meta)

    def _ledger_counts(self, params: dict[str, Any]) -> tuple | None:
        rows = self.query(self.sql.ledger_counts(), params)
        return tuple(int(v) for v in rows[0]) if rows else None

    def committed(self, *, batch_id: int, stream_id: str) -> MergeResult | None:
        recorded = self._ledger_counts({"job_name": self.job_name, "stream_id": stream_id, "batch_id": batch_id})
        return MergeResult(batch_id, *recorded, replayed=True) if recorded is not None else None

    def stage_batch(self, *, batch_id: int, stream_id: str, state: pa.Table, quarantine: pa.Table,
                    dq_results: pa.Table | None = None, facts: BatchFacts | None = None,
                    superseded: pa.Table | None = None) -> dict[str, str]:
        """Upload the batch's rows for COPY: Parquet objects under the batch's own prefix (so a retry
        overwrites them), KMS-encrypted; their s3:// URIs by name (state, batch, quarantine, dq_results, superseded)."""
        prefix = self._batch_prefix(stream_id, batch_id)
        meta = pa.Table.from_pylist([batch_values(self.job_name, stream_id, batch_id, state, quarantine,
                                                  self.sql.entity.version, facts.ledger_values() if facts else None)],
                                    schema=pa.schema([(f.name, f.arrow_type) for f in BATCH_META_FIELDS]))
        objects = {"state": self._stage_object(prefix, "state", state.select(self.sql.stage_columns)),
                   "batch": self._stage_object(prefix, "batch", meta)}
        if quarantine.num_rows:
            rows = quarantine.select(self.sql.quarantine_columns)
            objects["quarantine"] = self._stage_object(prefix, "quarantine", rows)
        if dq_results is not None and dq_results.num_rows:
            objects["dq_results"] = self._stage_object(prefix, "dq_results", dq_results)
        if superseded is not None and superseded.num_rows:
            objects["superseded"] = self._stage_object(prefix, "superseded",
                                                       superseded.select(HistorySql(self.sql).stage_columns))
        return objects

    def merge_batch(self, *, batch_id: int, stream_id: str, state: pa.Table, quarantine: pa.Table,
                    dq_results: pa.Table | None = None, before_commit: Callable[[], None] | None = None,
                    facts: BatchFacts | None = None, superseded: pa.Table | None = None) -> MergeResult:
        key = {"job_name": self.job_name, "stream_id": stream_id, "batch_id": batch_id}
        recorded = self.committed(batch_id=batch_id, stream_id=stream_id)
        if recorded is not None:
            log.info("batch %s of stream %s is already in the ledger: skipped (replay)", batch_id, stream_id)
            return recorded
        objects = self.stage_batch(batch_id=batch_id, stream_id=stream_id, state=state, quarantine=quarantine,
                                   dq_results=dq_results, facts=facts, superseded=superseded)
        if before_commit is not None:  # the Data API runs the transaction in one call: nothing to roll back yet
            before_commit()
        self.run_transaction(self.staged_batch_statements(objects))
        return MergeResult(batch_id, *self._ledger_counts(key), replayed=False)

    def record_dq_results(self, dq_results: pa.Table) -> None:
        if not dq_results.num_rows:
            return
        first = dq_results.slice(0, 1).to_pylist()[0]
        prefix = self._batch_prefix(first["stream_id"], first["batch_id"]) + "/halted"
        uri = self._stage_object(prefix, "dq_results", dq_results)
        stage, create = self.sql.temp_stage("dq_results", S.DQ_RESULT_FIELDS)
        self.run_transaction([create, self.sql.copy_parquet(stage, uri, self.target.iam_role_arn),
                              self.sql.insert_from(self.sql.dq_results, stage, self.sql.dq_result_columns)])

    @property
    def rules(self) -> MergeRules:
        return self.sql.rules

    def close(self) -> None:
        """Nothing to close: the Data API is stateless HTTP."""


MAX_STATEMENTS = 40  # the most statements one Data API batch_execute_statement takes


def _packed(groups: list[list[str]], last: list[str]) -> list[list[str]]:
    """The statements of ``groups`` (each kept whole) in transactions of at most MAX_STATEMENTS, ``last`` at the
    end of the last one."""
    transactions: list[list[str]] = [[]]
    for group in groups:
        if len(transactions[-1]) + len(group) > MAX_STATEMENTS:
            transactions.append([])
        transactions[-1] += group
    if len(transactions[-1]) + len(last) > MAX_STATEMENTS:
        transactions.append([])
    transactions[-1] += last
    return transactions
