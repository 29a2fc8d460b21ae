"""Draft a table contract from data: a sample of a DynamoDB table (Scan) or a folder of Pipe payload files.

For every attribute it reports the DynamoDB types seen and the share of items that have it, and proposes a
column type: ``N`` values become ``integer`` / ``bigint`` when they are whole, ``decimal(p,s)`` wide enough
for every value seen, ``double`` beyond 38 digits; ``S`` values that all parse as ISO-8601 become
``timestamp`` or ``date``; ``M`` / ``L`` become ``json``. Attributes seen with more than one type, or as
sets, binary or NULL only, are left out (they stay in ``unmapped_attributes``) with a comment saying why.
An attribute every sampled item has is proposed ``required``. The draft is meant to be read and edited,
then checked with ``sales-cdc contract check``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from sales_cdc import schema as S

INT32 = 2**31 - 1
DOMINANT_SHARE = 0.9  # an attribute seen with another type in fewer items gets the main one (the rest quarantine)
INT64 = 2**63 - 1


@dataclass
class AttributeStats:
    types: Counter = field(default_factory=Counter)
    numbers: list[Decimal] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def add(self, value: dict[str, Any]) -> None:
        for tag, raw in value.items():
            self.types[tag] += 1
            if tag == "N":
                try:
                    self.numbers.append(Decimal(raw))
                except (InvalidOperation, TypeError):
                    self.types["N (not a number)"] += 1
            elif tag == "S" and len(self.texts) < 1000:
                self.texts.append(raw)


@dataclass
class Sample:
    table: str = "MyTable"  # the stream records' eventSourceARN names it; a placeholder otherwise
    items: int = 0
    key: list[str] = field(default_factory=list)
    attributes: dict[str, AttributeStats] = field(default_factory=dict)

    def add(self, item: dict[str, dict[str, Any]]) -> None:
        self.items += 1
        for name, value in item.items():
            self.attributes.setdefault(name, AttributeStats()).add(value)


def sample_table(client, table: str, limit: int = 1000) -> Sample:
    """Up to ``limit`` items of ``table`` (a paginated Scan) and its key schema."""
    sample = Sample(table=table)
    described = client.describe_table(TableName=table)["Table"]
    sample.key = [k["AttributeName"] for k in sorted(described["KeySchema"], key=lambda k: k["KeyType"] != "HASH")]
    for page in client.get_paginator("scan").paginate(TableName=table, PaginationConfig={"MaxItems": limit}):
        for item in page.get("Items", []):
            sample.add(item)
    return sample


def _records(folder: Path) -> Iterator[dict[str, Any]]:
    """The stream records of the folder's files (lines that are not one are skipped)."""
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the job would quarantine it; it says nothing about the table
            if isinstance(record, dict) and isinstance(record.get("dynamodb"), dict):
                yield record


def sample_payloads(folder: Path, limit: int = 10_000) -> Sample:
    """The images (new, else old) of up to ``limit`` stream records in ``folder``'s ``*.jsonl`` files."""
    sample = Sample()
    keys: Counter = Counter()
    tables: Counter = Counter()
    for count, record in enumerate(_records(folder)):
        if count >= limit:
            break
        ddb = record["dynamodb"]
        arn = str(record.get("eventSourceARN", ""))
        if ":table/" in arn:
            tables[arn.split(":table/", 1)[1].split("/", 1)[0]] += 1
        keys.update(list(ddb.get("Keys") or {}))
        image = ddb.get("NewImage") or ddb.get("OldImage")
        if isinstance(image, dict):
            sample.add(image)
    sample.key = [name for name, _ in keys.most_common(2)]
    if tables:
        sample.table = tables.most_common(1)[0][0]
    return sample


def _is_iso(texts: Iterable[str], kind) -> bool:
    texts = list(texts)
    try:
        return bool(texts) and all(kind.fromisoformat(t.replace("Z", "+00:00")) for t in texts)
    except ValueError:
        return False


def _number_type(numbers: list[Decimal]) -> str:
    if not numbers:
        return "integer"
    if all(n == n.to_integral_value() for n in numbers):
        biggest = max(abs(n) for n in numbers)
        return "integer" if biggest <= INT32 else "bigint" if biggest <= INT64 else "decimal(38,0)"
    scale = max(max(0, -n.as_tuple().exponent) for n in numbers)
    whole = max(len(str(abs(n).to_integral_value(rounding="ROUND_DOWN"))) for n in numbers)
    precision = whole + scale
    return f"decimal({max(precision, 10)},{scale})" if precision <= 38 else "double"


def propose(name: str, stats: AttributeStats) -> tuple[dict[str, Any] | None, str]:
    """(the attribute's contract entry, or None to leave it unmapped; why)."""
    typed = Counter({t: c for t, c in stats.types.items() if t in S.DDB_TYPES and t != "NULL"})
    if not typed:
        return None, "only NULL: left unmapped"
    tag, count = typed.most_common(1)[0]
    if count < DOMINANT_SHARE * sum(typed.values()):
        return None, f"seen as {', '.join(sorted(typed))}: left unmapped (one DynamoDB type per column)"
    if tag == "N":
        return {"dynamodb": "N", "type": _number_type(stats.numbers)}, ""
    if tag == "S":
        kind = "timestamp" if _is_iso(stats.texts, datetime) and not _is_iso(stats.texts, date) else \
            "date" if _is_iso(stats.texts, date) else "string"
        return {"dynamodb": "S", "type": kind}, ""
    if tag == "BOOL":
        return {"dynamodb": "BOOL", "type": "boolean"}, ""
    if tag in ("M", "L", "SS", "NS", "BS"):
        return {"dynamodb": tag, "type": "json"}, ""
    return None, f"a {tag} attribute: left unmapped (kept as typed JSON)"


def draft(sample: Sample, entity: str | None = None) -> str:
    """The draft contract as YAML text, with the evidence per attribute as comments."""
    table = sample.table
    if not sample.items:
        raise ValueError(f"no items to infer a contract from ({table})")
    entity = entity or "".join(c if c.isalnum() else "_" for c in table.lower()).strip("_")[:63] or "entity"
    lines = [f"# Draft contract inferred from {sample.items} items of {table}: read it, edit it, then",
             "# sales-cdc contract check <this file>  (format: docs/contracts.md)"]
    document: dict[str, Any] = {"table": table, "entity": entity,
                                "key": dict(zip(("partition", "sort"), sample.key, strict=False)), "unmapped": "keep",
                                "attributes": {}}
    if len(sample.key) > 1:
        lines.append("# key: partition then sort key; from stream records the order is a guess: check it against "
                     "the table's KeySchema")
    notes = []
    for name in sorted(sample.attributes, key=lambda n: (n not in sample.key, n)):
        stats = sample.attributes[name]
        present = sum(stats.types[t] for t in stats.types if t != "N (not a number)")
        share = present / sample.items
        entry, why = propose(name, stats)
        seen = ", ".join(f"{t} {c}" for t, c in sorted(stats.types.items()))
        if entry is None or not _column_name(name):
            notes.append(f"# {name}: {why or 'not a column name (lower-case letters, digits, _)'}; seen {seen}")
            continue
        entry["required"] = share == 1.0 and stats.types[entry["dynamodb"]] == sample.items
        entry["description"] = f"seen in {share:.1%} of the sampled items ({seen})"
        document["attributes"][name] = entry
    lines += notes
    return "\n".join(lines) + "\n" + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def _column_name(name: str) -> bool:
    try:
        S.check_identifier(name)
    except ValueError:
        return False
    return name not in S.RESERVED_COLUMNS
