"""Outages as a user meets them, the CLI in its own process: the warehouse, the lake's S3 or the Kinesis endpoint
cut mid-run (a proxy). Back within ``--sink-retry-seconds``: retried, the run ends well; gone for longer: one line,
exit 1, no traceback; the restart converges. (Apart from test_reliability.py so that the two halves of the slow
end-to-end tests run side by side.)"""

from __future__ import annotations

import time
import uuid

import pytest
from deltalake import DeltaTable

from sales_cdc import schema as S
from sales_cdc_local.local_aws import create_kinesis_stream
from sales_cdc_local.parser import DEFAULT_EXPECTED, DEFAULT_FIXTURES
from sales_cdc_local.verify import diff_rows, load_expected, read_state
from tests.helpers import Outage, postgres_socket
from tests.test_reliability import COLUMNS, Run, assert_clean, assert_stopped_cleanly, interrupt, start_cli, wait_until

pytestmark = pytest.mark.slow


def stop_for_good_mid_run(run: Run, proxy: Outage) -> None:
    """Cut ``proxy`` after the run's first batch until the run gives up: one error line, exit 1, no noise."""
    process = run.start("--sink-retry-seconds", "3")
    wait_until(lambda: run.committed_batches() >= 1, what="the first batch")
    proxy.down()
    output, _ = process.communicate(timeout=300)
    proxy.up()
    assert process.returncode == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "run the job again" in errors[0], output[-3000:]
    assert_clean(output)


def test_a_warehouse_outage_is_retried_then_reported_in_one_line_and_the_restart_converges(
        tmp_path, fixtures_dir, pg_url):
    proxy = Outage(postgres_socket(pg_url))
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
    run = Run(tmp_path, fixtures_dir, url, "outage", dq=False)
    # back within the retry time: the batch is retried and the run ends normally
    process = run.start("--sink-retry-seconds", "60")
    wait_until(lambda: run.committed_batches() >= 1, what="the first batch")
    proxy.down()
    time.sleep(4)
    proxy.up()
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "retrying" in output
    run.assert_converged()
    # gone for longer than the retry time: one line, exit 1, nothing half-written; the restart converges
    run = Run(tmp_path / "second", fixtures_dir, url, "outage2", dq=False)
    stop_for_good_mid_run(run, proxy)
    finished = run()
    assert finished.returncode == 0, finished.stdout[-3000:]
    run.assert_converged()


def test_a_lake_outage_on_s3_is_retried_then_reported_in_one_line_and_the_restart_converges(
        tmp_path, fixtures_dir, pg_url, moto):
    """The lake's S3 (a moto server behind a proxy) gone mid-run for longer than the retry time."""
    bucket = f"lake-outage-{tmp_path.name[-8:].lower().replace('_', '-')}"
    moto.client("s3").create_bucket(Bucket=bucket)
    proxy = Outage(("127.0.0.1", int(moto.endpoint.rsplit(":", 1)[1])))
    run = Run(tmp_path, fixtures_dir, pg_url, "lake_outage", dq=False,
              lake=("--lake-root", f"s3://{bucket}/lake", "--endpoint-url", f"http://127.0.0.1:{proxy.port}"))
    stop_for_good_mid_run(run, proxy)
    assert run.committed_batches() < 6
    finished = run()
    assert finished.returncode == 0, finished.stdout[-3000:]
    assert run.committed_batches() == 6
    actual = read_state(run.url, run.sql, COLUMNS)
    assert diff_rows(actual, load_expected(DEFAULT_EXPECTED), ("orderid",)) == []
    storage = {"AWS_ENDPOINT_URL": moto.endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ALLOW_HTTP": "true"}
    silver = DeltaTable(f"s3://{bucket}/lake/silver/orders", storage_options=storage).to_pyarrow_table().to_pylist()
    assert {(r["orderid"], r[S.CDC_SEQUENCE]) for r in silver} == {(r["orderid"], r[S.CDC_SEQUENCE]) for r in actual}


def test_a_kinesis_outage_stops_the_job_in_one_line_and_the_restart_resumes(tmp_path, fixtures_dir, pg_url, moto):
    """The Kinesis source's endpoint (a moto server behind a proxy) gone mid-run: botocore's retries, then one
    line and exit 1; the restart resumes from the checkpoint's shard positions and loses nothing."""
    stream = f"outage-{uuid.uuid4().hex[:8]}"
    create_kinesis_stream(moto.client("kinesis"), stream, shards=1)
    lines = [line for f in sorted((DEFAULT_FIXTURES).glob("*.jsonl"))
             for line in f.read_text().splitlines() if line.strip()]
    half = len(lines) // 2

    def put(batch: list[str]) -> None:
        moto.client("kinesis").put_records(StreamName=stream, Records=[
            {"Data": line.encode(), "PartitionKey": str(i)} for i, line in enumerate(batch)])

    put(lines[:half])
    proxy = Outage(("127.0.0.1", int(moto.endpoint.rsplit(":", 1)[1])))
    run = Run(tmp_path, fixtures_dir, pg_url, "kinesis_outage", dq=False)
    args = ["run", "--kinesis-stream", stream, "--endpoint-url", f"http://127.0.0.1:{proxy.port}",
            "--checkpoint-dir", str(tmp_path / "ck"), "--warehouse-url", pg_url, "--db-schema", "kinesis_outage",
            "--no-dq", "--trigger-interval", "1 second", "--job-name", "kinesis-outage"]

    process = start_cli(*args)
    wait_until(lambda: run.committed_batches() >= 1, what="the first batch")
    proxy.down()
    output, _ = process.communicate(timeout=300)
    proxy.up()
    assert process.returncode == 1, output[-3000:]
    assert len([line for line in output.splitlines() if line.startswith("error:")]) == 1, output[-3000:]
    assert_clean(output)
    put(lines[half:])
    process = start_cli(*args)
    expected = load_expected(DEFAULT_EXPECTED)
    try:
        wait_until(lambda: diff_rows(read_state(pg_url, run.sql, COLUMNS), expected, ("orderid",)) == [],
                   what="the warehouse to hold every record")
    finally:
        output = interrupt(process)  # Ctrl-C: the Python workers reading Kinesis are spared it
    assert_stopped_cleanly(process, output)
