"""Build DynamoDB stream records in the EventBridge Pipe payload format (docs/design.md §1).

Used by the fixture builder, the tests and (later) the generator's fixture mode, so every producer
of test data writes the same shape AWS does. Images are typed with boto3's ``TypeSerializer``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeSerializer

from sales_cdc import schema as S

_serializer = TypeSerializer()
def stream_arn(table: str) -> str:
    """A stream ARN of ``table``, as records carry it in ``eventSourceARN``."""
    return f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-11-25T00:00:00.000"


def json_safe(value: Any, *, sort_sets: bool = False) -> Any:
    """boto3 output -> the JSON AWS puts in stream records: binary values become base64 text and
    datetimes epoch seconds. ``sort_sets`` orders SS/NS/BS members (stable fixtures)."""
    if isinstance(value, dict):
        if sort_sets and len(value) == 1 and next(iter(value)) in ("SS", "NS", "BS"):
            tag, members = next(iter(value.items()))
            return {tag: sorted(json_safe(m, sort_sets=True) for m in members)}
        return {k: json_safe(v, sort_sets=sort_sets) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v, sort_sets=sort_sets) for v in value]
    if isinstance(value, (Binary, bytes, bytearray)):
        raw = value.value if isinstance(value, Binary) else bytes(value)
        return base64.b64encode(raw).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


def to_typed_image(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain item (str, int, Decimal, bool, None, bytes, set, list, dict) -> DynamoDB typed JSON."""
    def prepare(v: Any) -> Any:
        if isinstance(v, float):
            raise TypeError("use Decimal, not float, for DynamoDB numbers")
        if isinstance(v, datetime):
            return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return v

    return json_safe({k: _serializer.serialize(prepare(v)) for k, v in item.items()}, sort_sets=True)


def item_key(entity: S.EntitySchema, key: Any) -> dict[str, Any]:
    """``key`` as DynamoDB's Key of an item: a mapping of the key attributes as it is, or the value of a
    one-attribute key, or a tuple of the partition and sort key values."""
    if isinstance(key, Mapping):
        return {k: key[k] for k in entity.keys}
    values = key if isinstance(key, tuple) else (key,)
    if len(values) != len(entity.keys):
        raise ValueError(f"{entity.name}: a key is ({', '.join(entity.keys)}), got {key!r}")
    return dict(zip(entity.keys, values, strict=True))


def stream_record(
    op: str,
    sequence: int | str,
    *,
    entity: S.EntitySchema,
    key: Any,
    new: Mapping[str, Any] | None = None,
    old: Mapping[str, Any] | None = None,
    event_time: datetime | int | None = None,
    event_id: str | None = None,
    table: str | None = None,
) -> dict[str, Any]:
    """One stream record as the Pipe puts it on Kinesis (INSERT: new only, REMOVE: old only); ``key`` as
    :func:`item_key` takes it; ``table`` names the source table in ``eventSourceARN`` (default: the entity)."""
    if isinstance(event_time, datetime):
        event_time = int(event_time.timestamp())
    keys = item_key(entity, key)
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": event_time if event_time is not None else 1764028800,
        "Keys": to_typed_image(keys),
        "SequenceNumber": str(sequence),
        "SizeBytes": 100,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new is not None:
        dynamodb["NewImage"] = to_typed_image(new)
    if old is not None:
        dynamodb["OldImage"] = to_typed_image(old)
    return {
        "eventID": event_id or f"{op.lower()}-{'-'.join(str(v) for v in keys.values())}-{sequence}",
        "eventName": op,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": stream_arn(table or entity.name),
        "dynamodb": dynamodb,
    }


def to_json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=_decimal_default)


def _decimal_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
