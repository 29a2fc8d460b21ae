"""Glue 6.0 streaming job wiring. ``awsglue`` is never imported here: ``jobs/glue_job.py`` passes in
``getResolvedOptions`` and the ``GlueContext``, so this module runs (and is tested) without Glue.

The micro-batch function is the same :class:`~sales_cdc.pipeline.BatchHandler` the local job uses.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import schema as S
from .config import (
    DEFAULT_EXPECTATIONS,
    AlertConfig,
    DocsConfig,
    DqConfig,
    JobConfig,
    KinesisConfig,
    LakeConfig,
    SinkConfig,
    WarehouseConfig,
    arn_region,
)
from .contract import DEFAULT_CONTRACT, Contract, load_contract
from .metrics import NAMESPACE as METRICS_NAMESPACE
from .settings import Settings
from .settings import job_config as settings_job_config
from .sources import source_columns
from .sql import Dialect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GlueParam:
    name: str
    default: str | None  # None: required
    meaning: str


GLUE_PARAMS: tuple[GlueParam, ...] = (
    GlueParam("stream_arn", None, "ARN of the Kinesis stream kinesis-for-sales-data"),
    GlueParam("checkpoint_location", None, "s3:// prefix of the Spark checkpoint (the resume point)"),
    GlueParam("starting_position", KinesisConfig.starting_position,
              "TRIM_HORIZON, LATEST or a UTC timestamp (first start only)"),
    GlueParam("window_size", "100 seconds", "micro-batch window of glueContext.forEachBatch"),
    GlueParam("max_records_per_shard", str(KinesisConfig.max_records_per_shard),
              "Kinesis records per shard per micro-batch (Glue's maxFetchRecordsPerShard)"),
    GlueParam("batch_max_retries", "3", "Glue retries of a failed micro-batch (replays are no-ops)"),
    GlueParam("sink_retry_seconds", str(int(SinkConfig.retry_seconds)),
              "an unreachable warehouse or lake is retried this long, with backoff, before the batch fails"),
    GlueParam("lake_root", "", "s3://bucket/prefix of the lake; empty: warehouse only"),
    *(GlueParam(f"{layer}_format", getattr(LakeConfig, f"{layer}_format"), f"{layer} layer: delta or parquet")
      for layer in ("raw", "silver", "quarantine")),
    GlueParam("soft_delete", str(SinkConfig.soft_delete).lower(),
              "true: keep deleted items with is_deleted / deleted_at"),
    GlueParam("warehouse", "redshift", "redshift (Data API) or postgres (e.g. RDS; URL from Secrets Manager)"),
    GlueParam("redshift_workgroup", "", "Redshift Serverless workgroup"),
    GlueParam("redshift_database", "sales", "Redshift database (the stack creates `sales`)"),
    GlueParam("redshift_secret_arn", "", "Secrets Manager secret with Redshift credentials; empty (the deployed "
              "job): the job role's own database user IAMR:<role>, created by the deploy"),
    GlueParam("redshift_copy_role_arn", "", "IAM role Redshift assumes to COPY the staged Parquet"),
    GlueParam("redshift_staging_uri", "", "s3:// prefix where batches are staged for COPY"),
    GlueParam("postgres_secret_arn", "", "warehouse=postgres: secret whose value is the PostgreSQL URL"),
    GlueParam("contract_uri", "", "s3:// URI of the table contract (deploy uploads it); empty: the packaged "
              "default, the tutorial's OrdersRawTable"),
    GlueParam("db_schema", WarehouseConfig.db_schema, "warehouse schema"),
    GlueParam("table", "", "current-state table; empty: the contract's entity (orders)"),
    GlueParam("dq", "true", "false: skip the Great Expectations validation"),
    GlueParam("expectations_uri", "", "s3:// prefix of the expectations/ project (deploy uploads it)"),
    GlueParam("docs_location", "", "s3://bucket/prefix of the Data Docs site; empty: no docs"),
    GlueParam("docs_index_batches", str(DocsConfig.index_batches), "the Data Docs index lists this many batches"),
    GlueParam("dq_params", "{}", "values of the suites' $PARAMETERs as a JSON object, e.g. "
              '{"price_ceiling": "5000"}; a parameter not given keeps its suite\'s default'),
    GlueParam("dq_result_format", DqConfig.result_format, "GX result format: SUMMARY or BOOLEAN_ONLY"),
    GlueParam("dq_screen_rows", str(DqConfig.screen_rows), "a batch of up to this many valid events is validated "
              "on GX's pandas engine first (faster); 0: always on Spark"),
    GlueParam("alert_quarantine_share", str(AlertConfig.quarantine_share),
              "alert when a batch quarantines more than this share"),
    GlueParam("sns_topic_arn", "", "SNS topic for alerts; empty: log only"),
    GlueParam("metrics_namespace", METRICS_NAMESPACE, "CloudWatch namespace of the per-batch metrics (the "
              "dashboard's and the alarms'); empty: none"),
)


def defaults(params: tuple[GlueParam, ...]) -> dict[str, str]:
    return {p.name: p.default for p in params if p.default is not None}


DEFAULTS = defaults(GLUE_PARAMS)


def resolve_args(argv: list[str], get_resolved_options: Callable[[list[str], list[str]], dict[str, str]],
                 params: tuple[GlueParam, ...] = GLUE_PARAMS) -> dict[str, str]:
    """Every parameter of ``params`` with its default. ``getResolvedOptions`` fails on an option that is absent,
    so it is asked only for the required ones and those present in ``argv``."""
    present = {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    missing = [p.name for p in params if p.default is None and p.name not in present]
    if missing:
        raise SystemExit(f"missing job parameter(s): {', '.join('--' + m for m in missing)}")
    names = ["JOB_NAME"] + [p.name for p in params if p.name in present]
    return {**defaults(params), **get_resolved_options(argv, names)}


def _flag(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {value!r}")
    return value.lower() == "true"


def kinesis_connection_options(args: dict[str, str]) -> dict[str, str]:
    """Glue's native Kinesis source (docs/design.md §4). ``dynamodb`` is read as text, so every attribute of
    the images reaches the decoder unchanged, whatever schema the first records suggested."""
    return {
        "streamARN": args["stream_arn"],
        "classification": "json",
        "inferSchema": "false",
        "schema": "eventID STRING, eventName STRING, eventVersion STRING, eventSource STRING, "
                  "awsRegion STRING, eventSourceARN STRING, dynamodb STRING",
        "startingPosition": args["starting_position"],
        "maxFetchRecordsPerShard": args["max_records_per_shard"],
        "addRecordTimestamp": "true",
        "emitConsumerLagMetrics": "true",
        "avoidEmptyBatches": "true",
    }


ENVELOPE = ("eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "eventSourceARN")


def to_source_rows(frame: DataFrame) -> DataFrame:
    """Glue's parsed Kinesis frame -> ``schema.SOURCE_FIELDS`` (the payload rebuilt losslessly: the
    envelope's scalars re-encoded, ``dynamodb`` spliced in as the raw JSON text it was read as)."""
    fields = {f.name: f.dataType for f in frame.schema.fields}
    envelope = [F.col(c) for c in ENVELOPE if c in fields]
    if isinstance(fields.get("dynamodb"), T.StringType):
        frame = frame.withColumn("_envelope", F.to_json(F.struct(*envelope)))
        payload = F.when(F.col("dynamodb").isNull(), F.col("_envelope")).otherwise(F.concat(
            F.expr("substring(_envelope, 1, length(_envelope) - 1)"),  # drop the closing brace
            F.lit(',"dynamodb":'), F.col("dynamodb"), F.lit("}")))
    else:  # a struct (schema inferred by Glue): re-encode it
        payload = F.to_json(F.struct(*envelope, *([F.col("dynamodb")] if "dynamodb" in fields else [])))
    arrival = F.lit(None)
    if "__src_timestamp" in fields:
        ts = F.col("__src_timestamp")
        arrival = F.timestamp_millis(ts.cast("long")) if not isinstance(fields["__src_timestamp"], T.TimestampType) \
            else ts
    return frame.select(*source_columns(payload, {S.SOURCE_ARRIVAL_TIME: arrival}))


