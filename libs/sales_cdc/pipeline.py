"""The micro-batch handler: the same function for the local job and for Glue.

``handler = BatchHandler(warehouse=..., options=HandlerOptions(job_name=...))`` is passed to
``foreachBatch`` / ``glueContext.forEachBatch``; tests call ``handler(static_df, batch_id)`` directly.

Every step is safe to repeat: Spark (and Glue's ``batchMaxRetries``) re-run a batch whose
checkpoint commit did not happen; the warehouse ledger turns that replay into a no-op.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

import pyarrow as pa
from pyspark.sql import DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema

from . import schema as S
from .alerts import Alert, LogAlerter, SnsAlerter
from .decode import DecodedBatch, decode_batch, split_decoded
from .errors import Interrupted, StopRequested
from .evolution import with_fields
from .faults import crash_point
from .lake import Lake, LakeBatch, LakeResult, Rows
from .merge_rules import MergeRules
from .metrics import Metrics, NoMetrics
from .migration import Migration
from .new_attributes import new_fields
from .quality import DataQuality, DataQualityHalt, DqOutcome, Severity
from .results import BatchResult, RunSummary
from .runtime import InBackground, Materialized, Stopwatch, frame_of, retrying
from .transforms import (
    CONFLICT,
    CONFLICT_REASON,
    RANK,
    dq_quarantine_rows,
    ranked,
    split_rows,
    table_without_items_of,
    to_quarantine_rows,
    to_raw_rows,
    to_state_rows,
    to_superseded_versions,
    warehouse_quarantine_rows,
    without_items_of,
)
from .warehouse.base import BatchFacts, MergeResult, RowsRefused, Warehouse

Alerter = SnsAlerter | LogAlerter

log = logging.getLogger(__name__)
PROGRESS_LOGGER = "sales_cdc.progress"  # one line per batch: what the command line shows by default
progress = logging.getLogger(PROGRESS_LOGGER)
T = TypeVar("T")

# Spark sets this local property on the thread that runs foreachBatch: the query id stays the same
# across restarts from one checkpoint and changes with a new checkpoint, so (stream id, batch id)
# names a batch uniquely even when a user starts over with a fresh checkpoint.
QUERY_ID_PROPERTY = "sql.streaming.queryId"

DQ_ROWS_PER_PARTITION = 1_000_000  # data quality reads the state in partitions of about this many rows


@dataclass(frozen=True)
class HandlerOptions:
    job_name: str = "sales-cdc"  # the ledger's and the alerts' job name
    alert_quarantine_share: float = 0.05  # alert when a batch quarantines more than this share of its events
    sink_retry_seconds: float = 0.0  # how long an unreachable sink is retried, with backoff
    default_stream_id: str = "static"  # the stream id outside a streaming query (a test calling the handler)


class _Batch:
    """One batch on its way through the handler's steps: what each step leaves for the next."""

    def __init__(self, batch_id: int, stream_id: str, materialized: Materialized):
        self.id, self.stream_id, self.materialized = batch_id, stream_id, materialized
        self.clock, self.started = Stopwatch(), time.perf_counter()
        self.decoded: DecodedBatch | None = None
        self.events: DataFrame | None = None  # valid events
        self.quarantine: DataFrame | None = None  # rejected records, as quarantine rows
        # latest event per key as state rows: what data quality passed, after it; as stored, after the collect
        self.state: DataFrame | None = None
        self.outcome: DqOutcome | None = None
        # ``state`` and ``quarantine`` as stored, collected for the sinks (a screened batch's state: at the dedupe)
        self.state_rows: pa.Table | None = None
        self.quarantine_rows: pa.Table | None = None
        self.superseded: DataFrame | None = None  # with history: the versions the state rows do not carry
        self.superseded_rows: pa.Table | None = None  # ... collected
        self.starters: dict[str, Callable[[], object]] = {}  # work beside the warehouse merge
        self.beside: dict[str, InBackground] = {}  # ... started (raw's files, the lake)
        self.merge: MergeResult | None = None
        self.attempts = 0  # of the warehouse merge
        self.conflicts = 0  # valid events quarantined: another record has their key and sequence


