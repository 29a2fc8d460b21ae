"""The worked example of docs/schema-evolution.md, end to end through ``sales-cdc run``: the file source, the lake,
data quality, one checkpoint and one warehouse throughout, a contract file per step and no SQL by hand.

1. the tutorial's four attributes; items also carry discount, gift and note (kept in unmapped_attributes);
2. the contract names discount: the job migrates every sink at start-up and moves the JSON values into the column
   (one that does not fit stays, counted); the next batch's discounts land in it;
3. quantity and price widen, for values the old types cannot hold.
After each step the warehouse and silver hold what a model that keeps every value holds."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import psycopg
import pytest
import yaml
from deltalake import DeltaTable

from sales_cdc import schema as S
from sales_cdc_local.cli import main
from sales_cdc_local.records import stream_record, to_json_line
from tests.helpers import shop_orders, shop_orders_contract
from tests.items import comparable, item_of

pytestmark = pytest.mark.slow

DISCOUNT = {"discount": {"dynamodb": "N", "type": "decimal(6,2)"}}
STEPS = [{}, DISCOUNT, {**DISCOUNT, "quantity": {"type": "bigint"}, "price": {"type": "decimal(14,2)"}}]


def item(key: str, **values) -> dict:
    return {"orderid": key, "product_name": "Laptop", "quantity": 1, "price": Decimal("9.99"), **values}


BATCHES = [
    [item(f"o{i}", discount=Decimal(f"{i}.5"), gift=i % 2 == 0, note=f"note {i}") for i in range(4)]
    + [item("o9", discount=Decimal("1.234"))],  # no decimal(6,2): stays in the JSON when discount is promoted
    [item("p1", discount=Decimal("2.25")), item("o1", discount=Decimal("7.75"), note="changed")],
    [item("q1", quantity=5_000_000_000, price=Decimal("123456789.99"))],
]


def test_the_worked_example_add_promote_widen_with_no_manual_sql(pg_url, tmp_path):
    schema = "evolution_e2e"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    inbox, model, sequence = tmp_path / "inbox", {}, 100
    inbox.mkdir()
    for step, (changes, items) in enumerate(zip(STEPS, BATCHES, strict=True)):
        contract = tmp_path / f"contract-{step}.yaml"
        contract.write_text(yaml.safe_dump(shop_orders_contract(**changes)))
        lines = []
        for values in items:
            sequence += 1
            op = "MODIFY" if values["orderid"] in model else "INSERT"
            lines.append(to_json_line(stream_record(op, sequence, key=values["orderid"], new=values,
                                                    entity=shop_orders())))
            model[values["orderid"]] = {k: comparable(v) for k, v in values.items()}
        (inbox / f"batch-{step}.jsonl").write_text("\n".join(lines) + "\n")
        code = main(["run", "--contract", str(contract), "--source-dir", str(inbox), "--checkpoint-dir",
                     str(tmp_path / "checkpoint"), "--lake-root", str(tmp_path / "lake"), "--warehouse-url", pg_url,
                     "--db-schema", schema, "--docs-location", str(tmp_path / "docs")])
        assert code == 0, f"step {step}"
        entity = shop_orders(**changes)
        warehouse, silver = read(pg_url, schema, entity), read_silver(tmp_path / "lake", entity)
        assert {k: item_of(r, entity) for k, r in warehouse.items()} == model, f"step {step}: warehouse"
        assert {k: item_of(r, entity) for k, r in silver.items()} == model, f"step {step}: silver"
        if step >= 1:  # the promoted column holds what was in the JSON; 1.234 is kept there
            assert {k: warehouse[k]["discount"] for k in ("o0", "o2", "o3", "o9")} == \
                {"o0": Decimal("0.50"), "o2": Decimal("2.50"), "o3": Decimal("3.50"), "o9": None}
            assert json.loads(warehouse["o9"][S.UNMAPPED]) == {"discount": {"N": "1.234"}}
    assert (warehouse["q1"]["quantity"], warehouse["q1"]["price"]) == (5_000_000_000, Decimal("123456789.99"))
    with psycopg.connect(pg_url) as conn:
        changes = conn.execute(f'SELECT change, column_name, values_promoted, values_kept FROM "{schema}".schema_changes '
                               "WHERE change <> 'contract' ORDER BY changed_at, column_name").fetchall()
    assert changes == [("add_column", "discount", 4, 1), ("widen", "price", 0, 0), ("widen", "quantity", 0, 0)]
    shutil.rmtree(inbox)


def read(pg_url: str, schema: str, entity: S.EntitySchema) -> dict:
    with psycopg.connect(pg_url) as conn:
        cursor = conn.execute(f'SELECT * FROM "{schema}"."{entity.name}"')
        names = [c.name for c in cursor.description]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def read_silver(lake, entity: S.EntitySchema) -> dict:
    rows = DeltaTable(str(lake / "silver" / entity.name)).to_pyarrow_table().to_pylist()
    return {r["orderid"]: r for r in rows}


def test_contract_diff_and_a_dry_run_say_what_each_sink_would_run(pg_url, tmp_path, capsys):
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(shop_orders_contract()))
    new.write_text(yaml.safe_dump(shop_orders_contract(**STEPS[2])))
    assert main(["contract", "diff", str(old), str(new)]) == 0
    printed = capsys.readouterr().out
    assert "add column discount decimal(6,2)" in printed and "quantity: widen integer -> bigint" in printed
    assert 'RENAME COLUMN "quantity__widened" TO "quantity";' in printed  # Redshift's copy and swap
    schema = "evolution_dry_run"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    base = ["--warehouse-url", pg_url, "--db-schema", schema, "--lake-root", str(tmp_path / "lake")]
    assert main(["migrate", "--contract", str(old), *base]) == 0
    capsys.readouterr()
    assert main(["migrate", "--contract", str(new), "--dry-run", *base]) == 0
    printed = capsys.readouterr().out
    assert 'ALTER TABLE "evolution_dry_run"."shop_orders" ALTER COLUMN "quantity" TYPE BIGINT' in printed
    with psycopg.connect(pg_url) as conn:  # a dry run changes nothing
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE "
                                  "table_schema = %s AND table_name = 'shop_orders'", (schema,)).fetchall())
    assert types["quantity"] == "integer" and "discount" not in types
    assert main(["migrate", "--contract", str(new), *base]) == 0
    assert main(["migrate", "--contract", str(old), *base]) == 1  # discount dropped, quantity narrowed: refused
    assert "error: the contract no longer names discount" in capsys.readouterr().out
