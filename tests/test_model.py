"""Every sink against a last-writer-by-sequence model, over random histories (hypothesis).

A history is a few keys' INSERT / MODIFY / REMOVE / re-INSERT events in the order DynamoDB made them,
delivered with duplicates and late (older) events, cut into micro-batches at random points; whole batches
are replayed (a Spark retry), and some again at the end under another stream id (a deleted checkpoint). The
model: per key, the delivered event with the highest sequence number wins; a winning REMOVE leaves no row (hard
delete, and a tombstone) or a row marked deleted (soft delete). Raw holds every record delivered exactly once
(a redelivery is the same record), replays, resets or not.

Many histories run at once: each has its own keys, and every sink treats keys independently, so history
``h``'s batch ``b`` is a slice of the run's batch ``b``. One run per sink configuration (hard/soft delete,
Delta/Parquet lake) checks the warehouse (PostgreSQL), silver, the tombstones and raw. The soft-delete runs
dedupe their batches as a batch over ``transforms.SINGLE_PARTITION_EVENTS`` is deduped (the model's are small).

``SALES_CDC_MODEL_HISTORIES`` sets the histories per run (default 300; ``5000`` for a long run). A failure
names the history, its batches and the run's seed (``SALES_CDC_MODEL_SEED=N`` replays that run). Hypothesis
draws the seed; the histories of a run come from it, in one example rather than one example per history:
300 histories are one pass through Spark (seconds), where 300 examples would each need their own passes.
``SALES_CDC_MODEL_RUNS`` (default 1) sets the runs (examples) per sink configuration.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
from decimal import Decimal
from unittest import mock

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sales_cdc import schema as S
from sales_cdc import transforms
from sales_cdc_local.records import to_json_line
from tests.helpers import ORDERS, SORTED
from tests.sinks import LOOKUP_ROW_GROUP_ROWS, Event, History, Sinks, envelope_quality, pg_connection

HISTORIES = int(os.environ.get("SALES_CDC_MODEL_HISTORIES", "300"))
MAX_BATCHES = 5
# hypothesis' first example is its simplest (seed 0): mixed with fresh entropy, each test run sees new histories
FRESH = random.SystemRandom().getrandbits(62)






ALPHABET = "abcXYZ 09-_'\"\\/é漢字😀\u00a0\u200b"  # quotes, backslash, non-ASCII, astral, invisible


def name(rnd: random.Random) -> str:
    return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(1, 8)))


def image(rnd: random.Random) -> dict:
    values = {"product_name": name(rnd), "quantity": rnd.choice([0, 1, rnd.randint(0, 2**31 - 1)]),
              "price": Decimal(rnd.randint(0, 9_999_999_999)).scaleb(-2)}
    if rnd.random() < 0.5:
        values["customer_id"] = name(rnd)
    if rnd.random() < 0.3:
        values["gift_note"] = name(rnd)  # an attribute the entity does not name: kept as typed JSON
    return values


def keys_of(rnd: random.Random, index: int, entity: S.EntitySchema) -> list[tuple]:
    """1-3 keys of history ``index`` (the partition key starts ``h<index>-``); with a sort key, items share
    a partition or a sort value."""
    if len(entity.keys) == 1:
        return [(f"h{index}-k{n}",) for n in range(rnd.randint(1, 3))]
    candidates = [(f"h{index}-p{p}", sk) for p in range(2) for sk in (0, 1, -7, 2**40)]
    return rnd.sample(candidates, rnd.randint(1, 3))


def history(rnd: random.Random, index: int, entity: S.EntitySchema) -> History:
    """One history: its keys (:func:`keys_of`), sequence numbers of 21 to 40 digits that grow (sometimes by
    orders of magnitude, so their length changes), then delivery with duplicates, late events, batches."""
    keys = keys_of(rnd, index, entity)
    exists = {k: rnd.random() < 0.5 for k in keys}  # items older than the stream: first seen as MODIFY/REMOVE
    last_image = {k: image(rnd) for k in keys}
    sequence = rnd.randint(10**20, 10**21)
    made: list[Event] = []
    for _ in range(rnd.randint(1, 10)):
        key = rnd.choice(keys)
        sequence += rnd.randint(1, 1000) if rnd.random() < 0.8 else rnd.randint(1, 10 ** rnd.randint(20, 38))
        if sequence >= 10**40:
            break
        if not exists[key]:
            op, values = "INSERT", image(rnd)  # an INSERT after a REMOVE: a deleted key touched again
        else:
            op = rnd.choice(["MODIFY", "REMOVE"])
            values = image(rnd) if op == "MODIFY" else last_image[key]
        exists[key] = op != "REMOVE"
        last_image[key] = values
        made.append(Event(op, key, sequence, values, entity))
    delivered = list(made)
    for _ in range(rnd.choice([0, 0, 1, 3])):  # redeliveries of the same record
        delivered.insert(rnd.randint(0, len(delivered)), rnd.choice(made))
    for _ in range(rnd.randint(0, 3)):  # late events: one moved behind a later one
        i = rnd.randrange(len(delivered))
        delivered.insert(rnd.randint(i, len(delivered) - 1), delivered.pop(i))
    cuts = sorted(rnd.randint(0, len(delivered)) for _ in range(rnd.randint(0, MAX_BATCHES - 1)))
    bounds = [0, *cuts, len(delivered)]
    return History(delivered, [delivered[a:b] for a, b in itertools.pairwise(bounds)])


def random_run(rnd: random.Random, entity: S.EntitySchema) -> tuple[list[History], set[int], set[int]]:
    histories = [history(rnd, i, entity) for i in range(HISTORIES)]
    replayed = {rnd.randrange(MAX_BATCHES) for _ in range(rnd.randint(0, 2))}  # batch ids run twice
    reset = {rnd.randrange(MAX_BATCHES) for _ in range(rnd.randint(0, 2))}  # run again after a checkpoint reset
    return histories, replayed, reset


# --- the model ---------------------------------------------------------------------------------------
def winners(histories: list[History]) -> dict[tuple, Event]:
    """Per key, the delivered event with the highest sequence number."""
    best: dict[tuple, Event] = {}
    for h in histories:
        for event in h.events:
            if event.key not in best or event.sequence > best[event.key].sequence:
                best[event.key] = event
    return best


def row_of(event: Event, soft_delete: bool) -> tuple:
    image = event.image
    extra = {"gift_note": {"S": image["gift_note"]}} if "gift_note" in image else None
    row = (image["product_name"], image["quantity"], Decimal(image["price"]), image.get("customer_id"), extra,
           event.sequence, event.op)
    return (*row, event.op == "REMOVE") if soft_delete else row


def expected(histories, soft_delete: bool) -> tuple[dict, dict]:
    """(state rows by key, tombstone sequence by key) the sinks must hold."""
    best = winners(histories)
    state = {k: row_of(e, soft_delete) for k, e in best.items() if soft_delete or e.op != "REMOVE"}
    tombstones = {} if soft_delete else {k: e.sequence for k, e in best.items() if e.op == "REMOVE"}
    return state, tombstones






def history_of(key: tuple) -> int:
    return int(key[0].split("-")[0][1:])


def assert_equal(name: str, actual: dict, want: dict, histories: list[History], seed: int) -> None:
    """Equal, or a message naming the first history that differs, with its batches."""
    if actual == want:
        return
    keys = sorted({k for k in actual.keys() | want.keys() if actual.get(k) != want.get(k)}, key=history_of)
    h = history_of(keys[0])
    batches = [[(e.op, e.key, e.sequence) for e in b] for b in histories[h].batches]
    differing = {k: (actual.get(k), want.get(k)) for k in keys if history_of(k) == h}
    pytest.fail(f"{name}: {len(keys)} keys differ from the model (SALES_CDC_MODEL_SEED={seed} replays this run); "
                f"history {h}, batches {batches}: "
                f"(sink, model) {differing}")




@pytest.mark.slow
@pytest.mark.parametrize("soft_delete", [False, True], ids=["hard-delete", "soft-delete"])
@pytest.mark.parametrize("lake_format", ["delta", "parquet"])
@settings(max_examples=int(os.environ.get("SALES_CDC_MODEL_RUNS", "1")), deadline=None, database=None, print_blob=True, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**63))
def test_every_sink_equals_the_model(spark, pg_url, tmp_path_factory, soft_delete, lake_format, seed):
    check_every_sink(spark, pg_url, tmp_path_factory, soft_delete, lake_format, seed, ORDERS)


@pytest.mark.slow
@pytest.mark.parametrize(("lake_format", "soft_delete"), [("delta", False), ("parquet", True)])
@settings(max_examples=int(os.environ.get("SALES_CDC_MODEL_RUNS", "1")), deadline=None, database=None,
          print_blob=True, phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**63))
def test_every_sink_equals_the_model_with_a_sort_key(spark, pg_url, tmp_path_factory, soft_delete, lake_format,
                                                     seed):
    """The same with a partition + sort key: items that share a partition, or a sort value, stay apart."""
    check_every_sink(spark, pg_url, tmp_path_factory, soft_delete, lake_format, seed, SORTED)


def check_every_sink(spark, pg_url, tmp_path_factory, soft_delete, lake_format, seed, entity) -> None:
    seed = int(os.environ.get("SALES_CDC_MODEL_SEED", seed ^ FRESH))
    histories, replayed, reset = random_run(random.Random(seed), entity)
    schema = f"model_{entity.name}_{lake_format}_{'soft' if soft_delete else 'hard'}"
    with pg_connection(pg_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    # the hard-delete runs validate each batch: their state rows are collected for the pandas screen as soon as
    # they are known, and the sinks read that collect; the soft-delete runs keep the checkpointed state
    quality = None if soft_delete else envelope_quality(tmp_path_factory.mktemp("dq"), entity)
    sinks = Sinks(spark, pg_url, schema, tmp_path_factory.mktemp("lake"), soft_delete, lake_format, entity, quality)
    # the model's batches are small: the soft-delete runs are deduped as a large batch is (shuffled by key, and
    # raw's repeats looked for by hash), so that both ways are held against the model with either lake format
    large = mock.patch.object(transforms, "SINGLE_PARTITION_EVENTS", 0) if soft_delete else contextlib.nullcontext()
    try:
        with large:
            sinks.run(histories, replayed, reset)
        state, tombstones = expected(histories, soft_delete)
        check = functools.partial(assert_equal, histories=histories, seed=seed)
        check("warehouse", sinks.warehouse_state(), state)
        check("warehouse tombstones", sinks.warehouse_tombstones(), tombstones)
        silver, silver_tombstones = sinks.silver()
        check(f"{lake_format} silver", silver, state)
        check(f"{lake_format} silver tombstones", silver_tombstones, tombstones)
        if lake_format == "delta" and len(state) + len(tombstones) > LOOKUP_ROW_GROUP_ROWS:
            assert sinks.row_groups(sinks.lake.silver_uri, sinks.lake.tombstones_uri) > 1, \
                "the lookups in silver were held against the model across row groups"
        delivered = sorted({to_json_line(e.record()) for h in histories for e in h.events})
        assert len(sinks.raw_payloads()) == len(delivered), "raw holds every delivered record exactly once"
        assert sorted(sinks.raw_payloads()) == delivered
        assert sinks.quarantine_payloads() == [], "every generated record is valid"
        assert quality is None or quality.screens(1), "every batch was cleared by the pandas screen"
    finally:
        sinks.warehouse.close()


