"""The SQL of the change history (``merge_rules`` rule 7), for PostgreSQL and Redshift, in the batch's own
transaction: the versions the state rows do not carry are staged, and the staged state rows' own join them
(``MergeRules.version_select``); one window over every version of their items (held and new) gives each its
end, kept in a second stage; the held versions whose end it changed are updated (an item's previous latest
version, a late event's predecessor), and no other; then the versions the history does not hold are inserted with
their ends. Updating first means the update reads the held versions only, not the ones the batch adds.

Computing the ends over whole items, rather than closing only the latest version, is what keeps the history
right when events come out of order: a late event lands between two versions, and both its own end and its
predecessor's follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import schema as S
from .column_types import Dialect
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

    def _ends(self, starts: str) -> str:
        """Each version of ``starts`` (key, start sequence, start time) with the next one's start: its end."""
        keys = ", ".join(quote(k) for k in self.sql.entity.keys)
        by_sequence = f"OVER (PARTITION BY {keys} ORDER BY {quote(S.VALID_FROM_SEQUENCE)})"
        return (f"SELECT {keys}, {quote(S.VALID_FROM_SEQUENCE)},\n"
                f"    LEAD({quote(S.VALID_FROM)}) {by_sequence} AS next_from,\n"
                f"    LEAD({quote(S.VALID_FROM_SEQUENCE)}) {by_sequence} AS next_sequence\n"
                f"  FROM ({starts}) AS a")

    def statements(self, stage: str, state_stage: str) -> list[str]:
        """The state rows' versions joined to the superseded ones in ``stage``; the ends of every version of the
        staged items, held or new, into a stage of their own; the held versions whose end changed, updated; the
        staged versions the history does not hold, inserted with theirs. Run before the merge, which drops the
        stale rows from ``state_stage`` (a late event is stale to the table, not to the history)."""
        keys = ", ".join(quote(k) for k in self.sql.entity.keys)
        start = f"{keys}, {quote(S.VALID_FROM_SEQUENCE)}, {quote(S.VALID_FROM)}"
        new = f"NOT EXISTS (SELECT 1 FROM {self.table} h WHERE {self._same_version('h', 's')})"
        every = (f"SELECT {start} FROM {self.table} h\n"
                 f"    WHERE EXISTS (SELECT 1 FROM {stage} s WHERE {self._same_item('s', 'h')})\n"
                 f"  UNION ALL SELECT {start} FROM {stage} s WHERE {new}")
        ends_stage = quote(f"stage_{self.table_name}_ends")
        on_commit = " ON COMMIT DROP" if self.sql.dialect is Dialect.POSTGRES else ""
        columns = ", ".join(quote(c) for c in self.stage_columns)
        ends = (quote(S.VALID_TO), quote(S.VALID_TO_SEQUENCE), quote(S.IS_CURRENT))
        changed = f"COALESCE(v.{ends[1]}, '') <> COALESCE(n.next_sequence, '')"  # a sequence is never ''
        update = (f"UPDATE {self.table} AS v\n"
                  f"SET {ends[0]} = n.next_from, {ends[1]} = n.next_sequence, {ends[2]} = n.next_sequence IS NULL\n"
                  f"FROM {ends_stage} AS n\n"
                  f"WHERE {self._same_version('v', 'n')} AND {changed}")
        insert = (f"INSERT INTO {self.table} ({columns}, {', '.join(ends)})\n"
                  f"SELECT {', '.join(f's.{quote(c)}' for c in self.stage_columns)},"
                  f" n.next_from, n.next_sequence, n.next_sequence IS NULL\n"
                  f"FROM {stage} s JOIN {ends_stage} AS n ON {self._same_version('s', 'n')}\n"
                  f"WHERE {new}")
        latest = (f"INSERT INTO {stage} ({columns})\n"
                  f"SELECT {self.sql.rules.version_select('t', quote)} FROM {state_stage} t")
        return [latest, f"CREATE TEMP TABLE {ends_stage}{on_commit} AS\n{self._ends(every)}", update, insert]
