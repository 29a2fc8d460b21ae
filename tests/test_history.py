"""The change history's queries (docs/history.md) on every sink, and ``sales-cdc history``: one item inserted,
changed, deleted and inserted again, its events delivered out of order across two batches, beside a second item.

The same query text (``history_queries``) runs on PostgreSQL with bound parameters, on the Delta history through
delta-rs's own SQL engine (``deltalake.QueryBuilder``), and on the Parquet history through Spark SQL with
named parameters; each must give the versions the events say.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
import yaml
from deltalake import DeltaTable, QueryBuilder
from pyspark.sql import types as T

from sales_cdc import schema as S
from sales_cdc.contract import DEFAULT_CONTRACT
from sales_cdc.history_queries import HistoryQueries, spark_quote
from sales_cdc.sql_history import HistorySql
from sales_cdc_local.cli import main
from tests.helpers import ORDERS, ORDERS_CONTRACT, source_rows
from tests.sinks import Event, fresh_sinks, pg_connection

pytestmark = pytest.mark.slow
ENTITY = replace(ORDERS, history=True)
T0 = 1_764_028_800  # event times: T0 + seconds


def event(op: str, key: str, sequence: int, seconds: int, quantity: int) -> Event:
    return Event(op, (key,), 10**20 + sequence, {"product_name": "Phone", "quantity": quantity,
                                                 "price": Decimal("9.99")}, ENTITY, T0 + seconds)


# o1: inserted at 10 s, changed at 20 s, deleted at 30 s, inserted again at 40 s; o2: inserted at 15 s.
# Delivered out of order: the change and the re-insert first, the insert and the delete in the next batch.
BATCHES = [[event("MODIFY", "o1", 20, 20, 2), event("INSERT", "o1", 40, 40, 4), event("INSERT", "o2", 15, 15, 7)],
           [event("INSERT", "o1", 10, 10, 1), event("REMOVE", "o1", 30, 30, 2), event("MODIFY", "o1", 20, 20, 2)]]


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


# question -> (its parameters, the (key, quantity, sequence) of the rows it must return, in order when ordered)
QUESTIONS = {
    "as_of": ({"at": at(25)}, {("o1", 2, 20), ("o2", 7, 15)}),
    "as_of_deleted": ({"at": at(35)}, {("o2", 7, 15)}),
    "versions_of": ({"orderid": "o1"}, [("o1", 1, 10), ("o1", 2, 20), ("o1", 2, 30), ("o1", 4, 40)]),
    "changes_between": ({"start": at(10), "end": at(30)}, [("o2", 7, 15), ("o1", 2, 20), ("o1", 2, 30)]),
}


def query_of(queries: HistoryQueries, question: str) -> str:
    return getattr(queries, question.removesuffix("_deleted"))()


def answer(rows: list[dict], ordered: bool):
    found = [(r["orderid"], r["quantity"], int(r[S.VALID_FROM_SEQUENCE]) - 10**20) for r in rows]
    return found if ordered else set(found)


def literal(value) -> str:
    """A test's own values as SQL literals, for an engine without bound parameters (delta-rs' SQL)."""
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.astimezone(UTC).replace(tzinfo=None).isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


@pytest.fixture(scope="module", params=["delta", "parquet"])
def sinks(request, spark, pg_url, tmp_path_factory):
    sinks = fresh_sinks(spark, pg_url, tmp_path_factory.mktemp("lake"), f"history_q_{request.param}", False,
                        request.param, ENTITY)
    sinks.run_batches([[e.record() for e in batch] for batch in BATCHES], replayed={1}, reset={0})
    yield sinks
    sinks.warehouse.close()


@pytest.mark.parametrize("question", list(QUESTIONS))
def test_each_question_has_the_same_answer_on_every_sink(sinks, question):
    params, want = QUESTIONS[question]
    ordered = isinstance(want, list)
    warehouse = HistoryQueries(HistorySql(sinks.warehouse.sql).table, ENTITY.keys)
    with pg_connection(sinks.warehouse.url) as conn:
        naive = {k: v.replace(tzinfo=None) if isinstance(v, datetime) else v for k, v in params.items()}
        cursor = conn.execute(query_of(warehouse, question), naive)
        names = [c.name for c in cursor.description]
        answers = {"warehouse": [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]}
    if sinks.lake_format == "delta":
        lake = HistoryQueries("history", ENTITY.keys, placeholder=lambda name: literal(params[name]))
        reader = QueryBuilder().register("history", DeltaTable(sinks.lake.history_uri)).execute(
            query_of(lake, question))
        answers["delta"] = pa.table(reader.read_all()).to_pylist()
    else:
        commit_path = sinks.lake_history_path()
        sinks.spark.read.parquet(commit_path).createOrReplaceTempView("history")
        lake = HistoryQueries("history", ENTITY.keys, placeholder=lambda name: f":{name}", quote=spark_quote)
        answers["parquet"] = [r.asDict() for r in sinks.spark.sql(query_of(lake, question), args=params).collect()]
    for sink, rows in answers.items():
        assert answer(rows, ordered) == want, sink


def test_the_versions_end_where_the_next_begins_and_the_last_is_current(sinks):
    rows = sorted(sinks.warehouse_history(), key=lambda r: (r["orderid"], r[S.VALID_FROM_SEQUENCE]))
    o1 = [(int(r[S.VALID_FROM_SEQUENCE]) - 10**20, r[S.OPERATION], r[S.IS_DELETED],
           r[S.VALID_TO_SEQUENCE] and int(r[S.VALID_TO_SEQUENCE]) - 10**20, r[S.IS_CURRENT])
          for r in rows if r["orderid"] == "o1"]
    assert o1 == [(10, "INSERT", False, 20, False), (20, "MODIFY", False, 30, False), (30, "REMOVE", True, 40, False),
                  (40, "INSERT", False, None, True)]


def test_the_history_command_prints_the_versions_of_one_item(sinks, tmp_path, capsys):
    contract = tmp_path / "orders.yaml"
    contract.write_text(yaml.safe_dump({**yaml.safe_load(DEFAULT_CONTRACT.read_text()), "history": True}))
    common = ["history", "--contract", str(contract), "--warehouse-url", sinks.warehouse.url,
              "--db-schema", sinks.warehouse.sql.db_schema, "--key", "o1"]
    assert main([*common, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [int(r[S.VALID_FROM_SEQUENCE]) - 10**20 for r in shown] == [10, 20, 30, 40]
    assert main([*common, "--as-of", at(35).isoformat(), "--json"]) == 0
    assert [r[S.OPERATION] for r in json.loads(capsys.readouterr().out)] == ["REMOVE"]
    assert main(common) == 0
    assert "4 version(s) of orders o1" in capsys.readouterr().out


def test_a_contract_without_history_is_told_how_to_keep_one(sinks, capsys):
    code = main(["history", "--warehouse-url", sinks.warehouse.url, "--key", "o1"])
    assert code != 0 and "history: true" in capsys.readouterr().out


def test_the_moto_demo_with_history_ends_with_a_version_per_write_and_current_versions_equal_to_the_table(
        pg_url, db_schema, tmp_path):
    from sales_cdc_local.demo import DemoOptions, DemoStream, DemoWarehouse, Workload, run_demo

    contract = replace(ORDERS_CONTRACT, entity=ENTITY)
    result = run_demo(DemoOptions(contract, tmp_path / "demo", Workload(count=300, update_share=0.4),
                                  DemoStream(trigger_interval="1 second", max_records_per_shard=60),
                                  DemoWarehouse(pg_url, db_schema)))
    # warehouse == silver == table; each history's (warehouse, lake) current versions == table; a version per write
    assert result.mismatches == []
    with pg_connection(pg_url) as conn:
        versions = conn.execute(f'SELECT count(*) FROM "{db_schema}".orders_history').fetchone()[0]
    assert versions == result.records_on_kinesis == 300
    assert result.lake_tables["history"].endswith("silver/orders_history")  # checked, and shown to the user


@pytest.mark.parametrize("lake_format", ["delta", "parquet"])
def test_a_contract_change_gives_the_history_its_new_column_in_every_sink(spark, pg_url, tmp_path, lake_format):
    from sales_cdc.evolution import with_fields

    sinks = fresh_sinks(spark, pg_url, tmp_path / "lake", f"history_evolve_{lake_format}", False, lake_format,
                        ENTITY)
    try:
        sinks.run_batches([[event("INSERT", "o1", 10, 10, 1).record()]], replayed=set())
        wider = with_fields(ENTITY, [S.Field("gift_note", T.StringType(), "S")])
        sinks.migrate(wider)
        noted = Event("MODIFY", ("o1",), 10**20 + 20, {"product_name": "Phone", "quantity": 2, "price": Decimal("9.99"),
                                                        "gift_note": "for Ann"}, wider, T0 + 20)
        sinks.handler(sinks.spark.createDataFrame([(json.dumps(noted.record()), "file", None, None, None)],
                                                  S.SOURCE_SCHEMA), 1)
        for sink, rows in {"warehouse": sinks.warehouse_history(), lake_format: sinks.lake_history()}.items():
            notes = sorted((int(r[S.VALID_FROM_SEQUENCE]) - 10**20, r["gift_note"]) for r in rows)
            assert notes == [(10, None), (20, "for Ann")], sink
    finally:
        sinks.warehouse.close()


def test_a_snapshot_row_opens_the_first_version_dated_by_the_snapshot(spark, pg_url, tmp_path):
    """A backfill's item (merge rule 6: sequence 0) is a version before every stream version of the item; a second
    snapshot of it adds nothing."""
    from sales_cdc.sources.snapshot import snapshot_record
    from sales_cdc_local.records import to_typed_image

    sinks = fresh_sinks(spark, pg_url, tmp_path / "lake", "history_snapshot", False, "delta", ENTITY)
    item = to_typed_image({"orderid": "o9", "product_name": "Lamp", "quantity": 3, "price": Decimal("5.00")})
    try:
        sinks.run_batches([[snapshot_record(item, ENTITY, T0 + 5)], [event("MODIFY", "o9", 20, 20, 4).record()],
                           [snapshot_record(item, ENTITY, T0 + 50)]], replayed=set())
        for sink, rows in {"warehouse": sinks.warehouse_history(), "delta": sinks.lake_history()}.items():
            versions = sorted((int(r[S.VALID_FROM_SEQUENCE]), r["quantity"], r[S.VALID_FROM].replace(tzinfo=None),
                               r[S.IS_CURRENT]) for r in rows)
            assert versions == [(0, 3, at(5).replace(tzinfo=None), False), (10**20 + 20, 4, at(20).replace(tzinfo=None),
                                                                              True)], sink
    finally:
        sinks.warehouse.close()


def test_a_version_the_history_table_refuses_quarantines_its_item_and_the_batch_moves_on(spark, pg_url, tmp_path):
    """A user's constraint on the warehouse's history table (not on its state table) refuses one superseded
    version: the item's rows are quarantined with the warehouse's reason, the other item is merged, and the
    next batch runs (the refused-row probe merges each slice's versions as well as its state rows)."""
    sinks = fresh_sinks(spark, pg_url, tmp_path / "lake", "history_refused", False, "delta", ENTITY)
    history = HistorySql(sinks.warehouse.sql).table
    with pg_connection(pg_url) as conn:
        conn.execute(f"ALTER TABLE {history} ADD CONSTRAINT no_thirteen CHECK (quantity <> 13)")
    batch = [event("INSERT", "o1", 10, 10, 13), event("MODIFY", "o1", 20, 20, 2), event("INSERT", "o2", 15, 15, 7)]
    try:
        sinks.handler(source_rows(spark, *[e.record() for e in batch]), 0)
        assert set(sinks.warehouse_rows()) == {("o2",)}
        assert {r["orderid"] for r in sinks.warehouse_history()} == {"o2"}
        with pg_connection(pg_url) as conn:
            quarantined = conn.execute(f"SELECT stage, reason FROM {sinks.warehouse.sql.quarantine}").fetchall()
        assert len(quarantined) == 1 and quarantined[0][0] == S.WAREHOUSE_STAGE and "no_thirteen" in quarantined[0][1]
        sinks.handler(source_rows(spark, event("MODIFY", "o2", 30, 30, 8).record()), 1)
        assert sinks.warehouse_rows()[("o2",)]["quantity"] == 8
    finally:
        sinks.warehouse.close()
