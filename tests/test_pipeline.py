"""The batch handler's own steps (the sinks' behaviour is held against the model in test_model*.py)."""

from __future__ import annotations

import pytest

from sales_cdc import schema as S
from sales_cdc.pipeline import LARGE_VAR_TYPES, _empty_arrow


@pytest.mark.parametrize("large", ["false", "true"])
def test_a_quarantine_known_empty_has_the_schema_its_collect_would_have(spark, large):
    """A batch that rejected nothing skips its quarantine's collect: the empty table stands in for it, so it
    must be what ``toArrow`` gives, with either setting of Arrow's large types."""
    before = spark.conf.get(LARGE_VAR_TYPES, "false")
    spark.conf.set(LARGE_VAR_TYPES, large)
    try:
        quarantine = spark.createDataFrame([], S.quarantine_schema())
        collected = quarantine.toArrow()
        assert _empty_arrow(quarantine).schema == collected.schema
        assert _empty_arrow(quarantine).num_rows == collected.num_rows == 0
    finally:
        spark.conf.set(LARGE_VAR_TYPES, before)
