"""The lake's change history (``merge_rules`` rule 7): one row per version of each item, under
``silver/<entity>_history``, in the silver layer's format.

- Delta (delta-rs): one commit per batch, with the batch's app transaction: the versions the table does not hold,
  with their ends from :func:`version_ends`, and the held versions whose end those change (a late event's
  neighbour, an item's last version when a newer one comes). When no held end changes (new items, the first
  batch) the commit is an append; else a MERGE of those rows only, which rewrites only the files holding them.
- Parquet (Spark): a snapshot per batch, as the Parquet silver (``lake.parquet``): the previous snapshot with the
  new versions, their ends computed by a window over each item; a commit file names it.

Either way the ends are recomputed for whole items, so a late event lands in its place and its neighbours
follow; a replayed batch, or the same events under another stream id, adds no version and changes no end.
"""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from .. import schema as S
from ..merge_rules import MergeRules
from .delta import DeltaTables
from .layers import LakeBatch, Written
from .parquet import SilverCommit, next_snapshot, write_commit

END_COLUMNS = tuple(f.name for f in S.VERSION_END_FIELDS)


def version_ends(versions: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Rule 7 on Arrow rows (the item's key, ``valid_from_sequence``, ``valid_from``): each version's end is the
    next version of its item by sequence; the last is current."""
    ordered = versions.sort_by([(k, "ascending") for k in (*keys, S.VALID_FROM_SEQUENCE)])

    def following(column: str) -> pa.Array:
        values = ordered[column].combine_chunks()
        return pa.concat_arrays([values.slice(1), pa.nulls(1, values.type)]) if len(values) else values

    same_item = functools.reduce(pc.and_, [pc.fill_null(pc.equal(ordered[k], following(k)), False) for k in keys])
    nothing = {c: pa.scalar(None, ordered[c].type) for c in (S.VALID_FROM, S.VALID_FROM_SEQUENCE)}
    return ordered.append_column(S.VALID_TO, pc.if_else(same_item, following(S.VALID_FROM), nothing[S.VALID_FROM])) \
        .append_column(S.VALID_TO_SEQUENCE, pc.if_else(same_item, following(S.VALID_FROM_SEQUENCE),
                                                       nothing[S.VALID_FROM_SEQUENCE])) \
        .append_column(S.IS_CURRENT, pc.invert(same_item))


def has_versions(batch: LakeBatch) -> bool:
    """The batch keeps a history (``superseded`` is set) and has a version to write."""
    return batch.superseded is not None and batch.state.arrow.num_rows + batch.superseded.arrow.num_rows > 0


def batch_versions(batch: LakeBatch, rules: MergeRules) -> pa.Table | None:
    """Every version of the batch: its state rows' and those they supersede (None: nothing to write)."""
    if not has_versions(batch):
        return None
    latest = rules.as_version_table(batch.state.arrow)
    return pa.concat_tables([latest, batch.superseded.arrow.select(latest.column_names).cast(latest.schema)])


class DeltaHistory:
    def __init__(self, tables: DeltaTables, rules: MergeRules, uri: str):
        self.tables, self.rules, self.uri = tables, rules, uri
        self.delta_tables = (uri,)

    @property
    def version_key(self) -> list[str]:
        return [*self.rules.keys, S.VALID_FROM_SEQUENCE]

    def write(self, batch: LakeBatch) -> Written:
        versions = batch_versions(batch, self.rules)
        if versions is None:
            return Written(0)
        added = 0

        def commit_versions(table: DeltaTable | None, commit: CommitProperties) -> None:
            nonlocal added
            new, moved = self._rows(table, versions)
            added = new.num_rows
            if moved.num_rows == 0:
                self.tables.append(self.uri, new, commit)
                return
            same = " AND ".join(f"t.{c} = s.{c}" for c in self.version_key)
            (table.merge(pa.concat_tables([new, moved]), predicate=same, source_alias="s", target_alias="t",
                         merge_schema=True, writer_properties=self.tables.lookup_writer, commit_properties=commit)
             .when_matched_update({c: f"s.{c}" for c in END_COLUMNS})
             .when_not_matched_insert_all().execute())

        if not self.tables.once(self.uri, batch, commit_versions):
            return Written(0, (self.uri,))
        return Written(added)

    def _rows(self, table: DeltaTable | None, versions: pa.Table) -> tuple[pa.Table, pa.Table]:
        """The new versions whole, with their ends; and the held versions whose end they change (their key and
        new end only: the MERGE updates nothing else)."""
        version_key = self.version_key
        starts = [*version_key, S.VALID_FROM]
        touched = self._held(table, versions)
        new = versions.join(touched.select(version_key), version_key, join_type="left anti")
        ends = version_ends(pa.concat_tables([touched.select(starts), new.select(starts)]), self.rules.keys) \
            .select([*version_key, *END_COLUMNS])
        was = touched.select(version_key).append_column("was", touched[S.VALID_TO_SEQUENCE])
        moved = ends.join(was, version_key, join_type="inner")
        now, before = moved[S.VALID_TO_SEQUENCE], moved["was"]
        moved = moved.filter(pc.fill_null(pc.not_equal(now, before), pc.xor(pc.is_valid(now), pc.is_valid(before))))
        # one schema, nullable throughout: a held version's row carries its end only
        schema = pa.schema([f.with_nullable(True) for f in (*versions.schema, *[ends.schema.field(c)
                                                                                 for c in END_COLUMNS])])
        return (new.join(ends, version_key, join_type="inner").select(schema.names).cast(schema),
                pa.table({f.name: moved[f.name] if f.name in moved.column_names else pa.nulls(moved.num_rows, f.type)
                          for f in schema}).cast(schema))

    def _held(self, table: DeltaTable | None, versions: pa.Table) -> pa.Table:
        """The versions the table holds of ``versions``' items: their key, start and end (none before the first
        commit), read a row group at a time (``DeltaTables.row_groups``): the driver holds the batch's items'
        versions, not the whole history's."""
        keys, columns = list(self.rules.keys), [*self.version_key, S.VALID_FROM]
        schema = pa.schema([*versions.select(columns).schema,
                            pa.field(S.VALID_TO_SEQUENCE, versions.schema.field(S.VALID_FROM_SEQUENCE).type)])
        items = versions.select(keys).group_by(keys).aggregate([])
        held = [schema.empty_table()]
        if table is not None:
            held += [part.cast(schema).join(items, keys, join_type="left semi")
                     for part in self.tables.row_groups(table, schema.names)]
        return pa.concat_tables(held)


class ParquetHistory:
    delta_tables = ()

    def __init__(self, rules: MergeRules, uri: str):
        self.rules, self.uri = rules, uri

    def write(self, batch: LakeBatch) -> Written:
        """The next snapshot of the history; skipped when this batch is already committed (a replay)."""
        if not has_versions(batch):
            return Written(0)
        versions = self.rules.as_versions(batch.state.frame).unionByName(batch.superseded.frame)
        spark = versions.sparkSession
        following = next_snapshot(spark, self.uri, batch)
        if following is None:
            return Written(0, (self.uri,))
        version, previous = following
        path = f"{self.uri}/snapshot={version:09d}/history"
        self._history(versions, previous).write.mode("overwrite").parquet(path)
        write_commit(spark, self.uri, SilverCommit(version, batch.stream_id, batch.id, path, None,
                                                   self.rules.entity.version))
        return Written(None)

    def _history(self, versions: DataFrame, previous: SilverCommit | None) -> DataFrame:
        version_key = [*self.rules.keys, S.VALID_FROM_SEQUENCE]
        if previous is not None:  # its columns as the versions have them (a contract may have added or widened)
            read = versions.sparkSession.read.parquet(previous.state_path)
            stored = read.select(*[(F.col(f.name) if f.name in read.columns else F.lit(None)).cast(f.dataType)
                                   .alias(f.name) for f in versions.schema.fields])
            versions = stored.unionByName(versions.join(stored.select(*version_key), version_key, "left_anti"))
        item = Window.partitionBy(*self.rules.keys).orderBy(S.VALID_FROM_SEQUENCE)
        next_sequence = F.lead(S.VALID_FROM_SEQUENCE).over(item)
        return versions.withColumns({S.VALID_TO: F.lead(S.VALID_FROM).over(item), S.VALID_TO_SEQUENCE: next_sequence,
                                     S.IS_CURRENT: next_sequence.isNull()})
