"""The expectation suites in ``expectations/`` (a GX 1.x file-backed project) and their severities.

Each expectation carries ``meta.severity``:
  warn        recorded in the results history and the docs; the data flows
  quarantine  the failing rows go to quarantine with the rule names; the other rows flow
  halt        nothing of the batch is committed, the checkpoint does not advance, the job stops

The rules every table needs come from its contract (``contract_expectations``: column set, types, key,
required attributes) and are added, when the suites load, to the suite named after the entity; the suite
files hold the business rules (catalogue, ranges, formats). GX validates them as they are, and the
row-level quarantine (``quality.rows``) reads its predicates from the same expectation kwargs.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pyspark.sql import types as T

from .. import schema as S

log = logging.getLogger(__name__)

SUITES_SUBDIR = "expectations"  # inside the GX project: <project>/expectations/<suite>.json
ENVELOPE_SUITE = "cdc_envelope"  # rules of the CDC columns every entity's rows have


class Severity(StrEnum):
    WARN = "warn"
    QUARANTINE = "quarantine"
    HALT = "halt"

    @property
    def meaning(self) -> str:
        """What a failure of a rule of this severity does to its batch (docs/data-quality.md, in one line)."""
        return {"warn": "the batch is written, the failure is reported",
                "quarantine": "the failing rows are quarantined, the rest of the batch is written",
                "halt": "nothing of the batch is written and the job stops"}[self.value]


class SuiteError(ValueError):
    """A suite file that the job cannot run safely (raised at start-up, never mid-stream)."""


@dataclass(frozen=True)
class Rule:
    suite: str
    name: str  # suite.column.check, e.g. "orders.price.be_between"
    expectation_type: str
    severity: Severity
    kwargs: dict[str, Any]
    expectation_id: str | None
    why: str = ""

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    def columns(self) -> list[str]:
        """Every column the rule reads: its column(s), and the one its row condition compares."""
        named = [self.kwargs["column"]] if "column" in self.kwargs else list(self.kwargs.get("column_list", []))
        for key in ("column_A", "column_B"):
            if key in self.kwargs:
                named.append(self.kwargs[key])
        condition = self.kwargs.get("row_condition")
        if isinstance(condition, dict) and isinstance(condition.get("column"), dict):
            named.append(condition["column"]["name"])
        return named

    def parameters(self) -> set[str]:
        """Names of the ``{"$PARAMETER": name}`` values the job must supply at validation time."""
        return {v["$PARAMETER"] for v in self.kwargs.values() if isinstance(v, dict) and "$PARAMETER" in v}


@dataclass(frozen=True)
class Suite:
    name: str
    rules: tuple[Rule, ...]
    document: dict[str, Any]  # the suite file as GX reads it

    def parameters(self) -> set[str]:
        return set().union(*(r.parameters() for r in self.rules))

    @property
    def parameter_defaults(self) -> dict[str, Any]:
        """Values the suite file gives its $PARAMETERs (``meta.parameters``); the job's ``--dq-param`` wins."""
        return dict((self.document.get("meta") or {}).get("parameters") or {})


def _short_check(expectation_type: str) -> str:
    short = expectation_type.removeprefix("expect_")
    return short.removeprefix("column_values_to_").removeprefix("column_")


def _rule(suite: str, expectation: dict[str, Any]) -> Rule:
    kind = expectation.get("type")
    meta = expectation.get("meta") or {}
    kwargs = expectation.get("kwargs") or {}
    where = f"suite {suite!r}, {kind}({kwargs.get('column', '')})"
    if not kind:
        raise SuiteError(f"suite {suite!r}: an expectation has no type")
    try:
        severity = Severity(meta.get("severity"))
    except ValueError:
        raise SuiteError(f"{where}: meta.severity must be one of {[s.value for s in Severity]}, "
                         f"got {meta.get('severity')!r}") from None
    name = f"{suite}.{kwargs['column']}.{_short_check(kind)}" if "column" in kwargs else f"{suite}.{_short_check(kind)}"
    return Rule(suite, name, kind, severity, kwargs, expectation.get("id"), meta.get("why", ""))


def load_suite(path: Path, allow_empty: bool = False) -> Suite:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"cannot read expectation suite {path}: {exc}") from exc
    name = document.get("name") or path.stem
    rules = tuple(_rule(name, e) for e in document.get("expectations", []))
    if not rules and not allow_empty:
        raise SuiteError(f"suite {name!r} ({path}) has no expectations")
    return Suite(name, rules, document)


_LIVE_ROWS = {"column": {"name": S.CDC_OP}, "operator": "!=", "parameter": "REMOVE", "type": "comparison"}


