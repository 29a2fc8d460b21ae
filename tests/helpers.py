"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from sales_cdc import schema as S
from sales_cdc.records import to_json_line


def source_rows(spark, *records):
    """A micro-batch of source rows from stream records (dicts) or raw payload lines (str)."""
    lines = [r if isinstance(r, str) else to_json_line(r) for r in records]
    return spark.createDataFrame([(line, "file", None, None, None) for line in lines], S.SOURCE_SCHEMA)
