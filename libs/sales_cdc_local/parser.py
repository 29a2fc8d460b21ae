"""The ``sales-cdc`` command line: its commands and their options (defaults from the job's config classes)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sales_cdc import config as C
from sales_cdc.contract import DEFAULT_CONTRACT
from sales_cdc.errors import JobError

from .embedded import DEFAULT_DATA_DIR

DEFAULT_FIXTURES = Path("tests/fixtures/cdc")
DEFAULT_EXPECTED = Path("tests/fixtures/expected/orders.jsonl")


def _add_warehouse_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse-url", default=os.environ.get("SALES_CDC_WAREHOUSE_URL"),
                        help="PostgreSQL URL (env SALES_CDC_WAREHOUSE_URL); default: an embedded PostgreSQL")
    parser.add_argument("--db-schema", default=C.WarehouseConfig.db_schema,
                        help="warehouse schema (default: %(default)s)")
    parser.add_argument("--table", default=None, help="current-state table (default: the contract's entity, orders)")
    parser.add_argument("--soft-delete", action="store_true",
                        help="keep deleted orders with is_deleted/deleted_at instead of removing them")


def _add_contract_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--contract", type=Path, default=DEFAULT_CONTRACT,
                        help="the table contract: table, key, attributes (default: the tutorial's OrdersRawTable, "
                             "%(default)s)")


def _add_dq_param_arg(parser) -> None:
    parser.add_argument("--dq-param", action="append", default=[], metavar="NAME=VALUE",
                        help="a value for the suites' $PARAMETER NAME (repeatable), e.g. price_ceiling=5000; "
                             "a parameter not given keeps the default in its suite file's meta.parameters")


def dq_params(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    try:
        return C.parse_params(args.dq_param)
    except ValueError as exc:
        raise JobError(str(exc)) from None


def _add_dq_args(parser: argparse.ArgumentParser, docs_default: str | None) -> None:
    group = parser.add_argument_group("data quality (Great Expectations)")
    group.add_argument("--no-dq", action="store_true", help="skip data-quality validation")
    _add_dq_param_arg(group)
    group.add_argument("--expectations-dir", type=Path, default=C.DqConfig.expectations_dir,
                       help="GX project with the suites in <dir>/expectations/*.json (default: expectations)")
    group.add_argument("--docs-location", default=docs_default,
                       help=f"Data Docs site: a folder or s3://bucket/prefix (default: {docs_default})")
    group.add_argument("--docs-index-batches", type=int, default=C.DocsConfig.index_batches,
                       help="the Data Docs index lists this many latest batches (default %(default)s); "
                            "pages of older ones stay")
    group.add_argument("--dq-result-format", default=C.DqConfig.result_format,
                       choices=["BOOLEAN_ONLY", "BASIC", "SUMMARY"],
                       help="GX result detail: SUMMARY shows failing values in the docs, BOOLEAN_ONLY is fastest")
    group.add_argument("--alert-quarantine-share", type=float, default=C.AlertConfig.quarantine_share,
                       help="alert when a batch quarantines more than this share of its events (default 0.05)")
    group.add_argument("--sns-topic-arn", default=None, help="SNS topic for alerts (default: alerts go to the log)")


def dq_config(args: argparse.Namespace, endpoint_url: str | None = None,
              region: str = "us-east-1") -> C.DqConfig | None:
    if args.no_dq:
        return None
    docs = C.DocsConfig(args.docs_location, endpoint_url, region, index_batches=args.docs_index_batches)
    return C.DqConfig(expectations_dir=args.expectations_dir, docs=docs, params=dq_params(args),
                      result_format=args.dq_result_format)


def alert_config(args: argparse.Namespace, endpoint_url: str | None = None, region: str = "us-east-1") -> C.AlertConfig:
    return C.AlertConfig(args.sns_topic_arn, endpoint_url, region, quarantine_share=args.alert_quarantine_share)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sales-cdc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every batch, Spark's own errors and, on a failure, the traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_demos(sub)
    _add_contract(sub)
    _add_migrate(sub)
    _add_backfill(sub)
    _add_tools(sub)
    _add_aws(sub)
    return parser


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run the streaming job (source: a folder of Pipe payload files, or Kinesis)")
    _add_contract_arg(run)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--source-dir", type=Path, help="folder of JSON-lines files the file source watches")
    source.add_argument("--kinesis-stream", help="Kinesis stream name (e.g. kinesis-for-sales-data)")
    run.add_argument("--endpoint-url", default=None, help="AWS endpoint (e.g. a moto server) for the Kinesis source")
    run.add_argument("--region", default=C.KinesisConfig.region)
    run.add_argument("--starting-position", default=C.KinesisConfig.starting_position,
                     choices=["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"])
    run.add_argument("--starting-timestamp", default=None, help="with AT_TIMESTAMP: epoch seconds or ISO-8601")
    run.add_argument("--max-records-per-shard", type=int, default=C.KinesisConfig.max_records_per_shard,
                     help="Kinesis records per shard per batch (default %(default)s)")
    run.add_argument("--checkpoint-dir", type=Path, required=True, help="Spark checkpoint folder (resume point)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--once", dest="available_now", action="store_true", default=True,
                      help="process what is there, then stop (default)")
    mode.add_argument("--continuous", dest="available_now", action="store_false",
                      help="keep running, one micro-batch per --trigger-interval, until Ctrl-C")
    run.add_argument("--trigger-interval", default=C.StreamConfig.trigger_interval)
    run.add_argument("--max-files-per-trigger", type=int, default=None)
    run.add_argument("--job-name", default=C.JobConfig.job_name)
    run.add_argument("--sink-retry-seconds", type=float, default=C.SinkConfig.retry_seconds,
                     help="retry an unreachable warehouse or lake this long, with backoff, then stop with an error "
                          "(default %(default)s)")
    run.add_argument("--lake-root", default=None,
                     help="also write the Delta lake here (a folder or s3://bucket/prefix); default: warehouse only")
    for layer in ("raw", "silver", "quarantine"):
        run.add_argument(f"--{layer}-format", choices=C.FORMATS, default=getattr(C.LakeConfig, f"{layer}_format"),
                         help=f"{layer} layer format (parquet: written by Spark, so a folder here, s3:// in Glue)")
    run.add_argument("--pg-data-dir", type=Path, default=DEFAULT_DATA_DIR,
                     help="data folder of the embedded PostgreSQL (when no --warehouse-url)")
    _add_warehouse_args(run)
    _add_dq_args(run, docs_default=".demo/data_docs")


def _add_demos(sub) -> None:
    demo = sub.add_parser("demo", help="the whole source side on moto: generator -> DynamoDB -> pipe -> Kinesis -> "
                                       "Spark -> PostgreSQL, then warehouse == table, row for row")
    demo.add_argument("--count", type=int, default=2000, help="generated events (default 2000)")
    demo.add_argument("--update-share", type=float, default=0.2)
    demo.add_argument("--delete-share", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--rate", type=float, default=None, help="events/s written by the generator (default: max)")
    demo.add_argument("--preload", type=int, default=0,
                      help="operations written before the table's stream is enabled (a table older than its stream), "
                           "loaded by a backfill while the job runs and --count more are written (docs/backfill.md)")
    demo.add_argument("--shards", type=int, default=2, help="Kinesis shards")
    demo.add_argument("--work-dir", type=Path, default=Path(".demo"), help="wiped and recreated on every demo")
    _add_contract_arg(demo)
    _add_dq_param_arg(demo)
    _add_warehouse_args(demo)
    fixtures = sub.add_parser("demo-fixtures", help="offline: the checked-in fixtures through the file source, "
                                                    "then compared with their expected state")
    fixtures.add_argument("--fixtures", type=Path, default=None,
                          help=f"folder of Pipe payload files (default, with the default contract: {DEFAULT_FIXTURES})")
    fixtures.add_argument("--expected", type=Path, default=None,
                          help=f"JSON lines of the expected final rows (default, with the default contract: "
                               f"{DEFAULT_EXPECTED})")
    fixtures.add_argument("--work-dir", type=Path, default=Path(".demo"), help="wiped and recreated on every demo")
    _add_contract_arg(fixtures)
    _add_dq_param_arg(fixtures)
    _add_warehouse_args(fixtures)


def _add_contract(sub) -> None:
    contract = sub.add_parser("contract", help="table contracts: check, draft or compare them (docs/contracts.md)")
    contract_commands = contract.add_subparsers(dest="contract_command", required=True)
    check = contract_commands.add_parser("check", help="validate a contract file; print its columns")
    check.add_argument("path", type=Path)
    infer = contract_commands.add_parser("infer", help="draft a contract from a table sample or payload files")
    infer_source = infer.add_mutually_exclusive_group(required=True)
    infer_source.add_argument("--table", help="DynamoDB table to sample (a paginated Scan)")
    infer_source.add_argument("--payloads", type=Path, help="folder of *.jsonl Pipe payload files")
    infer.add_argument("--limit", type=int, default=1000, help="items to sample (default %(default)s)")
    infer.add_argument("--entity", default=None, help="entity name (default: from the table name)")
    infer.add_argument("--endpoint-url", default=None, help="AWS endpoint (e.g. a moto server)")
    infer.add_argument("--region", default="us-east-1")
    infer.add_argument("--output", type=Path, default=None, help="write the draft here (default: print it)")
    diff = contract_commands.add_parser("diff", help="what changes from one contract to another, and the statements "
                                                     "each kind of sink would run (docs/schema-evolution.md)")
    diff.add_argument("old", type=Path, help="the contract the sinks hold now")
    diff.add_argument("new", type=Path, help="the contract to move to")
    diff.add_argument("--db-schema", default=C.WarehouseConfig.db_schema,
                      help="warehouse schema (default: %(default)s)")


def _add_backfill(sub) -> None:
    backfill = sub.add_parser("backfill", help="load a table's existing items (a parallel Scan, or a DynamoDB export) "
                                               "through the running job (docs/backfill.md)")
    _add_contract_arg(backfill)
    source = backfill.add_mutually_exclusive_group(required=True)
    source.add_argument("--scan", action="store_true", help="scan the table (--table, default the contract's)")
    source.add_argument("--export", help="a DynamoDB export (DYNAMODB_JSON): its folder, or s3://bucket/prefix")
    target = backfill.add_mutually_exclusive_group(required=True)
    target.add_argument("--kinesis-stream", help="feed the job's Kinesis stream (e.g. kinesis-for-sales-data)")
    target.add_argument("--to-dir", type=Path, help="feed the folder the job's file source watches (its --source-dir)")
    target.add_argument("--stack", help="run it on AWS: start the stack's Glue backfill job, which feeds the stack's "
                                        "stream (--export then names an export on S3)")
    backfill.add_argument("--table", default=None, help="the DynamoDB table to scan (default: the contract's)")
    backfill.add_argument("--segments", type=int, default=4, help="parallel Scan segments (default %(default)s)")
    backfill.add_argument("--rate", type=float, default=None,
                          help="read capacity units per second for the Scan, all segments together (default: no limit)")
    backfill.add_argument("--page-size", type=int, default=1000, help="items per Scan page (default %(default)s)")
    backfill.add_argument("--checkpoint", type=Path, default=None,
                          help="the Scan's progress file: run again with it to resume (default .backfill/<table>.json)")
    backfill.add_argument("--endpoint-url", default=None, help="AWS endpoint (e.g. a moto server)")
    backfill.add_argument("--region", default=C.KinesisConfig.region)


def _add_migrate(sub) -> None:
    migrate = sub.add_parser("migrate", help="bring the warehouse and the lake to a contract's columns, as the job "
                                             "does at start-up (docs/schema-evolution.md)")
    _add_contract_arg(migrate)
    migrate.add_argument("--dry-run", action="store_true", help="print what each sink would run; change nothing")
    migrate.add_argument("--lake-root", default=None,
                         help="the lake (a folder or s3://bucket/prefix), if the job has one")
    migrate.add_argument("--silver-format", choices=C.FORMATS, default=C.LakeConfig.silver_format)
    migrate.add_argument("--endpoint-url", default=None, help="S3 endpoint of the lake (e.g. a moto server)")
    migrate.add_argument("--region", default=C.KinesisConfig.region)
    migrate.add_argument("--job-name", default=C.JobConfig.job_name)
    migrate.add_argument("--pg-data-dir", type=Path, default=DEFAULT_DATA_DIR,
                         help="data folder of the embedded PostgreSQL (when no --warehouse-url)")
    _add_warehouse_args(migrate)


def _add_tools(sub) -> None:
    docs = sub.add_parser("dq-docs", help="print (or open) the location of the data-quality Data Docs site")
    docs.add_argument("--docs-location", default=".demo/data_docs", help="folder or s3://bucket/prefix")
    docs.add_argument("--website-url", default=None,
                      help="the docs bucket's website endpoint (printed instead of the s3:// location)")
    docs.add_argument("--open", action="store_true", help="open the index in a browser (local folders)")
    generate = sub.add_parser("generate", help="Faker items of the contract's table (orders by default): to DynamoDB, "
                                               "or to Pipe-format fixture files")
    _add_contract_arg(generate)
    generate.add_argument("--count", type=int, default=1000)
    generate.add_argument("--update-share", type=float, default=0.2)
    generate.add_argument("--delete-share", type=float, default=0.1)
    generate.add_argument("--seed", type=int, default=42)
    generate.add_argument("--rate", type=float, default=None, help="events/s (default: as fast as possible)")
    target = generate.add_mutually_exclusive_group(required=True)
    target.add_argument("--table", nargs="?", const="", help="write to this DynamoDB table (no value: the "
                                                           "contract's table, e.g. OrdersRawTable)")
    target.add_argument("--fixtures-dir", type=Path, help="write Pipe payload JSON-lines files here instead")
    generate.add_argument("--records-per-file", type=int, default=1000)
    generate.add_argument("--endpoint-url", default=None, help="AWS endpoint, e.g. a moto server")
    generate.add_argument("--region", default="us-east-1")
    maintain = sub.add_parser("lake-maintain", help="compact small files and vacuum old ones in the Delta lake")
    maintain.add_argument("--lake-root", required=True, help="folder or s3://bucket/prefix")
    _add_contract_arg(maintain)
    maintain.add_argument("--retention-hours", type=int, default=168,
                          help="keep files a reader of a version this recent may need (default 7 days)")
    maintain.add_argument("--no-vacuum", action="store_true", help="compact only")
    maintain.add_argument("--silver-format", choices=["delta", "parquet"], default="delta",
                          help="parquet: prune old silver snapshots instead (starts a local Spark)")
    maintain.add_argument("--keep-snapshots", type=int, default=10, help="Parquet silver snapshots to keep")
    maintain.add_argument("--endpoint-url", default=None, help="S3 endpoint, e.g. a moto server")
    maintain.add_argument("--region", default="us-east-1")
    pipe = sub.add_parser("pipe", help="local EventBridge Pipe: DynamoDB stream -> Kinesis, resumable")
    _add_contract_arg(pipe)
    pipe.add_argument("--table", default=None, help="the DynamoDB table (default: the contract's)")
    pipe.add_argument("--kinesis-stream", default="kinesis-for-sales-data")
    pipe.add_argument("--state-file", type=Path, default=Path(".demo/pipe-state.json"))
    pipe.add_argument("--idle-seconds", type=float, default=10.0, help="stop after this long without new records")
    pipe.add_argument("--endpoint-url", default=None)
    pipe.add_argument("--region", default="us-east-1")


def _add_aws(sub) -> None:
    deploy = sub.add_parser("deploy", help="build the wheel, deploy the CloudFormation stack, upload job artifacts")
    deploy.add_argument("--stack", default="sales-cdc")
    deploy.add_argument("--subnets", required=True, help="comma-separated private subnet ids for Redshift Serverless")
    deploy.add_argument("--security-groups", required=True, help="comma-separated security group ids")
    deploy.add_argument("--alert-email", default="", help="e-mail subscribed to the alert topic")
    deploy.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="any other stack parameter (repeatable), e.g. KinesisStreamMode=PROVISIONED")
    deploy.add_argument("--start", action="store_true", help="start a job run after deploying")
    _add_contract_arg(deploy)
    deploy.add_argument("--region", default=None)
    teardown = sub.add_parser("teardown", help="empty the artifacts/docs buckets and delete the stack "
                                               "(table, lake bucket and Redshift namespace are retained)")
    teardown.add_argument("--stack", default="sales-cdc")
    teardown.add_argument("--region", default=None)
