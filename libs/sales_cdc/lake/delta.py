"""Delta lake layers written by delta-rs from rows the driver holds: quarantine (append-only) and silver (a
MERGE, with tombstones in hard-delete mode). Raw's files are written by Spark's executors (``lake.delta_files``).

Every commit carries a Delta app transaction ``(job/stream/table, batch id)``. Before writing a table the
writer reads that table's last committed batch id and skips the batch when it is already there, so a
replayed batch (Spark retry, restart after a crash between two commits) changes nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from queue import Full, Queue

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake

from .. import column_types as CT
from .. import schema as S
from ..config import LakeConfig
from ..errors import JobError
from ..merge_rules import REMOVE, MergeRules
from .layers import LakeBatch, Written

CONTRACT_VERSION = "sales_cdc.contract_version"  # commit metadata: the contract a commit was written with
Write = Callable[[DeltaTable | None, CommitProperties], None]


class DeltaTables:
    """The lake's Delta tables, each loaded once and then brought up to date; writes tagged with their batch."""

    def __init__(self, config: LakeConfig, job_name: str):
        self.config = config
        self.job_name = job_name
        # uri -> the table as last read: loading a table reads its whole log since the last checkpoint
        # (up to 100 commits, a request each on S3) where bringing it up to date reads the new commits only
        self._tables: dict[str, DeltaTable] = {}
        # how the tables written from the driver are written (MERGE, append, a migration's rewrite, compaction): in
        # row groups small enough for a lookup to read one at a time (``row_groups``)
        self.lookup_writer = WriterProperties(max_row_group_size=config.lookup_row_group_rows)

    def table(self, uri: str) -> DeltaTable | None:
        """The Delta table at ``uri`` at its latest version, or None before its first commit (by this job or
        another)."""
        table = self._tables.get(uri)
        if table is not None:
            table.update_incremental()
            return table
        if not DeltaTable.is_deltatable(uri, storage_options=self.config.storage_options):
            return None
        table = self._tables[uri] = DeltaTable(uri, storage_options=self.config.storage_options)
        return table

    def once(self, uri: str, batch: LakeBatch, write: Write) -> bool:
        """``write(table, commit)`` unless ``batch`` is already committed to ``uri`` (then False); the table
        is loaded once, for the check and the write."""
        table = self.table(uri)
        if self._holds(table, uri, batch.stream_id, batch.id):
            return False
        write(table, CommitProperties(app_transactions=[Transaction(self._app_id(uri, batch.stream_id), batch.id)],
                                      custom_metadata={CONTRACT_VERSION: batch.contract_version}))
        return True

    def holds(self, uri: str, stream_id: str, batch_id: int) -> bool:
        """Whether batch ``batch_id`` of ``stream_id`` is committed to ``uri`` (a replay its write will skip)."""
        return self._holds(self.table(uri), uri, stream_id, batch_id)

    def _holds(self, table: DeltaTable | None, uri: str, stream_id: str, batch_id: int) -> bool:
        version = table.transaction_version(self._app_id(uri, stream_id)) if table is not None else None
        return version is not None and version >= batch_id

    def _app_id(self, uri: str, stream_id: str) -> str:
        return f"{self.job_name}/{stream_id}/{uri.rsplit('/', 2)[-2]}/{uri.rsplit('/', 1)[-1]}"

    def append(self, uri: str, data: pa.Table, commit: CommitProperties) -> None:
        write_deltalake(uri, data, mode="append", schema_mode="merge",
                        storage_options=self.config.storage_options, target_file_size=self.config.target_file_size,
                        writer_properties=self.lookup_writer, commit_properties=commit)

    @staticmethod
    def row_groups(table: DeltaTable, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """``columns`` of ``table`` (all by default), a Parquet row group at a time: a lookup joins each with the
        batch's keys and holds a row group or two, not the table. Read ahead by one only: the scan's default (16
        batches per file, 4 files) would buffer up to 64 row groups while the lookup joins one. (Not with the scan's
        own filter: it fails on the string_view statistics delta-rs writes.)"""
        scan = table.to_pyarrow_dataset().to_batches(columns=columns, batch_readahead=1, fragment_readahead=1)
        for batch in scan:
            yield pa.Table.from_batches([batch])

    def existing_or_created(self, uri: str, table: DeltaTable | None, like: pa.Table) -> DeltaTable:
        """A MERGE needs a target: on the first batch, create the table empty with ``like``'s schema."""
        if table is not None:
            return table
        write_deltalake(uri, like.slice(0, 0), mode="append", storage_options=self.config.storage_options)
        return self.table(uri)


class DeltaAppend:
    """An append-only layer written from rows the driver holds (quarantine): the batch's rows (``rows_of``) that
    the layer does not hold yet, by ``identity`` (``schema.QUARANTINE_IDENTITY``). A replay of a batch it holds is
    skipped by the batch's app transaction; the same records under another stream id (a reset checkpoint, a
    backfill run again) are found by their identity."""

    def __init__(self, tables: DeltaTables, uri: str, rows_of: Callable[[LakeBatch], pa.Table],
                 identity: tuple[str, ...]):
        self.tables, self.uri, self.rows_of, self.identity = tables, uri, rows_of, identity
        self.delta_tables = (uri,)

    def write(self, batch: LakeBatch) -> Written:
        rows = self.rows_of(batch)
        if rows.num_rows == 0:
            return Written(0)
        added = 0

        def add(table: DeltaTable | None, commit: CommitProperties) -> None:
            nonlocal added
            if table is None:
                self.tables.append(self.uri, rows, commit)
                added = rows.num_rows
                return
            same = " AND ".join(f"t.{c} = s.{c}" for c in self.identity)
            metrics = (table.merge(rows, predicate=same, source_alias="s", target_alias="t", merge_schema=True,
                                   commit_properties=commit)
                       .when_not_matched_insert_all().execute())
            added = metrics["num_target_rows_inserted"]

        if not self.tables.once(self.uri, batch, add):
            return Written(0, (self.uri,))
        return Written(added)


class DeltaSilver:
    """Current state as a Delta MERGE under the merge rules, with a tombstones table in hard-delete mode."""

    def __init__(self, tables: DeltaTables, rules: MergeRules, uri: str):
        self.tables, self.rules, self.uri = tables, rules, uri
        self.tombstones_uri = f"{uri}_tombstones"
        self.delta_tables = (uri, self.tombstones_uri) if rules.keeps_tombstones else (uri,)

    def write(self, batch: LakeBatch) -> Written:
        state = batch.state.arrow
        if state.num_rows == 0:
            return Written(0)
        self._check_columns(state)
        merged = 0

        def merge(table: DeltaTable | None, commit: CommitProperties) -> None:
            nonlocal merged
            # tombstones are read here, so a replay that finds silver committed does not read them
            live = self._newer_than(state, self.tombstones_uri) if self.rules.keeps_tombstones else state
            self._merge_rows(table, live, commit)
            merged = live.num_rows

        def tombstones(table: DeltaTable | None, commit: CommitProperties) -> None:
            self._merge_tombstones(table, self._not_older_than_silver(state), commit)

        skipped = () if self.tables.once(self.uri, batch, merge) else (self.uri,)
        if self.rules.keeps_tombstones and not self.tables.once(self.tombstones_uri, batch, tombstones):
            skipped += (self.tombstones_uri,)
        return Written(merged, skipped)

    def _check_columns(self, state: pa.Table) -> None:
        """A MERGE drops source columns its target lacks, silently: a batch with a column silver does not have
        (a contract changed, and silver was not migrated) is refused before anything is written."""
        table = self.tables.table(self.uri)
        missing = sorted(set(state.column_names) - set(table.schema().to_arrow().names)) if table is not None else []
        if missing:
            raise JobError(f"lake silver {self.uri} has no column(s) {', '.join(missing)} that the contract names: "
                           "the contract changed without a migration; start the job again (it migrates every sink "
                           "at start-up), or run `sales-cdc migrate`")

    # --- schema migration (``migration``; docs/schema-evolution.md) ------------------------------------------
    def stored_columns(self) -> dict[str, CT.ColumnType | None] | None:
        table = self.tables.table(self.uri)
        if table is None:
            return None
        return {f.name: CT.of_lake(getattr(f.type, "type", str(f.type))) for f in table.schema().fields}

    def unmapped_rows(self) -> pa.Table:
        """Key, sequence and JSON of the rows that keep attributes in ``unmapped_attributes``, read batch by batch
        (what is held grows with those rows, not with the table)."""
        table = self.tables.table(self.uri)
        stored = table.to_pyarrow_dataset().schema
        schema = pa.schema([stored.field(c) for c in (*self.rules.keys, S.CDC_SEQUENCE, S.UNMAPPED)])
        kept = [part.filter(pc.is_valid(part[S.UNMAPPED])) for part in self.tables.row_groups(table, schema.names)]
        return pa.concat_tables([schema.empty_table(), *kept])

    def migrate(self, target: pa.Schema, changed: pa.Table, widened: bool, metadata: dict[str, str]) -> None:
        """One commit that gives silver the ``target`` columns and the promoted values (``changed``: key, sequence,
        promoted columns, JSON left): a MERGE that adds columns, or, when a column widens, a rewrite of the table
        with the columns converted (delta-rs cannot change a column's type in place). Nothing when there is no
        table yet: the first batch creates it with the target columns."""
        table = self.tables.table(self.uri)
        if table is None:
            return
        commit = CommitProperties(custom_metadata=metadata)
        changed = changed.cast(pa.schema([target.field(c) for c in changed.column_names]))  # Spark's Arrow types
        if widened:
            self._rewrite(table, target, changed, commit)
            return
        # a column's value where the promotion moved one (else what silver holds); the JSON as the promotion left it
        stored = set(table.schema().to_arrow().names)
        values = {c: f"s.{c}" if c not in stored or c == S.UNMAPPED else f"COALESCE(s.{c}, t.{c})"
                  for c in changed.column_names if c not in (*self.rules.keys, S.CDC_SEQUENCE)}
        (table.merge(changed, predicate=self._same_row(), source_alias="s", target_alias="t", merge_schema=True,
                     commit_properties=commit)
         .when_matched_update(values).execute())

    def _same_row(self) -> str:
        return f"{self.rules.same_item()} AND t.{S.CDC_SEQUENCE} = s.{S.CDC_SEQUENCE}"

    def _rewrite(self, table: DeltaTable, target: pa.Schema, changed: pa.Table, commit: CommitProperties) -> None:
        """Overwrite silver with its rows converted to ``target`` and ``changed`` applied, streamed batch by batch
        (one commit: readers see the old table or the new one)."""
        keys = [*self.rules.keys, S.CDC_SEQUENCE]

        def converted():
            for rows in self.tables.row_groups(table):
                rows = pa.table({f.name: rows[f.name].cast(f.type) if f.name in rows.column_names
                                 else pa.nulls(rows.num_rows, f.type) for f in target}, schema=target)
                yield from _with_changes(rows, changed, keys).to_batches()

        with _fed_from_a_thread(target, converted) as reader:
            write_deltalake(self.uri, reader, mode="overwrite", schema_mode="overwrite",
                            storage_options=self.tables.config.storage_options,
                            target_file_size=self.tables.config.target_file_size,
                            writer_properties=self.tables.lookup_writer, commit_properties=commit)

    def _outranked(self, probe: pa.Table, uri: str) -> pa.Array:
        """The ``_ROW`` of each ``probe`` row (key, sequence, ``_ROW``) whose key has a row at ``uri`` with a sequence
        not older. The stored keys and sequences are read a row group at a time (``DeltaTables.row_groups``)."""
        table = self.tables.table(uri)
        none = pa.array([], _ROW_TYPE)
        if table is None or probe.num_rows == 0:
            return none
        keys = list(self.rules.keys)
        stored_like = pa.schema([probe.schema.field(k) for k in keys] + [("_stored_seq", pa.string())])
        found = [none]
        for stored in self.tables.row_groups(table, [*keys, S.CDC_SEQUENCE]):
            stored = stored.rename_columns(stored_like.names).cast(stored_like)
            joined = probe.join(stored, keys=keys, join_type="inner")
            found.append(joined.filter(pc.less_equal(joined[S.CDC_SEQUENCE], joined["_stored_seq"]))[_ROW]
                         .combine_chunks())
        return pa.concat_arrays(found)

    def _newer_than(self, state: pa.Table, uri: str) -> pa.Table:
        """Rule 1 against one stored table: ``state``'s rows whose key has no row at ``uri`` or an older one.
        ``state`` comes back as it is when no row is outranked (a stream's usual batch): a 1M-event batch's state
        is not copied for it."""
        probe = state.select([*self.rules.keys, S.CDC_SEQUENCE]).append_column(_ROW, _positions(state.num_rows))
        outranked = self._outranked(probe, uri)
        if len(outranked) == 0:
            return state
        return state.filter(pc.invert(pc.is_in(probe[_ROW], value_set=outranked)))

    def _merge_rows(self, silver: DeltaTable | None, state: pa.Table, commit: CommitProperties) -> None:
        rules = self.rules
        newer, is_remove = rules.newer(), rules.is_remove()
        silver = self.tables.existing_or_created(self.uri, silver, state)
        merge = silver.merge(state, predicate=rules.same_item(), source_alias="s", target_alias="t",
                             writer_properties=self.tables.lookup_writer, commit_properties=commit)
        if not rules.keeps_tombstones:  # soft delete: a REMOVE is a row like any other, marked deleted
            merge = merge.when_matched_update_all(predicate=newer).when_not_matched_insert_all()
        else:
            merge = (merge.when_matched_delete(predicate=f"{newer} AND {is_remove}")
                     .when_matched_update_all(predicate=f"{newer} AND NOT {is_remove}")
                     .when_not_matched_insert_all(predicate=f"NOT {is_remove}"))
        merge.execute()

    def _not_older_than_silver(self, state: pa.Table) -> pa.Table:
        """``state``'s tombstone columns and op, without the REMOVE rows that a live silver row outranks: a late,
        older REMOVE deletes nothing and leaves no tombstone. Read after the silver merge (so also on a replay
        that finds silver committed): a REMOVE that applied has taken its key's row out of silver."""
        state = state.select(list(dict.fromkeys([*self.rules.tombstone_columns, S.CDC_OP])))  # no copy
        is_remove = pc.equal(state[S.CDC_OP], REMOVE)
        removes = state.filter(is_remove)
        fresh = self._newer_than(removes, self.uri)
        if fresh.num_rows == removes.num_rows:
            return state
        return pa.concat_tables([state.filter(pc.invert(is_remove)), fresh])

    def _merge_tombstones(self, tombstones: DeltaTable | None, state: pa.Table, commit: CommitProperties) -> None:
        rules = self.rules
        columns = rules.tombstone_columns
        source = state.select(columns)
        tombstones = self.tables.existing_or_created(self.tombstones_uri, tombstones, source)
        source = source.append_column("_is_remove", pc.equal(state[S.CDC_OP], REMOVE))
        newer = rules.newer()
        (tombstones.merge(source, predicate=rules.same_item(), source_alias="s", target_alias="t",
                          writer_properties=self.tables.lookup_writer, commit_properties=commit)
         .when_matched_update({c: f"s.{c}" for c in columns}, predicate=f"{newer} AND s._is_remove")
         .when_matched_delete(predicate=f"{newer} AND NOT s._is_remove")  # re-inserted: no longer deleted
         .when_not_matched_insert({c: f"s.{c}" for c in columns}, predicate="s._is_remove")
         .execute())


_ROW, _ROW_TYPE = "_row", pa.uint64()  # a row's position in the table it was read from (``_positions``)


def _positions(rows: int) -> pa.Array:
    """0 .. rows-1 (pyarrow has no arange: the positions of a mask that is true everywhere)."""
    return pc.indices_nonzero(pa.nulls(rows, pa.bool_()).fill_null(True))


def _with_changes(rows: pa.Table, changed: pa.Table, keys: list[str]) -> pa.Table:
    """``rows`` with the values of ``changed`` (matched on ``keys``: the item's key and its sequence) set where
    ``changed`` has one, and its JSON."""
    if changed.num_rows == 0 or rows.num_rows == 0:
        return rows
    values = [c for c in changed.column_names if c not in keys]
    renamed = changed.rename_columns([c if c in keys else f"_new_{c}" for c in changed.column_names])
    joined = rows.append_column(_ROW, _positions(rows.num_rows)).join(
        renamed.append_column("_hit", pa.array([True] * changed.num_rows)), keys=keys,
        join_type="left outer").sort_by(_ROW)
    matched = pc.is_valid(joined["_hit"])
    columns = {}
    for name in rows.column_names:
        if name not in values:
            columns[name] = joined[name]
        elif name == S.UNMAPPED:
            columns[name] = pc.if_else(matched, joined["_new_" + name], joined[name])
        else:
            columns[name] = pc.coalesce(joined["_new_" + name], joined[name])
    return pa.table(columns, schema=rows.schema)


@contextlib.contextmanager
def _fed_from_a_thread(schema: pa.Schema, batches: Callable[[], Iterator[pa.RecordBatch]]):
    """A reader of ``batches()``, produced on a thread of its own, a few batches ahead: delta-rs reads its
    input on its runtime's threads, from which reading a Delta table (delta-rs again) would panic
    ("Cannot start a runtime from within a runtime"). Memory stays bounded by the queue."""
    queue: Queue = Queue(maxsize=4)
    stop = threading.Event()
    end = object()

    def produce() -> None:
        try:
            for batch in batches():
                while not stop.is_set():
                    with contextlib.suppress(Full):
                        queue.put(batch, timeout=0.5)
                        break
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the reading side, which raises it
            queue.put(exc)
        queue.put(end)

    def consume() -> Iterator[pa.RecordBatch]:
        while (item := queue.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item

    producer = threading.Thread(target=produce, name="sales-cdc-delta-rewrite", daemon=True)
    producer.start()
    try:
        yield pa.RecordBatchReader.from_batches(schema, consume())
    finally:
        stop.set()
