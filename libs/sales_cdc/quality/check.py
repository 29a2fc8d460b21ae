"""Per-batch data quality: GX verdicts, row-level quarantine, the results history and the halt rule."""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import reduce
from typing import Any, TypeVar

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from .. import schema as S
from ..config import DqConfig, parameter_value
from ..errors import first_line
from . import rows
from .batch_pages import summarize
from .gx_runner import RULE_META, DocsSite, GxRunner, SuiteRun
from .suites import Rule, Severity, Suite, SuiteError, load_suites

log = logging.getLogger(__name__)

T = TypeVar("T")
DQ_REJECTED = "_dq_rejected"  # true where a quarantine rule flags the row


class DataQualityHalt(RuntimeError):
    """A halt-severity rule failed: nothing of the batch was committed and the checkpoint did not advance."""


@dataclass(frozen=True)
class RuleOutcome:
    rule: Rule
    success: bool
    element_count: int | None  # from GX; None for table-level expectations
    unexpected_count: int | None
    failed_rows: int | None  # rows its predicate flagged; None for table-level and halt rules (GX's alone)
    details: str | None = None

    @property
    def quarantined_rows(self) -> int:
        return (self.failed_rows or 0) if self.rule.severity is Severity.QUARANTINE else 0


@dataclass
class DqOutcome:
    batch_id: int
    rules: list[RuleOutcome]
    passed: DataFrame  # rows to write (quarantined ones removed)
    rejected: DataFrame | None  # cdc_event_id + reason of quarantined rows; None when none can be
    quarantined_rows: int = 0  # rows quarantined by any rule (a row failing two rules counts once)
    docs_urls: dict[str, str] = field(default_factory=dict)  # suite -> its validation page
    validated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    gx_seconds: float = 0.0
    suite_runs: list[SuiteRun] = field(default_factory=list)  # GX's final runs, whose pages DataQuality.publish renders

    def failed(self, severity: Severity) -> list[RuleOutcome]:
        return [r for r in self.rules if not r.success and r.rule.severity is severity]

    @property
    def halted(self) -> bool:
        return bool(self.failed(Severity.HALT))

    @property
    def outcome(self) -> str:
        if self.halted:
            return "halted"
        if self.quarantined_rows:
            return "quarantined"
        return "warned" if any(not r.success for r in self.rules) else "passed"

    def failed_rule_names(self, severity: Severity | None = None) -> list[str]:
        return [r.rule.name for r in self.rules if not r.success and severity in (None, r.rule.severity)]

    def docs_url(self) -> str | None:
        """The validation page of the first suite with a failed rule (else of the first suite)."""
        failed_suites = [r.rule.suite for r in self.rules if not r.success]
        for suite in [*failed_suites, *self.docs_urls]:
            if suite in self.docs_urls:
                return self.docs_urls[suite]
        return None

    def history(self, job_name: str, stream_id: str) -> pa.Table:
        """One row per rule (``schema.DQ_RESULT_FIELDS``) for the results history table."""
        records = [{
            "job_name": job_name, "stream_id": stream_id, "batch_id": self.batch_id,
            "validated_at": self.validated_at.replace(tzinfo=None), "batch_outcome": self.outcome,
            "suite": r.rule.suite, "rule": r.rule.name, "expectation_type": r.rule.expectation_type,
            "severity": r.rule.severity.value, "success": r.success, "element_count": r.element_count,
            "unexpected_count": r.unexpected_count, "quarantined_rows": r.quarantined_rows, "details": r.details,
            "docs_url": self.docs_urls.get(r.rule.suite),
        } for r in self.rules]
        return pa.Table.from_pylist(records, schema=dq_result_arrow_schema())


def dq_result_arrow_schema() -> pa.Schema:
    types = {"LongType": pa.int64(), "StringType": pa.string(), "BooleanType": pa.bool_(),
             "TimestampType": pa.timestamp("us")}
    return pa.schema([pa.field(f.name, types[type(f.spark_type).__name__], f.nullable) for f in S.DQ_RESULT_FIELDS])


