"""Schema migration: every sink holds the contract's columns before a batch is written (docs/schema-evolution.md).

It runs at start-up (the local job, Glue, ``sales-cdc migrate``) and, with ``on_new_attribute: add_column``,
before a batch that brings a new attribute. Per sink: compare the contract with what the sink holds (its real
columns, so a sink left behind by a crash is caught up), refuse a change that would lose values, then, in one
transaction or commit of the sink's own: add and widen columns, move the values that sat in
``unmapped_attributes`` into their new columns, record the change in the sink's schema history. A second run
finds nothing to do: migrations are idempotent, and one that died half-way is finished by the next start.

The contract a job applies is its file's, plus the attributes it added on its own earlier (recorded as
``automatic`` in the sinks' histories): a restart with the same file keeps them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
from pyspark.sql import SparkSession

from . import schema as S
from .column_types import Dialect
from .contract import read_recorded
from .evolution import Change, ChangeKind, contract_changes, contract_document, sink_changes, with_fields
from .lake import Lake
from .promotion import Counts
from .schema_sinks import SchemaSink, delta_statements, parquet_statements, schema_sinks
from .sql import MergeSql
from .sql_migrate import MigrationSql
from .warehouse.base import Warehouse

log = logging.getLogger(__name__)

_DDL_KINDS = (ChangeKind.ADD, ChangeKind.WIDEN)


@dataclass(frozen=True)
class Step:
    """One sink's part: its own changes (columns to add or widen), what it runs, the contract it held."""

    sink: SchemaSink
    changes: tuple[Change, ...]
    statements: tuple[str, ...]
    recorded: S.EntitySchema | None  # the contract the sink last recorded (None: no history yet)
    # the contract's changes since the one this sink recorded: they say what to promote where the sink's columns
    # do not (string -> text is no change of the lake's; a column added just before a crash is no change any more)
    contract: tuple[Change, ...] = ()

    def promoted(self) -> list[str]:
        """The columns whose values in ``unmapped_attributes`` may now fit: added, widened or re-tagged."""
        names = [c.column for c in (*self.changes, *self.contract) if c.kind in (*_DDL_KINDS, ChangeKind.RETAG)]
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Plan:
    entity: S.EntitySchema  # the contract every sink will hold
    source: str  # where it came from: the contract file, or automatic
    automatic: frozenset[str]  # its attributes the job added on its own (on_new_attribute: add_column)
    contract: tuple[Change, ...]  # against the contract the sinks recorded last (the history's view)
    steps: tuple[Step, ...]  # the sinks that change, or that have not recorded this contract yet

    @property
    def pending(self) -> bool:
        return bool(self.steps)

    def describe(self) -> list[str]:
        """What the plan does, per sink, for people (``migrate --dry-run``, the log)."""
        if not self.steps:
            return [f"{self.entity.name}: every sink holds contract {self.entity.version}; nothing to migrate"]
        lines = [f"{self.entity.name}: contract {self.entity.version} from {self.source}"]
        lines += [f"  contract: {c}" for c in self.contract]
        for step in self.steps:
            lines.append(f"  {step.sink.name} ({step.sink.table_name}):"
                         f" {', '.join(map(str, step.changes)) or 'records the contract'}")
            lines += [f"    {s}" for s in step.statements]
        return lines


@dataclass
class Applied:
    sink: str
    moved: dict[str, int] = field(default_factory=dict)  # per column: values moved out of the JSON
    kept: dict[str, int] = field(default_factory=dict)  # per column: values left there (they do not fit)


