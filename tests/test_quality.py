"""Data quality with real Great Expectations on real Spark: suites, severities, row-level quarantine,
halt, results history, Data Docs and SNS alerts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from pyspark.sql import types as T

from sales_cdc import schema as S
from sales_cdc.config import DocsConfig, DqConfig, parse_params
from sales_cdc.contract import DEFAULT_CONTRACT, parse_contract
from sales_cdc.quality import DataQuality, Severity, SuiteError, load_suites
from sales_cdc.quality.batch_pages import BATCHES_DIR, GX_INDEX
from sales_cdc.quality.gx_runner import RESULTS_DIR
from sales_cdc.quality.rows import ROW_LEVEL_TYPES
from sales_cdc_local import generator as G
from tests.helpers import EXPECTATIONS, ORDERS, copy_project, edit_rule, is_quantity_between

REPO = Path(__file__).parent.parent
AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


# --- the suites as files --------------------------------------------------------------------------
def suite_columns() -> set[str]:
    columns = set()
    for suite in load_suites(EXPECTATIONS, ORDERS):
        for rule in suite.rules:
            columns.update(c for c in [rule.column, *(rule.kwargs.get("column_set") or [])] if c)
    return columns


def test_every_column_a_suite_names_is_a_state_column():
    state_columns = {f.name for f in S.state_fields(ORDERS)}
    assert suite_columns() <= state_columns


def test_every_required_state_column_has_a_not_null_rule_and_the_column_set_is_the_schema():
    rules = [r for s in load_suites(EXPECTATIONS, ORDERS) for r in s.rules]
    not_null = {r.column for r in rules if r.expectation_type == "expect_column_values_to_not_be_null"}
    required = {f.name for f in S.state_fields(ORDERS) if not f.nullable and f.name != S.CDC_BATCH_ID}
    assert required <= not_null, f"required columns without a not-null rule: {required - not_null}"
    [column_set] = [r for r in rules if r.expectation_type == "expect_table_columns_to_match_set"]
    assert column_set.kwargs["column_set"] == [f.name for f in S.state_fields(ORDERS)]
    assert column_set.kwargs.get("exact_match", True) is True  # GX leaves its default out of the file


def test_catalogue_and_quantity_rules_accept_everything_the_generator_produces():
    rules = {r.name: r for s in load_suites(EXPECTATIONS, ORDERS) for r in s.rules}
    assert set(rules["orders.product_name.be_in_set"].kwargs["value_set"]) == set(G.CATALOGUE)
    quantity = rules["orders.quantity.be_between"].kwargs
    assert (quantity["min_value"], quantity["max_value"]) == (1, G.MAX_QUANTITY)


def test_every_rule_has_a_severity_and_quarantine_rules_are_row_level():
    for suite in load_suites(EXPECTATIONS, ORDERS):
        for rule in suite.rules:
            assert isinstance(rule.severity, Severity)
            assert rule.why, f"{rule.name}: say why in meta.why"
            if rule.severity is Severity.QUARANTINE:
                assert rule.expectation_type in ROW_LEVEL_TYPES








def test_a_rule_without_severity_is_refused_at_start_up(tmp_path):
    project = copy_project(tmp_path)
    edit_rule(project, "orders", is_quantity_between, lambda e: e["meta"].pop("severity"))
    with pytest.raises(SuiteError, match=r"meta\.severity"):
        load_suites(project, ORDERS)


def test_quarantine_on_a_table_level_rule_is_refused(tmp_path):
    project = copy_project(tmp_path)
    path = project / "expectations" / "orders.json"
    document = json.loads(path.read_text())
    document["expectations"].append({"type": "expect_table_row_count_to_be_between", "kwargs": {"max_value": 10},
                                     "meta": {"severity": "quarantine"}})
    path.write_text(json.dumps(document, indent=2))
    with pytest.raises(SuiteError, match="needs a row-level expectation"):
        DataQuality(DqConfig(expectations_dir=project), ORDERS)


def test_max_event_time_moves_once_an_hour():
    config = DqConfig()
    assert config.parameters(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))["max_event_time"] == \
        datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
    for minute, second in ((0, 1), (30, 0), (59, 59)):
        assert config.parameters(datetime(2026, 11, 25, 12, minute, second, tzinfo=UTC))["max_event_time"] == \
            datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def test_a_parameter_the_job_does_not_supply_is_refused(tmp_path):
    project = copy_project(tmp_path)
    edit_rule(project, "orders", is_quantity_between,
              lambda e: e["kwargs"].update(max_value={"$PARAMETER": "max_quantity"}))
    with pytest.raises(SuiteError, match="max_quantity"):
        DataQuality(DqConfig(expectations_dir=project), ORDERS)


ORDERS_DOCUMENT = yaml.safe_load(DEFAULT_CONTRACT.read_text())


# --- real GX on real Spark ------------------------------------------------------------------------
def state_row(i: int | str, **changes) -> dict:
    row = dict(orderid=f"o-{i}", product_name="Laptop", quantity=2, price=Decimal("999.50"), customer_id="c-00001",
               customer_name="Ann Lee", created_at=AT, unmapped_attributes=None, cdc_event_id=f"e-{i}",
               cdc_op="MODIFY", cdc_sequence=str(abs(hash(str(i))) % 10**12).zfill(40), cdc_event_time=AT,
               cdc_batch_id=1)
    row.update(changes)
    return row


# One crafted row per rule; each breaks only that rule.
BAD_ROWS = {
    "cdc_envelope.cdc_event_id.not_be_null": [dict(cdc_event_id=None)],
    "cdc_envelope.cdc_event_time.not_be_null": [dict(cdc_event_time=None)],
    "cdc_envelope.cdc_event_time.be_between": [dict(cdc_event_time=datetime(2031, 1, 1, tzinfo=UTC))],
    "orders.product_name.not_be_null": [dict(product_name=None)],
    "orders.product_name.be_in_set": [dict(product_name="Toaster")],
    "orders.quantity.not_be_null": [dict(quantity=None)],
    "orders.quantity.be_between": [dict(quantity=0), dict(quantity=9)],
    "orders.price.not_be_null": [dict(price=None)],
    "orders.price.be_between": [dict(price=Decimal("0.00")), dict(price=Decimal("10000.01"))],
    "orders.customer_id.match_regex": [dict(customer_id="cust 1")],
    "orders.created_at.be_between": [dict(created_at=datetime(2010, 1, 1, tzinfo=UTC))],
    "orders.unmapped_attributes.be_null": [dict(unmapped_attributes='{"gift_note": {"S": "hi"}}')],
}
HALT_ROWS = {
    "cdc_envelope.cdc_op.not_be_null": [dict(cdc_op=None)],
    "cdc_envelope.cdc_op.be_in_set": [dict(cdc_op="UPSERT")],
    "cdc_envelope.cdc_sequence.not_be_null": [dict(cdc_sequence=None)],
    "cdc_envelope.cdc_sequence.match_regex": [dict(cdc_sequence="12")],
    "orders.orderid.not_be_null": [dict(orderid=None)],
    "orders.orderid.be_unique": [dict(orderid="o-twice"), dict(orderid="o-twice")],
}


@pytest.fixture(scope="module")
def dq(tmp_path_factory):
    docs = tmp_path_factory.mktemp("docs")
    return DataQuality(DqConfig(expectations_dir=EXPECTATIONS, docs=DocsConfig(str(docs))), ORDERS, job_name="dq-test")


def nullable(schema: T.StructType) -> T.StructType:
    """Crafted rows break rules a real batch could only break through a bug: let every column be null."""
    return T.StructType([T.StructField(f.name, f.dataType, True) for f in schema.fields])


def frame(spark, rows, schema=None):
    return spark.createDataFrame(rows, nullable(schema or S.state_schema(ORDERS))).cache()


def test_good_rows_pass_every_rule(spark, dq):
    removed = state_row("gone", cdc_op="REMOVE", product_name=None, quantity=None, price=None, customer_id=None,
                        customer_name=None, created_at=None)  # a delete carries what was deleted, maybe partial
    outcome = dq.check(frame(spark, [state_row(i) for i in range(5)] + [removed]), batch_id=1)
    assert [r.rule.name for r in outcome.rules if not r.success] == []
    assert outcome.outcome == "passed"
    assert outcome.quarantined_rows == 0 and outcome.rejected is None


def test_each_rule_catches_its_crafted_bad_row_and_the_row_predicate_agrees_with_gx(spark, dq):
    rows, expected = [state_row(f"good-{i}") for i in range(3)], {}
    for rule, variants in BAD_ROWS.items():
        for n, change in enumerate(variants):
            rows.append(state_row(f"{rule}-{n}", **change))
        expected[rule] = len(variants)
    outcome = dq.check(frame(spark, rows), batch_id=2)

    by_name = {r.rule.name: r for r in outcome.rules}
    for rule, count in expected.items():
        result = by_name[rule]
        assert not result.success, rule
        assert result.unexpected_count == count, rule  # GX's count ...
        assert result.failed_rows == count, rule  # ... equals the row-level predicate's
    assert all(r.success for r in outcome.rules if r.rule.name not in expected)

    quarantine_rules = {n for n in expected if by_name[n].rule.severity is Severity.QUARANTINE}
    rejected = {r[S.CDC_EVENT_ID]: r[S.QUARANTINE_REASON] for r in outcome.rejected.collect()}
    # exactly the rows of quarantine rules are rejected, each with its rule as the reason
    expected_ids = {f"e-{rule}-{n}": rule for rule in quarantine_rules for n in range(expected[rule])}
    expected_ids.pop("e-cdc_envelope.cdc_event_id.not_be_null-0")  # that row has no event id to name it by
    assert {k: v for k, v in rejected.items() if k is not None} == expected_ids
    assert outcome.quarantined_rows == sum(expected[r] for r in quarantine_rules)
    passed_ids = {r[S.CDC_EVENT_ID] for r in outcome.passed.collect()}
    assert {"e-good-0", "e-good-1", "e-good-2", "e-orders.customer_id.match_regex-0"} <= passed_ids  # warn: flows
    assert passed_ids.isdisjoint(expected_ids)
    assert outcome.outcome == "quarantined"


def test_halt_rules_catch_their_rows_and_schema_drift(spark, dq):
    rows = [state_row("good")]
    for rule, variants in HALT_ROWS.items():
        rows += [state_row(f"{rule}-{n}", **change) for n, change in enumerate(variants)]
    batch = frame(spark, rows)
    outcome = dq.check(batch, batch_id=3)
    by_name = {r.rule.name: r for r in outcome.rules}
    predicates = dq.row_failures(batch)  # check() leaves halt rules to GX; their predicates still agree with it
    for rule, variants in HALT_ROWS.items():
        assert not by_name[rule].success, rule
        assert by_name[rule].failed_rows is None, rule
        assert by_name[rule].unexpected_count == predicates[rule] == len(variants), rule
    assert outcome.halted and outcome.rejected is None

    drifted = T.StructType([T.StructField("quantity", T.LongType()) if f.name == "quantity" else
                            T.StructField("price", T.DoubleType()) if f.name == "price" else f
                            for f in S.state_schema(ORDERS).fields] + [T.StructField("surprise", T.StringType())])
    rows = [{**state_row(1, quantity=2, price=9.5), "surprise": "x"}]
    outcome = dq.check(frame(spark, rows, drifted), batch_id=4)
    failed = {r.rule.name for r in outcome.failed(Severity.HALT)}
    assert failed == {"orders.table_columns_to_match_set", "orders.quantity.be_of_type", "orders.price.be_of_type"}
    assert "halt" in dq.halt_message(outcome) and "orders.price.be_of_type" in dq.halt_message(outcome)
    assert "the rows have surprise, which the contract does not name: add the attribute(s) to the contract" in \
        dq.halt_message(outcome)


def test_a_suite_rule_on_a_column_the_contract_lacks_is_skipped_with_a_warning(spark, caplog):
    """The tutorial's four attributes under the entity orders: the orders suite's rules on customer_id and
    created_at cannot apply (the table has no such columns); they are skipped at start-up, loudly, and the rest
    validate the batch, instead of an AnalysisException in the first batch."""
    four = parse_contract({"table": "OrdersRawTable", "entity": "orders", "key": {"partition": "orderid"},
                           "attributes": {n: s for n, s in ORDERS_DOCUMENT["attributes"].items()
                                          if n in ("orderid", "product_name", "quantity", "price")}}, "test").entity
    with caplog.at_level("WARNING", logger="sales_cdc.quality.suites"):
        dq = DataQuality(DqConfig(expectations_dir=EXPECTATIONS), four, job_name="dq-four")
    assert "suite orders: rule orders.customer_id.match_regex skipped: the contract has no column customer_id" in \
        caplog.text
    assert "orders.created_at.be_between" in caplog.text
    assert not [r for r in dq.rules if r.column in ("customer_id", "customer_name", "created_at")]
    row = {k: v for k, v in state_row(1).items() if k in {f.name for f in S.state_fields(four)}}
    outcome = dq.check(spark.createDataFrame([row], nullable(S.state_schema(four))), batch_id=1)
    assert outcome.outcome == "passed"


def test_validation_leaves_nothing_cached(spark, dq):
    """The batch handler checkpoints each batch's state and releases it at the end of the batch; GX's Spark
    datasource, by default, persists every frame it validates and never unpersists it: one cached frame per
    batch, for as long as the stream runs."""
    persisted = spark.sparkContext._jsc.getPersistentRDDs
    batch = spark.createDataFrame([state_row(i) for i in range(3)], nullable(S.state_schema(ORDERS)))
    before = set(persisted().keySet())
    outcome = dq.check(batch, batch_id=6)
    assert outcome.outcome == "passed"
    assert not batch.storageLevel.useMemory and not batch.storageLevel.useDisk
    assert set(persisted().keySet()) == before


def test_row_predicates_run_when_gx_finds_a_failure_or_the_previous_batch_failed(spark):
    """Clean batches (the usual case) need no row-predicate job: a clean batch after a failing one runs more
    Spark jobs (the predicates, run first) than a clean batch after a clean one."""
    dq = DataQuality(DqConfig(expectations_dir=EXPECTATIONS), ORDERS, "order-of-checks")
    clean = [state_row(i) for i in range(3)]
    dirty = [*clean, state_row("bad", quantity=9)]
    batches = [(clean, "passed", 0), (dirty, "quarantined", 1), (dirty, "quarantined", 1),
               (clean, "passed", 0), (clean, "passed", 0)]
    jobs = []
    tracker = spark.sparkContext.statusTracker()
    for batch_id, (rows, verdict, quarantined) in enumerate(batches):
        data = frame(spark, rows).localCheckpoint()  # as the handler hands it over
        spark.sparkContext.setJobGroup(f"dq-order-{batch_id}", "data quality")
        outcome = dq.check(data, batch_id)
        jobs.append(len(tracker.getJobIdsForGroup(f"dq-order-{batch_id}")))
        assert (outcome.outcome, outcome.quarantined_rows) == (verdict, quarantined), batch_id
        quantity = next(r for r in outcome.rules if r.rule.name == "orders.quantity.be_between")
        assert (quantity.unexpected_count, quantity.failed_rows) == (quarantined, quarantined), batch_id
        if quarantined:
            assert [r[S.CDC_EVENT_ID] for r in outcome.rejected.collect()] == ["e-bad"]
    spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # this thread's later jobs: no group
    assert jobs[3] > jobs[4] == jobs[0], jobs  # predicates after a failure only


def test_the_next_batch_within_the_hour_compiles_no_new_code(spark, dq):
    """Spark caches generated code by its source text. GX's metric queries come in a stable order, and the
    bounds move once an hour: the next batch's queries are the same text, and nothing is compiled again."""
    compilations = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME()
    def batch():  # as the batch handler hands it over: checkpointed
        return spark.createDataFrame([state_row(i) for i in range(4)], nullable(S.state_schema(ORDERS))).localCheckpoint()

    assert dq.check(batch(), batch_id=7, validated_at=AT + timedelta(minutes=5)).outcome == "passed"
    compiled = compilations.getCount()
    assert dq.check(batch(), batch_id=8, validated_at=AT + timedelta(minutes=25)).outcome == "passed"
    assert compilations.getCount() == compiled


