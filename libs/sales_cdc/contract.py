"""The table contract: which DynamoDB table is replicated, its key and its attributes, in one YAML file.

The pipeline's entity (``schema.EntitySchema``) is read from it: the decode's typed columns, the merge
key, the warehouse and lake columns, and the data-quality rules every table needs (column set, types,
key not null and unique, required attributes not null). Attributes the contract does not name are kept
as DynamoDB typed JSON in ``unmapped_attributes``. The format: docs/contracts.md.

A contract that cannot be used is refused when it is loaded, with one line that names the file, the
field and the fix (:class:`ContractError`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import column_types as CT
from . import schema as S
from .errors import JobError

DEFAULT_CONTRACT = Path(__file__).parent / "contracts" / "orders.yaml"

KEY_DYNAMODB_TYPES = ("S", "N", "B")

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["table", "entity", "key", "attributes"],
    "additionalProperties": False,
    "properties": {
        "table": {"type": "string", "minLength": 3, "maxLength": 255, "pattern": "^[A-Za-z0-9_.-]+$"},
        "entity": {"type": "string"},
        "key": {"type": "object", "required": ["partition"], "additionalProperties": False,
                "properties": {"partition": {"type": "string"}, "sort": {"type": "string"}}},
        "unmapped": {"enum": ["keep"]},
        "on_new_attribute": {"enum": list(S.NEW_ATTRIBUTE_POLICIES)},
        "history": {"type": "boolean"},
        "attributes": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "required": ["dynamodb", "type"], "additionalProperties": False,
            "properties": {"dynamodb": {"enum": list(S.DDB_TYPES)}, "type": {"type": "string"},
                           "required": {"type": "boolean"}, "description": {"type": "string"}}}},
    },
}


class ContractError(JobError):
    """A contract file the job cannot use; the message names the file, the field and the fix."""


@dataclass(frozen=True)
class Contract:
    source: str  # where it was read from (for messages)
    table: str  # the DynamoDB table
    entity: S.EntitySchema


def load_contract(path: Path | str) -> Contract:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ContractError(f"{path}: cannot read the contract ({exc.strerror}); pass --contract with the path "
                            "of a contract file (docs/contracts.md)") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ContractError(f"{path}: not valid YAML{at}; fix the syntax (docs/contracts.md)") from None
    return parse_contract(document, str(path))


def parse_contract(document: Any, source: str) -> Contract:
    """A contract from its parsed YAML; ``source`` names it in messages."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(_SCHEMA).iter_errors(document))
    if error is not None:
        field = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ContractError(f"{source}: {field}: {error.message}; see the contract format in docs/contracts.md")
    entity_name = _identifier(document["entity"], source, "entity", "it names the warehouse table and lake folders")
    fields = tuple(_field(name, spec, source) for name, spec in document["attributes"].items())
    by_name = {f.name: f for f in fields}
    keys = tuple(document["key"][part] for part in ("partition", "sort") if part in document["key"])
    if len(set(keys)) != len(keys):
        raise ContractError(f"{source}: key.sort: the sort key must be another attribute than the partition key")
    for part, key in zip(("partition", "sort"), keys, strict=False):
        if key not in by_name:
            raise ContractError(f"{source}: key.{part}: {key!r} is not one of the attributes; add it to "
                                "attributes (dynamodb S, N or B)")
        if by_name[key].ddb_type not in KEY_DYNAMODB_TYPES:
            raise ContractError(f"{source}: attributes.{key}.dynamodb: a key is S, N or B, not "
                                f"{by_name[key].ddb_type}")
    fields = tuple(_as_key(f) if f.name in keys else f for f in fields)
    policy = document.get("on_new_attribute", "keep_json")
    history = document.get("history", False)
    clashes = sorted(S.HISTORY_COLUMNS & set(by_name)) if history else []
    if clashes:
        raise ContractError(f"{source}: attributes.{clashes[0]}: with history: true the history table has a column of "
                            "this name; rename the attribute's column, or leave history off")
    return Contract(source, document["table"], S.EntitySchema(entity_name, keys, fields, policy, history))


def _identifier(name: str, source: str, field: str, why: str = "it names the column") -> str:
    try:
        return S.check_identifier(name)
    except ValueError:
        raise ContractError(f"{source}: {field}: {name!r} cannot be used: use lower-case letters, digits and '_', "
                            f"at most 63 ({why}; an attribute with another name can stay unmapped)") from None


def _column_type(name: str, spec: dict[str, Any], source: str) -> CT.ColumnType:
    try:
        column_type = CT.parse(spec["type"])
    except ValueError as exc:
        raise ContractError(f"{source}: attributes.{name}.type: {exc}") from None
    if spec["dynamodb"] not in column_type.tags:
        raise ContractError(f"{source}: attributes.{name}: a {column_type.name} column is decoded from DynamoDB "
                            f"{' or '.join(column_type.tags)}, not {spec['dynamodb']}; fix dynamodb or type")
    return column_type


def _field(name: str, spec: dict[str, Any], source: str) -> S.Field:
    column = _identifier(name, source, f"attributes.{name}")
    if column in S.RESERVED_COLUMNS:
        raise ContractError(f"{source}: attributes.{name}: the pipeline uses this column name itself; rename the "
                            "attribute's column")
    return S.Field.of(column, _column_type(name, spec, source), spec["dynamodb"], required=spec.get("required", False),
                      description=spec.get("description", ""))


def _as_key(field: S.Field) -> S.Field:
    return S.Field(field.name, field.spark_type, field.ddb_type, nullable=False, description=field.description,
                   required=True, long_text=field.long_text)


def read_recorded(text: str, source: str) -> tuple[S.EntitySchema, frozenset[str]]:
    """A contract a sink recorded in its schema history (``evolution.contract_document`` as JSON): its entity, and
    the attributes the job added on its own (``on_new_attribute: add_column``)."""
    document = json.loads(text)
    automatic = frozenset(n for n, spec in document["attributes"].items() if spec.pop("automatic", False))
    return parse_contract(document, source).entity, automatic
