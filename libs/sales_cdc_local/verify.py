"""Compare the warehouse's current state with an expected set of rows (demo, tests, end-to-end checks)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from sales_cdc import metrics as M
from sales_cdc import schema as S
from sales_cdc.sql import MergeSql, quote
from sales_cdc.sql_history import HistorySql

from .records import to_typed_image


def normalise(value: Any) -> Any:
    """One comparable form for values read from SQL and from JSON fixtures."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat()
    return value


def read_state(url: str, sql: MergeSql, columns: list[str]) -> list[dict[str, Any]]:
    """Current rows (soft-deleted rows excluded) ordered by key, as normalised dicts."""
    where = f" WHERE NOT {quote('is_deleted')}" if sql.soft_delete else ""
    query = (f"SELECT {', '.join(quote(c) for c in columns)} FROM {sql.target}{where}"
             f" ORDER BY {', '.join(quote(k) for k in sql.entity.keys)}")
    with psycopg.connect(url) as conn:
        rows = conn.execute(query).fetchall()
    return [{c: normalise(v) for c, v in zip(columns, row, strict=True)} for row in rows]


def read_history(url: str, sql: MergeSql) -> list[dict[str, Any]]:
    """Every row of the warehouse's history table (``sql_history``), as dicts."""
    with psycopg.connect(url) as conn:
        cursor = conn.execute(f"SELECT * FROM {HistorySql(sql).table}")
        names = [c.name for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def history_mismatches(rows: list[dict[str, Any]], expected: list[dict[str, Any]], entity: S.EntitySchema,
                       soft_delete: bool, changes: Counter | None) -> list[str]:
    """The history against the table: its current versions are the table's items, and (``changes``: the writes
    per key since the stream began, when known) each item has a version per write."""
    current = [{c: normalise(r[c]) for c in entity.names} for r in rows
               if r[S.IS_CURRENT] and (soft_delete or not r[S.IS_DELETED])]
    problems = [f"history's current versions: {m}" for m in diff_rows(current, expected, entity.keys)]
    if changes is not None:
        versions = Counter(tuple(str(r[k]) for k in entity.keys) for r in rows)
        wrong = {k: (versions.get(k, 0), n) for k, n in changes.items() if versions.get(k, 0) != n}
        problems += [f"history of {k}: {got} version(s), {n} write(s)" for k, (got, n) in list(wrong.items())[:20]]
    return problems


def read_lake_state(lake, columns: list[str]) -> list[dict[str, Any]]:
    """Current rows of the lake's silver table (soft-deleted excluded), as normalised dicts."""
    silver = lake.table(lake.silver_uri)
    if silver is None:
        return []
    rows = silver.to_pyarrow_table().to_pylist()
    if lake.soft_delete:
        rows = [r for r in rows if not r[S.IS_DELETED]]
    return sorted(({c: normalise(r[c]) for c in columns} for r in rows), key=_sort_key(lake.entity))


def read_lake_history(lake) -> list[dict[str, Any]] | None:
    """Every row of the lake's history, when it is a Delta table (None for a Parquet lake)."""
    if lake.config.silver_format != "delta":
        return None
    history = lake.table(lake.history_uri)
    return [] if history is None else history.to_pyarrow_table().to_pylist()


def load_expected(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sort_key(entity: S.EntitySchema):
    return lambda row: tuple(str(row[k]) for k in entity.keys)


def _comparable(column: str, value: Any) -> Any:
    """JSON text (unmapped attributes, json columns) compares as what it holds: key order does not matter."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def diff_rows(actual: Iterable[Mapping[str, Any]], expected: Iterable[Mapping[str, Any]],
              keys: tuple[str, ...]) -> list[str]:
    """Human-readable differences, matched on the ``keys`` columns; empty when the row sets are equal."""
    def key(row: Mapping[str, Any]) -> Any:
        return row[keys[0]] if len(keys) == 1 else tuple(row[k] for k in keys)

    by_key_actual = {key(row): row for row in actual}
    by_key_expected = {key(row): row for row in expected}
    problems = [f"missing row {k}" for k in sorted(by_key_expected.keys() - by_key_actual.keys())]
    problems += [f"unexpected row {k}" for k in sorted(by_key_actual.keys() - by_key_expected.keys())]
    for k in sorted(by_key_expected.keys() & by_key_actual.keys()):
        want, got = by_key_expected[k], by_key_actual[k]
        for column in want:
            if _comparable(column, want[column]) != _comparable(column, got.get(column)):
                problems.append(f"row {k}: {column} is {got.get(column)!r}, expected {want[column]!r}")
    return problems


def _column_value(field: S.Field, value: Any) -> Any:
    """One attribute (as boto3's resource returns it: N as Decimal) as its column holds it (``column_types``)."""
    column_type = field.column_type
    if column_type.name in ("integer", "bigint"):
        return int(value)
    if column_type.name == "double":
        return float(value)
    if column_type.decode == "number":  # a decimal, to its scale
        return str(Decimal(value).quantize(Decimal(1).scaleb(-field.spark_type.scale)))
    if column_type.decode == "timestamp":
        if field.ddb_type == "N":
            return normalise(datetime.fromtimestamp(float(value), UTC))
        return normalise(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    if column_type.decode == "date":
        return str(value)
    if column_type.decode == "json":  # typed JSON; a set's members sorted, as the decode has them
        return to_typed_image({"v": value})["v"][field.ddb_type]
    return value


def state_from_items(items: Iterable[Mapping[str, Any]], entity: S.EntitySchema) -> list[dict[str, Any]]:
    """DynamoDB items (boto3 resource scan: N as Decimal) -> rows in the form :func:`read_state` returns."""
    rows = [{f.name: None if item.get(f.name) is None else _column_value(f, item[f.name]) for f in entity.fields}
            for item in items]
    return sorted(rows, key=_sort_key(entity))


def scan_table(table) -> list[dict[str, Any]]:
    """Every item of a DynamoDB table (boto3 resource), following pagination."""
    items, kwargs = [], {"ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def metrics_mismatches(sums: dict[str, float], summary) -> list[str]:
    """Where the CloudWatch metrics of a run (``cloudwatch_sums``) disagree with its summary (a ``RunSummary``)."""
    applied = [b for b in summary.batches if not b.merge.replayed]
    expected = {"BatchesCommitted": len(applied), "EventsRead": sum(b.events_read for b in applied),
                "RowsUpserted": sum(b.merge.upserted_rows for b in applied),
                "RowsDeleted": sum(b.merge.deleted_rows for b in applied)}
    return [f"CloudWatch {name}: {sums.get(name, 0):g}, the run's summary {value}"
            for name, value in expected.items() if sums.get(name, 0) != value]


def _metric_sum(cloudwatch, namespace: str, name: str, dimensions: dict[str, str]) -> float:
    now = datetime.now(UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=60,
        Statistics=["Sum"])["Datapoints"]
    return sum(p["Sum"] for p in points)


def cloudwatch_sums(cloudwatch, namespace: str, job: str) -> dict[str, float]:
    """Every metric of ``job`` in ``namespace`` of the last hour, summed (stage times by ``StageSeconds:<stage>``)."""
    found = {}
    for metric in cloudwatch.list_metrics(Namespace=namespace)["Metrics"]:
        dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        if dimensions.get(M.JOB_DIMENSION) != job:
            continue
        name = metric["MetricName"] + (f":{dimensions[M.STAGE_DIMENSION]}" if M.STAGE_DIMENSION in dimensions else "")
        found[name] = _metric_sum(cloudwatch, namespace, metric["MetricName"], dimensions)
    return found
