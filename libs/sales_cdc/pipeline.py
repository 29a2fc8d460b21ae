"""The micro-batch handler: the same function for the local job and for Glue.

``handler = BatchHandler(warehouse=..., job_name=...)`` is passed to ``foreachBatch`` /
``glueContext.forEachBatch``; tests call ``handler(static_df, batch_id)`` directly.

Every step is safe to repeat: Spark (and Glue's ``batchMaxRetries``) re-run a batch whose
checkpoint commit did not happen; the warehouse ledger turns that replay into a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from . import schema as S
from .decode import decode_pipe_records, split_decoded
from .lake import DeltaLake
from .transforms import latest_per_key, to_raw_rows, to_state_rows
from .warehouse.base import MergeResult, Warehouse

log = logging.getLogger(__name__)

# Spark sets this local property on the thread that runs foreachBatch: the query id stays the same
# across restarts from one checkpoint and changes with a new checkpoint, so (stream id, batch id)
# names a batch uniquely even when a user starts over with a fresh checkpoint.
QUERY_ID_PROPERTY = "sql.streaming.queryId"


@dataclass(frozen=True)
class BatchResult:
    batch_id: int
    events_read: int
    events_valid: int
    events_with_warnings: int
    merge: MergeResult

    @property
    def quarantined(self) -> int:
        return self.events_read - self.events_valid


@dataclass
class RunSummary:
    batches: list[BatchResult] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.batches.append(result)

    def totals(self) -> dict[str, int]:
        applied = [b for b in self.batches if not b.merge.replayed]
        return {
            "batches": len(self.batches),
            "batches replayed (skipped)": len(self.batches) - len(applied),
            "events read": sum(b.events_read for b in self.batches),
            "events quarantined": sum(b.quarantined for b in applied),
            "events with warnings": sum(b.events_with_warnings for b in applied),
            "rows upserted": sum(b.merge.upserted_rows for b in applied),
            "rows deleted": sum(b.merge.deleted_rows for b in applied),
            "events superseded in their batch": sum(b.events_valid - b.merge.staged_rows for b in applied),
            "stale events ignored (older than stored)": sum(b.merge.stale_rows for b in applied),
        }


class BatchHandler:
    """decode -> quarantine split -> latest per key -> warehouse merge, for one micro-batch."""

    def __init__(self, *, warehouse: Warehouse, lake: DeltaLake | None = None, entity: S.EntitySchema = S.ORDERS,
                 default_stream_id: str = "static", summary: RunSummary | None = None):
        self.warehouse = warehouse
        self.lake = lake
        self.entity = entity
        self.default_stream_id = default_stream_id
        self.summary = summary if summary is not None else RunSummary()

    def _stream_id(self, batch_df: DataFrame) -> str:
        query_id = batch_df.sparkSession.sparkContext.getLocalProperty(QUERY_ID_PROPERTY)
        return query_id or self.default_stream_id

    def __call__(self, batch_df: DataFrame, batch_id: int) -> BatchResult:
        stream_id = self._stream_id(batch_df)
        decoded = decode_pipe_records(batch_df, self.entity).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = decoded.agg(
                F.count(F.lit(1)).alias("read"),
                F.count_if(F.size(S.CDC_ERRORS) == 0).alias("valid"),
                F.count_if((F.size(S.CDC_ERRORS) == 0) & (F.size(S.CDC_WARNINGS) > 0)).alias("warned"),
            ).first()
            events, quarantine = split_decoded(decoded, batch_id, self.entity)
            state = to_state_rows(latest_per_key(events, self.entity.key), batch_id, self.entity).toArrow()
            quarantine_rows = quarantine.toArrow()
            if self.lake is not None:  # lake first: both sinks skip what they already hold on a replay
                self.lake.write_batch(batch_id=batch_id, stream_id=stream_id,
                                      raw=to_raw_rows(decoded, batch_id, self.entity).toArrow(),
                                      state=state, quarantine=quarantine_rows)
            merge = self.warehouse.merge_batch(
                batch_id=batch_id, stream_id=stream_id, state=state, quarantine=quarantine_rows)
        finally:
            decoded.unpersist()
        result = BatchResult(batch_id, counts["read"], counts["valid"], counts["warned"], merge)
        self.summary.add(result)
        log.info("batch %s: read=%s valid=%s quarantined=%s upserted=%s deleted=%s stale=%s replayed=%s",
                 batch_id, result.events_read, result.events_valid, result.quarantined, merge.upserted_rows,
                 merge.deleted_rows, merge.stale_rows, merge.replayed)
        return result
