"""Single source of truth for column names and types.

The flattener, the dedupe, the warehouse DDL/SQL (and later the GX suites and the infra) all read
these definitions; nothing else lists the order columns by hand.

Layers (see docs/architecture.md):
- *source* columns: what any source (file fixtures, Kinesis) hands to the batch handler;
- *event* columns: one typed row per CDC event (``new_*`` / ``old_*`` images + ``cdc_*`` metadata);
- *state* columns: the current version of an order (the warehouse / silver contract);
- *quarantine* columns: a rejected payload with its reasons.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace

from pyspark.sql import types as T

from . import column_types as CT
from .column_types import LONG_TEXT_BYTES, TEXT_BYTES

# DynamoDB attribute type tags (typed JSON): https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_AttributeValue.html
DDB_TYPES = ("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS")

# Sequence numbers are decimal strings of 21..40 digits. They are left-padded to this width so that
# string order equals numeric order (DECIMAL(38,0) cannot hold 40 digits).
SEQUENCE_WIDTH = 40

CDC_OPS = ("INSERT", "MODIFY", "REMOVE")
NEW_ATTRIBUTE_POLICIES = ("keep_json", "add_column", "quarantine")

# What the warehouse can store (``column_types``: TEXT_BYTES and LONG_TEXT_BYTES per text column), and no
# text may hold U+0000 (NUL). The decode quarantines values that do not fit, and quarantine rows are made to
# fit (transforms), so that a COPY never discovers them (docs/reliability.md).

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_identifier(name: str) -> str:
    """Column/table names must be plain lower-case identifiers (safe in Spark, SQL and GX)."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid identifier {name!r}: use lower-case letters, digits and '_' (max 63)")
    return name


@dataclass(frozen=True)
class Field:
    """One column. ``ddb_type`` is the DynamoDB attribute type it is decoded from (None: not from DynamoDB)."""

    name: str
    spark_type: T.DataType
    ddb_type: str | None = None
    nullable: bool = True
    description: str = ""
    required: bool = False  # an entity attribute every live row must have (data quality quarantines it)
    long_text: bool = False  # a text column the warehouse holds as long text (JSON of a map, list or set)

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if self.ddb_type is not None and self.ddb_type not in DDB_TYPES:
            raise ValueError(f"{self.name}: unknown DynamoDB type {self.ddb_type!r}")

    @classmethod
    def of(cls, name: str, column_type: CT.ColumnType, ddb_type: str, **kwargs) -> Field:
        """A field of a contract's column type."""
        return cls(name, column_type.spark, ddb_type, long_text=column_type.long_text, **kwargs)

    @property
    def column_type(self) -> CT.ColumnType | None:
        """Its record in ``column_types`` (None for the pipeline's array columns)."""
        if isinstance(self.spark_type, T.StringType) and self.ddb_type in CT.SIMPLE["json"].tags:
            return CT.SIMPLE["json"]
        return CT.of_spark(self.spark_type, self.long_text or self.name in LONG_TEXT_COLUMNS)

    @property
    def arrow_type(self):
        """The Arrow type of its values (what Spark's ``toArrow`` gives for the column)."""
        from pyspark.sql.pandas.types import to_arrow_type

        return to_arrow_type(self.spark_type)

    def struct_field(self, prefix: str = "") -> T.StructField:
        return T.StructField(prefix + self.name, self.spark_type, self.nullable)


@dataclass(frozen=True)
class EntitySchema:
    """The DynamoDB entity replicated by the pipeline: its key and its typed attributes.

    ``keys`` is the table's key: the partition key, then the sort key if the table has one. Every sink
    merges on all of them (one row per item)."""

    name: str
    keys: tuple[str, ...]
    fields: tuple[Field, ...]
    # what becomes of an attribute the fields do not name (docs/schema-evolution.md): kept as typed JSON in
    # unmapped_attributes, given a column of its own, or its event quarantined
    on_new_attribute: str = "keep_json"
    history: bool = False  # keep every version of every item beside the current state (``merge_rules`` rule 7)

    def __post_init__(self) -> None:
        check_identifier(self.name)
        if self.on_new_attribute not in NEW_ATTRIBUTE_POLICIES:
            raise ValueError(f"{self.name}: on_new_attribute must be one of {', '.join(NEW_ATTRIBUTE_POLICIES)}")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate field names")
        if isinstance(self.keys, str) or not 1 <= len(self.keys) <= 2:
            raise ValueError(f"{self.name}: keys is a tuple of the partition key and the optional sort key")
        for key in self.keys:
            if key not in names:
                raise ValueError(f"{self.name}: key {key!r} is not a field")
        if self.history and HISTORY_COLUMNS & set(names):
            raise ValueError(f"{self.name}: with history, {', '.join(sorted(HISTORY_COLUMNS & set(names)))} "
                             "name(s) the history's own columns")

    @property
    def key_fields(self) -> tuple[Field, ...]:
        return tuple(self.field(k) for k in self.keys)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    @property
    def version(self) -> str:
        """A short fingerprint of the key and the typed columns (name, DynamoDB type, column type, required; not
        their order, which no sink keeps): the contract version each sink records with a batch and a schema
        change."""
        described = [list(self.keys), *sorted([f.name, f.ddb_type, f.column_type.name, f.required]
                                              for f in self.fields)]
        return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:12]


