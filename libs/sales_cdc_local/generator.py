"""Faker generator: a reproducible plan of inserts, updates and deletes of a contract's items, written either
to the DynamoDB table (real CDC events then flow through its stream) or straight to fixture files in the
Pipe payload format (offline tests, benchmarks). The orders contract gets realistic orders (catalogue
products and prices); any other contract gets random values of each attribute's type.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from faker import Faker
from pyspark.sql import types as T

from sales_cdc import schema as S

from .records import item_key, stream_record, to_json_line

# Unit price range per catalogue product (the GX suite's catalogue check uses the same list).
CATALOGUE: dict[str, tuple[Decimal, Decimal]] = {
    "Laptop": (Decimal("499.00"), Decimal("2499.00")),
    "Phone": (Decimal("199.00"), Decimal("1299.00")),
    "Tablet": (Decimal("149.00"), Decimal("999.00")),
    "Headphones": (Decimal("19.00"), Decimal("399.00")),
    "Charger": (Decimal("9.00"), Decimal("59.00")),
}
MAX_QUANTITY = 5
DEFAULT_START = datetime(2026, 11, 25, tzinfo=UTC)
MAX_BUFFER_SECONDS = 0.2  # with --rate, an insert waits at most this long for its BatchWriteItem


@dataclass(frozen=True)
class Operation:
    op: str  # INSERT, MODIFY, REMOVE
    key: tuple  # the item's key values: partition key, then sort key if the table has one
    item: dict[str, Any] | None  # full new item (INSERT/MODIFY), None for REMOVE
    old: dict[str, Any] | None  # previous item (MODIFY/REMOVE)


class ItemFactory(Protocol):
    def item(self, n: int) -> dict[str, Any]: ...

    def change(self, item: dict[str, Any]) -> dict[str, Any]: ...


class _Seeded:
    """A Faker and a random generator, both seeded: the same seed makes the same items."""

    def __init__(self, seed: int = 42, start: datetime = DEFAULT_START) -> None:
        self.seed, self.start = seed, start
        self._faker = Faker()
        self._faker.seed_instance(seed)
        self._random = random.Random(seed)


class OrderFactory(_Seeded):
    """The orders flavour: deterministic fake orders for a seed, within the orders suite's business rules."""

    def price(self, product: str) -> Decimal:
        low, high = CATALOGUE[product]
        cents = self._random.randint(int(low * 100), int(high * 100))
        return (Decimal(cents) / 100).quantize(Decimal("0.01"))

    def item(self, n: int) -> dict[str, Any]:
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


class ContractFactory(_Seeded):
    """Items of any contract: each attribute a random value of its type (optional ones absent one time in
    five), keys unique per item (with a sort key, several items share a partition)."""

    def __init__(self, entity: S.EntitySchema, seed: int = 42, start: datetime = DEFAULT_START) -> None:
        super().__init__(seed, start)
        self.entity = entity

    def item(self, n: int) -> dict[str, Any]:
        item = {k: self._key_value(f, n) for k, f in zip(self.entity.keys, self.entity.key_fields, strict=True)}
        for f in self.entity.fields:
            if f.name not in item and (f.required or self._random.random() < 0.8):
                item[f.name] = self.value(f, n)
        return item

    def change(self, item: dict[str, Any]) -> dict[str, Any]:
        candidates = [f for f in self.entity.fields if f.name not in self.entity.keys]
        if not candidates:
            return dict(item)
        for _ in range(10):  # a boolean or a short set can come out the same: an update changes something
            changed_field = self._random.choice(candidates)
            value = self.value(changed_field, self._random.randint(0, 10**6))
            if value != item.get(changed_field.name):
                return {**item, changed_field.name: value}
        return dict(item)

    def _key_value(self, key: S.Field, n: int) -> Any:
        # a sort key makes items share partitions: partition = n // 4, sort = n
        number = n // 4 if len(self.entity.keys) == 2 and key.name == self.entity.keys[0] else n
        if key.ddb_type == "N":
            return number if not isinstance(key.spark_type, T.DecimalType) else Decimal(number)
        if key.ddb_type == "B":
            return f"k-{number:08d}".encode()
        return f"{key.name[:8]}-{number:08d}"

    def value(self, f: S.Field, n: int) -> Any:
        """A value of ``f``'s column type, as its record (``column_types``) makes one."""
        return f.column_type.sample(self._random, n, f.ddb_type, self.start)


