"""The Delta lake sink on a real moto S3 server (delta-rs): replay, sequence guard, deletes, quarantine."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from deltalake import DeltaTable, WriterProperties, write_deltalake

from sales_cdc import schema as S
from sales_cdc.config import LakeConfig
from sales_cdc.lake import Lake, moto_storage_options
from sales_cdc.lake.delta import DeltaSilver, DeltaTables
from sales_cdc.merge_rules import MergeRules
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.warehouse import PostgresWarehouse
from tests.helpers import ORDERS, insert, modify, remove, source_rows


class LakeHarness:
    def __init__(self, spark, moto, pg_url, db_schema, soft_delete=False):
        self.bucket = bucket = f"lake-{uuid.uuid4().hex[:8]}"
        moto.client("s3").create_bucket(Bucket=bucket)
        self.options = moto_storage_options(moto.endpoint)
        self.lake = Lake(LakeConfig(f"s3://{bucket}/lake", self.options), "test-job", ORDERS, soft_delete=soft_delete)
        sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, soft_delete=soft_delete, entity=ORDERS)
        self.warehouse = PostgresWarehouse(pg_url, sql, job_name="test-job")
        self.warehouse.ensure_tables()
        self.handler = BatchHandler(warehouse=self.warehouse, lake=self.lake, options=HandlerOptions(default_stream_id="s1"))
        self.spark = spark

    def batch(self, batch_id, *records):
        return self.handler(source_rows(self.spark, *records), batch_id)

    def table(self, uri) -> DeltaTable:
        return DeltaTable(uri, storage_options=self.options)

    def silver(self) -> dict:
        rows = self.table(self.lake.silver_uri).to_pyarrow_table().to_pylist()
        if self.lake.soft_delete:
            rows = [r for r in rows if not r[S.IS_DELETED]]
        return {r["orderid"]: r["quantity"] for r in rows}


@pytest.fixture
def lake(spark, moto, pg_url, db_schema):
    harness = LakeHarness(spark, moto, pg_url, db_schema)
    yield harness
    harness.warehouse.close()


def test_raw_layer_keeps_every_record_partitioned_by_event_date(lake):
    lake.batch(0, insert("o1", 1), modify("o1", 2, quantity=2), "{bad json")
    raw = lake.table(lake.lake.raw_uri)
    rows = sorted(raw.to_pyarrow_table().to_pylist(), key=lambda r: r[S.PAYLOAD])
    assert len(rows) == 3 and {r[S.CDC_BATCH_ID] for r in rows} == {0}
    assert [r[S.DECODE_ERRORS] for r in rows].count(None) == 2
    assert raw.metadata().partition_columns == [S.EVENT_DATE]
    assert [f.name for f in raw.schema().fields] == [f.name for f in S.raw_fields(ORDERS)]


def test_replaying_a_batch_leaves_every_table_at_the_same_version_and_content(lake):
    batch = [insert("o1", 1), insert("o2", 2), remove("o2", 3), "not json"]
    lake.batch(0, *batch)
    uris = [lake.lake.raw_uri, lake.lake.silver_uri, lake.lake.tombstones_uri, lake.lake.quarantine_uri]
    before = [(lake.table(u).version(), lake.table(u).to_pyarrow_table().to_pylist()) for u in uris]
    lake.batch(0, *batch)
    after = [(lake.table(u).version(), lake.table(u).to_pyarrow_table().to_pylist()) for u in uris]
    assert after == before


def test_a_lake_failure_commits_nothing_in_the_warehouse_and_the_retry_writes_both(lake, moto):
    """The lake is written while the warehouse merges; the warehouse commits only once the lake has the batch."""
    moto.client("s3").delete_bucket(Bucket=lake.bucket)  # the lake's bucket is gone: every lake write fails
    with pytest.raises(OSError, match=r"(?i)bucket"):
        lake.batch(0, insert("o1", 1))
    ledger = f"SELECT count(*) FROM {lake.warehouse.sql.ledger}"
    target = f"SELECT count(*) FROM {lake.warehouse.sql.target}"
    assert lake.warehouse.conn.execute(ledger).fetchone() == lake.warehouse.conn.execute(target).fetchone() == (0,)
    moto.client("s3").create_bucket(Bucket=lake.bucket)
    lake.batch(0, insert("o1", 1))  # Spark's retry of the batch
    assert lake.silver() == {"o1": 1}
    assert lake.warehouse.conn.execute(target).fetchone() == (1,)


def test_out_of_order_event_does_not_overwrite_silver(lake):
    lake.batch(0, insert("o1", 100, quantity=1))
    lake.batch(1, modify("o1", 300, quantity=3))
    lake.batch(2, modify("o1", 200, quantity=2))
    assert lake.silver() == {"o1": 3}


def test_deletes_reinserts_and_late_events(lake):
    lake.batch(0, insert("o1", 1), insert("o2", 2))
    lake.batch(1, remove("o1", 5))
    assert lake.silver() == {"o2": 1}
    lake.batch(2, modify("o1", 3, quantity=9))  # older than the delete: no resurrection
    assert lake.silver() == {"o2": 1}
    lake.batch(3, insert("o1", 7, quantity=4))
    assert lake.silver() == {"o1": 4, "o2": 1}
    tombstones = lake.table(lake.lake.tombstones_uri).to_pyarrow_table().to_pylist()
    assert tombstones == []  # the re-insert cleared it


def test_soft_delete_in_the_lake(spark, moto, pg_url, db_schema):
    soft = LakeHarness(spark, moto, pg_url, db_schema, soft_delete=True)
    soft.batch(0, insert("o1", 1, quantity=2))
    soft.batch(1, remove("o1", 2, quantity=2))
    rows = soft.table(soft.lake.silver_uri).to_pyarrow_table().to_pylist()
    assert [(r["orderid"], r[S.IS_DELETED], r[S.DELETED_AT] is not None) for r in rows] == [("o1", True, True)]
    soft.warehouse.close()


def test_quarantine_lands_in_the_lake_with_reasons(lake):
    bad = insert("o2", 2)
    bad["dynamodb"]["NewImage"]["quantity"] = {"N": "1.5"}
    lake.batch(3, insert("o1", 1), bad)
    rows = lake.table(lake.lake.quarantine_uri).to_pyarrow_table().to_pylist()
    assert [(r["record_key"], r[S.CDC_BATCH_ID], r["reason"]) for r in rows] == [
        ("o2", 3, "NewImage.quantity: N value '1.5' is not exactly representable as INT")]


def test_silver_equals_the_warehouse(lake):
    lake.batch(0, insert("o1", 1), insert("o2", 2), insert("o3", 3))
    lake.batch(1, modify("o1", 4, quantity=5), remove("o3", 5))
    warehouse = dict(lake.warehouse.conn.execute(
        f"SELECT orderid, quantity FROM {lake.warehouse.sql.target}").fetchall())
    assert lake.silver() == warehouse == {"o1": 5, "o2": 1}


def test_compaction_reduces_files_without_changing_content(lake):
    from sales_cdc.lake import maintain

    for batch_id in range(4):
        lake.batch(batch_id, insert(f"o{batch_id}", batch_id + 1), modify("o0", 10 + batch_id, quantity=batch_id + 1))
    raw = lake.table(lake.lake.raw_uri)
    before_rows = sorted(raw.to_pyarrow_table().to_pylist(), key=lambda r: r[S.PAYLOAD])
    before_files = len(raw.file_uris())
    results = {r.table: r for r in maintain(lake.lake, retention_hours=0)}
    raw = lake.table(lake.lake.raw_uri)
    assert len(raw.file_uris()) < before_files == results[lake.lake.raw_uri].files_before
    assert sorted(raw.to_pyarrow_table().to_pylist(), key=lambda r: r[S.PAYLOAD]) == before_rows
    assert results[lake.lake.raw_uri].files_vacuumed >= before_files - 1  # the compacted small files are gone
    assert lake.silver() == {"o0": 4, "o1": 1, "o2": 1, "o3": 1}


def test_the_sink_keeps_its_tables_open_and_sees_commits_of_other_writers(lake):
    """Tables are loaded once and brought up to date each batch; a compaction by the maintenance job (another
    writer) in between is picked up, and the next batch lands on top of it."""
    from sales_cdc.lake import maintain

    lake.batch(0, insert("o1", 1))
    lake.batch(1, modify("o1", 2, quantity=2))
    raw_table = lake.lake.table(lake.lake.raw_uri)
    other_writer = Lake(lake.lake.config, "maintenance", ORDERS)
    maintain(other_writer, retention_hours=0)
    compacted = other_writer.table(lake.lake.raw_uri).version()
    lake.batch(2, insert("o2", 3))
    assert lake.lake.table(lake.lake.raw_uri) is raw_table  # the same object, brought up to date
    assert raw_table.version() == compacted + 1 == DeltaTable(lake.lake.raw_uri, storage_options=lake.options).version()
    assert sorted(r[S.CDC_BATCH_ID] for r in raw_table.to_pyarrow_table().to_pylist()) == [0, 1, 2]
    assert lake.silver() == {"o1": 2, "o2": 1}


def test_a_tombstone_in_a_batch_does_not_drop_the_rows_of_other_keys(lake):
    """Regression: the tombstone filter dropped every staged row whose key had no tombstone (``true OR
    null`` is null in non-Kleene logic) as soon as any key in the batch had one."""
    lake.batch(0, insert("o1", 1), insert("o2", 2))
    lake.batch(1, remove("o1", 3))
    lake.batch(2, insert("o1", 4, quantity=4), modify("o2", 5, quantity=9))
    assert lake.silver() == {"o1": 4, "o2": 9}
    assert lake.table(lake.lake.tombstones_uri).to_pyarrow_table().num_rows == 0


def test_a_late_remove_older_than_the_live_row_leaves_no_tombstone(lake):
    lake.batch(0, insert("o1", 1), modify("o1", 3, quantity=3))
    lake.batch(1, remove("o1", 2))  # older than the stored row: deletes nothing
    assert lake.silver() == {"o1": 3}
    assert lake.table(lake.lake.tombstones_uri).to_pyarrow_table().num_rows == 0
    lake.batch(1, remove("o1", 2))  # and a replay of it neither
    assert lake.table(lake.lake.tombstones_uri).to_pyarrow_table().num_rows == 0


def test_rule_one_against_a_stored_table_reads_it_a_row_group_at_a_time(tmp_path):
    """The sequence guard against a stored table (silver, its tombstones) keeps the batch's rows whose key has no
    stored row or an older one, whichever row group of the table the key is in; a batch nothing outranks comes back
    as it is (not copied)."""
    def seq(n: int) -> str:
        return str(n).zfill(S.SEQUENCE_WIDTH)

    key, stored_uri = ORDERS.keys[0], str(tmp_path / "stored")
    write_deltalake(stored_uri, pa.table({key: [f"o{i}" for i in range(10)], S.CDC_SEQUENCE: [seq(5)] * 10}),
                    writer_properties=WriterProperties(max_row_group_size=2))  # five row groups
    silver = DeltaSilver(DeltaTables(LakeConfig(str(tmp_path)), "test"), MergeRules(ORDERS), str(tmp_path / "s"))
    batch = pa.table({key: ["o1", "o2", "o3", "o42", "o9"], S.CDC_SEQUENCE: [seq(n) for n in (3, 5, 7, 1, 4)],
                      "quantity": [1, 2, 3, 4, 5]})
    kept = silver._newer_than(batch, stored_uri)
    assert kept.to_pylist() == [{key: "o3", S.CDC_SEQUENCE: seq(7), "quantity": 3},
                                {key: "o42", S.CDC_SEQUENCE: seq(1), "quantity": 4}]
    newer = batch.slice(2, 2)
    assert silver._newer_than(newer, stored_uri) is newer
