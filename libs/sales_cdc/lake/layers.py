"""What every lake layer writer takes and gives: one batch, once; what it wrote or skipped.

A layer (raw, silver, quarantine) is written in one format, chosen when the lake is built (``lake.Lake``):
Delta through delta-rs (``lake.delta``) or Parquet through Spark (``lake.parquet``). Each writer takes the
whole :class:`LakeBatch` and reads the form it writes: delta-rs the Arrow rows, Spark the DataFrame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
from pyspark.sql import DataFrame


@dataclass(frozen=True)
class Rows:
    """The same rows twice: as Spark has them and as collected to Arrow (collected once, for every sink)."""

    frame: DataFrame
    arrow: pa.Table


@dataclass(frozen=True)
class StagedFiles:
    """A layer's files for one batch, written by Spark's tasks and not committed yet: readers see none of them
    until the layer's commit adds them (a batch that never commits leaves them to the maintenance's vacuum)."""

    schema: pa.Schema  # of the rows in them
    files: list  # one row per file: what the commit's add action needs (``lake.delta_files.FILE_FIELDS``)


@dataclass(frozen=True)
class LakeBatch:
    id: int
    stream_id: str
    raw: DataFrame | None  # raw rows (``schema.raw_fields``): every record of the batch once (None until made)
    state: Rows  # stored rows (``merge_rules.MergeRules.stored_rows``): the latest event per key
    quarantine: Rows  # quarantine rows (``schema.QUARANTINE_FIELDS``)
    contract_version: str = ""  # of the contract the batch is written with: every commit records it
    # with history: the versions the state rows do not carry, the events their latest supersedes in the batch
    # (``schema.version_fields``); the batch's versions are these and the state rows' (``MergeRules.as_versions``)
    superseded: Rows | None = None
    # raw's files, when the batch handler had Spark's tasks write them ahead, beside the dedupe and data quality
    # (``Lake.stage_raw``): waits for them (raises that work's error); None, or None returned: the raw layer
    # writes ``raw`` itself, unless it holds the batch
    raw_staged: Callable[[], StagedFiles | None] | None = None


@dataclass(frozen=True)
class Written:
    """One layer's part of a batch."""

    rows: int | None  # rows written (None: written by Spark without counting); 0 when skipped
    skipped: tuple[str, ...] = ()  # tables that already held this batch (a replay)


class LayerWriter(Protocol):
    delta_tables: tuple[str, ...]  # the Delta tables it writes (for maintenance)

    def write(self, batch: LakeBatch) -> Written: ...
