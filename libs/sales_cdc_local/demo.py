"""The one-command demo of the whole source side, on this machine:

moto server (own process) + embedded PostgreSQL -> the contract's DynamoDB table (``OrdersRawTable`` by
default) with its stream and Kinesis ``kinesis-for-sales-data`` -> Faker generator writes items (inserts,
updates, deletes) ->
pipe emulator moves the stream to Kinesis while the streaming job runs -> when everything put on
Kinesis has been processed, the warehouse is compared row for row with a scan of the table.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from sales_cdc import config as C
from sales_cdc.contract import Contract
from sales_cdc.job import build_spark, merge_sql, run_stream
from sales_cdc.lake import Lake
from sales_cdc.metrics import NAMESPACE
from sales_cdc.results import RunSummary
from sales_cdc.settings import Settings, job_config
from sales_cdc.sql import Dialect

from . import generator as G
from .embedded import warehouse_connection
from .feeding import Feeding
from .local_aws import (
    KINESIS_STREAM,
    MotoServer,
    create_alert_topic,
    create_kinesis_stream,
    create_source_table,
    enable_stream,
    read_alerts,
)
from .verify import (
    cloudwatch_sums,
    diff_rows,
    history_mismatches,
    metrics_mismatches,
    read_history,
    read_lake_history,
    read_lake_state,
    read_state,
    scan_table,
    state_from_items,
)

LAKE_BUCKET = "sales-lake"
DEMO_JOB_NAME = "sales-cdc-demo"


@dataclass(frozen=True)
class Workload:
    """What the generator writes to the table."""

    count: int = 2000
    update_share: float = 0.2
    delete_share: float = 0.1
    seed: int = 42
    rate: float | None = None  # writes per second; None: as fast as the table takes them
    preload: int = 0  # operations written before the table's stream is enabled, then loaded by a backfill


@dataclass(frozen=True)
class DemoStream:
    """Kinesis and the job's trigger: small batches, so the demo shows several micro-batches."""

    shards: int = 2
    trigger_interval: str = "2 seconds"
    max_records_per_shard: int = 500


@dataclass(frozen=True)
class DemoWarehouse:
    url: str | None = None  # None: an embedded PostgreSQL in the work folder
    db_schema: str = "sales"
    soft_delete: bool = False


@dataclass(frozen=True)
class DemoOptions:
    contract: Contract  # the table the demo creates, fills and replicates
    work_dir: Path = Path(".demo")
    workload: Workload = field(default_factory=Workload)
    stream: DemoStream = field(default_factory=DemoStream)
    warehouse: DemoWarehouse = field(default_factory=DemoWarehouse)
    dq_params: tuple[tuple[str, str], ...] = ()  # values of the suites' $PARAMETERs (``DqConfig.params``)


@dataclass
class DemoResult:
    summary: RunSummary
    mismatches: list[str]
    table_rows: int
    warehouse_rows: int
    records_on_kinesis: int
    seconds: float
    silver_rows: int = 0
    lake_tables: dict[str, str] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)  # subjects of the SNS alerts, read back through SQS
    metrics: dict[str, float] = field(default_factory=dict)  # the run's CloudWatch metrics (moto), summed


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    console = console or Console()
    started = time.monotonic()
    if options.work_dir.exists():
        shutil.rmtree(options.work_dir)
    options.work_dir.mkdir(parents=True)
    with MotoServer() as moto, warehouse_connection(options.warehouse.url, options.work_dir / "postgres") as connection:
        where = "embedded PostgreSQL" if connection.server else "PostgreSQL at --warehouse-url"
        console.print(f"moto server on {moto.endpoint}; warehouse: {where}")
        create_kinesis_stream(moto.client("kinesis"), shards=options.stream.shards)
        moto.client("s3").create_bucket(Bucket=LAKE_BUCKET)
        topic_arn, alert_queue = create_alert_topic(moto.client("sns"), moto.client("sqs"))
        stream_arn, later = _fill(options, moto, console)
        config = _job_config(options, moto.endpoint, topic_arn)
        demo = options.stream
        kinesis = C.KinesisConfig(endpoint_url=moto.endpoint, max_records_per_shard=demo.max_records_per_shard)
        stream = C.StreamConfig(kinesis, options.work_dir / "checkpoint", available_now=False,
                                trigger_interval=demo.trigger_interval)
        preload = options.workload.preload > 0
        with Feeding(moto, stream_arn, options.contract, options.work_dir, later, options.workload.rate,
                     backfill=preload) as feeding:
            spark = build_spark(config.job_name, stream.shuffle_partitions)
            console.print("streaming job running (local Spark, Kinesis source) while the pipe emulator feeds "
                          "Kinesis" + (", the generator writes and the backfill loads the preloaded items…"
                                       if preload else "…"))
            summary = run_stream(spark, config, stream, connection.url, stop_when=feeding.drained)
        if preload:
            console.print(f"backfill: {feeding.backfilled} snapshot records of the preloaded table put on Kinesis")
        result = _compare(options, config, connection.url, moto)
        alerts = [m["Subject"] for m in read_alerts(moto.client("sqs"), alert_queue)]
        metrics = cloudwatch_sums(moto.client("cloudwatch"), NAMESPACE, config.job_name)
    return DemoResult(summary, result.mismatches + metrics_mismatches(metrics, summary), result.table_rows,
                      result.warehouse_rows, feeding.records_put, time.monotonic() - started, result.silver_rows,
                      result.lake_tables, alerts, metrics)


