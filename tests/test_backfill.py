"""The initial load of an existing table (docs/backfill.md): a parallel Scan on moto, or a DynamoDB export in its
documented format, fed to the job's input; then the job applies it. The warehouse and silver end equal to the
table; a second backfill changes nothing; a backfill killed between two pages and started again delivers what
one run does."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from deltalake import DeltaTable

from sales_cdc.config import FileSource, JobConfig, LakeConfig, SinkConfig, StreamConfig, WarehouseConfig
from sales_cdc.contract import load_contract
from sales_cdc.faults import BACKFILL_POINTS
from sales_cdc.job import merge_sql, run_stream
from sales_cdc.lake import Lake
from sales_cdc.sql import Dialect
from sales_cdc_local import generator as G
from sales_cdc_local.cli import main
from sales_cdc_local.local_aws import create_source_table
from sales_cdc_local.records import to_typed_image
from sales_cdc_local.verify import diff_rows, read_lake_state, read_state, scan_table, state_from_items
from tests.helpers import ORDERS_CONTRACT, REPO, read_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def customers(fixtures_dir):
    return load_contract(fixtures_dir / "customers" / "contract.yaml")


def fresh_schema(pg_url: str, schema: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return schema


def apply(spark, pg_url, tmp_path: Path, contract, schema: str) -> tuple[JobConfig, dict[str, int]]:
    """The job over the inbox the backfill fed (file source, lake on, one checkpoint); its config and totals."""
    config = JobConfig(contract.entity, "backfill-test", SinkConfig(WarehouseConfig(db_schema=schema),
                                                                    LakeConfig(str(tmp_path / "lake"))), dq=None)
    summary = run_stream(spark, config, StreamConfig(FileSource(tmp_path / "inbox"), tmp_path / "checkpoint"), pg_url)
    return config, summary.totals()


def raw_rows(config: JobConfig) -> int:
    return DeltaTable(Lake(config.sinks.lake, config.job_name, config.entity).raw_uri).to_pyarrow_table().num_rows


def differences(pg_url, config, expected) -> list[str]:
    """How the warehouse and silver differ from ``expected`` rows (empty when equal)."""
    entity = config.entity
    actual = read_state(pg_url, merge_sql(Dialect.POSTGRES, config), entity.names)
    silver = read_lake_state(Lake(config.sinks.lake, config.job_name, entity), entity.names)
    return [f"warehouse: {d}" for d in diff_rows(actual, expected, entity.keys)] + \
        [f"silver: {d}" for d in diff_rows(silver, expected, entity.keys)]


def filled_table(moto, contract, name: str, count: int, seed: int) -> list[dict]:
    """A moto table with ``count`` operations applied (inserts, updates, deletes); its items, as a scan gives them."""
    create_source_table(moto.client("dynamodb"), contract.entity, name)
    operations = G.plan(count, entity=contract.entity, update_share=0.2, delete_share=0.1, seed=seed)
    G.write_to_dynamodb(operations, moto.resource("dynamodb"), name, entity=contract.entity)
    return scan_table(moto.resource("dynamodb").Table(name))


@pytest.mark.parametrize("which", ["orders", "customers"])
def test_a_scanned_table_lands_through_the_job_and_a_second_backfill_changes_nothing(spark, pg_url, moto, tmp_path,
                                                                                     customers, which):
    contract = customers if which == "customers" else ORDERS_CONTRACT
    table = f"Backfill{which.title()}"
    items = filled_table(moto, contract, table, 180, seed=7)
    arguments = ["backfill", "--scan", "--contract", str(contract.source), "--table", table, "--to-dir",
                 str(tmp_path / "inbox"), "--endpoint-url", moto.endpoint, "--segments", "3", "--page-size", "17"]
    assert main([*arguments, "--checkpoint", str(tmp_path / "first.json")]) == 0
    expected = state_from_items(items, contract.entity)
    config, totals = apply(spark, pg_url, tmp_path, contract, fresh_schema(pg_url, f"backfill_{which}"))
    assert differences(pg_url, config, expected) == []
    assert totals["backfill rows loaded"] == len(items) == raw_rows(config)
    assert main([*arguments, "--checkpoint", str(tmp_path / "first.json")]) == 0  # done: nothing more
    assert main([*arguments, "--checkpoint", str(tmp_path / "second.json")]) == 0  # a new snapshot, the same items
    _, totals = apply(spark, pg_url, tmp_path, contract, config.sinks.warehouse.db_schema)
    assert differences(pg_url, config, expected) == []
    assert totals["backfill rows loaded"] == 0
    assert totals["backfill rows skipped (a stored row is as new or newer)"] == len(items)
    assert raw_rows(config) == len(items), "the same items again are the same records: raw holds them once"


def test_a_killed_backfill_started_again_delivers_what_one_run_does(moto, tmp_path):
    table = "BackfillKilled"
    filled_table(moto, ORDERS_CONTRACT, table, 120, seed=11)
    base = [sys.executable, "-m", "sales_cdc_local.cli", "backfill", "--scan", "--table", table, "--endpoint-url",
            moto.endpoint, "--segments", "2", "--page-size", "10"]
    env = {**os.environ, "SALES_CDC_CRASH_AT": BACKFILL_POINTS[0]}
    killed = subprocess.run([*base, "--to-dir", str(tmp_path / "killed"), "--checkpoint", str(tmp_path / "k.json")],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    resumed = subprocess.run([*base, "--to-dir", str(tmp_path / "killed"), "--checkpoint", str(tmp_path / "k.json")],
                             cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    once = subprocess.run([*base, "--to-dir", str(tmp_path / "once"), "--checkpoint", str(tmp_path / "o.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert once.returncode == 0

    def delivered(folder: Path) -> set[str]:
        return {json.loads(line)["eventID"] for f in folder.glob("*.jsonl") for line in f.read_text().splitlines()}

    assert delivered(tmp_path / "killed") == delivered(tmp_path / "once")
    assert len(delivered(tmp_path / "once")) == len(scan_table(moto.resource("dynamodb").Table(table)))


def write_export(folder: Path, items: list[dict], files: int = 2) -> Path:
    """A DynamoDB export in the DYNAMODB_JSON format, as AWS writes it under an S3 prefix: a summary, a manifest
    of data files, and gzipped lines of {"Item": typed JSON}."""
    export = folder / "AWSDynamoDB" / "01733333333333-abcdef12"
    (export / "data").mkdir(parents=True)
    manifest = []
    for n in range(files):
        chunk = items[n::files]
        key = f"exports/AWSDynamoDB/01733333333333-abcdef12/data/part{n:02d}.json.gz"
        with gzip.open(export / "data" / f"part{n:02d}.json.gz", "wt") as data:
            data.writelines(json.dumps({"Item": to_typed_image(item)}) + "\n" for item in chunk)
        manifest.append({"itemCount": len(chunk), "md5Checksum": "x", "etag": "y", "dataFileS3Key": key})
    (export / "manifest-files.json").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    (export / "manifest-summary.json").write_text(json.dumps({
        "version": "2020-06-30", "exportArn": "arn:aws:dynamodb:us-east-1:123456789012:table/T/export/01733333333333",
        "startTime": "2026-12-01T10:00:00.000Z", "endTime": "2026-12-01T10:05:00.000Z",
        "exportTime": "2026-12-01T10:00:00.000Z", "tableArn": "arn:aws:dynamodb:us-east-1:123456789012:table/T",
        "s3Bucket": "exports-bucket", "s3Prefix": "exports", "manifestFilesS3Key":
        "exports/AWSDynamoDB/01733333333333-abcdef12/manifest-files.json", "billedSizeBytes": 1, "itemCount":
        len(items), "outputFormat": "DYNAMODB_JSON"}))
    return folder


def test_an_export_with_every_dynamodb_type_and_a_sort_key_lands_through_the_job(spark, pg_url, tmp_path, customers):
    operations = G.plan(150, entity=customers.entity, update_share=0.0, delete_share=0.0, seed=5)
    items = [{**o.item, "blob": b"\x00\x01binary", "blobs": {b"a", b"b"}, "sizes": {Decimal(1), Decimal("2.5")},
              "parts": ["x", Decimal(3), {"deep": True}], "nothing": None} for o in operations]  # unmapped, kept
    export = write_export(tmp_path / "export", items)
    assert main(["backfill", "--export", str(export), "--contract", str(customers.source), "--to-dir",
                 str(tmp_path / "inbox")]) == 0
    config, _ = apply(spark, pg_url, tmp_path, customers, fresh_schema(pg_url, "backfill_export"))
    assert differences(pg_url, config, state_from_items(items, customers.entity)) == []
    with psycopg.connect(pg_url) as conn:
        unmapped = conn.execute('SELECT unmapped_attributes FROM "backfill_export".customers LIMIT 1').fetchone()[0]
    assert set(json.loads(unmapped)) == {"blob", "blobs", "sizes", "parts", "nothing"}


@pytest.mark.parametrize("which", ["orders", "customers"])
def test_the_demo_with_a_preloaded_table_ends_with_warehouse_silver_and_table_equal(pg_url, tmp_path, customers,
                                                                                   which):
    """`sales-cdc demo --preload`: items written before the table's stream was enabled, loaded by the backfill
    while the job runs and the generator keeps writing (updates and deletes of preloaded items too)."""
    from sales_cdc_local.demo import DemoOptions, DemoStream, DemoWarehouse, Workload, run_demo

    contract = customers if which == "customers" else ORDERS_CONTRACT
    schema = fresh_schema(pg_url, f"backfill_demo_{which}")
    result = run_demo(DemoOptions(contract, tmp_path / "demo", Workload(count=200, preload=300, rate=400),
                                  DemoStream(trigger_interval="1 second", max_records_per_shard=80),
                                  DemoWarehouse(pg_url, schema)))
    assert result.mismatches == []
    assert result.warehouse_rows == result.silver_rows == result.table_rows > 0
    totals = result.summary.totals()
    assert totals["events read"] == result.records_on_kinesis > 200  # the stream's records and the snapshot's


def test_the_glue_backfill_job_scans_the_table_into_the_stream_and_a_second_run_resumes(moto, tmp_path,
                                                                                         monkeypatch):
    """jobs/glue_backfill.py, run for real with ``awsglue`` stubbed at the boundary (tests/glue_stub) on moto: the
    Scan's checkpoint is an S3 object, so the job run started again finds the backfill done and feeds nothing."""
    import runpy

    for name, value in (("AWS_ENDPOINT_URL", moto.endpoint), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    table, stream = "BackfillOnGlue", "backfill-on-glue"
    items = filled_table(moto, ORDERS_CONTRACT, table, 90, seed=5)
    kinesis = moto.client("kinesis")
    kinesis.create_stream(StreamName=stream, ShardCount=2)
    moto.client("s3").create_bucket(Bucket="backfill-artifacts")
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    argv = ["glue_backfill.py", "--JOB_NAME", "sales-cdc-backfill", "--stream_arn", stream_arn, "--checkpoint_uri",
            "s3://backfill-artifacts/backfill/", "--table", table, "--segments", "3", "--page_size", "25"]
    monkeypatch.syspath_prepend(str(REPO / "tests" / "glue_stub"))
    monkeypatch.setattr(sys, "argv", argv)
    for _ in range(2):
        for module in [m for m in sys.modules if m == "awsglue" or m.startswith("awsglue.")]:
            monkeypatch.delitem(sys.modules, module)
        runpy.run_path(str(REPO / "jobs" / "glue_backfill.py"), run_name="__main__")
    fed = [json.loads(r["Data"]) for r in read_all(kinesis, stream)]
    assert len(fed) == len(items) == len({r["eventID"] for r in fed})
    assert {r["dynamodb"]["Keys"]["orderid"]["S"] for r in fed} == {i["orderid"] for i in items}
    saved = moto.client("s3").get_object(Bucket="backfill-artifacts", Key=f"backfill/{table}.json")
    assert json.loads(saved["Body"].read())["segments"] == 3


def test_backfill_on_a_stack_starts_its_glue_job_with_the_command_s_settings(moto, capsys):
    """`sales-cdc backfill --stack`: the job named by the stack's BackfillJobName output is started (on moto, which
    models the calls; the job itself is tested above)."""
    suffix = os.urandom(3).hex()
    stack, job = f"backfill-stack-{suffix}", f"backfill-stack-{suffix}-backfill"
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, "Outputs": {"BackfillJobName": {"Value": job}}}
    moto.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    glue = moto.client("glue")
    glue.create_job(Name=job, Role="arn:aws:iam::123456789012:role/backfill", GlueVersion="6.0",
                    Command={"Name": "glueetl", "ScriptLocation": "s3://artifacts/scripts/glue_backfill.py"})
    export = "s3://lake/exports/AWSDynamoDB/01733333333333-abcdef12"
    assert main(["backfill", "--export", export, "--stack", stack, "--endpoint-url", moto.endpoint]) == 0
    [run] = glue.get_job_runs(JobName=job)["JobRuns"]
    assert run["Arguments"]["--export_uri"] == export and run["Arguments"]["--segments"] == "4"
    assert run["Id"] in capsys.readouterr().out
    assert main(["backfill", "--export", "local/folder", "--stack", stack, "--endpoint-url", moto.endpoint]) == 1
    assert "reads an export on S3" in capsys.readouterr().out
