"""Streaming sources, each normalised to ``schema.SOURCE_FIELDS``.

Locally: a folder of JSON-lines files, one Pipe payload (Kinesis record data) per line. In Glue the
native Kinesis source is used (jobs/), mapped to the same columns.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from .. import schema as S
from . import source_columns


def normalise_file_lines(lines: DataFrame) -> DataFrame:
    """Text-source rows (``value``, ``_metadata``) -> source columns; blank lines are not records.

    The file's modification time stands in for Kinesis's arrival time: a record without an event time (one
    that does not decode) is dated by it in raw, so reading the file again on another day gives the same date.
    """
    return lines.where(F.trim("value") != "").select(*source_columns(F.col("value"), {
        S.SOURCE_SHARD_ID: F.col("_metadata.file_name"),
        S.SOURCE_ARRIVAL_TIME: F.col("_metadata.file_modification_time")}))


def file_stream(spark: SparkSession, path: str, max_files_per_trigger: int | None = None) -> DataFrame:
    reader = spark.readStream.format("text")
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", max_files_per_trigger)
    return normalise_file_lines(reader.load(path))


def file_batch(spark: SparkSession, path: str) -> DataFrame:
    """The same rows as :func:`file_stream`, read once (tests, backfills)."""
    return normalise_file_lines(spark.read.format("text").load(path))