def _job_config(options: DemoOptions, endpoint: str, topic_arn: str) -> C.JobConfig:
    """The job the demo runs: the lake on moto's S3, alerts to moto's SNS, metrics to moto's CloudWatch."""
    warehouse = options.warehouse
    settings = Settings(DEMO_JOB_NAME, options.contract.source, warehouse.db_schema, soft_delete=warehouse.soft_delete,
                        lake_root=f"s3://{LAKE_BUCKET}/lake", docs_location=str(options.work_dir / "data_docs"),
                        dq_params=options.dq_params, sns_topic_arn=topic_arn, metrics_namespace=NAMESPACE,
                        endpoint_url=endpoint)
    return job_config(settings, options.contract.entity)


def _fill(options: DemoOptions, moto: MotoServer, console: Console) -> tuple[str, list[G.Operation]]:
    """The table and its stream; the generator's plan written, all of it now, or (a preload) its first part before
    the stream is enabled, as on a table that existed before its stream. Returns the stream ARN and the operations
    left to write while the job runs."""
    entity, table_name, workload = options.contract.entity, options.contract.table, options.workload
    operations = G.plan(workload.preload + workload.count, entity=entity, update_share=workload.update_share,
                        delete_share=workload.delete_share, seed=workload.seed)
    first, later = (operations[:workload.preload], operations[workload.preload:]) if workload.preload \
        else (operations, [])
    client = moto.client("dynamodb")
    stream_arn = create_source_table(client, entity, table_name, stream=not workload.preload)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"generating {entity.name}", total=len(first))
        counts = G.write_to_dynamodb(first, moto.resource("dynamodb"), table_name, entity=entity,
                                     rate=None if workload.preload else workload.rate,
                                     progress=lambda: progress.advance(task))
    if workload.preload:
        stream_arn = enable_stream(client, table_name)
        console.print(f"preloaded {table_name} with {dict(counts)} before its stream was enabled; {len(later)} more "
                      "operations follow while the job and the backfill run")
    else:
        console.print(f"generator: {dict(counts)} written to {table_name}")
    console.print(f"DynamoDB {table_name} (stream NEW_AND_OLD_IMAGES), Kinesis {KINESIS_STREAM} "
                  f"({options.stream.shards} shards)")
    return stream_arn, later


@dataclass
class _Comparison:
    mismatches: list[str]
    table_rows: int
    warehouse_rows: int
    silver_rows: int
    lake_tables: dict[str, str]


def _compare(options: DemoOptions, config: C.JobConfig, warehouse_url: str, moto: MotoServer) -> _Comparison:
    """The warehouse and the lake's silver against a scan of the table, row for row."""
    entity = options.contract.entity
    sql = merge_sql(Dialect.POSTGRES, config)
    expected = state_from_items(scan_table(moto.resource("dynamodb").Table(options.contract.table)), entity)
    actual = read_state(warehouse_url, sql, entity.names)
    mismatches = [f"warehouse: {m}" for m in diff_rows(actual, expected, entity.keys)]
    sink = Lake(config.sinks.lake, config.job_name, entity, config.sinks.soft_delete)
    silver = read_lake_state(sink, entity.names)
    mismatches += [f"lake silver: {m}" for m in diff_rows(silver, expected, entity.keys)]
    tables = {"raw": sink.raw_uri, "silver": sink.silver_uri, "quarantine": sink.quarantine_uri}
    if sink.rules.keeps_tombstones:
        tables["tombstones"] = sink.tombstones_uri
    if entity.history:
        writes = _writes_per_key(options)
        mismatches += history_mismatches(read_history(warehouse_url, sql), expected, entity,
                                         config.sinks.soft_delete, writes)
        lake_history = read_lake_history(sink)
        if lake_history is not None:
            mismatches += [f"lake {m}" for m in history_mismatches(lake_history, expected, entity,
                                                                    config.sinks.soft_delete, writes)]
            tables["history"] = sink.history_uri
    return _Comparison(mismatches, len(expected), len(actual), len(silver), tables)


def _writes_per_key(options: DemoOptions) -> Counter | None:
    """The generator's writes per key (its plan, again from its seed): each is a stream record, so a version.
    None with a preload: a backfill's snapshot of an item is a version too, taken while writes go on."""
    workload = options.workload
    if workload.preload:
        return None
    plan = G.plan(workload.count, entity=options.contract.entity, update_share=workload.update_share,
                  delete_share=workload.delete_share, seed=workload.seed)
    return Counter(tuple(str(v) for v in operation.key) for operation in plan)
