"""Where the job's records come from, each normalised to ``schema.SOURCE_FIELDS`` (a payload: the JSON of one
DynamoDB stream record, as the EventBridge Pipe puts it on Kinesis, and where it came from).

- ``files``: a folder of JSON-lines files (the local job, fixtures);
- ``kinesis``: the local Kinesis source, a Spark Python data source (Glue reads Kinesis natively: ``glue``).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from .. import schema as S


def source_columns(payload: Column, known: dict[str, Column]) -> list[Column]:
    """``schema.SOURCE_FIELDS`` as columns: the payload, then each other field from ``known`` (what a source
    knows) or null, cast to its type."""
    return [payload.alias(S.PAYLOAD), *[known.get(f.name, F.lit(None)).cast(f.spark_type).alias(f.name)
                                        for f in S.SOURCE_FIELDS if f.name != S.PAYLOAD]]
