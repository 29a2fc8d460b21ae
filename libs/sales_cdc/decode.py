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

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import decode_values as V
from . import schema as S
from .merge_rules import STORED_SNAPSHOT_SEQUENCE
from .runtime import built_once
from .transforms import to_quarantine_rows


def _tag_type(tag: str) -> T.DataType:
    if tag in ("BOOL", "NULL"):
        return T.BooleanType()
    if tag in V.SET_TAGS:
        return T.ArrayType(T.StringType())
    if tag in V.NESTED_TAGS:
        return T.VariantType()
    return T.StringType()  # S, N (a decimal *string*, never a float), B (base64)


ATTRIBUTE_VALUE = T.StructType([T.StructField(tag, _tag_type(tag)) for tag in S.DDB_TYPES])
IMAGE = T.MapType(T.StringType(), ATTRIBUTE_VALUE)
_CORRUPT = "_corrupt_record"  # from_json puts the payload here when it is not JSON or a value has the wrong JSON type
STREAM_RECORD = T.StructType([
    T.StructField(_CORRUPT, T.StringType()),
    T.StructField("eventID", T.StringType()),
    T.StructField("eventName", T.StringType()),
    T.StructField("eventSource", T.StringType()),
    T.StructField("dynamodb", T.StructType([
        # epoch seconds (AWS) or ISO text (moto): a VARIANT keeps either exactly
        T.StructField("ApproximateCreationDateTime", T.VariantType()),
        T.StructField("Keys", IMAGE),
        T.StructField("NewImage", IMAGE),
        T.StructField("OldImage", IMAGE),
        T.StructField("SequenceNumber", T.StringType()),
    ])),
])
EVENT_SOURCE = "aws:dynamodb"  # what every DynamoDB stream record says it comes from
_PARSE_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": _CORRUPT}

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

    def image(self, image_name: str, prefix: str, entity: S.EntitySchema) -> V.Problems:
        """Decode ``dynamodb.<image_name>`` into ``<prefix><field>`` columns; return its problems."""
        image = self.ddb[image_name]
        problems = V.Problems()
        for fld in entity.fields:
            attr = image[fld.name]
            raw_name, wrong_name = V.name(prefix, fld.name), V.name(prefix, fld.name, "wrong_type")
            tags_name = V.name(prefix, fld.name, "type_tags")
            self.lookups[raw_name] = attr[fld.ddb_type]
            wrong_type = attr.isNotNull() & ~F.coalesce(attr["NULL"], F.lit(False)) & attr[fld.ddb_type].isNull()
            self.lookups[wrong_name] = wrong_type
            if self.detailed:  # the type tags it has instead, for the message
                self.lookups[tags_name] = F.when(wrong_type, V.type_tags(attr))
            label = f"{image_name}.{fld.name}"
            problems.add(V.col(wrong_name),
                         F.concat(F.lit(f"{label}: expected DynamoDB type {fld.ddb_type}, got "), V.col(tags_name)))
            value_name = V.name(prefix, fld.name, "value")
            typed = V.typed(V.col(raw_name), fld, label, problems).cast(fld.spark_type)
            self.typed[value_name] = typed
            if isinstance(fld.spark_type, T.StringType):  # the text as stored: a json column's JSON, else the raw
                stored = typed if fld.long_text else V.col(raw_name)  # (the typed stage cannot read its own columns)
                V.fits_the_warehouse(stored, fld.name, label, problems, fld.long_text)
            self.values[prefix + fld.name] = V.col(value_name)

        # Attributes the schema does not know (schema drift) are kept as DynamoDB typed JSON; one with no
        # type tag Spark knows would come out as {}: that is reported, not lost. Map keys are unique, so
        # there is one iff the map is larger than the number of known names it holds (no per-row set).
        known = F.array(*[F.lit(n) for n in entity.names])
        known_present = sum((F.when(image[n].isNotNull(), F.lit(1)).otherwise(F.lit(0)) for n in entity.names),
                            F.lit(0))
        has_extra = F.size(image) > known_present
        extra = F.map_filter(image, lambda k, _v: ~F.array_contains(known, k))
        untagged = F.array_join(F.map_keys(F.map_filter(extra, lambda _k, v: V.untagged(v))), ", ")
        # a value with two type tags ({"N": "3", "S": "3"}) has no one meaning: whichever the decode read, the
        # other would be lost; any attribute of the image, named or not
        tagged_twice = F.array_join(F.map_keys(F.map_filter(image, lambda _k, v: V.tag_count(v) > 1)), ", ")
        unmapped_name, untagged_name = prefix + S.UNMAPPED, V.name(prefix, "untagged")
        twice_name = V.name(prefix, "tagged_twice")
        self.drift[unmapped_name] = F.when(has_extra, F.to_json(extra))
        self.drift[untagged_name] = F.when(has_extra, F.nullif(untagged, F.lit("")))
        self.drift[twice_name] = F.nullif(tagged_twice, F.lit(""))
        self.lookups[unmapped_name], self.lookups[untagged_name] = V.col(unmapped_name), V.col(untagged_name)
        self.lookups[twice_name] = V.col(twice_name)
        self.values[unmapped_name] = V.col(unmapped_name)
        V.fits_the_warehouse(V.col(unmapped_name), S.UNMAPPED, f"{image_name} unmapped attributes (JSON)", problems)
        problems.add(V.col(untagged_name).isNotNull(),
                     F.concat(F.lit(f"{image_name}: attribute(s) "), V.col(untagged_name),
                              F.lit(" have no known DynamoDB type tag (their value would be lost)")))
        problems.add(V.col(twice_name).isNotNull(),
                     F.concat(F.lit(f"{image_name}: attribute(s) "), V.col(twice_name),
                              F.lit(" have more than one DynamoDB type tag (which one holds the value is undefined)")))
        return problems


