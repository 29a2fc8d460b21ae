"""The Faker generator: the configured mix, reproducible, to fixture files and to DynamoDB (moto)."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal

import pytest

from sales_cdc import schema as S
from sales_cdc.contract import load_contract
from sales_cdc.decode import decode_pipe_records, split_decoded
from sales_cdc.sources.files import file_batch
from sales_cdc.transforms import latest_per_key
from sales_cdc_local import generator as G
from sales_cdc_local.local_aws import create_source_table
from sales_cdc_local.verify import scan_table, state_from_items
from tests.helpers import ORDERS


def test_plan_has_the_configured_mix_and_is_reproducible():
    operations = G.plan(5000, update_share=0.2, delete_share=0.1, seed=7, entity=ORDERS)
    counts = Counter(o.op for o in operations)
    assert sum(counts.values()) == 5000
    assert counts["MODIFY"] == pytest.approx(1000, rel=0.1)
    assert counts["REMOVE"] == pytest.approx(500, rel=0.15)
    assert G.plan(5000, update_share=0.2, delete_share=0.1, seed=7, entity=ORDERS) == operations
    assert G.plan(5000, update_share=0.2, delete_share=0.1, seed=8, entity=ORDERS) != operations


def test_orders_are_plausible():
    for operation in G.plan(500, seed=3, entity=ORDERS):
        if operation.item is None:
            continue
        item = operation.item
        low, high = G.CATALOGUE[item["product_name"]]
        assert low <= item["price"] <= high and item["price"] == item["price"].quantize(Decimal("0.01"))
        assert 1 <= item["quantity"] <= G.MAX_QUANTITY
        assert set(item) == set(ORDERS.names)


def test_changes_only_touch_live_orders():
    live: set[str] = set()
    for operation in G.plan(2000, update_share=0.3, delete_share=0.2, seed=5, entity=ORDERS):
        if operation.op == "INSERT":
            assert operation.key not in live
            live.add(operation.key)
        else:
            assert operation.key in live
            if operation.op == "REMOVE":
                live.remove(operation.key)


@pytest.mark.parametrize("bad", [(-0.1, 0.1), (0.6, 0.5)])
def test_invalid_shares_are_refused(bad):
    with pytest.raises(ValueError):
        G.plan(10, update_share=bad[0], delete_share=bad[1], entity=ORDERS)


def test_fixture_mode_decodes_cleanly_to_the_planned_final_state(spark, tmp_path):
    operations = G.plan(600, seed=11, entity=ORDERS)
    paths = G.write_fixtures(operations, tmp_path, records_per_file=250, entity=ORDERS)
    assert len(paths) == 3
    events, quarantine = split_decoded(decode_pipe_records(file_batch(spark, str(tmp_path)), ORDERS), 0, ORDERS)
    assert quarantine.count() == 0
    latest = latest_per_key(events, ORDERS.keys).where("cdc_op <> 'REMOVE'").select(*[S.NEW_PREFIX + n for n in ORDERS.names])
    actual = {r["new_orderid"]: (r["new_quantity"], r["new_price"]) for r in latest.collect()}
    expected = {k: (v["quantity"], v["price"]) for (k,), v in G.final_state(operations).items()}
    assert actual == expected


def test_writes_the_plan_to_dynamodb(moto):
    table = f"orders-{uuid.uuid4().hex[:8]}"
    create_source_table(moto.client("dynamodb"), ORDERS, table)
    operations = G.plan(300, update_share=0.25, delete_share=0.15, seed=2, entity=ORDERS)
    ticks = []
    counts = G.write_to_dynamodb(operations, moto.resource("dynamodb"), table, progress=lambda: ticks.append(1), entity=ORDERS)
    assert counts == Counter(o.op for o in operations) and len(ticks) == 300
    expected = state_from_items(G.final_state(operations).values(), ORDERS)
    assert state_from_items(scan_table(moto.resource("dynamodb").Table(table)), ORDERS) == expected


def test_items_of_any_contract_change_on_every_update_and_an_empty_change_is_not_sent(moto, fixtures_dir):
    """A boolean or a short set can be drawn again as it was: the factory draws again, and the writer sends
    no UpdateItem without an action (DynamoDB refuses one)."""
    entity = load_contract(fixtures_dir / "customers" / "contract.yaml").entity
    factory = G.ContractFactory(entity, seed=5)
    items = [factory.item(n) for n in range(200)]
    assert all(factory.change(item) != item for item in items)
    table = f"customers-{uuid.uuid4().hex[:8]}"
    create_source_table(moto.client("dynamodb"), entity, table)
    inserts = G.plan(5, entity=entity, update_share=0.0, delete_share=0.0, seed=6)
    same = inserts[0].item
    unchanged = G.Operation("MODIFY", inserts[0].key, dict(same), dict(same))
    counts = G.write_to_dynamodb([*inserts, unchanged], moto.resource("dynamodb"), table, entity=entity)
    assert counts == Counter({"INSERT": 5, "MODIFY": 1})
    assert len(scan_table(moto.resource("dynamodb").Table(table))) == 5
