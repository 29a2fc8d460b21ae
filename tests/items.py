"""Stored rows read back as the items they hold, and what fits a column (as the decode and the promotion decide):
the tests of schema evolution compare every sink with a model that keeps every value through these."""

from __future__ import annotations

import json
from decimal import Decimal

from sales_cdc import schema as S


def tag_of(value) -> str:
    return {bool: "BOOL", str: "S", set: "SS"}.get(type(value), "N")


def fits(value, field: S.Field) -> bool:
    if tag_of(value) != field.ddb_type:
        return False
    column_type = field.column_type.name
    if column_type in ("integer", "bigint"):
        bits = 31 if column_type == "integer" else 63
        return -(2**bits) <= value < 2**bits
    if column_type.startswith("decimal"):
        precision, scale = field.spark_type.precision, field.spark_type.scale
        number = Decimal(value)
        return number == number.quantize(Decimal(1).scaleb(-scale)) and len(str(int(abs(number)))) <= precision - scale
    if column_type == "string":
        return len(value.encode()) <= 256
    return True  # boolean, json


def comparable(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal)):
        return Decimal(value).normalize()
    if isinstance(value, (set, frozenset, list)):
        return frozenset(value)
    return value


def from_typed(typed: dict):
    (tag, value), = typed.items()
    return {"N": lambda: Decimal(value).normalize(), "SS": lambda: frozenset(value)}.get(tag, lambda: value)()


def item_of(row: dict, entity: S.EntitySchema) -> dict:
    """A stored row as the item it holds: its columns, then its JSON (which must not repeat a column)."""
    item = {}
    for field in entity.fields:
        value = row.get(field.name)
        if value is not None:
            item[field.name] = frozenset(json.loads(value)) if field.ddb_type == "SS" else comparable(value)
    for name, typed in json.loads(row[S.UNMAPPED] or "{}").items():
        assert name not in item, f"{name} is both a column and in {S.UNMAPPED}: {row}"
        item[name] = from_typed(typed)
        if name in entity.names:  # kept in the JSON: only because it does not fit the column
            assert not fits(typed_value(typed), entity.field(name)), f"{name} should have been promoted: {row}"
    return item


def typed_value(typed: dict):
    (tag, value), = typed.items()
    return {"N": lambda: Decimal(value) if "." in value else int(value), "SS": lambda: set(value),
            "BOOL": lambda: value}.get(tag, lambda: value)()
