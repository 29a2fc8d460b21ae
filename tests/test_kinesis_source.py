"""The Kinesis streaming source (Spark Python data source) against a real moto server."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from sales_cdc.config import KinesisConfig, StreamConfig
from sales_cdc.job import await_query, source_stream, start_query
from sales_cdc.sources.kinesis import KinesisStreamReader
from sales_cdc_local.local_aws import create_kinesis_stream


class Capture:
    """foreachBatch handler that keeps what each batch saw."""

    def __init__(self, fail_on_batch: int | None = None):
        self.batches: list[tuple[int, list[tuple]]] = []
        self.fail_on_batch = fail_on_batch

    def __call__(self, df, batch_id):
        rows = [tuple(r) for r in df.select("payload", "source_shard_id", "source_sequence_number",
                                            "source_partition_key").collect()]
        self.batches.append((batch_id, rows))
        if batch_id == self.fail_on_batch:
            self.fail_on_batch = None
            raise RuntimeError("simulated crash before the checkpoint commit")

    def ids(self) -> list[int]:
        return [json.loads(row[0])["n"] for _, rows in self.batches for row in rows]


def new_stream(moto, shards=2) -> str:
    name = f"sales-{uuid.uuid4().hex[:8]}"
    create_kinesis_stream(moto.client("kinesis"), name, shards=shards)
    return name


def put(moto, stream: str, numbers) -> None:
    records = [{"Data": json.dumps({"n": n}).encode(), "PartitionKey": f"key-{n % 7}"} for n in numbers]
    for i in range(0, len(records), 500):
        moto.client("kinesis").put_records(StreamName=stream, Records=records[i:i + 500])


def config(tmp_path, moto, stream, **kinesis) -> StreamConfig:
    return StreamConfig(KinesisConfig(stream_name=stream, endpoint_url=moto.endpoint, **kinesis),
                        tmp_path / "checkpoint", available_now=False, trigger_interval="0 seconds")


def run(spark, job: StreamConfig, handler, until, timeout=90):
    query = start_query(source_stream(spark, job), handler, job)
    deadline = time.monotonic() + timeout
    try:
        await_query(query, lambda: until() or time.monotonic() > deadline, poll_seconds=0.2)
    finally:
        query.stop()
    assert time.monotonic() <= deadline, "timed out"


def test_columns_and_max_records_per_shard(spark, moto, tmp_path):
    stream = new_stream(moto)
    put(moto, stream, range(100))
    capture = Capture()
    run(spark, config(tmp_path, moto, stream, max_records_per_shard=10), capture, lambda: len(capture.ids()) >= 100)
    assert sorted(capture.ids()) == list(range(100))
    for _, rows in capture.batches:
        per_shard = {}
        for _payload, shard, _seq, _key in rows:
            per_shard[shard] = per_shard.get(shard, 0) + 1
        assert all(count <= 10 for count in per_shard.values())
    _payload, shard, sequence, key = capture.batches[0][1][0]
    assert shard.startswith("shardId-") and sequence and key.startswith("key-")


def test_restart_from_checkpoint_neither_loses_nor_repeats(spark, moto, tmp_path):
    stream = new_stream(moto)
    put(moto, stream, range(300))
    job = config(tmp_path, moto, stream, max_records_per_shard=25)
    first = Capture()
    run(spark, job, first, lambda: len(first.batches) >= 3)
    put(moto, stream, range(300, 400))  # more arrives while the job is down
    second = Capture()
    run(spark, job, second, lambda: len(first.ids()) + len(second.ids()) >= 400)
    assert second.batches[0][0] == first.batches[-1][0] + 1  # resumed after the last committed batch
    all_ids = first.ids() + second.ids()
    assert sorted(all_ids) == list(range(400))  # nothing lost, nothing twice


def test_a_batch_rerun_after_a_crash_reads_exactly_the_same_records(spark, moto, tmp_path):
    stream = new_stream(moto)
    put(moto, stream, range(200))
    job = config(tmp_path, moto, stream, max_records_per_shard=30)
    crashing = Capture(fail_on_batch=1)
    with pytest.raises(Exception, match="simulated crash"):
        run(spark, job, crashing, lambda: False, timeout=60)
    restarted = Capture()
    run(spark, job, restarted, lambda: len(crashing.ids()) + len(restarted.ids()) >= 200 + len(crashing.batches[1][1]))
    crashed_id, crashed_rows = crashing.batches[1]
    rerun_id, rerun_rows = restarted.batches[0]
    assert (rerun_id, sorted(rerun_rows)) == (crashed_id, sorted(crashed_rows))  # readBetweenOffsets
    committed = [n for batch_id, rows in crashing.batches[:1] for n in (json.loads(r[0])["n"] for r in rows)]
    assert sorted(committed + restarted.ids()) == list(range(200))


def test_shard_split_mid_stream_loses_nothing(spark, moto, tmp_path):
    """moto 5.2.5 models a split only partly: the children appear (with ParentShardId), but puts keep
    going to the closed parent and its iterator never ends. So here the split must simply not disturb
    the stream; the parents-first rule is checked on the offsets below."""
    stream = new_stream(moto, shards=1)
    kinesis = moto.client("kinesis")
    put(moto, stream, range(100))
    capture = Capture()
    job = config(tmp_path, moto, stream, max_records_per_shard=40)
    run(spark, job, capture, lambda: len(capture.batches) >= 1)
    parent = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    kinesis.split_shard(StreamName=stream, ShardToSplit=parent, NewStartingHashKey=str(2**127))
    put(moto, stream, range(100, 250))
    run(spark, job, capture, lambda: len(capture.ids()) >= 250)
    assert sorted(capture.ids()) == list(range(250))


def test_children_are_read_only_after_every_parent_is_drained():
    offsets = {
        "parent-a": {"seq": "10", "done": False, "parents": ""},
        "parent-b": {"seq": "7", "done": True, "parents": ""},
        "child-1": {"seq": "", "done": False, "parents": "parent-a"},
        "merged": {"seq": "", "done": False, "parents": "parent-a,parent-b"},
        "child-of-b": {"seq": "", "done": False, "parents": "parent-b"},
        "orphan": {"seq": "", "done": False, "parents": "expired-parent"},
    }
    readable = {shard for shard in offsets if KinesisStreamReader._readable(offsets, shard)}
    assert readable == {"parent-a", "child-of-b", "orphan"}
    offsets["parent-a"]["done"] = True
    readable = {shard for shard in offsets if KinesisStreamReader._readable(offsets, shard)}
    assert readable == {"child-1", "merged", "child-of-b", "orphan"}


def test_options_are_validated():
    with pytest.raises(ValueError, match="streamName"):
        KinesisStreamReader({})
    with pytest.raises(ValueError, match="startingPosition"):
        KinesisStreamReader({"streamName": "s", "startingPosition": "EARLIEST"})
    with pytest.raises(ValueError, match="startingTimestamp"):
        KinesisStreamReader({"streamName": "s", "startingPosition": "AT_TIMESTAMP"})


def test_latest_skips_what_was_there_before_the_query_started(spark, moto, tmp_path):
    stream = new_stream(moto)
    put(moto, stream, range(50))
    time.sleep(1.1)  # arrival timestamps have second precision in places
    capture = Capture()
    job = config(tmp_path, moto, stream, starting_position="LATEST")
    query = start_query(source_stream(spark, job), capture, job)
    try:
        # the start positions are pinned once the first trigger has asked the source for its offsets: wait for
        # that (the query then waits for data, or has run a batch), not for a guessed time
        deadline = time.monotonic() + 60
        while query.status["message"] != "Waiting for data to arrive" and not query.recentProgress:
            assert time.monotonic() < deadline, f"the query did not start: {query.status}"
            time.sleep(0.05)
        put(moto, stream, range(50, 80))
        deadline = time.monotonic() + 60
        await_query(query, lambda: len(capture.ids()) >= 30 or time.monotonic() > deadline, poll_seconds=0.2)
    finally:
        query.stop()
    assert sorted(capture.ids()) == list(range(50, 80))
