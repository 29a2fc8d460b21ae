"""A second entity, end to end with only its contract file: a partition + sort key, a map, a string set, a
boolean, a bigint and an epoch timestamp; deletes, a deleted item touched again, a late event and bad records;
through the file source, the fixture demo and the moto demo."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from sales_cdc import config as C
from sales_cdc.contract import load_contract
from sales_cdc.job import run_stream
from sales_cdc.lake import Lake
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc_local import generator as G
from sales_cdc_local.cli import main
from sales_cdc_local.demo import DemoOptions, DemoStream, DemoWarehouse, Workload, run_demo
from sales_cdc_local.records import stream_record, to_json_line
from sales_cdc_local.verify import diff_rows, read_lake_state, read_state, state_from_items

pytestmark = pytest.mark.slow

SIGNED_UP = int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def customers(fixtures_dir):
    return load_contract(fixtures_dir / "customers" / "contract.yaml")


def customer(pk: str, sk: int, visits: int, **extra) -> dict:
    return {"pk": pk, "sk": sk, "visits": visits, "balance": Decimal("10.50"), "active": True,
            "profile": {"city": "Oslo", "langs": ["no", "en"]}, "tags": {"vip", "early"}, "signed_up": SIGNED_UP,
            "referrer": "web", **extra}


def fresh_schema(pg_url: str, schema: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return schema


def test_a_composite_key_entity_lands_with_only_its_contract(spark, pg_url, tmp_path, customers):
    entity = customers.entity

    def record(op, seq, pk, sk, **images):
        return stream_record(op, seq, entity=entity, key=(pk, sk), **images)

    batches = [
        [record("INSERT", 10, "a", 1, new=customer("a", 1, 1)), record("INSERT", 11, "a", 2, new=customer("a", 2, 5)),
         record("INSERT", 12, "b", 1, new=customer("b", 1, 7))],
        [record("MODIFY", 20, "a", 1, new=customer("a", 1, 2**40, active=False), old=customer("a", 1, 1)),
         record("REMOVE", 21, "a", 2, old=customer("a", 2, 5)),  # one item of partition a; (a, 1) stays
         record("MODIFY", 9, "b", 1, new=customer("b", 1, 99), old=customer("b", 1, 7))],  # late: older than 12
        [record("INSERT", 30, "a", 2, new=customer("a", 2, 6)),  # the deleted item touched again
         to_json_line(record("INSERT", 31, "c", 1, new=customer("c", 1, 41))).replace('"N":"41"', '"N":"one"'),
         to_json_line(record("INSERT", 32, "c", 2, new=customer("c", 2, 3))).replace('"sk":{"N":"2"}', '"sk":{"N":"3"}',
                                                                                    1)],
    ]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, batch in enumerate(batches):
        lines = [r if isinstance(r, str) else to_json_line(r) for r in batch]
        (inbox / f"{i:03d}.jsonl").write_text("\n".join(lines) + "\n")
    schema = fresh_schema(pg_url, "second_entity")
    lake = C.LakeConfig(str(tmp_path / "lake"))
    config = C.JobConfig(entity, "customers", C.SinkConfig(C.WarehouseConfig(db_schema=schema), lake),
                         C.DqConfig(docs=C.DocsConfig(str(tmp_path / "docs"))))
    stream = C.StreamConfig(C.FileSource(inbox, max_files_per_trigger=1), tmp_path / "ck")
    totals = run_stream(spark, config, stream, pg_url).totals()
    assert totals["events read"] == 9 and totals["events quarantined (decode)"] == 2

    expected = state_from_items([customer("a", 1, 2**40, active=False), customer("a", 2, 6), customer("b", 1, 7)],
                                entity)
    sql = MergeSql(Dialect.POSTGRES, entity, db_schema=schema)
    assert diff_rows(read_state(pg_url, sql, entity.names), expected, entity.keys) == []
    silver = read_lake_state(Lake(lake, "customers", entity), entity.names)
    assert diff_rows(silver, expected, entity.keys) == []
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(f"SELECT profile, tags, signed_up, unmapped_attributes FROM {sql.target} "
                           "WHERE pk = 'a' AND sk = 1").fetchone()
        tombstones = conn.execute(f"SELECT pk, sk FROM {sql.tombstones}").fetchall()
        quarantined = conn.execute(f"SELECT record_key, reason FROM {sql.quarantine} ORDER BY 1").fetchall()
    assert json.loads(row[0]) == {"city": {"S": "Oslo"}, "langs": {"L": [{"S": "no"}, {"S": "en"}]}}
    assert json.loads(row[1]) == ["early", "vip"] and row[2] == datetime(2026, 1, 2, 3, 4, 5)
    assert json.loads(row[3]) == {"referrer": {"S": "web"}}  # not in the contract: kept, typed
    assert tombstones == []  # (a, 2) came back
    assert [json.loads(k) for k, _ in quarantined] == [{"pk": "c", "sk": 1}, {"pk": "c", "sk": 3}]  # as in Keys
    assert "visits" in quarantined[0][1] and "key sk differs" in quarantined[1][1]


def test_the_fixture_demo_of_a_second_entity(pg_url, tmp_path, customers, fixtures_dir):
    """`sales-cdc demo-fixtures --contract`: generated fixtures of the contract and their expected state."""
    operations = G.plan(400, entity=customers.entity, update_share=0.25, delete_share=0.15, seed=3)
    G.write_fixtures(operations, tmp_path / "cdc", entity=customers.entity, records_per_file=150)
    expected = state_from_items(G.final_state(operations).values(), customers.entity)
    (tmp_path / "expected.jsonl").write_text("".join(json.dumps(row) + "\n" for row in expected))
    schema = fresh_schema(pg_url, "second_entity_fixtures")
    code = main(["demo-fixtures", "--contract", str(fixtures_dir / "customers" / "contract.yaml"),
                 "--fixtures", str(tmp_path / "cdc"), "--expected", str(tmp_path / "expected.jsonl"),
                 "--work-dir", str(tmp_path / "demo"), "--warehouse-url", pg_url, "--db-schema", schema])
    assert code == 0
    assert len({row["pk"] for row in expected}) < len(expected)  # partitions hold several items


def test_the_moto_demo_of_a_second_entity(pg_url, tmp_path, customers):
    """`sales-cdc demo --contract`: the table created with its partition and sort key, filled by the generator,
    replicated through the pipe and Kinesis; warehouse == lake silver == DynamoDB scan."""
    schema = fresh_schema(pg_url, "second_entity_demo")
    result = run_demo(DemoOptions(customers, tmp_path / "demo", Workload(count=250),
                                  DemoStream(trigger_interval="1 second", max_records_per_shard=60),
                                  DemoWarehouse(pg_url, schema)))
    assert result.mismatches == []
    assert result.warehouse_rows == result.silver_rows == result.table_rows > 0
    totals = result.summary.totals()
    assert totals["events read"] == 250 and totals["rows deleted"] > 0
    assert totals["events quarantined (decode)"] == totals["events quarantined (data quality)"] == 0


def test_the_readme_s_own_table_walkthrough_on_a_moto_server(pg_url, tmp_path, customers, fixtures_dir, moto, capsys):
    """The README's step by step, as a user chains the commands: the table, the Kinesis stream and the bucket on a
    moto server, items written, the pipe, the job until drained, then status; warehouse == lake == the table."""
    suffix = tmp_path.name[-8:].replace("_", "-").lower()
    table, stream, bucket = f"Customers-{suffix}", f"kinesis-{suffix}", f"lake-{suffix}"
    contract, aws = str(fixtures_dir / "customers" / "contract.yaml"), ["--endpoint-url", moto.endpoint]
    schema = fresh_schema(pg_url, "second_entity_walkthrough")
    setup = ["local-setup", "--contract", contract, "--table", table, "--kinesis-stream", stream, "--bucket", bucket,
             *aws]
    assert main(setup) == 0 and "DynamoDB table" in capsys.readouterr().out
    assert main(setup) == 0 and "nothing created" in capsys.readouterr().out
    assert main(["generate", "--contract", contract, "--table", table, "--count", "200", *aws]) == 0
    assert main(["pipe", "--contract", contract, "--table", table, "--kinesis-stream", stream, "--idle-seconds", "2",
                 "--state-file", str(tmp_path / "pipe.json"), *aws]) == 0
    job = ["--contract", contract, "--kinesis-stream", stream, "--checkpoint-dir", str(tmp_path / "ck"), *aws,
           "--warehouse-url", pg_url, "--db-schema", schema]
    lake_root = f"s3://{bucket}/lake"
    assert main(["run", *job, "--lake-root", lake_root, "--docs-location", str(tmp_path / "docs")]) == 0
    capsys.readouterr()
    assert main(["status", "--json", *job]) == 0
    assert all(s["next_unread_sequence"] is None for s in json.loads(capsys.readouterr().out)["lag"]["shards"].values())

    from sales_cdc.lake import moto_storage_options
    from sales_cdc_local.verify import scan_table

    entity = customers.entity
    expected = state_from_items(scan_table(moto.resource("dynamodb").Table(table)), entity)
    sql = MergeSql(Dialect.POSTGRES, entity, db_schema=schema)
    assert diff_rows(read_state(pg_url, sql, entity.names), expected, entity.keys) == []
    lake = Lake(C.LakeConfig(lake_root, moto_storage_options(moto.endpoint)), C.JobConfig.job_name, entity)
    assert diff_rows(read_lake_state(lake, entity.names), expected, entity.keys) == []
