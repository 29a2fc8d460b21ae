"""Wiring for the local job: Spark session, warehouse, source, streaming query.

Extract (sources) and load (warehouse) live in their own modules; this one only connects them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from botocore.config import Config
from pyspark import SparkConf, SparkContext
from pyspark.errors import StreamingQueryException
from pyspark.java_gateway import launch_gateway
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from . import faults
from .alerts import LogAlerter, SnsAlerter
from .aws import aws_client
from .config import AlertConfig, FileSource, JobConfig, KinesisConfig, MetricsConfig, StreamConfig, WarehouseConfig
from .errors import Interrupted, JobError
from .lake import Lake
from .metrics import CloudWatchMetrics, Metrics, NoMetrics
from .migration import Migration
from .pipeline import BatchHandler, HandlerOptions
from .quality import DataQuality
from .results import RunSummary
from .sources.files import file_stream
from .sources.kinesis import FORMAT as KINESIS_FORMAT
from .sources.kinesis import KinesisDataSource
from .sql import Dialect, MergeSql
from .warehouse.base import Warehouse
from .warehouse.postgres import PostgresWarehouse

log = logging.getLogger(__name__)


# Session settings the pipeline relies on for speed (local and Glue). HotSpot does not JIT-compile a
# method above 8000 bytes of bytecode; the decode's whole-stage generated code is larger, so without this
# it ran interpreted by the JVM (measured: decode 1.3x slower). Spark's own docs suggest 8000 on HotSpot.
SPARK_SQL_SETTINGS = {"spark.sql.codegen.hugeMethodLimit": "8000"}


def tune_session(spark: SparkSession) -> SparkSession:
    for key, value in SPARK_SQL_SETTINGS.items():
        spark.conf.set(key, value)
    return spark


SPARK_LOG_LEVEL_ENV = "SALES_CDC_SPARK_LOG_LEVEL"
# A file for the JVM's own output (its start-up lines, Spark's log, the Python workers' stderr); unset: the terminal
SPARK_OUTPUT_ENV = "SALES_CDC_SPARK_OUTPUT"


MASTER_ENV = "SALES_CDC_SPARK_MASTER"  # the master of a plain python run (not spark-submit); default local[2]


def build_spark(app_name: str = "sales-cdc", shuffle_partitions: int = 4) -> SparkSession:
    """A local session unless spark-submit already chose a master. Workers use this interpreter."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local runs stay on loopback
    conf = SparkConf().setAll([
        ("spark.app.name", app_name), ("spark.sql.session.timeZone", "UTC"),
        ("spark.sql.shuffle.partitions", str(shuffle_partitions)), ("spark.ui.enabled", "false"),
        ("spark.ui.showConsoleProgress", "false"), ("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")])
    if not conf.contains("spark.master"):  # spark-submit --master wins; plain python runs local[2]
        conf.setMaster(os.environ.get(MASTER_ENV, "local[2]"))
        if _workers_import_the_daemon():
            conf.set("spark.python.daemon.module", DAEMON_MODULE)
    _launch_jvm(conf)
    spark = tune_session(SparkSession.builder.config(conf=conf).getOrCreate())
    # the CLI sets OFF unless -v: an expected failure reaches the user as one line, not Java's stack frames
    spark.sparkContext.setLogLevel(os.environ.get(SPARK_LOG_LEVEL_ENV, "ERROR"))
    if signal.getsignal(signal.SIGTERM) is _on_stop_signal:
        signal.signal(signal.SIGINT, _on_stop_signal)  # pyspark's own Ctrl-C handler replaced ours: ours again
    return spark


DAEMON_MODULE = "sales_cdc.spark_daemon"


