"""The local moto server's fast record reads answer exactly what moto's own serialiser answers."""

from __future__ import annotations

import boto3
from moto import mock_aws

from sales_cdc_local.local_aws import create_kinesis_stream, create_source_table
from sales_cdc_local.moto_server import fast_record_reads
from tests.helpers import ORDERS

REGION = "us-east-1"
# every DynamoDB type, in a key, a new image, an old image (MODIFY) and a REMOVE
ITEM = {"orderid": {"S": "o-1"}, "price": {"N": "19.99"}, "blob": {"B": b"\x00\xffbin"}, "flag": {"BOOL": True},
        "nothing": {"NULL": True}, "tags": {"SS": ["a", "b"]}, "sizes": {"NS": ["1", "2.5"]},
        "blobs": {"BS": [b"x", b"\x01"]}, "address": {"M": {"city": {"S": "Oslo"}, "zip": {"N": "150"}}},
        "lines": {"L": [{"S": "first"}, {"N": "2"}, {"M": {"sku": {"S": "k"}}}]}}


def stream_records(streams, stream_arn: str) -> list[dict]:
    shard = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=stream_arn, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    response = streams.get_records(ShardIterator=iterator)
    return response["Records"]


def kinesis_records(kinesis, stream: str) -> list[dict]:
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        response = kinesis.get_records(ShardIterator=iterator, Limit=100)
        records.append({k: v for k, v in response.items() if k != "ResponseMetadata"})
    return records


@mock_aws
def test_fast_record_reads_answer_what_moto_serialises():
    # newer botocore resolves DynamoDB Streams to an account-based host that moto's in-process mock does not
    # know; the classic regional endpoint it does
    dynamodb = boto3.client("dynamodb", REGION)
    streams = boto3.client("dynamodbstreams", REGION, endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com")
    kinesis = boto3.client("kinesis", REGION)
    stream_arn = create_source_table(dynamodb, ORDERS, "orders")
    dynamodb.put_item(TableName="orders", Item=ITEM)
    dynamodb.put_item(TableName="orders", Item={**ITEM, "price": {"N": "21"}})
    dynamodb.delete_item(TableName="orders", Key={"orderid": {"S": "o-1"}})
    create_kinesis_stream(kinesis, "sales", shards=2)
    for i in range(20):
        kinesis.put_record(StreamName="sales", Data=f'{{"n": {i}}}'.encode() + b"\x00\xff", PartitionKey=f"k{i}")

    expected_stream, expected_kinesis = stream_records(streams, stream_arn), kinesis_records(kinesis, "sales")
    with fast_record_reads():
        fast_stream, fast_kinesis = stream_records(streams, stream_arn), kinesis_records(kinesis, "sales")

    assert [r["eventName"] for r in expected_stream] == ["INSERT", "MODIFY", "REMOVE"]
    assert expected_stream[1]["dynamodb"]["OldImage"]["blob"] == {"B": b"\x00\xffbin"}
    assert fast_stream == expected_stream
    assert sum(len(r["Records"]) for r in expected_kinesis) == 20
    assert fast_kinesis == expected_kinesis


def test_kinesis_shard_lookups_answer_what_moto_scans_for():
    from moto.kinesis.models import Shard

    shard = Shard(0, 0, 2**128)
    with fast_record_reads():
        fast = (Shard.get_records, Shard.get_max_sequence_number, Shard.get_min_sequence_number)
    moto = (Shard.get_records, Shard.get_max_sequence_number, Shard.get_min_sequence_number)
    assert fast[0] is not moto[0]  # patched inside the block only

    def answers(methods):
        get_records, newest, oldest = methods
        reads = [get_records(shard, str(last), limit) for last in (0, 1, 7, 11, 12, 40)
                 for limit in (None, 0, 1, 3, 100)]
        return reads, newest(shard), oldest(shard)

    empty = answers(fast)
    assert empty == answers(moto)
    assert empty[1:] == (0, 0) and all(records == [] for records, _, _ in empty[0])  # an empty shard
    with fast_record_reads():
        for i in range(12):
            shard.put_record(f"k{i}", f"data-{i}", str(i))  # numbered by the fast newest-record lookup
    assert list(shard.records) == list(range(1, 13))
    fast_answers = answers(fast)
    assert fast_answers == answers(moto)
    assert fast_answers[1:] == (12, 1)
    assert [r.data for r in fast_answers[0][2 * 5 + 3][0]] == ["data-7", "data-8", "data-9"]  # after 7, limit 3
    del shard.records[5]  # numbers with a gap (moto never leaves one): moto's own scan answers
    assert answers(fast) == answers(moto)


def test_local_setup_finds_what_exists_beyond_the_first_page_of_a_listing(moto):
    """A second `local-setup` creates nothing, also where the account lists more than one page of streams."""
    import uuid

    from sales_cdc.contract import load_contract
    from sales_cdc_local.local_aws import set_up_source
    from tests.helpers import REPO

    entity = load_contract(REPO / "tests" / "fixtures" / "customers" / "contract.yaml").entity
    kinesis, tag = moto.client("kinesis"), uuid.uuid4().hex[:6]
    for i in range(101):  # list_streams answers 100 names a page
        kinesis.create_stream(StreamName=f"a-{tag}-{i:03}", ShardCount=1)
    names = (f"T-{tag}", f"z-{tag}", 2, f"lake-{tag}")
    assert len(set_up_source(moto.endpoint, entity, *names)) == 3
    assert set_up_source(moto.endpoint, entity, *names) == []
