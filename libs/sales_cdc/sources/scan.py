"""A table's items by a parallel Scan, as snapshot records (``snapshot``), fed to the running job (``feeds``).

Each segment is scanned by a thread of its own, page by page; a page's records are delivered, then the segment's
position (its LastEvaluatedKey) is saved in the backfill's checkpoint (a file, or an S3 object on Glue), so a
backfill stopped or killed resumes where it was (a page delivered just before a kill is delivered again: the same
records, applied once).
Reads are paced by the read capacity the Scan reports it consumed (``--rate`` units per second, shared by the
segments), so a backfill leaves the table's capacity to its application.
"""

from __future__ import annotations

import base64
import json
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import schema as S
from ..errors import JobError
from ..faults import BACKFILL_POINTS, crash_point
from .feeds import Feed
from .snapshot import snapshot_record


class RateLimit:
    """A token bucket of read capacity units: ``spend`` sleeps while the units spent run ahead of the rate."""

    def __init__(self, units_per_second: float | None):
        self.rate = units_per_second
        self._lock = threading.Lock()
        self._available = units_per_second or 0.0
        self._updated = time.monotonic()

    def spend(self, units: float) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            self._available = min(self.rate, self._available + (now - self._updated) * self.rate) - units
            self._updated = now
            wait = -self._available / self.rate if self._available < 0 else 0.0
        time.sleep(wait)


def _to_json(key: dict | None) -> Any:
    """A LastEvaluatedKey (typed JSON, binaries as bytes) as JSON the checkpoint can hold."""
    if key is None:
        return None
    return {name: {"B64": base64.b64encode(v["B"]).decode()} if "B" in v else v for name, v in key.items()}


def _from_json(key: Any) -> dict | None:
    if key is None:
        return None
    return {name: {"B": base64.b64decode(v["B64"])} if "B64" in v else v for name, v in key.items()}


class LocalText:
    """A checkpoint in a local file, replaced whole (a rename): the old position or the new one, never half."""

    def __init__(self, path: Path):
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def read(self) -> str | None:
        return self.path.read_text() if self.path.exists() else None

    def write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        hidden = self.path.with_name(f".{self.path.name}.tmp")
        hidden.write_text(text)
        os.replace(hidden, self.path)


class S3Text:
    """A checkpoint in an S3 object (the Glue backfill job's): a PUT replaces an object whole."""

    def __init__(self, s3, uri: str):
        self.s3, self.uri = s3, uri
        self.bucket, _, self.key = uri.removeprefix("s3://").partition("/")

    def __str__(self) -> str:
        return self.uri

    def read(self) -> str | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read().decode()
        except self.s3.exceptions.NoSuchKey:
            return None

    def write(self, text: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=text.encode(), ServerSideEncryption="aws:kms")


@dataclass
class ScanCheckpoint:
    """A backfill's progress: its table, segments and snapshot time, and per segment where the next page starts."""

    store: LocalText | S3Text
    table: str
    segments: int
    snapshot_time: int
    positions: dict[str, dict]  # segment -> {"start": LastEvaluatedKey, "done": bool, "items": n, "pages": n}

    @classmethod
    def open(cls, store: LocalText | S3Text, table: str, segments: int) -> ScanCheckpoint:
        """The checkpoint in ``store``, or a new one (snapshot time: now) if there is none yet."""
        text = store.read()
        if text is None:
            positions = {str(s): {"start": None, "done": False, "items": 0, "pages": 0} for s in range(segments)}
            checkpoint = cls(store, table, segments, int(time.time()), positions)
            checkpoint.save()
            return checkpoint
        saved = json.loads(text)
        if (saved["table"], saved["segments"]) != (table, segments):
            raise JobError(f"backfill checkpoint {store} belongs to a backfill of table {saved['table']} with "
                           f"{saved['segments']} segments; resume it with those settings, or give another checkpoint "
                           "for a new backfill")
        return cls(store, saved["table"], saved["segments"], saved["snapshot_time"], saved["positions"])

    def save(self) -> None:
        self.store.write(json.dumps({"table": self.table, "segments": self.segments,
                                     "snapshot_time": self.snapshot_time, "positions": self.positions}))

    @property
    def items(self) -> int:
        return sum(p["items"] for p in self.positions.values())

    @property
    def done(self) -> bool:
        return all(p["done"] for p in self.positions.values())


@dataclass(frozen=True)
class ScanResult:
    items: int  # delivered by this run
    items_in_all: int  # delivered by every run of this backfill (a resumed one included)
    capacity_units: float  # consumed by this run
    seconds: float


class SnapshotScan:
    def __init__(self, dynamodb, table: str, entity: S.EntitySchema, feed: Feed, checkpoint: ScanCheckpoint, *,
                 page_size: int = 1000, rate: float | None = None):
        self.dynamodb, self.table, self.entity, self.feed = dynamodb, table, entity, feed
        self.checkpoint, self.page_size, self.limit = checkpoint, page_size, RateLimit(rate)
        self._lock = threading.Lock()
        self.stop = threading.Event()  # set to stop after the pages in flight (Ctrl-C, SIGTERM)
        self._items = 0
        self._units = 0.0

    def run(self, progress: Callable[[int], None] = lambda n: None) -> ScanResult:
        started = time.monotonic()
        with ThreadPoolExecutor(self.checkpoint.segments, thread_name_prefix="sales-cdc-scan") as pool:
            futures = [pool.submit(self._segment, s, progress) for s in range(self.checkpoint.segments)]
            try:
                for future in futures:
                    future.result()  # a segment's error stops the backfill (the others finish their page)
            except BaseException:  # Ctrl-C too: every segment stops after its page, its position saved
                self.stop.set()
                raise
        return ScanResult(self._items, self.checkpoint.items, self._units, time.monotonic() - started)

    def _segment(self, segment: int, progress: Callable[[int], None]) -> None:
        position = self.checkpoint.positions[str(segment)]
        try:
            while not position["done"] and not self.stop.is_set():
                request = {"TableName": self.table, "Segment": segment, "TotalSegments": self.checkpoint.segments,
                           "Limit": self.page_size, "ReturnConsumedCapacity": "TOTAL"}
                if position["start"] is not None:
                    request["ExclusiveStartKey"] = _from_json(position["start"])
                page = self.dynamodb.scan(**request)
                records = [snapshot_record(item, self.entity, self.checkpoint.snapshot_time, self.table)
                           for item in page.get("Items", [])]
                if records:
                    self.feed.deliver(f"backfill-{self.checkpoint.snapshot_time}-s{segment}-p{position['pages']:07d}",
                                      records)
                crash_point(BACKFILL_POINTS[0])
                self._advance(position, page, len(records))
                progress(len(records))
                self.limit.spend(self._units_of(page))
        except Exception:
            self.stop.set()
            raise

    def _advance(self, position: dict, page: dict, delivered: int) -> None:
        with self._lock:
            position.update(start=_to_json(page.get("LastEvaluatedKey")), done="LastEvaluatedKey" not in page,
                            items=position["items"] + delivered, pages=position["pages"] + 1)
            self.checkpoint.save()
            self._items += delivered

    def _units_of(self, page: dict) -> float:
        """The read capacity the page took: as DynamoDB reports it, else estimated (eventually consistent reads:
        half a unit per 4 KB)."""
        units = (page.get("ConsumedCapacity") or {}).get("CapacityUnits")
        if units is None:
            units = 0.5 * max(1, math.ceil(len(json.dumps(page.get("Items", []), default=str)) / 4096))
        with self._lock:
            self._units += units
        return units