def test_results_history_has_one_row_per_rule(spark, dq):
    outcome = dq.check(frame(spark, [state_row(1), state_row(2, quantity=7)]), batch_id=5)
    history = outcome.history("job-x", "stream-y").to_pylist()
    assert len(history) == len(dq.rules)
    by_rule = {h["rule"]: h for h in history}
    assert by_rule["orders.quantity.be_between"] | {"validated_at": None, "docs_url": None} == {
        "job_name": "job-x", "stream_id": "stream-y", "batch_id": 5, "validated_at": None,
        "batch_outcome": "quarantined", "suite": "orders", "rule": "orders.quantity.be_between",
        "expectation_type": "expect_column_values_to_be_between", "severity": "quarantine", "success": False,
        "element_count": 2, "unexpected_count": 1, "quarantined_rows": 1, "details": None, "docs_url": None}
    assert by_rule["orders.quantity.be_between"]["docs_url"].endswith(".html")
    assert by_rule["orders.quantity.be_of_type"]["details"] == "observed: IntegerType"


def test_docs_keep_every_batch_page_and_index_the_latest_batches(spark, tmp_path):
    docs = tmp_path / "docs"
    dq = DataQuality(DqConfig(expectations_dir=EXPECTATIONS, docs=DocsConfig(str(docs), index_batches=2)), ORDERS, "idx")
    outcomes = [dq.check(frame(spark, [state_row(i)]), batch_id=i) for i in (1, 2, 3)]

    for batch_id, outcome in enumerate(outcomes, start=1):  # no page is deleted by a later batch
        for suite in ("cdc_envelope", "orders"):
            page = Path(outcome.docs_urls[suite].removeprefix("file://"))
            assert f"idx-batch-{batch_id}" in page.read_text()
    index = (docs / GX_INDEX).read_text()  # GX's list of the results held
    assert "idx-batch-3" in index and "idx-batch-2" in index and "idx-batch-1" not in index
    assert len(dq.gx.context.validation_results_store.list_keys()) == 4  # 2 batches x 2 suites held in memory
    assert len(list((docs / RESULTS_DIR / "idx").glob("*.json"))) == 4  # and kept on the site for the next job


