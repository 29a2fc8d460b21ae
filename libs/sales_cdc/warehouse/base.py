"""The interface every warehouse adapter implements."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from ..column_types import ColumnType
from ..merge_rules import MergeRules
from ..schema import EntitySchema
from ..sql import MergeSql


@dataclass(frozen=True)
class MergeResult:
    """What one batch did to the warehouse (read back from the ledger)."""

    batch_id: int
    staged_rows: int
    upserted_rows: int
    deleted_rows: int
    stale_rows: int
    quarantined_rows: int
    snapshot_rows: int  # of the staged rows, from a backfill's snapshot (merge rule 6)
    snapshot_loaded_rows: int  # of those, applied (the others found a stored row as new or newer)
    snapshot_quarantined_rows: int
    replayed: bool  # True: the batch was already in the ledger and nothing was changed


@dataclass(frozen=True)
class BatchFacts:
    """What a batch did before its merge, recorded in its ledger row for ``sales-cdc status``."""

    events_read: int | None = None
    seconds: Mapping[str, float] = field(default_factory=dict)  # per stage, up to the merge

    def ledger_values(self) -> dict:
        """As the ledger keeps them (``sql.BATCH_FACTS``): the stage times as JSON text, to the millisecond."""
        seconds = json.dumps({stage: round(s, 3) for stage, s in self.seconds.items()}) if self.seconds else None
        return {"events_read": self.events_read, "stage_seconds": seconds}


class RowsRefused(Exception):
    """The warehouse refused some of a batch's state rows (a constraint, a value it cannot store); nothing of
    the batch was committed. ``rows``: state-row index -> the warehouse's reason."""

    def __init__(self, rows: dict[int, str]):
        super().__init__(f"the warehouse refused {len(rows)} row(s): {next(iter(rows.values()))}")
        self.rows = rows


class Warehouse(Protocol):
    @property
    def rules(self) -> MergeRules:
        """The entity and the delete mode it was built for."""
        ...

    def ensure_tables(self) -> None: ...

    def merge_batch(self, *, batch_id: int, stream_id: str, state: pa.Table, quarantine: pa.Table,
                    dq_results: pa.Table | None = None, before_commit: Callable[[], None] | None = None,
                    facts: BatchFacts | None = None, superseded: pa.Table | None = None) -> MergeResult:
        """Stage + merge ``state``, append ``quarantine`` and ``dq_results``, add the batch's versions to the
        history (a contract with ``history: true``), record the batch (with ``facts``): one transaction.
        ``state`` holds the rows as stored (``rules.row_columns``: ``MergeRules.stored_rows`` of the state rows);
        the versions are the state rows' (``MergeRules.as_versions``) and ``superseded``, the events the latest
        of their item supersedes in the batch (``schema.version_fields``).

        ``before_commit`` is called once all the batch's work is done and before it is committed (not for a
        replay): if it raises, nothing of the batch is committed. The batch handler waits there for the
        lake, written meanwhile on another thread, so the ledger never holds a batch the lake lacks."""
        ...

    def committed(self, *, batch_id: int, stream_id: str) -> MergeResult | None:
        """The recorded result of a batch already in the ledger (``replayed=True``), else None."""
        ...

    def record_dq_results(self, dq_results: pa.Table) -> None:
        """Append a halted batch's results on their own (nothing else of that batch is written)."""
        ...

    # --- schema migration (``migration.Migration``; docs/schema-evolution.md) -----------------------------
    sql: MergeSql  # the statements of the entity it writes

    def use(self, entity: EntitySchema) -> None:
        """Write ``entity``'s columns from now on."""
        ...

    def stored_columns(self) -> dict[str, ColumnType | None] | None:
        """The current-state table's columns as column types (None: not one of ours); None: no table."""
        ...

    def unmapped_rows(self) -> pa.Table:
        """Key, sequence and ``unmapped_attributes`` of every row that keeps attributes there."""
        ...

    def recorded_contract(self, sink: str) -> str | None:
        """The contract ``sink`` last recorded in the warehouse's schema history (its JSON), if any."""
        ...

    def migrate(self, groups: list[list[str]], promoted: pa.Table | None, history: pa.Table) -> None:
        """The DDL (``groups``: each group in one transaction), the promoted values (``promoted``: key, sequence,
        the columns, the JSON left) and the history rows: in one transaction where the warehouse can (the
        history in the last one, so a migration that died is planned again from the columns it left)."""
        ...

    def close(self) -> None: ...
