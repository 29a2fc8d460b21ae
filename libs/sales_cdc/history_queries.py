"""The history's three questions as SQL (docs/history.md): the table as of a time, the versions of one item, the
changes between two times. One text serves PostgreSQL and Redshift (bound parameters), Spark SQL and delta-rs's
DataFusion (``deltalake.QueryBuilder``), each with its own placeholders and quotes; values are never part of the
text.

"As of T" is the version with ``valid_from <= T < valid_to`` (or no ``valid_to``): one per item at most, since
versions of an item follow each other without overlap; an item whose version then is a delete did not exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import schema as S
from .sql import quote

Placeholder = Callable[[str], str]


def psycopg_placeholder(name: str) -> str:
    return f"%({name})s"


def data_api_placeholder(name: str) -> str:
    return f":{name}"


def spark_quote(name: str) -> str:
    """Spark SQL quotes identifiers with backticks (double quotes make a string there)."""
    return f"`{S.check_identifier(name)}`"


@dataclass(frozen=True)
class HistoryQueries:
    table: str  # the history table as the engine names it (quoted and qualified for a warehouse)
    keys: tuple[str, ...]
    placeholder: Placeholder = psycopg_placeholder
    quote: Callable[[str], str] = quote  # how the engine quotes an identifier

    def _p(self, name: str) -> str:
        return self.placeholder(name)

    def as_of(self) -> str:
        """Every item as it was at ``at``: its version valid then, deleted ones left out."""
        at, start, end = self._p("at"), self.quote(S.VALID_FROM), self.quote(S.VALID_TO)
        return (f"SELECT * FROM {self.table}\n"
                f"WHERE {start} <= {at} AND ({end} > {at} OR {end} IS NULL)\n"
                f"  AND NOT {self.quote(S.IS_DELETED)}")

    def versions_of(self) -> str:
        """Every version of the item whose key columns equal the parameters of their names, oldest first."""
        same = " AND ".join(f"{self.quote(k)} = {self._p(k)}" for k in self.keys)
        return f"SELECT * FROM {self.table}\nWHERE {same}\nORDER BY {self.quote(S.VALID_FROM_SEQUENCE)}"

    def changes_between(self) -> str:
        """The versions that began after ``start`` and up to ``end`` (inserts, updates, deletes), in order."""
        began = self.quote(S.VALID_FROM)
        return (f"SELECT * FROM {self.table}\n"
                f"WHERE {began} > {self._p('start')} AND {began} <= {self._p('end')}\n"
                f"ORDER BY {began}, {self.quote(S.VALID_FROM_SEQUENCE)}")