def _write_lake(lake: Lake, without_raw: LakeBatch, decoded: DecodedBatch, entity: S.EntitySchema) -> LakeResult:
    """The lake's write of a batch, its raw rows made first unless raw's files were staged (on the lake's thread)."""
    if without_raw.raw_staged is not None:
        return lake.write_batch(without_raw)
    raw = to_raw_rows(decoded.frame, without_raw.id, entity, decoded.read)
    return lake.write_batch(replace(without_raw, raw=raw))


def _rejected_any(batch: _Batch) -> bool:
    """Whether the batch's quarantine may hold rows: a record that did not decode, a conflict, or a row data
    quality rejected (the counts are the decode's and the dedupe's observations, exact)."""
    rejected_by_dq = batch.outcome is not None and batch.outcome.rejected is not None
    return batch.decoded.read != batch.decoded.valid or batch.conflicts > 0 or rejected_by_dq


# Spark's setting that makes toArrow give large string/binary types; the empty stand-in honours it too
LARGE_VAR_TYPES = "spark.sql.execution.arrow.useLargeVarTypes"


def _empty_arrow(frame: DataFrame) -> pa.Table:
    """``frame.toArrow()`` of a frame known to be empty, without running it: the schema toArrow gives."""
    large = frame.sparkSession.conf.get(LARGE_VAR_TYPES, "false") == "true"
    return to_arrow_schema(frame.schema, error_on_duplicated_field_names_in_struct=True,
                           prefers_large_types=large).empty_table()