def _result_details(result: Any) -> tuple[int | None, int | None, str | None]:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return None, None, f"GX raised: {info.get('exception_message')}"
    values = result.result or {}
    observed = values.get("observed_value")
    details = None if observed is None else f"observed: {observed}"
    return values.get("element_count"), values.get("unexpected_count"), details


@dataclass(frozen=True)
class _RowFlags:
    flagged: DataFrame  # the state with one flag column per rule and DQ_REJECTED
    columns: dict[str, str]  # rule name -> its flag column
    quarantine_names: list[str]
    counts: dict[str, int]  # rule name -> rows its predicate flags
    rejected: int  # rows flagged by any quarantine rule


def _all_passed(runs: list) -> bool:
    return all(res.success for run in runs for res in run.result.results)


class _TimedGx:
    """GX's validation of one batch, timed."""

    def __init__(self, gx: GxRunner, state: DataFrame, run_name: str, parameters: dict[str, Any], now: datetime):
        self.gx, self.state, self.run_name, self.parameters, self.now = gx, state, run_name, parameters, now
        self.seconds = 0.0

    def _timed(self, run: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return run()
        finally:
            self.seconds += time.perf_counter() - started

    def validate(self, detailed: bool) -> list:
        return self._timed(lambda: self.gx.validate(self.state, self.run_name, self.parameters, detailed=detailed,
                                                    run_time=self.now))

    def first_pass(self, rows: pa.Table | None) -> list | None:
        """BOOLEAN_ONLY verdicts: on the pandas screen when ``rows`` (the state collected) are given and the suites
        allow it, which answers None when a rule fails there (the batch then goes the Spark way); else on Spark."""
        if rows is not None and self.gx.pandas is not None:
            return self._timed(lambda: self.gx.screen(self.state, rows, self.run_name, self.parameters, self.now))
        return self.validate(detailed=False)


def _split(state: DataFrame, flags: _RowFlags) -> tuple[DataFrame, DataFrame | None, int]:
    """(rows that pass, event id + reasons of the rows to quarantine or None, how many) by the row flags."""
    if not flags.rejected:
        return state, None, 0
    reasons = F.array_compact(F.array(*[F.when(F.col(flags.columns[n]), F.lit(n)) for n in flags.quarantine_names]))
    passed = flags.flagged.where(~F.col(DQ_REJECTED)).select(*state.columns)
    rejected = flags.flagged.where(F.col(DQ_REJECTED)).select(
        S.CDC_EVENT_ID, F.array_join(reasons, "; ").alias(S.QUARANTINE_REASON))
    return passed, rejected, flags.rejected


class DataQuality:
    """Built once per job: loads and checks the suites, sets up GX, compiles the row predicates."""

    def __init__(self, config: DqConfig, entity: S.EntitySchema, job_name: str = "sales-cdc"):
        self.config, self.entity = config, entity
        self.suites: list[Suite] = load_suites(config.expectations_dir, entity)
        self.rules: list[Rule] = [r for s in self.suites for r in s.rules]
        rows.check_quarantine_rules(self.rules)
        self._parameter_defaults = {name: parameter_value(value) for suite in self.suites
                                    for name, value in suite.parameter_defaults.items()}
        missing = set().union(*(s.parameters() for s in self.suites)) - set(self.parameters(datetime.now(UTC)))
        if missing:
            raise SuiteError(f"the suites use $PARAMETER values nothing supplies: {', '.join(sorted(missing))}; give "
                             "each a default in its suite's meta.parameters or pass --dq-param name=value")
        docs = DocsSite(config.docs.location, config.docs.endpoint_url, config.docs.region) \
            if config.docs.location else None
        self.docs = docs
        self.gx = GxRunner(self.suites, docs, config.result_format, name=job_name.replace("-", "_"),
                           index_batches=config.docs.index_batches)
        self.job_name = job_name
        # rule name -> (the parameter values it was built with, its predicate): building the ~15 predicates
        # costs hundreds of py4j calls (0.1-0.2 s per batch); only rules whose parameters changed are rebuilt
        self._predicates: dict[str, tuple[tuple, Column]] = {}
        # GX first (predicates only if it finds a failure) while batches come clean; see check()
        self._gx_first_allowed = not any("mostly" in r.kwargs for r in self.rules
                                         if rows.is_row_level(r) and r.severity is not Severity.HALT)
        self._gx_first = self._gx_first_allowed

    def for_entity(self, entity: S.EntitySchema) -> DataQuality:
        """The same suites over ``entity``'s columns (after a migration): the contract's rules follow them."""
        return DataQuality(self.config, entity, self.job_name)

    def screens(self, rows: int) -> bool:
        """Whether a batch of ``rows`` state rows goes to the pandas screen first (``check``'s ``collected``)."""
        return self._gx_first and self.gx.pandas is not None and rows <= self.config.screen_rows

    def parameters(self, now: datetime) -> dict[str, Any]:
        """The $PARAMETER values for a batch validated at ``now``: the suites' defaults, then the job's."""
        return {**self._parameter_defaults, **self.config.parameters(now)}

    @property
    def docs_index_url(self) -> str | None:
        return self.docs.index_url if self.docs else None

    def _failing(self, rule: Rule, parameters: dict[str, Any]) -> Column:
        values = tuple(sorted((name, parameters[name]) for name in rule.parameters()))
        cached = self._predicates.get(rule.name)
        if cached is None or cached[0] != values:
            cached = values, rows.failing(rule, parameters, self.gx.row_condition_sql)
            self._predicates[rule.name] = cached
        return cached[1]

    def _flagged(self, state: DataFrame, rules: list[Rule], parameters: dict[str, Any]) -> tuple[DataFrame, dict]:
        """``state`` with one boolean column per rule (true where the row fails it), and rule -> column.
        Flags are columns, not aggregates: a unique check is a window, which an aggregate cannot contain."""
        flag_cols = {r.name: f"_dq_f{i}" for i, r in enumerate(rules)}
        return state.select("*", *[self._failing(r, parameters).alias(flag_cols[r.name]) for r in rules]), flag_cols

    def row_failures(self, state: DataFrame, rules: list[Rule] | None = None) -> dict[str, int]:
        """Rows failing each rule's row predicate (default: every row-level rule, halt rules included, which
        ``check`` leaves to GX alone), for holding the predicates against GX's counts."""
        rules = [r for r in (rules if rules is not None else self.rules) if rows.is_row_level(r)]
        return self._row_flags(state, rules, self.parameters(datetime.now(UTC))).counts

    def _row_flags(self, state: DataFrame, row_rules: list[Rule], parameters: dict[str, Any]) -> _RowFlags:
        """One Spark job: the rows each rule's predicate flags, and the rows to quarantine (any quarantine flag)."""
        flagged, flag_cols = self._flagged(state, row_rules, parameters)
        quarantine_names = [r.name for r in row_rules if r.severity is Severity.QUARANTINE]
        # a plain OR of the flags here; the reasons (an array, built with a lambda that turns Spark's code
        # generation off) only for batches that have rows to quarantine
        rejected_flag = F.coalesce(reduce(operator.or_, [F.col(flag_cols[n]) for n in quarantine_names]),
                                   F.lit(False)) if quarantine_names else F.lit(False)
        flagged = flagged.withColumn(DQ_REJECTED, rejected_flag)
        totals = flagged.agg(*[F.count_if(F.col(c)).alias(c) for c in flag_cols.values()],
                             F.count_if(DQ_REJECTED).alias("rejected")).first()
        return _RowFlags(flagged, flag_cols, quarantine_names, {name: totals[c] for name, c in flag_cols.items()},
                         totals["rejected"])

    def check(self, state: DataFrame, batch_id: int, validated_at: datetime | None = None, *,
              publish: bool = True, collected: pa.Table | None = None,
              materialize: Callable[[DataFrame], DataFrame] | None = None) -> DqOutcome:
        """Validate ``state``; materialise it first (the batch handler checkpoints it): GX runs several jobs on it.
        ``publish=False`` leaves the Data Docs pages to a later ``publish(outcome)`` (the batch handler's, once the
        batch is committed). ``collected``, the state as Arrow (a small batch), lets a clean batch be cleared
        on GX's pandas engine (``gx_pandas``) instead of Spark's; ``state`` is then built from it and not yet
        materialised, which ``materialize`` (a checkpoint) does if the batch goes the Spark way after all.

        Quarantine needs rows, which the row predicates of quarantine and warn rules find (one Spark job);
        halt rules are GX's alone (a halt writes nothing, so their rows are never needed, and the ``unique``
        predicate would cost a window per batch). A clean batch needs neither the predicates nor GX's
        detail, so the order follows the previous batch:
        - after a clean batch, GX runs first with BOOLEAN_ONLY; if every rule passes, that is all (no row
          fails a rule that passes, as long as no quarantine or warn rule has ``mostly``);
        - otherwise (after a failing batch, or when GX just found a failure) the predicates run, then GX
          with the configured detail if anything failed, so the docs and history show counts and values.
        A stream of failing batches (say, a warn rule on legacy ids) pays no boolean run it would throw
        away; a stream of clean ones pays no predicate job."""
        now = validated_at or datetime.now(UTC)
        parameters = self.parameters(now)
        row_rules = [r for r in self.rules if rows.is_row_level(r) and r.severity is not Severity.HALT]
        gx = _TimedGx(self.gx, state, f"{self.job_name}-batch-{batch_id}", parameters, now)
        flags, detailed = None, False
        runs = gx.first_pass(collected) if self._gx_first else None
        if runs is None or not _all_passed(runs):
            if collected is not None and materialize is not None:  # the rows sit with the executors for GX's
                state = gx.state = materialize(state)  # dozen queries, not inside each query's tasks
            flags = self._row_flags(state, row_rules, parameters) if row_rules else None
            if runs is None:  # predicates first: a rule they find failing asks for the detail up front
                detailed = flags is not None and any(flags.counts.values())
                runs = gx.validate(detailed)
            if not detailed and self.config.result_format != "BOOLEAN_ONLY" and not _all_passed(runs):
                runs = gx.validate(detailed=True)
        self._gx_first = self._gx_first_allowed and _all_passed(runs)
        by_rule = {res.expectation_config.meta[RULE_META]: res for run in runs for res in run.result.results}
        halted = any(not by_rule[r.name].success for r in self.rules
                     if r.severity is Severity.HALT and r.name in by_rule)
        passed, rejected, rejected_count = (state, None, 0) if halted or flags is None else _split(state, flags)
        counts = flags.counts if flags is not None else {r.name: 0 for r in row_rules}
        outcome = DqOutcome(batch_id, self._rule_outcomes(by_rule, counts, batch_id), passed, rejected,
                            rejected_count, {r.suite: r.docs_url for r in runs if r.docs_url}, now, gx.seconds, runs)
        if publish:
            self.publish(outcome)
        return outcome

    def _rule_outcomes(self, by_rule: dict[str, Any], counts: dict[str, int], batch_id: int) -> list[RuleOutcome]:
        """Each rule's verdict, GX's counts (a clean BOOLEAN_ONLY result has none: the predicates' then) and a
        warning when GX and the row predicate disagree."""
        outcomes = []
        for rule in self.rules:
            result = by_rule.get(rule.name)
            if result is None:
                outcomes.append(RuleOutcome(rule, False, None, None, None, "not validated by GX"))
                continue
            element_count, unexpected, details = _result_details(result)
            failed_rows = counts.get(rule.name)
            if unexpected is None and not details and rows.is_row_level(rule) and \
                    (failed_rows is not None or (result.success and "mostly" not in rule.kwargs)):
                unexpected = failed_rows or 0  # a BOOLEAN_ONLY (clean) result: no count from GX, and none failed
            if failed_rows is not None and unexpected is not None and failed_rows != unexpected:
                log.warning("batch %s: %s: GX counted %s unexpected rows, the row predicate %s", batch_id,
                            rule.name, unexpected, failed_rows)
            outcomes.append(RuleOutcome(rule, bool(result.success), element_count, unexpected, failed_rows, details))
        return outcomes

    def publish(self, outcome: DqOutcome) -> None:
        """The batch's Data Docs pages and the site index (the pages ``outcome.docs_urls`` names); best effort, as
        :meth:`record_batch`: a site that refuses them (a full disk, S3) costs one warning line, not the batch."""
        try:
            self.gx.publish(outcome.suite_runs)
        except Exception as error:  # the next batch's pages and index are written again
            log.warning("docs: could not write the pages of batch %s (%s)", outcome.batch_id, first_line(error))

    def record_batch(self, stream_id: str, batch_id: int, events_read: int, *, merge=None,
                     outcome: DqOutcome | None = None, quarantine_rows: pa.Table | None = None,
                     quarantine_at: list[str] | None = None) -> None:
        """The batch's summary page and the site's index (``batch_pages``); best effort: the batch is committed, and
        the ledger, the quarantine and the results history hold the same facts."""
        if self.docs is None:
            return
        summary = summarize(self.job_name, stream_id, batch_id, events_read=events_read, merge=merge, outcome=outcome,
                            quarantine_rows=quarantine_rows, quarantine_at=quarantine_at,
                            gx_pages=self.gx.gx_pages(outcome.suite_runs) if outcome is not None else {})
        try:
            self.gx.add_batch(summary)
        except Exception as error:  # a full disk, S3 refusing: the next batch writes the index again
            log.warning("docs: could not write the summary page of batch %s (%s)", batch_id, first_line(error))

    def halt_message(self, outcome: DqOutcome) -> str:
        failed = outcome.failed(Severity.HALT)
        lines = [f"data-quality halt in batch {outcome.batch_id}: nothing of it was written and the checkpoint "
                 f"did not advance. Failed halt rule(s):"]
        for r in failed:
            count = f"{r.unexpected_count} of {r.element_count} rows" if r.unexpected_count is not None else \
                (r.details or "failed")
            lines.append(f"  - {r.rule.name} ({r.rule.expectation_type}): {count}. {r.rule.why}".rstrip())
            if "column_set" in r.rule.kwargs:
                lines.append(_column_set_fix(set(outcome.passed.columns), set(r.rule.kwargs["column_set"])))
        for suite, url in outcome.docs_urls.items():
            lines.append(f"Details ({suite}): {url}")
        lines.append(
            "To resume: fix the cause (the source data or the flattener), or, after review, lower the rule's "
            f"meta.severity in {self.config.expectations_dir}/expectations/<suite>.json; then restart the job with "
            f"the same checkpoint: it re-reads batch {outcome.batch_id}.")
        return "\n".join(lines)


def _column_set_fix(have: set[str], want: set[str]) -> str:
    """Which contract change makes the rows' columns and the contract's agree."""
    extra, missing = sorted(have - want), sorted(want - have)
    fixes = []
    if extra:
        fixes.append(f"the rows have {', '.join(extra)}, which the contract does not name: add the attribute(s) to "
                     "the contract's attributes (docs/schema-evolution.md), or keep them unmapped")
    if missing:
        fixes.append(f"the rows lack {', '.join(missing)}, which the contract names: the decode and the contract "
                     "disagree; restart the job so that it migrates every sink to the contract")
    return "    " + "; ".join(fixes)
