"""``sales-cdc history --key K``: the versions of one item, oldest first, from the warehouse's history table (a
contract with ``history: true``; docs/history.md). The key is given as the quarantine shows it: the value of a
one-attribute key, a JSON object for a partition + sort key (``{"pk": "a", "sk": 1}``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg

from sales_cdc import schema as S
from sales_cdc.errors import JobError
from sales_cdc.history_queries import HistoryQueries
from sales_cdc.sql import MergeSql
from sales_cdc.sql_history import HistorySql

from .parser import warehouse_sql

SHOWN = (S.VALID_FROM, S.VALID_TO, S.OPERATION, S.IS_CURRENT, S.IS_DELETED)


def key_values(text: str, keys: tuple[str, ...]) -> list[str]:
    """The key's values as text (compared with each key column's text), from the key as given."""
    if len(keys) == 1:
        return [text]
    try:
        given = json.loads(text)
    except json.JSONDecodeError:
        given = None
    if not isinstance(given, dict) or set(given) != set(keys):
        raise JobError(f"--key {text!r}: this table's key has two attributes; give them as JSON, e.g. "
                       f"--key '{json.dumps(dict.fromkeys(keys, '...'))}'")
    return [str(given[k]) for k in keys]


def versions(url: str, sql: MergeSql, key: str, as_of: datetime | None = None) -> list[dict]:
    """The item's versions by sequence (as of ``as_of``: the one valid then, a delete included)."""
    if not sql.entity.history:
        raise JobError(f"the contract of {sql.entity.name} keeps no history; set history: true in it "
                       "(docs/history.md) and run the job: versions are kept from then on")
    queries = HistoryQueries(HistorySql(sql).table, sql.entity.keys)
    with psycopg.connect(url) as conn:
        cursor = conn.execute(queries.versions_of(), dict(zip(sql.entity.keys, key_values(key, sql.entity.keys),
                                                              strict=True)))
        names = [c.name for c in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    if as_of is None:
        return rows
    at = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    return [r for r in rows if _utc(r[S.VALID_FROM]) <= at and (r[S.VALID_TO] is None or _utc(r[S.VALID_TO]) > at)]


def _utc(moment: datetime) -> datetime:
    """The warehouse's timestamps are UTC without a zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def run_history(args, console) -> int:
    from rich.table import Table

    from .embedded import warehouse_connection

    sql = warehouse_sql(args)
    with warehouse_connection(args.warehouse_url, args.pg_data_dir) as connection:
        rows = versions(connection.url, sql, args.key, args.as_of)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    values = [f.name for f in sql.entity.fields if f.name not in sql.entity.keys]
    table = Table(title=f"{len(rows)} version(s) of {sql.entity.name} {args.key}")
    for column in (*SHOWN, *values):
        table.add_column(column.replace("_", " "))
    for r in rows:
        table.add_row(*["" if r[c] is None else str(r[c]) for c in (*SHOWN, *values)])
    console.print(table)
    return 0
