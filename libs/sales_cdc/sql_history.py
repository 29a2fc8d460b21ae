"""The SQL of the change history (``merge_rules`` rule 7), for PostgreSQL and Redshift, in the batch's own
transaction: the versions are staged, those the history does not hold are inserted, and the validity of every
version of the items the batch touched is recomputed from the order of their sequences.

Recomputing the touched items' validity, rather than closing only the latest version, is what keeps the history
right when events come out of order: a late event lands between two versions, and both its own end and its
predecessor's follow from the one window below.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import schema as S
from .sql import MergeSql, quote

HISTORY_SUFFIX = "_history"


@dataclass(frozen=True)
class HistorySql:
    sql: MergeSql

    @property
    def table_name(self) -> str:
        return self.sql.table_name + HISTORY_SUFFIX

    @property
    def table(self) -> str:
        return self.sql.qualified(self.table_name)

    @property
    def stage_fields(self) -> tuple[S.Field, ...]:
        return S.version_fields(self.sql.entity)

    @property
    def stage_columns(self) -> list[str]:
        return [f.name for f in self.stage_fields]

    def stage(self) -> tuple[str, str]:
        """(quoted name, CREATE TEMP TABLE) of the batch's versions."""
        return self.sql.temp_stage(self.table_name, self.stage_fields)

    def create_table(self) -> str:
        keys = [*self.sql.entity.keys, S.VALID_FROM_SEQUENCE]
        return self.sql.create_table(self.table, S.history_fields(self.sql.entity),
                                      self.sql.key_clauses(keys), keyed=True)

    def _same_version(self, a: str, b: str) -> str:
        return " AND ".join(f"{a}.{quote(c)} = {b}.{quote(c)}" for c in (*self.sql.entity.keys, S.VALID_FROM_SEQUENCE))

    def _same_item(self, a: str, b: str) -> str:
        return " AND ".join(f"{a}.{quote(k)} = {b}.{quote(k)}" for k in self.sql.entity.keys)

    def statements(self, stage: str) -> list[str]:
        """Insert the staged versions the history does not hold; then every version of the staged items gets its
        end from the next version by sequence (none: the current one)."""
        columns = ", ".join(quote(c) for c in self.stage_columns)
        insert = (f"INSERT INTO {self.table} ({columns}, {quote(S.IS_CURRENT)})\n"
                  f"SELECT {columns}, FALSE FROM {stage} s\n"
                  f"WHERE NOT EXISTS (SELECT 1 FROM {self.table} h WHERE {self._same_version('h', 's')})")
        keys = ", ".join(quote(k) for k in self.sql.entity.keys)
        by_sequence = f"OVER (PARTITION BY {keys} ORDER BY {quote(S.VALID_FROM_SEQUENCE)})"
        following = (f"SELECT {keys}, {quote(S.VALID_FROM_SEQUENCE)},\n"
                     f"    LEAD({quote(S.VALID_FROM)}) {by_sequence} AS next_from,\n"
                     f"    LEAD({quote(S.VALID_FROM_SEQUENCE)}) {by_sequence} AS next_sequence\n"
                     f"  FROM {self.table} h\n"
                     f"  WHERE EXISTS (SELECT 1 FROM {stage} s WHERE {self._same_item('s', 'h')})")
        validity = (f"UPDATE {self.table} AS v\n"
                    f"SET {quote(S.VALID_TO)} = n.next_from, {quote(S.VALID_TO_SEQUENCE)} = n.next_sequence,\n"
                    f"  {quote(S.IS_CURRENT)} = n.next_sequence IS NULL\n"
                    f"FROM (\n  {following}\n) AS n\n"
                    f"WHERE {self._same_version('v', 'n')}")
        return [insert, validity]
