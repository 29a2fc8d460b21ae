"""Table contracts: the default is the tutorial's table, a bad contract is one line, the job serves the
contract's entity, and tutorial-shaped items (four attributes) land with data quality on."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from sales_cdc import schema as S
from sales_cdc.config import DEFAULT_EXPECTATIONS, DqConfig
from sales_cdc.contract import DEFAULT_CONTRACT, ContractError, load_contract
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.quality import DataQuality, load_suites
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.warehouse import PostgresWarehouse
from sales_cdc_local.cli import main
from sales_cdc_local.parser import DEFAULT_FIXTURES
from sales_cdc_local.records import stream_record
from tests.helpers import ORDERS, source_rows

REPO = Path(__file__).parent.parent
EXPECTATIONS = DEFAULT_EXPECTATIONS
TUTORIAL_PRODUCTS = ["Laptop", "Phone", "Tablet", "Headphones", "Charger"]


def test_the_default_contract_is_the_tutorial_table_with_the_generator_s_extras_optional():
    contract = load_contract(DEFAULT_CONTRACT)
    assert contract.table == "OrdersRawTable" and contract.entity == ORDERS
    assert ORDERS.keys[0] == "orderid"
    required = {f.name for f in ORDERS.fields if f.required}
    assert required == {"orderid", "product_name", "quantity", "price"}
    assert {f.name for f in ORDERS.fields} - required == {"customer_id", "customer_name", "created_at"}


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def valid() -> dict:
    return {"table": "Customers", "entity": "customers", "key": {"partition": "pk"},
            "attributes": {"pk": {"dynamodb": "S", "type": "string"},
                           "visits": {"dynamodb": "N", "type": "bigint", "required": True},
                           "balance": {"dynamodb": "N", "type": "decimal(12,2)"},
                           "active": {"dynamodb": "BOOL", "type": "boolean"},
                           "profile": {"dynamodb": "M", "type": "json"}}}


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d.pop("key"), "(top level)"),
    (lambda d: d["attributes"]["visits"].update(type="int64"), "attributes.visits.type"),
    (lambda d: d["attributes"]["visits"].update(dynamodb="S"), "attributes.visits"),
    (lambda d: d["attributes"]["balance"].update(type="decimal(40,2)"), "attributes.balance.type"),
    (lambda d: d["key"].update(partition="id"), "key.partition"),
    (lambda d: d["key"].update(sort="no_such"), "key.sort"),
    (lambda d: d["key"].update(sort="profile"), "attributes.profile.dynamodb"),
    (lambda d: d["key"].update(sort=d["key"]["partition"]), "key.sort"),
    (lambda d: d["attributes"].update(Bad_Name={"dynamodb": "S", "type": "string"}), "attributes.Bad_Name"),
    (lambda d: d["attributes"].update(cdc_op={"dynamodb": "S", "type": "string"}), "attributes.cdc_op"),
    (lambda d: d["attributes"]["active"].update(colour="red"), "attributes.active"),
    (lambda d: d["attributes"]["profile"].update(dynamodb="BOOL"), "attributes.profile"),
    (lambda d: d.update(history="yes"), "history"),
    (lambda d: d.update(history=True) or d["attributes"].update(operation={"dynamodb": "S", "type": "string"}),
     "attributes.operation"),
])
def test_a_bad_contract_is_refused_in_one_line_naming_the_file_and_the_field(tmp_path, change, field):
    document = valid()
    change(document)
    path = write(tmp_path, document)
    with pytest.raises(ContractError) as refused:
        load_contract(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: {field}") and "\n" not in message, message


def test_contract_check_prints_the_columns_or_the_one_line_error(tmp_path, capsys):
    assert main(["contract", "check", str(write(tmp_path, valid()))]) == 0
    assert "OK" in capsys.readouterr().out
    document = valid()
    document["attributes"]["visits"]["type"] = "number"
    assert main(["contract", "check", str(write(tmp_path, document))]) == 1
    out = capsys.readouterr().out
    assert "error:" in out and "attributes.visits.type" in out and "Traceback" not in out


def test_the_contract_s_structural_rules_are_added_to_the_entity_s_suite():
    rules = {r.name: r for s in load_suites(EXPECTATIONS, ORDERS) for r in s.rules}
    assert rules["orders.table_columns_to_match_set"].kwargs["column_set"] == [f.name for f in S.state_fields(ORDERS)]
    assert {"orders.orderid.not_be_null", "orders.orderid.be_unique", "orders.quantity.be_of_type",
            "orders.price.be_of_type", "orders.product_name.not_be_null", "orders.price.not_be_null"} <= set(rules)
    assert "orders.customer_id.not_be_null" not in rules and "orders.created_at.not_be_null" not in rules
    assert rules["orders.product_name.not_be_null"].why == "Required by the contract: Catalogue product name."


def test_tutorial_shaped_items_land_with_the_default_settings(spark, pg_url, db_schema):
    """The tutorial's mock items have four attributes only: with data quality on, none is quarantined."""
    sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS)
    warehouse = PostgresWarehouse(pg_url, sql, "tutorial")
    warehouse.ensure_tables()
    quality = DataQuality(DqConfig(expectations_dir=EXPECTATIONS), ORDERS, "tutorial")
    handler = BatchHandler(warehouse=warehouse, quality=quality, options=HandlerOptions(job_name="tutorial", default_stream_id="t"))
    items = [{"orderid": f"order-{i}", "product_name": TUTORIAL_PRODUCTS[i % 5], "quantity": 1 + i % 5,
              "price": Decimal("19.99") + i} for i in range(9)]
    records = [stream_record("INSERT", 100 + i, key=item["orderid"], new=item, entity=ORDERS) for i, item in enumerate(items)]
    result = handler(source_rows(spark, *records), 0)
    assert result.quarantined == 0 and result.dq_outcome == "passed", result.dq_failed_rules
    rows = warehouse.conn.execute(f"SELECT orderid, quantity, price FROM {sql.target} ORDER BY orderid").fetchall()
    assert rows == sorted((i["orderid"], i["quantity"], i["price"]) for i in items)
    warehouse.close()


