"""The merge rules (docs/design.md, "The merge rules"), case by case, on every sink: the PostgreSQL warehouse,
Delta silver and Parquet silver, hard and soft delete. Each case is a named history with the state and the
tombstones it must leave; every sink must leave exactly that. (The model test draws random histories; these
are the rules one at a time, readable when one breaks.)"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from sales_cdc import schema as S
from sales_cdc.config import LakeConfig
from sales_cdc.lake import Lake
from sales_cdc.pipeline import BatchHandler
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.warehouse import PostgresWarehouse
from tests.helpers import ORDERS
from tests.sinks import Event, History, Sinks, pg_connection

pytestmark = pytest.mark.slow

ADD, SET, DEL = "INSERT", "MODIFY", "REMOVE"

# name: (batches of (op, sequence, quantity), the row left (quantity, sequence) or None, the tombstone's sequence)
CASES: dict[str, tuple[list[list[tuple[str, int, int]]], tuple[int, int] | None, int | None]] = {
    "a newer event wins": ([[(ADD, 10, 1)], [(SET, 20, 2)]], (2, 20), None),
    "an older event delivered later loses": ([[(SET, 50, 5)], [(SET, 30, 3)]], (5, 50), None),
    "in one batch the highest sequence wins, whatever the order": ([[(SET, 70, 7), (SET, 60, 6)]], (7, 70), None),
    "a delete removes the row and leaves a tombstone": ([[(ADD, 10, 1)], [(DEL, 20, 1)]], None, 20),
    "an event older than a delete does not bring the item back": ([[(DEL, 50, 1)], [(SET, 40, 4)]], None, 50),
    "an insert newer than a delete brings the item back": ([[(DEL, 50, 1)], [(ADD, 60, 6)]], (6, 60), None),
    "a late delete older than the live row deletes nothing": ([[(ADD, 50, 5)], [(DEL, 30, 5)]], (5, 50), None),
    "a redelivered event changes nothing": ([[(ADD, 10, 1), (ADD, 10, 1)], [(ADD, 10, 1)]], (1, 10), None),
    "a sequence longer by a digit is the newer one": ([[(SET, 99, 9)], [(SET, 100, 1)]], (1, 100), None),
}


def histories() -> list[History]:
    made = []
    for n, (batches, _, _) in enumerate(CASES.values()):
        key = (f"h{n}-case",)

        def event(op: str, sequence: int, quantity: int, key=key) -> Event:
            return Event(op, key, 10**20 + sequence, {"product_name": "Phone", "quantity": quantity,
                                                      "price": Decimal("9.99")})

        events = [[event(*e) for e in batch] for batch in batches]
        made.append(History([e for batch in events for e in batch], events))
    return made


def expected(soft_delete: bool) -> tuple[dict, dict]:
    state, tombstones = {}, {}
    for n, (batches, row, tombstone) in enumerate(CASES.values()):
        key = (f"h{n}-case",)
        if row is not None:
            state[key] = (row[0], 10**20 + row[1], False) if soft_delete else (row[0], 10**20 + row[1])
        elif soft_delete:  # the deleted item stays, marked, with the delete's sequence
            state[key] = (batches[0][0][2], 10**20 + tombstone, True)
        if tombstone is not None and not soft_delete:
            tombstones[key] = 10**20 + tombstone
    return state, tombstones


def comparable(rows: dict, soft_delete: bool) -> dict:
    """(quantity, sequence[, deleted]) per key, from the sinks' full rows."""
    return {k: (r[1], r[5], r[7]) if soft_delete else (r[1], r[5]) for k, r in rows.items()}


@pytest.mark.parametrize("soft_delete", [False, True], ids=["hard-delete", "soft-delete"])
@pytest.mark.parametrize("lake_format", ["delta", "parquet"])
def test_every_sink_applies_the_merge_rules(spark, pg_url, tmp_path, soft_delete, lake_format):
    schema = f"rules_{lake_format}_{'soft' if soft_delete else 'hard'}"
    with pg_connection(pg_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    sinks = Sinks(spark, pg_url, schema, tmp_path / "lake", soft_delete, lake_format, ORDERS)
    try:
        sinks.run(histories(), replayed={1})  # the second batch is run twice, as Spark does after a crash
        state, tombstones = expected(soft_delete)
        silver, silver_tombstones = sinks.silver()
        results = {"warehouse": (comparable(sinks.warehouse_state(), soft_delete), sinks.warehouse_tombstones()),
                   f"{lake_format} silver": (comparable(silver, soft_delete), silver_tombstones)}
        names = list(CASES)
        for sink, (got_state, got_tombstones) in results.items():
            wrong = [names[int(k[0][1:].split("-")[0])] for k in state.keys() | got_state.keys() |
                     tombstones.keys() | got_tombstones.keys()
                     if got_state.get(k) != state.get(k) or got_tombstones.get(k) != tombstones.get(k)]
            assert not wrong, f"{sink} breaks: {sorted(set(wrong))}"
    finally:
        sinks.warehouse.close()


def test_sinks_built_for_different_delete_modes_are_refused(pg_url, tmp_path):
    """One delete mode for every sink: a handler over a hard-delete warehouse and a soft-delete lake would
    leave them disagreeing, so it is not built."""
    warehouse = PostgresWarehouse(pg_url, MergeSql(Dialect.POSTGRES, ORDERS, db_schema="rules_mismatch"), "rules")
    try:
        with pytest.raises(ValueError, match="different entities or delete modes"):
            BatchHandler(warehouse=warehouse, lake=Lake(LakeConfig(str(tmp_path / "lake")), "rules", ORDERS,
                                                        soft_delete=True))
    finally:
        warehouse.close()


@pytest.mark.parametrize("soft_delete", [False, True], ids=["hard-delete", "soft-delete"])
@pytest.mark.parametrize("lake_format", ["delta", "parquet"])
def test_every_sink_keeps_the_versions_of_each_case_in_sequence_order(spark, pg_url, tmp_path, soft_delete,
                                                                      lake_format):
    """Rule 7: each case's history holds every distinct event once, by sequence, whatever the arrival order,
    redeliveries and replays; the last is the current one."""
    schema = f"rules_history_{lake_format}_{'soft' if soft_delete else 'hard'}"
    with pg_connection(pg_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    sinks = Sinks(spark, pg_url, schema, tmp_path / "lake", soft_delete, lake_format, replace(ORDERS, history=True))
    try:
        sinks.run(histories(), replayed={1})
        want = {(f"h{n}-case",): [(10**20 + seq, op) for seq, op in sorted({(s, o) for b in batches for o, s, _ in b})]
                for n, (batches, _, _) in enumerate(CASES.values())}
        names = list(CASES)
        for sink, rows in {"warehouse": sinks.warehouse_history(), f"{lake_format}": sinks.lake_history()}.items():
            got: dict[tuple, list] = {}
            for r in sorted(rows, key=lambda r: r[S.VALID_FROM_SEQUENCE]):
                got.setdefault((r["orderid"],), []).append((int(r[S.VALID_FROM_SEQUENCE]), r[S.OPERATION]))
            current = {(r["orderid"],): int(r[S.VALID_FROM_SEQUENCE]) for r in rows if r[S.IS_CURRENT]}
            wrong = [names[int(k[0][1:].split("-")[0])] for k in want
                     if got.get(k) != want[k] or current.get(k) != want[k][-1][0]]
            assert not wrong, f"{sink} history breaks: {wrong}"
    finally:
        sinks.warehouse.close()
