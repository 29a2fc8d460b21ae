"""The pandas screen (quality/gx_pandas.py) against GX's Spark engine on the same rows: the same verdict for every
rule, the same quarantined rows, and a clean small batch cleared without a Spark job."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from bench.cases import spark_jobs_started
from great_expectations.core.run_identifier import RunIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import types as T

from sales_cdc import schema as S
from sales_cdc.config import DqConfig
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.quality import DataQuality
from sales_cdc.quality.docs_site import RULE_META
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc.warehouse import PostgresWarehouse
from sales_cdc_local.records import stream_record, to_json_line
from tests.helpers import EXPECTATIONS, ORDERS
from tests.test_quality import BAD_ROWS, HALT_ROWS, frame, state_row

CHANGES = [change for variants in [*BAD_ROWS.values(), *HALT_ROWS.values()] for change in variants]
REMOVED = dict(cdc_op="REMOVE", product_name=None, quantity=None, price=None, customer_id=None, customer_name=None,
               created_at=None)  # a delete may carry a partial image: the rules skip it where they say so


@pytest.fixture(scope="module")
def dq():
    return DataQuality(DqConfig(expectations_dir=EXPECTATIONS), ORDERS, job_name="engines")


@pytest.fixture(scope="module")
def dq_spark():
    return DataQuality(DqConfig(expectations_dir=EXPECTATIONS, screen_rows=0), ORDERS, job_name="engines-spark")


def verdicts(runs_or_results) -> dict[str, bool]:
    results = [r for run in runs_or_results for r in run.results]
    return {r.expectation_config.meta[RULE_META]: bool(r.success) for r in results}


def both_engines(dq, state) -> tuple[dict[str, bool], dict[str, bool]]:
    now = datetime.now(UTC)
    parameters = dq.parameters(now)
    on_pandas = dq.gx.pandas.run(state, state.toArrow(), parameters, RunIdentifier(run_name="p", run_time=now))
    on_spark = dq.gx.validate(state, "s", parameters, detailed=False, run_time=now)
    return verdicts(on_pandas.values()), verdicts(run.result for run in on_spark)


rows_of_a_batch = st.lists(st.one_of(st.just({}), st.just(REMOVED), st.sampled_from(CHANGES)), min_size=1, max_size=8)


@settings(max_examples=int(os.environ.get("SALES_CDC_ENGINE_RUNS", "25")), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(changes=rows_of_a_batch)
def test_every_rule_has_the_same_verdict_on_pandas_and_on_spark(spark, dq, changes):
    state = frame(spark, [state_row(f"r{n}", **change) for n, change in enumerate(changes)])
    on_pandas, on_spark = both_engines(dq, state)
    assert on_pandas == on_spark


def test_schema_drift_fails_the_type_rules_on_the_screen_too(spark, dq):
    drifted = T.StructType([T.StructField("price", T.DoubleType()) if f.name == "price" else f
                            for f in S.state_schema(ORDERS).fields])
    on_pandas, on_spark = both_engines(dq, frame(spark, [state_row(1, price=9.5)], drifted))
    assert on_pandas == on_spark
    assert [rule for rule, passed in on_pandas.items() if not passed] == ["orders.price.be_of_type"]


@pytest.mark.parametrize("changes", [[{}, REMOVED, {}], [{}, *CHANGES[:4]], [{}, *CHANGES]], ids=["clean", "some", "all"])
def test_a_batch_has_the_same_outcome_and_quarantine_with_or_without_the_screen(spark, dq, dq_spark, changes):
    state = frame(spark, [state_row(f"q{n}", **change) for n, change in enumerate(changes)])
    screened = dq.check(state, batch_id=7, collected=state.toArrow())
    on_spark = dq_spark.check(state, batch_id=7)
    fields = ("success", "element_count", "unexpected_count", "failed_rows")
    assert [(r.rule.name, *[getattr(r, f) for f in fields]) for r in screened.rules] == \
        [(r.rule.name, *[getattr(r, f) for f in fields]) for r in on_spark.rules]
    assert screened.outcome == on_spark.outcome
    quarantined = [sorted(o.rejected.collect(), key=repr) if o.rejected is not None else [] for o in (screened, on_spark)]
    assert quarantined[0] == quarantined[1]


def test_a_clean_small_batch_is_cleared_without_a_spark_job(spark, dq):
    state = frame(spark, [state_row(f"c{n}") for n in range(3)])
    collected = state.toArrow()
    dq.check(state, batch_id=8, collected=collected)  # (after a failing batch, the next runs predicates first)
    before = spark_jobs_started(spark)
    outcome = dq.check(state, batch_id=9, collected=collected)
    assert outcome.outcome == "passed"
    assert spark_jobs_started(spark) == before
    assert dq.screens(DqConfig.screen_rows) and not dq.screens(DqConfig.screen_rows + 1)


def test_a_screened_batch_is_materialised_only_when_it_goes_the_spark_way(spark, dq):
    """The state a screened batch hands over is built from its collected rows; the Spark queries that follow a
    failing screen read it materialised, so the rows are not shipped inside each query's tasks."""
    materialised = []

    def materialize(df):
        materialised.append(df)
        return df.localCheckpoint()

    clean = frame(spark, [state_row(f"m{n}") for n in range(3)])
    dq.check(clean, batch_id=20, collected=clean.toArrow())  # (after a failing batch, the next runs predicates first)
    assert dq.check(clean, batch_id=21, collected=clean.toArrow(), materialize=materialize).outcome == "passed"
    assert materialised == []
    failing = frame(spark, [state_row("m-ok"), state_row("m-bad", product_name="Toaster")])
    outcome = dq.check(failing, batch_id=22, collected=failing.toArrow(), materialize=materialize)
    assert outcome.outcome == "quarantined" and outcome.quarantined_rows == 1
    assert materialised == [failing]


