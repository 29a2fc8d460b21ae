"""The local streaming job end to end: file source -> foreachBatch -> PostgreSQL, restarts, CLI, spark-submit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pyspark.errors import StreamingQueryException

from sales_cdc import schema as S
from sales_cdc.config import DqConfig, FileSource, JobConfig, KinesisConfig, SinkConfig, StreamConfig, WarehouseConfig
from sales_cdc.errors import JobError
from sales_cdc.job import check_paths, postgres_warehouse, run_stream, start_query
from sales_cdc.lake.parquet import latest_silver_path
from sales_cdc.pipeline import BatchHandler
from sales_cdc.sources.files import file_stream
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc_local.cli import main, stage_fixtures
from sales_cdc_local.parser import DEFAULT_EXPECTED, DEFAULT_FIXTURES
from sales_cdc_local.verify import diff_rows, load_expected, read_state
from tests.helpers import COLUMNS, HARNESS_BLOCKER, ORDERS, ORDERS_CONTRACT

pytestmark = pytest.mark.slow
REPO = Path(__file__).parent.parent


def config_for(db_schema: str, dq: DqConfig | None = None) -> JobConfig:
    """Data quality is off unless asked for: these tests are about the stream, and GX adds seconds per batch."""
    return JobConfig(ORDERS, "job-test", SinkConfig(WarehouseConfig(db_schema=db_schema)), dq)


def stream_for(tmp_path: Path) -> StreamConfig:
    return StreamConfig(FileSource(tmp_path / "inbox", max_files_per_trigger=1), tmp_path / "checkpoint")


def full_table(pg_url: str, db_schema: str) -> list[tuple]:
    sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS)
    with psycopg.connect(pg_url) as conn:
        return conn.execute(f"SELECT * FROM {sql.target} ORDER BY orderid").fetchall()


def without_loaded_at(rows: list[tuple]) -> list[tuple]:
    return [row[:-1] for row in rows]  # loaded_at is the last column


def test_fixtures_end_to_end_equal_the_expected_state(spark, pg_url, db_schema, tmp_path, fixtures_dir):
    stage_fixtures(DEFAULT_FIXTURES, tmp_path / "inbox")
    summary = run_stream(spark, config_for(db_schema, DqConfig()), stream_for(tmp_path), pg_url)
    actual = read_state(pg_url, MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS), COLUMNS)
    assert diff_rows(actual, load_expected(DEFAULT_EXPECTED), ("orderid",)) == []
    totals = summary.totals()
    assert totals["batches"] == 6
    assert totals["events quarantined (decode)"] == 6
    # quantity 7 (o-0003, later deleted) and a late quantity-9 event of o-0006 (stale anyway)
    assert totals["events quarantined (data quality)"] == 2
    assert totals["rows deleted"] == 2


def test_restart_after_a_crash_mid_way_gives_the_same_table_as_one_run(spark, pg_url, tmp_path, fixtures_dir):
    # reference: one uninterrupted run
    one_run_schema = "t_job_one_run"
    stage_fixtures(DEFAULT_FIXTURES, tmp_path / "one" / "inbox")
    run_stream(spark, config_for(one_run_schema), stream_for(tmp_path / "one"), pg_url)

    # crash: batch 2 is merged into the warehouse, then the process dies before Spark commits the batch
    schema = "t_job_crash"
    config, stream = config_for(schema), stream_for(tmp_path / "crash")
    files = sorted((DEFAULT_FIXTURES).glob("*.jsonl"))
    warehouse = postgres_warehouse(pg_url, config)
    handler = BatchHandler(warehouse=warehouse)

    def crash_after_commit(df, batch_id):
        handler(df, batch_id)
        if batch_id == 2:
            raise RuntimeError("simulated crash after the warehouse commit")

    stage_fixtures(DEFAULT_FIXTURES, stream.source.directory)
    query = start_query(file_stream(spark, str(stream.source.directory), 1), crash_after_commit, stream)
    with pytest.raises(StreamingQueryException, match="simulated crash"):
        query.awaitTermination()
    assert [b.batch_id for b in handler.summary.batches] == [0, 1, 2]

    # restart from the same checkpoint: batch 2 comes again, is found in the ledger, then the rest runs
    summary = run_stream(spark, config, stream, pg_url)
    assert [(b.batch_id, b.merge.replayed) for b in summary.batches] == [
        (2, True), *[(i, False) for i in range(3, len(files))]]
    assert without_loaded_at(full_table(pg_url, schema)) == without_loaded_at(full_table(pg_url, one_run_schema))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        quarantined = conn.execute(f'SELECT count(*) FROM "{schema}".orders_quarantine').fetchone()[0]
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.execute(f'DROP SCHEMA "{one_run_schema}" CASCADE')
    assert quarantined == 6  # the replayed batch did not quarantine its bad records twice


def test_demo_command_verifies_the_fixtures(pg_url, db_schema, tmp_path, capsys):
    code = main(["demo-fixtures", "--work-dir", str(tmp_path / "demo"), "--warehouse-url", pg_url, "--db-schema", db_schema])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "OK" in out and "events quarantined" in out


def test_spark_submit_runs_the_local_entry_point_with_the_job_package_alone(pg_url, db_schema, tmp_path):
    """As where only the job package is installed: the local harness and its extra cannot be imported."""
    stage_fixtures(DEFAULT_FIXTURES, tmp_path / "inbox")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HARNESS_BLOCKER)
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [str(venv_bin / "spark-submit"), "--master", "local[2]", str(REPO / "jobs" / "local_job.py"),
         "run", "--source-dir", str(tmp_path / "inbox"), "--checkpoint-dir", str(tmp_path / "checkpoint"),
         "--warehouse-url", pg_url, "--db-schema", db_schema, "--max-files-per-trigger", "2"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "rows upserted" in completed.stdout and "Traceback" not in completed.stderr
    actual = read_state(pg_url, MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS), COLUMNS)
    assert diff_rows(actual, load_expected(DEFAULT_EXPECTED), ("orderid",)) == []


def test_moto_demo_small_run_ends_with_warehouse_equal_to_table(pg_url, db_schema, tmp_path):
    from sales_cdc_local.demo import DemoOptions, DemoStream, DemoWarehouse, Workload, run_demo

    result = run_demo(DemoOptions(ORDERS_CONTRACT, tmp_path / "demo", Workload(count=300),
                                  DemoStream(trigger_interval="1 second", max_records_per_shard=60),
                                  DemoWarehouse(pg_url, db_schema)))
    assert result.mismatches == []
    assert result.records_on_kinesis == 300
    assert result.warehouse_rows == result.table_rows > 0
    totals = result.summary.totals()
    assert totals["events read"] == 300 and totals["batches"] >= 2
    assert totals["rows deleted"] > 0
    assert totals["events quarantined (decode)"] == totals["events quarantined (data quality)"] == 0
    assert result.alerts == []  # clean generated data: no SNS alert reached the SQS subscription
    assert result.metrics["EventsRead"] == 300  # and CloudWatch (moto) got what the summary counts (mismatches)
    assert (tmp_path / "demo" / "data_docs" / "index.html").exists()
    assert result.summary.docs_url.endswith("data_docs/index.html")


def test_a_missing_source_folder_or_checkpoint_parent_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(JobError, match=r"source folder .*nope does not exist"):
        check_paths(StreamConfig(FileSource(tmp_path / "nope"), tmp_path / "checkpoint"))
    (tmp_path / "inbox").mkdir()
    with pytest.raises(JobError, match=r"checkpoint folder .*: its parent .* does not exist"):
        check_paths(StreamConfig(FileSource(tmp_path / "inbox"), tmp_path / "missing" / "checkpoint"))
    check_paths(StreamConfig(FileSource(tmp_path / "inbox"), tmp_path / "checkpoint"))
    check_paths(StreamConfig(KinesisConfig(), tmp_path / "checkpoint"))  # no folder to look for


@pytest.mark.parametrize("lake_format", ["delta", "parquet"])
def test_a_deleted_checkpoint_and_a_rerun_write_nothing_twice_in_any_layer(spark, pg_url, tmp_path, fixtures_dir,
                                                                           lake_format):
    """The same files read again by a job whose checkpoint was deleted (a new stream id): every layer holds
    what one run left, raw and quarantine included (each record once, by its identity)."""
    from deltalake import DeltaTable

    from sales_cdc.config import LakeConfig
    from sales_cdc.lake import Lake

    schema = f"t_job_reset_{lake_format}"
    formats = {f"{layer}_format": lake_format for layer in ("raw", "silver", "quarantine")}
    lake_config = LakeConfig(str(tmp_path / "lake"), **formats)
    config = JobConfig(ORDERS, "job-test", SinkConfig(WarehouseConfig(db_schema=schema), lake_config), DqConfig())
    lake = Lake(lake_config, "job-test", ORDERS)

    def layers() -> dict:
        def rows(uri: str) -> list:
            if lake_format == "delta":
                return sorted(map(str, DeltaTable(uri).to_pyarrow_table().drop_columns([S.CDC_BATCH_ID]).to_pylist()))
            frame = spark.read.parquet(uri if uri != lake.silver_uri else latest_silver_path(spark, uri))
            return sorted(str(r.asDict()) for r in frame.drop(S.CDC_BATCH_ID, "cdc_batch").collect())

        with psycopg.connect(pg_url) as conn:
            quarantined = conn.execute(f'SELECT count(*) FROM "{schema}".orders_quarantine').fetchone()[0]
        return {"warehouse": [r[:-2] for r in full_table(pg_url, schema)], "warehouse quarantine": quarantined,
                **{uri: rows(uri) for uri in (lake.raw_uri, lake.silver_uri, lake.quarantine_uri)}}

    stage_fixtures(DEFAULT_FIXTURES, tmp_path / "inbox")
    run_stream(spark, config, stream_for(tmp_path), pg_url)
    once = layers()
    assert once["warehouse quarantine"] == 8 and len(once[lake.raw_uri]) > len(once[lake.silver_uri]) > 0
    shutil.rmtree(tmp_path / "checkpoint")
    run_stream(spark, config, stream_for(tmp_path), pg_url)
    assert layers() == once
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