class Migration:
    def __init__(self, spark: SparkSession, warehouse: Warehouse, lake: Lake | None, job_name: str):
        self.spark, self.job_name = spark, job_name
        self.sinks = schema_sinks(spark, warehouse, lake)

    def _recorded(self) -> list[tuple[S.EntitySchema, frozenset[str]] | None]:
        return [read_recorded(text, f"the schema history of the {sink.name}") if (text := sink.recorded_contract())
                else None for sink in self.sinks]

    def effective(self, contract: S.EntitySchema) -> tuple[S.EntitySchema, frozenset[str]]:
        """``contract`` with the attributes the job added on its own before (any sink's history) that the
        contract does not name, and their names."""
        added: dict[str, S.Field] = {}
        for recorded in filter(None, self._recorded()):
            entity, automatic = recorded
            for name in sorted(automatic - set(contract.names) - set(added)):
                added[name] = entity.field(name)
        return with_fields(contract, list(added.values())), frozenset(added)

    def plan(self, contract: S.EntitySchema, source: str, automatic: frozenset[str] = frozenset()) -> Plan:
        """What each sink must do to hold ``contract`` (and the attributes added automatically before; those of
        ``contract`` that the job adds now are ``automatic``); a change that would lose values raises
        SchemaChangeRefused before any sink is touched."""
        entity, added = self.effective(contract)
        recorded = self._recorded()
        latest = next((r[0] for r in recorded if r is not None), None)
        contract_level = tuple(contract_changes(latest, entity)) if latest is not None else ()
        steps = []
        for sink, held in zip(self.sinks, recorded, strict=True):
            stored = sink.stored_columns()
            changes = tuple(sink_changes(entity, stored, sink.storage, sink.name)) if stored is not None else ()
            if changes or held is None or held[0].version != entity.version:
                since = tuple(contract_changes(held[0], entity)) if held else contract_level
                steps.append(Step(sink, changes, tuple(sink.statements(entity, list(changes))),
                                  held[0] if held else None, since))
        return Plan(entity, source, automatic | added, contract_level, tuple(steps))

    def apply(self, plan: Plan) -> list[Applied]:
        """Each step in its own transaction or commit: the warehouse first, then the lake."""
        done = []
        for step in plan.steps:
            fields = [plan.entity.field(name) for name in step.promoted()]
            counts = step.sink.apply(plan.entity, list(step.changes), fields,
                                     lambda c, s=step: self._history(plan, s, c))
            done.append(Applied(step.sink.name, counts.moved, counts.kept))
            kept = {k: v for k, v in counts.kept.items() if v}
            # a change of columns is news for whoever watches the job; recording an unchanged contract is not
            log.log(logging.WARNING if step.changes or kept else logging.INFO, "%s %s migrated to contract %s: %s%s",
                    step.sink.name, step.sink.table_name, plan.entity.version,
                    ", ".join(map(str, step.changes)) or "contract recorded",
                    f"; values that do not fit their new column, kept in {S.UNMAPPED}: {kept}" if kept else "")
        return done

    def _history(self, plan: Plan, step: Step, counts: Counts) -> pa.Table:
        """The sink's history rows: one per change (with the statements it ran for it), then the contract it
        holds."""
        now = datetime.now(UTC)
        rows = []
        own = {(c.kind, c.column) for c in step.changes}
        for change in (*step.changes, *[c for c in step.contract if (c.kind, c.column) not in own]):
            # the statements the sink ran for its own changes; a contract change it had nothing to run for has none
            statements = step.sink.statements(plan.entity, [change]) if change in step.changes else []
            rows.append(self._row(now, plan, step, change.kind, change.column, change.before, change.after,
                                  "; ".join(statements) or None, counts.moved.get(change.column),
                                  counts.kept.get(change.column)))
        document = contract_document(plan.entity, automatic=plan.automatic)
        rows.append(self._row(now, plan, step, ChangeKind.CONTRACT, None, None, plan.entity.version,
                              json.dumps(document), None, None))
        return pa.Table.from_pylist(rows, schema=pa.schema([(f.name, f.arrow_type) for f in S.SCHEMA_CHANGE_FIELDS]))

    def _row(self, now, plan: Plan, step: Step, kind: ChangeKind, column, before, after, statement, moved, kept):
        return {"changed_at": now, "job_name": self.job_name, "table_name": step.sink.table_name,
                "contract_version": plan.entity.version, "sink": step.sink.name, "change": kind.value,
                "column_name": column, "before_type": before, "after_type": after, "source": plan.source,
                "statement": statement, "values_promoted": moved, "values_kept": kept}

    def run(self, contract: S.EntitySchema, source: str, automatic: frozenset[str] = frozenset()) -> S.EntitySchema:
        """Plan and apply; the contract every sink now holds."""
        plan = self.plan(contract, source, automatic)
        if plan.pending:
            self.apply(plan)
        return plan.entity


def preview(old: S.EntitySchema, new: S.EntitySchema, db_schema: str = "sales") -> list[str]:
    """``contract diff``: the changes from ``old`` to ``new`` and what each kind of sink holding ``old`` would run
    (a change no sink can follow raises SchemaChangeRefused, as the job would at start-up)."""
    changes = contract_changes(old, new)
    lines = [f"{new.name}: contract {old.version} -> {new.version}", *[f"  {c}" for c in changes or ["no change"]]]
    stored = {f.name: f.column_type for f in S.state_fields(old)}
    for dialect in Dialect:
        own = sink_changes(new, stored, dialect.value, "the warehouse")
        lines.append(f"warehouse ({dialect.value}):")
        lines += [f"  {s};" for s in MigrationSql(MergeSql(dialect, new, db_schema)).statements(own)] or ["  nothing"]
    own = sink_changes(new, stored, "lake", "the lake")
    for kind, statements in (("delta", delta_statements), ("parquet", parquet_statements)):
        lines.append(f"lake silver ({kind}):")
        lines += [f"  {s}" for s in statements(f"silver/{new.name}", own)] or ["  nothing"]
    return lines
