"""Operating the job: ``sales-cdc status`` and ``sales-cdc quarantine list | show | replay``, end to end through the
command line, on the checked-in fixtures (file source) and on Kinesis (moto) with the lake on moto's S3."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
import pytest

from sales_cdc import schema as S
from sales_cdc.config import LakeConfig
from sales_cdc.lake import Lake, moto_storage_options
from sales_cdc.sql import Dialect, MergeSql, quote
from sales_cdc_local.cli import main, stage_fixtures
from sales_cdc_local.local_aws import create_kinesis_stream
from sales_cdc_local.parser import DEFAULT_EXPECTED, DEFAULT_FIXTURES
from sales_cdc_local.status import read_status
from sales_cdc_local.verify import cloudwatch_sums, diff_rows, load_expected, read_lake_state, read_state
from tests.helpers import ORDERS, put_fixture_lines

pytestmark = pytest.mark.slow

COLUMNS = [*ORDERS.names, S.UNMAPPED, S.CDC_SEQUENCE]
LOW_CEILING = "price_ceiling=500"  # the fixtures' laptops and phones then fail a quarantine rule
NO_TABLETS = "no_tablets"  # a constraint of the warehouse's: it refuses the fixtures' tablets


class Job:
    """One job's command lines: the same sinks for run, status and quarantine."""

    def __init__(self, tmp_path: Path, pg_url: str, schema: str, lake_root: str, source: list[str],
                 batching: list[str], aws: list[str] = ()):
        self.url, self.sql, self.tmp = pg_url, MergeSql(Dialect.POSTGRES, ORDERS, db_schema=schema), tmp_path
        self.warehouse = ["--warehouse-url", pg_url, "--db-schema", schema]
        self.sinks = [*self.warehouse, "--job-name", "ops", *aws]
        self.source = [*source, "--checkpoint-dir", str(tmp_path / "ck")]
        self.lake = ["--lake-root", lake_root, "--docs-location", str(tmp_path / "docs")]
        self.batching = batching

    def run(self, *extra: str) -> None:
        assert main(["run", *self.source, *self.batching, *self.sinks, *self.lake, *extra]) == 0

    def status(self, capsys) -> dict:
        capsys.readouterr()
        assert main(["status", "--json", *self.source, *self.sinks]) == 0
        return json.loads(capsys.readouterr().out)

    def replay(self, capsys, *selection: str) -> str:
        capsys.readouterr()
        assert main(["quarantine", "replay", *selection, *self.sinks, *self.lake,
                     "--replay-dir", str(self.tmp / "replays")]) == 0
        return " ".join(capsys.readouterr().out.split())

    def quarantined(self) -> dict[str, int]:
        with psycopg.connect(self.url) as conn:
            return dict(conn.execute(f"SELECT stage, count(*) FROM {self.sql.quarantine} GROUP BY stage").fetchall())

    def state(self) -> list[dict]:
        return read_state(self.url, self.sql, COLUMNS)


