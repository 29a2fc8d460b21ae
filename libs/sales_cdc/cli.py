"""``sales-cdc``: run the pipeline locally, or the end-to-end demo on the checked-in fixtures."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import JobConfig, WarehouseConfig
from .job import build_spark, run_stream, warehouse_connection
from .pipeline import RunSummary
from .schema import CDC_SEQUENCE, ORDERS, UNMAPPED
from .sql import Dialect, MergeSql
from .verify import diff_rows, load_expected, read_state

console = Console()
DEFAULT_FIXTURES = Path("tests/fixtures/cdc")
DEFAULT_EXPECTED = Path("tests/fixtures/expected/orders.jsonl")


def _add_warehouse_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warehouse-url", default=os.environ.get("SALES_CDC_WAREHOUSE_URL"),
                        help="PostgreSQL URL (env SALES_CDC_WAREHOUSE_URL); default: an embedded PostgreSQL")
    parser.add_argument("--db-schema", default="sales", help="warehouse schema (default: sales)")
    parser.add_argument("--table", default="orders", help="current-state table (default: orders)")
    parser.add_argument("--soft-delete", action="store_true",
                        help="keep deleted orders with is_deleted/deleted_at instead of removing them")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sales-cdc", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every batch")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the streaming job over a folder of Pipe payload JSON-lines files")
    run.add_argument("--source-dir", type=Path, required=True, help="folder the file source watches")
    run.add_argument("--checkpoint-dir", type=Path, required=True, help="Spark checkpoint folder (resume point)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--once", dest="available_now", action="store_true", default=True,
                      help="process what is there, then stop (default)")
    mode.add_argument("--continuous", dest="available_now", action="store_false",
                      help="keep running, one micro-batch per --trigger-interval, until Ctrl-C")
    run.add_argument("--trigger-interval", default="10 seconds")
    run.add_argument("--max-files-per-trigger", type=int, default=None)
    run.add_argument("--job-name", default="sales-cdc")
    run.add_argument("--pg-data-dir", type=Path, default=Path(".demo/postgres"),
                     help="data folder of the embedded PostgreSQL (when no --warehouse-url)")
    _add_warehouse_args(run)

    demo = sub.add_parser("demo", help="end to end on the fixtures: file stream -> Spark -> PostgreSQL, then verify")
    demo.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    demo.add_argument("--expected", type=Path, default=DEFAULT_EXPECTED)
    demo.add_argument("--work-dir", type=Path, default=Path(".demo"), help="wiped and recreated on every demo")
    _add_warehouse_args(demo)
    return parser


def print_summary(summary: RunSummary, seconds: float) -> None:
    table = Table(title=f"sales-cdc run summary ({seconds:.1f} s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in summary.totals().items():
        table.add_row(name, str(value))
    console.print(table)


def _run(args: argparse.Namespace) -> int:
    warehouse = WarehouseConfig(url=args.warehouse_url, embedded_data_dir=args.pg_data_dir, db_schema=args.db_schema,
                                table=args.table, soft_delete=args.soft_delete)
    config = JobConfig(source_dir=args.source_dir, checkpoint_dir=args.checkpoint_dir, warehouse=warehouse,
                       job_name=args.job_name, available_now=args.available_now,
                       trigger_interval=args.trigger_interval, max_files_per_trigger=args.max_files_per_trigger)
    started = time.monotonic()
    spark = build_spark(config.job_name, config.shuffle_partitions)
    with warehouse_connection(config.warehouse) as connection:
        summary = run_stream(spark, config, connection.url)
    print_summary(summary, time.monotonic() - started)
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


def _demo(args: argparse.Namespace) -> int:
    work = args.work_dir
    if work.exists():
        shutil.rmtree(work)
    files = stage_fixtures(args.fixtures, work / "inbox")
    console.print(f"[bold]demo[/]: {len(files)} fixture files from {args.fixtures} -> Spark (local) -> PostgreSQL")
    warehouse = WarehouseConfig(url=args.warehouse_url, embedded_data_dir=work / "postgres", db_schema=args.db_schema,
                                table=args.table, soft_delete=args.soft_delete)
    config = JobConfig(source_dir=work / "inbox", checkpoint_dir=work / "checkpoint", warehouse=warehouse,
                       job_name="sales-cdc-demo", max_files_per_trigger=1)
    started = time.monotonic()
    spark = build_spark(config.job_name, config.shuffle_partitions)
    with warehouse_connection(warehouse) as connection:
        summary = run_stream(spark, config, connection.url)
        sql = MergeSql(Dialect.POSTGRES, db_schema=warehouse.db_schema, table=warehouse.table,
                       soft_delete=warehouse.soft_delete)
        expected = load_expected(args.expected)
        columns = [*ORDERS.names, UNMAPPED, CDC_SEQUENCE]
        actual = read_state(connection.url, sql, columns)
        problems = diff_rows(actual, expected, ORDERS.key)
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    return _run(args) if args.command == "run" else _demo(args)


if __name__ == "__main__":
    sys.exit(main())
