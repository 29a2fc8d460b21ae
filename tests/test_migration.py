"""Schema migration on real sinks (PostgreSQL, Delta and Parquet silver through delta-rs and Spark): columns
added and widened, values promoted out of ``unmapped_attributes``, histories written, a migration that died
half-way finished by the next start, a change that would lose values refused before any sink is touched, and
the ``on_new_attribute`` policies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from deltalake import DeltaTable

from sales_cdc import schema as S
from sales_cdc.errors import JobError
from sales_cdc.evolution import SchemaChangeRefused
from sales_cdc.lake import LakeBatch, Rows
from sales_cdc.lake.delta import CONTRACT_VERSION
from sales_cdc.lake.parquet import silver_commits
from sales_cdc.merge_rules import MergeRules
from sales_cdc_local.records import stream_record
from tests.helpers import shop_orders, source_rows
from tests.sinks import Sinks, pg_connection

V1 = shop_orders()
V2 = shop_orders(discount={"dynamodb": "N", "type": "decimal(6,2)"})
V3 = shop_orders(discount={"dynamodb": "N", "type": "decimal(6,2)"}, quantity={"type": "bigint"},
                 price={"type": "decimal(14,2)"}, product_name={"required": False})


def item(key: str, **values) -> dict:
    return {"orderid": key, "product_name": "Laptop", "quantity": 1, "price": Decimal("9.99"), **values}


def insert(key: str, sequence: int, entity: S.EntitySchema = V1, **values) -> dict:
    return stream_record("INSERT", sequence, key=key, new=item(key, **values), entity=entity)


def fresh(spark, pg_url, tmp_path, name: str, entity=V1, lake_format="delta", soft_delete=False) -> Sinks:
    with pg_connection(pg_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    return Sinks(spark, pg_url, name, tmp_path / "lake", soft_delete, lake_format, entity)


def run(sinks: Sinks, batch_id: int, *records) -> None:
    result = sinks.handler(source_rows(sinks.spark, *records), batch_id)
    assert result.merge.staged_rows > 0


def history(sinks: Sinks) -> list[dict]:
    with pg_connection(sinks.warehouse.url) as conn:
        cursor = conn.execute(f"SELECT sink, change, column_name, before_type, after_type, source, values_promoted, "
                              f"values_kept, statement FROM {sinks.warehouse.sql.schema_changes} ORDER BY changed_at")
        return [dict(zip([c.name for c in cursor.description], r, strict=True)) for r in cursor.fetchall()]


def the_rows(rows: dict, *columns) -> dict:
    return {k[0]: tuple(r[c] for c in columns) for k, r in rows.items()}


@pytest.mark.parametrize("lake_format", ["delta", "parquet"])
def test_the_worked_example_on_every_sink(spark, pg_url, tmp_path, lake_format):
    """docs/schema-evolution.md: new attributes kept as JSON, then discount named (its values promoted, one that
    does not fit kept), then quantity and price widened for values the old types cannot hold."""
    sinks = fresh(spark, pg_url, tmp_path, f"we_{lake_format}", lake_format=lake_format)
    run(sinks, 0, *[insert(f"o{i}", 100 + i, discount=Decimal(f"{i}.5"), gift=i % 2 == 0, note=f"n{i}")
                    for i in range(3)], insert("o9", 200, discount=Decimal("1.234")))
    sinks.migrate(V2)
    for rows in (sinks.warehouse_rows(), sinks.silver_rows()):
        assert the_rows(rows, "discount", S.UNMAPPED) == {
            "o0": (Decimal("0.50"), '{"gift":{"BOOL":true},"note":{"S":"n0"}}'),
            "o1": (Decimal("1.50"), '{"gift":{"BOOL":false},"note":{"S":"n1"}}'),
            "o2": (Decimal("2.50"), '{"gift":{"BOOL":true},"note":{"S":"n2"}}'),
            "o9": (None, '{"discount":{"N":"1.234"}}')}  # 1.234 is no decimal(6,2): kept, never rounded
    run(sinks, 1, insert("p1", 300, V2, discount=Decimal("2.25")))
    sinks.migrate(V3)
    run(sinks, 2, insert("q1", 400, V3, quantity=5_000_000_000, price=Decimal("123456789.99")))
    warehouse, silver = sinks.warehouse_rows(), sinks.silver_rows()
    columns = [f.name for f in MergeRules(V3).row_fields]
    assert comparable(warehouse, columns) == comparable(silver, columns)
    assert the_rows(warehouse, "quantity", "price", "discount")[("q1")] == (5_000_000_000, Decimal("123456789.99"),
                                                                           None)
    assert the_rows(warehouse, "discount")["p1"] == (Decimal("2.25"),)
    changes = [(h["sink"], h["change"], h["column_name"], h["values_promoted"], h["values_kept"])
               for h in history(sinks) if h["change"] != "contract"]
    assert changes == [("warehouse", "add_column", "discount", 3, 1), ("warehouse", "widen", "quantity", 0, 0),
                       ("warehouse", "widen", "price", 0, 0), ("warehouse", "optional", "product_name", None, None)]
    lake_history = DeltaTable(sinks.lake.schema_changes_uri).to_pyarrow_table().to_pylist()
    assert {(h["change"], h["column_name"]) for h in lake_history} >= {("add_column", "discount"),
                                                                      ("widen", "quantity"), ("widen", "price")}
    check_contract_versions(sinks, [V1.version, V2.version, V3.version])


def comparable(rows: dict, columns: list[str]) -> dict:
    """Rows as both sinks hold them: timestamps as naive UTC (PostgreSQL's TIMESTAMP, Delta's UTC-zoned)."""
    def value(v):
        return v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) and v.tzinfo else v
    return {k: {c: value(r[c]) for c in columns} for k, r in rows.items()}


def check_contract_versions(sinks: Sinks, versions: list[str]) -> None:
    """Each batch carries the version of the contract it was written with, in the ledger and the lake's commits."""
    with pg_connection(sinks.warehouse.url) as conn:
        ledger = conn.execute(f"SELECT batch_id, contract_version FROM {sinks.warehouse.sql.ledger} "
                              "ORDER BY batch_id").fetchall()
    assert [v for _, v in ledger] == versions
    if sinks.lake_format == "delta":
        commits = [h for h in DeltaTable(sinks.lake.silver_uri).history() if h.get("operation") == "MERGE"
                   and h.get(CONTRACT_VERSION)]
        merged = [h[CONTRACT_VERSION] for h in sorted(commits, key=lambda h: h["version"])]
        # each batch's MERGE, and the migration's that added a column, record the contract they wrote
        assert [v for i, v in enumerate(merged) if i == 0 or merged[i - 1] != v] == versions
    else:
        commits = silver_commits(sinks.spark, sinks.lake.silver_uri)
        assert [c.contract_version for c in commits if c.stream_id == "model"] == versions


