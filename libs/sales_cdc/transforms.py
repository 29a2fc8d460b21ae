"""Pure DataFrame -> DataFrame steps between decode and the sinks."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import schema as S
from .merge_rules import REMOVE, STORED_SNAPSHOT_SEQUENCE, MergeRules
from .runtime import built_once

RANK, CONFLICT, CONTENT, REPEAT = "_rank", "_conflict", "_content", "_repeat"
CONFLICT_REASON = ("another record of this item has the same sequence number and other content: no order between "
                   "them can be decided, so neither is applied")


def _is_snapshot() -> Column:
    return F.col(S.CDC_SEQUENCE) == F.lit(STORED_SNAPSHOT_SEQUENCE)


SINGLE_PARTITION_EVENTS = 20_000  # a batch of up to this many events is deduped in one partition, unshuffled
REPEATS_APART = 10_000  # raw: up to this many repeated records are deduped apart from the rest (each_record_once)


def in_one_partition(count: int | None) -> bool:
    """Whether a batch of ``count`` events (None: not known) is deduped in one partition, unshuffled: a
    shuffle's two stages cost ~0.1 s however few the rows, more than one task's work on up to
    :data:`SINGLE_PARTITION_EVENTS` events."""
    return count is not None and count <= SINGLE_PARTITION_EVENTS


def ranked(events: DataFrame, keys: tuple[str, ...], count: int | None = None, repeats: bool = False) -> DataFrame:
    """``events`` with ``_conflict``: another record of the key has the same sequence and another payload
    (DynamoDB never gives two changes one sequence number, so one of them is not what it claims to be), and
    ``_rank``: 1 for the latest event of its key that does not conflict, by sequence (ties, i.e. redeliveries,
    broken by event id) — the event that would have applied had the conflicting ones not come.

    ``cdc_sequence`` is zero-padded, so string order is numeric order. ``count``, the events' number if known:
    the windows run in one partition when :func:`in_one_partition` says so. ``repeats``: also ``_repeat``, the
    event ranked just before has the same sequence (a redelivery, or an earlier snapshot of the item): each
    version's first is not one.
    """
    content, conflict, rank, repeat = _ranking(keys)
    # the payload's hash is a column before the window: the window's shuffle then carries 8 bytes per event,
    # not its payload (~1 KB), which no later step of the state needs
    # Spread by the key alone, which both windows' partitionings accept: left to itself, Spark shuffles once
    # by (key, sequence) for the first window and again by key for the second
    hashed = events.withColumn(CONTENT, content)
    hashed = hashed.coalesce(1) if in_one_partition(count) else hashed.repartition(*keys)
    flagged = hashed.withColumn(CONFLICT, conflict).drop(CONTENT)
    return flagged.withColumns({RANK: rank, **({REPEAT: repeat} if repeats else {})})


@built_once
def _ranking(keys: tuple[str, ...]) -> tuple[Column, Column, Column, Column]:
    """:func:`ranked`'s columns: the payload's hash, ``_conflict``, ``_rank`` and ``_repeat``."""
    same_sequence = Window.partitionBy(*keys, S.CDC_SEQUENCE)
    differ = F.min(CONTENT).over(same_sequence) != F.max(CONTENT).over(same_sequence)
    # two snapshots of an item (merge rule 6) are both true states: the later one is kept, no conflict
    conflict = differ & ~_is_snapshot()
    by_recency = Window.partitionBy(*keys).orderBy(F.col(CONFLICT).asc(), F.col(S.CDC_SEQUENCE).desc(),
                                                   F.col(S.CDC_EVENT_TIME).desc(), F.col(S.CDC_EVENT_ID).desc())
    repeat = F.coalesce(F.lag(S.CDC_SEQUENCE).over(by_recency) == F.col(S.CDC_SEQUENCE), F.lit(False))
    return F.xxhash64(S.PAYLOAD), conflict, F.row_number().over(by_recency), repeat


def latest_per_key(events: DataFrame, keys: tuple[str, ...]) -> DataFrame:
    """One event per key, the latest that does not conflict (:func:`ranked`)."""
    return ranked(events, keys).where(f"{RANK} = 1 AND NOT {CONFLICT}").drop(RANK, CONFLICT)


def to_state_rows(events: DataFrame, batch_id: int, entity: S.EntitySchema) -> DataFrame:
    """Event rows -> current-state rows (``schema.state_fields``).

    INSERT/MODIFY carry the new image; a REMOVE carries the old image (what was deleted), which a
    soft-delete sink keeps and a hard-delete sink uses only for its key and sequence.
    """
    return events.select(*_state_values(entity), batch_column(batch_id))


@built_once
def _state_values(entity: S.EntitySchema) -> tuple[Column, ...]:
    """The state row's columns but its batch id (:func:`to_state_rows`)."""
    is_remove = F.col(S.CDC_OP) == F.lit(REMOVE)

    def image_value(name: str):
        return F.when(is_remove, F.col(S.OLD_PREFIX + name)).otherwise(F.col(S.NEW_PREFIX + name)).alias(name)

    values = [F.col(f.name) if f.name in entity.keys else image_value(f.name) for f in entity.fields]
    return (*values, image_value(S.UNMAPPED), *[F.col(f.name) for f in S.CDC_FIELDS])


