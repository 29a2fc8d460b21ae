"""The pipe emulator against a real moto server: Pipe payload format, partition keys, stop/resume."""

from __future__ import annotations

import json
import uuid

from sales_cdc_local import generator as G
from sales_cdc_local.local_aws import create_kinesis_stream, create_source_table
from sales_cdc_local.pipe_emulator import SHARD_LIST_SECONDS, PipeEmulator, PipeState
from tests.helpers import ORDERS, read_all


def setup(moto):
    suffix = uuid.uuid4().hex[:8]
    table, stream = f"orders-{suffix}", f"sales-{suffix}"
    stream_arn = create_source_table(moto.client("dynamodb"), ORDERS, table)
    create_kinesis_stream(moto.client("kinesis"), stream, shards=2)
    return table, stream, stream_arn


def pipe_for(moto, stream_arn, stream, state_path):
    return PipeEmulator(moto.client("dynamodbstreams"), moto.client("kinesis"), stream_arn=stream_arn,
                        kinesis_stream=stream, state_path=state_path, partition_key="orderid")


def test_stream_records_arrive_in_pipe_format_keyed_by_order(moto, tmp_path):
    table, stream, stream_arn = setup(moto)
    operations = G.plan(120, update_share=0.3, delete_share=0.1, seed=4, entity=ORDERS)
    G.write_to_dynamodb(operations, moto.resource("dynamodb"), table, entity=ORDERS)
    assert pipe_for(moto, stream_arn, stream, tmp_path / "state.json").poll_once() == 120
    records = read_all(moto.client("kinesis"), stream)
    assert len(records) == 120
    payloads = [json.loads(r["Data"]) for r in records]
    for record, payload in zip(records, payloads, strict=True):
        assert record["PartitionKey"] == payload["dynamodb"]["Keys"]["orderid"]["S"]
        assert isinstance(payload["dynamodb"]["ApproximateCreationDateTime"], int)  # epoch seconds, as AWS
        assert payload["eventSourceARN"] == stream_arn
        assert payload["eventName"] in ("INSERT", "MODIFY", "REMOVE")
    ops = {p["eventName"] for p in payloads}
    assert ops == {"INSERT", "MODIFY", "REMOVE"}


def test_stop_and_resume_loses_and_repeats_nothing(moto, tmp_path):
    table, stream, stream_arn = setup(moto)
    state = tmp_path / "state.json"
    operations = G.plan(300, seed=9, entity=ORDERS)
    G.write_to_dynamodb(operations[:180], moto.resource("dynamodb"), table, entity=ORDERS)
    first = pipe_for(moto, stream_arn, stream, state)
    assert first.poll_once() == 180
    assert PipeState.load(state).positions  # progress is on disk

    G.write_to_dynamodb(operations[180:], moto.resource("dynamodb"), table, entity=ORDERS)
    resumed = pipe_for(moto, stream_arn, stream, state)  # a new process: only the state file carries over
    assert resumed.run(idle_seconds=0.5, poll_interval=0.05) == 120
    event_ids = [json.loads(r["Data"])["eventID"] for r in read_all(moto.client("kinesis"), stream)]
    assert len(event_ids) == 300 and len(set(event_ids)) == 300


def test_only_failed_entries_are_resent(moto, tmp_path):
    """PutRecords partial failure: wrap the client so the first call fails half the entries."""
    table, stream, stream_arn = setup(moto)
    G.write_to_dynamodb(G.plan(40, seed=1, entity=ORDERS), moto.resource("dynamodb"), table, entity=ORDERS)
    kinesis = moto.client("kinesis")
    calls = []

    class FlakyKinesis:
        def put_records(self, StreamName, Records):
            calls.append(len(Records))
            if len(calls) == 1:  # fail every other entry, as Kinesis does under throttling
                kept = Records[::2]
                response = kinesis.put_records(StreamName=StreamName, Records=kept)
                results = []
                for i in range(len(Records)):
                    results.append(response["Records"][i // 2] if i % 2 == 0 else
                                   {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"})
                return {"FailedRecordCount": len(Records) // 2, "Records": results}
            return kinesis.put_records(StreamName=StreamName, Records=Records)

    pipe = PipeEmulator(moto.client("dynamodbstreams"), FlakyKinesis(), stream_arn=stream_arn, kinesis_stream=stream,
                        state_path=tmp_path / "state.json", partition_key="orderid")
    assert pipe.poll_once() == 40
    assert calls == [40, 20]
    event_ids = [json.loads(r["Data"])["eventID"] for r in read_all(kinesis, stream)]
    assert len(event_ids) == 40 and len(set(event_ids)) == 40


def test_the_shard_list_is_reused_between_polls(moto, tmp_path):
    """DescribeStream once per SHARD_LIST_SECONDS, not with every poll (10 a second in the demo)."""
    table, stream, stream_arn = setup(moto)
    streams = moto.client("dynamodbstreams")
    described = []
    streams.meta.events.register("before-call.dynamodb-streams.DescribeStream", lambda **_: described.append(1))
    pipe = PipeEmulator(streams, moto.client("kinesis"), stream_arn=stream_arn, kinesis_stream=stream,
                        state_path=tmp_path / "state.json", partition_key="orderid")
    operations = G.plan(30, seed=2, entity=ORDERS)
    for start in range(0, 30, 10):
        G.write_to_dynamodb(operations[start:start + 10], moto.resource("dynamodb"), table, entity=ORDERS)
        assert pipe.poll_once() == 10
    assert len(described) == 1
    pipe._listed = (pipe._listed[0] - SHARD_LIST_SECONDS, pipe._listed[1])  # the listing has aged
    assert pipe.poll_once() == 0
    assert len(described) == 2
    assert len(read_all(moto.client("kinesis"), stream)) == 30
