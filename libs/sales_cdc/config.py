"""Job configuration: every parameter, its type and its default, in one place.

The local CLI and (later) the Glue entry script both build a :class:`JobConfig`; library code takes
only the values it needs from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .schema import check_identifier


@dataclass(frozen=True)
class WarehouseConfig:
    url: str | None = None  # None: start an embedded PostgreSQL in ``embedded_data_dir``
    embedded_data_dir: Path = Path(".demo/postgres")
    db_schema: str = "sales"
    table: str = "orders"
    soft_delete: bool = False

    def __post_init__(self) -> None:
        check_identifier(self.db_schema)
        check_identifier(self.table)


@dataclass(frozen=True)
class JobConfig:
    source_dir: Path
    checkpoint_dir: Path
    warehouse: WarehouseConfig = field(default_factory=WarehouseConfig)
    job_name: str = "sales-cdc"
    available_now: bool = True  # False: run continuously with ``trigger_interval``
    trigger_interval: str = "10 seconds"
    max_files_per_trigger: int | None = None
    shuffle_partitions: int = 4

    def __post_init__(self) -> None:
        if self.max_files_per_trigger is not None and self.max_files_per_trigger < 1:
            raise ValueError("max_files_per_trigger must be >= 1")
        if not self.job_name.strip():
            raise ValueError("job_name must not be empty")
