"""Row-level outcomes of the suites' column-map expectations, as Spark predicates.

GX answers per expectation and per batch ("12 rows failed"); quarantine needs to know *which* rows.
GX's own row lists (result format COMPLETE) cost one Spark job per expectation and collect every
failing value to the driver (≈ 4.4 s per 100k-row batch here, against ≈ 0.2 s for one filter), so the
failing rows are found here instead, in one projection, from the same expectation kwargs GX reads.
Semantics follow GX's Spark metrics: nulls are skipped except by the null checks, ``row_condition``
limits the domain (translated by GX's own Spark engine), strict bounds are honoured. ``mostly`` is a
batch-level threshold and does not apply to single rows. Whenever the predicates run (see
``DataQuality.check``), the row count of each quarantine and warn rule is compared with GX's
``unexpected_count`` (halt rules are GX's alone: a halt writes nothing); the tests check the two agree
on crafted bad rows for every rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pyspark.sql import Column, Window
from pyspark.sql import functions as F

from .suites import Rule, Severity, SuiteError

_NOT_NULL_CHECKS = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_null"}


def _value(raw: Any, params: Mapping[str, Any]) -> Any:
    if isinstance(raw, dict) and "$PARAMETER" in raw:
        return params[raw["$PARAMETER"]]
    return raw


def _outside_bounds(col: Column, kwargs: dict, params: Mapping[str, Any]) -> Column:
    low, high = _value(kwargs.get("min_value"), params), _value(kwargs.get("max_value"), params)
    if low is None and high is None:
        raise SuiteError("expect_column_values_to_be_between needs min_value or max_value")
    fails = F.lit(False)
    if low is not None:
        fails = fails | ((col <= F.lit(low)) if kwargs.get("strict_min") else (col < F.lit(low)))
    if high is not None:
        fails = fails | ((col >= F.lit(high)) if kwargs.get("strict_max") else (col > F.lit(high)))
    return fails


def _unique(col: Column, in_domain: Column) -> Column:
    # duplicates among the rows in the domain (GX: value count > 1 within the filtered batch)
    return F.count(F.when(in_domain, col)).over(Window.partitionBy(col)) > 1


# expectation type -> (column, kwargs, parameters) -> True where a non-null, in-domain row fails
_FAILS: dict[str, Callable[[Column, dict, Mapping[str, Any]], Column]] = {
    "expect_column_values_to_not_be_null": lambda c, kw, p: c.isNull(),
    "expect_column_values_to_be_null": lambda c, kw, p: c.isNotNull(),
    "expect_column_values_to_be_in_set": lambda c, kw, p: ~c.isin(list(_value(kw["value_set"], p))),
    "expect_column_values_to_not_be_in_set": lambda c, kw, p: c.isin(list(_value(kw["value_set"], p))),
    "expect_column_values_to_be_between": _outside_bounds,
    "expect_column_values_to_match_regex": lambda c, kw, p: ~c.rlike(_value(kw["regex"], p)),
    "expect_column_values_to_not_match_regex": lambda c, kw, p: c.rlike(_value(kw["regex"], p)),
    "expect_column_value_lengths_to_be_between":
        lambda c, kw, p: _outside_bounds(F.length(c), kw, p),
}
ROW_LEVEL_TYPES = frozenset(_FAILS) | {"expect_column_values_to_be_unique"}


def is_row_level(rule: Rule) -> bool:
    return rule.expectation_type in ROW_LEVEL_TYPES


def check_quarantine_rules(rules: list[Rule]) -> None:
    """Quarantine needs rows: refuse (at start-up) a quarantine rule that has no row-level form."""
    for rule in rules:
        if rule.severity is Severity.QUARANTINE and not is_row_level(rule):
            raise SuiteError(
                f"{rule.name}: severity 'quarantine' needs a row-level expectation "
                f"({', '.join(sorted(ROW_LEVEL_TYPES))}); use 'warn' or 'halt' for {rule.expectation_type}")


def failing(rule: Rule, params: Mapping[str, Any], row_condition_sql: Callable[[Any, str | None], str]) -> Column:
    """A boolean Column: True where the row fails ``rule`` (never null)."""
    kwargs = rule.kwargs
    col = F.col(rule.column)
    in_domain = F.lit(True)
    if kwargs.get("row_condition"):
        in_domain = F.coalesce(F.expr(row_condition_sql(kwargs["row_condition"], kwargs.get("condition_parser"))),
                               F.lit(False))
    if rule.expectation_type == "expect_column_values_to_be_unique":
        fails = _unique(col, in_domain & col.isNotNull())
    else:
        fails = _FAILS[rule.expectation_type](col, kwargs, params)
    if rule.expectation_type not in _NOT_NULL_CHECKS:
        in_domain = in_domain & col.isNotNull()
    return F.coalesce(in_domain & fails, F.lit(False))