def test_a_second_start_finds_nothing_to_do(spark, pg_url, tmp_path):
    sinks = fresh(spark, pg_url, tmp_path, "mig_twice")
    run(sinks, 0, insert("o1", 100, discount=Decimal("1.5")))
    assert sinks.migrate(V2).pending
    recorded = len(history(sinks))
    assert not sinks.migrate(V2).pending
    assert len(history(sinks)) == recorded


def test_a_migration_that_died_after_the_warehouse_is_finished_by_the_next_start(spark, pg_url, tmp_path):
    sinks = fresh(spark, pg_url, tmp_path, "mig_died", lake_format="parquet")
    run(sinks, 0, insert("o1", 100, discount=Decimal("1.5")), insert("o2", 101, quantity=7))
    plan = sinks.migrate(V3, steps=1)  # the warehouse migrated, then the job died
    assert [s.sink.name for s in plan.steps] == ["warehouse", "lake silver (parquet)"]
    again = sinks.migrate(V3)
    assert [s.sink.name for s in again.steps] == ["lake silver (parquet)"]
    assert the_rows(sinks.silver_rows(), "discount", S.UNMAPPED) == the_rows(sinks.warehouse_rows(), "discount",
                                                                             S.UNMAPPED) == \
        {"o1": (Decimal("1.50"), None), "o2": (None, None)}
    run(sinks, 1, insert("o3", 200, V3, quantity=2**40))
    assert the_rows(sinks.silver_rows(), "quantity")["o3"] == (2**40,)


def test_a_change_that_would_lose_values_touches_no_sink(spark, pg_url, tmp_path):
    sinks = fresh(spark, pg_url, tmp_path, "mig_refused")
    run(sinks, 0, insert("o1", 100))
    sinks.migrate(V3)
    before = (sinks.warehouse.stored_columns(), sinks.lake.silver.stored_columns())
    with pytest.raises(SchemaChangeRefused, match="quantity: bigint -> integer is not a widening"):
        sinks.migrate(V2)  # back to integer
    with pytest.raises(SchemaChangeRefused, match="no longer names discount"):
        sinks.migrate(shop_orders(quantity={"type": "bigint"}, price={"type": "decimal(14,2)"}))
    assert (sinks.warehouse.stored_columns(), sinks.lake.silver.stored_columns()) == before


