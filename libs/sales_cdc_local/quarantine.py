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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from sales_cdc import schema as S
from sales_cdc.sql import MergeSql, quote

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