def _workers_import_the_daemon() -> bool:
    """Whether this session's Python workers start :mod:`sales_cdc.spark_daemon` (a fix for Python < 3.12):
    only where they need it and can import it. The JVM this process starts, and so its workers (this
    interpreter), get this process's environment: a fresh interpreter with it must find the module."""
    if sys.version_info >= (3, 12) or os.environ.get("PYSPARK_PYTHON") != sys.executable:
        return False
    found = subprocess.run([sys.executable, "-c", f"import importlib.util as u; u.find_spec({DAEMON_MODULE!r}).origin"],
                           capture_output=True, env=os.environ, check=False)
    return found.returncode == 0


def _launch_jvm(conf: SparkConf) -> None:
    """Start Spark's JVM (once per process) in a session of its own: a Ctrl-C at the terminal then reaches this
    process alone, which stops the query between two batches, and not the Python workers in the middle of a task.
    Its output goes to the file named by SALES_CDC_SPARK_OUTPUT, when set, from its first line on."""
    if SparkContext._gateway is not None:  # pyspark's own hook: a gateway its caller started is used as it is
        return
    popen: dict = {"start_new_session": True}
    output = os.environ.get(SPARK_OUTPUT_ENV)
    if output:
        popen["stdout"] = popen["stderr"] = open(output, "ab")  # noqa: SIM115 - the JVM keeps it for its lifetime
    SparkContext._gateway = launch_gateway(conf, popen_kwargs=popen)
    SparkContext._jvm = SparkContext._gateway.jvm


def _on_stop_signal(signum, frame) -> None:
    """Ctrl-C or SIGTERM: a running query stops after the batch in progress (a second one, or none running:
    at once)."""
    if _STOP_REQUESTED.is_set() or not request_stop():
        raise KeyboardInterrupt
    log.warning("stopping after the batch in progress (%s again to stop at once)",
                "Ctrl-C" if signum == signal.SIGINT else "the signal")


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the job cleanly: between two batches, with the run's summary (from the main
    thread; Spark's session keeps this choice when it starts)."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _on_stop_signal)


def merge_sql(dialect: Dialect, config: JobConfig) -> MergeSql:
    """The warehouse's SQL for ``config``'s entity, schema, table and delete mode."""
    warehouse: WarehouseConfig = config.sinks.warehouse
    return MergeSql(dialect, config.entity, db_schema=warehouse.db_schema, table=warehouse.table,
                    soft_delete=config.sinks.soft_delete)


def postgres_warehouse(url: str, config: JobConfig) -> PostgresWarehouse:
    warehouse = PostgresWarehouse(url, merge_sql(Dialect.POSTGRES, config), config.job_name)
    warehouse.ensure_tables()
    return warehouse


def source_stream(spark: SparkSession, stream: StreamConfig) -> DataFrame:
    """The configured streaming source, as ``schema.SOURCE_FIELDS`` columns."""
    source = stream.source
    if isinstance(source, KinesisConfig):
        spark.dataSource.register(KinesisDataSource)
        return spark.readStream.format(KINESIS_FORMAT).options(**source.spark_options()).load()
    return file_stream(spark, str(source.directory), source.max_files_per_trigger)


def start_query(source: DataFrame, handler, stream: StreamConfig) -> StreamingQuery:
    """Start ``source`` -> ``foreachBatch(handler)`` with the configured trigger and checkpoint.

    The Kinesis source is a Python data source, which Spark 4.1 does not drain under ``availableNow``
    (it runs one batch): it always runs on a processing-time trigger and is stopped by ``run_stream``.
    """
    stream.checkpoint_dir.mkdir(exist_ok=True)  # its parent was checked (check_paths)
    writer = source.writeStream.foreachBatch(handler).option("checkpointLocation", str(stream.checkpoint_dir))
    if stream.available_now and not isinstance(stream.source, KinesisConfig):
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=stream.trigger_interval)
    return writer.start()


