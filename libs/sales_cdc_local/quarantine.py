"""``sales-cdc quarantine list | show | replay``: the records the job set aside, read from the warehouse's
quarantine table, and sent through the job again once a rule or the contract is fixed (docs/operations.md).

A replay is a run of the job (the same contract, suites, lake and warehouse as ``run`` is given) over the selected
records' payloads, from a folder of its own with a checkpoint of its own: its batches enter the ledger under that
checkpoint's stream, the merge's sequence guard keeps an old record from overwriting newer data, and raw and
quarantine hold a record once however often it comes. The selection's id (the hash of its records) is recorded in
``quarantine_replays``, so the same replay asked for twice runs once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from sales_cdc import schema as S
from sales_cdc.sql import MergeSql, quote

from .parser import warehouse_sql

REPLAYS_TABLE = "quarantine_replays"
# A stream record's id is its payload's SHA-256 (transforms.record_id): the same for rows quarantined before the
# column existed
RECORD_IDENTITY = (f"COALESCE(q.{quote(S.RECORD_ID)}, "
                   f"encode(sha256(convert_to(COALESCE(q.{quote(S.PAYLOAD)}, ''), 'UTF8')), 'hex'))")
LISTED = ("quarantined_at", S.CDC_BATCH_ID, "stage", "record_key", S.QUARANTINE_REASON, S.RECORD_ID)


@dataclass(frozen=True)
class Selection:
    """Which quarantined records: every filter given must hold (none given: all of them)."""

    batch: int | None = None
    stage: str | None = None
    rule: str | None = None  # a rule's name (or part of it) in the reason
    since: datetime | None = None
    key: str | None = None
    limit: int | None = None

    def where(self) -> tuple[str, list]:
        clauses, params = ["TRUE"], []
        for clause, value in ((f"{quote(S.CDC_BATCH_ID)} = %s", self.batch), ("stage = %s", self.stage),
                              (f"strpos({quote(S.QUARANTINE_REASON)}, %s) > 0", self.rule),
                              ("quarantined_at >= %s", self.since), ("record_key = %s", self.key)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " AND ".join(clauses), params


def select(url: str, sql: MergeSql, selection: Selection, columns: tuple[str, ...] = LISTED) -> list[dict]:
    """The selected quarantine rows, oldest first, with when each was replayed (None: never)."""
    where, params = selection.where()
    replays = sql.qualified(REPLAYS_TABLE)
    listed = ", ".join(f"{RECORD_IDENTITY} AS {quote(c)}" if c == S.RECORD_ID else f"q.{quote(c)}" for c in columns)
    query = (f"SELECT {listed}, (SELECT max(r.replayed_at) FROM {replays} r WHERE r.record_id = {RECORD_IDENTITY}"
             f" AND r.stage = q.stage) AS replayed_at FROM {sql.quarantine} q WHERE {where} "
             f"ORDER BY q.quarantined_at, q.{quote(S.CDC_BATCH_ID)}" + (" LIMIT %s" if selection.limit else ""))
    with psycopg.connect(url) as conn:
        ensure_replays_table(conn, sql)
        cursor = conn.execute(query, [*params, *([selection.limit] if selection.limit else [])])
        names = [d.name for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]


def ensure_replays_table(conn, sql: MergeSql) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {sql.qualified(REPLAYS_TABLE)} (replay_id TEXT NOT NULL, "
                 "record_id TEXT NOT NULL, stage TEXT NOT NULL, replayed_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                 "PRIMARY KEY (replay_id, record_id, stage))")


def replay_id(rows: list[dict]) -> str:
    """The selection's identity: the same records (and stages), the same id."""
    identities = sorted(f"{r[S.RECORD_ID]}/{r['stage']}" for r in rows)
    return hashlib.sha256("\n".join(identities).encode()).hexdigest()[:16]


def replayed_before(url: str, sql: MergeSql, replay: str) -> datetime | None:
    with psycopg.connect(url) as conn:
        ensure_replays_table(conn, sql)
        found = conn.execute(f"SELECT max(replayed_at) FROM {sql.qualified(REPLAYS_TABLE)} WHERE replay_id = %s",
                             (replay,)).fetchone()
    return found[0]