# --- columns every source provides to the batch handler ------------------------------------------
PAYLOAD = "payload"  # the Kinesis record data: the JSON of one DynamoDB stream record
SOURCE_SHARD_ID = "source_shard_id"
SOURCE_ARRIVAL_TIME = "source_arrival_time"  # dates a record without an event time
SOURCE_FIELDS: tuple[Field, ...] = (
    Field(PAYLOAD, T.StringType(), description="Raw Kinesis record data (Pipe JSON)"),
    Field(SOURCE_SHARD_ID, T.StringType(), description="Kinesis shard id (file name for file sources)"),
    Field("source_sequence_number", T.StringType(), description="Kinesis record sequence number"),
    Field("source_partition_key", T.StringType(), description="Kinesis partition key"),
    Field(SOURCE_ARRIVAL_TIME, T.TimestampType(),
          description="Kinesis approximate arrival time (file sources: the file's modification time)"),
)
SOURCE_SCHEMA = T.StructType([f.struct_field() for f in SOURCE_FIELDS])

# --- CDC metadata on events and state rows ----------------------------------------------------------
CDC_EVENT_ID = "cdc_event_id"
CDC_OP = "cdc_op"
CDC_SEQUENCE = "cdc_sequence"
CDC_EVENT_TIME = "cdc_event_time"
CDC_BATCH_ID = "cdc_batch_id"
CDC_ERRORS = "cdc_errors"
# A record's identity in the append-only layers (raw, quarantine): a record written again is found by it
RECORD_ID = "cdc_record_id"
CDC_WARNINGS = "cdc_warnings"
NEW_PREFIX = "new_"
OLD_PREFIX = "old_"
UNMAPPED = "unmapped_attributes"  # attributes not in the schema, kept as DynamoDB typed JSON

CDC_FIELDS: tuple[Field, ...] = (
    Field(CDC_EVENT_ID, T.StringType(), nullable=False, description="DynamoDB stream eventID"),
    Field(CDC_OP, T.StringType(), nullable=False, description="INSERT, MODIFY or REMOVE"),
    Field(CDC_SEQUENCE, T.StringType(), nullable=False,
          description=f"Stream SequenceNumber left-padded to {SEQUENCE_WIDTH} digits (sorts numerically)"),
    Field(CDC_EVENT_TIME, T.TimestampType(), description="ApproximateCreationDateTime (UTC)"),
)


IS_DELETED = "is_deleted"
DELETED_AT = "deleted_at"
# the change history's own columns (``history_fields``)
VALID_FROM, VALID_TO = "valid_from", "valid_to"
VALID_FROM_SEQUENCE, VALID_TO_SEQUENCE = "valid_from_sequence", "valid_to_sequence"
OPERATION, IS_CURRENT = "operation", "is_current"
EVENT_DATE = "event_date"
DECODE_ERRORS = "decode_errors"
# Column names the pipeline adds to an entity's own: a contract cannot name an attribute's column so
RESERVED_COLUMNS = frozenset({*(f.name for f in (*SOURCE_FIELDS, *CDC_FIELDS)), CDC_BATCH_ID, CDC_ERRORS, CDC_WARNINGS,
                              RECORD_ID, UNMAPPED, IS_DELETED, DELETED_AT, EVENT_DATE, DECODE_ERRORS, "loaded_at"})
# ... and, in a contract with ``history: true``, these too
HISTORY_COLUMNS = frozenset({VALID_FROM, VALID_TO, VALID_FROM_SEQUENCE, VALID_TO_SEQUENCE, OPERATION, IS_CURRENT})




