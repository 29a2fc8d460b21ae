"""Schema evolution, planned (no sink touched): the column types' records, which contract changes a sink can follow
and which it refuses, and the SQL of a migration in both dialects (parsed by sqlglot as its dialect reads it)."""

from __future__ import annotations

import pytest
import sqlglot

from sales_cdc import column_types as CT
from sales_cdc import schema as S
from sales_cdc.column_types import Dialect
from sales_cdc.contract import ContractError, parse_contract
from sales_cdc.evolution import Change, ChangeKind, SchemaChangeRefused, contract_changes, sink_changes
from sales_cdc.migration import preview
from sales_cdc.sql import MergeSql
from sales_cdc.sql_migrate import MigrationSql
from tests.helpers import SHOP_ORDERS, shop_orders


def entity(**changes) -> S.EntitySchema:
    return shop_orders(**changes)


# --- the column types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spelled", "name"), [("string", "string"), ("text", "text"), ("Decimal(10, 2)", "decimal(10,2)"),
                                                ("bigint", "bigint"), ("json", "json")])
def test_a_type_is_spelled_one_way(spelled, name):
    assert CT.parse(spelled).name == name


def test_an_unknown_type_lists_the_ones_there_are():
    with pytest.raises(ValueError, match="use one of string, text, integer"):
        CT.parse("varchar")
    with pytest.raises(ContractError, match=r"attributes.quantity.type: decimal\(40,2\) needs 1 <= p <= 38"):
        entity(quantity={"type": "decimal(40,2)"})


WIDENINGS = [
    ("integer", "bigint", True), ("bigint", "integer", False), ("integer", "decimal(10,0)", True),
    ("integer", "decimal(9,0)", False), ("bigint", "decimal(38,9)", True), ("bigint", "decimal(20,2)", False),
    ("decimal(10,2)", "decimal(14,2)", True), ("decimal(10,2)", "decimal(11,3)", True),
    ("decimal(10,2)", "decimal(10,3)", False), ("decimal(10,2)", "decimal(12,1)", False),
    ("string", "text", True), ("text", "string", False), ("decimal(10,2)", "string", False),
    ("integer", "double", False), ("boolean", "string", False), ("date", "timestamp", False),
]


@pytest.mark.parametrize(("before", "after", "widens"), WIDENINGS)
def test_a_widening_holds_every_value_of_the_narrower_type(before, after, widens):
    assert CT.parse(before).widens_to(CT.parse(after)) is widens


STORED = {  # type -> (PostgreSQL, Redshift, lake)
    "string": ("TEXT", "VARCHAR(256)", "string"), "text": ("TEXT", "VARCHAR(65535)", "string"),
    "json": ("TEXT", "VARCHAR(65535)", "string"), "integer": ("INTEGER", "INTEGER", "int"),
    "bigint": ("BIGINT", "BIGINT", "bigint"), "double": ("DOUBLE PRECISION", "DOUBLE PRECISION", "double"),
    "boolean": ("BOOLEAN", "BOOLEAN", "boolean"), "timestamp": ("TIMESTAMP", "TIMESTAMP", "timestamp"),
    "date": ("DATE", "DATE", "date"), "decimal(14,2)": ("DECIMAL(14,2)", "DECIMAL(14,2)", "decimal(14,2)"),
}


@pytest.mark.parametrize("name", STORED)
def test_each_type_is_stored_as_its_record_says_and_read_back_alike(name):
    column_type = CT.parse(name)
    postgres, redshift, lake = STORED[name]
    assert (column_type.sql(Dialect.POSTGRES), column_type.sql(Dialect.REDSHIFT), column_type.lake) == \
        (postgres, redshift, lake)
    # information_schema's words for the same column, and Delta's
    described = {"TEXT": ("text",), "VARCHAR(256)": ("character varying", None, None, 256),
                 "VARCHAR(65535)": ("character varying", None, None, 65535), "DOUBLE PRECISION": ("double precision",),
                 "DECIMAL(14,2)": ("numeric", 14, 2)}
    for dialect, stored in ((Dialect.POSTGRES, postgres), (Dialect.REDSHIFT, redshift)):
        read_back = CT.of_sql(*described.get(stored, (stored.lower(),)))
        assert CT.stored_alike(read_back, column_type, dialect.value), (dialect, stored, read_back)
    delta_name = {"int": "integer", "bigint": "long"}.get(lake, lake)
    assert CT.stored_alike(CT.of_lake(delta_name), column_type, "lake")