def _key_value(stages: _Stages, envelope: V.Problems, key: S.Field, is_remove: Column, op: Column) -> None:
    """One key attribute's event column: from ``dynamodb.Keys``, else from the image that holds the item,
    typed like the image's value. A key that is missing, empty or differs between the two is an error."""
    from_keys = V.col(V.name("keys", key.name))
    from_image = _when_op(is_remove, V.col(V.name(S.OLD_PREFIX, key.name)), V.col(V.name(S.NEW_PREFIX, key.name)))
    raw_name = V.name("key", key.name)
    stages.derived[raw_name] = F.coalesce(from_keys, from_image)
    raw = V.col(raw_name)
    envelope.add(op.isNotNull() & (raw.isNull() | (raw == F.lit(""))), f"missing key {key.name}")
    if isinstance(key.spark_type, T.StringType):
        V.fits_the_warehouse(raw, key.name, f"key {key.name}", envelope)
    envelope.add(from_keys.isNotNull() & from_image.isNotNull() & (from_keys != from_image),
                 f"key {key.name} differs between dynamodb.Keys and the image")
    value_name = V.name("key", key.name, "value")
    stages.typed[value_name] = V.typed(raw, key, f"dynamodb.Keys.{key.name}", envelope).cast(key.spark_type)
    stages.values[key.name] = V.col(value_name)


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
    return _apply(df, _projections(entity, True))


def decode_flagged(df: DataFrame, entity: S.EntitySchema) -> DataFrame:
    """The first pass of :func:`decode_batch`: the event columns and, instead of messages, the flags
    ``HAS_ERRORS`` and ``HAS_WARNINGS`` (``cdc_warnings`` is empty on every row)."""
    return _apply(df, _projections(entity, False))


def _apply(df: DataFrame, projections: list[tuple[str, Any]]) -> DataFrame:
    for method, columns in projections:
        df = df.withColumns(columns) if method == "withColumns" else df.select(*columns)
    return df


@dataclass(frozen=True)
class DecodedBatch:
    """A materialised decode (what :func:`decode_pipe_records` returns) and its counts."""

    frame: DataFrame
    read: int
    valid: int  # no errors (and, with ``on_new_attribute: quarantine``, no attribute the contract lacks)
    warned: int  # no errors, some warnings
    unmapped: int = 0  # valid, with attributes the contract does not name in the image that becomes the state
    # the oldest valid stream event's time (epoch seconds): how far behind the batch is (a backfill's snapshot
    # records carry the snapshot's time, not a change's: they do not count)
    oldest_event: float | None = None


def _state_unmapped() -> Column:
    """The unmapped attributes of the image that becomes the state (the OldImage of a REMOVE)."""
    return F.when(F.col(S.CDC_OP) == F.lit("REMOVE"), F.col(S.OLD_PREFIX + S.UNMAPPED)) \
        .otherwise(F.col(S.NEW_PREFIX + S.UNMAPPED))