def test_silver_refuses_a_batch_with_a_column_it_does_not_have(spark, pg_url, tmp_path):
    """Without the migration, a MERGE would drop the new column's values from silver, silently."""
    sinks = fresh(spark, pg_url, tmp_path, "mig_guard")
    run(sinks, 0, insert("o1", 100))
    version = DeltaTable(sinks.lake.silver_uri).version()
    stale = sinks.lake.with_entity(V2)
    state = sinks.spark.createDataFrame([], S.state_schema(V2))
    empty = sinks.spark.createDataFrame([], S.state_schema(V2))
    rows = sinks.spark.createDataFrame([("o2", "Phone", 1, Decimal("1.00"), Decimal("0.50"), None, "e", "INSERT",
                                         "1".zfill(40), None, 1)], S.state_schema(V2))
    with pytest.raises(JobError, match="has no column\\(s\\) discount that the contract names"):
        stale.write_batch(LakeBatch(1, "model", empty.select(), Rows(rows, rows.toArrow()),
                                    Rows(state, state.toArrow())))
    assert DeltaTable(sinks.lake.silver_uri).version() == version


def test_new_attributes_get_columns_of_their_own_with_add_column(spark, pg_url, tmp_path):
    entity = shop_orders("add_column")
    sinks = fresh(spark, pg_url, tmp_path, "mig_auto", entity=entity)
    run(sinks, 0, insert("o0", 100, entity, discount=Decimal("1.5"), visits=3, gift=True, note="n",
                         tags={"a", "b"}, **{"Weird-Name": "x"}))
    added = {f.name: f.column_type.name for f in sinks.handler.entity.fields if f.name not in entity.names}
    assert added == {"discount": "decimal(38,9)", "gift": "boolean", "note": "string", "tags": "json",
                     "visits": "bigint"}
    for rows in (sinks.warehouse_rows(), sinks.silver_rows()):
        row = rows[("o0",)]
        assert (row["discount"], row["visits"], row["gift"], row["note"], json.loads(row["tags"])) == \
            (Decimal("1.5"), 3, True, "n", ["a", "b"])
        assert json.loads(row[S.UNMAPPED]) == {"Weird-Name": {"S": "x"}}  # not a column name: kept as JSON
    automatic = [h for h in history(sinks) if h["change"] == "add_column"]
    assert {h["column_name"] for h in automatic} == set(added)
    assert all(h["source"].startswith("automatic (on_new_attribute: add_column, batch 0)") for h in automatic)
    # a restart with the same contract file keeps the columns the job added
    restarted = fresh_handler_plan(sinks, entity)
    assert not restarted.pending and set(added) <= set(restarted.entity.names)


def fresh_handler_plan(sinks: Sinks, entity: S.EntitySchema):
    from sales_cdc.migration import Migration

    return Migration(sinks.spark, sinks.warehouse, sinks.lake, "model").plan(entity, "restart")


def test_an_item_with_an_attribute_the_contract_lacks_is_quarantined_with_quarantine(spark, pg_url, tmp_path):
    entity = shop_orders("quarantine")
    sinks = fresh(spark, pg_url, tmp_path, "mig_strict", entity=entity)
    extra = insert("o1", 100, entity, gift=True, note="n")
    result = sinks.handler(source_rows(spark, extra, insert("o2", 101, entity),
                                       stream_record("REMOVE", 102, key="o3", old=item("o3", gift=True), entity=entity)),
                           0)
    assert (result.events_read, result.quarantined, result.merge.upserted_rows, result.merge.deleted_rows) == \
        (3, 1, 1, 1)
    with pg_connection(pg_url) as conn:
        reasons = conn.execute(f"SELECT record_key, reason FROM {sinks.warehouse.sql.quarantine}").fetchall()
    assert reasons == [("o1", "attribute(s) gift, note not in the contract (on_new_attribute: quarantine): name them "
                              "in the contract to load them")]


def test_a_longer_text_type_promotes_in_every_sink_even_after_a_crash_between_them(spark, pg_url, tmp_path):
    """string -> text changes no column of PostgreSQL's or the lake's (both hold any text), yet notes too long for a
    string, kept in the JSON, now fit: each sink promotes them, also the lake when the job died after the warehouse
    (it learns the change from the contract it recorded, not from its columns)."""
    sinks = fresh(spark, pg_url, tmp_path, "mig_text")
    long_note = "x" * 300
    run(sinks, 0, insert("o1", 100, note=long_note), insert("o2", 101, note="short"))
    with_note = shop_orders(note={"dynamodb": "S", "type": "string"})
    sinks.migrate(with_note)
    assert the_rows(sinks.silver_rows(), "note")["o1"] == (None,)  # 300 bytes: no string, kept in the JSON
    sinks.migrate(shop_orders(note={"dynamodb": "S", "type": "text"}), steps=1)  # the job dies after the warehouse
    sinks.migrate(shop_orders(note={"dynamodb": "S", "type": "text"}))
    for rows in (sinks.warehouse_rows(), sinks.silver_rows()):
        assert the_rows(rows, "note", S.UNMAPPED) == {"o1": (long_note, None), "o2": ("short", None)}
    widened = [h for h in history(sinks) if h["change"] == "widen"]
    assert [(h["column_name"], h["values_promoted"], h["statement"]) for h in widened] == [("note", 1, None)]