def refuse_tablets(job: Job, refuse: bool) -> None:
    with psycopg.connect(job.url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {job.sql.target} DROP CONSTRAINT IF EXISTS {NO_TABLETS}")
        if refuse:
            conn.execute(f"ALTER TABLE {job.sql.target} ADD CONSTRAINT {NO_TABLETS} "
                         f"CHECK ({quote('product_name')} <> 'Tablet')")


def create_tables(job: Job) -> None:
    """The warehouse's tables before the first run (to put the constraint on): the job's own start-up."""
    assert main(["migrate", *job.sinks]) == 0


def run_with_rejects(job: Job, stages: tuple[str, ...] = S.QUARANTINE_STAGES, extra: tuple[str, ...] = ()) -> None:
    """A run where each stage rejects something: decode (the malformed fixtures), data quality (a ceiling too low
    for laptops and phones), the warehouse (a constraint against tablets)."""
    create_tables(job)
    refuse_tablets(job, True)
    job.run("--dq-param", LOW_CEILING, *extra)
    assert set(stages) <= set(job.quarantined())
    assert diff_rows(job.state(), load_expected(DEFAULT_EXPECTED), ("orderid",))  # some rows are missing


def replay_each_stage(job: Job, capsys, lake: Lake, old_record: tuple[str, ...] = ()) -> None:
    """Fix the rule and the constraint, replay: the warehouse and the lake then hold the fixtures' expected state;
    the same replay again changes nothing; the malformed records fail again and are held once."""
    expected = load_expected(DEFAULT_EXPECTED)
    before = job.quarantined()
    refuse_tablets(job, False)
    if S.WAREHOUSE_STAGE in before:  # on Kinesis, a tablet may be superseded in its batch before the warehouse
        assert "now pass" in job.replay(capsys, "--stage", S.WAREHOUSE_STAGE)
    # o-0006's quantity 9 breaks another rule too: quarantined again, and superseded in the expected state
    assert "now pass" in job.replay(capsys, "--stage", S.DQ_STAGE)
    assert diff_rows(job.state(), expected, ("orderid",)) == []
    assert diff_rows(read_lake_state(lake, COLUMNS), expected, ("orderid",)) == []
    raw = lake.table(lake.raw_uri).to_pyarrow_table().num_rows
    assert "nothing to do" in job.replay(capsys, "--stage", S.DQ_STAGE)  # the same records: the same replay
    again = job.replay(capsys, "--stage", S.DECODE_STAGE)
    assert f"{before[S.DECODE_STAGE]} quarantined again" in again and " 0 now pass" in again
    assert job.quarantined() == before and lake.table(lake.raw_uri).to_pyarrow_table().num_rows == raw
    if old_record:  # replayed alone, an old record does not overwrite the newer one the warehouse holds
        assert "1 older than what is stored" in job.replay(capsys, "--stage", S.DQ_STAGE, *old_record)
        assert diff_rows(job.state(), expected, ("orderid",)) == []


def assert_metrics_agree_with_the_ledger(job: Job, metrics: dict[str, float]) -> None:
    """What CloudWatch got from the run is what the warehouse's ledger and quarantine hold."""
    batches = read_status(job.url, job.sql, "ops", batches=10_000).batches
    assert metrics["BatchesCommitted"] == len(batches) > 1
    assert metrics["RowsUpserted"] == sum(b.upserted_rows for b in batches)
    assert metrics["RowsDeleted"] == sum(b.deleted_rows for b in batches)
    assert metrics["StaleEvents"] == sum(b.stale_rows for b in batches)
    assert metrics["QuarantineRows"] == sum(sum(b.quarantined.values()) for b in batches) > 0
    assert metrics["EventsRead"] >= metrics["EventsQuarantined"] > 0
    assert metrics["EventLagSeconds"] > 0 and metrics["StageSeconds:decode"] > 0


def test_status_and_replay_on_the_file_source(tmp_path, pg_url, db_schema, capsys):
    stage_fixtures(DEFAULT_FIXTURES, tmp_path / "inbox")
    job = Job(tmp_path, pg_url, db_schema, str(tmp_path / "lake"),
              ["--source-dir", str(tmp_path / "inbox")], ["--max-files-per-trigger", "1"])
    run_with_rejects(job)
    status = job.status(capsys)
    assert status["last_batch_id"] == 5 and [b["batch_id"] for b in status["batches"]] == [5, 4, 3, 2, 1, 0]
    assert status["lag"] == {**status["lag"], "source": "files", "files_not_read": 0, "committed_batch_id": 5}
    batch_2 = status["batches"][3]
    assert batch_2["quarantined"][S.DECODE_STAGE] > 0 and batch_2["events_read"] == 9
    assert sum(b["events_read"] for b in status["batches"]) == 27  # every fixture line
    assert all(b["stage_seconds"]["decode"] > 0 for b in status["batches"])
    assert any(b["failed_rules"] and b["dq_outcome"] == "quarantined" for b in status["batches"])
    (tmp_path / "inbox" / "later.jsonl").write_text("{}\n")
    assert job.status(capsys)["lag"]["files_not_read"] == 1

    capsys.readouterr()
    assert main(["quarantine", "list", "--stage", S.WAREHOUSE_STAGE, *job.warehouse]) == 0
    assert "Tablet" not in capsys.readouterr().out  # a line per record: key and reason, not the payload
    assert main(["quarantine", "show", "--stage", S.WAREHOUSE_STAGE, "--limit", "1", *job.warehouse]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["stage"] == S.WAREHOUSE_STAGE and shown[S.PAYLOAD]["dynamodb"]["NewImage"]["product_name"]["S"] \
        == "Tablet"

    # o-0001's first version, quarantined in the first batch
    replay_each_stage(job, capsys, Lake(LakeConfig(str(tmp_path / "lake")), "ops", ORDERS),
                      old_record=("--key", "o-0001", "--batch", "0"))
    with psycopg.connect(job.url, autocommit=True) as conn:  # a ledger an earlier release wrote: no batch facts
        conn.execute(f"ALTER TABLE {job.sql.ledger} DROP COLUMN events_read, DROP COLUMN stage_seconds")
    assert {b["events_read"] for b in job.status(capsys)["batches"]} == {None}


def test_status_and_replay_on_kinesis_with_the_lake_on_s3(tmp_path, pg_url, db_schema, capsys, moto):
    kinesis, stream = moto.client("kinesis"), f"ops-{db_schema}"
    create_kinesis_stream(kinesis, stream, shards=2)
    moto.client("s3").create_bucket(Bucket=db_schema.replace("_", "-"))
    lake_root = f"s3://{db_schema.replace('_', '-')}/lake"
    aws = ["--endpoint-url", moto.endpoint]
    # a few records per batch: the items' versions spread over batches, as the fixture files spread them
    job = Job(tmp_path, pg_url, db_schema, lake_root,
              ["--kinesis-stream", stream], ["--max-records-per-shard", "3", "--trigger-interval", "1 second"], aws)
    put_fixture_lines(kinesis, stream, DEFAULT_FIXTURES)
    status = job.status(capsys)
    assert status["last_batch_id"] is None and status["lag"]["max_age_seconds"] >= 0
    assert all(s["next_unread_sequence"] for s in status["lag"]["shards"].values())  # nothing read: behind
    namespace = f"SalesCdcOps{uuid.uuid4().hex[:8]}"
    # the batches' cut varies: the tablets' fate too
    run_with_rejects(job, stages=(S.DECODE_STAGE, S.DQ_STAGE), extra=("--metrics-namespace", namespace))
    assert_metrics_agree_with_the_ledger(job, cloudwatch_sums(moto.client("cloudwatch"), namespace, "ops"))
    status = job.status(capsys)
    assert all(s["next_unread_sequence"] is None for s in status["lag"]["shards"].values())  # caught up
    replay_each_stage(job, capsys, Lake(LakeConfig(lake_root, moto_storage_options(moto.endpoint)), "ops", ORDERS))
