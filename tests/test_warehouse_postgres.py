"""The batch handler against a real PostgreSQL: merge contract, ledger, sequence guard, deletes."""

from __future__ import annotations

from dataclasses import replace

import psycopg
import pyarrow as pa
import pytest
from pyspark.sql import functions as F

from sales_cdc import schema as S
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.sql_history import HistorySql
from sales_cdc.warehouse import PostgresWarehouse, postgres
from sales_cdc.warehouse.base import RowsRefused
from sales_cdc_local.records import stream_record, to_json_line
from tests.helpers import ORDERS, insert, modify, remove, source_rows


class Harness:
    def __init__(self, spark, url, db_schema, soft_delete=False, history=False):
        self.spark, self.url = spark, url
        self.sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, soft_delete=soft_delete,
                            entity=replace(ORDERS, history=history))
        self.warehouse = PostgresWarehouse(url, self.sql, job_name="test-job")
        self.warehouse.ensure_tables()
        self.handler = BatchHandler(warehouse=self.warehouse, options=HandlerOptions(default_stream_id="stream-a"))

    def batch(self, batch_id, *records):
        return self.handler(source_rows(self.spark, *records), batch_id)

    def query(self, sql, params=None):
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchall()

    def state(self):
        """{orderid: (quantity, price)} of the current rows."""
        rows = self.query(f"SELECT orderid, quantity, price FROM {self.sql.target}"
                          + (" WHERE NOT is_deleted" if self.sql.soft_delete else ""))
        return {k: (q, str(p)) for k, q, p in rows}

    def snapshot(self, table):
        return self.query(f"SELECT * FROM {table} ORDER BY 1, 2, 3")


@pytest.fixture
def wh(spark, pg_url, db_schema):
    harness = Harness(spark, pg_url, db_schema)
    yield harness
    harness.warehouse.close()


def test_inserts_updates_deletes(wh):
    result = wh.batch(0, insert("o1", 1), insert("o2", 2), insert("o3", 3))
    assert (result.merge.upserted_rows, result.merge.deleted_rows) == (3, 0)
    result = wh.batch(1, modify("o1", 10, quantity=4), remove("o2", 11))
    assert (result.merge.upserted_rows, result.merge.deleted_rows) == (1, 1)
    assert wh.state() == {"o1": (4, "10.00"), "o3": (1, "10.00")}


def test_latest_event_of_a_batch_wins(wh):
    wh.batch(0, insert("o1", 1), modify("o1", 3, quantity=3), modify("o1", 2, quantity=2), modify("o1", 3, quantity=3))
    assert wh.state() == {"o1": (3, "10.00")}
    assert wh.query(f"SELECT cdc_sequence FROM {wh.sql.target}") == [("3".rjust(40, "0"),)]


def test_replaying_a_batch_changes_nothing(wh):
    batch = [insert("o1", 1), insert("o2", 2), "not json"]
    first = wh.batch(0, *batch)
    before = [wh.snapshot(t) for t in (wh.sql.target, wh.sql.quarantine, wh.sql.ledger)]
    replay = wh.batch(0, *batch)
    after = [wh.snapshot(t) for t in (wh.sql.target, wh.sql.quarantine, wh.sql.ledger)]
    assert not first.merge.replayed and replay.merge.replayed
    assert after == before  # same rows, same loaded_at, quarantine not doubled, one ledger row
    assert replay.merge.upserted_rows == first.merge.upserted_rows == 2  # counts read back from the ledger


def test_a_replay_after_a_restart_is_found_in_the_ledger_before_it_is_read(wh):
    first = wh.batch(0, insert("o1", 1))
    restarted = BatchHandler(warehouse=wh.warehouse, options=HandlerOptions(default_stream_id="stream-a"))
    unreadable = source_rows(wh.spark, insert("o1", 1)).select(*[  # reading any row of it fails
        F.raise_error(F.lit("the replayed batch was read")).cast(f.dataType).alias(f.name)
        for f in S.SOURCE_SCHEMA.fields])
    replay = restarted(unreadable, 0)
    assert replay.merge.replayed and replay.dq_outcome == "replayed"
    assert replay.merge.upserted_rows == first.merge.upserted_rows == 1
    assert restarted(source_rows(wh.spark, insert("o2", 2)), 1).merge.upserted_rows == 1  # then on as usual
    assert set(wh.state()) == {"o1", "o2"}