def batch_column(batch_id: int) -> Column:
    """``cdc_batch_id``: the batch's id, on each of its rows."""
    return F.lit(batch_id).cast("long").alias(S.CDC_BATCH_ID)


def to_superseded_versions(ranked_events: DataFrame, batch_id: int, entity: S.EntitySchema) -> DataFrame:
    """Ranked events (:func:`ranked`, with ``repeats``) -> the versions a batch's state rows do not carry (merge rule 7,
    ``schema.version_fields``): the events the latest of their item supersedes in the batch, the conflicting ones
    excepted, once per item and sequence (of redeliveries and two snapshots of an item, the one the ranking puts
    first; the latest's own redeliveries are the state row's version)."""
    # the ranking puts an item's events that do not conflict first, latest first, a version's repeats together
    superseded = ranked_events.where(~F.col(CONFLICT) & ~F.col(REPEAT) & (F.col(RANK) > 1))
    return MergeRules(entity).as_versions(to_state_rows(superseded, batch_id, entity))


def without_items_of(superseded: DataFrame, state: DataFrame, rejected: DataFrame,
                     keys: tuple[str, ...]) -> DataFrame:
    """The superseded versions less those of the items whose state row data quality rejected (``rejected``: event
    id + reason): the item's row does not change in this batch, so neither does its history (its current version
    stays the table's row)."""
    items = state.join(F.broadcast(rejected.select(S.CDC_EVENT_ID)), S.CDC_EVENT_ID, "left_semi").select(*keys)
    return superseded.join(items, list(keys), "left_anti")


def table_without_items_of(rows: pa.Table | None, items: pa.Table, keys: tuple[str, ...]) -> pa.Table | None:
    """:func:`without_items_of` on collected rows (the items of the state rows the warehouse refused)."""
    if rows is None or items.num_rows == 0:
        return rows
    return rows.join(items.select(list(keys)), list(keys), join_type="left anti").select(rows.column_names)


def split_rows(rows: pa.Table, refused: dict[int, str]) -> tuple[pa.Table, pa.Table]:
    """(rows kept, rows refused) by row index."""
    keep = pa.array([i not in refused for i in range(rows.num_rows)])
    return rows.filter(keep), rows.filter(pc.invert(keep))


def record_id() -> Column:
    """A record's identity (``schema.RECORD_ID``). A stream record is its bytes: a redelivery repeats them, and two
    records that differ are both kept, even with one event id (a conflict). A snapshot record is its event id,
    which names the item's content (``sources.snapshot``): the same item read again by a resumed or repeated
    backfill is the same record though the snapshot's time in its payload differs."""
    return _identity(lambda payload: F.sha2(payload, 256))


def _identity(digest: Callable[[Column], Column]) -> Column:
    """A snapshot record's event id, else ``digest`` of the record's bytes."""
    by_content = _is_snapshot() & F.col(S.CDC_EVENT_ID).isNotNull()
    return F.when(by_content, F.col(S.CDC_EVENT_ID)).otherwise(digest(F.coalesce(F.col(S.PAYLOAD), F.lit(""))))


def to_raw_rows(decoded: DataFrame, batch_id: int, entity: S.EntitySchema, records: int | None = None) -> DataFrame:
    """Decoded rows (with ``cdc_errors``) -> raw/bronze rows (``schema.raw_fields``), malformed ones included,
    each record once (a redelivery in the batch is the same record). ``records``, the batch's records if known:
    see :func:`each_record_once`, which runs a Spark job for a large batch."""
    errors = F.when(F.size(S.CDC_ERRORS) > 0, F.array_join(S.CDC_ERRORS, "; "))
    event_date = F.coalesce(F.to_date(S.CDC_EVENT_TIME), F.to_date(S.SOURCE_ARRIVAL_TIME), F.current_date())
    columns = {S.DECODE_ERRORS: errors, S.CDC_BATCH_ID: batch_column(batch_id), S.EVENT_DATE: event_date,
               S.RECORD_ID: record_id(), **{k: F.col(k).cast("string") for k in entity.keys}}
    rows = decoded.select(*[columns.get(f.name, F.col(f.name)).alias(f.name) for f in S.raw_fields(entity)])
    return each_record_once(rows, records)


