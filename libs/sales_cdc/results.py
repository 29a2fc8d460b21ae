"""What a batch did (:class:`BatchResult`) and what a run did (:class:`RunSummary`): the counts the job logs,
prints, alerts on and the benchmarks read."""

from __future__ import annotations

from dataclasses import dataclass, field

from .warehouse.base import MergeResult


def duration(seconds: float) -> str:
    """A duration as a person reads it: 4.2 s, 12 min, 5.0 h, 3.1 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}" if unit == "min" else f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


@dataclass(frozen=True)
class BatchResult:
    batch_id: int
    events_read: int
    events_valid: int  # decoded without errors
    events_with_warnings: int
    merge: MergeResult
    dq_quarantined: int = 0  # latest-per-key rows rejected by a data-quality rule
    dq_outcome: str = "not checked"  # passed, warned, quarantined, replayed (skipped); a halt raises instead
    dq_failed_rules: tuple[str, ...] = ()
    dq_warned_rules: tuple[str, ...] = ()  # of those, the warn rules: a batch with warnings, whatever its outcome
    # per stage, for logs and benchmarks; "lake" and "warehouse" overlap (their wall time is "sinks"), and
    # "raw" (a Delta raw layer's files, written from the decode on) runs beside the steps after the decode
    seconds: dict[str, float] = field(default_factory=dict)
    elapsed_seconds: float = 0.0  # the whole batch, wall time
    lag_seconds: float | None = None  # the age of its oldest event when the batch committed (None: no event time)

    @property
    def decode_quarantined(self) -> int:
        return self.events_read - self.events_valid

    @property
    def quarantined(self) -> int:
        return self.decode_quarantined + self.dq_quarantined

    def fields(self) -> dict:
        """The batch as the metrics and the JSON log carry it."""
        merge = self.merge
        return {"batch_id": self.batch_id, "events_read": self.events_read, "replayed": merge.replayed,
                "quarantined_decode": self.decode_quarantined, "quarantined_data_quality": self.dq_quarantined,
                "quarantine_rows": merge.quarantined_rows,  # what the quarantine took, every stage's
                "rows_upserted": merge.upserted_rows, "rows_deleted": merge.deleted_rows,
                "stale_events": merge.stale_rows, "dq_outcome": self.dq_outcome,
                "dq_failed_rules": list(self.dq_failed_rules),
                "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
                "seconds": {"batch": round(self.elapsed_seconds, 3),
                            **{stage: round(s, 3) for stage, s in self.seconds.items()}}}

    def progress_line(self) -> str:
        """The one line a person reads per batch."""
        if self.merge.replayed:
            return f"batch {self.batch_id}: already committed, skipped (a replay)"
        merge = self.merge
        stages = ", ".join(f"{stage} {s:.2f}" for stage, s in self.seconds.items())
        return (f"batch {self.batch_id}: {self.events_read} events, {self.quarantined} quarantined "
                f"(decode {self.decode_quarantined}, data quality {self.dq_quarantined}), "
                f"{merge.upserted_rows} upserted, {merge.deleted_rows} deleted, {merge.stale_rows} stale; "
                f"data quality {self.dq_outcome}; {self.elapsed_seconds:.2f} s ({stages})"
                + ("" if self.lag_seconds is None else f"; lag {duration(self.lag_seconds)}"))


@dataclass
class RunSummary:
    batches: list[BatchResult] = field(default_factory=list)
    docs_url: str | None = None  # the Data Docs site, when data quality is on

    def add(self, result: BatchResult) -> None:
        self.batches.append(result)

    def totals(self) -> dict[str, int]:
        applied = [b for b in self.batches if not b.merge.replayed]
        return {
            "batches": len(self.batches),
            "batches replayed (skipped)": len(self.batches) - len(applied),
            "events read": sum(b.events_read for b in self.batches),
            "events quarantined (decode)": sum(b.decode_quarantined for b in applied),
            "events quarantined (data quality)": sum(b.dq_quarantined for b in applied),
            "batches with data-quality warnings": sum(bool(b.dq_warned_rules) for b in applied),
            "events with decode warnings": sum(b.events_with_warnings for b in applied),
            "rows upserted": sum(b.merge.upserted_rows for b in applied),
            "rows deleted": sum(b.merge.deleted_rows for b in applied),
            "events superseded in their batch": sum(b.events_valid - b.dq_quarantined - b.merge.staged_rows
                                                    for b in applied),
            "stale events ignored (older than stored)": sum(b.merge.stale_rows for b in applied),
            **self._snapshot_totals(applied),
        }

    @staticmethod
    def _snapshot_totals(applied: list[BatchResult]) -> dict[str, int]:
        """A backfill's part (merge rule 6), when the run read one; of "rows upserted" and "stale events"."""
        if not any(b.merge.snapshot_rows or b.merge.snapshot_quarantined_rows for b in applied):
            return {}
        loaded = sum(b.merge.snapshot_loaded_rows for b in applied)
        return {"backfill rows loaded": loaded,
                "backfill rows skipped (a stored row is as new or newer)":
                    sum(b.merge.snapshot_rows for b in applied) - loaded,
                "backfill records quarantined": sum(b.merge.snapshot_quarantined_rows for b in applied)}
