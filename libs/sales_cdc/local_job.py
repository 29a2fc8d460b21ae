"""The local streaming job's own command line, with the ``sales_cdc`` package alone (no local harness):

    spark-submit jobs/local_job.py run --source-dir DIR --checkpoint-dir DIR --warehouse-url postgresql://...

as ``jobs/glue_job.py`` runs the same job on Glue. The job's options are defined here once: ``sales-cdc run`` (the
local harness) takes these same options and adds an embedded PostgreSQL, a richer console and the demos.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from . import config as C
from .contract import DEFAULT_CONTRACT, load_contract
from .errors import JobError, one_line
from .job import build_spark, check_paths, idle_for, run_stream, stop_on_signals
from .metrics import NAMESPACE
from .pipeline import PROGRESS_LOGGER
from .quality import DataQualityHalt
from .results import RunSummary
from .settings import Settings, job_config

log = logging.getLogger(__name__)

WAREHOUSE_URL_ENV = "SALES_CDC_WAREHOUSE_URL"
JOB_NAME_HELP = ("the job's name: its ledger rows, data-quality results and alerts carry it (one per stream and "
                 "checkpoint)")
ONCE_IDLE_SECONDS = 15.0  # `--once` on Kinesis: the stream counts as drained after this long without a batch


def add_stream_args(parser: argparse.ArgumentParser) -> None:
    """The query's source, checkpoint and trigger."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--source-dir", type=Path, help="folder of JSON-lines files the file source watches")
    source.add_argument("--kinesis-stream", help="Kinesis stream name (e.g. kinesis-for-sales-data)")
    parser.add_argument("--starting-position", default=C.KinesisConfig.starting_position,
                        choices=["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"],
                        help="where a new checkpoint starts in the stream: its oldest record, new records only, or "
                             "--starting-timestamp")
    parser.add_argument("--starting-timestamp", default=None, help="with AT_TIMESTAMP: epoch seconds or ISO-8601")
    parser.add_argument("--max-records-per-shard", type=int, default=C.KinesisConfig.max_records_per_shard,
                        help="Kinesis records per shard per batch")
    parser.add_argument("--checkpoint-dir", type=Path, required=True, help="Spark checkpoint folder (resume point)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", dest="available_now", action="store_true", default=True,
                      help="process what is there, then stop (default)")
    mode.add_argument("--continuous", dest="available_now", action="store_false",
                      help="keep running, one micro-batch per --trigger-interval, until Ctrl-C")
    parser.add_argument("--trigger-interval", default=C.StreamConfig.trigger_interval,
                        help="time between micro-batches with --continuous (a Spark interval)")
    parser.add_argument("--max-files-per-trigger", type=int, default=None,
                        help="files the file source takes per micro-batch (default: every new file)")


def add_contract_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--contract", type=Path, default=DEFAULT_CONTRACT,
                        help="the table contract: table, key, attributes (default: the tutorial's OrdersRawTable, "
                             "%(default)s)")


def add_warehouse_args(parser: argparse.ArgumentParser, url_help: str) -> None:
    parser.add_argument("--warehouse-url", default=os.environ.get(WAREHOUSE_URL_ENV), help=url_help)
    parser.add_argument("--db-schema", default=C.WarehouseConfig.db_schema,
                        help="warehouse schema (default: %(default)s)")
    parser.add_argument("--table", default=None, help="current-state table (default: the contract's entity name)")
    parser.add_argument("--soft-delete", action="store_true",
                        help="keep deleted items with is_deleted/deleted_at instead of removing them")


def add_dq_param_arg(parser) -> None:
    parser.add_argument("--dq-param", action="append", default=[], metavar="NAME=VALUE",
                        help="a value for the suites' $PARAMETER NAME (repeatable), e.g. price_ceiling=5000; "
                             "a parameter not given keeps the default in its suite file's meta.parameters")


def add_dq_args(parser: argparse.ArgumentParser, docs_default: str | None) -> None:
    group = parser.add_argument_group("data quality (Great Expectations), alerts and metrics")
    group.add_argument("--no-dq", action="store_true", help="skip data-quality validation")
    add_dq_param_arg(group)
    group.add_argument("--expectations-dir", type=Path, default=C.DqConfig.expectations_dir,
                       help="GX project with the suites in <dir>/expectations/*.json (default: the job's own suites)")
    group.add_argument("--docs-location", default=docs_default,
                       help=f"Data Docs site: a folder or s3://bucket/prefix (default: {docs_default or 'none'})")
    group.add_argument("--docs-index-batches", type=int, default=C.DocsConfig.index_batches,
                       help="the Data Docs index lists this many latest batches (default %(default)s); "
                            "pages of older ones stay")
    group.add_argument("--dq-result-format", default=C.DqConfig.result_format,
                       choices=["BOOLEAN_ONLY", "BASIC", "SUMMARY"],
                       help="GX result detail: SUMMARY shows failing values in the docs, BOOLEAN_ONLY is fastest")
    group.add_argument("--dq-screen-rows", type=int, default=C.DqConfig.screen_rows,
                       help="a batch of up to this many valid events is validated on GX's pandas engine first, "
                            "faster; 0: always on Spark (default %(default)s)")
    group.add_argument("--alert-quarantine-share", type=float, default=C.AlertConfig.quarantine_share,
                       help="alert when a batch quarantines more than this share of its events (default 0.05)")
    group.add_argument("--sns-topic-arn", default=None, help="SNS topic for alerts (default: alerts go to the log)")
    group.add_argument("--metrics-namespace", default=None,
                       help=f"publish per-batch CloudWatch metrics to this namespace (the template's is "
                            f"{NAMESPACE}; default: none)")


