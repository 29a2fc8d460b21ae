"""The change history (merge rule 7) of every sink against versions computed from the events by sequence, over
the model test's random histories (tests/test_model.py): late events, redeliveries, deletes and re-inserts,
replayed batches, batches run again under another stream id, random batch cuts; hard and soft delete, a
partition key and a partition + sort key.

The model: per item, every distinct delivered event is a version; ordered by sequence, each is valid until the
next one's sequence, the last is current; a REMOVE's version is marked deleted. The sink's current versions must
also be its current state (the warehouse's table): rule 7's last sentence.
"""

from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sales_cdc import schema as S
from tests.helpers import ORDERS, SORTED
from tests.sinks import Event, History, fresh_sinks
from tests.test_model import FRESH, assert_equal, expected, random_run, row_of

pytestmark = pytest.mark.slow


def model_versions(histories: list[History]) -> dict[tuple, tuple]:
    """(key, sequence) -> (the values as the state would hold them, the next version's sequence, current)."""
    per_item: dict[tuple, dict[int, Event]] = {}
    for h in histories:
        for event in h.events:
            per_item.setdefault(event.key, {})[event.sequence] = event
    versions = {}
    for key, events in per_item.items():
        ordered = sorted(events)
        for i, sequence in enumerate(ordered):
            following = ordered[i + 1] if i + 1 < len(ordered) else None
            versions[(*key, sequence)] = (row_of(events[sequence], True), following, following is None)
    return versions


def sink_versions(rows: list[dict], entity: S.EntitySchema) -> dict[tuple, tuple]:
    """The history's rows in the model's terms: (key, sequence) -> (values, next sequence, current)."""
    got = {}
    for r in rows:
        extra = json.loads(r[S.UNMAPPED]) if r[S.UNMAPPED] else None
        values = (r["product_name"], r["quantity"], Decimal(r["price"]), r["customer_id"], extra,
                  int(r[S.VALID_FROM_SEQUENCE]), r[S.OPERATION], r[S.IS_DELETED])
        following = int(r[S.VALID_TO_SEQUENCE]) if r[S.VALID_TO_SEQUENCE] is not None else None
        got[(*[r[k] for k in entity.keys], int(r[S.VALID_FROM_SEQUENCE]))] = (values, following, r[S.IS_CURRENT])
    return got


def ends_are_next_starts(rows: list[dict], entity: S.EntitySchema) -> list[dict]:
    """The versions whose ``valid_to`` is not the next version's ``valid_from`` (none, in a right history)."""
    start = {(*[r[k] for k in entity.keys], r[S.VALID_FROM_SEQUENCE]): r[S.VALID_FROM] for r in rows}
    return [r for r in rows if r[S.VALID_TO_SEQUENCE] is not None
            and r[S.VALID_TO] != start.get((*[r[k] for k in entity.keys], r[S.VALID_TO_SEQUENCE]))]


@pytest.mark.parametrize(("entity", "soft_delete", "lake_format"), [
    (ORDERS, False, "delta"), (ORDERS, True, "parquet"), (SORTED, False, "parquet"), (SORTED, True, "delta")],
    ids=["hard-delete-delta", "soft-delete-parquet", "sort-key-hard-delete-parquet", "sort-key-soft-delete-delta"])
@settings(max_examples=int(os.environ.get("SALES_CDC_MODEL_RUNS", "1")), deadline=None, database=None,
          print_blob=True, phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**63))
def test_the_history_of_every_sink_equals_the_versions_of_the_events(spark, pg_url, tmp_path_factory, entity,
                                                                      soft_delete, lake_format, seed):
    seed = int(os.environ.get("SALES_CDC_MODEL_SEED", seed ^ FRESH))
    entity = replace(entity, history=True)
    histories, replayed, reset = random_run(random.Random(seed), entity)
    schema = f"history_{entity.name}_{lake_format}_{'soft' if soft_delete else 'hard'}"
    sinks = fresh_sinks(spark, pg_url, tmp_path_factory.mktemp("lake"), schema, soft_delete, lake_format, entity)
    try:
        sinks.run(histories, replayed, reset)
        check = functools.partial(assert_equal, histories=histories, seed=seed)
        versions = model_versions(histories)
        current_state = dict.fromkeys(expected(histories, soft_delete)[0], True)
        for sink, rows in {"warehouse": sinks.warehouse_history(), lake_format: sinks.lake_history()}.items():
            check(f"{sink} history", sink_versions(rows, entity), versions)
            current = [tuple(r[k] for k in entity.keys) for r in rows
                       if r[S.IS_CURRENT] and (soft_delete or not r[S.IS_DELETED])]
            check(f"{sink} history's current versions", dict.fromkeys(current, True), current_state)
            assert ends_are_next_starts(rows, entity) == [], sink
        if lake_format == "delta":
            assert sinks.row_groups(sinks.lake.history_uri) > 1, "the history's lookups span row groups"
    finally:
        sinks.warehouse.close()