def event_fields(entity: EntitySchema) -> tuple[Field, ...]:
    """Columns of a flattened event: cdc metadata, key, both images, unmapped attributes, source."""
    images: list[Field] = []
    for prefix in (NEW_PREFIX, OLD_PREFIX):
        images += [Field(prefix + f.name, f.spark_type, description=f.description) for f in entity.fields]
        images.append(Field(prefix + UNMAPPED, T.StringType(), description="Unmapped attributes, typed JSON"))
    warnings = Field(CDC_WARNINGS, T.ArrayType(T.StringType()), nullable=False,
                     description="Non-fatal decode problems (e.g. an old image value that does not decode)")
    return (*CDC_FIELDS, *entity.key_fields, *images, warnings, *SOURCE_FIELDS)


def event_schema(entity: EntitySchema) -> T.StructType:
    return T.StructType([f.struct_field() for f in event_fields(entity)])


# --- current state (warehouse / silver) ------------------------------------------------------------
STATE_CDC_FIELDS: tuple[Field, ...] = (
    *CDC_FIELDS,
    Field(CDC_BATCH_ID, T.LongType(), nullable=False, description="Micro-batch that wrote the row"),
)
SOFT_DELETE_FIELDS: tuple[Field, ...] = (
    Field(IS_DELETED, T.BooleanType(), nullable=False, description="True once a REMOVE was applied"),
    Field(DELETED_AT, T.TimestampType(), description="Event time of the REMOVE"),
)


def state_fields(entity: EntitySchema) -> tuple[Field, ...]:
    """Columns of a current-state row (``merge_rules.MergeRules.stored_rows`` adds the soft-delete columns)."""
    unmapped = Field(UNMAPPED, T.StringType(), description="Attributes not in the schema, DynamoDB typed JSON")
    return (*entity.fields, unmapped, *STATE_CDC_FIELDS)


# --- change history (SCD type 2, ``merge_rules`` rule 7) ---------------------------------------------
# a version's start is its event's: the state row's columns under the names a history query reads
VERSION_START = {CDC_EVENT_TIME: VALID_FROM, CDC_SEQUENCE: VALID_FROM_SEQUENCE, CDC_OP: OPERATION}
VERSION_END_FIELDS: tuple[Field, ...] = (
    Field(VALID_TO, T.TimestampType(), description="Event time of the next version; null while current"),
    Field(VALID_TO_SEQUENCE, T.StringType(), description="Sequence of the next version; null while current"),
    Field(IS_CURRENT, T.BooleanType(), nullable=False, description="The item's latest version (also a delete)"),
)


def version_fields(entity: EntitySchema) -> tuple[Field, ...]:
    """A version as staged: a state row with its start renamed (:data:`VERSION_START`) and ``is_deleted``."""
    fields = [replace(f, name=VERSION_START[f.name]) if f.name in VERSION_START else f for f in state_fields(entity)]
    return (*fields, Field(IS_DELETED, T.BooleanType(), nullable=False, description="The version is a REMOVE"))


def history_fields(entity: EntitySchema) -> tuple[Field, ...]:
    """A row of the history: one version of an item, valid from its event until the next one's."""
    return (*version_fields(entity), *VERSION_END_FIELDS)


def state_schema(entity: EntitySchema) -> T.StructType:
    return T.StructType([f.struct_field() for f in state_fields(entity)])


# --- raw / bronze (lake) ----------------------------------------------------------------------------


RECORD_ID_FIELD = Field(RECORD_ID, T.StringType(), nullable=False, description=(
    "The record's identity: a snapshot record's event id (the item's content), else the SHA-256 of the payload; "
    "raw and quarantine hold each record once (docs/backfill.md)"))


def raw_fields(entity: EntitySchema) -> tuple[Field, ...]:
    """Every record as received, what could be read of it, and the batch that brought it."""
    return (
        *SOURCE_FIELDS,
        Field(CDC_EVENT_ID, T.StringType()),
        RECORD_ID_FIELD,
        Field(CDC_OP, T.StringType()),
        Field(CDC_SEQUENCE, T.StringType()),
        *(Field(k, T.StringType()) for k in entity.keys),  # as read: raw rows may not decode
        Field(CDC_EVENT_TIME, T.TimestampType()),
        Field(DECODE_ERRORS, T.StringType(), description="Null when the record decoded; else the reasons"),
        Field(CDC_BATCH_ID, T.LongType(), nullable=False),
        Field(EVENT_DATE, T.DateType(), nullable=False,
              description="Partition: event date, else the Kinesis arrival date, else the batch date (UTC)"),
    )


