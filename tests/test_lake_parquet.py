"""Parquet lake layers written by Spark itself (local folder): replay-safe appends, snapshot silver with
the warehouse's sequence guard, deletes, and the same content as the Delta path."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from sales_cdc import schema as S
from sales_cdc.config import LakeConfig
from sales_cdc.lake import Lake, maintain
from sales_cdc.lake.parquet import BATCH_PARTITION, latest_silver_path, silver_commits
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.warehouse import PostgresWarehouse
from sales_cdc_local.parser import DEFAULT_EXPECTED, DEFAULT_FIXTURES
from sales_cdc_local.records import stream_record, to_json_line
from tests.helpers import ORDERS, insert, modify, order, remove, source_rows

pytestmark = pytest.mark.slow


class ParquetHarness:
    def __init__(self, spark, pg_url, db_schema, root, soft_delete=False):
        config = LakeConfig(str(root), raw_format="parquet", silver_format="parquet", quarantine_format="parquet")
        self.lake = Lake(config, "test-job", ORDERS, soft_delete)
        self.lake.check(spark)
        self.warehouse = PostgresWarehouse(pg_url, MergeSql(Dialect.POSTGRES, db_schema=db_schema, soft_delete=soft_delete, entity=ORDERS),
                                           job_name="test-job")
        self.warehouse.ensure_tables()
        self.handler = BatchHandler(warehouse=self.warehouse, lake=self.lake, options=HandlerOptions(default_stream_id="s1"))
        self.spark = spark

    def batch(self, batch_id, *records):
        return self.handler(source_rows(self.spark, *records), batch_id)

    def silver(self) -> dict:
        rows = self.spark.read.parquet(latest_silver_path(self.spark, self.lake.silver_uri)).collect()
        if self.lake.soft_delete:
            rows = [r for r in rows if not r[S.IS_DELETED]]
        return {r["orderid"]: r["quantity"] for r in rows}

    def raw_rows(self) -> list:
        return self.spark.read.parquet(self.lake.raw_uri).select(S.CDC_EVENT_ID, BATCH_PARTITION).collect()


@pytest.fixture
def parquet_lake(spark, pg_url, db_schema, tmp_path):
    harness = ParquetHarness(spark, pg_url, db_schema, tmp_path / "lake")
    yield harness
    harness.warehouse.close()


def test_replaying_a_batch_changes_no_parquet_layer(parquet_lake):
    parquet_lake.batch(0, insert("o1", 1), insert("o2", 2), "garbage")
    parquet_lake.batch(1, modify("o1", 3, quantity=5))
    raw, silver = sorted(parquet_lake.raw_rows(), key=str), parquet_lake.silver()
    commits = silver_commits(parquet_lake.spark, parquet_lake.lake.silver_uri)

    parquet_lake.batch(1, modify("o1", 3, quantity=5))  # Spark re-runs batch 1 after a crash

    assert sorted(parquet_lake.raw_rows(), key=str) == raw and len(raw) == 4
    assert parquet_lake.silver() == silver == {"o1": 5, "o2": 1}
    assert silver_commits(parquet_lake.spark, parquet_lake.lake.silver_uri) == commits
    quarantine = parquet_lake.spark.read.parquet(parquet_lake.lake.quarantine_uri).collect()
    assert [(q["stage"], q[BATCH_PARTITION]) for q in quarantine] == [("decode", "s1-0")]


def test_records_raw_holds_under_another_stream_id_are_found_in_their_days_folders(parquet_lake):
    """A reset checkpoint (or a backfill run again) delivers records the raw layer holds under another stream id:
    each is looked up in its event date's folder, and only the new record is added."""
    def on(day: int, orderid: str) -> dict:
        return stream_record("INSERT", day, key=orderid, new=order(orderid), entity=ORDERS,
                             event_time=datetime(2026, 11, day, tzinfo=UTC))

    parquet_lake.batch(0, on(1, "o1"), on(2, "o2"))
    after_reset = BatchHandler(warehouse=parquet_lake.warehouse, lake=parquet_lake.lake,
                               options=HandlerOptions(default_stream_id="s2"))
    after_reset(source_rows(parquet_lake.spark, on(1, "o1"), on(2, "o2"), on(3, "o3")), 0)

    rows = parquet_lake.raw_rows()
    assert len({r[S.CDC_EVENT_ID] for r in rows}) == len(rows) == 3
    assert sorted(r[BATCH_PARTITION] for r in rows) == ["s1-0", "s1-0", "s2-0"]