def each_record_once(rows: DataFrame, records: int | None) -> DataFrame:
    """Raw ``rows`` (``schema.raw_fields``) with a record the batch repeats kept once.

    Dropping repeats shuffles the rows, payload and all (~1 KB each): at 100k events that shuffle was a third
    of the raw layer's write, for repeats most batches do not have. So a batch of up to
    :data:`SINGLE_PARTITION_EVENTS` records is deduped in one partition (no shuffle, one file per partition
    value). A larger one is looked at first: one Spark job over an 8-byte hash of each record's identity (equal
    identities have equal hashes). With no hash twice, its rows go as they are; else only the rows of the
    repeated hashes (up to :data:`REPEATS_APART` of them) are shuffled and deduped, the others go as they are."""
    identity = list(S.RAW_IDENTITY)
    if in_one_partition(records):
        return rows.coalesce(1).dropDuplicates(identity)
    hashed = rows.withColumn(CONTENT, F.xxhash64(_identity(lambda payload: payload)))
    repeated = [r[CONTENT] for r in hashed.groupBy(CONTENT).count().where(F.col("count") > 1).select(CONTENT)
                .limit(REPEATS_APART + 1).collect()]
    if not repeated:
        return rows
    if len(repeated) > REPEATS_APART:
        return rows.dropDuplicates(identity)
    is_repeated = F.col(CONTENT).isin(repeated)
    return hashed.where(~is_repeated).drop(CONTENT).unionByName(
        hashed.where(is_repeated).drop(CONTENT).dropDuplicates(identity))


def record_key(entity: S.EntitySchema) -> Column:
    """The key as one text (quarantine ``record_key``): the value of a one-attribute key; for a partition +
    sort key, both as a JSON object (``{"pk":"a","sk":1}``)."""
    if len(entity.keys) == 1:
        return F.col(entity.keys[0]).cast("string")
    return F.to_json(F.struct(*entity.keys))


TRUNCATED = " ...[truncated: the raw layer keeps it whole]"


def storable_text(value: Column, column: str) -> Column:
    """``value`` as the warehouse column ``column`` can hold it: U+0000 written as the six characters ``\\u0000``,
    and a value over the column's bytes cut (to a quarter of them in characters, so that it fits whatever
    the characters) with :data:`TRUNCATED` appended."""
    limit = S.text_bytes(column)
    escaped = F.replace(value, F.lit("\u0000"), F.lit("\\u0000"))
    cut = F.concat(F.substring(escaped, 1, limit // 4 - len(TRUNCATED)), F.lit(TRUNCATED))
    return F.when(F.octet_length(escaped) <= F.lit(limit), escaped).otherwise(cut)


def to_quarantine_rows(records: DataFrame, reason: Column, batch_id: int, stage: str,
                       entity: S.EntitySchema) -> DataFrame:
    """Rejected records -> quarantine rows (``schema.QUARANTINE_FIELDS``): reason, ids and the raw payload.
    Text is made storable (:func:`storable_text`): a bad record must never make its quarantine row fail."""
    values = {**_quarantine_values(entity, stage), S.CDC_BATCH_ID: batch_column(batch_id),
              S.QUARANTINE_REASON: _storable(reason, S.QUARANTINE_REASON)}
    return records.select(*[values[f.name] for f in S.QUARANTINE_FIELDS])


@built_once
def _quarantine_values(entity: S.EntitySchema, stage: str) -> dict[str, Column]:
    """The quarantine row's columns but its batch id and reason (:func:`to_quarantine_rows`), by name."""
    values = {"stage": F.lit(stage), S.CDC_EVENT_ID: F.col(S.CDC_EVENT_ID), S.RECORD_ID: record_id(),
              "record_key": record_key(entity), **{f.name: F.col(f.name) for f in S.SOURCE_FIELDS}}
    return {name: _storable(value, name) for name, value in values.items()}


_QUARANTINE_TYPES = {f.name: f.spark_type for f in S.QUARANTINE_FIELDS}


def _storable(value: Column, column: str) -> Column:
    """``value`` named ``column``, as the quarantine table stores it (text: :func:`storable_text`)."""
    if isinstance(_QUARANTINE_TYPES[column], T.StringType):
        value = storable_text(value, column)
    return value.alias(column)


def dq_quarantine_rows(events: DataFrame, rejected: DataFrame, batch_id: int,
                       entity: S.EntitySchema, stage: str = S.DQ_STAGE) -> DataFrame:
    """Events whose latest-per-key row was rejected (``rejected``: event id + reason) by a data-quality rule,
    or by the sink ``stage`` names, with their payload. A redelivered event (same event id twice in the
    batch) is quarantined once."""
    rejected_events = (events.join(F.broadcast(rejected), on=S.CDC_EVENT_ID, how="inner")
                       .dropDuplicates([S.CDC_EVENT_ID]))
    return to_quarantine_rows(rejected_events, F.col(S.QUARANTINE_REASON), batch_id, stage, entity)


def warehouse_quarantine_rows(events: DataFrame, refused: pa.Table, reasons: dict[int, str], batch_id: int,
                              entity: S.EntitySchema) -> pa.Table:
    """Quarantine rows (Arrow) for the state rows the warehouse refused: each with the warehouse's reason and
    the payload of the event it came from (``reasons`` by row index of the rows before the split, in order)."""
    why = [f"the warehouse refused the row: {reasons[i]}" for i in sorted(reasons)]
    rejected = events.sparkSession.createDataFrame(
        list(zip(refused[S.CDC_EVENT_ID].to_pylist(), why, strict=True)),
        f"{S.CDC_EVENT_ID} string, {S.QUARANTINE_REASON} string")
    return dq_quarantine_rows(events, rejected, batch_id, entity, S.WAREHOUSE_STAGE).toArrow()  # cast by the caller
