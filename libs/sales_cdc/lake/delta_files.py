"""An append-only Delta layer whose files Spark's executors write (raw: ~1 KB of payload per event, the largest
thing a batch carries), committed by the driver in one delta-rs transaction with the batch's app-transaction id.

Each task writes its rows as Parquet files (one per partition value) straight to the table's folder, through
pyarrow's filesystem (a local folder, S3, or a moto server), and returns one short row per file: its path, size,
partition value and statistics. The driver then holds those rows only, whatever the batch's size, and commits
them as the table's add actions (``deltalake.transaction``). A task drops the rows the layer already holds by
identity first: it reads only the identity of the committed files its rows could repeat (the same partition and
a sequence range that overlaps theirs, from the files' statistics; for an undecodable record, whose date may be
the day it was read, any file with undecodable records), so a batch of new records reads nothing.
Files a crashed batch wrote and never committed belong to no version: readers never see them, the batch's
replay writes its own, and ``sales-cdc lake-maintain``'s vacuum removes them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Schema, write_deltalake
from deltalake.transaction import AddAction, create_table_with_add_actions
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import to_arrow_schema

from .. import schema as S
from ..faults import crash_point
from ..merge_rules import STORED_SNAPSHOT_SEQUENCE
from .delta import DeltaTables
from .layers import LakeBatch, StagedFiles, Written

# one row per file a task wrote: what the commit's add action needs
FILE_FIELDS = (("path", pa.string()), ("size", pa.int64()), ("partition", pa.string()),
               ("num_records", pa.int64()), ("stats", pa.string()))
FILE_SCHEMA = pa.schema(FILE_FIELDS)
# columns whose min/max go into a file's statistics: short ones a reader filters on (the sequence narrows the
# identity lookup below); every column gets its null count
BOUNDED_COLUMNS = (S.CDC_SEQUENCE, S.RECORD_ID, S.CDC_BATCH_ID)


@dataclass(frozen=True)
class Committed:
    """A committed file a task may need to read: its partition value and sequence statistics."""

    path: str
    partition: str | None
    low: str | None  # None: no statistics, so it may hold any sequence
    high: str | None
    nulls: int | None


@dataclass(frozen=True)
class FileTarget:
    """What a task needs to write a batch's files (sent to the executors: plain values only)."""

    uri: str
    storage_options: dict[str, str]
    partition: str  # the partition column
    identity: tuple[str, ...]
    prefix: str  # file names start with it: the batch, so that a file says where it came from
    committed: tuple[Committed, ...]

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """pyarrow's filesystem of the table and the table's path in it."""
        options = self.storage_options
        if not self.uri.startswith("s3://") or not options:
            return pafs.FileSystem.from_uri(self.uri)
        endpoint = options.get("AWS_ENDPOINT_URL", "")
        s3 = pafs.S3FileSystem(access_key=options.get("AWS_ACCESS_KEY_ID"),
                               secret_key=options.get("AWS_SECRET_ACCESS_KEY"), region=options.get("AWS_REGION"),
                               endpoint_override=endpoint.split("://", 1)[-1] or None,
                               scheme="http" if endpoint.startswith("http://") else "https")
        return s3, self.uri.removeprefix("s3://")

    def write(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The task: its rows less those already committed, one Parquet file per partition value."""
        batches = [b for b in batches if b.num_rows]
        if not batches:  # an empty task may be given no batch at all
            return
        rows = pa.Table.from_batches(batches)
        fs, root = self.filesystem()
        for value in pc.unique(rows[self.partition]).to_pylist():
            part = rows.filter(pc.equal(rows[self.partition], value))
            name = f"{self.partition}={value}"
            part = self._not_committed(fs, root, name, part.drop_columns([self.partition]))
            if part.num_rows:
                yield pa.RecordBatch.from_pylist([self._written(fs, root, name, part)], FILE_SCHEMA)

    def _written(self, fs: pafs.FileSystem, root: str, partition: str, rows: pa.Table) -> dict:
        path = f"{partition}/{self.prefix}-{uuid.uuid4().hex}.snappy.parquet"
        fs.create_dir(f"{root}/{partition}", recursive=True)
        pq.write_table(rows, f"{root}/{path}", filesystem=fs, compression="snappy")
        size = fs.get_file_info(f"{root}/{path}").size
        return {"path": path, "size": size, "partition": partition.split("=", 1)[1], "num_records": rows.num_rows,
                "stats": json.dumps(statistics(rows))}

    def _not_committed(self, fs: pafs.FileSystem, root: str, partition: str, rows: pa.Table) -> pa.Table:
        """``rows`` less those whose identity a committed file holds, reading only the files that can hold one of
        them: of their partition, with a sequence range that overlaps theirs, and, for an undecoded record, any
        file with undecoded records (:meth:`SequenceScope.may_hold_elsewhere`)."""
        value, scope = partition.split("=", 1)[1], SequenceScope.of(rows[S.CDC_SEQUENCE])
        files = [f.path for f in self.committed
                 if (f.partition == value and scope.may_hold(f)) or scope.may_hold_elsewhere(f)]
        if not files:
            return rows
        held = pa.concat_tables([pq.read_table(f"{root}/{f}", columns=list(self.identity), filesystem=fs)
                                 .cast(rows.select(self.identity).schema) for f in files])
        if held.num_rows == 0:
            return rows
        marked = held.append_column("_held", pa.array([True] * held.num_rows))
        joined = rows.join(marked, keys=list(self.identity), join_type="left outer")
        return joined.filter(pc.is_null(joined["_held"])).select(rows.column_names).cast(rows.schema)


@dataclass(frozen=True)
class SequenceScope:
    """The sequences of a task's rows in one partition, as ranges a committed file's statistics can be held
    against: the same record has the same sequence, and a batch's stream records span a narrow range, so files
    of other times are not read (a lookup that stays flat as a day's partition grows). Snapshot records (one
    sequence for all) and undecoded ones (none) are looked up as such."""

    low: str | None  # of the stream records
    high: str | None
    snapshot: bool
    undecoded: bool

    @classmethod
    def of(cls, sequences: pa.ChunkedArray) -> SequenceScope:
        stream = pc.filter(sequences, pc.not_equal(sequences, STORED_SNAPSHOT_SEQUENCE))
        bounds = pc.min_max(stream) if len(stream) else None
        return cls(bounds["min"].as_py() if bounds else None, bounds["max"].as_py() if bounds else None,
                   bool(pc.any(pc.equal(sequences, STORED_SNAPSHOT_SEQUENCE)).as_py()), sequences.null_count > 0)

    def may_hold(self, file: Committed) -> bool:
        if file.nulls is None:  # no statistics: it may hold anything
            return True
        if self.undecoded and file.nulls > 0:
            return True
        if file.low is None or file.high is None:  # only undecoded records
            return False
        if self.low is not None and file.low <= self.high and file.high >= self.low:
            return True
        return self.snapshot and file.low <= STORED_SNAPSHOT_SEQUENCE <= file.high

    def may_hold_elsewhere(self, file: Committed) -> bool:
        """An undecoded record has no event time: its partition is its arrival's date or, from a source that
        gives none (the file source), the date it was read. Read again on another day, it may be held in another
        partition, in a file with undecoded records (few: only batches with an unreadable record make one)."""
        return self.undecoded and (file.nulls is None or file.nulls > 0)


def statistics(rows: pa.Table) -> dict:
    """A file's Delta statistics: row count, null counts, min/max of the :data:`BOUNDED_COLUMNS`."""
    bounded = [c for c in BOUNDED_COLUMNS if c in rows.column_names and rows[c].null_count < rows.num_rows]
    bounds = {c: pc.min_max(rows[c]) for c in bounded}
    return {"numRecords": rows.num_rows,
            "minValues": {c: bounds[c]["min"].as_py() for c in bounded},
            "maxValues": {c: bounds[c]["max"].as_py() for c in bounded},
            "nullCount": {c: rows[c].null_count for c in rows.column_names}}


class DeltaFilesAppend:
    """An append-only Delta layer (raw) written by Spark's executors, committed once per batch (module doc)."""

    def __init__(self, tables: DeltaTables, uri: str, frame_of, identity: tuple[str, ...], partition: str):
        self.tables, self.uri, self.frame_of = tables, uri, frame_of
        self.identity, self.partition = identity, partition
        self.delta_tables = (uri,)

    def stage(self, rows: DataFrame, batch_id: int) -> StagedFiles:
        """Spark's tasks write ``rows`` (less those the layer holds) as the batch's files, not committed."""
        return self._staged(rows, batch_id, self.tables.table(self.uri))

    def _staged(self, rows: DataFrame, batch_id: int, table: DeltaTable | None) -> StagedFiles:
        target = FileTarget(self.uri, self.tables.config.storage_options, self.partition, self.identity,
                            f"part-{batch_id:08d}", committed_files(table))
        files = rows.mapInArrow(target.write, to_spark_schema()).collect()
        crash_point("raw-files-written")
        return StagedFiles(to_arrow_schema(rows.schema), files)

    def write(self, batch: LakeBatch) -> Written:
        # files staged ahead are waited for first: the table is then read by this thread only
        staged = batch.raw_staged() if batch.raw_staged is not None else None
        added = 0

        def add(table: DeltaTable | None, commit: CommitProperties) -> None:
            nonlocal added
            files = staged if staged is not None else self._staged(self.frame_of(batch), batch.id, table)
            added = sum(f["num_records"] for f in files.files)
            if files.files:
                self.commit(table, files.schema, files.files, commit)

        if not self.tables.once(self.uri, batch, add):
            return Written(0, (self.uri,))
        return Written(added)

    def commit(self, table: DeltaTable | None, schema: pa.Schema, files, commit: CommitProperties) -> None:
        """One transaction adding ``files`` (rows of :data:`FILE_FIELDS`) to the table, created if need be."""
        now = int(time.time() * 1000)
        adds = [AddAction(f["path"], f["size"], {self.partition: f["partition"]}, now, True, f["stats"])
                for f in files]
        if table is None:
            create_table_with_add_actions(self.uri, Schema.from_arrow(schema), adds, mode="append",
                                          partition_by=[self.partition],
                                          storage_options=self.tables.config.storage_options,
                                          commit_properties=commit)
            return
        if set(schema.names) - set(table.schema().to_arrow().names):
            # a transaction of add actions keeps the table's columns: a new one (a contract's new key) is
            # added first, by an empty append that merges the schema
            write_deltalake(self.uri, schema.empty_table(), mode="append", schema_mode="merge",
                            storage_options=self.tables.config.storage_options)
            table = self.tables.table(self.uri)
        table.create_write_transaction(adds, mode="append", schema=table.schema(), partition_by=[self.partition],
                                       commit_properties=commit)


def committed_files(table: DeltaTable | None) -> tuple[Committed, ...]:
    """The table's files with their partition and sequence statistics (metadata only)."""
    if table is None:
        return ()
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    partition = next((c for c in actions[0] if c.startswith("partition.")), None) if actions else None

    def text(value) -> str | None:
        return None if value is None else str(value)

    return tuple(Committed(a["path"], text(a.get(partition)) if partition else None,
                           text(a.get(f"min.{S.CDC_SEQUENCE}")), text(a.get(f"max.{S.CDC_SEQUENCE}")),
                           a.get(f"null_count.{S.CDC_SEQUENCE}")) for a in actions)


def to_spark_schema() -> str:
    return ", ".join(f"{name} {'long' if kind == pa.int64() else 'string'}" for name, kind in FILE_FIELDS)


__all__ = ["DeltaFilesAppend", "FileTarget", "SequenceScope", "statistics"]
