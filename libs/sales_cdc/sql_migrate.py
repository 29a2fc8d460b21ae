"""The SQL of a schema migration (docs/schema-evolution.md), for PostgreSQL and Redshift, from one builder.

Each warehouse runs a migration in one transaction: the DDL below, the promotion (an UPDATE from a stage of
the rows whose values move from ``unmapped_attributes`` into a column) and the history rows. Redshift changes a
column's type in place only for VARCHAR lengths, and not inside a transaction block; every other widening is a
copy into a new column, then a swap of names, all inside the migration's one transaction:

    ALTER TABLE t ADD COLUMN "c__widened" <new type>;  UPDATE t SET "c__widened" = "c";
    ALTER TABLE t DROP COLUMN "c";  ALTER TABLE t RENAME COLUMN "c__widened" TO "c"

(the column moves to the end of the table, which nothing here depends on: every statement names its columns).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import schema as S
from .column_types import Dialect
from .evolution import Change, ChangeKind
from .sql import MergeSql, quote, sql_type
from .sql_history import HistorySql

WIDENED_SUFFIX = "__widened"


@dataclass(frozen=True)
class MigrationSql:
    """The statements that bring a warehouse's current-state table to ``sql.entity``'s columns."""

    sql: MergeSql

    @property
    def dialect(self) -> Dialect:
        return self.sql.dialect

    def _param(self, name: str) -> str:
        return f"%({name})s" if self.dialect is Dialect.POSTGRES else f":{name}"

    # --- what the warehouse holds -------------------------------------------------------------------
    def columns_query(self) -> str:
        """The target table's columns (bound: ``db_schema``, ``table``)."""
        return ("SELECT column_name, data_type, numeric_precision, numeric_scale, character_maximum_length\n"
                "FROM information_schema.columns\n"
                f"WHERE table_schema = {self._param('db_schema')} AND table_name = {self._param('table')}")

    def unmapped_rows_query(self) -> str:
        """Key, sequence and JSON of every row that keeps attributes in ``unmapped_attributes``."""
        columns = ", ".join(quote(c) for c in (*self.sql.entity.keys, S.CDC_SEQUENCE, S.UNMAPPED))
        return f"SELECT {columns} FROM {self.sql.target} WHERE {quote(S.UNMAPPED)} IS NOT NULL"

    def recorded_contract_query(self) -> str:
        """The contract this table last recorded (bound: ``table_name``, ``change``, ``sink``)."""
        return (f"SELECT {quote('statement')} FROM {self.sql.schema_changes}\n"
                f"WHERE {quote('table_name')} = {self._param('table_name')} AND {quote('change')} = "
                f"{self._param('change')} AND {quote('sink')} = {self._param('sink')}\n"
                f"ORDER BY {quote('changed_at')} DESC LIMIT 1")

    # --- the DDL -------------------------------------------------------------------------------------
    def _field(self, name: str) -> S.Field:
        return next(f for f in self.sql.stored_fields if f.name == name)

    def add_column(self, field: S.Field, table: str | None = None) -> str:
        if_not_exists = " IF NOT EXISTS" if self.dialect is Dialect.POSTGRES else ""  # Redshift has no such clause
        return (f"ALTER TABLE {table or self.sql.target} ADD COLUMN{if_not_exists} {quote(field.name)} "
                f"{sql_type(field, self.dialect)}")

    def widen(self, field: S.Field, table: str | None = None) -> list[str]:
        target, column = table or self.sql.target, quote(field.name)
        if self.dialect is Dialect.POSTGRES:
            return [f"ALTER TABLE {target} ALTER COLUMN {column} TYPE {sql_type(field, self.dialect)}"]
        widened = quote(S.check_identifier(field.name[:63 - len(WIDENED_SUFFIX)] + WIDENED_SUFFIX))
        return [f"ALTER TABLE {target} ADD COLUMN {widened} {sql_type(field, self.dialect)}",
                f"UPDATE {target} SET {widened} = {column}",
                f"ALTER TABLE {target} DROP COLUMN {column}",
                f"ALTER TABLE {target} RENAME COLUMN {widened} TO {column}"]

    def statement_groups(self, changes: list[Change]) -> list[list[str]]:
        """The DDL of ``changes`` (the sink's own: columns to add and to widen), one group per change: a group
        must run in one transaction (a widening's copy and swap), groups may run in separate ones."""
        groups: list[list[str]] = []
        for change in changes:
            if change.kind is ChangeKind.ADD:
                groups.append([self.add_column(self._field(change.column), table) for table in self._tables()])
            elif change.kind is ChangeKind.WIDEN:
                groups.append([s for table in self._tables() for s in self.widen(self._field(change.column), table)])
        return groups

    def _tables(self) -> list[str]:
        """The tables with the entity's columns: the current state, and its history (``history: true``)."""
        return [self.sql.target, *([HistorySql(self.sql).table] if self.sql.entity.history else [])]

    def statements(self, changes: list[Change]) -> list[str]:
        return [statement for group in self.statement_groups(changes) for statement in group]

    # --- promotion: the moved values, applied from a stage ---------------------------------------------
    def promotion_fields(self, columns: list[str]) -> tuple[S.Field, ...]:
        """The stage's columns: the key, the sequence, the promoted columns, the JSON that is left."""
        names = [*self.sql.entity.keys, S.CDC_SEQUENCE, *columns, S.UNMAPPED]
        return tuple(self._field(n) for n in names)

    def promote(self, stage: str, columns: list[str]) -> str:
        """Set the promoted columns (where the stage has a value: a row may have moved one attribute and not
        another) and the rest of the JSON on the rows the stage names; a row whose sequence moved on since the
        stage was read is left alone (its values were replaced anyway)."""
        table = quote(self.sql.table_name)
        assignments = ", ".join([*(f"{quote(c)} = COALESCE(s.{quote(c)}, {table}.{quote(c)})" for c in columns),
                                 f"{quote(S.UNMAPPED)} = s.{quote(S.UNMAPPED)}"])
        same_row = " AND ".join(f"{table}.{quote(k)} = s.{quote(k)}" for k in (*self.sql.entity.keys, S.CDC_SEQUENCE))
        return f"UPDATE {self.sql.target} SET {assignments}\nFROM {stage} AS s\nWHERE {same_row}"
