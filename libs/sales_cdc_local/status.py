"""``sales-cdc status``: where a job is, read from what it leaves behind — the warehouse's ledger, quarantine and
data-quality results, and its checkpoint beside the source — so it answers while the job runs and after it stopped.

The JSON form (``--json``) is :func:`Status.document`; docs/operations.md describes its fields.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from sales_cdc.sql import BATCH_FACTS, LEDGER_TABLE, MergeSql, quote

SCHEMA_VERSION = 1  # of the JSON document; raised when a field changes meaning or goes away


@dataclass
class BatchStatus:
    batch_id: int
    committed_at: str
    staged_rows: int
    upserted_rows: int
    deleted_rows: int
    stale_rows: int
    events_read: int | None = None  # None: a batch recorded before the ledger kept it
    stage_seconds: dict[str, float] = field(default_factory=dict)  # per stage, up to the merge
    quarantined: dict[str, int] = field(default_factory=dict)  # stage -> records (decode, dq, warehouse)
    dq_outcome: str = "not checked"
    failed_rules: dict[str, str] = field(default_factory=dict)  # rule -> its severity


@dataclass
class Status:
    job_name: str
    stream_id: str | None
    batches: list[BatchStatus]  # newest first
    lag: dict = field(default_factory=dict)  # the source's: see file_lag and kinesis_lag

    def document(self) -> dict:
        last = self.batches[0] if self.batches else None
        return {"schema_version": SCHEMA_VERSION, "job_name": self.job_name, "stream_id": self.stream_id,
                "last_batch_id": last.batch_id if last else None,
                "last_committed_at": last.committed_at if last else None,
                "batches": [asdict(b) for b in self.batches], "lag": self.lag}


def read_status(url: str, sql: MergeSql, job_name: str, batches: int = 10) -> Status:
    """The job's latest stream (checkpoint) and its ``batches`` latest committed batches."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (sql.ledger,)).fetchone()[0] is None:
            return Status(job_name, None, [])  # the job has not started in this warehouse yet
        latest = conn.execute(f"SELECT stream_id FROM {sql.ledger} WHERE job_name = %s "
                              "ORDER BY committed_at DESC LIMIT 1", (job_name,)).fetchone()
        if latest is None:
            return Status(job_name, None, [])
        stream_id = latest[0]
        present = _columns(conn, sql)
        facts = ", ".join(quote(c) if c in present else f"NULL AS {quote(c)}" for c in BATCH_FACTS)
        rows = conn.execute(
            f"SELECT batch_id, committed_at, staged_rows, upserted_rows, deleted_rows, stale_rows, {facts} "
            f"FROM {sql.ledger} WHERE job_name = %s AND stream_id = %s ORDER BY batch_id DESC LIMIT %s",
            (job_name, stream_id, batches)).fetchall()
        found = {r[0]: BatchStatus(r[0], r[1].astimezone(UTC).isoformat(), *r[2:7], json.loads(r[7] or "{}"))
                 for r in rows}
        if found:
            _add_quarantine(conn, sql, found)
            _add_quality(conn, sql, job_name, stream_id, found)
    return Status(job_name, stream_id, sorted(found.values(), key=lambda b: -b.batch_id))


def _columns(conn, sql: MergeSql) -> set[str]:
    """The ledger's columns: one a job of an earlier release wrote lacks the newer ones until the job starts again."""
    return {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                       "WHERE table_schema = %s AND table_name = %s", (sql.db_schema, LEDGER_TABLE))}


def _add_quarantine(conn, sql: MergeSql, found: dict[int, BatchStatus]) -> None:
    # quarantine rows carry the batch id, not the stream: a batch id of another stream of the job may add to them
    for batch_id, stage, count in conn.execute(
            f"SELECT {quote('cdc_batch_id')}, stage, count(*) FROM {sql.quarantine} "
            f"WHERE {quote('cdc_batch_id')} = ANY(%s) GROUP BY 1, 2", (list(found),)):
        found[batch_id].quarantined[stage] = count


def _add_quality(conn, sql: MergeSql, job_name: str, stream_id: str, found: dict[int, BatchStatus]) -> None:
    for batch_id, outcome, rule, severity, success in conn.execute(
            f"SELECT batch_id, batch_outcome, rule, severity, success FROM {sql.dq_results} "
            "WHERE job_name = %s AND stream_id = %s AND batch_id = ANY(%s)", (job_name, stream_id, list(found))):
        found[batch_id].dq_outcome = outcome
        if not success:
            found[batch_id].failed_rules[rule] = severity


# --- the source's lag -------------------------------------------------------------------------------------
def _committed_batch(checkpoint: Path) -> int | None:
    commits = [int(p.name) for p in (checkpoint / "commits").glob("*") if p.name.isdigit()]
    return max(commits) if commits else None


