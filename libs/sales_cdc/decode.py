"""Decode EventBridge-Pipe payloads (DynamoDB stream records) into typed CDC event rows.

Pure Spark, no Python UDF. Each payload is parsed once with ``from_json`` into the shape of a stream
record (:data:`STREAM_RECORD`): an image is a ``map<attribute name, struct<S, N, B, BOOL, NULL, M, L,
SS, NS, BS>>``, so a schema column is one map lookup and a struct field, and attributes the schema does
not know are the map keys left over. (Reading every field out of a VARIANT instead was 7x slower:
each read walks the binary again.) Nothing raises on bad input: every problem becomes a message in
``cdc_errors`` (the row is then quarantined) or, for the informational old image of an INSERT/MODIFY,
in ``cdc_warnings``.

The batch handler decodes in two passes (:func:`decode_batch`): the first computes the values and, per
row, only *whether* it has a problem; the rows that do are decoded again with their messages. The
messages' code is several times the size of the rest: in one pass it kept Spark from compiling the
decode into one fused function (above ``spark.sql.codegen.hugeMethodLimit``), which made every row pay
for it, clean or not (measured: 1.5x the decode time at 100k events).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import schema as S
from .transforms import to_quarantine_rows

# N values are parsed at this precision first, so that a value the target type cannot hold exactly
# (too many decimals, fractional quantity, out of range) is reported instead of silently rounded.
_EXACT_NUMBER = T.DecimalType(38, 18)

_SET_TAGS = ("SS", "NS", "BS")
_NESTED_TAGS = ("M", "L")  # parsed as VARIANT: kept losslessly as typed JSON


def _tag_type(tag: str) -> T.DataType:
    if tag in ("BOOL", "NULL"):
        return T.BooleanType()
    if tag in _SET_TAGS:
        return T.ArrayType(T.StringType())
    if tag in _NESTED_TAGS:
        return T.VariantType()
    return T.StringType()  # S, N (a decimal *string*, never a float), B (base64)


ATTRIBUTE_VALUE = T.StructType([T.StructField(tag, _tag_type(tag)) for tag in S.DDB_TYPES])
IMAGE = T.MapType(T.StringType(), ATTRIBUTE_VALUE)
_CORRUPT = "_corrupt_record"  # from_json puts the payload here when it is not JSON or a value has the wrong JSON type
STREAM_RECORD = T.StructType([
    T.StructField(_CORRUPT, T.StringType()),
    T.StructField("eventID", T.StringType()),
    T.StructField("eventName", T.StringType()),
    T.StructField("dynamodb", T.StructType([
        # epoch seconds (AWS) or ISO text (moto): a VARIANT keeps either exactly
        T.StructField("ApproximateCreationDateTime", T.VariantType()),
        T.StructField("Keys", IMAGE),
        T.StructField("NewImage", IMAGE),
        T.StructField("OldImage", IMAGE),
        T.StructField("SequenceNumber", T.StringType()),
    ])),
])
_PARSE_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}

# Checks on the payload text, for what from_json accepts silently (docs/reliability.md). Each regex runs
# only on payloads that hold a JSON escape (``\u``) or, for the last, on every payload.
_ESCAPED = r"(^|[^\\])(\\\\)*+"  # an escape starts after an even number of backslashes
_NUL = _ESCAPED + r"\\u0000"
_LONE_SURROGATE = (_ESCAPED + r"(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                   r"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})")
# a JSON number, boolean or null where DynamoDB writes a string: the value of an S/N/B tag or of an envelope
# field, or a member of an SS/NS/BS set (an attribute *named* like a tag holds an object: '{' is allowed)
_NOT_A_STRING = (r'"(S|N|B|SequenceNumber|eventName|eventID)"\s*+:\s*+[^"\s{]'
                 r'|"(SS|NS|BS)"\s*+:\s*+\[\s*+("([^"\\]|\\.)*+"\s*+,\s*+)*+[^"\s\]]')


@dataclass
class _Problems:
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
            return _no_messages()
        # array_remove of a "" placeholder, not a lambda (filter, array_compact): a lambda turns whole-stage
        # code generation off for its projection
        return F.array_remove(F.array(*[F.when(c, m).otherwise(F.lit("")) for c, m in self.checks]), "")


def _no_messages() -> Column:
    return F.array().cast("array<string>")


def _quoted(prefix: str, raw: Column, suffix: str) -> Column:
    """``prefix'<raw>'suffix``: an error message that shows the offending value."""
    return F.concat(F.lit(f"{prefix}'"), raw, F.lit(f"'{suffix}"))


def _col(name: str) -> Column:
    return F.col(f"`{name}`")


def _name(*parts: str) -> str:
    """An intermediate column (dropped by the final projection)."""
    return "_" + "__".join(parts)


def _number(raw: Column, target: T.DataType, label: str, problems: _Problems) -> Column:
    """``raw`` (an N string) as ``target``, or null with a problem when it is not a number, out of range or
    not exactly representable (never silently rounded)."""
    if isinstance(target, (T.FloatType, T.DoubleType)):
        problems.add(raw != F.trim(raw), _quoted(f"{label}: N value ", raw, " has surrounding whitespace"))
        value = raw.try_cast(target)
        problems.add(raw.isNotNull() & value.isNull(), _quoted(f"{label}: N value ", raw, " is not a number"))
        return value
    # Fast path for the common, canonical case ("3" as INT, "9.99" as DECIMAL(10,2)): one cast. Anything
    # else ("3.0", "9.9", "1e2", too many decimals) is checked at full precision, which costs BigDecimal
    # arithmetic and so runs only for those rows (Spark's CASE and AND evaluate lazily).
    # Spark's cast trims whitespace; DynamoDB never writes it, so a padded number is a producer's bug
    problems.add(raw != F.trim(raw), _quoted(f"{label}: N value ", raw, " has surrounding whitespace"))
    fast = raw.try_cast(target)
    canonical = fast.isNotNull() if isinstance(target, T.IntegralType) else fast.cast("string") == raw
    exact = raw.try_cast(_EXACT_NUMBER)
    held = exact.try_cast(target)
    value = F.when(canonical, fast).when(held.cast(_EXACT_NUMBER) == exact, held)
    type_name = target.simpleString().upper()
    problems.add(raw.isNotNull() & value.isNull(), F.when(
        exact.isNull(), _quoted(f"{label}: N value ", raw, " is not a number (or out of range)"),
    ).when(held.isNull(), _quoted(f"{label}: N value ", raw, f" is out of range for {type_name}")).otherwise(
        _quoted(f"{label}: N value ", raw, f" is not exactly representable as {type_name}")))
    return value


def _typed(raw: Column, fld: S.Field, label: str, problems: _Problems) -> Column:
    """The typed value of ``raw`` (the attribute's value under its type tag) for ``fld``; problems added."""
    tag, target = fld.ddb_type, fld.spark_type
    if tag == "S":
        if isinstance(target, T.TimestampType):
            value = F.try_to_timestamp(raw)
            problems.add(raw.isNotNull() & value.isNull(), _quoted(f"{label}: ", raw, " is not a timestamp"))
            return value
        if isinstance(target, T.DateType):
            value = raw.try_cast(T.DateType())
            problems.add(raw.isNotNull() & value.isNull(), _quoted(f"{label}: ", raw, " is not a date"))
            return value
        return raw
    if tag == "N" and isinstance(target, T.TimestampType):  # epoch seconds
        seconds = raw.try_cast(_EXACT_NUMBER)  # years 0001-9999 (beyond them the conversion would fail)
        value = F.when(seconds.between(-62135596800, 253402300799), F.timestamp_seconds(seconds))
        problems.add(raw.isNotNull() & value.isNull(), _quoted(f"{label}: N value ", raw, " is not epoch seconds"))
        return value
    if tag == "N":
        return _number(raw, target, label, problems)
    if tag == "B":
        value = F.try_to_binary(raw, F.lit("base64"))
        problems.add(raw.isNotNull() & value.isNull(), f"{label}: B value is not base64")
        return value
    if tag in _SET_TAGS and isinstance(target, T.StringType):  # a json column: the members, sorted
        return F.to_json(F.array_sort(raw))
    if tag == "NS":
        element = target.elementType if isinstance(target, T.ArrayType) else _EXACT_NUMBER
        value = F.transform(raw, lambda x: x.try_cast(element))
        problems.add(F.exists(value, lambda x: x.isNull()),
                     f"{label}: NS has a member that is not a number of {element.simpleString()}")
        return value
    if tag == "BS":
        value = F.transform(raw, lambda x: F.try_to_binary(x, F.lit("base64")))
        problems.add(F.exists(value, lambda x: x.isNull()), f"{label}: BS has a member that is not base64")
        return value
    if tag in _NESTED_TAGS:
        return F.to_json(raw)
    return raw  # BOOL, SS


def _fits_the_warehouse(value: Column, column: str, label: str, problems: _Problems, long_text: bool = False) -> None:
    """A text value longer (in UTF-8 bytes) than the warehouse column that stores it is a problem."""
    limit = S.text_bytes(column, long_text)
    problems.add(F.octet_length(value) > F.lit(limit),
                 F.concat(F.lit(f"{label}: "), F.octet_length(value).cast("string"),
                          F.lit(f" bytes, more than the warehouse column holds (VARCHAR({limit}))")))


def _payload_problems(payload: Column) -> dict[str, tuple[Column, str]]:
    """Problems visible in the payload text only: what from_json reads leniently or changes silently."""
    escaped = F.instr(payload, "\\u") > 0
    return {
        "_has_nul": ((F.instr(payload, "\u0000") > 0) | (escaped & payload.rlike(_NUL)),
                     "payload has U+0000 (NUL), which the warehouse cannot store"),
        "_not_utf8": (F.col("_invalid_utf8") | (F.instr(payload, "\ufffd") > 0),
                      "payload is not valid UTF-8 (invalid bytes, or U+FFFD: a source replaced them)"),
        "_lone_surrogate": (escaped & payload.rlike(_LONE_SURROGATE),
                            "payload has a lone UTF-16 surrogate escape (\\uD800-\\uDFFF without its pair)"),
        "_not_a_string": (payload.rlike(_NOT_A_STRING),
                          "payload has a JSON number, boolean or null where DynamoDB writes a string (a type "
                          "tag's value, a set member, eventName, eventID or SequenceNumber)"),
    }


def _type_tags(attr: Column) -> Column:
    """The type tags an attribute carries, e.g. ``S`` (for messages only)."""
    tags = F.concat_ws(",", *[F.when(attr[t].isNotNull(), F.lit(t)) for t in S.DDB_TYPES])
    return F.when(tags != F.lit(""), tags).otherwise(F.lit("no known type tag"))


def _untagged(attr: Column) -> Column:
    untagged = F.lit(True)
    for tag in S.DDB_TYPES:
        untagged = untagged & attr[tag].isNull()
    return untagged


class _Stages:
    """The decode's projections. Each expression (a map lookup, a cast) is computed once per row however
    many checks read it, because it is a column of an earlier projection. The parsed record is dropped
    after the lookups, so no later projection carries more than ``spark.sql.codegen.maxFields`` (100)
    nested fields, above which Spark interprets every expression; the lambdas the schema-drift step needs
    (``map_filter``) stay in the drift stage, out of the typed values and the messages. With the messages,
    the generated code is above HotSpot's JIT limit as one whole-stage method (see
    ``job.SPARK_SQL_SETTINGS``); without them (the first pass of :func:`decode_batch`) it is fused."""

    def __init__(self, ddb: Column, detailed: bool):
        self.ddb = ddb
        self.detailed = detailed  # messages wanted (else only the problem flags)
        self.drift: dict[str, Column] = {}    # unmapped attributes (lambdas over the image maps)
        self.lookups: dict[str, Column] = {}  # scalars read from the parsed record (which is dropped after this)
        self.derived: dict[str, Column] = {}  # event time, key
        self.typed: dict[str, Column] = {}    # typed values
        self.values: dict[str, Column] = {}   # the event columns

    def image(self, image_name: str, prefix: str, entity: S.EntitySchema) -> _Problems:
        """Decode ``dynamodb.<image_name>`` into ``<prefix><field>`` columns; return its problems."""
        image = self.ddb[image_name]
        problems = _Problems()
        for fld in entity.fields:
            attr = image[fld.name]
            raw_name, wrong_name = _name(prefix, fld.name), _name(prefix, fld.name, "wrong_type")
            tags_name = _name(prefix, fld.name, "type_tags")
            self.lookups[raw_name] = attr[fld.ddb_type]
            wrong_type = attr.isNotNull() & ~F.coalesce(attr["NULL"], F.lit(False)) & attr[fld.ddb_type].isNull()
            self.lookups[wrong_name] = wrong_type
            if self.detailed:  # the type tags it has instead, for the message
                self.lookups[tags_name] = F.when(wrong_type, _type_tags(attr))
            label = f"{image_name}.{fld.name}"
            problems.add(_col(wrong_name),
                         F.concat(F.lit(f"{label}: expected DynamoDB type {fld.ddb_type}, got "), _col(tags_name)))
            value_name = _name(prefix, fld.name, "value")
            typed = _typed(_col(raw_name), fld, label, problems).cast(fld.spark_type)
            self.typed[value_name] = typed
            if isinstance(fld.spark_type, T.StringType):  # the text as stored: a json column's JSON, else the raw
                stored = typed if fld.long_text else _col(raw_name)  # (the typed stage cannot read its own columns)
                _fits_the_warehouse(stored, fld.name, label, problems, fld.long_text)
            self.values[prefix + fld.name] = _col(value_name)

        # Attributes the schema does not know (schema drift) are kept as DynamoDB typed JSON; one with no
        # type tag Spark knows would come out as {}: that is reported, not lost. Map keys are unique, so
        # there is one iff the map is larger than the number of known names it holds (no per-row set).
        known = F.array(*[F.lit(n) for n in entity.names])
        known_present = sum((F.when(image[n].isNotNull(), F.lit(1)).otherwise(F.lit(0)) for n in entity.names),
                            F.lit(0))
        has_extra = F.size(image) > known_present
        extra = F.map_filter(image, lambda k, _v: ~F.array_contains(known, k))
        untagged = F.array_join(F.map_keys(F.map_filter(extra, lambda _k, v: _untagged(v))), ", ")
        unmapped_name, untagged_name = prefix + S.UNMAPPED, _name(prefix, "untagged")
        self.drift[unmapped_name] = F.when(has_extra, F.to_json(extra))
        self.drift[untagged_name] = F.when(has_extra, F.nullif(untagged, F.lit("")))
        self.lookups[unmapped_name], self.lookups[untagged_name] = _col(unmapped_name), _col(untagged_name)
        self.values[unmapped_name] = _col(unmapped_name)
        _fits_the_warehouse(_col(unmapped_name), S.UNMAPPED, f"{image_name} unmapped attributes (JSON)", problems)
        problems.add(_col(untagged_name).isNotNull(),
                     F.concat(F.lit(f"{image_name}: attribute(s) "), _col(untagged_name),
                              F.lit(" have no known DynamoDB type tag (their value would be lost)")))
        return problems


def _key_value(stages: _Stages, envelope: _Problems, key: S.Field, is_remove: Column, op: Column) -> None:
    """One key attribute's event column: from ``dynamodb.Keys``, else from the image that holds the item,
    typed like the image's value. A key that is missing, empty or differs between the two is an error."""
    from_keys = _col(_name("keys", key.name))
    from_image = _when_op(is_remove, _col(_name(S.OLD_PREFIX, key.name)), _col(_name(S.NEW_PREFIX, key.name)))
    raw_name = _name("key", key.name)
    stages.derived[raw_name] = F.coalesce(from_keys, from_image)
    raw = _col(raw_name)
    envelope.add(op.isNotNull() & (raw.isNull() | (raw == F.lit(""))), f"missing key {key.name}")
    if isinstance(key.spark_type, T.StringType):
        _fits_the_warehouse(raw, key.name, f"key {key.name}", envelope)
    envelope.add(from_keys.isNotNull() & from_image.isNotNull() & (from_keys != from_image),
                 f"key {key.name} differs between dynamodb.Keys and the image")
    value_name = _name("key", key.name, "value")
    stages.typed[value_name] = _typed(raw, key, f"dynamodb.Keys.{key.name}", envelope).cast(key.spark_type)
    stages.values[key.name] = _col(value_name)


def _event_time(raw: Column) -> Column:
    """ApproximateCreationDateTime: epoch seconds on AWS (milliseconds above 1e11), ISO text from moto."""
    epoch = F.try_variant_get(raw, "$", "decimal(20,6)")
    as_seconds = F.when(epoch > F.lit(1e11), epoch / 1000).otherwise(epoch)
    return F.coalesce(F.timestamp_seconds(as_seconds), F.try_to_timestamp(F.try_variant_get(raw, "$", "string")))


def _when_op(is_remove: Column, on_remove: Column, otherwise: Column) -> Column:
    return F.when(is_remove, on_remove).otherwise(otherwise)


HAS_ERRORS, HAS_WARNINGS = "_has_errors", "_has_warnings"  # the first pass's problem flags


def decode_pipe_records(df: DataFrame, entity: S.EntitySchema) -> DataFrame:
    """Source rows (``schema.SOURCE_FIELDS``) -> event rows (``schema.event_fields``) + ``cdc_errors``, in
    one lazy pass with the messages (the batch handler uses :func:`decode_batch`: the same rows, faster).

    Rows with a non-empty ``cdc_errors`` must be quarantined (see :func:`split_decoded`).
    """
    return _apply(df, _projections(entity, id(df.sparkSession.sparkContext), detailed=True))


def decode_flagged(df: DataFrame, entity: S.EntitySchema) -> DataFrame:
    """The first pass of :func:`decode_batch`: the event columns and, instead of messages, the flags
    ``HAS_ERRORS`` and ``HAS_WARNINGS`` (``cdc_warnings`` is empty on every row)."""
    return _apply(df, _projections(entity, id(df.sparkSession.sparkContext), detailed=False))


def _apply(df: DataFrame, projections: list[tuple[str, Any]]) -> DataFrame:
    for method, columns in projections:
        df = df.withColumns(columns) if method == "withColumns" else df.select(*columns)
    return df


@dataclass(frozen=True)
class DecodedBatch:
    """A materialised decode (what :func:`decode_pipe_records` returns) and its counts."""

    frame: DataFrame
    read: int
    valid: int  # no errors
    warned: int  # no errors, some warnings


def decode_batch(df: DataFrame, materialize: Callable[[DataFrame], DataFrame],
                 entity: S.EntitySchema) -> DecodedBatch:
    """The batch handler's decode: the same rows as :func:`decode_pipe_records`, in two passes.

    The first pass computes the values and two flags per row (has errors, has warnings), and is
    materialised with ``materialize`` (which must compute it: a checkpoint) while its counts are observed.
    Only the rows flagged there are decoded again, with the messages, and materialised too. The two
    passes use the same expressions for values and conditions, so they agree on which rows have problems.
    """
    flags = F.col(HAS_ERRORS) | F.col(HAS_WARNINGS)
    observed = Observation(f"decode_counts_{uuid.uuid4().hex}")
    first = materialize(decode_flagged(df, entity).observe(
        observed,
        F.count(F.lit(1)).alias("read"),
        F.count_if(~F.col(HAS_ERRORS)).alias("valid"),
        F.count_if(~F.col(HAS_ERRORS) & F.col(HAS_WARNINGS)).alias("warned"),
        F.count_if(flags).alias("flagged"),
    ))
    counts = observed.get
    columns = [f.name for f in S.event_fields(entity)]
    clean = first.select(*columns, _no_messages().alias(S.CDC_ERRORS))
    if counts["flagged"]:
        flagged = first.where(flags).select(*[f.name for f in S.SOURCE_FIELDS])
        clean = clean.where(~flags).unionByName(materialize(decode_pipe_records(flagged, entity)))
    return DecodedBatch(clean, counts["read"], counts["valid"], counts["warned"])


@functools.lru_cache(maxsize=16)
def _projections(entity: S.EntitySchema, _spark_context: int, detailed: bool) -> list[tuple[str, Any]]:
    """The decode's projections, built once per entity, Spark context and kind (with messages, or with
    the problem flags only): they are a few thousand Column objects, and building them (one py4j call
    each) took 1.5 s, more than decoding 100k records."""
    # A file source hands invalid UTF-8 bytes through as they are (Kinesis' replaces them with U+FFFD): they
    # are flagged here, and every later use of the payload (raw, quarantine) gets them replaced by U+FFFD,
    # since Arrow, delta-rs and the warehouse take valid UTF-8 only.
    source = [F.make_valid_utf8(F.col(f.name)).alias(f.name) if f.name == S.PAYLOAD
              else F.col(f.name).cast(f.spark_type).alias(f.name) for f in S.SOURCE_FIELDS]
    parse = [*source, (~F.is_valid_utf8(F.col(S.PAYLOAD))).alias("_invalid_utf8"),
             F.from_json(F.col(S.PAYLOAD), STREAM_RECORD, _PARSE_OPTIONS).alias("_record")]
    record = F.col("_record")
    ddb = record["dynamodb"]
    stages = _Stages(ddb, detailed)
    lookups = stages.lookups
    # Only a record from_json could not read fully is parsed a second time, to tell bad JSON from a bad shape.
    lookups["_not_json"] = F.when(record[_CORRUPT].isNotNull(), F.try_parse_json(S.PAYLOAD).isNull()) \
        .otherwise(F.lit(False))
    lookups["_shape_mismatch"] = record[_CORRUPT].isNotNull()
    # the strict parser refuses duplicate object keys (from_json keeps one of them silently)
    lookups["_duplicate_key"] = F.when(record[_CORRUPT].isNull(), F.try_parse_json(S.PAYLOAD).isNull()) \
        .otherwise(F.lit(False))
    payload_problems = _payload_problems(F.col(S.PAYLOAD))
    lookups.update({name: condition for name, (condition, _) in payload_problems.items()})
    lookups["_op"] = record["eventName"]
    lookups["_event_id"] = record["eventID"]
    lookups["_raw_sequence"] = ddb["SequenceNumber"]
    lookups["_raw_event_time"] = ddb["ApproximateCreationDateTime"]
    for key in entity.key_fields:
        lookups[_name("keys", key.name)] = ddb["Keys"][key.name][key.ddb_type]
    lookups["_has_new_image"] = ddb["NewImage"].isNotNull()
    new_problems = stages.image("NewImage", S.NEW_PREFIX, entity)
    old_problems = stages.image("OldImage", S.OLD_PREFIX, entity)

    not_json, op, event_id = _col("_not_json"), _col("_op"), _col("_event_id")
    raw_sequence = _col("_raw_sequence")
    is_remove = op == F.lit("REMOVE")
    is_json = ~not_json
    stages.derived["_event_time"] = _event_time(_col("_raw_event_time"))
    event_time = _col("_event_time")

    envelope = _Problems()
    envelope.add(not_json, "payload is not valid JSON")
    envelope.add(is_json & _col("_shape_mismatch"),
                 "payload does not have the shape of a DynamoDB stream record (a value has the wrong JSON type)")
    envelope.add(_col("_duplicate_key"), "payload has a duplicate key in a JSON object (which one wins is undefined)")
    for name, (_, message) in payload_problems.items():
        envelope.add(_col(name), message)
    envelope.add(is_json & op.isNull(), "missing eventName")
    envelope.add(op.isNotNull() & ~op.isin(*S.CDC_OPS),
                 F.concat(F.lit("unknown eventName '"), op, F.lit(f"' (expected one of {', '.join(S.CDC_OPS)})")))
    envelope.add(is_json & event_id.isNull(), "missing eventID")
    envelope.add(is_json & raw_sequence.isNull(), "missing dynamodb.SequenceNumber")
    envelope.add(raw_sequence.isNotNull() & ~raw_sequence.rlike(f"^[0-9]{{1,{S.SEQUENCE_WIDTH}}}$"),
                 F.concat(F.lit("dynamodb.SequenceNumber '"), raw_sequence,
                          F.lit(f"' is not a decimal number of at most {S.SEQUENCE_WIDTH} digits")))
    envelope.add(is_json & event_time.isNull(), "missing or invalid dynamodb.ApproximateCreationDateTime")
    envelope.add(op.isin("INSERT", "MODIFY") & ~_col("_has_new_image"),
                 F.concat(F.lit("missing dynamodb.NewImage for "), op))
    for key in entity.key_fields:
        _key_value(stages, envelope, key, is_remove, op)
    _fits_the_warehouse(event_id, S.CDC_EVENT_ID, "eventID", envelope)

    # The image that becomes the state must decode; the other one is informational (a bad old value
    # must not block the update that fixes it), so its problems are warnings.
    stages.typed["_new_bad"], stages.typed["_old_bad"] = new_problems.any(), old_problems.any()
    new_bad, old_bad = _col("_new_bad"), _col("_old_bad")
    known_op = op.isin(*S.CDC_OPS)
    has_errors = envelope.any() | F.coalesce(known_op & _when_op(is_remove, old_bad, new_bad), F.lit(False))
    new_warns, old_warns = is_remove & new_bad, ~is_remove & old_bad
    has_warnings = F.coalesce(new_warns | old_warns, F.lit(False))
    if detailed:
        problems = F.concat(
            envelope.messages(),
            F.when(known_op, _when_op(is_remove, old_problems.messages(), new_problems.messages()))
            .otherwise(_no_messages()))
        problem_columns = {S.CDC_ERRORS: F.when(has_errors, problems).otherwise(_no_messages())}
        warnings = F.when(new_warns, new_problems.messages()).when(old_warns, old_problems.messages()) \
            .otherwise(_no_messages())
    else:
        problem_columns = {HAS_ERRORS: has_errors, HAS_WARNINGS: has_warnings}
        warnings = _no_messages()  # the second pass fills it in for the rows flagged here

    values = stages.values
    values.update({
        S.CDC_EVENT_ID: event_id,
        S.CDC_OP: op,
        S.CDC_SEQUENCE: F.lpad(raw_sequence, S.SEQUENCE_WIDTH, "0"),
        S.CDC_EVENT_TIME: event_time,
        S.CDC_WARNINGS: warnings,
    })
    values.update({f.name: F.col(f.name) for f in S.SOURCE_FIELDS})
    source_names = [F.col(f.name) for f in S.SOURCE_FIELDS]
    return [
        ("select", parse),
        ("withColumns", stages.drift),
        ("select", [*source_names, *[c.alias(n) for n, c in lookups.items()]]),  # the record is dropped here
        ("withColumns", stages.derived),
        ("withColumns", stages.typed),
        ("select", [*[values[f.name].alias(f.name) for f in S.event_fields(entity)],
                    *[c.alias(n) for n, c in problem_columns.items()]]),
    ]


def split_decoded(decoded: DataFrame, batch_id: int, entity: S.EntitySchema) -> tuple[DataFrame, DataFrame]:
    """(valid events, quarantine rows) from the output of :func:`decode_pipe_records`.

    Materialise ``decoded`` first (the batch handler checkpoints it): Spark pushes these filters down
    through the decode's projections by inlining their expressions, which would parse each payload
    once per reference of the record (measured: 2x the decode time)."""
    has_errors = F.size(S.CDC_ERRORS) > 0
    events = decoded.where(~has_errors).drop(S.CDC_ERRORS)
    quarantine = to_quarantine_rows(decoded.where(has_errors), F.array_join(S.CDC_ERRORS, "; "), batch_id, "decode",
                                    entity)
    return events, quarantine
