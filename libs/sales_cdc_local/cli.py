"""``sales-cdc``: run the pipeline locally, generate a table's items, emulate the Pipe, or run the demos."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import webbrowser
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from sales_cdc import config as C
from sales_cdc import local_job as LJ
from sales_cdc.aws import aws_client, aws_resource
from sales_cdc.contract import DEFAULT_CONTRACT, load_contract
from sales_cdc.errors import Interrupted, JobError, one_line
from sales_cdc.job import build_spark, merge_sql, run_stream, stop_on_signals
from sales_cdc.lake import Lake, maintain, moto_storage_options
from sales_cdc.metrics import NAMESPACE
from sales_cdc.migration import Migration, preview
from sales_cdc.quality import DataQualityHalt
from sales_cdc.quality.gx_runner import DocsSite
from sales_cdc.results import RunSummary
from sales_cdc.schema import CDC_SEQUENCE, UNMAPPED
from sales_cdc.settings import job_config
from sales_cdc.sql import Dialect
from sales_cdc.warehouse import PostgresWarehouse

from . import generator as G
from . import logs
from .demo import DEMO_JOB_NAME, DemoOptions, DemoStream, DemoWarehouse, Workload, run_demo
from .embedded import warehouse_connection
from .local_aws import set_up_source
from .parser import DEFAULT_EXPECTED, DEFAULT_FIXTURES, build_parser
from .pipe_emulator import PipeEmulator
from .verify import diff_rows, load_expected, read_state

console = Console()
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
    started = time.monotonic()
    summary = LJ.run(args, _warehouse_url)
    print_summary(summary, time.monotonic() - started)
    return 0


@contextmanager
def _warehouse_url(args: argparse.Namespace) -> Iterator[str]:
    """The warehouse at --warehouse-url, or an embedded PostgreSQL for the run."""
    with warehouse_connection(args.warehouse_url, args.pg_data_dir) as connection:
        yield connection.url


def _contract(args: argparse.Namespace) -> int:
    if args.contract_command == "infer":
        return _contract_infer(args)
    if args.contract_command == "diff":
        for line in preview(load_contract(args.old).entity, load_contract(args.new).entity, args.db_schema):
            print(line)
        return 0
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


def _migrate(args: argparse.Namespace) -> int:
    """``migrate [--dry-run]``: what the job does at start-up, on its own (docs/schema-evolution.md)."""
    contract = load_contract(args.contract)
    config = LJ.job_config_of(args)
    sinks = config.sinks
    lake = Lake(sinks.lake, args.job_name, contract.entity, sinks.soft_delete) if sinks.lake else None
    spark = build_spark(args.job_name)
    with warehouse_connection(args.warehouse_url, args.pg_data_dir) as connection:
        warehouse = PostgresWarehouse(connection.url, merge_sql(Dialect.POSTGRES, config), args.job_name)
        try:
            if not args.dry_run:
                warehouse.ensure_tables()
            migration = Migration(spark, warehouse, lake, args.job_name)
            plan = migration.plan(contract.entity, contract.source)
            for line in plan.describe():
                print(line)
            if plan.pending and not args.dry_run:
                for applied in migration.apply(plan):
                    console.print(f"{applied.sink}: migrated; values moved {applied.moved}, kept {applied.kept}")
        finally:
            warehouse.close()
    return 0


def _backfill(args: argparse.Namespace) -> int:
    from .backfill_cli import run_backfill

    return run_backfill(args, console)


def _status(args: argparse.Namespace) -> int:
    from .status import run_status

    return run_status(args, console)


def _quarantine(args: argparse.Namespace) -> int:
    from . import quarantine as Q

    commands = {"list": Q.run_list, "show": Q.run_show, "replay": Q.run_replay}
    return commands[args.quarantine_command](args, console)


def _history(args: argparse.Namespace) -> int:
    from .history import run_history

    return run_history(args, console)


def _dq_docs(args: argparse.Namespace) -> int:
    if args.stack:
        return _stack_docs(args.stack, args.region, args.endpoint_url)
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


def _stack_docs(stack: str, region: str | None, endpoint: str | None) -> int:
    """The docs site of a deployed stack: its CloudFront URL, else where it is on S3 and how to open it."""
    from .deploy import stack_outputs

    outputs = stack_outputs(aws_client("cloudformation", endpoint=endpoint, region=region or C.REGION), stack)
    if "DocsUrl" in outputs:
        print(outputs["DocsUrl"])
        return 0
    console.print(f"{outputs.get('DocsLocation', '?')}/index.html: the stack's docs bucket is private; deploy with "
                  "--parameter DocsCdn=cloudfront for a URL (docs/deploy.md)", soft_wrap=True)
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
    entity = load_contract(args.contract).entity
    config = job_config(replace(LJ.settings(args), job_name=DEMO_JOB_NAME, docs_location=str(work / "data_docs")),
                        entity)
    stream = C.StreamConfig(C.FileSource(work / "inbox", max_files_per_trigger=1), work / "checkpoint")
    started = time.monotonic()
    spark = build_spark(config.job_name, stream.shuffle_partitions)
    with warehouse_connection(args.warehouse_url, work / "postgres") as connection:
        summary = run_stream(spark, config, stream, connection.url)
        sql = merge_sql(Dialect.POSTGRES, config)
        expected = load_expected(args.expected)
        columns = [*entity.names, UNMAPPED, CDC_SEQUENCE]
        actual = read_state(connection.url, sql, columns)
        problems = diff_rows(actual, expected, entity.keys)
        print_summary(summary, time.monotonic() - started)
        console.print(f"warehouse table {sql.target}: {len(actual)} rows; expected {len(expected)}")
        if connection.server is not None:
            console.print(f"(embedded PostgreSQL data in {work / 'postgres'};"
                          " pass --warehouse-url to use your own)")
    if problems:
        console.print(f"[bold red]MISMATCH[/]: {len(problems)} difference(s)")
        for problem in problems:
            console.print(f"  - {problem}")
        return 1
    console.print("[bold green]OK[/]: the warehouse equals the expected final state of the fixtures")
    return 0


def _demo(args: argparse.Namespace) -> int:
    workload = Workload(args.count, args.update_share, args.delete_share, args.seed, args.rate, args.preload)
    warehouse = DemoWarehouse(args.warehouse_url, args.db_schema, args.soft_delete)
    contract = load_contract(args.contract)
    if args.history:  # the contract's table with its change history kept (docs/history.md)
        contract = replace(contract, entity=replace(contract.entity, history=True))
    options = DemoOptions(contract, args.work_dir, workload, DemoStream(shards=args.shards), warehouse,
                          LJ.dq_params(args))
    result = run_demo(options, console)
    print_summary(result.summary, result.seconds)
    console.print(f"records put on Kinesis: {result.records_on_kinesis}; DynamoDB table: {result.table_rows} items; "
                  f"warehouse: {result.warehouse_rows} rows; lake silver: {result.silver_rows} rows")
    console.print(f"alerts published to SNS (read back through SQS): {len(result.alerts)}")
    console.print(f"CloudWatch metrics (moto, namespace {NAMESPACE}): " + ", ".join(
        f"{name} {result.metrics.get(name, 0):g}" for name in ("BatchesCommitted", "EventsRead", "RowsUpserted",
                                                               "RowsDeleted", "EventsQuarantined")))
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
    history = ", history (warehouse, lake): current versions, a version per write" if contract.entity.history else ""
    console.print(f"[bold green]OK[/]: 0 mismatches — warehouse == lake silver == DynamoDB table, row for row{history}")
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


def _local_setup(args: argparse.Namespace) -> int:
    contract = load_contract(args.contract)
    created = set_up_source(args.endpoint_url, contract.entity, args.table or contract.table, args.kinesis_stream,
                            args.shards, args.bucket, args.region)
    console.print("created: " + "; ".join(created) if created else "everything was there already: nothing created")
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
    lake = Lake(C.LakeConfig(args.lake_root, options, silver_format=args.silver_format), "maintenance",
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
    region = args.region or C.REGION
    load_contract(args.contract)  # refused here, before the wheel is uploaded, if the job would refuse it
    outputs = D.deploy(aws_client("cloudformation", region=region), aws_client("s3", region=region), args.stack,
                       parameters, wheel, contract=args.contract)
    user = D.create_job_user(aws_client("redshift-data", region=region),
                             aws_client("redshift-serverless", region=region), outputs)
    console.print(f"the job's Redshift user {user} may use the schema sales only")
    for key, value in outputs.items():
        console.print(f"{key:<24} {value}")
    if args.start:
        run_id = aws_client("glue", region=args.region or C.REGION).start_job_run(JobName=outputs["JobName"])
        console.print(f"started {outputs['JobName']}: {run_id['JobRunId']}")
    return 0


def _teardown(args: argparse.Namespace) -> int:
    from . import deploy as D

    region = args.region or C.REGION
    emptied = D.teardown(aws_client("cloudformation", region=region), aws_client("s3", region=region), args.stack)
    console.print(f"stack {args.stack} deleted (emptied {', '.join(emptied)}); the table, the lake bucket and the "
                  "Redshift namespace were retained")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    stop_on_signals()
    logs.configure(args.verbose, args.quiet, args.log_format)
    commands = {"run": _run, "status": _status, "quarantine": _quarantine, "history": _history, "contract": _contract,
                "migrate": _migrate, "backfill": _backfill, "demo": _demo, "demo-fixtures": _demo_fixtures,
                "generate": _generate, "local-setup": _local_setup, "pipe": _pipe, "lake-maintain": _lake_maintain,
                "dq-docs": _dq_docs, "deploy": _deploy, "teardown": _teardown}
    try:
        return commands[args.command](args)
    except DataQualityHalt as halt:
        console.print(f"[bold red]HALTED[/]: {escape(str(halt))}")
        return 3
    except KeyboardInterrupt as stop:  # services are stopped by their context managers on the way out
        if isinstance(stop, Interrupted):
            print_summary(stop.summary, time.monotonic() - started)
        console.print("[yellow]stopped[/] on request: what was committed stays; a new run resumes from the checkpoint",
                      soft_wrap=True)
        return 130
    except Exception as exc:  # an expected failure is one line; the traceback is for -v
        if args.verbose:
            console.print_exception()
        console.print(f"[bold red]error[/]: {escape(one_line(exc))}", soft_wrap=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
