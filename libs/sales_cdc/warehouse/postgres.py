"""PostgreSQL adapter: the local stand-in for Redshift, same SQL contract (``sales_cdc.sql``).

Per batch, in one transaction: ledger check, COPY into a temp stage, sequence guard, ledger row,
DELETE ... USING + INSERT. A replayed batch (same job, stream, batch id) is skipped.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv

from .. import column_types as CT
from .. import schema as S
from ..errors import first_line
from ..evolution import ChangeKind
from ..faults import crash_point
from ..merge_rules import MergeRules
from ..sql import Dialect, MergeSql, batch_values, quote
from ..sql_history import HistorySql
from ..sql_migrate import MigrationSql
from .base import BatchFacts, MergeResult, RowsRefused

log = logging.getLogger(__name__)

# What PostgreSQL says when it refuses data (SQLSTATE classes 22 and 23), as opposed to a lost connection
REFUSALS = (psycopg.errors.DataError, psycopg.errors.IntegrityError)


class _RollBack(Exception):
    """Ends a probe's transaction."""


COPY_ROWS = 65_536  # rows per piece of CSV sent to COPY: what the driver converts at a time, whatever the batch


def _csv_pieces(table: pa.Table) -> Iterator[bytes]:
    """``table`` as CSV, a few thousand rows at a time: a 1M-event batch's state is never a second time in memory
    as one table or as one text. all_valid quoting keeps '' (quoted) apart from NULL (unquoted empty) for
    COPY ... CSV."""
    options = pa_csv.WriteOptions(include_header=False, quoting_style="all_valid")
    for piece in table.to_batches(max_chunksize=COPY_ROWS):
        # empty pieces are left out: pyarrow's CSV writer emitted NUL bytes for a table whose first chunk is
        # empty (measured on pyarrow 26: a quarantine table concatenated from an empty and a non-empty one)
        if piece.num_rows:
            buffer = io.BytesIO()
            pa_csv.write_csv(piece, buffer, options)
            yield buffer.getvalue()


