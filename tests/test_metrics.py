"""Per-batch CloudWatch metrics (sales_cdc.metrics) on a moto server (the template's dashboard and alarms over
them: tests/test_infra.py)."""

from __future__ import annotations

import logging
import uuid

import boto3
from botocore.config import Config

from sales_cdc import metrics as M
from sales_cdc.results import BatchResult
from sales_cdc.warehouse.base import MergeResult
from sales_cdc_local.verify import cloudwatch_sums

MERGE = MergeResult(batch_id=7, staged_rows=40, upserted_rows=35, deleted_rows=3, stale_rows=2, quarantined_rows=9,
                    snapshot_rows=0, snapshot_loaded_rows=0, snapshot_quarantined_rows=0, replayed=False)
RESULT = BatchResult(7, events_read=50, events_valid=46, events_with_warnings=1, merge=MERGE, dq_quarantined=3,
                     dq_outcome="warned", dq_failed_rules=("price_ceiling",), dq_warned_rules=("price_ceiling",),
                     seconds={"decode": 0.5, "sinks": 1.25}, elapsed_seconds=2.5, lag_seconds=12.0)


def test_a_batch_s_counts_and_a_halt_reach_cloudwatch(moto):
    cloudwatch, namespace = moto.client("cloudwatch"), f"SalesCdcTest{uuid.uuid4().hex[:8]}"
    publisher = M.CloudWatchMetrics(cloudwatch, "orders-job", namespace)
    publisher.batch(RESULT)
    publisher.halt(8)
    assert cloudwatch_sums(cloudwatch, namespace, "orders-job") == {
        "BatchesCommitted": 1, "EventsRead": 50, "EventsQuarantined": 7, "QuarantineRows": 9, "RowsUpserted": 35,
        "RowsDeleted": 3, "StaleEvents": 2, "BatchesWithWarnings": 1, "BatchSeconds": 2.5, "EventLagSeconds": 12.0,
        "StageSeconds:decode": 0.5, "StageSeconds:sinks": 1.25, M.HALTS: 1}


def test_a_batch_without_event_times_publishes_no_lag(moto):
    cloudwatch, namespace = moto.client("cloudwatch"), f"SalesCdcTest{uuid.uuid4().hex[:8]}"
    M.CloudWatchMetrics(cloudwatch, "orders-job", namespace).batch(
        BatchResult(1, 0, 0, 0, MERGE, lag_seconds=None))
    assert "EventLagSeconds" not in cloudwatch_sums(cloudwatch, namespace, "orders-job")


def test_cloudwatch_out_of_reach_is_one_warning_and_the_batch_goes_on(caplog):
    unreachable = boto3.client("cloudwatch", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
                               aws_access_key_id="x", aws_secret_access_key="x",
                               config=Config(retries={"total_max_attempts": 1}, connect_timeout=2))
    with caplog.at_level(logging.WARNING, logger=M.__name__):
        M.CloudWatchMetrics(unreachable, "orders-job").batch(RESULT)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "could not publish the metrics of batch 7" in caplog.text and "\n" not in caplog.records[0].getMessage()
