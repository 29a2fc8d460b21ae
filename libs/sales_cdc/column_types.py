"""The column types a contract can name, one record each: the Spark type the decode produces, the DynamoDB
type tags it decodes from and how (``decode_values.DECODERS``), how the warehouse and the lake store it (SQL per
dialect, Arrow), which types it may widen to, and a value of it for generated items.

Every layer reads these records: the contract (which spellings exist, which tags fit), the decode, the
warehouse DDL (``sql``), the schema migration (what a sink's stored column is, and whether a change is a
widening), the generator and the verifier. A new column type is one entry here (and, if it is decoded in a new
way, one function in ``decode_values.DECODERS``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pyspark.sql import types as T

# What the warehouse can store (Redshift; PostgreSQL stands in locally and is laxer): text columns are
# VARCHAR(256), long-text columns VARCHAR(65535), both in bytes.
TEXT_BYTES = 256
LONG_TEXT_BYTES = 65535


class Dialect(StrEnum):
    POSTGRES = "postgres"
    REDSHIFT = "redshift"


Sample = Callable[[random.Random, int, str, datetime], Any]  # (random, item number, DynamoDB tag, start) -> value


@dataclass(frozen=True)
class ColumnType:
    name: str  # as a contract spells it
    spark: T.DataType  # what the decode produces; the lake stores this type
    tags: tuple[str, ...]  # the DynamoDB type tags it is decoded from
    decode: str  # how: a key of ``decode_values.DECODERS`` (text, number, timestamp, date, json)
    sample: Sample = field(compare=False)  # a value of an item, as boto3 writes it (generated items of a contract)
    long_text: bool = False  # text the warehouse holds in LONG_TEXT_BYTES, not TEXT_BYTES

    @property
    def arrow(self):
        """The Arrow type of its values (as Spark's ``toArrow`` gives them)."""
        from pyspark.sql.pandas.types import to_arrow_type

        return to_arrow_type(self.spark)

    @property
    def is_text(self) -> bool:
        return isinstance(self.spark, T.StringType)

    def sql(self, dialect: Dialect) -> str:
        """The warehouse column type."""
        if self.is_text:
            if dialect is Dialect.POSTGRES:
                return "TEXT"
            return f"VARCHAR({LONG_TEXT_BYTES if self.long_text else TEXT_BYTES})"
        if isinstance(self.spark, T.DecimalType):
            return f"DECIMAL({self.spark.precision},{self.spark.scale})"
        return _SQL[type(self.spark)]

    @property
    def lake(self) -> str:
        """The lake column type (Delta and Parquet), as Spark names it."""
        return self.spark.simpleString()

    def widens_to(self, other: ColumnType) -> bool:
        """Every value of this type is a value of ``other``, exactly (so a stored column can be converted)."""
        if self == other:
            return True
        return (self.name, other.name) in _WIDENINGS or _holds_every(other, self)


def _holds_every(wide: ColumnType, narrow: ColumnType) -> bool:
    """A decimal ``wide`` that holds every value of the integer or decimal ``narrow``."""
    if not isinstance(wide.spark, T.DecimalType):
        return False
    digits, scale = _DIGITS.get(narrow.name), 0
    if isinstance(narrow.spark, T.DecimalType):
        digits, scale = narrow.spark.precision - narrow.spark.scale, narrow.spark.scale
    if digits is None:
        return False
    return wide.spark.scale >= scale and wide.spark.precision - wide.spark.scale >= digits


_SQL: dict[type, str] = {
    T.IntegerType: "INTEGER", T.LongType: "BIGINT", T.DoubleType: "DOUBLE PRECISION", T.BooleanType: "BOOLEAN",
    T.TimestampType: "TIMESTAMP", T.DateType: "DATE",
}
_DIGITS = {"integer": 10, "bigint": 19}  # integer digits an integer type needs in a decimal
_WIDENINGS = {("integer", "bigint"), ("string", "text")}

_WORDS = ("red", "green", "blue", "Oslo", "Lyon", "gift", "early", "vip", "漢字", "é", "don't", "a\\b")


def _words(rnd: random.Random, low: int, high: int) -> str:
    return " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(low, high)))


def _moment(start: datetime, n: int, tag: str) -> Any:
    moment = start + timedelta(seconds=n)
    return int(moment.timestamp()) if tag == "N" else moment.isoformat().replace("+00:00", "Z")


def _json_sample(rnd: random.Random, tag: str) -> Any:
    words = _words(rnd, 1, 3).split(" ")
    count = Decimal(rnd.randint(0, 99))
    return {"M": lambda: {"note": " ".join(words), "count": count, "tags": words}, "L": lambda: [*words, count],
            "SS": lambda: set(words), "NS": lambda: {Decimal(rnd.randint(0, 999)) for _ in words},
            "BS": lambda: {w.encode() for w in words}}[tag]()


SIMPLE: dict[str, ColumnType] = {t.name: t for t in (
    ColumnType("string", T.StringType(), ("S",), "text", lambda rnd, n, tag, start: _words(rnd, 1, 3)),
    # long text: descriptions, addresses, notes over TEXT_BYTES
    ColumnType("text", T.StringType(), ("S",), "text", lambda rnd, n, tag, start: _words(rnd, 5, 60),
               long_text=True),
    ColumnType("integer", T.IntegerType(), ("N",), "number", lambda rnd, n, tag, start: rnd.randint(0, 10_000)),
    ColumnType("bigint", T.LongType(), ("N",), "number", lambda rnd, n, tag, start: rnd.randint(0, 2**40)),
    ColumnType("double", T.DoubleType(), ("N",), "number",
               lambda rnd, n, tag, start: Decimal(rnd.randint(0, 10**6)) / 1000),
    ColumnType("boolean", T.BooleanType(), ("BOOL",), "text", lambda rnd, n, tag, start: rnd.random() < 0.5),
    # ISO-8601 text, or epoch seconds
    ColumnType("timestamp", T.TimestampType(), ("S", "N"), "timestamp",
               lambda rnd, n, tag, start: _moment(start, n, tag)),
    ColumnType("date", T.DateType(), ("S",), "date",
               lambda rnd, n, tag, start: (start + timedelta(days=n % 365)).date().isoformat()),
    # kept as JSON text: a map or list as DynamoDB typed JSON, a set as a sorted JSON array of its members
    ColumnType("json", T.StringType(), ("M", "L", "SS", "NS", "BS"), "json",
               lambda rnd, n, tag, start: _json_sample(rnd, tag), long_text=True),
)}
_DECIMAL = re.compile(r"^decimal\((\d{1,2}),(\d{1,2})\)$")
SPELLINGS = (*SIMPLE, "decimal(p,s)")


def decimal(precision: int, scale: int) -> ColumnType:
    if not 1 <= precision <= 38 or not 0 <= scale <= precision:
        raise ValueError(f"decimal({precision},{scale}) needs 1 <= p <= 38 and s <= p")

    def sample(rnd: random.Random, n: int, tag: str, start: datetime) -> Decimal:
        whole = 10 ** min(precision - scale, 9) - 1
        return (Decimal(rnd.randint(0, whole * 10**scale)) / 10**scale).quantize(Decimal(1).scaleb(-scale))

    return ColumnType(f"decimal({precision},{scale})", T.DecimalType(precision, scale), ("N",), "number", sample)


def parse(text: str) -> ColumnType:
    """The column type a contract spells ``text`` (``decimal(10, 2)`` as ``decimal(10,2)``); ValueError if none."""
    spelled = text.replace(" ", "").lower()
    match = _DECIMAL.match(spelled)
    if match:
        return decimal(int(match.group(1)), int(match.group(2)))
    if spelled in SIMPLE:
        return SIMPLE[spelled]
    raise ValueError(f"unknown type {text!r}; use one of {', '.join(SPELLINGS)}")


def of_spark(spark: T.DataType, long_text: bool = False) -> ColumnType | None:
    """The column type a Spark type stores (text: the long kind when ``long_text``), or None (arrays, binary)."""
    if isinstance(spark, T.DecimalType):
        return decimal(spark.precision, spark.scale)
    if isinstance(spark, T.StringType):
        return SIMPLE["text" if long_text else "string"]
    return next((t for t in SIMPLE.values() if t.spark == spark), None)


# --- what a sink holds: its stored column type, read back as a column type ------------------------------
_SQL_NAMES = {"integer": "integer", "int": "integer", "int4": "integer", "bigint": "bigint", "int8": "bigint",
              "double precision": "double", "float8": "double", "boolean": "boolean", "bool": "boolean",
              "timestamp without time zone": "timestamp", "timestamp": "timestamp", "date": "date"}


def of_sql(data_type: str, precision: int | None = None, scale: int | None = None,
           max_length: int | None = None) -> ColumnType | None:
    """The column type of a warehouse column as ``information_schema.columns`` describes it (None: not one of
    ours). Text reads as the widest kind its storage admits: PostgreSQL's TEXT, or a long VARCHAR, as ``text``."""
    data_type = data_type.lower()
    if data_type in ("numeric", "decimal"):
        return decimal(precision or 38, scale or 0)
    if data_type == "text" or data_type.startswith("character varying"):
        return SIMPLE["string"] if max_length is not None and max_length <= TEXT_BYTES else SIMPLE["text"]
    name = _SQL_NAMES.get(data_type)
    return SIMPLE[name] if name else None


_LAKE_NAMES = {"int": "integer", "integer": "integer", "long": "bigint", "bigint": "bigint", "double": "double",
               "boolean": "boolean", "timestamp": "timestamp", "timestamp_ntz": "timestamp", "date": "date",
               "string": "text"}


def of_lake(type_name: str) -> ColumnType | None:
    """The column type of a lake column as Spark or Delta names it (``decimal(6,2)``, ``long``, ``string`` …);
    text reads as ``text`` (the lake stores every kind of text alike)."""
    spelled = type_name.replace(" ", "").lower()
    match = _DECIMAL.match(spelled)
    if match:
        return decimal(int(match.group(1)), int(match.group(2)))
    name = _LAKE_NAMES.get(spelled)
    return SIMPLE[name] if name else None


def stored_alike(a: ColumnType, b: ColumnType, storage: str) -> bool:
    """``a`` and ``b`` are stored the same way in ``storage`` (a :class:`Dialect` or ``"lake"``)."""
    if storage == "lake":
        return a.lake == b.lake
    return a.sql(Dialect(storage)) == b.sql(Dialect(storage))
