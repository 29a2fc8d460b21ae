"""The moto server the local path runs, with JSON fast paths for the two record-reading calls.

moto 5.2 serialises every response by walking the botocore shape of each member. For
DynamoDB Streams ``GetRecords`` that is every attribute value of every image: 1.7 s per 1,000 stream
records (measured), so moto, not the pipeline, capped the local path at ~1,300 events/s. Both
services speak AWS's JSON protocol, where a response is the result as JSON with blobs base64-encoded
and timestamps as epoch seconds; these two calls are answered that way directly. The same
records, parsed by botocore, come out identical to moto's own serialiser (tested).

moto's Kinesis shard also finds its newest record by copying all its keys into a list (every put)
and serves ``GetRecords`` by scanning from the shard's first record: both grow with the stream, so a
local stream slowed down the longer it ran (at 2,000 records/s, a third of a core after 30 s). Its
sequence numbers are consecutive integers (moto numbers each record ``newest + 1``), so both are
direct lookups here, with the same answers (tested against moto's own methods).

Run as ``python -m sales_cdc_local.moto_server -H 127.0.0.1 -p 5000`` (moto_server's options); local tooling only
(never in Glue).
"""

from __future__ import annotations

import base64
import calendar
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any


def _unix_time(value: datetime) -> int | float:
    """As moto's serialiser writes a timestamp for the JSON protocol: epoch seconds, millisecond precision."""
    seconds = calendar.timegm(value.timetuple())
    return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds


def _without_nulls(value: Any) -> Any:
    # moto's serialiser leaves absent (None) members out; botocore would read a JSON null the same way
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return _unix_time(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def as_json(result: dict[str, Any]) -> str:
    return json.dumps(_without_nulls(result), default=_encode, separators=(",", ":"))


def _answered_as_json(method: Callable) -> Callable:
    def answer(self) -> str:
        return as_json(method(self).result)  # errors are raised by method() and handled by moto as before

    answer.__wrapped__ = method
    return answer


def _newest_sequence_number(shard) -> int:
    return next(reversed(shard.records), 0)


def _oldest_sequence_number(shard) -> int:
    return next(iter(shard.records), 0)


def _shard_records_from(scan: Callable) -> Callable:
    def get_records(shard, last_sequence_id: str, limit: int | None) -> tuple[list, int, int]:
        """moto's ``Shard.get_records`` (records after ``last_sequence_id``, at most ``limit``; the last one's
        sequence number; milliseconds behind the newest), by key instead of a scan from the first record."""
        records = shard.records
        oldest, newest = _oldest_sequence_number(shard), _newest_sequence_number(shard)
        if newest - oldest + 1 != len(records) or limit == 0:  # not consecutive (moto never numbers so), or
            return scan(shard, last_sequence_id, limit)         # a Limit AWS refuses: moto's own scan answers
        start = max(int(last_sequence_id) + 1, oldest)
        stop = newest + 1 if limit is None else min(newest + 1, start + limit)
        found = [records[n] for n in range(start, stop)]
        if not found:
            return [], int(last_sequence_id), 0
        return found, found[-1].sequence_number, int((records[newest].created_at - found[-1].created_at) * 1000)

    get_records.__wrapped__ = scan
    return get_records


def _targets() -> list[tuple[type, str, Callable[[Callable], Callable]]]:
    """(class, method, the replacement made from moto's method)."""
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
    from moto.kinesis.models import Shard
    from moto.kinesis.responses import KinesisResponse

    return [(DynamoDBStreamsHandler, "get_records", _answered_as_json),
            (KinesisResponse, "get_records", _answered_as_json),
            (Shard, "get_max_sequence_number", lambda _: _newest_sequence_number),
            (Shard, "get_min_sequence_number", lambda _: _oldest_sequence_number),
            (Shard, "get_records", _shard_records_from)]


@contextmanager
def fast_record_reads() -> Iterator[None]:
    """Within the block, moto answers the record-reading calls through the fast paths."""
    originals = [(cls, name, getattr(cls, name), replace) for cls, name, replace in _targets()]
    for cls, name, method, replace in originals:
        setattr(cls, name, replace(method))
    try:
        yield
    finally:
        for cls, name, method, _ in originals:
            setattr(cls, name, method)


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    # werkzeug formats an access-log line per request (to a stderr nobody reads): 8 % of this server's CPU
    # at 2,000 writes/s (profiled), on a machine the job shares. Errors are still logged.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with fast_record_reads():
        moto_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
