"""Schema evolution, planned: what changes between two contracts, and what a sink must do to hold a contract's
columns. Pure: nothing here reads or writes a sink (``migration`` does, through each sink's own adapter).

The rules (docs/schema-evolution.md):
- a new attribute becomes a new, nullable column (values that sat in ``unmapped_attributes`` move into it);
- a column may widen: integer -> bigint, an integer or decimal to a decimal that holds all its values,
  string -> text (longer text); its DynamoDB type may change when the column's storage stays the same;
- required <-> optional changes the data-quality rule only;
- anything else (a narrower or another type, a dropped attribute, another key) is refused before the job starts,
  with one line saying how to proceed: nothing a sink holds is ever converted with a loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from . import column_types as CT
from . import schema as S
from .errors import JobError

DOCS = "docs/schema-evolution.md"


class ChangeKind(StrEnum):
    ADD = "add_column"
    WIDEN = "widen"
    RETAG = "dynamodb_type"  # another DynamoDB type, the same stored column
    OPTIONAL = "optional"
    REQUIRED = "required"
    CONTRACT = "contract"  # a history row recording the contract a sink now holds


class SchemaChangeRefused(JobError):
    """A contract change no sink can follow without losing values; the message says how to proceed."""


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    column: str
    before: str | None = None  # the column type (or DynamoDB type) before, when there was one
    after: str | None = None

    def __str__(self) -> str:
        if self.kind is ChangeKind.ADD:
            return f"add column {self.column} {self.after}"
        if self.kind in (ChangeKind.OPTIONAL, ChangeKind.REQUIRED):
            return f"{self.column}: {self.kind.value}"
        return f"{self.column}: {self.kind.value} {self.before} -> {self.after}"


def system_columns(entity: S.EntitySchema) -> set[str]:
    """The columns a sink's state table has besides the entity's own attributes."""
    return {f.name for f in (*S.state_fields(entity), *S.SOFT_DELETE_FIELDS)} - set(entity.names) | {"loaded_at"}


def contract_changes(old: S.EntitySchema, new: S.EntitySchema) -> list[Change]:
    """What changes from contract ``old`` to ``new``; a change no sink can follow raises SchemaChangeRefused."""
    if old.keys != new.keys or any(old.field(k).column_type != new.field(k).column_type for k in new.keys):
        raise SchemaChangeRefused(
            f"the key changes from ({', '.join(_typed(old, k) for k in old.keys)}) to "
            f"({', '.join(_typed(new, k) for k in new.keys)}): a key cannot change in place; replicate the table "
            f"into a new entity (another `entity:` name) and load it again ({DOCS})")
    dropped = [n for n in old.names if n not in new.names]
    if dropped:
        raise SchemaChangeRefused(_dropped_message(dropped, "the sinks"))
    changes: list[Change] = []
    for field in new.fields:
        if field.name not in old.names:
            changes.append(Change(ChangeKind.ADD, field.name, None, field.column_type.name))
            continue
        before = old.field(field.name)
        changes += _type_changes(before, field)
        if before.required != field.required:
            changes.append(Change(ChangeKind.REQUIRED if field.required else ChangeKind.OPTIONAL, field.name))
    return changes


def _typed(entity: S.EntitySchema, key: str) -> str:
    return f"{key} {entity.field(key).column_type.name}" if key in entity.names else key


def _dropped_message(columns: list[str], where: str) -> str:
    names = ", ".join(columns)
    return (f"the contract no longer names {names}, which {where} hold as column(s): name the attribute(s) again "
            f"(they may be optional), or, to stop replicating them, drop the column(s) in every sink by hand "
            f"({DOCS})")


def _type_changes(before: S.Field, after: S.Field) -> list[Change]:
    old_type, new_type = before.column_type, after.column_type
    changes = []
    if old_type != new_type:
        if not old_type.widens_to(new_type):
            raise SchemaChangeRefused(_narrowing_message(after.name, old_type, new_type, "the contract had"))
        changes.append(Change(ChangeKind.WIDEN, after.name, old_type.name, new_type.name))
    if before.ddb_type != after.ddb_type:
        changes.append(Change(ChangeKind.RETAG, after.name, before.ddb_type, after.ddb_type))
    return changes


def _narrowing_message(column: str, held: CT.ColumnType, wanted: CT.ColumnType, where: str) -> str:
    return (f"attribute {column}: {held.name} -> {wanted.name} is not a widening ({where} {held.name}; not every "
            f"value of it is a {wanted.name}): keep {held.name} or a wider type, or give the attribute's new "
            f"meaning a new attribute name; to change it anyway, load the table again into a new entity ({DOCS})")


def sink_changes(entity: S.EntitySchema, stored: dict[str, CT.ColumnType | None], storage: str,
                 sink: str) -> list[Change]:
    """What the sink ``sink`` (whose state table has ``stored`` columns, in ``storage``: a warehouse dialect or
    ``"lake"``) must do to hold ``entity``'s columns: add the missing ones, widen the narrower ones."""
    extra = [c for c in stored if c not in entity.names and c not in system_columns(entity)]
    if extra:
        raise SchemaChangeRefused(_dropped_message(extra, sink))
    changes = []
    for field in entity.fields:
        wanted = field.column_type
        if field.name not in stored:
            changes.append(Change(ChangeKind.ADD, field.name, None, wanted.name))
            continue
        held = stored[field.name]
        if held is None:
            spelled = wanted.lake if storage == "lake" else wanted.sql(CT.Dialect(storage))
            raise SchemaChangeRefused(f"{sink}: column {field.name} has a type the pipeline does not write; change "
                                      f"it back to {spelled} by hand ({DOCS})")
        if CT.stored_alike(held, wanted, storage):
            continue
        if field.name in entity.keys or not held.widens_to(wanted):
            raise SchemaChangeRefused(_narrowing_message(field.name, held, wanted, f"{sink} holds"))
        changes.append(Change(ChangeKind.WIDEN, field.name, held.name, wanted.name))
    return changes


# --- the contract as a document: recorded with each change, and read back to know what a sink holds -------
def contract_document(entity: S.EntitySchema, table: str = "", automatic: frozenset[str] = frozenset()) -> dict:
    """``entity`` as a contract file's content (``contract.parse_contract`` reads it back); attributes added by
    the job (``on_new_attribute: add_column``) are marked ``automatic``."""
    key = {"partition": entity.keys[0], **({"sort": entity.keys[1]} if len(entity.keys) == 2 else {})}
    attributes: dict[str, Any] = {}
    for f in entity.fields:
        spec: dict[str, Any] = {"dynamodb": f.ddb_type, "type": f.column_type.name, "required": f.required}
        if f.description:
            spec["description"] = f.description
        if f.name in automatic:
            spec["automatic"] = True
        attributes[f.name] = spec
    return {"table": table or entity.name, "entity": entity.name, "key": key,
            "on_new_attribute": entity.on_new_attribute, "history": entity.history, "attributes": attributes}


def with_fields(entity: S.EntitySchema, fields: list[S.Field]) -> S.EntitySchema:
    """``entity`` with ``fields`` added (optional attributes, after its own)."""
    return replace(entity, fields=(*entity.fields, *fields))
