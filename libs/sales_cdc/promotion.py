"""Promotion: when an attribute gets a column (a contract names it, or it widens), the values stored rows keep
for it in ``unmapped_attributes`` move into the column. A value moves when it fits the column exactly as the
decode would take it from a stream record (the same type tag, the same typed values and checks, the warehouse's
text width); a value that does not fit stays in the JSON, counted, so no value is ever lost.

Pure Spark, over any frame with ``unmapped_attributes``: the warehouse's and Delta's rows to promote (key,
sequence, JSON) and a whole Parquet snapshot alike.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from . import decode_values as V
from . import schema as S
from .decode import IMAGE

MOVED, KEPT = "_moved_", "_kept_"  # per promoted field: its value moved into the column / stayed in the JSON


def _only_tag(attr: Column, tag: str) -> Column:
    """The attribute carries ``tag`` (or NULL) and no other type tag."""
    others = reduce(operator.or_, [attr[t].isNotNull() for t in S.DDB_TYPES if t not in (tag, "NULL")])
    return (attr[tag].isNotNull() | F.coalesce(attr["NULL"], F.lit(False))) & ~others


def _value(image: Column, field: S.Field) -> tuple[Column, Column]:
    """(the typed value, whether it fits) of ``field``'s attribute in the parsed JSON ``image``."""
    attr = image[field.name]
    problems = V.Problems()
    raw = attr[field.ddb_type]
    label = f"{S.UNMAPPED}.{field.name}"
    typed = V.typed(raw, field, label, problems).cast(field.spark_type)
    if field.column_type.is_text:
        V.fits_the_warehouse(typed if field.long_text else raw, field.name, label, problems, field.long_text)
    return typed, attr.isNotNull() & _only_tag(attr, field.ddb_type) & ~problems.any()


def promote(frame: DataFrame, fields: list[S.Field]) -> DataFrame:
    """``frame`` with each of ``fields`` filled from ``unmapped_attributes`` where its value fits (a column the
    frame lacks is added), those attributes taken out of the JSON (null once empty), and per field two flags,
    ``_moved_<name>`` and ``_kept_<name>`` (present in the JSON but not fitting)."""
    image_name = "_promotion_image"
    frame = frame.withColumn(image_name, F.from_json(F.col(S.UNMAPPED), IMAGE))
    image = F.col(image_name)
    columns: dict[str, Column] = {}
    moved_names = []
    for field in fields:
        typed, fits = _value(image, field)
        existing = F.col(field.name) if field.name in frame.columns else F.lit(None).cast(field.spark_type)
        columns[field.name] = F.when(fits, typed).otherwise(existing)
        columns[MOVED + field.name] = F.coalesce(fits, F.lit(False))
        columns[KEPT + field.name] = image[field.name].isNotNull() & ~columns[MOVED + field.name]
        moved_names.append(F.when(columns[MOVED + field.name], F.lit(field.name)))
    frame = frame.withColumns(columns).withColumn("_promoted_names", F.array_compact(F.array(*moved_names)))
    rest = F.map_filter(image, lambda k, _v: ~F.array_contains(F.col("_promoted_names"), k))
    unmapped = F.when(F.size("_promoted_names") == 0, F.col(S.UNMAPPED)) \
        .when(F.size(rest) > 0, F.to_json(rest))
    return frame.withColumn(S.UNMAPPED, unmapped).drop(image_name, "_promoted_names")


def any_moved(fields: list[S.Field]) -> Column:
    moved = F.lit(False)
    for field in fields:
        moved = moved | F.col(MOVED + field.name)
    return moved


@dataclass(frozen=True)
class Counts:
    moved: dict[str, int]  # per field: values moved into the column
    kept: dict[str, int]  # per field: values left in the JSON (they do not fit)

    @classmethod
    def none(cls, fields: list[S.Field]) -> Counts:
        """Nothing moved, nothing kept (no row holds these attributes in its JSON)."""
        return cls({f.name: 0 for f in fields}, {f.name: 0 for f in fields})


def counts(promoted: DataFrame, fields: list[S.Field]) -> Counts:
    """What :func:`promote` did, counted (one Spark job)."""
    if not fields:
        return Counts({}, {})
    row = promoted.agg(*[F.count_if(F.col(p + f.name)).alias(p + f.name) for f in fields for p in (MOVED, KEPT)]) \
        .first()
    return Counts({f.name: row[MOVED + f.name] for f in fields}, {f.name: row[KEPT + f.name] for f in fields})


def helper_columns(fields: list[S.Field]) -> list[str]:
    return [p + f.name for f in fields for p in (MOVED, KEPT)]