def _expectation(kind: str, severity: Severity, why: str, **kwargs: Any) -> dict[str, Any]:
    name = f"{kind}:{kwargs.get('column', kwargs.get('column_list', ''))}"
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sales-cdc-contract/{name}")), "type": kind, "kwargs": kwargs,
            "meta": {"severity": severity.value, "why": why, "from": "contract"},
            "severity": "critical" if severity is Severity.HALT else "warning"}


def contract_expectations(entity: S.EntitySchema) -> list[dict[str, Any]]:
    """The rules every replicated table needs, from its contract: the rows have exactly the table's columns,
    the key is never null and unique after the dedupe, typed columns have their type (halt: the decode or
    the contract is wrong), and required attributes are present in live rows (quarantine: a bad item must
    not stop the stream; a REMOVE row carries the deleted item, which deleting it must not be blocked by)."""
    columns = [f.name for f in S.state_fields(entity)]
    rules = [
        _expectation("expect_table_columns_to_match_set", Severity.HALT,
                     "The rows must have exactly the columns the lake and warehouse tables have.", column_set=columns),
        *[_expectation("expect_column_values_to_not_be_null", Severity.HALT, "The merge key.", column=key)
          for key in entity.keys],
        _unique_key(entity),
    ]
    for field in entity.fields:
        if not isinstance(field.spark_type, T.StringType):
            rules.append(_expectation(
                "expect_column_values_to_be_of_type", Severity.HALT,
                f"The contract makes it {field.spark_type.simpleString()}: another type means schema drift in the "
                "decode.", column=field.name, type_=type(field.spark_type).__name__))
    for field in entity.fields:
        if field.required and field.name not in entity.keys:
            rules.append(_expectation("expect_column_values_to_not_be_null", Severity.QUARANTINE,
                                      f"Required by the contract: {field.description or field.name}.",
                                      column=field.name, row_condition=_LIVE_ROWS))
    return rules


def _unique_key(entity: S.EntitySchema) -> dict[str, Any]:
    why = "After dedupe there is one row per key; a duplicate means the dedupe is broken."
    if len(entity.keys) == 1:
        return _expectation("expect_column_values_to_be_unique", Severity.HALT, why, column=entity.keys[0])
    return _expectation("expect_compound_columns_to_be_unique", Severity.HALT, why, column_list=list(entity.keys))


def _on_contract_columns(suite: Suite, entity: S.EntitySchema) -> Suite:
    """The suite without the rules on columns the contract does not have, each skipped with a warning: a business
    suite may check optional attributes a table lacks (the orders suite's customer_id, for the tutorial's
    four-attribute table); a rule GX could not evaluate would otherwise fail the first batch."""
    columns = {f.name for f in S.state_fields(entity)} | {f.name for f in S.SOFT_DELETE_FIELDS}
    kept = []
    for rule in suite.rules:
        missing = [c for c in rule.columns() if c not in columns]
        if missing:
            log.warning("suite %s: rule %s skipped: the contract has no column %s (add the attribute to the contract "
                        "to check it, or remove the rule)", suite.name, rule.name, ", ".join(missing))
            continue
        kept.append(rule)
    if len(kept) == len(suite.rules):
        return suite
    document = dict(suite.document)
    document["expectations"] = [e for e in document.get("expectations", [])
                                if _rule(suite.name, e).name in {r.name for r in kept}]
    return Suite(suite.name, tuple(kept), document)


def _with_contract(suites: list[Suite], entity: S.EntitySchema) -> list[Suite]:
    """The suite named after the entity gets the contract's rules first (a new suite when there is none)."""
    generated = contract_expectations(entity)
    named = next((s for s in suites if s.name == entity.name), None)
    document = dict(named.document) if named else {"name": entity.name, "meta": {}, "notes": None}
    document["expectations"] = [*generated, *document.get("expectations", [])]
    merged = Suite(entity.name, tuple(_rule(entity.name, e) for e in document["expectations"]), document)
    return [merged if s is named else s for s in suites] if named else [merged, *suites]


def load_suites(project_dir: Path, entity: S.EntitySchema) -> list[Suite]:
    """The suites of the GX project at ``project_dir`` that apply to ``entity``: ``cdc_envelope.json`` and
    ``<entity>.json`` (if any), the contract's rules added to the entity's; rule names unique across them."""
    suite_dir = Path(project_dir) / SUITES_SUBDIR
    paths = sorted(suite_dir.glob("*.json"))
    if not paths:
        raise SuiteError(f"no expectation suites in {suite_dir} (expected <suite>.json files of a GX project)")
    # the envelope suite checks what every stream record has; any other suite is one entity's business rules
    paths = [p for p in paths if p.stem in (ENVELOPE_SUITE, entity.name)]
    suites = _with_contract([_on_contract_columns(load_suite(p, allow_empty=True), entity) for p in paths], entity)
    names = [r.name for s in suites for r in s.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SuiteError(f"rule names must be unique across suites; repeated: {', '.join(duplicates)}")
    return suites
