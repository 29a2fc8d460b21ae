"""Each sink's part of a schema migration (``migration.Migration`` drives them): what the sink holds, what it
would run, and the migration itself, in one transaction or commit of its own (docs/schema-evolution.md).

- the warehouse (PostgreSQL, Redshift): DDL, the promoted values and the history rows in one transaction;
- Delta silver: one commit (a MERGE that adds columns, or a rewrite when a column widens), then the history row;
- Parquet silver: one new snapshot and its commit file, then the history row.
Raw, quarantine and the tombstones hold no attribute columns: a contract change leaves them as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from . import column_types as CT
from . import schema as S
from .evolution import Change, ChangeKind
from .lake import Lake
from .lake.delta import CONTRACT_VERSION, DeltaSilver
from .merge_rules import MergeRules
from .promotion import Counts, any_moved, counts, helper_columns, promote
from .runtime import frame_of
from .sql_migrate import MigrationSql
from .warehouse.base import Warehouse

History = Callable[[Counts], pa.Table]  # the promotion's counts -> the sink's history rows


class SchemaSink(Protocol):
    name: str  # in the schema history: "warehouse", "lake silver (delta)", "lake silver (parquet)"
    storage: str  # how it stores columns: a warehouse dialect, or "lake"
    table_name: str

    def stored_columns(self) -> dict[str, CT.ColumnType | None] | None: ...

    def recorded_contract(self) -> str | None: ...

    def statements(self, entity: S.EntitySchema, changes: list[Change]) -> list[str]: ...

    def apply(self, entity: S.EntitySchema, changes: list[Change], fields: list[S.Field], history: History) -> Counts:
        """Migrate to ``entity``: ``changes`` (its DDL), ``fields`` promoted; the history rows recorded."""
        ...


def _promoted(spark: SparkSession, rows: pa.Table, fields: list[S.Field], keys: tuple[str, ...]) \
        -> tuple[pa.Table | None, Counts]:
    """(the rows whose values move: key, sequence, the promoted columns, the JSON left; the counts) of ``rows``
    (key, sequence, ``unmapped_attributes``)."""
    if not fields or rows.num_rows == 0:
        return None, Counts.none(fields)
    promoted = promote(frame_of(spark, rows), fields).localCheckpoint()
    changed = promoted.where(any_moved(fields)).select(*keys, S.CDC_SEQUENCE, *[f.name for f in fields], S.UNMAPPED)
    return changed.toArrow(), counts(promoted, fields)


class WarehouseSchema:
    name = "warehouse"

    def __init__(self, spark: SparkSession, warehouse: Warehouse):
        self.spark, self.warehouse = spark, warehouse
        self.storage = warehouse.sql.dialect.value
        self.table_name = warehouse.sql.table_name

    def stored_columns(self) -> dict[str, CT.ColumnType | None] | None:
        return self.warehouse.stored_columns()

    def recorded_contract(self) -> str | None:
        return self.warehouse.recorded_contract(self.name)

    def statements(self, entity: S.EntitySchema, changes: list[Change]) -> list[str]:
        return MigrationSql(replace(self.warehouse.sql, entity=entity)).statements(changes)

    def apply(self, entity: S.EntitySchema, changes: list[Change], fields: list[S.Field], history: History) -> Counts:
        rows = self.warehouse.unmapped_rows() if fields else pa.table({})  # no scan when nothing can move
        changed, done = _promoted(self.spark, rows, fields, entity.keys)
        groups = MigrationSql(replace(self.warehouse.sql, entity=entity)).statement_groups(changes)
        self.warehouse.use(entity)  # the promotion stage has the new columns
        self.warehouse.migrate(groups, changed, history(done))
        return done


def _column_changes(changes: list[Change]) -> list[Change]:
    return [c for c in changes if c.kind in (ChangeKind.ADD, ChangeKind.WIDEN)]


def delta_statements(uri: str, changes: list[Change]) -> list[str]:
    """What Delta silver at ``uri`` does for ``changes``, for people: one commit either way."""
    columns = _column_changes(changes)
    if not columns:
        return []
    action = f"rewrite {uri} in one commit (delta-rs overwrite: a column's type cannot change in place)" \
        if any(c.kind is ChangeKind.WIDEN for c in columns) else f"MERGE INTO {uri} with schema evolution"
    return [f"{action}: {', '.join(map(str, columns))}; promoted values set in the same commit"]


def parquet_statements(uri: str, changes: list[Change]) -> list[str]:
    columns = _column_changes(changes)
    return [f"new snapshot of {uri}: {', '.join(map(str, columns))}; promoted values set in it"] if columns else []


class _SilverSchema:
    """What both lake silver formats share: the lake's history, and storage as the lake's types."""

    name = "lake silver"
    storage = "lake"

    def __init__(self, spark: SparkSession, lake: Lake):
        self.spark, self.lake = spark, lake
        self.table_name = lake.entity.name

    def recorded_contract(self) -> str | None:
        return self.lake.recorded_contract(self.name)


class DeltaSilverSchema(_SilverSchema):
    name = "lake silver (delta)"

    @property
    def silver(self) -> DeltaSilver:
        return self.lake.silver

    def stored_columns(self) -> dict[str, CT.ColumnType | None] | None:
        return self.silver.stored_columns()

    def statements(self, entity: S.EntitySchema, changes: list[Change]) -> list[str]:
        return delta_statements(self.silver.uri, changes)

    def apply(self, entity: S.EntitySchema, changes: list[Change], fields: list[S.Field], history: History) -> Counts:
        rules = MergeRules(entity, self.lake.soft_delete)
        stored = self.stored_columns()
        rows = self.silver.unmapped_rows() if stored is not None and fields else pa.table({})
        changed, done = _promoted(self.spark, rows, fields, entity.keys)
        target = pa.schema([(f.name, f.arrow_type) for f in rules.row_fields])
        names = [*entity.keys, S.CDC_SEQUENCE, *[f.name for f in fields], S.UNMAPPED]
        if changed is None:  # the new columns still reach silver: a MERGE of no rows adds them
            changed = pa.schema([target.field(n) for n in names]).empty_table()
        if stored is not None and (changed.num_rows or _column_changes(changes)):
            self.silver.migrate(target, changed, any(c.kind is ChangeKind.WIDEN for c in changes),
                                {CONTRACT_VERSION: entity.version})
        self.lake.record_changes(history(done))
        return done


class ParquetSilverSchema(_SilverSchema):
    name = "lake silver (parquet)"

    def stored_columns(self) -> dict[str, CT.ColumnType | None] | None:
        return self.lake.silver.stored_columns(self.spark)

    def statements(self, entity: S.EntitySchema, changes: list[Change]) -> list[str]:
        return parquet_statements(self.lake.silver_uri, changes)

    def apply(self, entity: S.EntitySchema, changes: list[Change], fields: list[S.Field], history: History) -> Counts:
        rules = MergeRules(entity, self.lake.soft_delete)
        target = T.StructType([f.struct_field() for f in rules.row_fields])
        done = Counts.none(fields)

        def promoted(frame: DataFrame) -> DataFrame:
            nonlocal done
            if not fields:
                return frame
            frame = promote(frame, fields).localCheckpoint()
            done = counts(frame, fields)
            return frame.drop(*helper_columns(fields))

        if self.stored_columns() is not None and (fields or any(c.kind is ChangeKind.ADD for c in changes)):
            self.lake.silver.migrate(self.spark, target, promoted)
        self.lake.record_changes(history(done))
        return done


def schema_sinks(spark: SparkSession, warehouse: Warehouse, lake: Lake | None) -> list[SchemaSink]:
    """The sinks that hold the entity's columns: the warehouse, and the lake's silver if there is a lake."""
    sinks: list[SchemaSink] = [WarehouseSchema(spark, warehouse)]
    if lake is not None:
        sinks.append(DeltaSilverSchema(spark, lake) if isinstance(lake.silver, DeltaSilver)
                     else ParquetSilverSchema(spark, lake))
    return sinks
