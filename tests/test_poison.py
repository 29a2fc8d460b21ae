"""The poison catalogue (tests/fixtures/poison, built by build_poison_fixtures.py) through the streaming job.

Every bad record is quarantined with a reason, in the warehouse and the lake; every good one lands; the
batch they share is committed, so the stream moves on: loaded + quarantined == read, nothing else.
"""

from __future__ import annotations

import json
import re
import shutil

import psycopg
import pytest
from deltalake import DeltaTable

from sales_cdc.config import FileSource, JobConfig, LakeConfig, SinkConfig, StreamConfig, WarehouseConfig
from sales_cdc.job import run_stream
from sales_cdc.sql import Dialect, MergeSql
from tests.helpers import ORDERS, REPO

pytestmark = pytest.mark.slow


def payload_prefix(raw: bytes) -> str:
    """How a quarantine row shows the start of a payload: invalid UTF-8 replaced, U+0000 spelled out."""
    return raw.decode("utf-8", errors="replace").replace("\x00", "\\u0000")[:300]


@pytest.fixture(scope="module")
def poisoned(spark, pg_url, tmp_path_factory, fixtures_dir):
    """The catalogue, run once through the job (file source -> PostgreSQL + Delta lake); its results."""
    work = tmp_path_factory.mktemp("poison")
    shutil.copytree(fixtures_dir / "poison", work / "inbox", ignore=shutil.ignore_patterns("*.json"))
    schema = "poison"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    config = JobConfig(ORDERS, "poison", SinkConfig(WarehouseConfig(db_schema=schema), LakeConfig(str(work / "lake"))),
                       dq=None)
    summary = run_stream(spark, config, StreamConfig(FileSource(work / "inbox"), work / "checkpoint"), pg_url)
    sql = MergeSql(Dialect.POSTGRES, db_schema=schema, entity=ORDERS)
    with psycopg.connect(pg_url) as conn:
        state = {r[0]: r for r in conn.execute(f"SELECT orderid, product_name, quantity FROM {sql.target}")}
        tombstones = {r[0] for r in conn.execute(f"SELECT orderid FROM {sql.tombstones}")}
        quarantine = conn.execute(f"SELECT payload, reason FROM {sql.quarantine}").fetchall()
    lake = work / "lake"
    return {
        "summary": summary, "state": state, "tombstones": tombstones, "quarantine": quarantine,
        "silver": {r["orderid"] for r in DeltaTable(str(lake / "silver/orders")).to_pyarrow_table().to_pylist()},
        "lake_quarantine": DeltaTable(str(lake / "quarantine/orders")).to_pyarrow_table().num_rows,
        "raw": DeltaTable(str(lake / "raw/orders_events")).to_pyarrow_table().num_rows,
        "cases": json.loads((fixtures_dir / "poison" / "expected.json").read_text()),
        "payloads": (fixtures_dir / "poison" / "records.jsonl").read_bytes().split(b"\n")[:-1],
    }


def test_the_catalogue_has_at_least_forty_kinds_of_bad_records(poisoned):
    bad = [c for c in poisoned["cases"] if not c["case"].startswith("valid-")]
    assert len(bad) >= 40 and len(poisoned["payloads"]) == len(poisoned["cases"])


def test_everything_read_is_loaded_or_quarantined_and_nothing_else(poisoned):
    totals = poisoned["summary"].totals()
    read, quarantined = totals["events read"], totals["events quarantined (decode)"]
    loaded = totals["rows upserted"] + totals["rows deleted"]
    assert read == len(poisoned["cases"]) == poisoned["raw"]
    assert loaded + quarantined == read
    assert quarantined == len(poisoned["quarantine"]) == poisoned["lake_quarantine"]
    assert sum(c["outcome"] == "quarantine" for c in poisoned["cases"]) == quarantined


CASES = len(json.loads((REPO / "tests/fixtures/poison/expected.json").read_text()))


@pytest.mark.parametrize("index", range(CASES))
def test_each_case_has_its_outcome(poisoned, index):
    case, payload = poisoned["cases"][index], poisoned["payloads"][index]
    if case["outcome"] == "load":
        row = case["row"]
        if row.get("deleted"):
            assert row["key"] in poisoned["tombstones"] and row["key"] not in poisoned["state"]
            return
        key, product_name, quantity = poisoned["state"][row["key"]]
        assert product_name == row.get("product_name", product_name) and quantity == row.get("quantity", quantity)
        assert key in poisoned["silver"]
        return
    reasons = [reason for stored, reason in poisoned["quarantine"] if stored[:300] == payload_prefix(payload)]
    assert len(reasons) == 1, f"{case['case']}: {len(reasons)} quarantine rows"
    assert re.search(case["reason"], reasons[0]), f"{case['case']}: {reasons[0]}"