def _unknown_attributes(entity: S.EntitySchema) -> Column:
    """True for an upsert whose item has an attribute the contract lacks, when the contract quarantines it
    (``on_new_attribute: quarantine``). A REMOVE passes: deleting an item must not depend on what it held."""
    if entity.on_new_attribute != "quarantine":
        return F.lit(False)
    return (F.col(S.CDC_OP) != F.lit("REMOVE")) & F.col(S.NEW_PREFIX + S.UNMAPPED).isNotNull()


def decode_batch(df: DataFrame, materialize: Callable[[DataFrame], DataFrame],
                 entity: S.EntitySchema) -> DecodedBatch:
    """The batch handler's decode: the same rows as :func:`decode_pipe_records`, in two passes.

    The first pass computes the values and two flags per row (has errors, has warnings), and is
    materialised with ``materialize`` (which must compute it: a checkpoint) while its counts are observed.
    Only the rows flagged there are decoded again, with the messages, and materialised too. The two
    passes use the same expressions for values and conditions, so they agree on which rows have problems.
    """
    observed = Observation(f"decode_counts_{uuid.uuid4().hex}")
    counted, clean_columns, flags = _first_pass_columns(entity)
    first = materialize(decode_flagged(df, entity).observe(observed, *counted))
    counts = observed.get
    clean = first.select(*clean_columns)
    if counts["flagged"]:
        flagged = first.where(flags).select(*[f.name for f in S.SOURCE_FIELDS])
        clean = clean.where(~flags).unionByName(materialize(decode_pipe_records(flagged, entity)))
    return DecodedBatch(clean, counts["read"], counts["valid"] - counts["unknown"], counts["warned"],
                        counts["unmapped"], counts["oldest_event"])


@built_once
def _first_pass_columns(entity: S.EntitySchema) -> tuple[tuple[Column, ...], tuple[Column, ...], Column]:
    """:func:`decode_batch`'s counts of the first pass, its rows as clean events, and its problem flags."""
    flags = F.col(HAS_ERRORS) | F.col(HAS_WARNINGS)
    counted = (
        F.count(F.lit(1)).alias("read"),
        F.count_if(~F.col(HAS_ERRORS)).alias("valid"),
        F.count_if(~F.col(HAS_ERRORS) & F.col(HAS_WARNINGS)).alias("warned"),
        F.count_if(flags).alias("flagged"),
        F.count_if(~F.col(HAS_ERRORS) & _state_unmapped().isNotNull()).alias("unmapped"),
        F.count_if(~F.col(HAS_ERRORS) & _unknown_attributes(entity)).alias("unknown"),
        F.min(F.when(~F.col(HAS_ERRORS) & (F.col(S.CDC_SEQUENCE) != F.lit(STORED_SNAPSHOT_SEQUENCE)),
                     F.col(S.CDC_EVENT_TIME).cast("double"))).alias("oldest_event"),
    )
    clean = (*[F.col(f.name) for f in S.event_fields(entity)], V.no_messages().alias(S.CDC_ERRORS))
    return counted, clean, flags


@built_once
def _projections(entity: S.EntitySchema, detailed: bool) -> list[tuple[str, Any]]:
    """The decode's projections, built once per entity, Spark context and kind (with messages, or with
    the problem flags only): they are a few thousand Column objects, and building them (one py4j call
    each) took 1.5 s, more than decoding 100k records."""
    record = F.col("_record")
    stages = _Stages(record["dynamodb"], detailed)
    payload_problems = _read_the_record(stages, record, entity)
    new_problems = stages.image("NewImage", S.NEW_PREFIX, entity)
    old_problems = stages.image("OldImage", S.OLD_PREFIX, entity)
    op = V.col("_op")
    is_remove = op == F.lit("REMOVE")
    stages.derived["_event_time"] = _event_time(V.col("_raw_event_time"))
    envelope = _envelope_problems(payload_problems)
    for key in entity.key_fields:
        _key_value(stages, envelope, key, is_remove, op)
    problem_columns, warnings = _problem_columns(stages, envelope, new_problems, old_problems, is_remove)
    stages.values.update({
        S.CDC_EVENT_ID: V.col("_event_id"),
        S.CDC_OP: op,
        S.CDC_SEQUENCE: F.lpad(V.col("_raw_sequence"), S.SEQUENCE_WIDTH, "0"),
        S.CDC_EVENT_TIME: V.col("_event_time"),
        S.CDC_WARNINGS: warnings,
        **{f.name: F.col(f.name) for f in S.SOURCE_FIELDS},
    })
    source_names = [F.col(f.name) for f in S.SOURCE_FIELDS]
    return [
        ("select", _parse()),
        ("withColumns", stages.drift),
        ("select", [*source_names, *[c.alias(n) for n, c in stages.lookups.items()]]),  # the record is dropped here
        ("withColumns", stages.derived),
        ("withColumns", stages.typed),
        ("select", [*[stages.values[f.name].alias(f.name) for f in S.event_fields(entity)],
                    *[c.alias(n) for n, c in problem_columns.items()]]),
    ]