class BatchHandler:
    """decode -> quarantine split -> latest per key -> data quality -> lake + warehouse, for one micro-batch."""

    def __init__(self, *, warehouse: Warehouse, lake: Lake | None = None, quality: DataQuality | None = None,
                 alerter: Alerter | None = None, metrics: Metrics | None = None,
                 options: HandlerOptions = HandlerOptions()):
        if lake is not None and lake.rules != warehouse.rules:
            raise ValueError("the lake and the warehouse were built for different entities or delete modes: "
                             "build both from one JobConfig")
        self.rules = warehouse.rules  # the entity and the delete mode every sink applies
        self.warehouse = warehouse
        self.lake = lake
        self.quality = quality
        self.alerter = alerter if alerter is not None else LogAlerter()
        self.metrics = metrics if metrics is not None else NoMetrics()
        self.options = options
        self.summary = RunSummary(docs_url=quality.docs_index_url if quality else None)
        self.halt: DataQualityHalt | None = None  # set when a batch halted the job
        self.failure: Exception | None = None  # the error a batch raised (Spark reports it wrapped in Java's)
        # set to stop the job between batches: the next batch raises StopRequested before it writes anything
        self.stop_requested = threading.Event()
        self._last_batch_id: int | None = None  # None until this handler's first batch
        self._docs: InBackground | None = None  # the last committed batch's Data Docs pages, being written

    @property
    def job_name(self) -> str:
        return self.options.job_name

    @property
    def entity(self) -> S.EntitySchema:
        return self.rules.entity

    def use(self, entity: S.EntitySchema) -> None:
        """Write ``entity``'s columns from now on, in every sink (after a migration gave them the columns): the
        decode, the data-quality rules and every sink follow."""
        self.docs_written()
        self.rules = MergeRules(entity, self.rules.soft_delete)
        self.warehouse.use(entity)
        if self.lake is not None:
            self.lake = self.lake.with_entity(entity)
        if self.quality is not None:
            self.quality = self.quality.for_entity(entity)

    def docs_written(self) -> None:
        """Wait for the last committed batch's Data Docs pages (the job does before it ends)."""
        if self._docs is not None:
            self._docs.join()
            self._docs = None

    def check_ready(self, spark) -> None:
        """Before the first batch: the sinks can be written (the lake's layers on their file systems)."""
        if self.lake is not None:
            self.lake.check(spark)

    def cause_of(self, failed: BaseException) -> BaseException:
        """What to raise for a query that ``failed`` while this handler ran: the halt a batch raised, a stop
        request (as :class:`Interrupted`, with the run's summary), the batch's own error, else ``failed`` itself."""
        if self.halt is not None:
            return self.halt
        if isinstance(self.failure, StopRequested):
            return Interrupted(self.summary)
        return self.failure if self.failure is not None else failed

    def raise_if_halted(self) -> None:
        """A query that ended after a halt (Glue's forEachBatch may return) still ends the job with it."""
        if self.halt is not None:
            raise self.halt

    def _stream_id(self, batch_df: DataFrame) -> str:
        query_id = batch_df.sparkSession.sparkContext.getLocalProperty(QUERY_ID_PROPERTY)
        return query_id or self.options.default_stream_id

    def _already_committed(self, batch_id: int, stream_id: str) -> MergeResult | None:
        """A replay comes as the first batch after a (re)start, or as a batch id not above the last one seen;
        only then is the ledger asked up front (on Redshift a query costs a Data API round trip)."""
        maybe_replay = self._last_batch_id is None or batch_id <= self._last_batch_id
        self._last_batch_id = batch_id if self._last_batch_id is None else max(self._last_batch_id, batch_id)
        if not maybe_replay:
            return None
        return self._retrying("the warehouse", lambda: self.warehouse.committed(batch_id=batch_id, stream_id=stream_id))

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        return retrying(what, attempt, self.options.sink_retry_seconds)

    def __call__(self, batch_df: DataFrame, batch_id: int) -> BatchResult:
        try:
            if self.stop_requested.is_set():
                raise StopRequested(f"batch {batch_id} not started: the job was asked to stop")
            return self._batch(batch_df, batch_id)
        except Exception as exc:
            self.failure = exc
            raise

    def _batch(self, batch_df: DataFrame, batch_id: int) -> BatchResult:
        stream_id = self._stream_id(batch_df)
        recorded = self._already_committed(batch_id, stream_id)
        if recorded is not None:
            # the warehouse commits only after the lake: a batch in the warehouse ledger is in the lake too,
            # so a replay is not read, validated or written again (merge_batch would skip it anyway)
            log.info("batch %s of stream %s is already committed: skipped (replay)", batch_id, stream_id)
            result = BatchResult(batch_id, 0, 0, 0, recorded, dq_outcome="replayed")
            self.summary.add(result)
            return result
        while (result := self._attempt(batch_df, batch_id, stream_id)) is None:
            pass  # the contract gained columns for the batch's new attributes: decoded again with them
        return result

    def _attempt(self, batch_df: DataFrame, batch_id: int, stream_id: str) -> BatchResult | None:
        batch = _Batch(batch_id, stream_id, Materialized(batch_df.sparkSession))
        try:
            self._decode(batch, batch_df)
            if self._added_columns(batch):
                return None
            self._stage_raw(batch)
            self._validate(batch)
            self._collect(batch)
            self._write_sinks(batch)
        finally:
            for work in batch.beside.values():  # none outlives its batch, nor the checkpoints it reads
                work.join()
            batch.materialized.release()
        return self._finish(batch)

    def _decode(self, batch: _Batch, batch_df: DataFrame) -> None:
        """Decode (quarantining what does not decode), then the latest event per key as state rows."""
        batch.decoded = decode_batch(batch_df, batch.materialized, self.entity)
        batch.events, batch.quarantine = split_decoded(batch.decoded.frame, batch.id, self.entity)
        batch.clock.lap("decode")
        if not self._may_add_columns(batch):  # else its decode may change (the files would go unused)
            self._stage_raw(batch)
        observed = Observation(f"dedupe_{uuid.uuid4().hex}")
        latest = ranked(batch.events, self.entity.keys, batch.decoded.valid, repeats=self.entity.history).observe(
            observed, F.count_if(CONFLICT).alias("conflicts"))
        if self.entity.history:  # every event is a version too: the ranking is read twice, so computed once
            latest = batch.materialized(latest.drop(S.PAYLOAD))  # (~1 KB an event, which neither reads)
            batch.superseded = to_superseded_versions(latest, batch.id, self.entity)  # read once, by the collect
        batch.state = self._state_computed_once(batch, to_state_rows(latest.where(f"{RANK} = 1 AND NOT {CONFLICT}"),
                                                                     batch.id, self.entity))
        if observed.get["conflicts"]:  # rare: the records are found again, each quarantined once
            conflicts = ranked(batch.events, self.entity.keys).where(CONFLICT).dropDuplicates([S.PAYLOAD])
            rows = batch.materialized(to_quarantine_rows(conflicts, F.lit(CONFLICT_REASON), batch.id, S.DECODE_STAGE,
                                                         self.entity))
            batch.conflicts = rows.count()
            batch.quarantine = batch.quarantine.unionByName(rows)
        batch.clock.lap("dedupe")

    def _state_computed_once(self, batch: _Batch, state: DataFrame) -> DataFrame:
        """The state rows, computed once: data quality, the collect and the lake all read them. A batch small
        enough for data quality's pandas screen is collected as the sinks store it straight away (one Spark job,
        where a checkpoint and then its collect were two), and what still needs a frame reads that Arrow table;
        a larger one is checkpointed, for GX's Spark queries."""
        if self.quality is None or not self.quality.screens(batch.decoded.valid):
            return batch.materialized(state)
        batch.state_rows = self.rules.stored_rows(state).toArrow()
        return frame_of(state.sparkSession, batch.state_rows.select(state.columns), schema=state.schema)

    def _stage_raw(self, batch: _Batch) -> None:
        """A Delta raw layer's files are written by Spark's tasks from here on, on a thread, beside the dedupe and
        data quality (the driver's work, mostly: a second core is put to use), and committed with the lake's
        other layers (``_collect``); files of a batch that never commits are seen by no reader. Once per batch."""
        if self.lake is None or not self.lake.stages_raw or "raw" in batch.starters:
            return
        raw_of = partial(to_raw_rows, batch.decoded.frame, batch.id, self.entity, batch.decoded.read)
        batch.starters["raw"] = partial(self.lake.stage_raw, raw_of, batch.id, batch.stream_id)
        batch.beside["raw"] = InBackground(batch.starters["raw"], "sales-cdc-raw")

    def _may_add_columns(self, batch: _Batch) -> bool:
        return self.entity.on_new_attribute == "add_column" and batch.decoded.unmapped > 0

    def _added_columns(self, batch: _Batch) -> bool:
        """With ``on_new_attribute: add_column``, attributes the contract lacks in the batch's state rows get
        columns (every sink migrated) before the batch is written: then True, and the batch is decoded again."""
        if not self._may_add_columns(batch):
            return False
        fields = new_fields(batch.state, self.entity)
        if not fields:
            return False
        migration = Migration(batch.state.sparkSession, self.warehouse, self.lake, self.job_name)
        self.use(migration.run(with_fields(self.entity, fields),
                               f"automatic (on_new_attribute: add_column, batch {batch.id})",
                               frozenset(f.name for f in fields)))
        return True

    def _validate(self, batch: _Batch) -> None:
        """Data quality: halt (raises, its Data Docs pages written first), or the rows it rejects join the
        quarantine; a batch that goes on has its pages written once it is committed (``_write_docs``)."""
        if self.quality is None or not batch.decoded.valid:
            return
        self.docs_written()  # GX's results store is the pages' source: one batch at a time uses it
        # GX's queries are aggregates: over one partition each is a single stage (no shuffle, no adaptive
        # re-planning), ~0.1 s less per query here; big batches keep a partition per DQ_ROWS_PER_PARTITION rows
        state = batch.state.coalesce(max(1, math.ceil(batch.decoded.valid / DQ_ROWS_PER_PARTITION)))
        # a batch small enough for the pandas screen was collected as the sinks store it (``_state_computed_once``):
        # its state columns are screened, and, when nothing is rejected, the whole is what the sinks get
        stored = batch.state_rows
        outcome = batch.outcome = self.quality.check(
            state, batch.id, publish=False, collected=None if stored is None else stored.select(state.columns),
            materialize=batch.materialized)
        batch.clock.lap("data_quality")
        if outcome.halted:
            self.quality.publish(outcome)  # the halt's message and alert link to its pages
            self._halt(outcome, batch.stream_id, batch.decoded.read)
        if outcome.rejected is not None:
            batch.quarantine = batch.quarantine.unionByName(
                dq_quarantine_rows(batch.events, outcome.rejected, batch.id, self.entity))
            if batch.superseded is not None:
                batch.superseded = without_items_of(batch.superseded, batch.state, outcome.rejected, self.entity.keys)
        # the frame data quality read is coalesced: collected as it is, a batch's state would be one task's result
        # (at 1M events, ~250 MB; lost by the block manager, measured): a clean batch keeps its partitions
        batch.state = outcome.passed if outcome.rejected is not None else batch.state
        batch.state_rows = stored if outcome.rejected is None else None

    def _collect(self, batch: _Batch) -> None:
        """The rows as every sink stores them, collected to Arrow once for both sinks; the lake's write is
        prepared."""
        batch.state = self.rules.stored_rows(batch.state)
        batch.state_rows = batch.state.toArrow() if batch.state_rows is None else batch.state_rows
        batch.quarantine = batch.quarantine.dropDuplicates(list(S.QUARANTINE_IDENTITY))
        # most batches reject nothing: their quarantine is known empty without a Spark job to collect it
        batch.quarantine_rows = batch.quarantine.toArrow() if _rejected_any(batch) else _empty_arrow(batch.quarantine)
        batch.superseded_rows = batch.superseded.toArrow() if batch.superseded is not None else None
        batch.clock.lap("collect")
        if self.lake is not None:
            # The lake is written on a thread while the warehouse stages and merges (PostgreSQL and
            # delta-rs work outside the GIL); the warehouse commits only once the lake has its batch,
            # so a batch in the ledger is in the lake too, and a replay of it can skip everything.
            # (without staged raw files, its raw rows are made there too: for a large batch that is a Spark job,
            # see ``each_record_once``)
            # (raw's staged files, when there are any, are those of the work started last under its name: a
            # retry that starts it again hands the lake the new one)
            staged = (lambda: batch.beside["raw"].result()) if "raw" in batch.starters else None
            without_raw = LakeBatch(batch.id, batch.stream_id, None, Rows(batch.state, batch.state_rows),
                                    Rows(batch.quarantine, batch.quarantine_rows), self.entity.version,
                                    None if batch.superseded is None else Rows(batch.superseded, batch.superseded_rows),
                                    staged)
            batch.starters["lake"] = partial(_write_lake, self.lake, without_raw, batch.decoded, self.entity)

    def _write_sinks(self, batch: _Batch) -> None:
        """The warehouse merge, committed once the work beside it (raw's files, the lake) is done; retried while a sink
        is unreachable; rows the warehouse refuses are quarantined and the rest merged."""
        history = batch.outcome.history(self.job_name, batch.stream_id) if batch.outcome is not None else None
        warehouse_clock = Stopwatch()
        write = partial(self._merge_with_the_rest, batch, history, warehouse_clock)
        what = "writing the batch to the warehouse and the lake"
        try:
            batch.merge = self._retrying(what, write)
        except RowsRefused as refused:
            # quarantined, so that the stream moves on; the lake keeps what it accepted (docs/reliability.md)
            log.warning("batch %s: %s; quarantined, the rest of the batch is merged", batch.id, refused)
            batch.state_rows, refused_rows = split_rows(batch.state_rows, refused.rows)
            batch.superseded_rows = table_without_items_of(batch.superseded_rows, refused_rows, self.entity.keys)
            batch.quarantine_rows = pa.concat_tables([batch.quarantine_rows, warehouse_quarantine_rows(
                batch.events, refused_rows, refused.rows, batch.id, self.entity).cast(batch.quarantine_rows.schema)])
            batch.merge = self._retrying(what, write)
        crash_point("after-warehouse-commit")
        batch.clock.seconds.update({name: work.seconds for name, work in batch.beside.items()})
        batch.clock.seconds["warehouse"] = warehouse_clock.total()
        batch.clock.lap("sinks")

    def _merge_with_the_rest(self, batch: _Batch, history, warehouse_clock: Stopwatch) -> MergeResult:
        """One attempt: start the work beside the merge that has not started (or failed, on a retry), merge,
        and commit only after it is all done."""
        batch.attempts += 1
        for name, start in batch.starters.items():  # (``failed`` waits for the work: asked on a retry only)
            if name not in batch.beside or (batch.attempts > 1 and batch.beside[name].failed):
                batch.beside[name] = InBackground(start, f"sales-cdc-{name}")

        def all_beside_done() -> None:
            for work in batch.beside.values():
                work.result()  # raises its error: the warehouse then rolls the batch back
            crash_point("before-warehouse-commit")

        merge = self.warehouse.merge_batch(
            batch_id=batch.id, stream_id=batch.stream_id, state=batch.state_rows, quarantine=batch.quarantine_rows,
            dq_results=history, before_commit=warehouse_clock.paused(all_beside_done),
            facts=BatchFacts(batch.decoded.read, dict(batch.clock.seconds)), superseded=batch.superseded_rows)
        for work in batch.beside.values():  # an error raises even when the warehouse had nothing to commit
            work.result()
        return merge

    def _finish(self, batch: _Batch) -> BatchResult:
        """The batch's result: counted in the summary, alerted on, logged."""
        outcome, merge, decoded = batch.outcome, batch.merge, batch.decoded
        result = BatchResult(batch.id, decoded.read, decoded.valid - batch.conflicts, decoded.warned, merge,
                             dq_quarantined=outcome.quarantined_rows if outcome else 0,
                             dq_outcome=outcome.outcome if outcome else "not checked",
                             dq_failed_rules=tuple(outcome.failed_rule_names()) if outcome else (),
                             dq_warned_rules=tuple(outcome.failed_rule_names(Severity.WARN)) if outcome else (),
                             seconds=batch.clock.seconds, elapsed_seconds=time.perf_counter() - batch.started,
                             lag_seconds=None if decoded.oldest_event is None
                             else max(0.0, time.time() - decoded.oldest_event))  # (a source clock ahead of ours)
        self.summary.add(result)
        if not merge.replayed:
            self._alert_on_quarantine_share(result, outcome)
            self.metrics.batch(result)
            self._write_docs(batch)
        progress.info(result.progress_line(), extra={"fields": {"batch": result.fields()}})
        return result

    def _write_docs(self, batch: _Batch) -> None:
        """The committed batch's Data Docs pages and summary page, on a thread while the next batch decodes: off
        the critical path (rendering is pure Python, which held the interpreter the collect and the lake needed;
        docs/benchmarks.md). Each is best effort: the ledger, the quarantine and the results history hold the same
        facts, and a crash before the pages are written loses only them."""
        if self.quality is None or self.quality.docs is None:
            return
        quality, outcome, quarantine_at = self.quality, batch.outcome, self._quarantine_at()

        def write() -> None:
            if outcome is not None:
                quality.publish(outcome)
            quality.record_batch(batch.stream_id, batch.id, batch.decoded.read, merge=batch.merge, outcome=outcome,
                                 quarantine_rows=batch.quarantine_rows, quarantine_at=quarantine_at)
        self.docs_written()
        self._docs = InBackground(write, "sales-cdc-docs")

    def _quarantine_at(self) -> list[str]:
        """Where the quarantined records are: the warehouse's table, and the lake's layer."""
        return [self.warehouse.sql.quarantine, *([self.lake.quarantine_uri] if self.lake is not None else [])]

    def _halt(self, outcome: DqOutcome, stream_id: str, events_read: int) -> None:
        """Record the verdict, alert, and stop: raising here keeps Spark from committing the batch."""
        message = self.quality.halt_message(outcome)
        self.quality.record_batch(stream_id, outcome.batch_id, events_read, outcome=outcome)
        try:
            self.warehouse.record_dq_results(outcome.history(self.job_name, stream_id))
        except Exception:  # the halt must still stop the job, with its own message
            log.exception("could not record the halted batch's results in the warehouse")
        self.metrics.halt(outcome.batch_id)
        failed = outcome.failed_rule_names(Severity.HALT)
        self.alerter.send(Alert("halt", self.job_name, outcome.batch_id, f"HALTED by {', '.join(failed)}",
                                {"events_read": events_read}, outcome.failed_rule_names(),
                                outcome.docs_url() or self.summary.docs_url))
        log.error(message)
        self.halt = DataQualityHalt(message)
        raise self.halt

    def _alert_on_quarantine_share(self, result: BatchResult, outcome: DqOutcome | None) -> None:
        if not result.events_read or result.quarantined / result.events_read <= self.options.alert_quarantine_share:
            return
        share = result.quarantined / result.events_read
        docs = outcome.docs_url() if outcome else None
        self.alerter.send(Alert(
            "quarantine_share", self.job_name, result.batch_id,
            f"{result.quarantined} of {result.events_read} events quarantined ({share:.1%})",
            {"events_read": result.events_read, "quarantined_decode": result.decode_quarantined,
             "quarantined_data_quality": result.dq_quarantined, "rows_upserted": result.merge.upserted_rows},
            list(result.dq_failed_rules), docs or self.summary.docs_url))
