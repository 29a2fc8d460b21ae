"""Every sink against a model that keeps every value, while the contract changes between batches (hypothesis).

Histories as in tests/test_model.py (keys, INSERT / MODIFY / REMOVE / re-INSERT, redeliveries, late events,
random batch cuts, replayed batches), whose items carry attributes the contract does not name yet (a discount,
a gift flag, a note, tags, an attribute no column can be named after) with values that fit a column or do not
(a discount with three decimals, a gift written as text, a note longer than a column). Between batches the
contract changes at random: an attribute is added (its values promoted out of ``unmapped_attributes``),
quantity, price or discount widen, product_name becomes optional; a migration dies after the warehouse and the
next start finishes it; a batch dies after the lake committed and before the warehouse did, and is replayed.

After every batch, for the warehouse and silver alike:
- the model: per key, the delivered event with the highest sequence among those valid under the contract of the
  batch that brought them (an event whose value does not fit its column is quarantined by the decode);
- no value lost: each row's columns plus its ``unmapped_attributes`` are exactly the winning event's item;
- promotion: an attribute left in the JSON although the contract names it holds a value its column cannot;
- warehouse == silver, and every record delivered is in raw once.

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
from sales_cdc_local.records import stream_record, to_json_line
from tests.helpers import shop_orders, source_rows
from tests.items import comparable, fits, item_of
from tests.sinks import SimulatedCrash, Sinks, fresh_sinks, into_batches, pg_connection

HISTORIES = int(os.environ.get("SALES_CDC_MODEL_HISTORIES", "300"))
MAX_BATCHES = 6
FRESH = random.SystemRandom().getrandbits(62)

# The contract changes a run draws from, each one at most once, in a random order (``after``: needs that one first)
CHANGES = {
    "add discount": ({"discount": {"dynamodb": "N", "type": "decimal(6,2)"}}, None),
    "add gift": ({"gift": {"dynamodb": "BOOL", "type": "boolean"}}, None),
    "add note": ({"note": {"dynamodb": "S", "type": "string"}}, None),
    "add tags": ({"tags": {"dynamodb": "SS", "type": "json"}}, None),
    "widen quantity": ({"quantity": {"type": "bigint"}}, None),
    "widen price": ({"price": {"type": "decimal(14,2)"}}, None),
    "widen discount": ({"discount": {"dynamodb": "N", "type": "decimal(8,3)"}}, "add discount"),
    "product_name optional": ({"product_name": {"required": False}}, None),
}


# --- the histories ---------------------------------------------------------------------------------------------
def image(rnd: random.Random) -> dict:
    values = {"product_name": rnd.choice(["Lamp", "Chair", "漢字 😀", "a\"b\\c"]),
              "quantity": rnd.choice([1, 7, 2**31 - 1, 2**31 + rnd.randint(0, 10**6)]),  # the last: bigint only
              "price": rnd.choice([Decimal(rnd.randint(0, 10**6)).scaleb(-2),
                                   Decimal(10**10 + rnd.randint(0, 10**6)).scaleb(-2)])}  # (14,2) only
    extras = {"discount": [Decimal("1.50"), Decimal("9999.99"), Decimal("1.234"), Decimal("12345.6"), "ten"],
              "gift": [True, False, "yes"], "note": ["gift wrap", "x" * 300], "tags": [{"red"}, {"a", "b"}],
              "Odd-Name": ["kept"]}
    for name, choices in extras.items():
        if rnd.random() < 0.4:
            values[name] = rnd.choice(choices)
    return values


def history(rnd: random.Random, index: int) -> list[dict]:
    """The delivered events of one history (a few keys), each as (op, key, sequence, image)."""
    keys = [f"h{index}-k{n}" for n in range(rnd.randint(1, 3))]
    exists = {k: rnd.random() < 0.5 for k in keys}
    last = {k: image(rnd) for k in keys}
    sequence = rnd.randint(10**20, 10**21)
    made = []
    for _ in range(rnd.randint(1, 8)):
        key = rnd.choice(keys)
        sequence += rnd.randint(1, 1000)
        op = "INSERT" if not exists[key] else rnd.choice(["MODIFY", "REMOVE"])
        values = last[key] if op == "REMOVE" else image(rnd)
        exists[key], last[key] = op != "REMOVE", values
        made.append({"op": op, "key": key, "sequence": sequence, "image": {"orderid": key, **values}})
    delivered = list(made)
    for _ in range(rnd.choice([0, 1, 2])):  # redeliveries
        delivered.insert(rnd.randint(0, len(delivered)), rnd.choice(made))
    for _ in range(rnd.randint(0, 2)):  # late events
        i = rnd.randrange(len(delivered))
        delivered.insert(rnd.randint(i, len(delivered) - 1), delivered.pop(i))
    return delivered


def record(event: dict) -> dict:
    entity = shop_orders()
    images = {"new": event["image"]} if event["op"] != "REMOVE" else {"old": event["image"]}
    return stream_record(event["op"], event["sequence"], key=event["key"], entity=entity, **images)


def valid(event: dict, entity: S.EntitySchema) -> bool:
    """The decode takes an event iff every value its contract names fits its column."""
    return all(fits(v, entity.field(k)) for k, v in event["image"].items() if k in entity.names)


# --- the run --------------------------------------------------------------------------------------------------
class Model:
    """Per key, the winning event among the valid deliveries so far; the records delivered; the quarantined."""

    def __init__(self):
        self.best: dict[str, dict] = {}
        self.delivered: set[str] = set()  # a redelivered record is the same record: raw holds it once
        self.quarantined: set[str] = set()

    def batch(self, events: list[dict], entity: S.EntitySchema) -> None:
        for event in events:
            line = to_json_line(record(event))
            self.delivered.add(line)
            if not valid(event, entity):
                self.quarantined.add(line)
            elif event["key"] not in self.best or event["sequence"] > self.best[event["key"]]["sequence"]:
                self.best[event["key"]] = event

    def items(self, soft_delete: bool) -> dict:
        return {k: {n: comparable(v) for n, v in e["image"].items()} for k, e in self.best.items()
                if soft_delete or e["op"] != "REMOVE"}


def check(sinks: Sinks, model: Model, entity: S.EntitySchema, seed: int, where: str) -> None:
    want = model.items(sinks.soft_delete)
    for name, rows in (("warehouse", sinks.warehouse_rows()), (f"{sinks.lake_format} silver", sinks.silver_rows())):
        try:
            got = {k[0]: item_of(r, entity) for k, r in rows.items()}
        except AssertionError as problem:
            pytest.fail(f"{where}: {name}: {problem} (SALES_CDC_MODEL_SEED={seed})")
        if got != want:
            differ = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
            pytest.fail(f"{where}: {name}: {len(differ)} items differ from the model (SALES_CDC_MODEL_SEED={seed}); "
                        f"first {differ[0]}: sink {got.get(differ[0])}, model {want.get(differ[0])}")
    with pg_connection(sinks.warehouse.url) as conn:
        quarantined = conn.execute(f"SELECT count(*) FROM {sinks.warehouse.sql.quarantine}").fetchone()[0]
    assert quarantined == len(model.quarantined), f"{where}: quarantine rows (SALES_CDC_MODEL_SEED={seed})"
    assert sorted(sinks.quarantine_payloads()) == sorted(model.quarantined), f"{where}: lake quarantine"
    assert sorted(sinks.raw_payloads()) == sorted(model.delivered), f"{where}: raw holds each record once"


def run(spark, pg_url, tmp_path_factory, lake_format: str, soft_delete: bool, seed: int) -> None:
    rnd = random.Random(seed)
    batches = into_batches(rnd, [history(rnd, i) for i in range(HISTORIES)], MAX_BATCHES)
    entity, applied = shop_orders(), {}
    sinks = fresh_sinks(spark, pg_url, tmp_path_factory.mktemp("lake"), f"model_evolution_{lake_format}", soft_delete,
                        lake_format, entity)
    model = Model()
    try:
        for batch_id, events in enumerate(batches):
            frame = source_rows(spark, *[record(e) for e in events])
            if rnd.random() < 0.25:  # the job dies after the lake committed; the batch is run again
                sinks.warehouse.arm()
                with pytest.raises(SimulatedCrash):
                    sinks.handler(frame, batch_id)
            for _ in range(2 if rnd.random() < 0.2 else 1):  # a replayed batch changes nothing
                sinks.handler(frame, batch_id)
            model.batch(events, entity)
            check(sinks, model, entity, seed, f"after batch {batch_id} ({', '.join(applied) or 'first contract'})")
            entity = change_contract(rnd, sinks, entity, applied)
    finally:
        sinks.warehouse.close()


def change_contract(rnd: random.Random, sinks: Sinks, entity: S.EntitySchema, applied: dict) -> S.EntitySchema:
    """One or two random contract changes at once (or none); sometimes the migration dies after the warehouse."""
    open_changes = [c for c, (_, after) in CHANGES.items() if c not in applied and (after is None or after in applied)]
    if not open_changes or rnd.random() < 0.3:
        return entity
    for name in rnd.sample(open_changes, min(len(open_changes), rnd.choice([1, 1, 2]))):
        applied[name] = CHANGES[name][0]
    changed = shop_orders(**{k: v for spec in applied.values() for k, v in spec.items()})
    if rnd.random() < 0.3:
        sinks.migrate(changed, steps=1)
    sinks.migrate(changed)
    return changed


SETTINGS = settings(max_examples=int(os.environ.get("SALES_CDC_MODEL_RUNS", "1")), deadline=None, database=None,
                    print_blob=True, phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))


@pytest.mark.slow
@pytest.mark.parametrize(("lake_format", "soft_delete"), [("delta", False), ("parquet", True)],
                         ids=["delta-hard-delete", "parquet-soft-delete"])
@SETTINGS
@given(seed=st.integers(0, 2**63))
def test_every_sink_keeps_every_value_while_the_contract_changes(spark, pg_url, tmp_path_factory, lake_format,
                                                                 soft_delete, seed):
    seed = int(os.environ.get("SALES_CDC_MODEL_SEED", seed ^ FRESH))
    run(spark, pg_url, tmp_path_factory, lake_format, soft_delete, seed)
