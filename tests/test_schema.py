"""The schema module is the single source of truth: derived layouts stay consistent."""

from __future__ import annotations

import pytest
from pyspark.sql import types as T

from sales_cdc import schema as S
from tests.helpers import ORDERS


def test_orders_schema_has_the_documented_columns():
    assert ORDERS.keys[0] == "orderid"
    assert ORDERS.field("price").spark_type == T.DecimalType(10, 2)
    assert ORDERS.field("quantity").ddb_type == "N"
    assert not ORDERS.field("orderid").nullable


def test_event_layout_has_both_images_of_every_field():
    names = [f.name for f in S.event_fields(ORDERS)]
    for field in ORDERS.fields:
        assert S.NEW_PREFIX + field.name in names and S.OLD_PREFIX + field.name in names
    assert len(names) == len(set(names))


@pytest.mark.parametrize("bad", ["Price", "order id", "x;drop", ""])
def test_field_names_are_identifiers(bad):
    with pytest.raises(ValueError):
        S.Field(bad, T.StringType(), "S")


def test_entity_rejects_unknown_key_duplicates_and_bad_types():
    with pytest.raises(ValueError, match="key"):
        S.EntitySchema("e", ("id",), (S.Field("other", T.StringType(), "S"),))
    with pytest.raises(ValueError, match="duplicate"):
        S.EntitySchema("e", ("id",), (S.Field("id", T.StringType(), "S"), S.Field("id", T.StringType(), "S")))
    with pytest.raises(ValueError, match="DynamoDB type"):
        S.Field("x", T.StringType(), "STRING")
