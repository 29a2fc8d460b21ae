"""Per-batch CloudWatch metrics: what the dashboard draws and the alarms watch (docs/operations.md).

One ``PutMetricData`` call per committed batch (a batch takes seconds to minutes, so the cost is a few calls a
minute), with the job's name as the dimension; a halt adds one ``Halts`` data point. Like the alerts, metrics are
best effort: a failed call is logged and the batch goes on (the ledger and the log hold the same counts).

The names here are the ones the CloudFormation template's dashboard and alarms use (a test holds them equal).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from .results import BatchResult

log = logging.getLogger(__name__)

NAMESPACE = "SalesCdc"  # the default; the job's role may publish to this namespace only
JOB_DIMENSION = "JobName"
STAGE_DIMENSION = "Stage"
STAGE_SECONDS = "StageSeconds"  # per stage of the batch (decode, dedupe, data_quality, collect, sinks, ...)
HALTS = "Halts"  # 1 when a data-quality halt stopped the job
PER_CALL = 20  # the data points one PutMetricData call carried before 2023's raise: safe everywhere


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    meaning: str
    value: Callable[[BatchResult], float | None]  # None: not published for this batch


BATCH_METRICS: tuple[Metric, ...] = (
    Metric("BatchesCommitted", "Count", "1 per batch the job committed (a replay skipped is not counted)",
           lambda r: 1),
    Metric("EventsRead", "Count", "stream records the batch read", lambda r: r.events_read),
    Metric("EventsQuarantined", "Count", "events quarantined at decode and by data quality (the share alert's "
           "numerator)", lambda r: r.quarantined),
    Metric("QuarantineRows", "Count", "quarantine rows the batch wrote, every stage's (the warehouse's refusals "
           "too)", lambda r: r.merge.quarantined_rows),
    Metric("RowsUpserted", "Count", "rows inserted or updated in the warehouse", lambda r: r.merge.upserted_rows),
    Metric("RowsDeleted", "Count", "rows deleted (or marked deleted)", lambda r: r.merge.deleted_rows),
    Metric("StaleEvents", "Count", "events older than the stored row, ignored", lambda r: r.merge.stale_rows),
    Metric("BatchesWithWarnings", "Count", "1 when a warn-severity rule failed in the batch",
           lambda r: int(bool(r.dq_warned_rules))),
    Metric("BatchSeconds", "Seconds", "the batch's wall time", lambda r: r.elapsed_seconds),
    Metric("EventLagSeconds", "Seconds", "age of the batch's oldest event when the batch was committed",
           lambda r: r.lag_seconds),
)


class CloudWatchMetrics:
    """Publishes a job's batches to CloudWatch (a moto server locally)."""

    def __init__(self, cloudwatch, job_name: str, namespace: str = NAMESPACE):
        self.cloudwatch, self.job_name, self.namespace = cloudwatch, job_name, namespace

    def batch(self, result: BatchResult) -> None:
        points = [self._point(m.name, m.unit, value) for m in BATCH_METRICS if (value := m.value(result)) is not None]
        points += [self._point(STAGE_SECONDS, "Seconds", seconds, stage=stage)
                   for stage, seconds in result.seconds.items()]
        self._put(points, f"batch {result.batch_id}")

    def halt(self, batch_id: int) -> None:
        self._put([self._point(HALTS, "Count", 1)], f"the halt of batch {batch_id}")

    def _point(self, name: str, unit: str, value: float, stage: str | None = None) -> dict:
        dimensions = [{"Name": JOB_DIMENSION, "Value": self.job_name}]
        if stage is not None:
            dimensions.append({"Name": STAGE_DIMENSION, "Value": stage})
        return {"MetricName": name, "Dimensions": dimensions, "Unit": unit, "Value": float(value),
                "Timestamp": datetime.now(UTC)}

    def _put(self, points: list[dict], what: str) -> None:
        try:
            for start in range(0, len(points), PER_CALL):
                self.cloudwatch.put_metric_data(Namespace=self.namespace, MetricData=points[start:start + PER_CALL])
        except (BotoCoreError, ClientError) as exc:
            log.warning("could not publish the metrics of %s to CloudWatch (%s): the ledger still has its counts",
                        what, str(exc).splitlines()[0])


class NoMetrics:
    """No namespace configured (the local default): the progress line and the ledger carry the counts."""

    def batch(self, result: BatchResult) -> None:
        pass

    def halt(self, batch_id: int) -> None:
        pass


Metrics = CloudWatchMetrics | NoMetrics
