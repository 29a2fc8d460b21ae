"""The decode's typed values and the problems it reports (as Spark Columns): an attribute's value under its
type tag as the contract's column type, exactly or not at all, and the checks of the payload text that
``from_json`` reads leniently. Nothing raises: every problem is a condition and a message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import schema as S

# N values are parsed at this precision first, so that a value the target type cannot hold exactly
# (too many decimals, fractional quantity, out of range) is reported instead of silently rounded.
EXACT_NUMBER = T.DecimalType(38, 18)

SET_TAGS = ("SS", "NS", "BS")
NESTED_TAGS = ("M", "L")  # parsed as VARIANT: kept losslessly as typed JSON


# Checks on the payload text, for what from_json accepts silently (docs/reliability.md). Each regex runs
# only on payloads that hold a JSON escape (``\u``) or, for the last, on every payload.
_ESCAPED = r"(^|[^\\])(\\\\)*+"  # an escape starts after an even number of backslashes
_NUL = _ESCAPED + r"\\u0000"
_LONE_SURROGATE = (_ESCAPED + r"(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                   r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})")
# a JSON number, boolean or null where DynamoDB writes a string: the value of an S/N/B tag or of an envelope
# field, or a member of an SS/NS/BS set (an attribute *named* like a tag holds an object: '{' is allowed).
# Two patterns, each starting with a literal: one alternation of both ran at half their combined speed.
_NOT_A_STRING = (r'"(?:[SNB]|SequenceNumber|eventName|eventID)"\s*+:\s*+[^"\s{]',
                 r'"[SNB]S"\s*+:\s*+\[\s*+("([^"\\]|\\.)*+"\s*+,\s*+)*+[^"\s\]]')


@dataclass
class Problems:
    """Conditions (null counts as false) and the message each one gives, evaluated lazily."""

    checks: list[tuple[Column, Column]] = field(default_factory=list)

    def add(self, condition: Column, message: Column | str) -> None:
        self.checks.append((condition, message if isinstance(message, Column) else F.lit(message)))

    def any(self) -> Column:
        found = F.lit(False)
        for condition, _ in self.checks:
            found = found | F.coalesce(condition, F.lit(False))
        return found

    def messages(self) -> Column:
        if not self.checks:
            return no_messages()
        # array_remove of a "" placeholder, not a lambda (filter, array_compact): a lambda turns whole-stage
        # code generation off for its projection
        return F.array_remove(F.array(*[F.when(c, m).otherwise(F.lit("")) for c, m in self.checks]), "")


def no_messages() -> Column:
    return F.array().cast("array<string>")


def quoted(prefix: str, raw: Column, suffix: str) -> Column:
    """``prefix'<raw>'suffix``: an error message that shows the offending value."""
    return F.concat(F.lit(f"{prefix}'"), raw, F.lit(f"'{suffix}"))


def col(name: str) -> Column:
    return F.col(f"`{name}`")


def name(*parts: str) -> str:
    """An intermediate column (dropped by the final projection)."""
    return "_" + "__".join(parts)


def number(raw: Column, target: T.DataType, label: str, problems: Problems) -> Column:
    """``raw`` (an N string) as ``target``, or null with a problem when it is not a number, out of range or
    not exactly representable (never silently rounded)."""
    if isinstance(target, (T.FloatType, T.DoubleType)):
        problems.add(raw != F.trim(raw), quoted(f"{label}: N value ", raw, " has surrounding whitespace"))
        value = raw.try_cast(target)
        problems.add(raw.isNotNull() & value.isNull(), quoted(f"{label}: N value ", raw, " is not a number"))
        return value
    # Fast path for the common, canonical case ("3" as INT, "9.99" as DECIMAL(10,2)): one cast. Anything
    # else ("3.0", "9.9", "1e2", too many decimals) is checked at full precision, which costs BigDecimal
    # arithmetic and so runs only for those rows (Spark's CASE and AND evaluate lazily).
    # Spark's cast trims whitespace; DynamoDB never writes it, so a padded number is a producer's bug
    problems.add(raw != F.trim(raw), quoted(f"{label}: N value ", raw, " has surrounding whitespace"))
    fast = raw.try_cast(target)
    canonical = fast.isNotNull() if isinstance(target, T.IntegralType) else fast.cast("string") == raw
    exact = raw.try_cast(EXACT_NUMBER)
    held = exact.try_cast(target)
    value = F.when(canonical, fast).when(held.cast(EXACT_NUMBER) == exact, held)
    type_name = target.simpleString().upper()
    problems.add(raw.isNotNull() & value.isNull(), F.when(
        exact.isNull(), quoted(f"{label}: N value ", raw, " is not a number (or out of range)"),
    ).when(held.isNull(), quoted(f"{label}: N value ", raw, f" is out of range for {type_name}")).otherwise(
        quoted(f"{label}: N value ", raw, f" is not exactly representable as {type_name}")))
    return value


def _as_text(raw: Column, fld: S.Field, label: str, problems: Problems) -> Column:
    return raw  # S as text, BOOL as a boolean: from_json has typed them already


def _as_number(raw: Column, fld: S.Field, label: str, problems: Problems) -> Column:
    return number(raw, fld.spark_type, label, problems)


def _as_timestamp(raw: Column, fld: S.Field, label: str, problems: Problems) -> Column:
    if fld.ddb_type == "N":  # epoch seconds, years 0001-9999 (beyond them the conversion would fail)
        seconds = raw.try_cast(EXACT_NUMBER)
        value = F.when(seconds.between(-62135596800, 253402300799), F.timestamp_seconds(seconds))
        problems.add(raw.isNotNull() & value.isNull(), quoted(f"{label}: N value ", raw, " is not epoch seconds"))
        return value
    value = F.try_to_timestamp(raw)
    problems.add(raw.isNotNull() & value.isNull(), quoted(f"{label}: ", raw, " is not a timestamp"))
    return value


def _as_date(raw: Column, fld: S.Field, label: str, problems: Problems) -> Column:
    value = raw.try_cast(T.DateType())
    problems.add(raw.isNotNull() & value.isNull(), quoted(f"{label}: ", raw, " is not a date"))
    return value


def _as_json(raw: Column, fld: S.Field, label: str, problems: Problems) -> Column:
    if fld.ddb_type in SET_TAGS:  # the members, sorted: a set has no order
        return F.to_json(F.array_sort(raw))
    return F.to_json(raw)  # a map or list, as typed JSON


Decoder = Callable[[Column, S.Field, str, Problems], Column]
# how each kind of column type (``column_types.ColumnType.decode``) reads its attribute's value
DECODERS: dict[str, Decoder] = {"text": _as_text, "number": _as_number, "timestamp": _as_timestamp,
                                "date": _as_date, "json": _as_json}


def typed(raw: Column, fld: S.Field, label: str, problems: Problems) -> Column:
    """The typed value of ``raw`` (the attribute's value under its type tag) for ``fld``; problems added."""
    column_type = fld.column_type
    if column_type is not None and fld.ddb_type in column_type.tags:
        return DECODERS[column_type.decode](raw, fld, label, problems)
    return _spark_value(raw, fld, label, problems)


def _spark_value(raw: Column, fld: S.Field, label: str, problems: Problems) -> Column:
    """Binary values and typed sets as Spark values: fields no contract declares (a column type keeps them as
    JSON), which the decode still reads exactly."""
    tag, target = fld.ddb_type, fld.spark_type
    if tag == "B":
        value = F.try_to_binary(raw, F.lit("base64"))
        problems.add(raw.isNotNull() & value.isNull(), f"{label}: B value is not base64")
        return value
    if tag == "NS":
        element = target.elementType if isinstance(target, T.ArrayType) else EXACT_NUMBER
        value = F.transform(raw, lambda x: x.try_cast(element))
        problems.add(F.exists(value, lambda x: x.isNull()),
                     f"{label}: NS has a member that is not a number of {element.simpleString()}")
        return value
    if tag == "BS":
        value = F.transform(raw, lambda x: F.try_to_binary(x, F.lit("base64")))
        problems.add(F.exists(value, lambda x: x.isNull()), f"{label}: BS has a member that is not base64")
        return value
    return raw  # SS as an array of text


def fits_the_warehouse(value: Column, column: str, label: str, problems: Problems, long_text: bool = False) -> None:
    """A text value longer (in UTF-8 bytes) than the warehouse column that stores it is a problem."""
    limit = S.text_bytes(column, long_text)
    problems.add(F.octet_length(value) > F.lit(limit),
                 F.concat(F.lit(f"{label}: "), F.octet_length(value).cast("string"),
                          F.lit(f" bytes, more than the warehouse column holds (VARCHAR({limit}))")))


def payload_problems(payload: Column) -> dict[str, tuple[Column, str]]:
    """Problems visible in the payload text only: what from_json reads leniently or changes silently."""
    # contains (a byte search), not instr (which counts characters: 4x slower on a 1 KB payload)
    escaped = payload.contains("\\u")
    return {
        "_has_nul": (payload.contains("\u0000") | (escaped & payload.rlike(_NUL)),
                     "payload has U+0000 (NUL), which the warehouse cannot store"),
        "_not_utf8": (F.col("_invalid_utf8") | payload.contains("\ufffd"),
                      "payload is not valid UTF-8 (invalid bytes, or U+FFFD: a source replaced them)"),
        "_lone_surrogate": (escaped & payload.rlike(_LONE_SURROGATE),
                            "payload has a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without its pair)"),
        "_not_a_string": (payload.rlike(_NOT_A_STRING[0]) | payload.rlike(_NOT_A_STRING[1]),
                          "payload has a JSON number, boolean or null where DynamoDB writes a string (a type "
                          "tag's value, a set member, eventName, eventID or SequenceNumber)"),
    }


def type_tags(attr: Column) -> Column:
    """The type tags an attribute carries, e.g. ``S`` (for messages only)."""
    tags = F.concat_ws(",", *[F.when(attr[t].isNotNull(), F.lit(t)) for t in S.DDB_TYPES])
    return F.when(tags != F.lit(""), tags).otherwise(F.lit("no known type tag"))


def tag_count(attr: Column) -> Column:
    """How many type tags an attribute carries (a DynamoDB value has exactly one)."""
    count = F.lit(0)
    for tag in S.DDB_TYPES:
        count = count + F.when(attr[tag].isNotNull(), F.lit(1)).otherwise(F.lit(0))
    return count


def untagged(attr: Column) -> Column:
    untagged = F.lit(True)
    for tag in S.DDB_TYPES:
        untagged = untagged & attr[tag].isNull()
    return untagged