def test_the_site_s_batch_list_keeps_the_latest_batches_across_a_restart(spark, tmp_path):
    """The job's own index (batch_pages): a summary per batch, its page, the latest ``index_batches`` listed, and a
    restarted job lists the batches before it."""
    config = DqConfig(expectations_dir=EXPECTATIONS, docs=DocsConfig(str(tmp_path / "docs"), index_batches=2))
    first = DataQuality(config, ORDERS, "pages")
    for batch_id in (1, 2):
        first.record_batch("stream-a", batch_id, events_read=batch_id * 10,
                           outcome=first.check(frame(spark, [state_row(batch_id)]), batch_id=batch_id))
    DataQuality(config, ORDERS, "pages").record_batch("stream-a", 3, events_read=30)  # restarted
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "batches/pages-stream-a-3.html" in index and "batches/pages-stream-a-2.html" in index
    assert "batches/pages-stream-a-1.html" not in index  # out of the list; its page stays
    assert (tmp_path / "docs" / "batches" / "pages-stream-a-1.html").exists()
    kept = sorted(p.stem for p in (tmp_path / "docs" / BATCHES_DIR / "pages").glob("*.json"))
    assert kept == ["pages-stream-a-2", "pages-stream-a-3"]  # a restart reads the batches listed, not every one


