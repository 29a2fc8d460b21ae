"""One way from what a user sets to the job's config objects: the command line, the Glue job's arguments and the
demos name their values as :class:`Settings` does (``--lake-root`` on the command line, ``--lake_root`` on Glue,
``lake_root`` here), and :func:`job_config` builds the :class:`~sales_cdc.config.JobConfig` from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_EXPECTATIONS,
    REGION,
    AlertConfig,
    DocsConfig,
    DqConfig,
    JobConfig,
    LakeConfig,
    MetricsConfig,
    SinkConfig,
    WarehouseConfig,
    arn_region,
)
from .schema import EntitySchema


@dataclass(frozen=True)
class Settings:
    """Every setting of the job a user gives, by name, with its default."""

    job_name: str = JobConfig.job_name
    contract_source: str = ""  # where the contract was read: the schema history says so
    db_schema: str = WarehouseConfig.db_schema
    table: str | None = None  # None: the contract's entity name
    soft_delete: bool = SinkConfig.soft_delete
    sink_retry_seconds: float = SinkConfig.retry_seconds
    lake_root: str | None = None  # None: warehouse only
    raw_format: str = LakeConfig.raw_format
    silver_format: str = LakeConfig.silver_format
    quarantine_format: str = LakeConfig.quarantine_format
    dq: bool = True
    expectations_dir: Path = DEFAULT_EXPECTATIONS
    docs_location: str | None = None  # None: no Data Docs site
    docs_index_batches: int = DocsConfig.index_batches
    dq_params: tuple[tuple[str, str], ...] = ()
    dq_result_format: str = DqConfig.result_format
    dq_screen_rows: int = DqConfig.screen_rows
    alert_quarantine_share: float = AlertConfig.quarantine_share
    sns_topic_arn: str | None = None  # None: alerts go to the log
    metrics_namespace: str | None = None  # None: no CloudWatch metrics
    endpoint_url: str | None = None  # a local AWS (a moto server) for the lake, the docs and the alerts
    region: str = REGION

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> Settings:
        """The settings ``values`` names (a parsed command line's ``vars``, say); the others keep their default."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in names})


def lake_options(root: str, endpoint_url: str | None, region: str) -> dict[str, str]:
    """delta-rs's storage options for the lake at ``root``."""
    if endpoint_url:
        from .lake import moto_storage_options

        return moto_storage_options(endpoint_url, region)
    # on S3, delta-rs wants a lock or this: the job is the lake's one writer (a stream never runs two copies)
    return {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"} if root.startswith("s3://") else {}


def job_config(settings: Settings, entity: EntitySchema) -> JobConfig:
    """The batch handler's config for the contract's ``entity``."""
    s = settings
    lake = None
    if s.lake_root:
        lake = LakeConfig(s.lake_root, lake_options(s.lake_root, s.endpoint_url, s.region), raw_format=s.raw_format,
                          silver_format=s.silver_format, quarantine_format=s.quarantine_format)
    sinks = SinkConfig(WarehouseConfig(db_schema=s.db_schema, table=s.table or None), lake,
                       soft_delete=s.soft_delete, retry_seconds=s.sink_retry_seconds)
    dq = None
    if s.dq:
        docs = DocsConfig(s.docs_location or None, s.endpoint_url, s.region, index_batches=s.docs_index_batches)
        dq = DqConfig(expectations_dir=s.expectations_dir, docs=docs, params=s.dq_params,
                      result_format=s.dq_result_format, screen_rows=s.dq_screen_rows)
    topic = s.sns_topic_arn or None  # arn:aws:sns:<region>:<account>:<name>: published in its own region
    alerts = AlertConfig(topic, s.endpoint_url, arn_region(topic) if topic else s.region,
                         quarantine_share=s.alert_quarantine_share)
    metrics = MetricsConfig(s.metrics_namespace or None, s.endpoint_url, s.region)
    return JobConfig(entity, s.job_name, sinks, dq, alerts, metrics, contract_source=s.contract_source)