def test_same_batch_id_from_a_new_checkpoint_is_not_skipped(spark, pg_url, db_schema):
    harness = Harness(spark, pg_url, db_schema)
    harness.batch(0, insert("o1", 1))
    harness.handler.options = replace(harness.handler.options, default_stream_id="stream-b")  # a new query id
    result = harness.batch(0, insert("o2", 2))
    assert not result.merge.replayed
    assert set(harness.state()) == {"o1", "o2"}


def test_an_older_event_in_a_later_batch_does_not_overwrite(wh):
    wh.batch(0, insert("o1", 100, quantity=1))
    wh.batch(1, modify("o1", 300, quantity=3))
    result = wh.batch(2, modify("o1", 200, quantity=2))
    assert result.merge.stale_rows == 1
    assert wh.state() == {"o1": (3, "10.00")}


def test_sequence_guard_is_numeric_not_lexicographic(wh):
    wh.batch(0, insert("o1", "9" * 21, quantity=1))
    wh.batch(1, modify("o1", "1" + "0" * 21, quantity=2))  # 22 digits: newer, although "1..." < "9..."
    assert wh.state() == {"o1": (2, "10.00")}


def test_delete_then_reinsert_and_late_events_do_not_resurrect(wh):
    wh.batch(0, insert("o1", 1))
    wh.batch(1, remove("o1", 5))
    assert wh.state() == {}
    wh.batch(2, modify("o1", 3, quantity=9))  # older than the delete: must not bring the order back
    assert wh.state() == {}
    wh.batch(3, insert("o1", 7, quantity=2))  # a real re-insert
    assert wh.state() == {"o1": (2, "10.00")}
    wh.batch(4, remove("o1", 6))  # a late delete, older than the re-insert
    assert wh.state() == {"o1": (2, "10.00")}


def test_soft_delete_keeps_the_row_flagged(spark, pg_url, db_schema):
    soft = Harness(spark, pg_url, db_schema, soft_delete=True)
    soft.batch(0, insert("o1", 1, quantity=3))
    soft.batch(1, remove("o1", 2, quantity=3))
    rows = soft.query(f"SELECT orderid, quantity, is_deleted, deleted_at IS NOT NULL FROM {soft.sql.target}")
    assert rows == [("o1", 3, True, True)]
    soft.batch(2, modify("o1", 1, quantity=8))  # stale
    soft.batch(3, insert("o1", 4, quantity=5))  # re-insert
    rows = soft.query(f"SELECT orderid, quantity, is_deleted, deleted_at FROM {soft.sql.target}")
    assert rows == [("o1", 5, False, None)]
    soft.warehouse.close()


def test_quarantine_rows_are_stored_with_reason_and_payload(wh):
    bad = insert("o2", 2)
    bad["dynamodb"]["NewImage"]["price"] = {"N": "cheap"}
    result = wh.batch(4, insert("o1", 1), bad, "{oops")
    assert result.quarantined == 2 and result.merge.quarantined_rows == 2
    rows = wh.query(f"SELECT cdc_batch_id, stage, record_key, reason, payload FROM {wh.sql.quarantine}"
                    " ORDER BY record_key NULLS LAST")
    assert rows == [
        (4, "decode", "o2", "NewImage.price: N value 'cheap' is not a number (or out of range)", to_json_line(bad)),
        (4, "decode", None, "payload is not valid JSON", "{oops"),
    ]
    assert set(wh.state()) == {"o1"}


def test_empty_strings_and_nulls_survive_copy(wh):
    wh.batch(0, stream_record("INSERT", 1, key="o1", new={"orderid": "o1", "customer_name": "", "quantity": 1}, entity=ORDERS))
    assert wh.query(f"SELECT customer_name, customer_id, price FROM {wh.sql.target}") == [("", None, None)]


