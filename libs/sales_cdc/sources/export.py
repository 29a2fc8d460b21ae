"""A DynamoDB export to S3 (the DYNAMODB_JSON format) as snapshot records, read by Spark: a large table is loaded
without reading its capacity, and the export's files are read by the executors, never on the driver.

What an export writes (docs/backfill.md): ``<prefix>/AWSDynamoDB/<ExportId>/manifest-summary.json`` (``exportTime``,
``itemCount``, ``outputFormat``), ``manifest-files.json`` (one JSON object per line, each naming a data file by its
``dataFileS3Key``) and ``data/*.json.gz``: gzipped lines of ``{"Item": {...typed JSON...}}``. The export's time is
its snapshot's: every item is the item as it was then.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .. import schema as S
from ..errors import JobError
from .snapshot import export_payload

SUMMARY = "manifest-summary.json"


@dataclass(frozen=True)
class Export:
    folder: str  # the export's own folder (``.../AWSDynamoDB/<ExportId>``): a local path or s3://bucket/key
    export_time: int  # epoch seconds
    item_count: int
    data_files: tuple[str, ...]  # where Spark reads them: local paths, or s3:// URIs (Glue)


def _relative(key: str) -> str:
    """A manifest's S3 key from the export's own folder on: ``data/<file>.json.gz``."""
    marker = key.find("/data/")
    return key[marker + 1:] if marker >= 0 else key


def _export_time(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _parse(folder: str, summary: dict, manifest: str) -> Export:
    if summary.get("outputFormat", "DYNAMODB_JSON") != "DYNAMODB_JSON":
        raise JobError(f"export {folder} is in the {summary['outputFormat']} format; export the table again with "
                       "--export-format DYNAMODB_JSON (the ION format is not read)")
    keys = [json.loads(line)["dataFileS3Key"] for line in manifest.splitlines() if line.strip()]
    files = tuple(f"{folder.rstrip('/')}/{_relative(k)}" for k in keys)
    return Export(folder, _export_time(summary["exportTime"]), int(summary.get("itemCount", 0)), files)


def local_export(location: Path) -> Export:
    """The export in a local folder: the export's own folder, or any folder above it that holds one export."""
    summaries = [location / SUMMARY] if (location / SUMMARY).exists() else sorted(location.rglob(SUMMARY))
    if len(summaries) != 1:
        raise JobError(f"{location}: expected one DynamoDB export (a folder with {SUMMARY}), found "
                       f"{len(summaries)}; point --export at the export's own folder (.../AWSDynamoDB/<ExportId>)")
    folder = summaries[0].parent
    summary = json.loads(summaries[0].read_text())
    manifest = (folder / Path(summary.get("manifestFilesS3Key", "manifest-files.json")).name).read_text()
    return _parse(str(folder), summary, manifest)


def s3_export(s3, uri: str) -> Export:
    """The export under ``s3://bucket/prefix`` (its own folder, or a prefix that holds one export)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.strip("/"))
            for o in page.get("Contents", []) if o["Key"].endswith("/" + SUMMARY)]
    if len(keys) != 1:
        raise JobError(f"{uri}: expected one DynamoDB export ({SUMMARY}), found {len(keys)}; point --export at the "
                       "export's own folder (.../AWSDynamoDB/<ExportId>)")
    folder_key = keys[0].rsplit("/", 1)[0]
    summary = json.loads(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
    manifest_key = summary.get("manifestFilesS3Key") or f"{folder_key}/manifest-files.json"
    manifest = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read().decode()
    return _parse(f"s3://{bucket}/{folder_key}", summary, manifest)


def copied_locally(s3, export: Export, into: Path | None = None) -> Export:
    """The export's data files copied to a local folder, for a local Spark that cannot read s3:// (no connector
    jars here; Glue reads them where they are)."""
    into = into or Path(tempfile.mkdtemp(prefix="sales-cdc-export-"))
    files = []
    for uri in export.data_files:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        target = into / key.rsplit("/", 1)[-1]
        s3.download_file(bucket, key, str(target))
        files.append(str(target))
    return Export(export.folder, export.export_time, export.item_count, tuple(files))


def export_records(spark: SparkSession, export: Export, entity: S.EntitySchema, table: str = "") -> DataFrame:
    """The export's items as snapshot records, one ``payload`` column of stream-record JSON (Spark reads gzip)."""
    if not export.data_files:
        return spark.createDataFrame([], "payload string")
    lines = spark.read.text(list(export.data_files))
    return lines.where(F.trim("value") != "").select(
        export_payload(F.col("value"), entity, export.export_time, table).alias(S.PAYLOAD))