def add_job_args(parser: argparse.ArgumentParser, url_help: str, docs_default: str | None) -> None:
    """What the job writes where, and how it checks it: the options beside the source, which a replay of
    quarantined records takes too (the same sinks, suites and contract as the job's)."""
    add_contract_arg(parser)
    parser.add_argument("--endpoint-url", default=None, help="AWS endpoint (e.g. a moto server) of the Kinesis "
                                                             "source, the lake on S3, SNS and CloudWatch")
    parser.add_argument("--region", default=C.KinesisConfig.region, help="AWS region")
    parser.add_argument("--job-name", default=C.JobConfig.job_name, help=JOB_NAME_HELP)
    parser.add_argument("--sink-retry-seconds", type=float, default=C.SinkConfig.retry_seconds,
                        help="retry an unreachable warehouse or lake this long, with backoff, then stop with an error")
    parser.add_argument("--lake-root", default=None,
                        help="also write the lake here (a folder or s3://bucket/prefix); default: warehouse only")
    for layer in ("raw", "silver", "quarantine"):
        parser.add_argument(f"--{layer}-format", choices=C.FORMATS, default=getattr(C.LakeConfig, f"{layer}_format"),
                            help=f"{layer} layer format (parquet: written by Spark, so a folder here, s3:// in Glue)")
    add_warehouse_args(parser, url_help)
    add_dq_args(parser, docs_default)


def dq_params(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    try:
        return C.parse_params(args.dq_param)
    except ValueError as exc:
        raise JobError(str(exc)) from None


def settings(args: argparse.Namespace) -> Settings:
    """The job's settings a command was given (its options are named as the settings are)."""
    values = {**vars(args), "contract_source": str(args.contract)}
    if "no_dq" in values:
        values["dq"] = not args.no_dq
    if "dq_param" in values:
        values["dq_params"] = dq_params(args)
    return Settings.of(values)


def job_config_of(args: argparse.Namespace) -> C.JobConfig:
    return job_config(settings(args), load_contract(args.contract).entity)


def stream_config(args: argparse.Namespace) -> C.StreamConfig:
    source: C.FileSource | C.KinesisConfig
    if not args.kinesis_stream:
        source = C.FileSource(args.source_dir, args.max_files_per_trigger)
    else:
        source = C.KinesisConfig(stream_name=args.kinesis_stream, endpoint_url=args.endpoint_url, region=args.region,
                                 starting_position=args.starting_position, starting_timestamp=args.starting_timestamp,
                                 max_records_per_shard=args.max_records_per_shard)
    return C.StreamConfig(source, args.checkpoint_dir, available_now=args.available_now,
                          trigger_interval=args.trigger_interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="local_job.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_command = commands.add_parser("run", help="run the streaming job (`run --help` lists its options)")
    run_command.add_argument("-v", "--verbose", action="store_true",
                             help="log every step and, on a failure, the traceback")
    add_stream_args(run_command)
    add_job_args(run_command, f"PostgreSQL URL of the warehouse (or env {WAREHOUSE_URL_ENV})", docs_default=None)
    return parser


@contextmanager
def given_warehouse(args: argparse.Namespace) -> Iterator[str]:
    if not args.warehouse_url:
        raise JobError(f"no warehouse: give --warehouse-url postgresql://user@host:5432/db (or set "
                       f"{WAREHOUSE_URL_ENV}); `sales-cdc run` starts an embedded PostgreSQL instead")
    yield args.warehouse_url


def run(args: argparse.Namespace, warehouse: Callable[[argparse.Namespace], AbstractContextManager[str]]
        = given_warehouse) -> RunSummary:
    """Run the job the options describe until the source is drained (``--once``) or it is stopped; its summary.
    ``warehouse(args)`` gives the warehouse's URL for the run (the harness may start one)."""
    config, stream = job_config_of(args), stream_config(args)
    check_paths(stream)  # before Spark and the warehouse start
    spark = build_spark(config.job_name, stream.shuffle_partitions)
    # Kinesis has no end: --once stops once the stream is drained (no batch for a while)
    drained = idle_for(ONCE_IDLE_SECONDS) if args.kinesis_stream and stream.available_now else None
    with warehouse(args) as url:
        return run_stream(spark, config, stream, url, stop_when=drained)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)  # one line per batch
    stop_on_signals()
    started = time.monotonic()
    try:
        summary = run(args)
    except DataQualityHalt as halt:
        print(f"HALTED: {halt}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("stopped on request: what was committed stays; a new run resumes from the checkpoint", file=sys.stderr)
        return 130
    except Exception as exc:  # an expected failure is one line; the traceback is for -v
        if args.verbose:
            log.exception("the job failed")
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    print(f"sales-cdc local job: {time.monotonic() - started:.1f} s")
    for name, value in summary.totals().items():
        print(f"  {name}: {value}")
    return 0