def test_a_restarted_job_indexes_the_batches_before_the_restart(spark, tmp_path):
    docs = tmp_path / "docs"
    config = DqConfig(expectations_dir=EXPECTATIONS, docs=DocsConfig(str(docs), index_batches=3))
    first = DataQuality(config, ORDERS, "rs")
    for batch_id in (1, 2):
        first.check(frame(spark, [state_row(batch_id)]), batch_id=batch_id)

    restarted = DataQuality(config, ORDERS, "rs")  # a new job: a new, empty GX context on the same site
    assert len(restarted.gx.context.validation_results_store.list_keys()) == 4
    restarted.check(frame(spark, [state_row(3)]), batch_id=3)
    restarted.check(frame(spark, [state_row(4)]), batch_id=4)
    index = (docs / GX_INDEX).read_text()
    assert all(f"rs-batch-{b}" in index for b in (2, 3, 4)) and "rs-batch-1" not in index  # the latest 3
    assert len(list((docs / RESULTS_DIR / "rs").glob("*.json"))) == 6  # batch 1's results are no longer kept
    (docs / RESULTS_DIR / "rs" / "broken.json").write_text("{")  # unreadable files are skipped, with a warning
    (docs / RESULTS_DIR / "rs" / "other.json").write_text('{"key": ["x"], "result": {}}')
    assert len(DataQuality(config, ORDERS, "rs").gx.context.validation_results_store.list_keys()) == 6
    assert DataQuality(config, ORDERS, "another-job").gx.context.validation_results_store.list_keys() == []  # its own