def check_paths(stream: StreamConfig) -> None:
    """Refuse, before anything starts, a source folder that is not one, and a checkpoint whose parent does
    not exist: a mistyped checkpoint path would otherwise start the stream over, silently, somewhere else."""
    source = stream.source.directory if isinstance(stream.source, FileSource) else None
    if source is not None and not source.is_dir():
        what = "is a file" if source.exists() else "does not exist"
        raise JobError(f"source folder {source} {what}; --source-dir takes the folder the JSON-lines files "
                       "arrive in (create it, or point at it)")
    checkpoint = stream.checkpoint_dir
    if not checkpoint.parent.is_dir():
        raise JobError(f"checkpoint folder {checkpoint}: its parent {checkpoint.parent} does "
                       "not exist; fix the path, or create the parent folder for a new checkpoint")


# Set by a SIGTERM handler (``request_stop``): the running query stops between two batches.
_STOP_REQUESTED = threading.Event()
_AWAITING = threading.Event()  # a query is running in await_query, which watches _STOP_REQUESTED
_RUNNING = threading.Event()  # run_stream is running: a stop asked while its query starts is kept for it
_HANDLERS: list[BatchHandler] = []  # of the running query: told to start no further batch
STOP_GRACE_SECONDS = 120.0  # how long a stop waits for the batch in progress to finish


def request_stop() -> bool:
    """Ask the running query to stop between two batches; False when none is running (stop otherwise).
    The batch in progress finishes; the next one raises StopRequested before writing anything (Spark
    starts the next batch of a backlog at once, so waiting for a pause between batches could miss it)."""
    _STOP_REQUESTED.set()
    for handler in _HANDLERS:
        handler.stop_requested.set()
    return _AWAITING.is_set() or _RUNNING.is_set()


def await_query(query: StreamingQuery, stop_when: Callable[[], bool] | None = None, poll_seconds: float = 0.5) -> None:
    """Wait for the query to end, or stop it between two batches once ``stop_when()`` is true (it returns)
    or a stop was requested (it raises KeyboardInterrupt). Stopping between batches, not in one, keeps
    Spark from interrupting a batch's thread while it calls into Python."""
    _AWAITING.set()
    stop_requested_at = None
    try:
        while query.isActive:
            query.awaitTermination(poll_seconds)
            between_batches = not query.status["isTriggerActive"]
            if _STOP_REQUESTED.is_set():
                stop_requested_at = stop_requested_at or time.monotonic()
                if between_batches or time.monotonic() - stop_requested_at > STOP_GRACE_SECONDS:
                    query.stop()
                    raise KeyboardInterrupt
            elif stop_when is not None and between_batches and stop_when():
                query.stop()  # between batches: the last one is committed, the next run starts after it
                return
        # the query ended between two polls: a failed one raises its error here (isActive alone hides it)
        query.awaitTermination()
    finally:
        _AWAITING.clear()
        if stop_requested_at is not None:  # this query stopped for it: a later one in the process starts afresh
            _STOP_REQUESTED.clear()


def idle_for(seconds: float) -> Callable[[RunSummary], bool]:
    """A ``stop_when`` for ``run_stream``: true once no batch has ended for ``seconds``. A Kinesis source has no end
    of its own: a run of what is there (``--once``) ends when it has been drained that long."""
    seen = {"batches": -1, "since": time.monotonic()}

    def idle(summary: RunSummary) -> bool:
        if len(summary.batches) != seen["batches"]:
            seen.update(batches=len(summary.batches), since=time.monotonic())
        return time.monotonic() - seen["since"] > seconds

    return idle


def alerter_for(alerts: AlertConfig):
    if not alerts.sns_topic_arn:
        return LogAlerter()
    return SnsAlerter(aws_client("sns", endpoint=alerts.sns_endpoint_url, region=alerts.region), alerts.sns_topic_arn)