def fetch_expectations(s3, uri: str, destination: Path) -> Path:
    """Copy the GX project's suites from ``s3://bucket/prefix`` (``<prefix>/expectations/*.json``)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    paginator = s3.get_paginator("list_objects_v2")
    count = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/expectations/"):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".json"):
                target = destination / "expectations" / item["Key"].rsplit("/", 1)[-1]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))
                count += 1
    if not count:
        raise SystemExit(f"no expectation suites under {uri}/expectations/")
    return destination


def contract_at(s3, uri: str, destination: Path) -> Contract:
    """The contract at ``s3://bucket/key`` (checked as the local job checks it); empty ``uri``: the packaged
    default (the tutorial's OrdersRawTable)."""
    if not uri:
        return load_contract(DEFAULT_CONTRACT)
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    target = destination / key.rsplit("/", 1)[-1]
    s3.download_file(bucket, key, str(target))
    return load_contract(target)


def dq_params(text: str) -> tuple[tuple[str, str], ...]:
    """``--dq_params`` (a JSON object of name -> value) as ``DqConfig.params``."""
    try:
        values = json.loads(text or "{}")
    except ValueError:
        values = None
    if not isinstance(values, dict):
        raise SystemExit(f"--dq_params must be a JSON object such as {{\"price_ceiling\": \"5000\"}}, not {text!r}")
    return tuple((name, str(value)) for name, value in values.items())


def job_config(args: dict[str, str], expectations_dir: Path | None, entity: S.EntitySchema) -> JobConfig:
    """The job's settings from Glue's text arguments (named as :class:`Settings` names them)."""
    text = {name: args[name] or None
            for name in ("table", "lake_root", "docs_location", "sns_topic_arn", "metrics_namespace")}
    settings = Settings.of({
        **text, "job_name": args["JOB_NAME"],
        "contract_source": args["contract_uri"] or "the packaged default contract",
        "db_schema": args["db_schema"], "soft_delete": _flag(args["soft_delete"]), "dq": _flag(args["dq"]),
        "sink_retry_seconds": float(args["sink_retry_seconds"]), "docs_index_batches": int(args["docs_index_batches"]),
        **{f"{layer}_format": args[f"{layer}_format"] for layer in ("raw", "silver", "quarantine")},
        "expectations_dir": expectations_dir or DEFAULT_EXPECTATIONS, "dq_params": dq_params(args["dq_params"]),
        "dq_result_format": args["dq_result_format"], "dq_screen_rows": int(args["dq_screen_rows"]),
        "alert_quarantine_share": float(args["alert_quarantine_share"]),
        "region": arn_region(args["stream_arn"])})  # the stream's: the job's own (metrics, docs, the lake)
    return settings_job_config(settings, entity)


def redshift_warehouse(args: dict[str, str], config: JobConfig, data_api, s3):
    from .job import merge_sql
    from .warehouse.redshift import DataApiConnection, RedshiftDataApiWarehouse, RedshiftTarget

    connection = DataApiConnection(args["redshift_database"], workgroup_name=args["redshift_workgroup"] or None,
                                   secret_arn=args["redshift_secret_arn"] or None)
    target = RedshiftTarget(connection, args["redshift_copy_role_arn"], args["redshift_staging_uri"])

    return RedshiftDataApiWarehouse(data_api, s3, merge_sql(Dialect.REDSHIFT, config), config.job_name, target)


REDSHIFT_PARAMS = ("redshift_workgroup", "redshift_copy_role_arn", "redshift_staging_uri")


def warehouse_for(args: dict[str, str], config: JobConfig, clients: Callable[[str], Any]):
    if args["warehouse"] == "postgres":
        from .job import postgres_warehouse

        if not args["postgres_secret_arn"]:
            raise SystemExit("warehouse=postgres needs --postgres_secret_arn")
        secret = clients("secretsmanager").get_secret_value(SecretId=args["postgres_secret_arn"])["SecretString"]
        url = json.loads(secret)["url"] if secret.lstrip().startswith("{") else secret
        return postgres_warehouse(url, config)  # creates the tables
    if args["warehouse"] != "redshift":
        raise SystemExit(f"--warehouse must be redshift or postgres, not {args['warehouse']!r}")
    missing = [p for p in REDSHIFT_PARAMS if not args[p]]
    if missing:
        raise SystemExit(f"warehouse=redshift needs {', '.join('--' + m for m in missing)}")
    warehouse = redshift_warehouse(args, config, clients("redshift-data"), clients("s3"))
    warehouse.ensure_tables()
    return warehouse


def run(glue_context: Any, args: dict[str, str], clients: Callable[[str], Any]) -> None:
    """Build everything once, then hand the same batch handler to ``glueContext.forEachBatch``."""
    from .job import run_job, tune_session

    tune_session(glue_context.spark_session)
    workdir = Path(tempfile.mkdtemp(prefix="sales-cdc-"))
    expectations = fetch_expectations(clients("s3"), args["expectations_uri"], workdir / "expectations") \
        if _flag(args["dq"]) and args["expectations_uri"] else None
    entity = contract_at(clients("s3"), args["contract_uri"], workdir).entity
    config = job_config(args, expectations, entity)

    def run_query(handler) -> None:
        frame = glue_context.create_data_frame.from_options(
            connection_type="kinesis", connection_options=kinesis_connection_options(args),
            transformation_ctx=config.entity.name)
        log.info("starting: stream %s, checkpoint %s, window %s", args["stream_arn"], args["checkpoint_location"],
                 args["window_size"])
        glue_context.forEachBatch(frame=to_source_rows(frame), batch_function=handler,
                                  options={"windowSize": args["window_size"],
                                           "checkpointLocation": args["checkpoint_location"],
                                           "batchMaxRetries": args["batch_max_retries"]})

    run_job(glue_context.spark_session, config, warehouse_for(args, config, clients), run_query)