def test_an_s3_docs_site_uploads_the_whole_site_once_then_only_what_each_batch_writes(spark, moto, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the job's credentials come from its environment
        monkeypatch.setenv(name, "testing")
    bucket = f"docs-{uuid.uuid4().hex[:8]}"
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket)
    dq = DataQuality(DqConfig(expectations_dir=EXPECTATIONS, docs=DocsConfig(f"s3://{bucket}/dq", moto.endpoint)), ORDERS, "s3docs")
    site = dq.gx.sync

    def on_s3() -> set[str]:
        return {o["Key"].removeprefix("dq/") for o in s3.list_objects_v2(Bucket=bucket, Prefix="dq/")["Contents"]}

    def built() -> set[str]:
        return {p.relative_to(site.local_dir).as_posix() for p in site.local_dir.rglob("*") if p.is_file()}

    dq.check(frame(spark, [state_row(1)]), batch_id=1)
    first = len(site.uploaded)
    assert on_s3() == built() and first > 10  # styles, scripts, the suites' pages, the batch's pages, the index
    outcome = dq.check(frame(spark, [state_row(2)]), batch_id=2)
    assert on_s3() == built()  # nothing the second batch wrote is missing on S3 ...
    assert len(site.uploaded) == first + 4  # ... and only its two pages and two kept results were new
    page = outcome.docs_urls["orders"].removeprefix(f"s3://{bucket}/")
    assert "s3docs-batch-2" in s3.get_object(Bucket=bucket, Key=page)["Body"].read().decode()

    restarted = DataQuality(DqConfig(expectations_dir=EXPECTATIONS, docs=DocsConfig(f"s3://{bucket}/dq", moto.endpoint)), ORDERS, "s3docs")  # a new local folder
    restarted.check(frame(spark, [state_row(3)]), batch_id=3)
    index = s3.get_object(Bucket=bucket, Key=f"dq/{GX_INDEX}")["Body"].read().decode()
    assert [b for b in (1, 2, 3) if f"s3docs-batch-{b}" not in index] == [], (
        len(restarted.gx.context.validation_results_store.list_keys()), sorted(on_s3())[:50])
    assert on_s3() >= {p.relative_to(restarted.gx.sync.local_dir).as_posix()
                       for p in restarted.gx.sync.local_dir.rglob("*") if p.is_file()}
    # the batch list: a summary per batch on S3, and a job restarted on a new folder still lists the earlier ones
    restarted.record_batch("stream-s3", 3, events_read=3)
    again = DataQuality(DqConfig(expectations_dir=EXPECTATIONS, docs=DocsConfig(f"s3://{bucket}/dq", moto.endpoint)),
                        ORDERS, "s3docs")
    again.record_batch("stream-s3", 4, events_read=4)
    batch_list = s3.get_object(Bucket=bucket, Key="dq/index.html")["Body"].read().decode()
    assert "batches/s3docs-stream-s-3.html" in batch_list and "batches/s3docs-stream-s-4.html" in batch_list
    assert "static/vendor/bootstrap/dist/css/bootstrap.min.css" in on_s3()  # the site's own styles, uploaded


def test_a_suite_parameter_takes_its_suite_default_and_dq_param_overrides_it(spark):
    """price_ceiling: 10000.00 from the orders suite's meta.parameters, 500 with --dq-param."""
    rows = frame(spark, [state_row(1, price=Decimal("600.00")), state_row(2, price=Decimal("400.00"))])
    by_default = DataQuality(DqConfig(expectations_dir=EXPECTATIONS, result_format="BOOLEAN_ONLY"), ORDERS, "p1")
    assert by_default.parameters(AT)["price_ceiling"] == Decimal("10000.00")
    assert by_default.check(rows, batch_id=1).quarantined_rows == 0
    lowered = DataQuality(DqConfig(expectations_dir=EXPECTATIONS, params=parse_params(["price_ceiling=500"])),
                          ORDERS, "p2")
    outcome = lowered.check(rows, batch_id=1)
    assert outcome.quarantined_rows == 1 and [r.rule.name for r in outcome.rules if not r.success] == \
        ["orders.price.be_between"]


@pytest.mark.parametrize("bad", ["price_ceiling", "=5", "Price=5"])
def test_a_malformed_dq_param_is_refused(bad):
    with pytest.raises(ValueError, match=r"price_ceiling=5000|invalid identifier"):
        parse_params([bad])