def metrics_for(metrics: MetricsConfig, job_name: str) -> Metrics:
    if not metrics.namespace:
        return NoMetrics()
    # best effort, as alerts are: a slow or unreachable CloudWatch costs a batch seconds, not minutes of retries
    cloudwatch = aws_client("cloudwatch", endpoint=metrics.endpoint_url, region=metrics.region, config=Config(
        retries={"total_max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=5))
    return CloudWatchMetrics(cloudwatch, job_name, metrics.namespace)


def migrate(spark: SparkSession, config: JobConfig, warehouse: Warehouse) -> JobConfig:
    """Bring every sink to the contract's columns before the first batch (docs/schema-evolution.md); the config
    with the contract they hold (the file's, plus attributes the job added on its own before)."""
    sinks = config.sinks
    lake = Lake(sinks.lake, config.job_name, config.entity, sinks.soft_delete) if sinks.lake else None
    if lake is not None:
        lake.check(spark)
    entity = Migration(spark, warehouse, lake, config.job_name).run(config.entity, config.contract_source)
    warehouse.use(entity)
    return replace(config, entity=entity)


def batch_handler(config: JobConfig, warehouse: Warehouse) -> BatchHandler:
    """The foreachBatch function for ``config``: built once per job (GX context and suites included)."""
    sinks = config.sinks
    lake = Lake(sinks.lake, config.job_name, config.entity, sinks.soft_delete) if sinks.lake else None
    quality = DataQuality(config.dq, config.entity, config.job_name) if config.dq else None
    options = HandlerOptions(job_name=config.job_name, sink_retry_seconds=sinks.retry_seconds,
                             # the share alert belongs to data quality: none without it (the behaviour kept)
                             alert_quarantine_share=config.alerts.quarantine_share if config.dq else 1.0)
    return BatchHandler(warehouse=warehouse, lake=lake, quality=quality,
                        alerter=alerter_for(config.alerts), metrics=metrics_for(config.metrics, config.job_name),
                        options=options)


def run_job(spark: SparkSession, config: JobConfig, warehouse: Warehouse,
            run_query: Callable[[BatchHandler], None]) -> RunSummary:
    """The job's one lifecycle, local and on Glue: build the batch handler over ``warehouse`` and check it
    is ready, run the query (``run_query(handler)`` returns when the query ends), close the warehouse. A
    query that fails because of a batch raises what the batch raised (a data-quality halt, a stop, the
    batch's own error), not Spark's wrapping of it; a halt also when the query itself ended quietly."""
    handler = None
    try:
        handler = batch_handler(migrate(spark, config, warehouse), warehouse)
        handler.check_ready(spark)
        try:
            run_query(handler)
        except StreamingQueryException as failed:
            raise handler.cause_of(failed) from None
        except KeyboardInterrupt:
            raise Interrupted(handler.summary) from None
        handler.raise_if_halted()
    finally:
        try:
            if handler is not None:
                handler.docs_written()
        finally:
            warehouse.close()
    return handler.summary


def run_stream(spark: SparkSession, config: JobConfig, stream: StreamConfig, warehouse_url: str,
               stop_when: Callable[[RunSummary], bool] | None = None) -> RunSummary:
    """Run the local streaming query (``stream``) until drained (files with ``available_now``), until
    ``stop_when(summary)`` is true between two batches, or until Ctrl-C. A data-quality halt raises
    :class:`DataQualityHalt`."""
    faults.check_setting()
    check_paths(stream)

    def run_query(handler: BatchHandler) -> None:
        _HANDLERS.append(handler)
        if _STOP_REQUESTED.is_set():  # asked before the query started: its first batch refuses to start
            handler.stop_requested.set()
        try:
            query = start_query(source_stream(spark, stream), handler, stream)
            try:
                await_query(query, (lambda: stop_when(handler.summary)) if stop_when else None)
            except KeyboardInterrupt:
                log.info("interrupted: stopping the query; the next run resumes from the checkpoint")
                query.stop()
                raise
        finally:
            _HANDLERS.remove(handler)

    _RUNNING.set()
    try:
        return run_job(spark, config, postgres_warehouse(warehouse_url, config), run_query)
    finally:
        _RUNNING.clear()
