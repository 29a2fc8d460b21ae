"""A table's existing items as stream records, so that a backfill takes the stream's own path (docs/backfill.md).

Each item read by a Scan, or from a DynamoDB export, becomes an INSERT record of the item whose sequence number is
``0``: lower than every sequence number DynamoDB gives. Under the merge rules (``merge_rules``) a snapshot row
therefore fills a key that no stream event has written, and never replaces one that has; a tombstone (an item
deleted while the snapshot ran) stops it; a second snapshot row of the key ties with the first and changes
nothing. Its event id names the snapshot and the item's content (``snapshot-<digest>``): an item read again,
unchanged, by a resumed or repeated backfill is the same record.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from .. import schema as S
from ..merge_rules import SNAPSHOT_EVENT_PREFIX as EVENT_PREFIX
from ..merge_rules import SNAPSHOT_SEQUENCE


def _json_safe(value: Any) -> Any:
    """boto3 client output -> the JSON DynamoDB writes: binary values (B, BS members) as base64 text."""
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | set | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def snapshot_record(item: Mapping[str, Any], entity: S.EntitySchema, snapshot_time: int, table: str = "") -> dict:
    """The stream record of one item of a snapshot taken at ``snapshot_time`` (epoch seconds): ``item`` is DynamoDB
    typed JSON, as a Scan returns it (boto3's client) or an export line's ``Item`` holds it."""
    image = _json_safe(item)
    digest = hashlib.sha256(json.dumps(image, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    return {
        "eventID": f"{EVENT_PREFIX}{digest}", "eventName": "INSERT", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "eventSourceARN": f"snapshot:{table or entity.name}",
        "dynamodb": {"ApproximateCreationDateTime": snapshot_time, "Keys": {k: image[k] for k in entity.keys},
                     "NewImage": image, "SequenceNumber": SNAPSHOT_SEQUENCE, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    }


def record_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"))


def export_payload(line: Column, entity: S.EntitySchema, snapshot_time: int, table: str = "") -> Column:
    """The stream record (as :func:`snapshot_record` writes it) of one line of a DynamoDB export in the DYNAMODB_JSON
    format (``{"Item": {...}}``), as a Spark expression: the export is read by Spark's executors, never on the
    driver. The item's JSON is kept as the line has it; the key attributes are read from it by name (the
    contract's names are plain identifiers, safe in a JSON path)."""
    item = F.get_json_object(line, "$.Item")
    keys = F.concat(F.lit("{"), F.concat_ws(",", *[
        F.concat(F.lit(json.dumps(k) + ":"), F.get_json_object(line, f"$.Item.{S.check_identifier(k)}"))
        for k in entity.keys]), F.lit("}"))
    head = (f'{{"eventID":"{EVENT_PREFIX}', '","eventName":"INSERT","eventVersion":"1.1","eventSource":"aws:dynamodb",'
            f'"eventSourceARN":{json.dumps("snapshot:" + (table or entity.name))},"dynamodb":{{'
            f'"ApproximateCreationDateTime":{int(snapshot_time)},"Keys":')
    return F.concat(F.lit(head[0]), F.substring(F.sha2(item, 256), 1, 32), F.lit(head[1]), keys,
                    F.lit(',"NewImage":'), item,
                    F.lit(f',"SequenceNumber":"{SNAPSHOT_SEQUENCE}","StreamViewType":"NEW_AND_OLD_IMAGES"}}}}'))
