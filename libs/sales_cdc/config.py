"""Job configuration: every parameter, its type and its default, in one place.

The local CLI and (later) the Glue entry script both build a :class:`JobConfig`; library code takes
only the values it needs from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from .schema import EntitySchema, check_identifier

FORMATS = ("delta", "parquet")


@dataclass(frozen=True)
class LakeConfig:
    root: str
    storage_options: dict[str, str] = field(default_factory=dict)
    target_file_size: int = 128 * 1024 * 1024
    # per layer: "delta" (delta-rs, transactional MERGE) or "parquet" (Spark's own writer, see lake_parquet)
    raw_format: str = "delta"
    silver_format: str = "delta"
    quarantine_format: str = "delta"

    def __post_init__(self) -> None:
        for layer in ("raw", "silver", "quarantine"):
            if getattr(self, f"{layer}_format") not in FORMATS:
                raise ValueError(f"{layer}_format must be one of {FORMATS}")

    @property
    def parquet_layers(self) -> list[str]:
        return [layer for layer in ("raw", "silver", "quarantine") if getattr(self, f"{layer}_format") == "parquet"]


@dataclass(frozen=True)
class WarehouseConfig:
    url: str | None = None  # None: the local harness starts an embedded PostgreSQL
    db_schema: str = "sales"
    table: str | None = None  # None: the entity's name (``orders`` for the default contract)

    def __post_init__(self) -> None:
        check_identifier(self.db_schema)
        if self.table is not None:
            check_identifier(self.table)


@dataclass(frozen=True)
class KinesisConfig:
    """The local Kinesis source (``kinesis_source``); Glue maps the same values to its native source."""

    stream_name: str = "kinesis-for-sales-data"
    endpoint_url: str | None = None  # None: the AWS default endpoint
    region: str = "us-east-1"
    starting_position: str = "TRIM_HORIZON"  # TRIM_HORIZON | LATEST | AT_TIMESTAMP
    starting_timestamp: str | None = None
    max_records_per_shard: int = 100_000  # as Glue's own maxFetchRecordsPerShard, which this sets on Glue

    def __post_init__(self) -> None:
        if self.starting_position not in ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"):
            raise ValueError("starting_position must be TRIM_HORIZON, LATEST or AT_TIMESTAMP")
        if self.max_records_per_shard < 1:
            raise ValueError("max_records_per_shard must be >= 1")

    def spark_options(self) -> dict[str, str]:
        options = {"streamName": self.stream_name, "region": self.region,
                   "startingPosition": self.starting_position, "maxRecordsPerShard": str(self.max_records_per_shard)}
        if self.endpoint_url:
            options["endpointUrl"] = self.endpoint_url
        if self.starting_timestamp:
            options["startingTimestamp"] = self.starting_timestamp
        return options


@dataclass(frozen=True)
class DqConfig:
    """Data quality: the GX project, the values its ``$PARAMETER`` placeholders take, docs and alerts."""

    expectations_dir: Path = Path("expectations")  # a GX project; suites in <dir>/expectations/*.json
    docs_location: str | None = None  # a folder or s3://bucket/prefix; None: no Data Docs site
    docs_endpoint_url: str | None = None  # S3 endpoint for the docs (a moto server locally)
    docs_index_batches: int = 100  # the docs index lists this many latest batches; every page stays
    region: str = "us-east-1"
    # values of the suites' business $PARAMETERs, as (name, text): each overrides the default the suite file
    # gives in meta.parameters; a number is used as a Decimal
    params: tuple[tuple[str, str], ...] = ()
    min_event_time: datetime = datetime(2015, 1, 1, tzinfo=UTC)  # before DynamoDB Streams existed
    max_clock_skew: timedelta = timedelta(hours=1)  # max_event_time = validation time, up to the hour, + this
    result_format: str = "SUMMARY"  # GX result format: BOOLEAN_ONLY is faster, SUMMARY shows failing values
    alert_quarantine_share: float = 0.05  # alert when more than this share of a batch is quarantined
    sns_topic_arn: str | None = None  # alerts; None: log only
    sns_endpoint_url: str | None = None

    def __post_init__(self) -> None:
        if self.result_format not in ("BOOLEAN_ONLY", "BASIC", "SUMMARY"):
            raise ValueError("result_format must be BOOLEAN_ONLY, BASIC or SUMMARY (COMPLETE collects every row)")
        if not 0 <= self.alert_quarantine_share <= 1:
            raise ValueError("alert_quarantine_share must be between 0 and 1")
        if self.docs_index_batches < 1:
            raise ValueError("docs_index_batches must be at least 1")
        for name, _ in self.params:
            check_identifier(name)

    def parameters(self, now: datetime) -> dict[str, object]:
        """Values of the suites' ``$PARAMETER`` placeholders for a batch validated at ``now``.

        ``max_event_time`` moves once an hour, not every batch: a bound is a constant in the code Spark
        generates for the checks, and a new one makes every batch's checks compile again and run
        interpreted until the JIT catches up (~0.1 s per batch). Events up to ``max_clock_skew`` past the
        next full hour pass, so the allowed skew is between one and two hours by default."""
        hour = now.replace(minute=0, second=0, microsecond=0)
        next_hour = hour if hour == now else hour + timedelta(hours=1)
        return {**{name: parameter_value(value) for name, value in self.params},
                "min_event_time": self.min_event_time, "max_event_time": next_hour + self.max_clock_skew}


def parameter_value(value: object) -> object:
    """A suite parameter given as text (or a JSON number): a number as an exact Decimal, else the text."""
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return value
    return number if number.is_finite() else value


def parse_params(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """``name=value`` texts (``--dq-param``) -> ``DqConfig.params``; a malformed one raises ValueError."""
    parsed = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--dq-param {pair!r}: write it as name=value, e.g. price_ceiling=5000")
        parsed.append((check_identifier(name.strip()), value))
    return tuple(parsed)


@dataclass(frozen=True)
class JobConfig:
    """Exactly one source: ``source_dir`` (JSON-lines files) or ``kinesis``."""

    checkpoint_dir: Path
    entity: EntitySchema  # the replicated table, from its contract (``contract.load_contract``)
    source_dir: Path | None = None
    kinesis: KinesisConfig | None = None
    lake: LakeConfig | None = None  # None: warehouse only
    dq: DqConfig | None = field(default_factory=DqConfig)  # None: no data-quality checks
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    job_name: str = "sales-cdc"
    available_now: bool = True  # False: run continuously with ``trigger_interval``
    trigger_interval: str = "10 seconds"
    max_files_per_trigger: int | None = None
    soft_delete: bool = False  # the delete mode of every sink: keep deleted items (is_deleted) or remove them
    sink_retry_seconds: float = 300.0  # an unreachable warehouse or lake is retried this long, with backoff
    shuffle_partitions: int = 4

    def __post_init__(self) -> None:
        if (self.source_dir is None) == (self.kinesis is None):
            raise ValueError("configure exactly one source: source_dir or kinesis")
        if self.max_files_per_trigger is not None and self.max_files_per_trigger < 1:
            raise ValueError("max_files_per_trigger must be >= 1")
        if not self.job_name.strip():
            raise ValueError("job_name must not be empty")
