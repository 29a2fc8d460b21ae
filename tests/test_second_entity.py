"""A second entity, end to end through the local job with only its contract file: another key, a map, a
boolean, a bigint, a string set (unmapped), deletes, a re-insert, a late event and a bad record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from deltalake import DeltaTable

from sales_cdc.config import DqConfig, JobConfig, WarehouseConfig
from sales_cdc.contract import load_contract
from sales_cdc.job import run_stream
from sales_cdc.lake import LakeConfig
from sales_cdc.records import stream_record, to_json_line
from sales_cdc.sql import Dialect, MergeSql

pytestmark = pytest.mark.slow


def customer(key: str, visits: int, **extra) -> dict:
    return {"customer_key": key, "visits": visits, "balance": Decimal("10.50"), "active": True,
            "profile": {"city": "Oslo", "langs": ["no", "en"]}, "tags": {"vip", "early"},
            "signed_up": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), **extra}


def test_a_second_entity_lands_with_only_its_contract(spark, pg_url, tmp_path, fixtures_dir):
    entity = load_contract(fixtures_dir / "customers" / "contract.yaml").entity
    record = lambda op, seq, key, **images: stream_record(op, seq, key=key, entity=entity, **images)  # noqa: E731
    batches = [
        [record("INSERT", 10, "c1", new=customer("c1", 1)), record("INSERT", 11, "c2", new=customer("c2", 5)),
         record("INSERT", 12, "c3", new=customer("c3", 7))],
        [record("MODIFY", 20, "c1", new=customer("c1", 2**40, active=False), old=customer("c1", 1)),
         record("REMOVE", 21, "c2", old=customer("c2", 5)),
         record("MODIFY", 9, "c3", new=customer("c3", 99), old=customer("c3", 7))],  # late: older than 12
        [record("INSERT", 30, "c2", new=customer("c2", 6)),  # the deleted key touched again
         to_json_line(record("INSERT", 31, "c4", new=customer("c4", 1))).replace('"N":"1"', '"N":"one"')],
    ]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, batch in enumerate(batches):
        lines = [r if isinstance(r, str) else to_json_line(r) for r in batch]
        (inbox / f"{i:03d}.jsonl").write_text("\n".join(lines) + "\n")
    schema = "second_entity"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    config = JobConfig(source_dir=inbox, checkpoint_dir=tmp_path / "ck", entity=entity, job_name="customers",
                       warehouse=WarehouseConfig(url=pg_url, db_schema=schema), max_files_per_trigger=1,
                       lake=LakeConfig(str(tmp_path / "lake")), dq=DqConfig(docs_location=str(tmp_path / "docs")))
    summary = run_stream(spark, config, pg_url)
    totals = summary.totals()
    assert totals["events read"] == 8 and totals["events quarantined (decode)"] == 1

    sql = MergeSql(Dialect.POSTGRES, db_schema=schema, entity=entity)
    assert sql.target == f'"{schema}"."customers"'
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"SELECT customer_key, visits, active, balance, profile, unmapped_attributes "
                            f"FROM {sql.target} ORDER BY 1").fetchall()
        tombstones = conn.execute(f"SELECT customer_key FROM {sql.tombstones}").fetchall()
        quarantined = conn.execute(f"SELECT record_key, reason FROM {sql.quarantine}").fetchall()
    assert [(k, v, a) for k, v, a, *_ in rows] == [("c1", 2**40, False), ("c2", 6, True), ("c3", 7, True)]
    assert all(b == Decimal("10.50") for *_, b, _, _ in rows)
    profile = json.loads(rows[0][4])
    assert profile == {"city": {"S": "Oslo"}, "langs": {"L": [{"S": "no"}, {"S": "en"}]}}
    assert json.loads(rows[0][5]) == {"tags": {"SS": ["early", "vip"]}}  # not in the contract: kept, typed
    assert tombstones == []
    assert [k for k, _ in quarantined] == ["c4"] and "visits" in quarantined[0][1]
    silver = DeltaTable(str(tmp_path / "lake" / "silver" / "customers")).to_pyarrow_table().to_pylist()
    assert sorted((r["customer_key"], r["visits"]) for r in silver) == [("c1", 2**40), ("c2", 6), ("c3", 7)]
    assert "orderid" not in {f.name for f in entity.fields}