def test_a_batch_is_copied_in_pieces_each_row_once(wh, monkeypatch):
    monkeypatch.setattr(postgres, "COPY_ROWS", 2)  # five state rows: pieces of 2, 2 and 1
    empty = {"orderid": "o0", "customer_name": "", "quantity": 1}
    wh.batch(0, stream_record("INSERT", 1, key="o0", new=empty, entity=ORDERS),
             *(insert(f"o{n}", n + 1, quantity=n) for n in range(1, 5)))
    assert sorted(wh.query(f"SELECT orderid, customer_name, quantity FROM {wh.sql.target}")) == [
        ("o0", "", 1), *((f"o{n}", None, n) for n in range(1, 5))]  # "" and NULL kept apart


def test_unmapped_attributes_are_stored(wh):
    wh.batch(0, insert("o1", 1, gift_note="hi", tags={"b", "a"}))
    assert wh.query(f"SELECT unmapped_attributes::jsonb FROM {wh.sql.target}") == [
        ({"gift_note": {"S": "hi"}, "tags": {"SS": ["a", "b"]}},)]


def test_a_failed_batch_commits_nothing_and_the_next_one_works(wh):
    wh.batch(0, insert("o1", 1))
    bad_state = pa.table({c: pa.array(["x"], pa.string()) for c in wh.sql.stage_columns})  # 'x' is no INTEGER
    empty_quarantine = pa.table({c: pa.array([], pa.string()) for c in wh.sql.quarantine_columns})
    with pytest.raises(RowsRefused) as refused:
        wh.warehouse.merge_batch(batch_id=1, stream_id="stream-a", state=bad_state, quarantine=empty_quarantine)
    assert list(refused.value.rows) == [0] and "integer" in refused.value.rows[0]
    assert isinstance(refused.value.__cause__, psycopg.errors.DataError)
    assert wh.query(f"SELECT batch_id FROM {wh.sql.ledger}") == [(0,)]
    wh.batch(1, modify("o1", 2, quantity=6))
    assert wh.state() == {"o1": (6, "10.00")}


def test_a_batch_releases_the_data_it_checkpointed(wh):
    """The handler checkpoints the decoded batch and the state; a long-running stream must not keep them."""
    persisted = wh.spark.sparkContext._jsc.getPersistentRDDs
    before = set(persisted().keySet())
    wh.batch(0, insert("o1", 1), modify("o1", 2, quantity=2), "not json")
    assert set(persisted().keySet()) == before
    with psycopg.connect(wh.url, autocommit=True) as conn:  # a batch that fails half-way releases them too
        conn.execute(f"DROP TABLE {wh.sql.ledger}")
    with pytest.raises(psycopg.errors.UndefinedTable):
        wh.batch(1, insert("o2", 3))
    assert set(persisted().keySet()) == before


@pytest.mark.parametrize("history", [False, True], ids=["current", "with-history"])
def test_rows_the_warehouse_refuses_are_quarantined_and_the_rest_of_the_batch_lands(spark, pg_url, db_schema,
                                                                                     history):
    """A constraint the user added (or any value PostgreSQL refuses): the refused rows are found by halving
    and quarantined with the warehouse's reason; the batch commits without them; the stream moves on. With a
    history, a refused row leaves no version either: the history's current versions are the table."""
    wh = Harness(spark, pg_url, db_schema, history=history)
    with psycopg.connect(wh.url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {wh.sql.target} ADD CONSTRAINT no_thirteen CHECK (quantity <> 13)")
    records = [insert(f"o{i}", i + 1, quantity=13 if i == 5 else 1) for i in range(8)]
    result = wh.batch(0, *records, modify("o2", 20, quantity=13))  # o2's insert: superseded, a version of its own
    assert set(wh.state()) == {f"o{i}" for i in range(8) if i not in (2, 5)}
    quarantined = wh.query(f"SELECT record_key, stage, reason, payload FROM {wh.sql.quarantine} ORDER BY 1")
    assert [(k, stage) for k, stage, _, _ in quarantined] == [("o2", "warehouse"), ("o5", "warehouse")]
    assert all("no_thirteen" in reason and '"o' in payload for _, _, reason, payload in quarantined)
    assert result.merge.upserted_rows == 6 and result.merge.quarantined_rows == 2
    assert wh.batch(1, insert("o9", 20)).merge.upserted_rows == 1  # the next batch goes on as usual
    if history:
        versions = wh.query(f"SELECT orderid, is_current FROM {HistorySql(wh.sql).table}")
        assert sorted(versions) == sorted((k, True) for k in [*wh.state()])
    wh.warehouse.close()
