"""``sales-cdc``: run the pipeline locally, generate a table's items, emulate the Pipe, or run the demos."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading
import time
import webbrowser
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from sales_cdc.config import FORMATS, DqConfig, JobConfig, KinesisConfig, LakeConfig, WarehouseConfig, parse_params
from sales_cdc.contract import DEFAULT_CONTRACT, load_contract
from sales_cdc.errors import JobError, one_line
from sales_cdc.job import SPARK_LOG_LEVEL_ENV, build_spark, check_paths, request_stop, run_stream
from sales_cdc.lake import DeltaLake, maintain, moto_storage_options
from sales_cdc.pipeline import RunSummary
from sales_cdc.quality import DataQualityHalt
from sales_cdc.quality.gx_runner import DocsSite
from sales_cdc.schema import CDC_SEQUENCE, UNMAPPED
from sales_cdc.sql import Dialect, MergeSql

from . import generator as G
from .demo import DemoOptions, run_demo
from .embedded import warehouse_connection
from .local_aws import aws_client, aws_resource
from .pipe_emulator import PipeEmulator
from .verify import diff_rows, load_expected, read_state

console = Console()
DEFAULT_FIXTURES = Path("tests/fixtures/cdc")
DEFAULT_EXPECTED = Path("tests/fixtures/expected/orders.jsonl")


def _add_warehouse_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse-url", default=os.environ.get("SALES_CDC_WAREHOUSE_URL"),
                        help="PostgreSQL URL (env SALES_CDC_WAREHOUSE_URL); default: an embedded PostgreSQL")
    parser.add_argument("--db-schema", default=WarehouseConfig.db_schema,
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


def _dq_params(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    try:
        return parse_params(args.dq_param)
    except ValueError as exc:
        raise JobError(str(exc)) from None


def _add_dq_args(parser: argparse.ArgumentParser, docs_default: str | None) -> None:
    group = parser.add_argument_group("data quality (Great Expectations)")
    group.add_argument("--no-dq", action="store_true", help="skip data-quality validation")
    _add_dq_param_arg(group)
    group.add_argument("--expectations-dir", type=Path, default=DqConfig.expectations_dir,
                       help="GX project with the suites in <dir>/expectations/*.json (default: expectations)")
    group.add_argument("--docs-location", default=docs_default,
                       help=f"Data Docs site: a folder or s3://bucket/prefix (default: {docs_default})")
    group.add_argument("--docs-index-batches", type=int, default=DqConfig.docs_index_batches,
                       help="the Data Docs index lists this many latest batches (default %(default)s); "
                            "pages of older ones stay")
    group.add_argument("--dq-result-format", default=DqConfig.result_format,
                       choices=["BOOLEAN_ONLY", "BASIC", "SUMMARY"],
                       help="GX result detail: SUMMARY shows failing values in the docs, BOOLEAN_ONLY is fastest")
    group.add_argument("--alert-quarantine-share", type=float, default=DqConfig.alert_quarantine_share,
                       help="alert when a batch quarantines more than this share of its events (default 0.05)")
    group.add_argument("--sns-topic-arn", default=None, help="SNS topic for alerts (default: alerts go to the log)")


def _dq_config(args: argparse.Namespace, endpoint_url: str | None = None, region: str = "us-east-1") -> DqConfig | None:
    if args.no_dq:
        return None
    return DqConfig(expectations_dir=args.expectations_dir, docs_location=args.docs_location,
                    docs_endpoint_url=endpoint_url, region=region, docs_index_batches=args.docs_index_batches,
                    params=_dq_params(args),
                    result_format=args.dq_result_format, alert_quarantine_share=args.alert_quarantine_share,
                    sns_topic_arn=args.sns_topic_arn, sns_endpoint_url=endpoint_url)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sales-cdc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every batch, Spark's own errors and, on a failure, the traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the streaming job (source: a folder of Pipe payload files, or Kinesis)")
    _add_contract_arg(run)
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--source-dir", type=Path, help="folder of JSON-lines files the file source watches")
    source.add_argument("--kinesis-stream", help="Kinesis stream name (e.g. kinesis-for-sales-data)")
    run.add_argument("--endpoint-url", default=None, help="AWS endpoint (e.g. a moto server) for the Kinesis source")
    run.add_argument("--region", default=KinesisConfig.region)
    run.add_argument("--starting-position", default=KinesisConfig.starting_position,
                     choices=["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"])
    run.add_argument("--starting-timestamp", default=None, help="with AT_TIMESTAMP: epoch seconds or ISO-8601")
    run.add_argument("--max-records-per-shard", type=int, default=KinesisConfig.max_records_per_shard,
                     help="Kinesis records per shard per batch (default %(default)s)")
    run.add_argument("--checkpoint-dir", type=Path, required=True, help="Spark checkpoint folder (resume point)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--once", dest="available_now", action="store_true", default=True,
                      help="process what is there, then stop (default)")
    mode.add_argument("--continuous", dest="available_now", action="store_false",
                      help="keep running, one micro-batch per --trigger-interval, until Ctrl-C")
    run.add_argument("--trigger-interval", default=JobConfig.trigger_interval)
    run.add_argument("--max-files-per-trigger", type=int, default=None)
    run.add_argument("--job-name", default=JobConfig.job_name)
    run.add_argument("--sink-retry-seconds", type=float, default=JobConfig.sink_retry_seconds,
                     help="retry an unreachable warehouse or lake this long, with backoff, then stop with an error "
                          "(default %(default)s)")
    run.add_argument("--lake-root", default=None,
                     help="also write the Delta lake here (a folder or s3://bucket/prefix); default: warehouse only")
    for layer in ("raw", "silver", "quarantine"):
        run.add_argument(f"--{layer}-format", choices=FORMATS, default=getattr(LakeConfig, f"{layer}_format"),
                         help=f"{layer} layer format (parquet: written by Spark, so a folder here, s3:// in Glue)")
    run.add_argument("--pg-data-dir", type=Path, default=WarehouseConfig.embedded_data_dir,
                     help="data folder of the embedded PostgreSQL (when no --warehouse-url)")
    _add_warehouse_args(run)
    _add_dq_args(run, docs_default=".demo/data_docs")

    demo = sub.add_parser("demo", help="the whole source side on moto: generator -> DynamoDB -> pipe -> Kinesis -> "
                                       "Spark -> PostgreSQL, then warehouse == table, row for row")
    demo.add_argument("--count", type=int, default=2000, help="generated events (default 2000)")
    demo.add_argument("--update-share", type=float, default=0.2)
    demo.add_argument("--delete-share", type=float, default=0.1)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--rate", type=float, default=None, help="events/s written by the generator (default: max)")
    demo.add_argument("--shards", type=int, default=2, help="Kinesis shards")
    demo.add_argument("--work-dir", type=Path, default=Path(".demo"), help="wiped and recreated on every demo")
    _add_contract_arg(demo)
    _add_dq_param_arg(demo)
    _add_warehouse_args(demo)

    contract = sub.add_parser("contract", help="table contracts: check one (docs/contracts.md)")
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

    pipe = sub.add_parser("pipe", help="local EventBridge Pipe: DynamoDB stream -> Kinesis, resumable")
    _add_contract_arg(pipe)
    pipe.add_argument("--table", default=None, help="the DynamoDB table (default: the contract's)")
    pipe.add_argument("--kinesis-stream", default="kinesis-for-sales-data")
    pipe.add_argument("--state-file", type=Path, default=Path(".demo/pipe-state.json"))
    pipe.add_argument("--idle-seconds", type=float, default=10.0, help="stop after this long without new records")
    pipe.add_argument("--endpoint-url", default=None)
    pipe.add_argument("--region", default="us-east-1")
    return parser


def print_summary(summary: RunSummary, seconds: float) -> None:
    table = Table(title=f"sales-cdc run summary ({seconds:.1f} s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary.totals().items():
        table.add_row(name, str(value))
    console.print(table)
    if summary.docs_url:
        console.print(f"data-quality docs: {summary.docs_url}")


def _run(args: argparse.Namespace) -> int:
    warehouse = WarehouseConfig(url=args.warehouse_url, embedded_data_dir=args.pg_data_dir, db_schema=args.db_schema,
                                table=args.table)
    kinesis = None
    if args.kinesis_stream:
        kinesis = KinesisConfig(stream_name=args.kinesis_stream, endpoint_url=args.endpoint_url, region=args.region,
                                starting_position=args.starting_position, starting_timestamp=args.starting_timestamp,
                                max_records_per_shard=args.max_records_per_shard)
    lake = None
    if args.lake_root:
        options = moto_storage_options(args.endpoint_url, args.region) if args.endpoint_url else {}
        lake = LakeConfig(args.lake_root, options, raw_format=args.raw_format,
                          silver_format=args.silver_format, quarantine_format=args.quarantine_format)
    config = JobConfig(source_dir=args.source_dir, kinesis=kinesis, soft_delete=args.soft_delete, lake=lake,
                       checkpoint_dir=args.checkpoint_dir,
                       warehouse=warehouse, dq=_dq_config(args, args.endpoint_url, args.region),
                       job_name=args.job_name, available_now=args.available_now,
                       trigger_interval=args.trigger_interval, max_files_per_trigger=args.max_files_per_trigger,
                       sink_retry_seconds=args.sink_retry_seconds, entity=load_contract(args.contract).entity)
    check_paths(config)  # before Spark and PostgreSQL start
    started = time.monotonic()
    spark = build_spark(config.job_name, config.shuffle_partitions)
    with warehouse_connection(config.warehouse) as connection:
        summary = run_stream(spark, config, connection.url)
    print_summary(summary, time.monotonic() - started)
    return 0


def _contract(args: argparse.Namespace) -> int:
    if args.contract_command == "infer":
        return _contract_infer(args)
    contract = load_contract(args.path)  # a bad one raises ContractError: its one line
    entity = contract.entity
    table = Table(title=f"{args.path}: table {contract.table} -> entity {entity.name}, key {', '.join(entity.keys)}")
    for column in ("column", "DynamoDB", "type", "required", "description"):
        table.add_column(column)
    for f in entity.fields:
        table.add_row(f.name, f.ddb_type, f.spark_type.simpleString(), "yes" if f.required else "",
                      f.description)
    console.print(table)
    console.print("[bold green]OK[/]: a valid contract; attributes it does not name are kept in "
                  f"{UNMAPPED} as DynamoDB typed JSON")
    return 0


def _contract_infer(args: argparse.Namespace) -> int:
    from . import contract_infer as I

    if args.table:
        sample = I.sample_table(aws_client("dynamodb", endpoint=args.endpoint_url, region=args.region), args.table,
                                args.limit)
        source = args.table
    else:
        sample, source = I.sample_payloads(args.payloads, args.limit), str(args.payloads)
    if not sample.items:
        raise JobError(f"no items in {source} to infer a contract from; point --table or --payloads at data")
    text = I.draft(sample, args.entity)
    if args.output is None:
        print(text, end="")
        return 0
    args.output.write_text(text)
    console.print(f"draft contract from {sample.items} items of {source} -> {args.output}; read and edit it, then "
                  f"`sales-cdc contract check {args.output}`")
    return 0


def _dq_docs(args: argparse.Namespace) -> int:
    site = DocsSite(args.docs_location)
    if site.is_s3:
        print(args.website_url.rstrip("/") + "/index.html" if args.website_url else site.index_url)
        return 0
    index = Path(args.docs_location) / "index.html"
    if not index.exists():
        console.print(f"[yellow]no Data Docs yet at {index.resolve()}[/]: run the job (or `make demo`) first")
        return 1
    print(site.index_url)  # plain: scripts read it
    if args.open:
        webbrowser.open(site.index_url)
    return 0


def stage_fixtures(fixtures: Path, inbox: Path) -> list[Path]:
    """Copy fixture files into the watched folder with increasing mtimes: the file source takes files
    in modification-time order, so this replays them in name order, one micro-batch each."""
    inbox.mkdir(parents=True, exist_ok=True)
    files = sorted(fixtures.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no *.jsonl fixtures in {fixtures}")
    base = time.time() - len(files)
    for i, source in enumerate(files):
        target = inbox / source.name
        shutil.copyfile(source, target)
        os.utime(target, (base + i, base + i))
    return files


def _demo_fixtures(args: argparse.Namespace) -> int:
    work = args.work_dir
    if work.exists():
        shutil.rmtree(work)
    if args.contract != DEFAULT_CONTRACT and not (args.fixtures and args.expected):
        raise JobError("demo-fixtures --contract needs --fixtures and --expected: the checked-in fixtures are "
                       "the orders table's (make some with `sales-cdc generate --contract ... --fixtures-dir`)")
    args.fixtures, args.expected = args.fixtures or DEFAULT_FIXTURES, args.expected or DEFAULT_EXPECTED
    files = stage_fixtures(args.fixtures, work / "inbox")
    console.print(f"[bold]demo[/]: {len(files)} fixture files from {args.fixtures} -> Spark (local) -> PostgreSQL")
    warehouse = WarehouseConfig(url=args.warehouse_url, embedded_data_dir=work / "postgres", db_schema=args.db_schema,
                                table=args.table)
    entity = load_contract(args.contract).entity
    config = JobConfig(source_dir=work / "inbox", checkpoint_dir=work / "checkpoint", entity=entity,
                       soft_delete=args.soft_delete,
                       warehouse=warehouse, job_name="sales-cdc-demo", max_files_per_trigger=1,
                       dq=DqConfig(docs_location=str(work / "data_docs"), params=_dq_params(args)))
    started = time.monotonic()
    spark = build_spark(config.job_name, config.shuffle_partitions)
    with warehouse_connection(warehouse) as connection:
        summary = run_stream(spark, config, connection.url)
        sql = MergeSql(Dialect.POSTGRES, entity, db_schema=warehouse.db_schema, table=warehouse.table,
                       soft_delete=args.soft_delete)
        expected = load_expected(args.expected)
        columns = [*entity.names, UNMAPPED, CDC_SEQUENCE]
        actual = read_state(connection.url, sql, columns)
        problems = diff_rows(actual, expected, entity.keys)
        print_summary(summary, time.monotonic() - started)
        console.print(f"warehouse table {sql.target}: {len(actual)} rows; expected {len(expected)}")
        if connection.server is not None:
            console.print(f"(embedded PostgreSQL data in {warehouse.embedded_data_dir};"
                          " pass --warehouse-url to use your own)")
    if problems:
        console.print(f"[bold red]MISMATCH[/]: {len(problems)} difference(s)")
        for problem in problems:
            console.print(f"  - {problem}")
        return 1
    console.print("[bold green]OK[/]: the warehouse equals the expected final state of the fixtures")
    return 0


def _demo(args: argparse.Namespace) -> int:
    options = DemoOptions(load_contract(args.contract), dq_params=_dq_params(args), work_dir=args.work_dir,
                          count=args.count, update_share=args.update_share,
                          delete_share=args.delete_share, seed=args.seed, rate=args.rate, shards=args.shards,
                          warehouse_url=args.warehouse_url, db_schema=args.db_schema, soft_delete=args.soft_delete)
    result = run_demo(options, console)
    print_summary(result.summary, result.seconds)
    console.print(f"records put on Kinesis: {result.records_on_kinesis}; DynamoDB table: {result.table_rows} items; "
                  f"warehouse: {result.warehouse_rows} rows; lake silver: {result.silver_rows} rows")
    console.print(f"alerts published to SNS (read back through SQS): {len(result.alerts)}")
    for alert in result.alerts:
        console.print(f"  - {escape(alert)}")
    console.print("lake tables (Delta, on the demo's moto S3, gone when it stops):")
    for name, uri in result.lake_tables.items():
        console.print(f"  {name:<11} {uri}")
    if result.mismatches:
        console.print(f"[bold red]MISMATCH[/]: {len(result.mismatches)} difference(s) (warehouse, lake vs table)")
        for problem in result.mismatches[:50]:
            console.print(f"  - {problem}")
        return 1
    console.print("[bold green]OK[/]: 0 mismatches — warehouse == lake silver == DynamoDB table, row for row")
    return 0


def _generate(args: argparse.Namespace) -> int:
    contract = load_contract(args.contract)
    operations = G.plan(args.count, entity=contract.entity, update_share=args.update_share,
                        delete_share=args.delete_share, seed=args.seed)
    if args.fixtures_dir:
        paths = G.write_fixtures(operations, args.fixtures_dir, entity=contract.entity, table=contract.table,
                                 records_per_file=args.records_per_file)
        counts = Counter(o.op for o in operations)
        console.print(f"{dict(counts)} written as {len(paths)} Pipe payload file(s) in {args.fixtures_dir}")
        return 0
    table = args.table or contract.table
    dynamodb = aws_resource("dynamodb", endpoint=args.endpoint_url, region=args.region)
    with Progress(console=console) as progress:
        task = progress.add_task(f"writing to {table}", total=len(operations))
        counts = G.write_to_dynamodb(operations, dynamodb, table, entity=contract.entity, rate=args.rate,
                                     progress=lambda: progress.advance(task))
    console.print(f"{dict(counts)} written to DynamoDB table {table}")
    return 0


def _pipe(args: argparse.Namespace) -> int:
    contract = load_contract(args.contract)
    dynamodb = aws_client("dynamodb", endpoint=args.endpoint_url, region=args.region)
    stream_arn = dynamodb.describe_table(TableName=args.table or contract.table)["Table"]["LatestStreamArn"]
    pipe = PipeEmulator(aws_client("dynamodbstreams", endpoint=args.endpoint_url, region=args.region),
                        aws_client("kinesis", endpoint=args.endpoint_url, region=args.region),
                        stream_arn=stream_arn, kinesis_stream=args.kinesis_stream,
                        partition_key=contract.entity.keys[0], state_path=args.state_file)
    try:
        moved = pipe.run(idle_seconds=args.idle_seconds)
    except KeyboardInterrupt:
        moved = pipe.records_put
    console.print(f"pipe: {moved} records put on {args.kinesis_stream}; positions in {args.state_file}")
    return 0


def _lake_maintain(args: argparse.Namespace) -> int:
    options = moto_storage_options(args.endpoint_url, args.region) if args.endpoint_url else {}
    lake = DeltaLake(LakeConfig(args.lake_root, options, silver_format=args.silver_format), "maintenance",
                     load_contract(args.contract).entity)
    spark = build_spark("sales-cdc-maintenance") if args.silver_format == "parquet" else None
    table = Table(title=f"lake maintenance of {args.lake_root}")
    for column in ("table", "files before", "files after", "files vacuumed"):
        table.add_column(column)
    for r in maintain(lake, retention_hours=args.retention_hours, vacuum=not args.no_vacuum, spark=spark,
                      keep_snapshots=args.keep_snapshots):
        table.add_row(r.table, str(r.files_before), str(r.files_after), str(r.files_vacuumed))
    console.print(table)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from . import deploy as D

    parameters = {"RedshiftSubnetIds": args.subnets, "RedshiftSecurityGroupIds": args.security_groups,
                  "AlertEmail": args.alert_email}
    for item in args.parameter:
        key, _, value = item.partition("=")
        parameters[key] = value
    wheel = D.build_wheel()
    region = args.region or "us-east-1"
    load_contract(args.contract)  # refused here, before the wheel is uploaded, if the job would refuse it
    outputs = D.deploy(aws_client("cloudformation", region=region), aws_client("s3", region=region), args.stack,
                       parameters, wheel, contract=args.contract)
    user = D.create_job_user(aws_client("redshift-data", region=region),
                             aws_client("redshift-serverless", region=region), outputs)
    console.print(f"the job's Redshift user {user} may use the schema sales only")
    for key, value in outputs.items():
        console.print(f"{key:<24} {value}")
    if args.start:
        run_id = aws_client("glue", region=args.region or "us-east-1").start_job_run(JobName=outputs["JobName"])
        console.print(f"started {outputs['JobName']}: {run_id['JobRunId']}")
    return 0


def _teardown(args: argparse.Namespace) -> int:
    from . import deploy as D

    region = args.region or "us-east-1"
    emptied = D.teardown(aws_client("cloudformation", region=region), aws_client("s3", region=region), args.stack)
    console.print(f"stack {args.stack} deleted (emptied {', '.join(emptied)}); the table, the lake bucket and the "
                  "Redshift namespace were retained")
    return 0


def _terminate(signum, frame) -> None:
    """SIGTERM: a running query stops between two batches; otherwise the same clean stop as Ctrl-C."""
    if not request_stop():
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # py4j logs a batch's exception, traceback included, before Spark hands it back to us: the job reports it
    # itself (one line; the traceback with -v)
    logging.getLogger("py4j").setLevel(logging.WARNING if args.verbose else logging.CRITICAL)
    os.environ.setdefault(SPARK_LOG_LEVEL_ENV, "ERROR" if args.verbose else "OFF")
    commands = {"run": _run, "contract": _contract, "demo": _demo, "demo-fixtures": _demo_fixtures,
                "generate": _generate, "pipe": _pipe, "lake-maintain": _lake_maintain, "dq-docs": _dq_docs,
                "deploy": _deploy, "teardown": _teardown}
    try:
        return commands[args.command](args)
    except DataQualityHalt as halt:
        console.print(f"[bold red]HALTED[/]: {escape(str(halt))}")
        return 3
    except KeyboardInterrupt:  # services are stopped by their context managers on the way out
        console.print("[yellow]interrupted[/]: stopped cleanly; a new run resumes from the checkpoint")
        return 130
    except Exception as exc:  # an expected failure is one line; the traceback is for -v
        if args.verbose:
            console.print_exception()
        console.print(f"[bold red]error[/]: {escape(one_line(exc))}", soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
