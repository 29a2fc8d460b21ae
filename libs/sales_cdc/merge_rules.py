"""The merge rules: how an event changes what a sink stores for its key. Stated once, here; the warehouse
(``sql.MergeSql``, the history ``sql_history.HistorySql``), Delta silver (``lake.delta.DeltaSilver``) and Parquet
silver (``lake.parquet.ParquetSilver``) apply them through this module, and tests/test_merge_rules.py runs the
same cases on each of them.

Per key, a sink stores a *row* (the latest event's values) and, with hard deletes, a *tombstone* (the key
and sequence of its delete).

1. **Sequence guard**: an incoming row applies only if its sequence is higher than the stored row's and the
   stored tombstone's; on a tie the stored row stays (a replay changes nothing). Sequences are zero-padded
   text (``schema.CDC_SEQUENCE``), so text order is numeric order in every engine.
2. **Upsert**: an INSERT or MODIFY that applies replaces the stored row (or adds it); with hard deletes it
   also clears the key's tombstone (the item was re-inserted).
3. **Hard delete**: a REMOVE that applies removes the stored row and leaves a tombstone, also for a key
   never stored (so an older event of that key, arriving late, cannot resurrect it).
4. **Soft delete**: a REMOVE that applies is stored like an upsert, as a row marked ``is_deleted`` with
   ``deleted_at`` = the REMOVE's event time (:meth:`MergeRules.stored_rows`, computed once per batch, before
   any sink); there are no tombstones.
5. A batch already committed to a sink (its ledger, a Delta app transaction, a Parquet commit file) is
   skipped there.
6. **Snapshot rows** (a backfill's items, ``sources.snapshot``) have the sequence ``0``, below every sequence
   DynamoDB gives: by rule 1 one fills a key no stream event has written and never replaces one (nor passes a
   tombstone), and a second snapshot of the key changes nothing. Two snapshots of one item in one batch are not a
   conflict (both are true states of the item at some moment): the later one is kept.

7. **History** (a contract with ``history: true``): every event a sink applies is also a *version* of its
   item, kept in the item's history (``schema.history_fields``): the item's values from that event on (a REMOVE:
   the deleted image, ``is_deleted``). A version is identified by the item and its sequence, so a redelivered
   event or a replayed batch adds nothing, and it is valid from its event (``valid_from``,
   ``valid_from_sequence``) until the item's next version *by sequence* (``valid_to``, ``valid_to_sequence``;
   none for the latest, ``is_current``). The order is the sequence, never the arrival: a late event is inserted
   in its place and the validity of its neighbours follows. Unlike rules 1-3, no event is stale here: a late
   event older than the current row or a tombstone is still a version of the past. Events a batch supersedes
   are versions too; a snapshot row (rule 6) is a version at sequence 0, before the stream's. So the current
   versions are the current state: with hard deletes those not ``is_deleted``, with soft deletes all of them.

The predicates below are SQL expression text over a stored row ``t`` and an incoming row ``s``: PostgreSQL,
Redshift, delta-rs (DataFusion) and Spark all read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from . import schema as S
from .runtime import built_once

REMOVE = "REMOVE"
SNAPSHOT_SEQUENCE = "0"  # rule 6: a snapshot row's sequence, below every sequence number DynamoDB gives
STORED_SNAPSHOT_SEQUENCE = SNAPSHOT_SEQUENCE.rjust(S.SEQUENCE_WIDTH, "0")  # as ``cdc_sequence`` holds it
SNAPSHOT_EVENT_PREFIX = "snapshot-"  # a snapshot record's event id: this, then the item's content digest
TOMBSTONE_EXTRA = (S.CDC_SEQUENCE, S.CDC_EVENT_TIME, S.CDC_EVENT_ID, S.CDC_BATCH_ID)


def _plain(name: str) -> str:
    return S.check_identifier(name)


@dataclass(frozen=True)
class MergeRules:
    entity: S.EntitySchema
    soft_delete: bool = False  # the delete mode: rule 4 (soft) or rule 3 (hard, with tombstones)

    @property
    def keys(self) -> tuple[str, ...]:
        return self.entity.keys

    @property
    def keeps_tombstones(self) -> bool:
        return not self.soft_delete

    # --- what a sink stores ------------------------------------------------------------------------
    @property
    def row_fields(self) -> tuple[S.Field, ...]:
        """The columns of a stored row: the state row, plus ``is_deleted`` and ``deleted_at`` (rule 4)."""
        return S.state_fields(self.entity) + (S.SOFT_DELETE_FIELDS if self.soft_delete else ())

    @property
    def row_columns(self) -> list[str]:
        return [f.name for f in self.row_fields]

    @property
    def tombstone_fields(self) -> tuple[S.Field, ...]:
        by_name = {f.name: f for f in S.state_fields(self.entity)}
        return (*self.entity.key_fields, *[by_name[n] for n in TOMBSTONE_EXTRA])

    @property
    def tombstone_columns(self) -> list[str]:
        return [f.name for f in self.tombstone_fields]

    def stored_rows(self, state: DataFrame) -> DataFrame:
        """State rows (``schema.state_fields``) as every sink stores them: with soft deletes, a REMOVE is a
        row marked deleted at its event time (rule 4)."""
        return state.select(*_stored_columns(self))

    # --- rule 7: a state row as a version (its start renamed, ``is_deleted``), in each engine ------------------
    def _version_sources(self) -> list[tuple[str, str | None]]:
        """(version column, the state column it is) for ``schema.version_fields``; None: ``is_deleted``."""
        named = {version: name for name, version in S.VERSION_START.items()}
        return [(f.name, None if f.name == S.IS_DELETED else named.get(f.name, f.name))
                for f in S.version_fields(self.entity)]

    def as_versions(self, state: DataFrame) -> DataFrame:
        return state.select(*_version_columns(self))

    def as_version_table(self, state: pa.Table) -> pa.Table:
        return pa.table({name: pc.equal(state[S.CDC_OP], REMOVE) if source is None else state[source]
                         for name, source in self._version_sources()})

    def version_select(self, s: str, quote: Callable[[str], str] = _plain) -> str:
        """A SELECT list of ``s``'s state columns as a version."""
        return ", ".join(f"{self.is_remove(s, quote)} AS {quote(name)}" if source is None
                         else f"{s}.{quote(source)} AS {quote(name)}" for name, source in self._version_sources())

    # --- the rules as predicates ---------------------------------------------------------------------
    def same_item(self, t: str = "t", s: str = "s", quote: Callable[[str], str] = _plain) -> str:
        """``t`` and ``s`` hold the same item: every key column equal."""
        return " AND ".join(f"{t}.{quote(k)} = {s}.{quote(k)}" for k in self.keys)

    @staticmethod
    def newer(t: str = "t", s: str = "s", quote: Callable[[str], str] = _plain) -> str:
        """Rule 1: ``s`` applies over ``t`` (a tie keeps ``t``)."""
        return f"{s}.{quote(S.CDC_SEQUENCE)} > {t}.{quote(S.CDC_SEQUENCE)}"

    @staticmethod
    def is_remove(s: str = "s", quote: Callable[[str], str] = _plain) -> str:
        return f"{s}.{quote(S.CDC_OP)} = '{REMOVE}'"

    @staticmethod
    def latest_first(stored: Column) -> list[Column]:
        """Rule 1 as an ordering of the candidates for one key (incoming and ``stored`` rows): the first
        applies; on equal sequences the stored row (``stored`` true) comes first."""
        return [F.col(S.CDC_SEQUENCE).desc(), stored.desc()]


@built_once
def _stored_columns(rules: MergeRules) -> tuple[Column, ...]:
    """:meth:`MergeRules.stored_rows`'s columns."""
    columns = tuple(F.col(f.name) for f in S.state_fields(rules.entity))
    if not rules.soft_delete:
        return columns
    removed = F.col(S.CDC_OP) == F.lit(REMOVE)
    return (*columns, removed.alias(S.IS_DELETED),
            F.when(removed, F.col(S.CDC_EVENT_TIME)).cast(T.TimestampType()).alias(S.DELETED_AT))


@built_once
def _version_columns(rules: MergeRules) -> tuple[Column, ...]:
    """:meth:`MergeRules.as_versions`'s columns."""
    return tuple((F.col(S.CDC_OP) == F.lit(REMOVE)).alias(name) if source is None else F.col(source).alias(name)
                 for name, source in rules._version_sources())
