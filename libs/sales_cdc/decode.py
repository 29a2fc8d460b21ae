"""Decode EventBridge-Pipe payloads (DynamoDB stream records) into typed CDC event rows.

Pure Spark, no Python UDF: each payload is parsed once into a VARIANT (``try_parse_json``) and every
field is read from it with ``try_variant_get``. Nothing raises on bad input: every problem becomes a
message in ``cdc_errors`` (the row is then quarantined) or, for the informational old image of an
INSERT/MODIFY, in ``cdc_warnings``.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import schema as S
from .transforms import to_quarantine_rows

_RECORD = "_record"  # the parsed payload (VARIANT), dropped at the end

# N values are parsed at this precision first, so that a value the target type cannot hold exactly
# (too many decimals, fractional quantity, out of range) is reported instead of silently rounded.
_EXACT_NUMBER = T.DecimalType(38, 18)


def _get(variant: Column, path: str, type_: str = "string") -> Column:
    return F.try_variant_get(variant, path, type_)


class _At:
    """A place in the parsed record, read by full path from the record itself. Extracting a nested
    VARIANT first (the image, then the attribute) would copy it once per use: Spark inlines the
    extraction into every expression that reads it (measured: 6x slower decode)."""

    def __init__(self, record: Column, path: str):
        self.record, self.path = record, path

    def at(self, name: str) -> _At:
        return _At(self.record, f"{self.path}.{name}")

    def get(self, type_: str = "string", sub: str = "") -> Column:
        return _get(self.record, self.path + sub, type_)


def _reasons(*checks: tuple[Column, Column | str]) -> Column:
    """Array of the messages whose condition is true (conditions may be null: treated as false)."""
    messages = [F.when(cond, msg if isinstance(msg, Column) else F.lit(msg)) for cond, msg in checks]
    # Most rows have no problem: test the conditions first and build (and filter) the array only when
    # one holds; the array + lambda filter per row was the decode's main cost.
    any_problem = F.lit(False)
    for cond, _ in checks:
        any_problem = any_problem | F.coalesce(cond, F.lit(False))
    return F.when(any_problem, F.filter(F.array(*messages), lambda m: m.isNotNull())).otherwise(_no_errors())


def _no_errors() -> Column:
    return F.array().cast("array<string>")


def _quoted(prefix: str, raw: Column, suffix: str) -> Column:
    """``prefix'<raw>'suffix``: an error message that shows the offending value."""
    return F.concat(F.lit(f"{prefix}'"), raw, F.lit(f"'{suffix}"))


def _unparsed(raw: Column, value: Column, message: Column | str) -> Column:
    """The message when a value is present but did not parse."""
    return _reasons((raw.isNotNull() & value.isNull(), message))


def _number(raw: Column, target: T.DataType, label: str) -> tuple[Column, Column]:
    exact = raw.try_cast(_EXACT_NUMBER)
    if isinstance(target, (T.FloatType, T.DoubleType)):
        value = raw.try_cast(target)
        return value, _unparsed(raw, value, _quoted(f"{label}: N value ", raw, " is not a number"))
    value = exact.try_cast(target)
    out_of_range = exact.isNotNull() & value.isNull()
    inexact = value.isNotNull() & (value.cast(_EXACT_NUMBER) != exact)
    type_name = target.simpleString().upper()
    return value, F.concat(
        _unparsed(raw, exact, _quoted(f"{label}: N value ", raw, " is not a number (or out of range)")),
        _reasons(
            (out_of_range, _quoted(f"{label}: N value ", raw, f" is out of range for {type_name}")),
            (inexact, _quoted(f"{label}: N value ", raw, f" is not exactly representable as {type_name}")),
        ),
    )


def _decode_tagged(attr: _At, field: S.Field, label: str) -> tuple[Column, Column, Column]:
    """(raw tagged value, typed value, error messages) of ``attr`` (e.g. ``{"N": "3"}``) for ``field``."""
    tag, target = field.ddb_type, field.spark_type
    path = f".{tag}"
    if tag == "S":
        raw = attr.get(sub=path)
        if isinstance(target, T.TimestampType):
            value = F.try_to_timestamp(raw)
            return raw, value, _unparsed(raw, value, _quoted(f"{label}: ", raw, " is not a timestamp"))
        if isinstance(target, T.DateType):
            value = raw.try_cast(T.DateType())
            return raw, value, _unparsed(raw, value, _quoted(f"{label}: ", raw, " is not a date"))
        return raw, raw, _no_errors()
    if tag == "N":
        raw = attr.get(sub=path)
        value, errors = _number(raw, target, label)
        return raw, value, errors
    if tag == "BOOL":
        raw = attr.get("boolean", path)
        return raw, raw, _no_errors()
    if tag == "B":
        raw = attr.get(sub=path)
        value = F.try_to_binary(raw, F.lit("base64"))
        return raw, value, _unparsed(raw, value, f"{label}: B value is not base64")
    if tag in ("SS", "NS", "BS"):
        raw = attr.get("array<string>", path)
        if tag == "SS":
            return raw, raw, _no_errors()
        if tag == "NS":
            element = target.elementType if isinstance(target, T.ArrayType) else _EXACT_NUMBER
            value = F.transform(raw, lambda x: x.try_cast(element))
            bad = F.exists(value, lambda x: x.isNull())
            message = f"{label}: NS has a member that is not a number of {element.simpleString()}"
            return raw, value, _reasons((bad, F.lit(message)))
        value = F.transform(raw, lambda x: F.try_to_binary(x, F.lit("base64")))
        bad = F.exists(value, lambda x: x.isNull())
        return raw, value, _reasons((bad, F.lit(f"{label}: BS has a member that is not base64")))
    # M and L keep their nested typed JSON, losslessly, as a JSON string
    raw = attr.get("variant", path)
    return raw, F.to_json(raw), _no_errors()


def decode_attribute(image: _At, field: S.Field, label: str) -> tuple[Column, Column]:
    """Decode ``image[field.name]`` to ``field.spark_type``; return (value, error messages).

    A missing attribute or ``{"NULL": true}`` gives null; an attribute of another DynamoDB type than
    the schema declares is an error (never coerced).
    """
    attr = image.at(field.name)
    is_null = F.coalesce(attr.get("boolean", ".NULL"), F.lit(False))
    raw, value, errors = _decode_tagged(attr, field, label)
    present = attr.get("variant").isNotNull()
    wrong_type = present & ~is_null & raw.isNull()
    tags = F.array_join(F.map_keys(attr.get("map<string,variant>")), ",")  # read only for the message
    type_error = _reasons((wrong_type, F.concat(F.lit(f"{label}: expected DynamoDB type {field.ddb_type}, got "),
                                                F.coalesce(tags, F.lit("a non-attribute value")))))
    value = F.when(is_null, F.lit(None)).otherwise(value).cast(field.spark_type)
    return value, F.concat(type_error, errors)


def _unmapped(image: _At, entity: S.EntitySchema) -> Column:
    known = F.array(*[F.lit(n) for n in entity.names])
    extra = F.map_filter(image.get("map<string,variant>"), lambda k, _v: ~F.array_contains(known, k))
    return F.when(F.size(extra) > 0, F.to_json(extra))


def _event_time(record: Column) -> Column:
    """ApproximateCreationDateTime: epoch seconds on AWS (milliseconds above 1e11), ISO text from moto."""
    raw = _get(record, "$.dynamodb.ApproximateCreationDateTime", "variant")
    epoch = _get(raw, "$", "decimal(20,6)")
    as_seconds = F.when(epoch > F.lit(1e11), epoch / 1000).otherwise(epoch)
    return F.coalesce(F.timestamp_seconds(as_seconds), F.try_to_timestamp(_get(raw, "$")))


def decode_pipe_records(df: DataFrame, entity: S.EntitySchema = S.ORDERS) -> DataFrame:
    """Source rows (``schema.SOURCE_FIELDS``) -> event rows (``schema.event_fields``) + ``cdc_errors``.

    Rows with a non-empty ``cdc_errors`` must be quarantined (see :func:`split_decoded`).
    """
    record = F.col(_RECORD)
    parsed = df.withColumn(_RECORD, F.try_parse_json(F.col(S.PAYLOAD)))
    op = _get(record, "$.eventName")
    raw_sequence = _get(record, "$.dynamodb.SequenceNumber")
    event_id = _get(record, "$.eventID")
    event_time = _event_time(record)
    new_at, old_at = _At(record, "$.dynamodb.NewImage"), _At(record, "$.dynamodb.OldImage")
    is_remove = op == F.lit("REMOVE")

    key_field = entity.field(entity.key)
    key_path = f".{entity.key}.{key_field.ddb_type}"
    key_from_keys = _At(record, "$.dynamodb.Keys").get(sub=key_path)
    key_from_image = F.when(is_remove, old_at.get(sub=key_path)).otherwise(new_at.get(sub=key_path))
    key = F.coalesce(key_from_keys, key_from_image)

    columns: dict[str, Column] = {}
    image_errors: dict[str, list[Column]] = {}
    for prefix, image, label in ((S.NEW_PREFIX, new_at, "NewImage"), (S.OLD_PREFIX, old_at, "OldImage")):
        image_errors[prefix] = []
        for field in entity.fields:
            value, errors = decode_attribute(image, field, f"{label}.{field.name}")
            columns[prefix + field.name] = value
            image_errors[prefix].append(errors)
        columns[prefix + S.UNMAPPED] = _unmapped(image, entity)
    new_errors, old_errors = image_errors[S.NEW_PREFIX], image_errors[S.OLD_PREFIX]

    # The image that becomes the state must decode; the other one is informational (a bad old value
    # must not block the update that fixes it), so its problems are warnings.
    state_image_errors = F.when(is_remove, F.concat(*old_errors)).otherwise(F.concat(*new_errors))
    info_image_errors = F.when(is_remove, F.concat(*new_errors)).otherwise(F.concat(*old_errors))
    envelope_errors = _reasons(
        (record.isNull(), "payload is not valid JSON"),
        (record.isNotNull() & op.isNull(), "missing eventName"),
        (op.isNotNull() & ~op.isin(*S.CDC_OPS),
         F.concat(F.lit("unknown eventName '"), op, F.lit(f"' (expected one of {', '.join(S.CDC_OPS)})"))),
        (record.isNotNull() & event_id.isNull(), "missing eventID"),
        (record.isNotNull() & raw_sequence.isNull(), "missing dynamodb.SequenceNumber"),
        (raw_sequence.isNotNull() & ~raw_sequence.rlike(f"^[0-9]{{1,{S.SEQUENCE_WIDTH}}}$"),
         F.concat(F.lit("dynamodb.SequenceNumber '"), raw_sequence,
                  F.lit(f"' is not a decimal number of at most {S.SEQUENCE_WIDTH} digits"))),
        (record.isNotNull() & event_time.isNull(), "missing or invalid dynamodb.ApproximateCreationDateTime"),
        (op.isin("INSERT", "MODIFY") & new_at.get("variant").isNull(),
         F.concat(F.lit("missing dynamodb.NewImage for "), op)),
        (op.isNotNull() & (key.isNull() | (key == F.lit(""))), f"missing key {entity.key}"),
        (key_from_keys.isNotNull() & key_from_image.isNotNull() & (key_from_keys != key_from_image),
         f"key {entity.key} differs between dynamodb.Keys and the image"),
    )
    errors = F.when(op.isin(*S.CDC_OPS), F.concat(envelope_errors, state_image_errors)).otherwise(envelope_errors)

    columns.update({
        S.CDC_EVENT_ID: event_id,
        S.CDC_OP: op,
        S.CDC_SEQUENCE: F.lpad(raw_sequence, S.SEQUENCE_WIDTH, "0"),
        S.CDC_EVENT_TIME: event_time,
        entity.key: key,
        S.CDC_WARNINGS: F.coalesce(info_image_errors, _no_errors()),
    })
    columns.update({f.name: F.col(f.name).cast(f.spark_type) for f in S.SOURCE_FIELDS})
    out = parsed.select(
        *[columns[f.name].alias(f.name) for f in S.event_fields(entity)],
        errors.alias(S.CDC_ERRORS),
    )
    return out


def split_decoded(decoded: DataFrame, batch_id: int, entity: S.EntitySchema = S.ORDERS) -> tuple[DataFrame, DataFrame]:
    """(valid events, quarantine rows) from the output of :func:`decode_pipe_records`."""
    has_errors = F.size(S.CDC_ERRORS) > 0
    events = decoded.where(~has_errors).drop(S.CDC_ERRORS)
    quarantine = to_quarantine_rows(decoded.where(has_errors), F.array_join(S.CDC_ERRORS, "; "), batch_id, "decode",
                                    entity)
    return events, quarantine