def _parse() -> list[Column]:
    """The source columns and the parsed record. A file source hands invalid UTF-8 bytes through as they are
    (Kinesis' replaces them with U+FFFD): they are flagged here, and every later use of the payload (raw,
    quarantine) gets them replaced by U+FFFD, since Arrow, delta-rs and the warehouse take valid UTF-8 only."""
    source = [F.make_valid_utf8(F.col(f.name)).alias(f.name) if f.name == S.PAYLOAD
              else F.col(f.name).cast(f.spark_type).alias(f.name) for f in S.SOURCE_FIELDS]
    return [*source, (~F.is_valid_utf8(F.col(S.PAYLOAD))).alias("_invalid_utf8"),
            F.from_json(F.col(S.PAYLOAD), STREAM_RECORD, _PARSE_OPTIONS).alias("_record")]


def _read_the_record(stages: _Stages, record: Column, entity: S.EntitySchema) -> dict[str, tuple[Column, str]]:
    """The envelope's scalars and the payload checks, as lookups (read before the record is dropped);
    returns the payload checks (their messages)."""
    lookups, ddb = stages.lookups, stages.ddb
    # Only a record from_json could not read fully is parsed a second time, to tell bad JSON from a bad shape.
    lookups["_not_json"] = F.when(record[_CORRUPT].isNotNull(), F.try_parse_json(S.PAYLOAD).isNull()) \
        .otherwise(F.lit(False))
    lookups["_shape_mismatch"] = record[_CORRUPT].isNotNull()
    # the strict parser refuses duplicate object keys (from_json keeps one of them silently)
    lookups["_duplicate_key"] = F.when(record[_CORRUPT].isNull(), F.try_parse_json(S.PAYLOAD).isNull()) \
        .otherwise(F.lit(False))
    payload_problems = V.payload_problems(F.col(S.PAYLOAD))
    lookups.update({name: condition for name, (condition, _) in payload_problems.items()})
    lookups["_op"] = record["eventName"]
    lookups["_event_source"] = record["eventSource"]
    lookups["_event_id"] = record["eventID"]
    lookups["_raw_sequence"] = ddb["SequenceNumber"]
    lookups["_raw_event_time"] = ddb["ApproximateCreationDateTime"]
    for key in entity.key_fields:
        lookups[V.name("keys", key.name)] = ddb["Keys"][key.name][key.ddb_type]
    lookups["_has_new_image"] = ddb["NewImage"].isNotNull()
    return payload_problems