class PostgresWarehouse:
    def __init__(self, url: str, sql: MergeSql, job_name: str):
        if sql.dialect is not Dialect.POSTGRES:
            raise ValueError("PostgresWarehouse needs MergeSql(dialect=Dialect.POSTGRES)")
        self.url = url
        self.sql = sql
        self.job_name = job_name
        self._conn: psycopg.Connection | None = None

    @property
    def conn(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url)
        return self._conn

    def ensure_tables(self) -> None:
        """The tables, created if missing; a table of an earlier release gets the columns added since."""
        migration = MigrationSql(self.sql)
        with self.conn.transaction():
            for statement in self.sql.create_statements():
                self.conn.execute(statement)
            for table, fields in self.sql.added_columns().items():
                for field in fields:
                    self.conn.execute(migration.add_column(field, self.sql.qualified(table)))

    # --- schema migration (``migration.Migration`` drives it) --------------------------------------------
    def use(self, entity: S.EntitySchema) -> None:
        """Write ``entity``'s columns from now on (after a migration gave the table them)."""
        self.sql = replace(self.sql, entity=entity)

    def stored_columns(self) -> dict[str, CT.ColumnType | None] | None:
        """The current-state table's columns as column types (None: no such table)."""
        params = {"db_schema": self.sql.db_schema, "table": self.sql.table_name}
        with self.conn.transaction():
            rows = self.conn.execute(MigrationSql(self.sql).columns_query(), params).fetchall()
        return {name: CT.of_sql(*described) for name, *described in rows} or None

    def unmapped_rows(self) -> pa.Table:
        """Key, sequence and JSON of the rows that keep attributes in ``unmapped_attributes``."""
        fields = MigrationSql(self.sql).promotion_fields([])
        with self.conn.transaction():
            rows = self.conn.execute(MigrationSql(self.sql).unmapped_rows_query()).fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in fields]
        return pa.table({f.name: pa.array(list(values), f.arrow_type) for f, values in zip(fields, columns,
                                                                                              strict=True)})

    def recorded_contract(self, sink: str) -> str | None:
        """The contract ``sink`` last recorded in the schema history, as its JSON text."""
        params = {"table_name": self.sql.table_name, "change": ChangeKind.CONTRACT.value, "sink": sink}
        try:
            with self.conn.transaction():
                row = self.conn.execute(MigrationSql(self.sql).recorded_contract_query(), params).fetchone()
        except psycopg.errors.UndefinedTable:  # no tables yet (a dry run before the first start)
            return None
        return row[0] if row else None

    def migrate(self, groups: list[list[str]], promoted: pa.Table | None, history: pa.Table) -> None:
        """One transaction: the DDL, the promoted values (``promoted``: the stage's rows, as
        ``MigrationSql.promotion_fields`` of its value columns), and the history rows."""
        migration = MigrationSql(self.sql)
        try:
            with self.conn.transaction():
                for statement in (s for group in groups for s in group):
                    self.conn.execute(statement)
                if promoted is not None and promoted.num_rows:
                    columns = [c for c in promoted.column_names
                               if c not in (*self.sql.entity.keys, S.CDC_SEQUENCE, S.UNMAPPED)]
                    stage, create = self.sql.temp_stage("promotion", migration.promotion_fields(columns))
                    self.conn.execute(create)
                    self._copy(stage, promoted.column_names, promoted)
                    self.conn.execute(migration.promote(stage, columns))
                self._copy(self.sql.schema_changes, history.column_names, history)
        except psycopg.OperationalError:
            self.close()
            raise

    def _copy(self, table_sql: str, columns: list[str], data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        data = data.select(columns)
        copy_sql = f"COPY {table_sql} ({', '.join(quote(c) for c in columns)}) FROM STDIN (FORMAT csv)"
        with self.conn.cursor().copy(copy_sql) as copy:
            for piece in _csv_pieces(data):
                copy.write(piece)

    def _ledger_row(self, params: dict) -> tuple | None:
        return self.conn.execute(self.sql.ledger_counts(), params).fetchone()

    def committed(self, *, batch_id: int, stream_id: str) -> MergeResult | None:
        params = {"job_name": self.job_name, "stream_id": stream_id, "batch_id": batch_id}
        try:
            with self.conn.transaction():  # its own transaction: the merge's must not become a savepoint
                row = self._ledger_row(params)
        except psycopg.OperationalError:
            self.close()
            raise
        return MergeResult(batch_id, *row, replayed=True) if row else None

    def merge_batch(self, *, batch_id: int, stream_id: str, state: pa.Table, quarantine: pa.Table,
                    dq_results: pa.Table | None = None, before_commit: Callable[[], None] | None = None,
                    facts: BatchFacts | None = None, superseded: pa.Table | None = None) -> MergeResult:
        """:meth:`Warehouse.merge_batch`; raises :class:`RowsRefused` naming the state rows PostgreSQL refuses
        (a data error or a constraint, e.g. a CHECK a user added), so that the caller can quarantine them."""
        try:
            return self._merge_batch(batch_id=batch_id, stream_id=stream_id, state=state, quarantine=quarantine,
                                     dq_results=dq_results, before_commit=before_commit, facts=facts,
                                     superseded=superseded)
        except REFUSALS as refused:
            rows = self._refused_rows(stream_id, batch_id, state, superseded)
            if not rows:  # not an item's rows: the quarantine or results rows, or the merge itself
                raise
            raise RowsRefused(rows) from refused

    def _refused_rows(self, stream_id: str, batch_id: int, state: pa.Table,
                      superseded: pa.Table | None) -> dict[int, str]:
        """The state rows whose item the merge refuses on its own (its state row, or one of its versions in the
        history: a constraint a user put on either table), found by halving: each probe runs the whole merge of
        a slice of the state rows, with the superseded versions of their items, in a transaction rolled back."""
        refused: dict[int, str] = {}
        keys = list(self.sql.entity.keys)

        def probe(start: int, stop: int) -> None:
            rows = state.slice(start, stop - start)
            versions = None if superseded is None else \
                superseded.join(rows.select(keys), keys, join_type="left semi").select(superseded.column_names)
            reason = self._probe(stream_id, batch_id, rows, versions)
            if reason is None:
                return
            if stop - start == 1:
                refused[start] = reason
                return
            middle = (start + stop) // 2
            probe(start, middle)
            probe(middle, stop)

        if state.num_rows:
            probe(0, state.num_rows)
        return refused

    def _probe(self, stream_id: str, batch_id: int, rows: pa.Table, versions: pa.Table | None) -> str | None:
        params = batch_values(self.job_name, stream_id, batch_id, rows, None, self.sql.entity.version)
        try:
            with self.conn.transaction():
                self.conn.execute(self.sql.create_stage())
                self._copy(self.sql.stage, self.sql.stage_columns, rows)
                self._add_versions(versions)
                for statement in self.sql.merge_statements():
                    self.conn.execute(statement, params if "%(" in statement else None)
                raise _RollBack
        except _RollBack:
            return None
        except REFUSALS as refused:
            return first_line(refused)

    def _merge_batch(self, *, batch_id: int, stream_id: str, state: pa.Table, quarantine: pa.Table,
                     dq_results: pa.Table | None, before_commit: Callable[[], None] | None,
                     facts: BatchFacts | None, superseded: pa.Table | None) -> MergeResult:
        params = batch_values(self.job_name, stream_id, batch_id, state, quarantine, self.sql.entity.version,
                              facts.ledger_values() if facts else None)
        try:
            with self.conn.transaction():
                if self.conn.execute(self.sql.ledger_lookup(), params).fetchone():
                    log.info("batch %s of stream %s is already in the ledger: skipped (replay)", batch_id, stream_id)
                    return MergeResult(batch_id, *self._ledger_row(params), replayed=True)
                # A batch touches few rows of a big target: the merge should probe the key index, not hash
                # the whole target. The default random_page_cost (4, for spinning disks) made PostgreSQL
                # scan it (merge into 1M rows 3.5x the time of into 10k); 1.1 is the usual SSD setting.
                self.conn.execute("SET LOCAL random_page_cost = 1.1")
                # A 100k-event batch sorts ~30 MB (the stage by key, the history's versions by key and sequence):
                # with the default 4 MB each sort spilled to disk; this transaction may use more.
                self.conn.execute("SET LOCAL work_mem = '64MB'")
                self.conn.execute(self.sql.create_stage())
                self._copy(self.sql.stage, self.sql.stage_columns, state)
                crash_point("after-stage-load")
                # The stage's row count and key statistics steer that plan. A 3,000-row sample is plenty
                # for them; the default (30,000 rows) cost 0.2 s per 70k-row batch, a fifth of the merge.
                self.conn.execute("SET LOCAL default_statistics_target = 10")
                self.conn.execute(f"ANALYZE {self.sql.stage}")
                self._add_quarantine(quarantine)
                if dq_results is not None:
                    self._copy(self.sql.dq_results, self.sql.dq_result_columns, dq_results)
                self._add_versions(superseded)  # before the merge, which drops the stage's stale rows
                for statement in self.sql.merge_statements():
                    self.conn.execute(statement, params if "%(" in statement else None)
                counts = self._ledger_row(params)
                if before_commit is not None:  # raising here rolls the whole batch back
                    before_commit()
        except psycopg.OperationalError:
            self.close()  # reconnect on the next batch
            raise
        return MergeResult(batch_id, *counts, replayed=False)

    def _add_versions(self, superseded: pa.Table | None) -> None:
        """The batch's versions into the history (``sql_history``), when the contract keeps one: the staged state
        rows' and ``superseded``."""
        if not self.sql.entity.history:
            return
        history = HistorySql(self.sql)
        stage, create = history.stage()
        self.conn.execute(create)
        if superseded is not None:
            self._copy(stage, history.stage_columns, superseded)
        for statement in history.statements(stage, self.sql.stage):
            self.conn.execute(statement)

    def _add_quarantine(self, quarantine: pa.Table) -> None:
        """The rows the quarantine does not hold yet, through a stage (``MergeSql.quarantine_insert``)."""
        if quarantine.num_rows == 0:
            return
        stage, create = self.sql.temp_stage("quarantine", S.QUARANTINE_FIELDS)
        self.conn.execute(create)
        self._copy(stage, self.sql.quarantine_columns, quarantine)
        self.conn.execute(self.sql.quarantine_insert(stage))

    def record_dq_results(self, dq_results: pa.Table) -> None:
        try:
            with self.conn.transaction():
                self._copy(self.sql.dq_results, self.sql.dq_result_columns, dq_results)
        except psycopg.OperationalError:
            self.close()
            raise

    @property
    def rules(self) -> MergeRules:
        return self.sql.rules

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