def test_out_of_order_events_and_deletes_follow_the_sequence_guard(parquet_lake):
    parquet_lake.batch(0, insert("o1", 10, quantity=1), insert("o2", 11), insert("o3", 12))
    parquet_lake.batch(1, modify("o1", 5, quantity=4), remove("o2", 20))  # o1's event is older: ignored
    parquet_lake.batch(2, insert("o2", 15, quantity=3))  # older than the delete: must not resurrect o2
    parquet_lake.batch(3, insert("o3", 30, quantity=2))
    assert parquet_lake.silver() == {"o1": 1, "o3": 2}


def test_a_crash_before_the_commit_file_is_healed_by_the_replay(parquet_lake):
    parquet_lake.batch(0, insert("o1", 1))
    spark, uri = parquet_lake.spark, parquet_lake.lake.silver_uri
    # batch 1 wrote its snapshot, then the process died before the commit file
    state = spark.read.parquet(latest_silver_path(spark, uri))
    state.write.mode("overwrite").parquet(f"{uri}/snapshot=000000002/state")
    assert len(silver_commits(spark, uri)) == 1  # the orphan is invisible to readers
    parquet_lake.batch(1, modify("o1", 2, quantity=3))
    assert parquet_lake.silver() == {"o1": 3}
    assert [c.batch_id for c in silver_commits(spark, uri)] == [0, 1]


def test_soft_delete_keeps_flagged_rows(spark, pg_url, db_schema, tmp_path):
    harness = ParquetHarness(spark, pg_url, db_schema, tmp_path / "lake", soft_delete=True)
    harness.batch(0, insert("o1", 1), insert("o2", 2))
    harness.batch(1, remove("o1", 3))
    rows = {r["orderid"]: r[S.IS_DELETED] for r in spark.read.parquet(
        latest_silver_path(spark, harness.lake.silver_uri)).collect()}
    assert rows == {"o1": True, "o2": False}
    harness.warehouse.close()


def test_parquet_silver_equals_delta_silver_and_maintenance_prunes_snapshots(parquet_lake, spark, tmp_path):
    batches = [(insert("o1", 1), insert("o2", 2)), (modify("o1", 3, quantity=2), remove("o2", 4)),
               (insert("o3", 5, quantity=4),)]
    delta = Lake(LakeConfig(str(tmp_path / "delta")), "test-job", ORDERS)
    handler = BatchHandler(warehouse=parquet_lake.warehouse, lake=delta, options=HandlerOptions(default_stream_id="s2"))
    for batch_id, records in enumerate(batches):
        parquet_lake.batch(batch_id, *records)
        handler(spark.createDataFrame([(to_json_line(r), "f", None, None, None) for r in records], S.SOURCE_SCHEMA),
                batch_id)
    delta_rows = {r["orderid"]: r["quantity"] for r in delta.table(delta.silver_uri).to_pyarrow_table().to_pylist()}
    assert parquet_lake.silver() == delta_rows == {"o1": 2, "o3": 4}

    [result] = maintain(parquet_lake.lake, spark=spark, keep_snapshots=1)
    assert result.files_vacuumed == 2  # two older snapshots deleted; the latest still reads
    assert parquet_lake.silver() == delta_rows


def test_parquet_needs_a_filesystem_spark_knows(spark):
    lake = Lake(LakeConfig("s3://bucket/lake", silver_format="parquet"), "test-job", ORDERS)
    with pytest.raises(ValueError, match="Spark cannot write Parquet to s3://bucket/lake"):
        lake.check(spark)


def test_run_command_writes_parquet_layers(pg_url, db_schema, tmp_path, fixtures_dir):
    from sales_cdc_local.cli import main, stage_fixtures

    stage_fixtures(DEFAULT_FIXTURES, tmp_path / "inbox")
    lake = tmp_path / "lake"
    assert main(["run", "--source-dir", str(tmp_path / "inbox"), "--checkpoint-dir", str(tmp_path / "checkpoint"),
                 "--warehouse-url", pg_url, "--db-schema", db_schema, "--lake-root", str(lake), "--no-dq",
                 "--raw-format", "parquet", "--silver-format", "parquet", "--quarantine-format", "parquet"]) == 0
    assert list((lake / "raw" / "orders_events").glob("event_date=*/cdc_batch=*/*.parquet"))
    assert list((lake / "quarantine" / "orders").glob("cdc_batch=*/*.parquet"))
    [commit] = (lake / "silver" / "orders" / "_commits").glob("*.json")  # one micro-batch: all files at once
    import pyarrow.parquet as pq

    state = pq.read_table(json.loads(commit.read_text())["state_path"])
    assert sorted(state.column("orderid").to_pylist()) == sorted(
        json.loads(line)["orderid"] for line in DEFAULT_EXPECTED.read_text().splitlines())