def write_payloads(rows: list[dict], inbox: Path) -> tuple[int, int]:
    """The records' payloads, one per line, as the file source reads them; (written, not replayable: a payload
    with a line break would be read as two records)."""
    inbox.mkdir(parents=True, exist_ok=True)
    payloads = list(dict.fromkeys(r[S.PAYLOAD] for r in rows if r[S.PAYLOAD] is not None))  # a record once
    lines = [p for p in payloads if "\n" not in p and "\r" not in p]
    (inbox / "records.jsonl").write_text("".join(line + "\n" for line in lines))
    return len(lines), len(rows) - len(lines)


def mark_replayed(url: str, sql: MergeSql, replay: str, rows: list[dict]) -> None:
    with psycopg.connect(url) as conn:
        ensure_replays_table(conn, sql)
        with conn.cursor() as cursor:
            cursor.executemany(f"INSERT INTO {sql.qualified(REPLAYS_TABLE)} (replay_id, record_id, stage) "
                               "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                               [(replay, r[S.RECORD_ID], r["stage"]) for r in rows])


# --- the commands -----------------------------------------------------------------------------------------
REPLAY_SUFFIX = "-replay"  # a replay's job name: its ledger rows and results stay apart from the stream's


def _selection(args) -> Selection:
    return Selection(args.batch, args.stage, args.rule, args.since, args.key, args.limit)


def run_list(args, console) -> int:
    from rich.table import Table

    from .embedded import warehouse_connection

    with warehouse_connection(args.warehouse_url, args.pg_data_dir) as connection:
        rows = select(connection.url, warehouse_sql(args), _selection(args))
    table = Table(title=f"{len(rows)} quarantined record(s)")
    for column in ("quarantined at", "batch", "stage", "key", "reason", "replayed at"):
        table.add_column(column)
    for r in rows:
        replayed = r["replayed_at"].isoformat(timespec="seconds") if r["replayed_at"] else ""
        table.add_row(r["quarantined_at"].isoformat(timespec="seconds"), str(r[S.CDC_BATCH_ID]), r["stage"],
                      r["record_key"] or "", r[S.QUARANTINE_REASON], replayed)
    console.print(table)
    return 0


def run_show(args, console) -> int:
    from .embedded import warehouse_connection

    with warehouse_connection(args.warehouse_url, args.pg_data_dir) as connection:
        rows = select(connection.url, warehouse_sql(args), _selection(args), (*LISTED, S.CDC_EVENT_ID, S.PAYLOAD))
    for r in rows:
        print(json.dumps({**r, S.PAYLOAD: _parsed(r[S.PAYLOAD])}, indent=2, default=str))
    return 0


def _parsed(payload: str | None):
    try:
        return json.loads(payload) if payload else payload
    except ValueError:  # not JSON (a bad record): shown as it is
        return payload


def run_replay(args, console) -> int:
    """Run the selected records through the job again (see the module's docstring)."""
    from dataclasses import replace

    from sales_cdc.config import FileSource, StreamConfig
    from sales_cdc.job import build_spark, run_stream
    from sales_cdc.local_job import job_config_of

    from .embedded import warehouse_connection

    config = job_config_of(args)
    config = replace(config, job_name=config.job_name + REPLAY_SUFFIX)
    sql = warehouse_sql(args)
    with warehouse_connection(args.warehouse_url, args.pg_data_dir) as connection:
        rows = select(connection.url, sql, _selection(args), (*LISTED, S.PAYLOAD))
        if not rows:
            console.print("no quarantined record matches: nothing to replay")
            return 0
        replay = replay_id(rows)
        done = replayed_before(connection.url, sql, replay)
        if done is not None:
            console.print(f"replay {replay} of these {len(rows)} record(s) ran at {done:%Y-%m-%d %H:%M:%S %Z}: "
                          "nothing to do (select other records, or fix them first)")
            return 0
        work = args.replay_dir / replay
        written, unreadable = write_payloads(rows, work / "inbox")
        stream = StreamConfig(FileSource(work / "inbox"), work / "checkpoint")
        summary = run_stream(build_spark(config.job_name, stream.shuffle_partitions), config, stream, connection.url)
        mark_replayed(connection.url, sql, replay, rows)
    totals = summary.totals()
    again = sum(b.merge.quarantined_rows for b in summary.batches)  # at every stage, the warehouse's included
    console.print(f"replay {replay}: {written} record(s) replayed, {written - again} now pass "
                  f"({totals['rows upserted']} upserted, {totals['rows deleted']} deleted, "
                  f"{totals['stale events ignored (older than stored)']} older than what is stored, so skipped), "
                  f"{again} quarantined again" + (f"; {unreadable} not replayable (a payload with a line break)"
                                                  if unreadable else ""), soft_wrap=True)
    return 0