ORDER_COLUMNS = frozenset({"orderid", "product_name", "quantity", "price", "customer_id", "customer_name",
                           "created_at"})


def factory_for(entity: S.EntitySchema, seed: int = 42, start: datetime = DEFAULT_START) -> ItemFactory:
    """The orders flavour for the orders contract (catalogue products, prices in range), else items made
    from the contract's types alone."""
    if entity.keys == ("orderid",) and set(entity.names) == ORDER_COLUMNS:
        return OrderFactory(seed, start)
    return ContractFactory(entity, seed, start)


def plan(count: int, *, entity: S.EntitySchema, update_share: float = 0.2, delete_share: float = 0.1,
         seed: int = 42, start: datetime | None = None) -> list[Operation]:
    """``count`` operations on ``entity``'s table: inserts, plus updates and deletes of live items in the
    given shares. Item ``n`` is created ``n`` seconds after ``start`` (default: a fixed date, for
    reproducible fixtures)."""
    if not (update_share >= 0 and delete_share >= 0 and update_share + delete_share < 1):
        raise ValueError("update_share and delete_share must be >= 0 and add up to less than 1")
    factory = factory_for(entity, seed, start or DEFAULT_START)
    chooser = random.Random(seed + 1)
    live: dict[tuple, dict[str, Any]] = {}
    live_keys: list[tuple] = []
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
            item = factory.item(n)
            key = tuple(item[k] for k in entity.keys)
            live[key] = item
            live_keys.append(key)
            operations.append(Operation("INSERT", key, item, None))
    return operations


def final_state(operations: list[Operation]) -> dict[tuple, dict[str, Any]]:
    state: dict[tuple, dict[str, Any]] = {}
    for operation in operations:
        if operation.op == "REMOVE":
            state.pop(operation.key, None)
        else:
            state[operation.key] = operation.item
    return state


# --- fixture mode ----------------------------------------------------------------------------------
def write_fixtures(operations: list[Operation], folder: Path, *, entity: S.EntitySchema, records_per_file: int = 1000,
                   first_sequence: int = 10**20, start: datetime | None = None,
                   table: str | None = None) -> list[Path]:
    """The plan as Pipe payload JSON-lines files (what Kinesis would carry), sequence numbers increasing."""
    folder.mkdir(parents=True, exist_ok=True)
    start = start or DEFAULT_START
    paths: list[Path] = []
    for chunk_start in range(0, len(operations), records_per_file):
        chunk = operations[chunk_start:chunk_start + records_per_file]
        path = folder / f"{entity.name}-{chunk_start // records_per_file:05d}.jsonl"
        lines = [
            to_json_line(stream_record(
                o.op, first_sequence + chunk_start + i, entity=entity, key=o.key, new=o.item, old=o.old, table=table,
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


def put_batch(dynamodb, table_name: str, items: list[dict[str, Any]], max_rounds: int = 10) -> None:
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


def write_to_dynamodb(operations: list[Operation], dynamodb, table_name: str, *, entity: S.EntitySchema,
                      rate: float | None = None, progress=None) -> Counter:
    """Write the plan to DynamoDB (``dynamodb`` is a boto3 resource): inserts in BatchWriteItem
    batches of 25, changes with UpdateItem / DeleteItem. Pending inserts are flushed before any change,
    so a change never overtakes the insert it modifies (UpdateItem would otherwise create the item)."""
    counts: Counter = Counter()
    table = dynamodb.Table(table_name)
    pending: list[dict[str, Any]] = []
    pending_since = 0.0

    def flush() -> None:
        put_batch(dynamodb, table_name, pending)
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
            _apply_change(table, entity, operation)
        counts[operation.op] += 1
        if progress is not None:
            progress()
    flush()
    return counts


def _apply_change(table, entity: S.EntitySchema, operation: Operation) -> None:
    """A MODIFY as UpdateItem of the attributes it changes (none: nothing to send), a REMOVE as DeleteItem."""
    key = item_key(entity, operation.key)
    if operation.op == "REMOVE":
        table.delete_item(Key=key)
        return
    changed = {k: v for k, v in operation.item.items() if k not in entity.keys and operation.old.get(k) != v}
    if changed:  # an UpdateItem needs at least one action
        table.update_item(
            Key=key, UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(changed))),
            ExpressionAttributeNames={f"#a{i}": k for i, k in enumerate(changed)},
            ExpressionAttributeValues={f":v{i}": v for i, v in enumerate(changed.values())})
