"""Faker order generator: a reproducible plan of inserts, updates and deletes, written either to the
DynamoDB table (real CDC events then flow through its stream) or straight to fixture files in the Pipe
payload format (offline tests, benchmarks).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from faker import Faker

from . import schema as S
from .records import stream_record, to_json_line

# Unit price range per catalogue product (the GX suite's catalogue check uses the same list).
CATALOGUE: dict[str, tuple[Decimal, Decimal]] = {
    "Laptop": (Decimal("499.00"), Decimal("2499.00")),
    "Phone": (Decimal("199.00"), Decimal("1299.00")),
    "Tablet": (Decimal("149.00"), Decimal("999.00")),
    "Headphones": (Decimal("19.00"), Decimal("399.00")),
    "Charger": (Decimal("9.00"), Decimal("59.00")),
}
MAX_QUANTITY = 5
MAX_BUFFER_SECONDS = 0.2  # with --rate, an insert waits at most this long for its BatchWriteItem


@dataclass(frozen=True)
class Operation:
    op: str  # INSERT, MODIFY, REMOVE
    key: str
    item: dict[str, Any] | None  # full new item (INSERT/MODIFY), None for REMOVE
    old: dict[str, Any] | None  # previous item (MODIFY/REMOVE)


@dataclass
class OrderFactory:
    """Deterministic fake orders for a seed."""

    seed: int = 42
    start: datetime = datetime(2026, 11, 25, tzinfo=UTC)
    _faker: Faker = field(init=False, repr=False)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._faker = Faker()
        self._faker.seed_instance(self.seed)
        self._random = random.Random(self.seed)

    def price(self, product: str) -> Decimal:
        low, high = CATALOGUE[product]
        cents = self._random.randint(int(low * 100), int(high * 100))
        return (Decimal(cents) / 100).quantize(Decimal("0.01"))

    def order(self, n: int) -> dict[str, Any]:
        product = self._random.choice(sorted(CATALOGUE))
        customer = self._random.randint(1, 500)
        return {
            "orderid": str(self._faker.uuid4()),
            "product_name": product,
            "quantity": self._random.randint(1, MAX_QUANTITY),
            "price": self.price(product),
            "customer_id": f"c-{customer:05d}",
            "customer_name": self._faker.name(),
            "created_at": (self.start + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
        }

    def change(self, item: dict[str, Any]) -> dict[str, Any]:
        """A plausible update: quantity or price (a re-priced order) changes."""
        changed = dict(item)
        if self._random.random() < 0.5:
            changed["quantity"] = self._random.choice([q for q in range(1, MAX_QUANTITY + 1) if q != item["quantity"]])
        else:
            changed["price"] = self.price(item["product_name"])
        return changed


def plan(count: int, *, update_share: float = 0.2, delete_share: float = 0.1, seed: int = 42,
         start: datetime | None = None) -> list[Operation]:
    """``count`` operations: inserts, plus updates and deletes of live orders in the given shares.
    Order ``n`` is created ``n`` seconds after ``start`` (default: a fixed date, for reproducible fixtures)."""
    if not (update_share >= 0 and delete_share >= 0 and update_share + delete_share < 1):
        raise ValueError("update_share and delete_share must be >= 0 and add up to less than 1")
    factory = OrderFactory(seed) if start is None else OrderFactory(seed, start)
    chooser = random.Random(seed + 1)
    live: dict[str, dict[str, Any]] = {}
    live_keys: list[str] = []
    operations: list[Operation] = []
    for n in range(count):
        roll = chooser.random()
        if live_keys and roll < update_share:
            key = chooser.choice(live_keys)
            new = factory.change(live[key])
            operations.append(Operation("MODIFY", key, new, live[key]))
            live[key] = new
        elif live_keys and roll < update_share + delete_share:
            index = chooser.randrange(len(live_keys))
            key = live_keys[index]
            live_keys[index] = live_keys[-1]
            live_keys.pop()
            operations.append(Operation("REMOVE", key, None, live.pop(key)))
        else:
            item = factory.order(n)
            live[item["orderid"]] = item
            live_keys.append(item["orderid"])
            operations.append(Operation("INSERT", item["orderid"], item, None))
    return operations


def final_state(operations: list[Operation]) -> dict[str, dict[str, Any]]:
    state: dict[str, dict[str, Any]] = {}
    for operation in operations:
        if operation.op == "REMOVE":
            state.pop(operation.key, None)
        else:
            state[operation.key] = operation.item
    return state


# --- fixture mode ----------------------------------------------------------------------------------
def write_fixtures(operations: list[Operation], folder: Path, *, records_per_file: int = 1000,
                   first_sequence: int = 10**20, start: datetime | None = None) -> list[Path]:
    """The plan as Pipe payload JSON-lines files (what Kinesis would carry), sequence numbers increasing."""
    folder.mkdir(parents=True, exist_ok=True)
    start = start or datetime(2026, 11, 25, tzinfo=UTC)
    paths: list[Path] = []
    for chunk_start in range(0, len(operations), records_per_file):
        chunk = operations[chunk_start:chunk_start + records_per_file]
        path = folder / f"orders-{chunk_start // records_per_file:05d}.jsonl"
        lines = [
            to_json_line(stream_record(
                o.op, first_sequence + chunk_start + i, key=o.key, new=o.item, old=o.old,
                event_time=int(start.timestamp()) + chunk_start + i))
            for i, o in enumerate(chunk)
        ]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


# --- DynamoDB mode ---------------------------------------------------------------------------------
def dynamodb_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if v is not None}


def paced(operations: list[Operation], rate: float | None) -> Iterator[Operation]:
    """Yield operations no faster than ``rate`` per second (None: as fast as DynamoDB takes them)."""
    started = time.monotonic()
    for n, operation in enumerate(operations):
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield operation


def _put_batch(dynamodb, table_name: str, items: list[dict[str, Any]], max_rounds: int = 10) -> None:
    """BatchWriteItem, re-sending UnprocessedItems with backoff (throttling inside a call is botocore's)."""
    requests = [{"PutRequest": {"Item": dynamodb_item(item)}} for item in items]
    for attempt in range(max_rounds):
        if not requests:
            return
        response = dynamodb.batch_write_item(RequestItems={table_name: requests})
        requests = response.get("UnprocessedItems", {}).get(table_name, [])
        if requests:
            time.sleep(min(2.0, 0.05 * 2**attempt))
    raise RuntimeError(f"{len(requests)} items still unprocessed after {max_rounds} rounds")


def write_to_dynamodb(operations: list[Operation], dynamodb, table_name: str, *, rate: float | None = None,
                      progress=None) -> Counter:
    """Write the plan to DynamoDB (``dynamodb`` is a boto3 resource): inserts in BatchWriteItem
    batches of 25, changes with UpdateItem / DeleteItem. Pending inserts are flushed before any change,
    so a change never overtakes the insert it modifies (UpdateItem would otherwise create the item)."""
    counts: Counter = Counter()
    key = S.ORDERS.key
    table = dynamodb.Table(table_name)
    pending: list[dict[str, Any]] = []
    pending_since = 0.0

    def flush() -> None:
        _put_batch(dynamodb, table_name, pending)
        pending.clear()

    for operation in paced(operations, rate):
        if operation.op == "INSERT":
            if not pending:
                pending_since = time.monotonic()
            pending.append(operation.item)
            # full batch, or (paced runs) an insert waited long enough: freshness over batch size
            if len(pending) == 25 or (rate and time.monotonic() - pending_since > MAX_BUFFER_SECONDS):
                flush()
        else:
            flush()
            if operation.op == "MODIFY":
                changed = {k: v for k, v in operation.item.items() if k != key and operation.old.get(k) != v}
                table.update_item(
                    Key={key: operation.key},
                    UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(changed))),
                    ExpressionAttributeNames={f"#a{i}": k for i, k in enumerate(changed)},
                    ExpressionAttributeValues={f":v{i}": v for i, v in enumerate(changed.values())})
            else:
                table.delete_item(Key={key: operation.key})
        counts[operation.op] += 1
        if progress is not None:
            progress()
    flush()
    return counts