# --- contract changes -----------------------------------------------------------------------------------------
def test_the_worked_example_add_then_widen():
    v1, v2 = entity(), entity(discount={"dynamodb": "N", "type": "decimal(6,2)"})
    v3 = entity(discount={"dynamodb": "N", "type": "decimal(6,2)"}, quantity={"type": "bigint"},
                price={"type": "decimal(14,2)"}, product_name={"required": False})
    assert contract_changes(v1, v2) == [Change(ChangeKind.ADD, "discount", None, "decimal(6,2)")]
    assert contract_changes(v2, v3) == [Change(ChangeKind.OPTIONAL, "product_name"),
                                        Change(ChangeKind.WIDEN, "quantity", "integer", "bigint"),
                                        Change(ChangeKind.WIDEN, "price", "decimal(10,2)", "decimal(14,2)")]
    assert len({v1.version, v2.version, v3.version}) == 3
    assert contract_changes(v3, v3) == []


def test_another_dynamodb_type_with_the_same_column_is_followed():
    before = entity(tags={"dynamodb": "SS", "type": "json"})
    after = entity(tags={"dynamodb": "L", "type": "json"})
    assert contract_changes(before, after) == [Change(ChangeKind.RETAG, "tags", "SS", "L")]


@pytest.mark.parametrize(("after", "message"), [
    (entity(), "quantity: bigint -> integer is not a widening.*new attribute name.*load the table again"),
    (entity(quantity={"type": "bigint"}, price={"type": "decimal(8,2)"}),
     "price: decimal\\(10,2\\) -> decimal\\(8,2\\) is not a widening"),
    (entity(quantity={"type": "bigint"}, price={"dynamodb": "S", "type": "string"}),
     "price: decimal\\(10,2\\) -> string is not a widening"),
    (entity(quantity={"type": "bigint"}, product_name=None), "no longer names product_name"),
], ids=["narrower", "fewer integer digits", "another type", "dropped"])
def test_a_change_that_would_lose_values_is_refused_with_the_way_forward(after, message):
    with pytest.raises(SchemaChangeRefused, match=message):
        contract_changes(entity(quantity={"type": "bigint"}), after)


def test_a_key_change_is_refused():
    sorted_key = parse_contract({"table": "ShopOrders", "entity": "shop_orders", "key": {"partition": "orderid", "sort": "line"},
                                 "attributes": {**SHOP_ORDERS, "line": {"dynamodb": "N", "type": "bigint"}}}, "x").entity
    with pytest.raises(SchemaChangeRefused, match=r"the key changes from \(orderid string\) to "
                                                  r"\(orderid string, line bigint\).*new entity"):
        contract_changes(entity(), sorted_key)


# --- what a sink must do ---------------------------------------------------------------------------------------
def stored(of: S.EntitySchema, storage: str, **overrides) -> dict:
    columns = {f.name: f.column_type for f in S.state_fields(of)}
    return {**columns, **{k: CT.parse(v) for k, v in overrides.items()}}


def test_postgresql_text_holds_every_kind_of_text_so_string_to_text_is_no_ddl_there():
    after = entity(product_name={"type": "text"})
    read_back = stored(entity(), "postgres", product_name="text")  # TEXT reads back as text
    assert sink_changes(after, read_back, "postgres", "warehouse") == []
    assert sink_changes(after, stored(entity(), "redshift"), "redshift", "warehouse") == \
        [Change(ChangeKind.WIDEN, "product_name", "string", "text")]


