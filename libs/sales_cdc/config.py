"""Job configuration: every parameter, its type and its default, in one place.

:class:`JobConfig` is what the batch handler needs, built the same way by the local CLI and by Glue
(``glue.job_config``); the local streaming query adds a :class:`StreamConfig`. Library code takes only the
values it needs from them; the connection to the warehouse is the caller's (a URL, Redshift's Data API).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from .schema import EntitySchema, check_identifier

REGION = "us-east-1"  # the default AWS region, wherever one is not given
FORMATS = ("delta", "parquet")
# the default suites travel with the package, so the job finds them wherever it is started
DEFAULT_EXPECTATIONS = Path(__file__).parent / "expectations"


@dataclass(frozen=True)
class LakeConfig:
    root: str
    storage_options: dict[str, str] = field(default_factory=dict)
    target_file_size: int = 128 * 1024 * 1024
    # rows per Parquet row group of the Delta tables the job writes from the driver (silver, its tombstones, the
    # history, quarantine): a key lookup in them reads a row group at a time, so this bounds what it holds however
    # large the table (delta-rs's default is ~1M rows)
    lookup_row_group_rows: int = 65_536
    # per layer: "delta" (delta-rs, transactional MERGE) or "parquet" (Spark's own writer, see lake.parquet)
    raw_format: str = "delta"
    silver_format: str = "delta"
    quarantine_format: str = "delta"

    def __post_init__(self) -> None:
        for layer in ("raw", "silver", "quarantine"):
            if getattr(self, f"{layer}_format") not in FORMATS:
                raise ValueError(f"{layer}_format must be one of {FORMATS}")
        if self.lookup_row_group_rows < 1:
            raise ValueError("lookup_row_group_rows must be at least 1")

    @property
    def parquet_layers(self) -> list[str]:
        return [layer for layer in ("raw", "silver", "quarantine") if getattr(self, f"{layer}_format") == "parquet"]


@dataclass(frozen=True)
class WarehouseConfig:
    """Where the merge lands; the connection itself (a URL, Redshift's Data API) is the caller's."""

    db_schema: str = "sales"
    table: str | None = None  # None: the entity's name (``orders`` for the default contract)

    def __post_init__(self) -> None:
        check_identifier(self.db_schema)
        if self.table is not None:
            check_identifier(self.table)


@dataclass(frozen=True)
class KinesisConfig:
    """The local Kinesis source (``sources.kinesis``); Glue maps the same values to its native source."""

    stream_name: str = "kinesis-for-sales-data"
    endpoint_url: str | None = None  # None: the AWS default endpoint
    region: str = REGION
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
class DocsConfig:
    """The Data Docs site."""

    location: str | None = None  # a folder or s3://bucket/prefix; None: no Data Docs site
    endpoint_url: str | None = None  # S3 endpoint for the docs (a moto server locally)
    region: str = REGION
    index_batches: int = 100  # the docs index lists this many latest batches; every page stays

    def __post_init__(self) -> None:
        if self.index_batches < 1:
            raise ValueError("docs index_batches must be at least 1")


@dataclass(frozen=True)
class DqConfig:
    """Data quality: the GX project, the values its ``$PARAMETER`` placeholders take, the docs site."""

    expectations_dir: Path = DEFAULT_EXPECTATIONS  # a GX project; suites in <dir>/expectations/*.json
    docs: DocsConfig = field(default_factory=DocsConfig)
    # values of the suites' business $PARAMETERs, as (name, text): each overrides the default the suite file
    # gives in meta.parameters; a number is used as a Decimal
    params: tuple[tuple[str, str], ...] = ()
    min_event_time: datetime = datetime(2015, 1, 1, tzinfo=UTC)  # before DynamoDB Streams existed
    max_clock_skew: timedelta = timedelta(hours=1)  # max_event_time = validation time, up to the hour, + this
    result_format: str = "SUMMARY"  # GX result format: BOOLEAN_ONLY is faster, SUMMARY shows failing values
    # a batch of up to this many valid events (so as many state rows at most) is first validated on GX's pandas
    # engine (quality/gx_pandas.py), from the rows the sinks collect anyway: ~0.1 s against ~0.6 s on Spark for a
    # small batch, 0.65 s against 1.66 s at 100k events; at 300k events the two are even (3.8 s) and the driver's
    # memory doubles, so larger batches stay on Spark. 0 validates every batch on Spark
    screen_rows: int = 150_000

    def __post_init__(self) -> None:
        if self.result_format not in ("BOOLEAN_ONLY", "BASIC", "SUMMARY"):
            raise ValueError("result_format must be BOOLEAN_ONLY, BASIC or SUMMARY (COMPLETE collects every row)")
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


def arn_region(arn: str) -> str:
    """The region an ARN names (``arn:partition:service:region:account:resource``)."""
    return arn.split(":")[3]


@dataclass(frozen=True)
class AlertConfig:
    """Alerts (a halt, a batch quarantining too much): to an SNS topic, else to the log only."""

    sns_topic_arn: str | None = None
    sns_endpoint_url: str | None = None  # a moto server locally
    region: str = REGION
    quarantine_share: float = 0.05  # alert when more than this share of a batch's events is quarantined

    def __post_init__(self) -> None:
        if not 0 <= self.quarantine_share <= 1:
            raise ValueError("alert quarantine_share must be between 0 and 1")


@dataclass(frozen=True)
class MetricsConfig:
    """Per-batch CloudWatch metrics (``metrics.py``): published to ``namespace``, else none."""

    namespace: str | None = None
    endpoint_url: str | None = None  # a moto server locally
    region: str = REGION


@dataclass(frozen=True)
class SinkConfig:
    """Where each batch is written, and how."""

    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    lake: LakeConfig | None = None  # None: warehouse only
    soft_delete: bool = False  # the delete mode of every sink: keep deleted items (is_deleted) or remove them
    retry_seconds: float = 300.0  # an unreachable warehouse or lake is retried this long, with backoff


@dataclass(frozen=True)
class JobConfig:
    """What the batch handler needs: the same on Glue and locally (where the query's source, trigger and
    checkpoint are a :class:`StreamConfig`; Glue takes those from its own parameters)."""

    entity: EntitySchema  # the replicated table, from its contract (``contract.load_contract``)
    job_name: str = "sales-cdc"
    sinks: SinkConfig = field(default_factory=SinkConfig)
    dq: DqConfig | None = field(default_factory=DqConfig)  # None: no data-quality checks
    alerts: AlertConfig = field(default_factory=AlertConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    contract_source: str = ""  # where the contract was read (a file, an s3:// URI): the schema history says so

    def __post_init__(self) -> None:
        if not self.job_name.strip():
            raise ValueError("job_name must not be empty")


@dataclass(frozen=True)
class FileSource:
    """JSON-lines files of source records arriving in a folder (the local file source)."""

    directory: Path
    max_files_per_trigger: int | None = None

    def __post_init__(self) -> None:
        if self.max_files_per_trigger is not None and self.max_files_per_trigger < 1:
            raise ValueError("max_files_per_trigger must be >= 1")


@dataclass(frozen=True)
class StreamConfig:
    """The local streaming query: its source, checkpoint and trigger."""

    source: FileSource | KinesisConfig
    checkpoint_dir: Path
    available_now: bool = True  # False: run continuously with ``trigger_interval``
    trigger_interval: str = "10 seconds"
    shuffle_partitions: int = 4