def test_contract_infer_from_payload_files_drafts_a_contract_that_checks(fixtures_dir, tmp_path, capsys):
    output = tmp_path / "draft.yaml"
    assert main(["contract", "infer", "--payloads", str(DEFAULT_FIXTURES), "--entity", "orders",
                 "--output", str(output)]) == 0
    entity = load_contract(output).entity
    types = {f.name: (f.ddb_type, f.spark_type.simpleString(), f.required) for f in entity.fields}
    assert entity.keys == ("orderid",)
    assert types["price"] == ("N", "decimal(10,2)", True) and types["quantity"][:2] == ("N", "int")
    assert types["created_at"][:2] == ("S", "timestamp") and types["gift_note"] == ("S", "string", False)
    assert types["tags"] == ("SS", "string", False)  # a set: a json column (its members as a JSON array)


def test_contract_infer_samples_a_dynamodb_table(moto, tmp_path, capsys):
    client = moto.client("dynamodb")
    table = f"Customers{tmp_path.name[-6:].replace('_', '')}"
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                              {"AttributeName": "sk", "AttributeType": "N"}])
    for i in range(20):
        item = {"pk": {"S": f"c{i}"}, "sk": {"N": str(i)}, "visits": {"N": str(2**40 + i)},
                "active": {"BOOL": i % 2 == 0}, "profile": {"M": {"city": {"S": "Oslo"}}},
                "tags": {"SS": ["a", "b"]}, "balance": {"N": f"{i}.25"}}
        if i % 4:
            item["nickname"] = {"S": f"n{i}"}
        client.put_item(TableName=table, Item=item)
    assert main(["contract", "infer", "--table", table, "--endpoint-url", moto.endpoint]) == 0
    text = capsys.readouterr().out
    entity = load_contract_text(text, tmp_path).entity
    types = {f.name: (f.spark_type.simpleString(), f.required) for f in entity.fields}
    assert entity.keys == ("pk", "sk") and types["sk"] == ("int", True) and types["visits"] == ("bigint", True) and types["active"] == ("boolean", True)
    assert types["profile"] == ("string", True) and types["nickname"] == ("string", False)  # json -> JSON text
    assert types["balance"][0] == "decimal(10,2)" and types["tags"] == ("string", True)


def load_contract_text(text: str, tmp_path: Path):
    path = tmp_path / "inferred.yaml"
    path.write_text(text)
    return load_contract(path)


def test_the_example_in_the_contract_docs_is_the_default_contract(tmp_path):
    text = (REPO / "docs" / "contracts.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    entity = load_contract_text(example, tmp_path).entity
    assert [(f.name, f.spark_type, f.required) for f in entity.fields] == \
        [(f.name, f.spark_type, f.required) for f in ORDERS.fields]


def test_history_is_off_unless_the_contract_turns_it_on_and_an_attribute_may_then_not_take_its_columns(tmp_path):
    assert load_contract(write(tmp_path, valid())).entity.history is False
    document = valid()
    document["attributes"]["operation"] = {"dynamodb": "S", "type": "string"}  # fine without history
    assert load_contract(write(tmp_path, document)).entity.history is False
    assert load_contract(write(tmp_path, {**valid(), "history": True})).entity.history is True
