"""Dedupe, event -> state projection and raw rows (chispa, real Spark)."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from sales_cdc import runtime, transforms
from sales_cdc import schema as S
from sales_cdc.decode import decode_pipe_records
from sales_cdc.sources.files import file_batch
from sales_cdc.sources.snapshot import snapshot_record
from sales_cdc.transforms import CONFLICT, latest_per_key, ranked, to_raw_rows, to_state_rows
from sales_cdc_local.records import to_json_line
from tests.helpers import ORDERS, insert, modify, source_rows

EVENT_COLUMNS = ("orderid string, cdc_event_id string, cdc_sequence string, expected_winner boolean, payload string, "
                 "cdc_event_time timestamp")


def pad(sequence: str) -> str:
    return sequence.rjust(S.SEQUENCE_WIDTH, "0")


def test_latest_per_key_compares_sequences_numerically(spark):
    rows = [
        ("o1", "e1", pad("9" * 21), False),       # longer-looking string, smaller number
        ("o1", "e2", pad("1" + "0" * 21), True),
        ("o2", "e3", pad("5"), False),
        ("o2", "e4", pad("40"), True),
        ("o3", "e5", pad("7"), True),             # single event
    ]
    events = spark.createDataFrame([(*r, f"record {r[1]}", None) for r in rows], EVENT_COLUMNS)
    actual = latest_per_key(events, ORDERS.keys).select("orderid", "cdc_event_id")
    expected = events.where("expected_winner").select("orderid", "cdc_event_id")
    assert_df_equality(actual, expected, ignore_row_order=True)


def test_a_redelivery_gives_one_row_and_two_records_with_one_sequence_are_passed_over(spark):
    rows = [
        ("o1", "e1", pad("10"), True, "record e1"),
        ("o1", "e1", pad("10"), True, "record e1"),  # the same record delivered twice
        ("o2", "a", pad("10"), False, "record a"),
        ("o2", "b", pad("10"), False, "record b"),   # two records, one sequence: no order, neither applies
        ("o2", "c", pad("9"), True, "record c"),     # the latest event that can be ordered applies
        ("o3", "x", pad("5"), False, "record x"),
        ("o3", "y", pad("5"), False, "record y"),    # nothing else: the item keeps what is stored
    ]
    events = spark.createDataFrame([(*r, None) for r in rows], EVENT_COLUMNS)
    actual = latest_per_key(events, ORDERS.keys).select("orderid", "cdc_event_id")
    expected = spark.createDataFrame([("o1", "e1"), ("o2", "c")], "orderid string, cdc_event_id string")
    assert_df_equality(actual, expected, ignore_row_order=True)
    flagged = ranked(events, ORDERS.keys).where(CONFLICT).select("cdc_event_id").distinct()
    assert sorted(r[0] for r in flagged.collect()) == ["a", "b", "x", "y"]


def test_state_rows_take_new_image_for_upserts_and_old_image_for_removes(spark):
    entity = S.EntitySchema("mini", ("orderid",), (ORDERS.field("orderid"), ORDERS.field("price")))
    when = datetime(2026, 11, 25, 9, 0)
    events = spark.createDataFrame(
        [("e1", "MODIFY", pad("2"), when, "o1", Decimal("2.00"), '{"x":{"S":"new"}}', Decimal("1.00"), None),
         ("e2", "REMOVE", pad("3"), when, "o2", None, None, Decimal("5.00"), '{"x":{"S":"old"}}')],
        "cdc_event_id string, cdc_op string, cdc_sequence string, cdc_event_time timestamp, orderid string,"
        " new_price decimal(10,2), new_unmapped_attributes string, old_price decimal(10,2),"
        " old_unmapped_attributes string")
    actual = to_state_rows(events, batch_id=9, entity=entity)
    expected = spark.createDataFrame(
        [("o1", Decimal("2.00"), '{"x":{"S":"new"}}', "e1", "MODIFY", pad("2"), when, 9),
         ("o2", Decimal("5.00"), '{"x":{"S":"old"}}', "e2", "REMOVE", pad("3"), when, 9)],
        "orderid string, price decimal(10,2), unmapped_attributes string, cdc_event_id string, cdc_op string,"
        " cdc_sequence string, cdc_event_time timestamp, cdc_batch_id long")
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)
    assert actual.columns == [f.name for f in S.state_fields(entity)]


def test_state_rows_for_orders_follow_the_schema_module(spark):
    events = spark.createDataFrame([], S.event_schema(ORDERS)).withColumn("cdc_errors", F.array())
    state = to_state_rows(events, 0, ORDERS)
    assert [(f.name, f.dataType) for f in state.schema] == [(f.name, f.spark_type) for f in S.state_fields(ORDERS)]


def test_two_snapshots_of_an_item_are_no_conflict_the_later_is_kept(spark):
    early, late = datetime(2026, 12, 1), datetime(2026, 12, 2)
    rows = [("o1", "snapshot-a", pad("0"), False, "record a", early),
            ("o1", "snapshot-b", pad("0"), True, "record b", late)]  # merge rule 6
    events = spark.createDataFrame(rows, EVENT_COLUMNS)
    actual = latest_per_key(events, ORDERS.keys).select("orderid", "cdc_event_id")
    assert_df_equality(actual, events.where("expected_winner").select("orderid", "cdc_event_id"))


def raw_rows_of(spark, lines: list[str], records: int | None) -> list[str]:
    """The payloads of ``to_raw_rows`` over ``lines`` (``records``: the count it is told, None for unknown)."""
    decoded = decode_pipe_records(source_rows(spark, *lines), ORDERS)
    return sorted(r[S.PAYLOAD] for r in to_raw_rows(decoded, 7, ORDERS, records).select(S.PAYLOAD).collect())


@pytest.mark.parametrize(("records", "repeats_apart"), [(3, 10), (None, 10), (None, 0)],
                         ids=["small batch, one partition", "large batch, repeats apart", "large batch, many repeats"])
def test_raw_rows_keep_each_record_once_whichever_way_the_batch_is_deduped(spark, monkeypatch, records, repeats_apart):
    monkeypatch.setattr(transforms, "REPEATS_APART", repeats_apart)
    a, b = to_json_line(insert("o1", "1")), to_json_line(modify("o1", "2"))
    assert raw_rows_of(spark, [a, b, "not json"], records) == sorted([a, b, "not json"])  # nothing repeated
    assert raw_rows_of(spark, [a, b, a, "not json", "not json"], records) == sorted([a, b, "not json"])
    # one item read by two snapshots: one record (its event id names the item's content), two payloads
    item = {"orderid": {"S": "o9"}, "product_name": {"S": "Pen"}, "quantity": {"N": "2"}, "price": {"N": "3.50"}}
    snapshots = [to_json_line(snapshot_record(item, ORDERS, taken_at)) for taken_at in (100, 200)]
    kept = raw_rows_of(spark, [*snapshots, a], records)
    assert len(kept) == 2 and a in kept and len(set(kept) & set(snapshots)) == 1


def test_a_file_record_without_an_event_time_is_dated_by_its_file_whenever_it_is_read(spark, tmp_path):
    """A record that does not decode has no event time: from Kinesis its raw date is its arrival, from the file
    source the file's modification time, so a file read again on another day gives the same raw date."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "records.jsonl").write_text(f"not json\n{to_json_line(insert('o1', '1'))}\n")
    written = datetime(2020, 1, 2, 12, 0, tzinfo=UTC).timestamp()
    os.utime(inbox / "records.jsonl", (written, written))
    raw = to_raw_rows(decode_pipe_records(file_batch(spark, str(inbox)), ORDERS), 7, ORDERS, 2)
    dates = {r[S.PAYLOAD]: r[S.EVENT_DATE] for r in raw.select(S.PAYLOAD, S.EVENT_DATE).collect()}
    assert dates["not json"] == date(2020, 1, 2)
    assert len(dates) == 2 and all(d != date(2020, 1, 2) for p, d in dates.items() if p != "not json")  # event time


def test_rows_the_driver_holds_become_a_frame_whole_whatever_their_batches(spark):
    """An Arrow table read a row group at a time and filtered has empty batches between its rows; PySpark 4.1's
    ``createDataFrame`` drops the rows after an empty batch, ``runtime.frame_of`` keeps every row."""
    schema = pa.schema([("orderid", pa.string()), ("quantity", pa.int64())])
    batches = [pa.record_batch({"orderid": [f"o{i}-{j}" for j in range(n)], "quantity": list(range(n))}, schema=schema)
               for i, n in enumerate([3, 0, 3, 0, 0, 2])]
    rows = pa.Table.from_batches(batches, schema=schema)
    expected = spark.createDataFrame(rows.combine_chunks())
    assert_df_equality(runtime.frame_of(spark, rows), expected, ignore_row_order=True)
    assert expected.count() == rows.num_rows == 8
