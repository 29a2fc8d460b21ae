"""``sales-cdc backfill``: a table's existing items into the running job's input (docs/backfill.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from sales_cdc.aws import aws_client
from sales_cdc.backfill import FolderTarget, KinesisTarget, ScanSettings, Target, export_backfill, scan_backfill
from sales_cdc.contract import load_contract
from sales_cdc.errors import JobError
from sales_cdc.job import build_spark
from sales_cdc.sources.export import copied_locally, local_export, s3_export
from sales_cdc.sources.scan import LocalText

from .deploy import start_backfill


def _target(args: argparse.Namespace) -> Target:
    if args.kinesis_stream:
        return KinesisTarget(args.kinesis_stream, args.endpoint_url, args.region)
    return FolderTarget(args.to_dir)


APPLIED = ("The job applies them: its run summary and its ledger (snapshot_rows, snapshot_loaded_rows, "
           "snapshot_quarantined_rows) count the rows it loaded, skipped as no newer than the row it holds, and "
           "quarantined")


def _where(target: Target) -> str:
    return f"Kinesis stream {target.stream_name}" if isinstance(target, KinesisTarget) else f"folder {target.folder}"


def run_backfill(args: argparse.Namespace, console: Console) -> int:
    if args.stack:
        return _on_glue(args, console)
    contract = load_contract(args.contract)
    target = _target(args)
    if args.export:
        return _from_export(args, contract, target, console)
    table = args.table or contract.table
    dynamodb = aws_client("dynamodb", endpoint=args.endpoint_url, region=args.region)
    total = dynamodb.describe_table(TableName=table)["Table"].get("ItemCount") or None  # approximate, may lag
    settings = ScanSettings(table, LocalText(args.checkpoint or Path(".backfill") / f"{table}.json"), args.segments,
                            args.page_size, args.rate)
    columns = (TextColumn("[bold]backfill[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(table, total=total)
        result = scan_backfill(dynamodb, contract.entity, target, settings, lambda n: progress.advance(task, n))
    rate = result.items / result.seconds if result.seconds else 0.0
    console.print(f"backfill of {table}: {result.items} items fed to the {_where(target)} in {result.seconds:.1f} s "
                  f"({rate:,.0f} items/s, {result.capacity_units:,.1f} read capacity units); {result.items_in_all} "
                  f"items in all runs of this backfill (checkpoint {settings.checkpoint}). {APPLIED}")
    return 0


def _on_glue(args: argparse.Namespace, console: Console) -> int:
    """Start the stack's Glue backfill job with this command's settings; it runs on AWS, this returns."""
    if args.export and not args.export.startswith("s3://"):
        raise JobError(f"--export {args.export}: the Glue job reads an export on S3; export the table to the stack's "
                       "ExportsLocation (s3://<lake bucket>/exports/) and give that s3:// folder")
    arguments = {"export_uri": args.export or "", "segments": str(args.segments), "page_size": str(args.page_size),
                 "rate": "" if args.rate is None else str(args.rate), **({"table": args.table} if args.table else {})}
    job, run_id = start_backfill(aws_client("cloudformation", endpoint=args.endpoint_url, region=args.region),
                                 aws_client("glue", endpoint=args.endpoint_url, region=args.region), args.stack,
                                 arguments)
    console.print(f"backfill job {job} started on Glue (run {run_id}): it feeds the stack's stream, and the streaming "
                  f"job applies the items. Follow it with `aws glue get-job-run --job-name {job} --run-id {run_id}`; "
                  f"a run started again resumes the Scan. {APPLIED}")
    return 0


def _from_export(args: argparse.Namespace, contract, target: Target, console: Console) -> int:
    if args.export.startswith("s3://"):
        s3 = aws_client("s3", endpoint=args.endpoint_url, region=args.region)
        export = copied_locally(s3, s3_export(s3, args.export))  # a local Spark reads no s3:// (Glue does)
    else:
        export = local_export(Path(args.export))
    spark = build_spark("sales-cdc-backfill")
    count = export_backfill(spark, export, contract.entity, target, args.table or contract.table)
    console.print(f"backfill from the export of {export.folder} (taken at {export.export_time}, {export.item_count} "
                  f"items by its manifest): {count} items fed to the {_where(target)}. {APPLIED}")
    return 0
