"""Data quality inside the micro-batch: quarantine, halt, alerts, history and Data Docs, end to end on
real Spark, GX, PostgreSQL, delta-rs and a moto server (SNS read back through SQS)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from deltalake import DeltaTable

from sales_cdc import config as C
from sales_cdc import schema as S
from sales_cdc.alerts import SnsAlerter
from sales_cdc.lake import Lake
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.quality import DataQuality, DataQualityHalt
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.sql_history import HistorySql
from sales_cdc.warehouse import PostgresWarehouse
from sales_cdc_local.cli import main
from sales_cdc_local.local_aws import create_alert_topic, read_alerts
from sales_cdc_local.records import stream_record, to_json_line
from tests.helpers import EXPECTATIONS, ORDERS, copy_project, edit_rule, is_quantity_between, rendered_dom

pytestmark = pytest.mark.slow
JOB = "dq-pipeline-test"


def order(orderid: str, **changes) -> dict:
    return {"orderid": orderid, "product_name": "Phone", "quantity": 1, "price": Decimal("199.00"),
            "customer_id": "c-00001", "customer_name": "Ann Lee", "created_at": "2026-11-25T09:00:00Z", **changes}


def insert(orderid: str, seq: int, **changes) -> str:
    return to_json_line(stream_record("INSERT", seq, key=orderid, new=order(orderid, **changes), entity=ORDERS))


def query(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def alerts(moto):
    topic, queue = create_alert_topic(moto.client("sns"), moto.client("sqs"), name=f"alerts-{uuid.uuid4().hex[:8]}")
    return topic, queue


def test_quarantine_batch_lands_good_rows_and_only_bad_rows_in_quarantine(spark, pg_url, db_schema, moto, alerts,
                                                                          tmp_path):
    topic, queue = alerts
    sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS)
    warehouse = PostgresWarehouse(pg_url, sql, JOB)
    warehouse.ensure_tables()
    lake = Lake(C.LakeConfig(str(tmp_path / "lake")), JOB, ORDERS)
    quality = DataQuality(C.DqConfig(expectations_dir=EXPECTATIONS, docs=C.DocsConfig(str(tmp_path / "docs"))), ORDERS, JOB)
    handler = BatchHandler(warehouse=warehouse, lake=lake, quality=quality, alerter=SnsAlerter(moto.client("sns"), topic), options=HandlerOptions(job_name=JOB, default_stream_id="s1", alert_quarantine_share=0.05))
    lines = [insert("o-1", 1), insert("o-2", 2, quantity=9), insert("o-3", 3, product_name="Toaster"),
             insert("o-4", 4, customer_id="legacy 17"), "not json"]
    batch = spark.createDataFrame([(x, "shard-0", str(i), None, None) for i, x in enumerate(lines)], S.SOURCE_SCHEMA)

    result = handler(batch, 0)

    assert (result.events_read, result.dq_quarantined, result.quarantined) == (5, 2, 3)
    assert result.dq_outcome == "quarantined"
    assert sorted(r[0] for r in query(pg_url, f"SELECT orderid FROM {sql.target}")) == ["o-1", "o-4"]  # warn flows
    quarantined = query(pg_url, f"SELECT stage, record_key, reason, payload FROM {sql.quarantine} ORDER BY 2")
    assert [(q[0], q[1], q[2]) for q in quarantined if q[0] == S.DQ_STAGE] == [
        ("dq", "o-2", "orders.quantity.be_between"), ("dq", "o-3", "orders.product_name.be_in_set")]
    assert json.loads(next(q for q in quarantined if q[1] == "o-2")[3])["dynamodb"]["NewImage"]["quantity"] == {"N": "9"}
    assert [q[0] for q in quarantined if q[0] != S.DQ_STAGE] == ["decode"]
    lake_quarantine = DeltaTable(lake.quarantine_uri).to_pyarrow_table().to_pylist()
    assert sorted((r["stage"], r["record_key"]) for r in lake_quarantine) == [
        ("decode", None), ("dq", "o-2"), ("dq", "o-3")]
    assert sorted(DeltaTable(lake.silver_uri).to_pyarrow_table().column("orderid").to_pylist()) == ["o-1", "o-4"]

    history = query(pg_url, f"SELECT rule, severity, success, unexpected_count, quarantined_rows, batch_outcome "
                            f"FROM {sql.dq_results} WHERE batch_id = 0")
    assert len(history) == len(quality.rules)
    failed = {h[0]: h[1:] for h in history if not h[2]}
    assert failed == {
        "orders.quantity.be_between": ("quarantine", False, 1, 1, "quarantined"),
        "orders.product_name.be_in_set": ("quarantine", False, 1, 1, "quarantined"),
        "orders.customer_id.match_regex": ("warn", False, 1, 0, "quarantined"),
    }

    [alert] = read_alerts(moto.client("sqs"), queue)
    body = json.loads(alert["Message"])
    assert alert["Subject"] == f"[sales-cdc] {JOB} batch 0: 3 of 5 events quarantined (60.0%)"
    assert body["kind"] == "quarantine_share" and body["job"] == JOB and body["batch_id"] == 0
    assert body["counts"] == {"events_read": 5, "quarantined_decode": 1, "quarantined_data_quality": 2,
                              "rows_upserted": 2}
    assert set(body["failed_rules"]) == set(failed)
    assert body["docs_url"].startswith("file://") and "/validations/orders/" in body["docs_url"]

    # a replayed batch (crash before the checkpoint commit) changes nothing and alerts nobody; it is found in
    # the ledger before any work (not validated again: no second docs page)
    before = [query(pg_url, f"SELECT count(*) FROM {t}") for t in (sql.target, sql.quarantine, sql.dq_results)]
    replay = handler(batch, 0)
    assert replay.merge.replayed and replay.dq_outcome == "replayed" and replay.merge.upserted_rows == 2
    assert [query(pg_url, f"SELECT count(*) FROM {t}") for t in (sql.target, sql.quarantine, sql.dq_results)] == before
    assert read_alerts(moto.client("sqs"), queue, wait_seconds=0) == []
    warehouse.close()

    # the Data Docs site: index + one validation page per suite and run, and it renders in a browser; its pages
    # are written after the commit, while a stream's next batch runs
    handler.docs_written()
    docs = tmp_path / "docs"
    assert (docs / "index.html").exists()
    pages = sorted(p.relative_to(docs).parts[:3] for p in docs.glob("validations/*/*/*/*.html"))
    assert pages == [("validations", "cdc_envelope", f"{JOB}-batch-0"), ("validations", "orders", f"{JOB}-batch-0")]
    assert_renders(docs / "gx_index.html", ["cdc_envelope", "orders", f"{JOB}-batch-0"])
    assert_renders(docs / "index.html", ["quarantined", "orders.quantity.be_between (quarantine)"])
    orders_page = sorted(docs.glob("validations/orders/*/*/*.html"))[0]
    assert_renders(orders_page, ["quantity", "product_name", "Toaster"])


def assert_renders(page: Path, texts: list[str]) -> None:
    """Open the page in headless Chromium (installed by ``make install`` from Debian), offline, and check the DOM."""
    dom = rendered_dom(page)
    for text in texts:
        assert text in dom, f"{text!r} not rendered in {page}"


# --- halt: nothing committed, checkpoint not advanced, alert, clear message, resumable ------------------
def write_batch_file(inbox: Path, name: str, lines: list[str], mtime: float) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / name
    path.write_text("\n".join(lines) + "\n")
    os.utime(path, (mtime, mtime))


def test_an_item_whose_latest_event_is_quarantined_keeps_its_history_as_its_row(spark, pg_url, db_schema, tmp_path):
    """The batch's earlier events of an item whose latest data quality quarantines are not applied to its row, so
    they are not versions either: in every history the item's current version stays the table's row."""
    entity = replace(ORDERS, history=True)
    sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=entity)
    warehouse = PostgresWarehouse(pg_url, sql, JOB)
    warehouse.ensure_tables()
    lake = Lake(C.LakeConfig(str(tmp_path / "lake")), JOB, entity)
    quality = DataQuality(C.DqConfig(expectations_dir=EXPECTATIONS), entity, JOB)
    handler = BatchHandler(warehouse=warehouse, lake=lake, quality=quality,
                           options=HandlerOptions(job_name=JOB, default_stream_id="s1", alert_quarantine_share=1.0))

    def modify(seq: int, quantity: int) -> str:
        return to_json_line(stream_record("MODIFY", seq, key="o-1", new=order("o-1", quantity=quantity),
                                          old=order("o-1"), entity=entity))

    def batch(*lines: str):
        return spark.createDataFrame([(x, "shard-0", str(i), None, None) for i, x in enumerate(lines)],
                                     S.SOURCE_SCHEMA)

    handler(batch(insert("o-1", 1), insert("o-2", 2)), 0)
    result = handler(batch(modify(3, 2), modify(4, 9), insert("o-3", 5), modify(6, 3).replace('"o-1"', '"o-2"')), 1)
    assert result.dq_quarantined == 1  # quantity 9 is out of range
    assert sorted(query(pg_url, f"SELECT orderid, quantity FROM {sql.target}")) == [("o-1", 1), ("o-2", 3), ("o-3", 1)]
    for rows in (query(pg_url, f"SELECT orderid, valid_from_sequence FROM {HistorySql(sql).table}"),
                 [(r["orderid"], r["valid_from_sequence"])
                  for r in DeltaTable(lake.history_uri).to_pyarrow_table().to_pylist()]):
        assert sorted((k, int(seq)) for k, seq in rows) == [("o-1", 1), ("o-2", 2), ("o-2", 6), ("o-3", 5)]
    warehouse.close()


def test_halt_leaves_warehouse_and_lake_unchanged_and_does_not_advance_the_checkpoint(
        spark, pg_url, db_schema, moto, alerts, tmp_path):
    topic, queue = alerts
    project = copy_project(tmp_path)  # the quantity range is a halt rule in this deployment
    edit_rule(project, "orders", is_quantity_between, lambda e: e["meta"].update(severity="halt"))
    inbox = tmp_path / "inbox"
    now = time.time()
    write_batch_file(inbox, "001.jsonl", [insert("o-1", 1), insert("o-2", 2)], now - 20)
    write_batch_file(inbox, "002.jsonl", [insert("o-3", 3), insert("o-4", 4, quantity=50)], now - 10)

    def config(expectations: Path) -> C.JobConfig:
        sinks = C.SinkConfig(C.WarehouseConfig(db_schema=db_schema), C.LakeConfig(str(tmp_path / "lake")))
        return C.JobConfig(ORDERS, JOB, sinks, C.DqConfig(expectations_dir=expectations, docs=C.DocsConfig(str(tmp_path / "docs"))),
                           C.AlertConfig(topic, moto.endpoint))

    stream = C.StreamConfig(C.FileSource(inbox, max_files_per_trigger=1), tmp_path / "checkpoint")

    from sales_cdc.job import run_stream

    sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS)
    with pytest.raises(DataQualityHalt) as halt:
        run_stream(spark, config(project), stream, pg_url)

    message = str(halt.value)
    assert "batch 1" in message and "orders.quantity.be_between" in message and "1 of 2 rows" in message
    assert "re-reads batch 1" in message
    assert sorted(r[0] for r in query(pg_url, f"SELECT orderid FROM {sql.target}")) == ["o-1", "o-2"]
    assert query(pg_url, f"SELECT batch_id FROM {sql.ledger}") == [(0,)]
    lake = Lake(C.LakeConfig(str(tmp_path / "lake")), JOB, ORDERS)
    assert DeltaTable(lake.raw_uri).to_pyarrow_table().num_rows == 2  # batch 1's raw events are not there either
    # ... though Spark's tasks wrote their files beside data quality, before the halt: no commit names them
    assert list(Path(lake.raw_uri).rglob(f"part-{1:08d}-*.parquet"))
    assert sorted(DeltaTable(lake.silver_uri).to_pyarrow_table().column("orderid").to_pylist()) == ["o-1", "o-2"]
    assert (tmp_path / "checkpoint" / "commits" / "0").exists()
    assert not (tmp_path / "checkpoint" / "commits" / "1").exists()
    assert (tmp_path / "checkpoint" / "offsets" / "1").exists()  # planned, so a restart re-reads the same files
    halted = query(pg_url, f"SELECT DISTINCT batch_outcome FROM {sql.dq_results} WHERE batch_id = 1")
    assert halted == [("halted",)]  # the verdict is recorded, nothing else of the batch

    [alert] = read_alerts(moto.client("sqs"), queue)
    assert alert["Subject"] == f"[sales-cdc] {JOB} batch 1: HALTED by orders.quantity.be_between"
    assert json.loads(alert["Message"])["kind"] == "halt"

    # resume as the message says: after review the rule goes back to quarantine; the same checkpoint re-reads batch 1
    run_stream(spark, config(EXPECTATIONS), stream, pg_url)
    assert sorted(r[0] for r in query(pg_url, f"SELECT orderid FROM {sql.target}")) == ["o-1", "o-2", "o-3"]
    assert query(pg_url, f"SELECT record_key, reason FROM {sql.quarantine}") == [("o-4", "orders.quantity.be_between")]
    assert sorted(query(pg_url, f"SELECT batch_id FROM {sql.ledger}")) == [(0,), (1,)]
    raw = DeltaTable(lake.raw_uri).to_pyarrow_table()
    assert sorted(raw.column("orderid").to_pylist()) == ["o-1", "o-2", "o-3", "o-4"]  # each record once


def test_dq_docs_command_prints_the_site(tmp_path, capsys):
    assert main(["dq-docs", "--docs-location", str(tmp_path / "none")]) == 1
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<html></html>")
    assert main(["dq-docs", "--docs-location", str(tmp_path / "site")]) == 0
    assert (tmp_path / "site" / "index.html").as_uri() in capsys.readouterr().out
    assert main(["dq-docs", "--docs-location", "s3://docs-bucket/dq", "--website-url",
                 "http://docs-bucket.s3-website-us-east-1.amazonaws.com/dq"]) == 0
    assert "http://docs-bucket.s3-website-us-east-1.amazonaws.com/dq/index.html" in capsys.readouterr().out


def test_pages_that_cannot_be_written_after_the_commit_leave_the_batch_committed_with_warning_lines_only(
        spark, pg_url, db_schema, tmp_path, caplog):
    """A batch's Data Docs pages are written after its commit, beside the next batch: a site that refuses them
    (here a folder that is a file) costs warning lines, not the batch, nor the next one."""
    sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS)
    warehouse = PostgresWarehouse(pg_url, sql, JOB)
    warehouse.ensure_tables()
    site = tmp_path / "site"
    quality = DataQuality(C.DqConfig(expectations_dir=EXPECTATIONS, docs=C.DocsConfig(str(site))), ORDERS, JOB)
    handler = BatchHandler(warehouse=warehouse, quality=quality,
                           options=HandlerOptions(job_name=JOB, default_stream_id="s1", alert_quarantine_share=1.0))
    shutil.rmtree(site, ignore_errors=True)
    site.write_text("not a folder")
    for batch_id, seq in enumerate([1, 2]):
        lines = [insert(f"o-{seq}", seq)]
        result = handler(spark.createDataFrame([(x, "shard-0", str(i), None, None) for i, x in enumerate(lines)],
                                               S.SOURCE_SCHEMA), batch_id)
        assert result.merge.upserted_rows == 1
    handler.docs_written()
    warehouse.close()
    assert sorted(r[0] for r in query(pg_url, f"SELECT orderid FROM {sql.target}")) == ["o-1", "o-2"]
    assert [r[0] for r in query(pg_url, f"SELECT batch_id FROM {sql.ledger} ORDER BY 1")] == [0, 1]
    # a line for its validation pages and one for its summary page per batch; GX's own error records (a traceback
    # each) kept out of the log
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w.split(" (")[0] for w in warnings] == [f"docs: could not write the {pages} of batch {b}"
                                                    for b in (0, 1) for pages in ("pages", "summary page")]
    assert all("\n" not in w and "Not a directory" in w for w in warnings)
