"""Alerts through SNS: a data-quality halt, or a batch with too large a quarantined share.

Alerts are best effort: a failed publish is logged and the batch goes on (the results history table
and the job log hold the same facts). Messages are JSON so a subscriber (email, chatbot, Lambda) can
both read and parse them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

SUBJECT_LIMIT = 100  # SNS rejects longer subjects


@dataclass(frozen=True)
class Alert:
    kind: str  # "halt" or "quarantine_share"
    job_name: str
    batch_id: int
    summary: str
    counts: dict[str, int]
    failed_rules: list[str]
    docs_url: str | None = None

    def subject(self) -> str:
        text = f"[sales-cdc] {self.job_name} batch {self.batch_id}: {self.summary}"
        return text if len(text) <= SUBJECT_LIMIT else text[: SUBJECT_LIMIT - 1] + "…"

    def body(self) -> dict[str, Any]:
        return {"kind": self.kind, "job": self.job_name, "batch_id": self.batch_id, "summary": self.summary,
                "counts": self.counts, "failed_rules": self.failed_rules, "docs_url": self.docs_url}


class SnsAlerter:
    def __init__(self, sns_client, topic_arn: str):
        self.sns = sns_client
        self.topic_arn = topic_arn

    def send(self, alert: Alert) -> bool:
        try:
            self.sns.publish(TopicArn=self.topic_arn, Subject=alert.subject(),
                             Message=json.dumps(alert.body(), indent=2, default=str),
                             MessageAttributes={"kind": {"DataType": "String", "StringValue": alert.kind}})
        except (BotoCoreError, ClientError) as exc:
            log.error("could not publish the %s alert of batch %s to %s: %s", alert.kind, alert.batch_id,
                      self.topic_arn, exc)
            return False
        log.info("alert sent: %s", alert.subject())
        return True


class LogAlerter:
    """No topic configured: alerts go to the job log only (one line; the JSON log carries the whole message)."""

    def send(self, alert: Alert) -> bool:
        log.warning("ALERT %s", alert.subject(), extra={"fields": {"alert": alert.body()}})
        return True
