"""``on_new_attribute: add_column``: the attributes of a batch that the contract does not name, and the column each
gets, typed from what the batch holds (docs/schema-evolution.md):

- S -> string (text when a value is longer than a string column holds), BOOL -> boolean;
- N -> bigint when every value is a whole number that fits, else a decimal with room for 29 integer digits and
  9 decimals (or as many decimals as the batch has, up to 38 digits in all);
- M, L, SS, NS, BS -> json;
- B, NULL-only, an attribute seen with two types, and a name that cannot be a column (upper case, a dash, a
  name the pipeline uses) stay in ``unmapped_attributes``, as they do without the policy (logged once).
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import column_types as CT
from . import schema as S
from .decode import IMAGE

log = logging.getLogger(__name__)

_PLAIN_NUMBER = r"^-?[0-9]+(\.[0-9]+)?$"
_DECIMALS = 9  # of an N attribute's decimal column, unless the batch has more
_TYPED = {"S": "string", "BOOL": "boolean", "M": "json", "L": "json", "SS": "json", "NS": "json", "BS": "json"}
_reported: set[str] = set()  # names already logged as staying in the JSON


def _profile(state: DataFrame) -> list:
    """Per attribute of the state rows' JSON: the type tags seen, and for N and S what sizes they need."""
    attr = F.col("value")
    number = attr["N"]
    tags = F.array_compact(F.array(*[F.when(attr[t].isNotNull(), F.lit(t)) for t in S.DDB_TYPES if t != "NULL"]))
    return (state.where(F.col(S.UNMAPPED).isNotNull())
            .select(F.explode(F.from_json(S.UNMAPPED, IMAGE)))
            .groupBy(F.col("key").alias("name"))
            .agg(F.array_distinct(F.flatten(F.collect_list(tags))).alias("tags"),
                 F.min(F.when(number.isNotNull(), number.rlike(_PLAIN_NUMBER))).alias("plain"),
                 F.max(F.length(F.regexp_extract(number, r"\.([0-9]+)$", 1))).alias("decimals"),
                 F.max(F.length(F.regexp_extract(number, r"^-?([0-9]+)", 1))).alias("digits"),
                 F.max(F.when(number.isNotNull(), number.try_cast("bigint").isNull())).alias("not_bigint"),
                 F.max(F.octet_length(attr["S"])).alias("bytes"))
            .collect())


def _column_type(profile) -> CT.ColumnType | None:
    tags = profile["tags"]
    if len(tags) != 1:
        return None
    tag = tags[0]
    if tag == "N":
        if not profile["plain"]:
            return None  # an exponent: its digits are not read off the text; the contract can name it
        if not profile["decimals"] and not profile["not_bigint"]:
            return CT.SIMPLE["bigint"]
        scale = max(_DECIMALS, profile["decimals"] or 0)
        return CT.decimal(38, scale) if (profile["digits"] or 0) + scale <= 38 else None
    if tag == "S" and (profile["bytes"] or 0) > CT.TEXT_BYTES:
        return CT.SIMPLE["text"]
    return CT.SIMPLE[_TYPED[tag]] if tag in _TYPED else None


def new_fields(state: DataFrame, entity: S.EntitySchema) -> list[S.Field]:
    """The columns the batch's new attributes get (optional, in name order); an attribute that cannot have one
    is logged once and stays in the JSON."""
    fields = []
    for profile in sorted(_profile(state), key=lambda p: p["name"]):
        name = profile["name"]
        column_type = _column_type(profile)
        usable = column_type is not None and _is_identifier(name) and name not in S.RESERVED_COLUMNS
        if usable and name not in entity.names:
            fields.append(S.Field.of(name, column_type, profile["tags"][0],
                                     description="added by the job (on_new_attribute: add_column)"))
        elif not usable and name not in _reported:
            _reported.add(name)
            log.warning("attribute %r stays in %s: %s", name, S.UNMAPPED,
                        "its name cannot be a column (lower-case letters, digits and _)" if column_type
                        else f"no column type fits it (seen as {', '.join(profile['tags']) or 'NULL'}); name it in "
                        "the contract to choose one")
    return fields


def _is_identifier(name: str) -> bool:
    try:
        S.check_identifier(name)
    except ValueError:
        return False
    return True