def test_a_sink_with_a_column_the_contract_lacks_or_a_narrower_key_is_refused():
    with pytest.raises(SchemaChangeRefused, match="no longer names discount, which warehouse hold"):
        sink_changes(entity(), stored(entity(), "postgres", discount="decimal(6,2)"), "postgres", "warehouse")
    with pytest.raises(SchemaChangeRefused, match="quantity: bigint -> integer is not a widening \\(lake silver holds"):
        sink_changes(entity(), stored(entity(), "lake", quantity="bigint"), "lake", "lake silver")


# --- the SQL, as each dialect reads it ----------------------------------------------------------------------
def test_the_migration_sql_of_each_dialect():
    after = entity(discount={"dynamodb": "N", "type": "decimal(6,2)"}, quantity={"type": "bigint"})
    changes = [Change(ChangeKind.ADD, "discount", None, "decimal(6,2)"),
               Change(ChangeKind.WIDEN, "quantity", "integer", "bigint")]
    postgres = MigrationSql(MergeSql(Dialect.POSTGRES, after, "sales"))
    redshift = MigrationSql(MergeSql(Dialect.REDSHIFT, after, "sales"))
    assert postgres.statements(changes) == [
        'ALTER TABLE "sales"."shop_orders" ADD COLUMN IF NOT EXISTS "discount" DECIMAL(6,2)',
        'ALTER TABLE "sales"."shop_orders" ALTER COLUMN "quantity" TYPE BIGINT']
    assert redshift.statements(changes) == [
        'ALTER TABLE "sales"."shop_orders" ADD COLUMN "discount" DECIMAL(6,2)',
        'ALTER TABLE "sales"."shop_orders" ADD COLUMN "quantity__widened" BIGINT',
        'UPDATE "sales"."shop_orders" SET "quantity__widened" = "quantity"',
        'ALTER TABLE "sales"."shop_orders" DROP COLUMN "quantity"',
        'ALTER TABLE "sales"."shop_orders" RENAME COLUMN "quantity__widened" TO "quantity"']
    assert redshift.promote('"stage_promotion"', ["discount"]) == (
        'UPDATE "sales"."shop_orders" SET "discount" = COALESCE(s."discount", "shop_orders"."discount"), '
        '"unmapped_attributes" = s."unmapped_attributes"\n'
        'FROM "stage_promotion" AS s\n'
        'WHERE "shop_orders"."orderid" = s."orderid" AND "shop_orders"."cdc_sequence" = s."cdc_sequence"')
    for sql in (postgres, redshift):
        statements = [*sql.statements(changes), sql.promote('"stage_promotion"', ["discount"]), sql.columns_query(),
                      sql.unmapped_rows_query(), sql.recorded_contract_query(),
                      sql.sql.temp_stage("promotion", sql.promotion_fields(["discount"]))[1]]
        for statement in statements:
            sqlglot.parse_one(statement.replace("%(", ":").replace(")s", ""), read=sql.dialect.value)


def test_contract_diff_prints_every_kind_of_sink():
    lines = preview(entity(), entity(discount={"dynamodb": "N", "type": "decimal(6,2)"}, quantity={"type": "bigint"}))
    text = "\n".join(lines)
    assert "  add column discount decimal(6,2)" in lines and "  quantity: widen integer -> bigint" in lines
    assert 'ALTER TABLE "sales"."shop_orders" ALTER COLUMN "quantity" TYPE BIGINT;' in text
    assert 'RENAME COLUMN "quantity__widened" TO "quantity";' in text
    assert "rewrite silver/shop_orders in one commit" in text and "new snapshot of silver/shop_orders" in text
    with pytest.raises(SchemaChangeRefused):
        preview(entity(quantity={"type": "bigint"}), entity())
