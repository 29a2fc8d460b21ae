"""Glue 6.0 batch job (``glueetl``) of the backfill (docs/backfill.md): a table's existing items fed to the
streaming job's Kinesis stream as snapshot records, from a parallel Scan or from a DynamoDB export. ``awsglue`` is
never imported here: ``jobs/glue_backfill.py`` passes in ``getResolvedOptions`` and the Spark session.

The same code as ``sales-cdc backfill`` runs: the Scan's segments on the driver's threads, its checkpoint an S3
object (a job run started again resumes it); an export's files read by the executors, each putting its own records.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .backfill import KinesisTarget, ScanSettings, export_backfill, scan_backfill
from .glue import GlueParam, contract_at
from .sources.export import s3_export
from .sources.scan import S3Text

BACKFILL_PARAMS: tuple[GlueParam, ...] = (
    GlueParam("stream_arn", None, "ARN of the Kinesis stream the streaming job reads: the backfill feeds it"),
    GlueParam("checkpoint_uri", None, "s3:// prefix of the Scan's checkpoints, one object per table: a run started "
              "again resumes; a new snapshot needs another prefix"),
    GlueParam("contract_uri", "", "s3:// URI of the table contract; empty: the packaged default"),
    GlueParam("table", "", "the table to scan; empty: the contract's"),
    GlueParam("export_uri", "", "s3:// folder of a DynamoDB export (DYNAMODB_JSON); empty: a parallel Scan"),
    GlueParam("segments", "4", "Scan segments read in parallel"),
    GlueParam("page_size", "1000", "items per Scan page (a checkpoint after each)"),
    GlueParam("rate", "", "read capacity units per second for the whole Scan; empty: no limit"),
)


def stream_target(stream_arn: str) -> KinesisTarget:
    """``arn:aws:kinesis:<region>:<account>:stream/<name>`` as the Kinesis target in its own region."""
    parts = stream_arn.split(":")
    if len(parts) != 6 or not parts[5].startswith("stream/"):
        raise SystemExit(f"--stream_arn {stream_arn!r} is not a Kinesis stream ARN (arn:aws:kinesis:<region>:"
                         "<account>:stream/<name>)")
    return KinesisTarget(parts[5].removeprefix("stream/"), region=parts[3])


def run(spark, args: dict[str, str], clients: Callable[[str], Any]) -> str:
    """The backfill the parameters ask for; a one-line account of what it fed."""
    contract = contract_at(clients("s3"), args["contract_uri"], Path(tempfile.mkdtemp(prefix="sales-cdc-")))
    table, target = args["table"] or contract.table, stream_target(args["stream_arn"])
    if args["export_uri"]:
        export = s3_export(clients("s3"), args["export_uri"])
        count = export_backfill(spark, export, contract.entity, target, table)
        return f"backfill from the export {export.folder}: {count} items fed to {target.stream_name}"
    checkpoint = S3Text(clients("s3"), f"{args['checkpoint_uri'].rstrip('/')}/{table}.json")
    settings = ScanSettings(table, checkpoint, int(args["segments"]), int(args["page_size"]),
                            float(args["rate"]) if args["rate"] else None)
    result = scan_backfill(clients("dynamodb"), contract.entity, target, settings)
    return (f"backfill of {table}: {result.items} items fed to {target.stream_name} in {result.seconds:.0f} s "
            f"({result.items_in_all} in all runs; checkpoint {checkpoint})")
