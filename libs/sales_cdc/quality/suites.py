"""The expectation suites in ``expectations/`` (a GX 1.x file-backed project) and their severities.

Each expectation carries ``meta.severity``:
  warn        recorded in the results history and the docs; the data flows
  quarantine  the failing rows go to quarantine with the rule names; the other rows flow
  halt        nothing of the batch is committed, the checkpoint does not advance, the job stops

The suites are the only place rules are written down: GX validates them as they are, and the
row-level quarantine (``quality.rows``) reads its predicates from the same expectation kwargs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

SUITES_SUBDIR = "expectations"  # inside the GX project: <project>/expectations/<suite>.json


class Severity(StrEnum):
    WARN = "warn"
    QUARANTINE = "quarantine"
    HALT = "halt"


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


def load_suite(path: Path) -> Suite:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"cannot read expectation suite {path}: {exc}") from exc
    name = document.get("name") or path.stem
    rules = tuple(_rule(name, e) for e in document.get("expectations", []))
    if not rules:
        raise SuiteError(f"suite {name!r} ({path}) has no expectations")
    return Suite(name, rules, document)


def load_suites(project_dir: Path) -> list[Suite]:
    """Every ``*.json`` suite of the GX project at ``project_dir``, with unique rule names."""
    suite_dir = Path(project_dir) / SUITES_SUBDIR
    paths = sorted(suite_dir.glob("*.json"))
    if not paths:
        raise SuiteError(f"no expectation suites in {suite_dir} (expected <suite>.json files of a GX project)")
    suites = [load_suite(p) for p in paths]
    names = [r.name for s in suites for r in s.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SuiteError(f"rule names must be unique across suites; repeated: {', '.join(duplicates)}")
    return suites
