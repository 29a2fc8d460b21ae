"""Putting records on Kinesis as the EventBridge Pipe does: PutRecords calls of at most 500 entries and 5 MB,
only the failed entries sent again, with backoff. The local Pipe emulator and the backfill (which feeds a table's
snapshot to the running job through its stream) use it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

MAX_PUT_RECORDS = 500  # entries per PutRecords call
MAX_PUT_BYTES = 5 * 1024 * 1024 - 64 * 1024  # a call's payload, with room for the partition keys


def _calls(entries: list[dict]) -> Iterator[list[dict]]:
    call: list[dict] = []
    size = 0
    for entry in entries:
        entry_size = len(entry["Data"]) + len(entry["PartitionKey"])
        if call and (len(call) == MAX_PUT_RECORDS or size + entry_size > MAX_PUT_BYTES):
            yield call
            call, size = [], 0
        call.append(entry)
        size += entry_size
    if call:
        yield call


def put_records(kinesis, stream_name: str, entries: list[dict], max_rounds: int = 10) -> int:
    """Put ``entries`` (``{"Data": bytes, "PartitionKey": str}``) on ``stream_name``; the number put. Throttled or
    failed entries are sent again (alone, so that no entry is put twice by this call); after ``max_rounds`` rounds
    of failures, RuntimeError."""
    for pending in _calls(entries):
        for attempt in range(max_rounds):
            response = kinesis.put_records(StreamName=stream_name, Records=pending)
            if not response.get("FailedRecordCount"):
                break
            pending = [e for e, r in zip(pending, response["Records"], strict=True) if "ErrorCode" in r]
            log.warning("%s Kinesis entries failed (%s); re-sending them", len(pending),
                        response["Records"][0].get("ErrorCode") if response["Records"] else "?")
            time.sleep(min(2.0, 0.05 * 2**attempt))
        else:
            raise RuntimeError(f"{len(pending)} records still failing after {max_rounds} PutRecords rounds")
    return len(entries)
