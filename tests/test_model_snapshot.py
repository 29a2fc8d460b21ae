"""A backfill's snapshot and the live stream together, against the table's true final state (hypothesis).

Each history is a few items of a table that existed before its stream started (or not), then changed while the
stream ran: updates, deletes, re-inserts. A snapshot reads each item at a random moment after the stream started
(a Scan reads items one after another while the table keeps changing), so it may see an item before, between or
after its changes, or not at all when it was deleted at that moment. The snapshot's records (sequence 0,
``sources.snapshot``) are delivered among the stream's records in any order, with the stream's redeliveries,
late events, random batch cuts and replayed batches; sometimes the backfill runs twice.

Whatever the order, every sink must end equal to the table as it is after its last change
(docs/backfill.md gives the argument): the last stream event of an item wins; an item no stream event touched
holds its snapshot row; an item deleted during the snapshot stays deleted.

``SALES_CDC_MODEL_HISTORIES`` sets the histories per run (default 300), ``SALES_CDC_MODEL_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sales_cdc import schema as S
from sales_cdc.merge_rules import SNAPSHOT_SEQUENCE
from sales_cdc.sources.snapshot import snapshot_record
from sales_cdc_local.records import to_json_line, to_typed_image
from tests.helpers import ORDERS, SORTED
from tests.sinks import Event, fresh_sinks, into_batches

HISTORIES = int(os.environ.get("SALES_CDC_MODEL_HISTORIES", "300"))
MAX_BATCHES = 6
FRESH = random.SystemRandom().getrandbits(62)


def image(rnd: random.Random) -> dict:
    return {"product_name": rnd.choice(["Lamp", "Chair", "漢字"]), "quantity": rnd.randint(1, 5),
            "price": Decimal(rnd.randint(100, 99999)).scaleb(-2), "customer_id": rnd.choice([None, "c1", "c2"])}


def keys_of(rnd: random.Random, index: int, entity: S.EntitySchema) -> list[tuple]:
    if len(entity.keys) == 1:
        return [(f"h{index}-k{n}",) for n in range(rnd.randint(1, 3))]
    return rnd.sample([(f"h{index}-p{p}", sk) for p in range(2) for sk in (0, 1, 2**40)], rnd.randint(1, 3))


class Item:
    """One item's life: what it held before the stream started, then its stream events, in time order."""

    def __init__(self, rnd: random.Random, key: tuple, entity: S.EntitySchema, sequence: int):
        self.key, self.entity = key, entity
        self.states: list[tuple[float, dict | None]] = [(0.0, image(rnd) if rnd.random() < 0.7 else None)]
        self.events: list[Event] = []
        clock = 1.0
        for _ in range(rnd.randint(0, 4)):
            clock += rnd.random()
            sequence += rnd.randint(1, 10**6)
            alive = self.states[-1][1] is not None
            op = "INSERT" if not alive else rnd.choice(["MODIFY", "REMOVE"])
            values = image(rnd) if op != "REMOVE" else self.states[-1][1]
            self.events.append(Event(op, key, sequence, values, entity))
            self.states.append((clock, None if op == "REMOVE" else values))
        self.end = clock + 1.0

    def at(self, moment: float) -> dict | None:
        return [state for time, state in self.states if time <= moment][-1]

    def snapshot(self, rnd: random.Random, taken: int) -> dict | None:
        """The record a Scan makes of this item, read at a random moment after the stream started (none if the
        item did not exist then)."""
        values = self.at(rnd.uniform(0.5, self.end))
        if values is None:
            return None
        item = to_typed_image({k: v for k, v in {**dict(zip(self.entity.keys, self.key, strict=True)),
                                                  **values}.items() if v is not None})
        return snapshot_record(item, self.entity, taken)

    def final(self) -> dict | None:
        return self.states[-1][1]