def file_lag(checkpoint: Path, source_dir: Path) -> dict:
    """Files in the source folder the job has not read yet (the file source's log in the checkpoint)."""
    read: set[str] = set()
    for log_file in (checkpoint / "sources" / "0").glob("[0-9]*"):  # N and N.compact; not the .crc files
        for line in log_file.read_text().splitlines()[1:]:  # the first line is the log's version
            read.add(Path(json.loads(line)["path"].removeprefix("file://")).name)
    waiting = sorted(p for p in source_dir.glob("*") if p.is_file() and p.name not in read)
    oldest = min((p.stat().st_mtime for p in waiting), default=None)
    return {"source": "files", "committed_batch_id": _committed_batch(checkpoint), "files_not_read": len(waiting),
            "oldest_unread_age_seconds": round(datetime.now(UTC).timestamp() - oldest, 1) if oldest else None}


def kinesis_lag(kinesis, stream_name: str, checkpoint: Path) -> dict:
    """Per shard: the sequence number the last committed batch read up to, and the first record after it (its
    age is how far the job is behind on that shard; none: caught up)."""
    committed = _committed_batch(checkpoint)
    offsets = {} if committed is None else \
        json.loads((checkpoint / "offsets" / str(committed)).read_text().splitlines()[2])
    shards = defaultdict(dict)
    for shard in kinesis.list_shards(StreamName=stream_name)["Shards"]:
        shard_id, read_to = shard["ShardId"], offsets.get(shard["ShardId"], {}).get("seq")
        start = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": read_to} if read_to \
            else {"ShardIteratorType": "TRIM_HORIZON"}
        iterator = kinesis.get_shard_iterator(StreamName=stream_name, ShardId=shard_id, **start)["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=1)["Records"]
        shards[shard_id] = {"read_to_sequence": read_to, "next_unread_sequence": None, "age_seconds": 0.0}
        if records:
            arrived = records[0]["ApproximateArrivalTimestamp"]
            shards[shard_id].update(next_unread_sequence=records[0]["SequenceNumber"],
                                    age_seconds=round((datetime.now(UTC) - arrived).total_seconds(), 1))
    return {"source": "kinesis", "stream": stream_name, "committed_batch_id": committed, "shards": dict(shards),
            "max_age_seconds": max((s["age_seconds"] for s in shards.values()), default=0.0)}


# --- the command ------------------------------------------------------------------------------------------
def show(status: Status, console) -> None:
    """The text form: the last committed batch, the source's lag, a line per recent batch."""
    from rich.table import Table

    if not status.batches:
        console.print(f"job {status.job_name}: no committed batch in this warehouse yet")
    else:
        last = status.batches[0]
        console.print(f"job {status.job_name}: last committed batch {last.batch_id} at {last.committed_at} "
                      f"(stream {status.stream_id})")
    if status.lag:
        console.print(f"lag: {_lag_line(status.lag)}")
    table = Table(title="recent batches (newest first)")
    for column in ("batch", "committed at", "events", "staged", "upserted", "deleted", "stale", "quarantined",
                   "data quality", "failed rules", "seconds to the merge"):
        table.add_column(column)
    for b in status.batches:
        quarantined = ", ".join(f"{stage} {n}" for stage, n in sorted(b.quarantined.items())) or "0"
        rules = ", ".join(f"{rule} ({severity})" for rule, severity in b.failed_rules.items())
        seconds = ", ".join(f"{stage} {s:.2f}" for stage, s in b.stage_seconds.items())
        table.add_row(str(b.batch_id), b.committed_at[:19], "?" if b.events_read is None else str(b.events_read),
                      str(b.staged_rows), str(b.upserted_rows), str(b.deleted_rows), str(b.stale_rows), quarantined,
                      b.dq_outcome, rules, seconds)
    if status.batches:
        console.print(table)


def _lag_line(lag: dict) -> str:
    if lag["source"] == "files":
        age = lag["oldest_unread_age_seconds"]
        return f"{lag['files_not_read']} file(s) not read yet" + (f", the oldest {age:.0f} s old" if age else "")
    behind = {s: v["age_seconds"] for s, v in lag["shards"].items() if v["next_unread_sequence"]}
    if not behind:
        return f"caught up on every shard of {lag['stream']}"
    return f"behind on {len(behind)} shard(s) of {lag['stream']}, by up to {max(behind.values()):.0f} s"


def run_status(args, console) -> int:
    from .embedded import warehouse_connection
    from .parser import warehouse_sql

    with warehouse_connection(args.warehouse_url, args.pg_data_dir) as connection:
        status = read_status(connection.url, warehouse_sql(args), args.job_name, args.batches)
    if args.checkpoint_dir and args.source_dir:
        status.lag = file_lag(args.checkpoint_dir, args.source_dir)
    elif args.checkpoint_dir and args.kinesis_stream:
        from sales_cdc.aws import aws_client

        status.lag = kinesis_lag(aws_client("kinesis", endpoint=args.endpoint_url, region=args.region),
                                 args.kinesis_stream, args.checkpoint_dir)
    if args.json:
        print(json.dumps(status.document(), indent=2))
    else:
        show(status, console)
    return 0