# --- quarantine ------------------------------------------------------------------------------------
QUARANTINE_REASON = "reason"
QUARANTINE_FIELDS: tuple[Field, ...] = (
    Field(CDC_BATCH_ID, T.LongType(), nullable=False, description="Micro-batch that rejected the record"),
    Field("stage", T.StringType(), nullable=False, description="Where it was rejected: decode or dq (data quality)"),
    Field(QUARANTINE_REASON, T.StringType(), nullable=False, description="Why, '; '-separated"),
    Field(CDC_EVENT_ID, T.StringType(), description="eventID if it could be read"),
    RECORD_ID_FIELD,
    Field("record_key", T.StringType(), description="Entity key if it could be read"),
    *SOURCE_FIELDS,
)
# What makes a row of an append-only layer the same row again: raw holds a record once; quarantine holds a
# record once per stage that rejected it
RAW_IDENTITY = (RECORD_ID,)
QUARANTINE_IDENTITY = (RECORD_ID, "stage")


# Text columns the warehouse holds as long text (TEXT_BYTES otherwise)
LONG_TEXT_COLUMNS = frozenset({UNMAPPED, PAYLOAD, QUARANTINE_REASON, "details", "docs_url"})


def text_bytes(column: str, long_text: bool = False) -> int:
    """The most bytes a warehouse text column holds."""
    return LONG_TEXT_BYTES if long_text or column in LONG_TEXT_COLUMNS else TEXT_BYTES


def quarantine_schema() -> T.StructType:
    return T.StructType([f.struct_field() for f in QUARANTINE_FIELDS])


# --- data-quality results history (one row per rule per validated batch) ----------------------------
# The quarantine's ``stage``: where a record was rejected
DECODE_STAGE = "decode"  # unreadable, or not a valid change of the contract's table
DQ_STAGE = "dq"  # by a data-quality rule
WAREHOUSE_STAGE = "warehouse"  # the warehouse refused its state row
QUARANTINE_STAGES = (DECODE_STAGE, DQ_STAGE, WAREHOUSE_STAGE)
DQ_RESULT_FIELDS: tuple[Field, ...] = (
    Field("job_name", T.StringType(), nullable=False),
    Field("stream_id", T.StringType(), nullable=False, description="Streaming query id (checkpoint identity)"),
    Field("batch_id", T.LongType(), nullable=False),
    Field("validated_at", T.TimestampType(), nullable=False, description="When the batch was validated (UTC)"),
    Field("batch_outcome", T.StringType(), nullable=False, description="passed, warned, quarantined or halted"),
    Field("suite", T.StringType(), nullable=False, description="Expectation suite name"),
    Field("rule", T.StringType(), nullable=False, description="suite.column.check, unique within the suites"),
    Field("expectation_type", T.StringType(), nullable=False),
    Field("severity", T.StringType(), nullable=False, description="warn, quarantine or halt"),
    Field("success", T.BooleanType(), nullable=False, description="Great Expectations' verdict for the batch"),
    Field("element_count", T.LongType(), description="Rows GX evaluated (null for table-level rules)"),
    Field("unexpected_count", T.LongType(), description="Rows GX found unexpected (null for table-level rules)"),
    Field("quarantined_rows", T.LongType(), nullable=False, description="Rows this rule sent to quarantine"),
    Field("details", T.StringType(), description="Exception or observed value when there is no row count"),
    Field("docs_url", T.StringType(), description="The Data Docs page of this validation"),
)


# --- schema history (one row per schema change per sink; docs/schema-evolution.md) -----------------------
SCHEMA_CHANGE_FIELDS: tuple[Field, ...] = (
    Field("changed_at", T.TimestampType(), nullable=False, description="When the change was applied (UTC)"),
    Field("job_name", T.StringType(), nullable=False),
    Field("table_name", T.StringType(), nullable=False,
          description="The warehouse table, or the entity of the lake's silver table, the change applies to"),
    Field("contract_version", T.StringType(), nullable=False, description="The contract's version after the change"),
    Field("sink", T.StringType(), nullable=False,
          description="warehouse, lake silver (delta) or lake silver (parquet)"),
    Field("change", T.StringType(), nullable=False,
          description="add_column, widen, dynamodb_type, optional, required, or contract (the contract now held)"),
    Field("column_name", T.StringType(), description="The attribute's column (null for a contract row)"),
    Field("before_type", T.StringType()),
    Field("after_type", T.StringType()),
    Field("source", T.StringType(), nullable=False,
          description="Where the change came from: the contract file, or automatic (on_new_attribute: add_column)"),
    Field("statement", T.StringType(), long_text=True,
          description="What the sink ran (its DDL), or the contract as JSON for a contract row"),
    Field("values_promoted", T.LongType(), description="Values moved from unmapped_attributes into the column"),
    Field("values_kept", T.LongType(), description="Values left in unmapped_attributes: they do not fit the column"),
)
