"""Decode + flatten of Pipe payloads: every DynamoDB type, unmapped attributes, every malformed case."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import types as T

from sales_cdc import schema as S
from sales_cdc.decode import decode_batch, decode_pipe_records, split_decoded
from sales_cdc_local.records import stream_record, to_json_line
from tests.helpers import ORDERS

ALL_TYPES = S.EntitySchema(
    name="typed",
    keys=("id",),
    fields=(
        S.Field("id", T.StringType(), "S", nullable=False),
        S.Field("text", T.StringType(), "S"),
        S.Field("small", T.IntegerType(), "N"),
        S.Field("big", T.LongType(), "N"),
        S.Field("money", T.DecimalType(10, 2), "N"),
        S.Field("flag", T.BooleanType(), "BOOL"),
        S.Field("blob", T.BinaryType(), "B"),
        S.Field("tags", T.ArrayType(T.StringType()), "SS"),
        S.Field("scores", T.ArrayType(T.DecimalType(10, 2)), "NS"),
        S.Field("blobs", T.ArrayType(T.BinaryType()), "BS"),
        S.Field("address", T.StringType(), "M"),
        S.Field("lines", T.StringType(), "L"),
        S.Field("at", T.TimestampType(), "S"),
        S.Field("nothing", T.StringType(), "S"),
    ),
)

TYPED_IMAGE = {
    "id": {"S": "k1"},
    "text": {"S": "héllo"},
    "small": {"N": "42"},
    "big": {"N": "9007199254740993"},  # 2**53 + 1: wrong if it ever went through a float
    "money": {"N": "0.10"},
    "flag": {"BOOL": True},
    "blob": {"B": "aGVsbG8="},
    "tags": {"SS": ["a", "b"]},
    "scores": {"NS": ["1.5", "2"]},
    "blobs": {"BS": ["aGk=", "eW8="]},
    "address": {"M": {"city": {"S": "Lyon"}, "zip": {"N": "69001"}}},
    "lines": {"L": [{"S": "x"}, {"N": "1"}, {"NULL": True}]},
    "at": {"S": "2026-11-25T10:30:00Z"},
    "nothing": {"NULL": True},
    "not_in_schema": {"SS": ["kept"]},
}


def payload(record) -> str:
    return record if isinstance(record, str) else to_json_line(record)


def source_df(spark, *records):
    rows = [(payload(r), "shard-1", None, None, None) for r in records]
    return spark.createDataFrame(rows, S.SOURCE_SCHEMA)


def typed_record(image: dict, op: str = "INSERT", sequence: str = "100") -> dict:
    return {
        "eventID": f"e-{sequence}", "eventName": op, "eventSource": "aws:dynamodb",
        "dynamodb": {"ApproximateCreationDateTime": 1795597200, "Keys": {"id": {"S": "k1"}},
                     "SequenceNumber": sequence, "NewImage" if op != "REMOVE" else "OldImage": image},
    }


def test_every_dynamodb_type_decodes_to_its_spark_type(spark):
    decoded = decode_pipe_records(source_df(spark, typed_record(TYPED_IMAGE)), ALL_TYPES)
    value_columns = [S.NEW_PREFIX + f.name for f in ALL_TYPES.fields]
    actual = decoded.select(*value_columns)
    expected_row = (
        "k1", "héllo", 42, 9007199254740993, Decimal("0.10"), True, bytearray(b"hello"), ["a", "b"],
        [Decimal("1.50"), Decimal("2.00")], [bytearray(b"hi"), bytearray(b"yo")],
        # M and L keep their members as typed JSON (lossless; nested types stay explicit)
        json.dumps(TYPED_IMAGE["address"]["M"], separators=(",", ":")),
        json.dumps(TYPED_IMAGE["lines"]["L"], separators=(",", ":")),
        datetime(2026, 11, 25, 10, 30), None,
    )
    expected_schema = T.StructType([T.StructField(S.NEW_PREFIX + f.name, f.spark_type) for f in ALL_TYPES.fields])
    expected = spark.createDataFrame([expected_row], expected_schema)
    assert_df_equality(actual, expected, ignore_nullable=True)
    row = decoded.first()
    assert row[S.CDC_ERRORS] == []
    assert json.loads(row[S.NEW_PREFIX + S.UNMAPPED]) == {"not_in_schema": {"SS": ["kept"]}}


def test_missing_attribute_and_null_attribute_are_both_null(spark):
    decoded = decode_pipe_records(source_df(spark, typed_record({"id": {"S": "k1"}, "text": {"NULL": True}})),
                                  ALL_TYPES).first()
    assert decoded[S.NEW_PREFIX + "text"] is None
    assert decoded[S.NEW_PREFIX + "small"] is None
    assert decoded[S.NEW_PREFIX + S.UNMAPPED] is None
    assert decoded[S.CDC_ERRORS] == []


def test_cdc_metadata_columns(spark):
    record = stream_record("MODIFY", "1100000000017454423010", key="o1", new={"orderid": "o1", "quantity": 3},
                           old={"orderid": "o1", "quantity": 2}, event_time=1764028800, event_id="ev-1", entity=ORDERS)
    row = decode_pipe_records(source_df(spark, record), ORDERS).first()
    assert (row[S.CDC_EVENT_ID], row[S.CDC_OP], row["orderid"]) == ("ev-1", "MODIFY", "o1")
    assert row[S.CDC_SEQUENCE] == "1100000000017454423010".rjust(40, "0")
    assert row[S.CDC_EVENT_TIME] == datetime(2025, 11, 25, 0, 0)
    assert (row["new_quantity"], row["old_quantity"]) == (3, 2)
    assert row["source_shard_id"] == "shard-1"
    assert row[S.PAYLOAD] == to_json_line(record)


@pytest.mark.parametrize("event_time, expected", [
    (1764028800, datetime(2025, 11, 25)),                 # AWS: epoch seconds
    (1764028800.5, datetime(2025, 11, 25, 0, 0, 0, 500000)),
    (1764028800123, datetime(2025, 11, 25, 0, 0, 0, 123000)),  # epoch milliseconds
    ("2025-11-25T00:00:00", datetime(2025, 11, 25)),       # moto's datetime, serialised
])
def test_event_time_formats(spark, event_time, expected):
    record = stream_record("INSERT", 1, key="o1", new={"orderid": "o1"}, entity=ORDERS)
    record["dynamodb"]["ApproximateCreationDateTime"] = event_time
    assert decode_pipe_records(source_df(spark, record), ORDERS).first()[S.CDC_EVENT_TIME] == expected


def test_remove_takes_key_from_keys_and_values_from_old_image(spark):
    record = stream_record("REMOVE", 5, key="o9", old={"orderid": "o9", "product_name": "Phone", "price": Decimal("1.25")}, entity=ORDERS)
    row = decode_pipe_records(source_df(spark, record), ORDERS).first()
    assert (row["orderid"], row["old_product_name"], row["old_price"], row["new_price"]) == (
        "o9", "Phone", Decimal("1.25"), None)
    assert row[S.CDC_ERRORS] == []


def test_bad_old_image_of_a_modify_is_a_warning_not_a_rejection(spark):
    record = stream_record("MODIFY", 7, key="o1", new={"orderid": "o1", "quantity": 2},
                           old={"orderid": "o1"}, entity=ORDERS)
    record["dynamodb"]["OldImage"]["quantity"] = {"N": "2.5"}
    row = decode_pipe_records(source_df(spark, record), ORDERS).first()
    assert row[S.CDC_ERRORS] == []
    assert row[S.CDC_WARNINGS] == ["OldImage.quantity: N value '2.5' is not exactly representable as INT"]


def _insert(**damage) -> dict:
    record = stream_record("INSERT", 100, key="o1", new={"orderid": "o1", "quantity": 1, "price": Decimal("9.99")}, entity=ORDERS)
    for path, value in damage.items():
        target = record
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return record


MALFORMED = [
    ("bad JSON", '{"eventName": "INSERT", "dynamodb": {', "payload is not valid JSON"),
    ("not an object", "[1, 2, 3]", "missing eventName"),
    ("no eventName", _insert(eventName=None), "missing eventName"),
    ("unknown eventName", _insert(eventName="UPSERT"), "unknown eventName 'UPSERT'"),
    ("no eventID", _insert(eventID=None), "missing eventID"),
    ("no dynamodb block", _insert(dynamodb=None), "missing dynamodb.SequenceNumber"),
    ("no SequenceNumber", _insert(dynamodb__SequenceNumber=None), "missing dynamodb.SequenceNumber"),
    ("SequenceNumber not digits", _insert(dynamodb__SequenceNumber="12a"), "is not a decimal number"),
    ("SequenceNumber too long", _insert(dynamodb__SequenceNumber="1" * 41), "is not a decimal number"),
    ("no event time", _insert(dynamodb__ApproximateCreationDateTime=None), "ApproximateCreationDateTime"),
    ("bad event time", _insert(dynamodb__ApproximateCreationDateTime="yesterday"), "ApproximateCreationDateTime"),
    ("INSERT without NewImage", _insert(dynamodb__NewImage=None), "missing dynamodb.NewImage for INSERT"),
    ("key missing", _insert(dynamodb__Keys=None, dynamodb__NewImage={"quantity": {"N": "1"}}), "missing key orderid"),
    ("key empty", _insert(dynamodb__Keys={"orderid": {"S": ""}}), "missing key orderid"),
    ("keys disagree", _insert(dynamodb__Keys={"orderid": {"S": "o2"}}), "differs between dynamodb.Keys and the image"),
    ("N not a number", _insert(dynamodb__NewImage__price={"N": "cheap"}), "NewImage.price: N value 'cheap' is not a number"),
    ("N too precise", _insert(dynamodb__NewImage__price={"N": "9.999"}), "not exactly representable as DECIMAL(10,2)"),
    ("N out of range", _insert(dynamodb__NewImage__price={"N": "123456789012"}), "out of range for DECIMAL(10,2)"),
    ("fractional int", _insert(dynamodb__NewImage__quantity={"N": "1.5"}), "not exactly representable as INT"),
    ("wrong type", _insert(dynamodb__NewImage__quantity={"S": "1"}), "expected DynamoDB type N, got S"),
    ("bad timestamp", _insert(dynamodb__NewImage__created_at={"S": "soon"}), "NewImage.created_at: 'soon' is not a timestamp"),
    ("attribute not an object", _insert(dynamodb__NewImage__quantity="1"), "does not have the shape of a DynamoDB stream"),
    ("BOOL not a boolean", _insert(dynamodb__NewImage__quantity={"BOOL": "yes"}), "wrong JSON type"),
    ("unknown type tag", _insert(dynamodb__NewImage__quantity={"X": "1"}), "expected DynamoDB type N, got no known type tag"),
    ("unmapped attribute with unknown tag", _insert(dynamodb__NewImage__gift={"X": "1"}),
     "NewImage: attribute(s) gift have no known DynamoDB type tag"),
    ("N with too many decimals", _insert(dynamodb__NewImage__price={"N": "9.990001"}),
     "not exactly representable as DECIMAL(10,2)"),
    ("two type tags", _insert(dynamodb__NewImage__quantity={"N": "3", "S": "3"}),
     "NewImage: attribute(s) quantity have more than one DynamoDB type tag"),
    ("two type tags, unmapped", _insert(dynamodb__NewImage__gift={"BOOL": True, "S": "yes"}),
     "NewImage: attribute(s) gift have more than one DynamoDB type tag"),
    ("another event source", _insert(eventSource="aws:kinesis"), "eventSource 'aws:kinesis' is not aws:dynamodb"),
    ("no event source", _insert(eventSource=None), "eventSource '(missing)' is not aws:dynamodb"),
]


@pytest.mark.parametrize("record, reason", [(r, why) for _, r, why in MALFORMED], ids=[name for name, _, _ in MALFORMED])
def test_malformed_record_is_quarantined_with_reason(spark, record, reason):
    good = stream_record("INSERT", 1, key="ok", new={"orderid": "ok"}, entity=ORDERS)
    events, quarantine = split_decoded(decode_pipe_records(source_df(spark, good, record), ORDERS), 7, ORDERS)
    assert [r["orderid"] for r in events.collect()] == ["ok"]  # the batch goes on
    rows = quarantine.collect()
    assert len(rows) == 1
    assert reason in rows[0][S.QUARANTINE_REASON]
    assert rows[0][S.PAYLOAD] == payload(record)  # the raw payload is kept for replay
    assert (rows[0][S.CDC_BATCH_ID], rows[0]["stage"], rows[0]["source_shard_id"]) == (7, "decode", "shard-1")


def test_non_canonical_numbers_that_are_exact_are_accepted(spark):
    record = _insert(dynamodb__NewImage__price={"N": "1e2"}, dynamodb__NewImage__quantity={"N": "3.0"})
    row = decode_pipe_records(source_df(spark, record), ORDERS).first()
    assert (row["new_price"], row["new_quantity"], row[S.CDC_ERRORS]) == (Decimal("100.00"), 3, [])


def test_several_problems_are_all_reported(spark):
    record = _insert(eventID=None, dynamodb__NewImage__price={"N": "x"}, dynamodb__NewImage__quantity={"S": "1"})
    _, quarantine = split_decoded(decode_pipe_records(source_df(spark, record), ORDERS), 1, ORDERS)
    reason = quarantine.first()[S.QUARANTINE_REASON]
    assert reason.split("; ") == [
        "missing eventID",
        "NewImage.quantity: expected DynamoDB type N, got S",
        "NewImage.price: N value 'x' is not a number (or out of range)",
    ]


def test_event_columns_follow_the_schema_module(spark):
    decoded = decode_pipe_records(source_df(spark, stream_record("INSERT", 1, key="o1", new={"orderid": "o1"}, entity=ORDERS)), ORDERS)
    assert decoded.columns == [f.name for f in S.event_fields(ORDERS)] + [S.CDC_ERRORS]
    for field in S.event_fields(ORDERS):
        assert decoded.schema[field.name].dataType == field.spark_type, field.name


def _checkpoint(df):
    return df.localCheckpoint(eager=True)


def test_the_two_pass_decode_gives_the_rows_of_the_one_pass_decode(spark):
    """decode_batch (values and problem flags first, messages for the flagged rows only) must produce the
    same rows as decode_pipe_records, for clean rows, drifted ones, warnings and every malformed case."""
    modify_with_bad_old_value = stream_record("MODIFY", 7, key="o7", new={"orderid": "o7", "quantity": 2},
                                              old={"orderid": "o7"}, entity=ORDERS)
    modify_with_bad_old_value["dynamodb"]["OldImage"]["quantity"] = {"N": "2.5"}
    records = [
        stream_record("INSERT", 1, key="ok", new={"orderid": "ok", "quantity": 1}, entity=ORDERS),
        _insert(dynamodb__NewImage__gift_note={"S": "happy birthday"}),  # schema drift: kept, not an error
        modify_with_bad_old_value,
        *[record for _, record, _ in MALFORMED],
    ]
    df = source_df(spark, *records)
    one_pass = decode_pipe_records(df, ORDERS)
    two_pass = decode_batch(df, _checkpoint, ORDERS)
    assert_df_equality(two_pass.frame, one_pass, ignore_row_order=True)
    assert (two_pass.read, two_pass.valid, two_pass.warned) == (len(records), 3, 1)


def test_a_clean_batch_is_decoded_once(spark):
    materialised = []

    def checkpoint(df):
        materialised.append(df)
        return _checkpoint(df)

    records = [stream_record("INSERT", i, key=f"o{i}", new={"orderid": f"o{i}"}, entity=ORDERS) for i in range(1, 4)]
    batch = decode_batch(source_df(spark, *records), checkpoint, ORDERS)
    assert len(materialised) == 1  # no second pass: no row has a problem
    assert_df_equality(batch.frame, decode_pipe_records(source_df(spark, *records), ORDERS), ignore_row_order=True)
    assert (batch.read, batch.valid, batch.warned) == (3, 3, 0)
