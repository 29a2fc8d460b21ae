"""The Glue entry script, run for real with ``awsglue`` stubbed at the boundary (tests/glue_stub):
parameters, wiring, the native-source options, the same batch handler, Secrets Manager, S3 docs."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import psycopg
import pytest
import yaml

from sales_cdc import glue, metrics
from sales_cdc.contract import DEFAULT_CONTRACT
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc_local.cli import stage_fixtures
from sales_cdc_local.parser import DEFAULT_EXPECTED, DEFAULT_FIXTURES
from sales_cdc_local.verify import diff_rows, load_expected, read_state
from tests.helpers import COLUMNS, EXPECTATIONS, ORDERS

REPO = Path(__file__).parent.parent
STUB = Path(__file__).parent / "glue_stub"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/kinesis-for-sales-data"


def fake_resolved(argv, names):
    from tests.glue_stub.awsglue.utils import getResolvedOptions

    return getResolvedOptions(argv, names)


def test_parameters_have_defaults_except_the_required_ones():
    args = glue.resolve_args(["job.py", "--JOB_NAME", "j", "--stream_arn", STREAM_ARN,
                              "--checkpoint_location", "s3://ckpt/x", "--window_size", "30 seconds"], fake_resolved)
    assert args["window_size"] == "30 seconds" and args["starting_position"] == "TRIM_HORIZON"
    assert args["JOB_NAME"] == "j"
    with pytest.raises(SystemExit, match="--checkpoint_location"):
        glue.resolve_args(["job.py", "--JOB_NAME", "j", "--stream_arn", STREAM_ARN], fake_resolved)


def test_every_parameter_is_in_the_readme_table():
    readme = (REPO / "README.md").read_text()
    for param in glue.GLUE_PARAMS:
        assert f"`--{param.name}`" in readme, param.name


def test_redshift_needs_its_parameters():
    args = {**glue.DEFAULTS, "JOB_NAME": "j", "stream_arn": STREAM_ARN, "checkpoint_location": "s3://c/x"}
    with pytest.raises(SystemExit, match="--redshift_workgroup"):
        glue.warehouse_for(args, glue.job_config(args, None, ORDERS), clients=lambda name: None)


def test_alerts_publish_in_the_topic_s_region_metrics_in_the_job_s_and_the_settings_match_the_cli_s():
    args = {**glue.DEFAULTS, "JOB_NAME": "j", "stream_arn": STREAM_ARN, "checkpoint_location": "s3://c/x",
            "sns_topic_arn": "arn:aws:sns:eu-west-1:123456789012:sales-cdc-alerts", "soft_delete": "true"}
    config = glue.job_config(args, None, ORDERS)
    assert (config.alerts.sns_topic_arn, config.alerts.region) == (args["sns_topic_arn"], "eu-west-1")
    assert (config.job_name, config.sinks.soft_delete, config.sinks.retry_seconds) == ("j", True, 300.0)
    assert config.dq.docs.index_batches == 100 and config.sinks.lake is None
    # the metrics go where the stack's dashboard and alarms are: the job's region (its stream's), by default
    eu = glue.job_config({**args, "stream_arn": STREAM_ARN.replace("us-east-1", "eu-central-1")}, None, ORDERS)
    assert (eu.metrics.namespace, eu.metrics.region) == (metrics.NAMESPACE, "eu-central-1")


@pytest.mark.slow
def test_glue_entry_script_runs_the_same_pipeline(spark, moto, pg_url, db_schema, fixtures_dir, tmp_path,
                                                  monkeypatch):
    # AWS side on the moto server: the warehouse URL in Secrets Manager, the suites and the docs on S3
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    secret_arn = moto.client("secretsmanager").create_secret(
        Name=f"sales-cdc/{db_schema}", SecretString=json.dumps({"url": pg_url}))["ARN"]
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="glue-artifacts")
    for suite in (EXPECTATIONS / "expectations").glob("*.json"):
        s3.upload_file(str(suite), "glue-artifacts", f"expectations/expectations/{suite.name}")
    s3.upload_file(str(DEFAULT_CONTRACT), "glue-artifacts", "contracts/contract.yaml")  # what the deploy uploads

    stage_fixtures(DEFAULT_FIXTURES, tmp_path / "kinesis")  # what the stubbed native source reads
    monkeypatch.setenv("GLUE_STUB_KINESIS_DIR", str(tmp_path / "kinesis"))
    monkeypatch.syspath_prepend(str(STUB))
    argv = ["glue_job.py", "--JOB_NAME", "sales-cdc-glue", "--stream_arn", STREAM_ARN,
            "--checkpoint_location", str(tmp_path / "checkpoint"), "--window_size", "10 seconds",
            "--warehouse", "postgres", "--postgres_secret_arn", secret_arn, "--db_schema", db_schema,
            "--expectations_uri", "s3://glue-artifacts/expectations", "--docs_location", "s3://glue-artifacts/docs",
            "--contract_uri", "s3://glue-artifacts/contracts/contract.yaml",
            "--lake_root", str(tmp_path / "lake"), "--silver_format", "parquet"]
    monkeypatch.setattr(sys, "argv", argv)
    for module in [m for m in sys.modules if m == "awsglue" or m.startswith("awsglue.")]:
        monkeypatch.delitem(sys.modules, module)
    runpy.run_path(str(REPO / "jobs" / "glue_job.py"), run_name="__main__")
    calls = sys.modules["awsglue"].CALLS  # the stub the script imported

    actual = read_state(pg_url, MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS), COLUMNS)
    assert diff_rows(actual, load_expected(DEFAULT_EXPECTED), ("orderid",)) == []
    [source_call] = [c for c in calls if c[0] == "create_data_frame.from_options"]
    assert source_call[1] == "kinesis"
    assert source_call[2] == glue.kinesis_connection_options({**glue.DEFAULTS, "stream_arn": STREAM_ARN})
    [batch_call] = [c for c in calls if c[0] == "forEachBatch"]
    assert batch_call[1] == {"windowSize": "10 seconds", "checkpointLocation": str(tmp_path / "checkpoint"),
                             "batchMaxRetries": "3"}
    assert [c[0] for c in calls if c[0].startswith("job.")] == ["job.init", "job.commit"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="glue-artifacts", Prefix="docs/")["Contents"]]
    assert "docs/index.html" in keys and any(k.startswith("docs/validations/orders/") for k in keys)
    assert list((tmp_path / "lake" / "silver" / "orders" / "_commits").glob("*.json"))

    # the next run, with a changed contract at --contract_uri, migrates the warehouse and the lake at start
    widened = yaml.safe_load(DEFAULT_CONTRACT.read_text())
    widened["attributes"]["quantity"]["type"] = "bigint"
    s3.put_object(Bucket="glue-artifacts", Key="contracts/contract.yaml", Body=yaml.safe_dump(widened).encode())
    for module in [m for m in sys.modules if m == "awsglue" or m.startswith("awsglue.")]:
        monkeypatch.delitem(sys.modules, module)
    runpy.run_path(str(REPO / "jobs" / "glue_job.py"), run_name="__main__")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = %s AND "
                            "table_name = 'orders' AND column_name = 'quantity'", (db_schema,)).fetchone() == ("bigint",)
        assert conn.execute(f'SELECT sink, source FROM "{db_schema}".schema_changes WHERE change = %s',
                            ("widen",)).fetchall() == [("warehouse", "s3://glue-artifacts/contracts/contract.yaml")]


def test_dq_params_are_a_json_object_of_suite_parameters():
    assert glue.dq_params('{"price_ceiling": "5000", "max_quantity": 9}') == \
        (("price_ceiling", "5000"), ("max_quantity", "9"))
    assert glue.dq_params("") == glue.dq_params("{}") == ()
    with pytest.raises(SystemExit, match="JSON object"):
        glue.dq_params("price_ceiling=5000")