@pytest.mark.parametrize("soft_delete", [False, True], ids=["hard delete", "soft delete"])
def test_the_sinks_get_the_same_rows_whether_the_screen_collected_the_batch_or_not(spark, pg_url, db_schema,
                                                                                     soft_delete):
    """A screened batch is collected once, as the sinks store it (soft-delete columns included), and reused:
    its state rows take one Spark job, the collect, with no checkpoint before it."""
    lines = [to_json_line(stream_record("INSERT", 1, key="a", new=full_order("a"), entity=ORDERS)),
             to_json_line(stream_record("INSERT", 2, key="b", new=full_order("b"), entity=ORDERS)),
             to_json_line(stream_record("REMOVE", 3, key="b", old=full_order("b"), entity=ORDERS))]
    batch = spark.createDataFrame([(x, "shard-0", str(i), None, None) for i, x in enumerate(lines)], S.SOURCE_SCHEMA)
    stored, jobs = [], []
    for screen_rows in (DqConfig.screen_rows, 0):
        schema = f"{db_schema}_{screen_rows}"
        warehouse = PostgresWarehouse(pg_url, MergeSql(Dialect.POSTGRES, db_schema=schema, soft_delete=soft_delete,
                                                       entity=ORDERS), "engines")
        warehouse.ensure_tables()
        quality = DataQuality(DqConfig(expectations_dir=EXPECTATIONS, screen_rows=screen_rows), ORDERS, "engines")
        before = spark_jobs_started(spark)
        BatchHandler(warehouse=warehouse, quality=quality, options=HandlerOptions(job_name="engines"))(batch, 0)
        jobs.append(spark_jobs_started(spark) - before)
        with psycopg.connect(pg_url) as conn:
            cursor = conn.execute(f'SELECT * FROM "{schema}".orders ORDER BY orderid')
            names = [c.name for c in cursor.description]
            stored.append([{n: v for n, v in zip(names, row, strict=True) if n != "loaded_at"} for row in cursor])
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        warehouse.close()
    assert stored[0] == stored[1] and len(stored[0]) == (2 if soft_delete else 1)
    assert jobs[0] == 2, jobs  # the decode's checkpoint, then the state's collect (no lake here)


def full_order(orderid: str) -> dict:
    return {"orderid": orderid, "product_name": "Phone", "quantity": 1, "price": Decimal("199.00"),
            "customer_id": "c-00001", "customer_name": "Ann Lee", "created_at": "2026-11-25T09:00:00Z"}