def _envelope_problems(payload_problems: dict[str, tuple[Column, str]]) -> V.Problems:
    """What makes a record unusable whatever its images hold: not JSON, a wrong shape, a missing or bad
    envelope field (the keys are added by :func:`_key_value`)."""
    not_json, op, event_id = V.col("_not_json"), V.col("_op"), V.col("_event_id")
    raw_sequence, event_time, is_json = V.col("_raw_sequence"), V.col("_event_time"), ~V.col("_not_json")
    envelope = V.Problems()
    envelope.add(not_json, "payload is not valid JSON")
    envelope.add(is_json & V.col("_shape_mismatch"),
                 "payload does not have the shape of a DynamoDB stream record (a value has the wrong JSON type)")
    envelope.add(V.col("_duplicate_key"), "payload has a duplicate key in a JSON object (which one wins is undefined)")
    for name, (_, message) in payload_problems.items():
        envelope.add(V.col(name), message)
    envelope.add(is_json & op.isNull(), "missing eventName")
    envelope.add(op.isNotNull() & ~op.isin(*S.CDC_OPS),
                 F.concat(F.lit("unknown eventName '"), op, F.lit(f"' (expected one of {', '.join(S.CDC_OPS)})")))
    envelope.add(is_json & event_id.isNull(), "missing eventID")
    source = V.col("_event_source")
    envelope.add(is_json & (source.isNull() | (source != F.lit(EVENT_SOURCE))),
                 F.concat(F.lit("eventSource '"), F.coalesce(source, F.lit("(missing)")),
                          F.lit(f"' is not {EVENT_SOURCE}: not a DynamoDB stream record")))
    envelope.add(is_json & raw_sequence.isNull(), "missing dynamodb.SequenceNumber")
    envelope.add(raw_sequence.isNotNull() & ~raw_sequence.rlike(f"^[0-9]{{1,{S.SEQUENCE_WIDTH}}}$"),
                 F.concat(F.lit("dynamodb.SequenceNumber '"), raw_sequence,
                          F.lit(f"' is not a decimal number of at most {S.SEQUENCE_WIDTH} digits")))
    envelope.add(is_json & event_time.isNull(), "missing or invalid dynamodb.ApproximateCreationDateTime")
    envelope.add(op.isin("INSERT", "MODIFY") & ~V.col("_has_new_image"),
                 F.concat(F.lit("missing dynamodb.NewImage for "), op))
    V.fits_the_warehouse(event_id, S.CDC_EVENT_ID, "eventID", envelope)
    return envelope


def _problem_columns(stages: _Stages, envelope: V.Problems, new_problems: V.Problems, old_problems: V.Problems,
                     is_remove: Column) -> tuple[dict[str, Column], Column]:
    """(the problem columns: messages, or the first pass's flags; the warnings column). The image that becomes
    the state must decode; the other one is informational (a bad old value must not block the update that
    fixes it), so its problems are warnings."""
    stages.typed["_new_bad"], stages.typed["_old_bad"] = new_problems.any(), old_problems.any()
    new_bad, old_bad = V.col("_new_bad"), V.col("_old_bad")
    known_op = V.col("_op").isin(*S.CDC_OPS)
    has_errors = envelope.any() | F.coalesce(known_op & _when_op(is_remove, old_bad, new_bad), F.lit(False))
    new_warns, old_warns = is_remove & new_bad, ~is_remove & old_bad
    if not stages.detailed:  # the second pass fills the warnings in for the rows flagged here
        has_warnings = F.coalesce(new_warns | old_warns, F.lit(False))
        return {HAS_ERRORS: has_errors, HAS_WARNINGS: has_warnings}, V.no_messages()
    problems = F.concat(
        envelope.messages(),
        F.when(known_op, _when_op(is_remove, old_problems.messages(), new_problems.messages()))
        .otherwise(V.no_messages()))
    warnings = F.when(new_warns, new_problems.messages()).when(old_warns, old_problems.messages()) \
        .otherwise(V.no_messages())
    return {S.CDC_ERRORS: F.when(has_errors, problems).otherwise(V.no_messages())}, warnings


def split_decoded(decoded: DataFrame, batch_id: int, entity: S.EntitySchema) -> tuple[DataFrame, DataFrame]:
    """(valid events, quarantine rows) from the output of :func:`decode_pipe_records`.

    Materialise ``decoded`` first (the batch handler checkpoints it): Spark pushes these filters down
    through the decode's projections by inlining their expressions, which would parse each payload
    once per reference of the record (measured: 2x the decode time)."""
    rejected, reason = _rejection(entity)
    events = decoded.where(~rejected).drop(S.CDC_ERRORS)
    quarantine = to_quarantine_rows(decoded.where(rejected), reason, batch_id, S.DECODE_STAGE, entity)
    return events, quarantine


@built_once
def _rejection(entity: S.EntitySchema) -> tuple[Column, Column]:
    """:func:`split_decoded`'s test of a rejected row, and its reason."""
    has_errors = F.size(S.CDC_ERRORS) > 0
    reason = F.when(has_errors, F.array_join(S.CDC_ERRORS, "; ")).otherwise(F.concat(
        F.lit("attribute(s) "), F.array_join(F.json_object_keys(S.NEW_PREFIX + S.UNMAPPED), ", "),
        F.lit(" not in the contract (on_new_attribute: quarantine): name them in the contract to load them")))
    return has_errors | _unknown_attributes(entity), reason