def history(rnd: random.Random, index: int, entity: S.EntitySchema) -> tuple[list[Item], list[dict]]:
    """The items of a history and every record delivered for them, in delivery order."""
    items = [Item(rnd, key, entity, rnd.randint(10**20, 10**21)) for key in keys_of(rnd, index, entity)]
    stream = [e for item in items for e in item.events]
    stream.sort(key=lambda e: e.sequence)
    delivered = [e.record() for e in stream]
    for _ in range(rnd.choice([0, 1, 2])):  # redeliveries
        delivered.insert(rnd.randint(0, len(delivered)), rnd.choice(delivered) if delivered else None)
    for _ in range(rnd.randint(0, 2)):  # late events
        if delivered:
            i = rnd.randrange(len(delivered))
            delivered.insert(rnd.randint(i, len(delivered) - 1), delivered.pop(i))
    for run in range(rnd.choice([1, 1, 2])):  # the backfill, sometimes run twice
        for item in items:
            record = item.snapshot(rnd, 1_795_000_000 + run)
            if record is not None:  # anywhere among the stream's records
                delivered.insert(rnd.randint(0, len(delivered)), record)
    return items, [r for r in delivered if r is not None]


def identity(record: dict) -> str:
    """What makes two records one: a snapshot record's event id (the item's content), a stream record's JSON."""
    return record["eventID"] if record["dynamodb"]["SequenceNumber"] == SNAPSHOT_SEQUENCE else to_json_line(record)


def expected(items: list[Item], soft_delete: bool) -> dict:
    """The table after its last change, as a sink holds it: live items (and, with soft deletes, the deleted ones
    whose delete the stream carried, as their last image)."""
    rows = {}
    for item in items:
        final = item.final()
        if final is not None:
            rows[item.key] = final
        elif soft_delete and item.events:
            rows[item.key] = item.states[-2][1]
    return rows


def comparable(values: dict, deleted: bool, soft_delete: bool) -> tuple:
    row = (values["product_name"], values["quantity"], Decimal(values["price"]), values.get("customer_id"))
    return (*row, deleted) if soft_delete else row


def run(spark, pg_url, tmp_path_factory, lake_format: str, soft_delete: bool, entity: S.EntitySchema,
        seed: int) -> None:
    rnd = random.Random(seed)
    runs = [history(rnd, i, entity) for i in range(HISTORIES)]
    batches = into_batches(rnd, [delivered for _, delivered in runs], MAX_BATCHES)
    sinks = fresh_sinks(spark, pg_url, tmp_path_factory.mktemp("lake"), f"model_snapshot_{entity.name}_{lake_format}",
                        soft_delete, lake_format, entity)
    try:
        sinks.run_batches(batches, replayed={b for b in range(MAX_BATCHES) if rnd.random() < 0.2},
                          reset={rnd.randrange(MAX_BATCHES)} if rnd.random() < 0.5 else set())
        assert sorted(map(identity, sinks.raw_records())) == sorted({identity(r) for d in batches for r in d}), \
            f"raw holds each record once (SALES_CDC_MODEL_SEED={seed})"
        want = {}
        for items, _ in runs:
            for key, values in expected(items, soft_delete).items():
                deleted = next(i for i in items if i.key == key).final() is None
                want[key] = comparable(values, deleted, soft_delete)
        for name, got in (("warehouse", sinks.warehouse_rows()), (f"{lake_format} silver", sinks.silver_rows())):
            have = {k: comparable(r, r.get(S.IS_DELETED, False), soft_delete) for k, r in got.items()}
            if have != want:
                differ = sorted(k for k in have.keys() | want.keys() if have.get(k) != want.get(k))
                pytest.fail(f"{name}: {len(differ)} items differ from the table (SALES_CDC_MODEL_SEED={seed}); first "
                            f"{differ[0]}: sink {have.get(differ[0])}, table {want.get(differ[0])}")
    finally:
        sinks.warehouse.close()


SETTINGS = settings(max_examples=int(os.environ.get("SALES_CDC_MODEL_RUNS", "1")), deadline=None, database=None,
                    print_blob=True, phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@pytest.mark.parametrize(("lake_format", "soft_delete", "entity"),
                         [("delta", False, ORDERS), ("parquet", True, ORDERS), ("delta", True, SORTED)],
                         ids=["delta-hard-delete", "parquet-soft-delete", "sort-key-delta-soft-delete"])
@SETTINGS
@given(seed=st.integers(0, 2**63))
def test_a_snapshot_and_the_stream_end_as_the_table_in_every_sink(spark, pg_url, tmp_path_factory, lake_format,
                                                                  soft_delete, entity, seed):
    seed = int(os.environ.get("SALES_CDC_MODEL_SEED", seed ^ FRESH))
    run(spark, pg_url, tmp_path_factory, lake_format, soft_delete, entity, seed)
