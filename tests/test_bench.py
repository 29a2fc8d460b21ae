"""A tiny run of the benchmark harness: it runs every case and writes its three outputs (figures at
this size mean nothing; `make bench` measures)."""

from __future__ import annotations

import json

import pytest
from bench.cases import (
    parse_dedupe_floor_rows,
    payload_lines,
    source_frame,
    state_rows,
    typed_flatten_floor_rows,
    udf_state_rows,
)
from bench.run import main
from chispa import assert_df_equality

from sales_cdc.decode import decode_flagged
from tests.helpers import ORDERS

pytestmark = pytest.mark.slow


def test_bench_harness_smoke(spark, pg_url, tmp_path):
    assert main(["--smoke", "--out", str(tmp_path), "--warehouse-url", pg_url]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["events"] for r in results["sizes"]] == [200]
    assert {"end_to_end", "without_gx", "ceiling_decode_dedupe_merge", "udf_type_deserializer_s"} <= set(
        results["sizes"][0])
    assert results["sizes"][0]["end_to_end"]["stages"].keys() >= {"decode", "data_quality", "lake", "warehouse"}
    # the performance targets: decode, end to end, fixed cost, freshness, driver memory, cores; merge, raw, reuse
    assert len(results["checks"]) == 14 and results["machine"]["cores"]
    assert results["largest"]["events"] == 400 and results["largest"]["seconds"] > 0
    # the driver's memory, each size in a process of its own: the pipeline's peak, the JVM's, delta-rs's floor
    assert [m["events"] for m in results["memory"]] == [200, 400]
    # (at a few hundred events neither process need grow past the pages its warm-up touched: zero is a figure)
    assert all(m["state_rows"] > 0 and min(m["driver_python_peak_mb"], m["jvm_peak_mb"],
                                           m["delta_merge_alone_peak_mb"]) >= 0 for m in results["memory"])
    assert [c["master"] for c in results["cores"]] == ["local[1]", "local[2]"]
    assert all(c["seconds"] > 0 and c["events"] == 200 for c in results["cores"])
    assert results["fixed_cost"]["events"] == 1 and results["fixed_cost"]["spark_jobs"] > 0
    assert results["sizes"][0]["end_to_end"]["spark_jobs"] > 0 and results["sizes"][0]["typed_floor_dedupe_s"] > 0
    assert all(seconds > 0 for seconds in results["sizes"][0]["reuse"].values())  # decode columns, docs pages
    assert results["sizes"][0]["parse_dedupe_floor_s"] > 0 and "Floor of any decode" in (tmp_path / "results.md").read_text()
    assert results["sizes"][0]["typed_flatten_floor_s"] > 0
    [fresh] = results["freshness"]
    assert fresh["visible"] == fresh["events"] == 100
    # the latency split per hop: DynamoDB write -> on Kinesis (pipe) -> visible in the warehouse (job)
    assert 0 <= fresh["write_to_kinesis_p95_s"] <= fresh["max_s"] and fresh["kinesis_to_warehouse_p95_s"] >= 0
    assert fresh["batches"] >= 1 and fresh["batch_stage_seconds_median"].keys() >= {"decode", "warehouse"}
    # the baseline in the same run: the emulated source alone, its lag and the CPU it takes from the job
    source = results["source_alone"]
    assert source["piped"] == source["events"] == 100 and source["write_to_kinesis_p95_s"] >= 0
    assert source["cores_used"].keys() >= {"moto DynamoDB", "pipe", "writer", "source", "machine"}
    assert fresh["cores_used"]["source"] > 0
    assert "| target |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "throughput.png").read_bytes()[:4] == b"\x89PNG"


def test_the_udf_baseline_computes_the_same_state_rows_as_our_decode(spark, tmp_path):
    """The decode speed target compares like with like: the Python-UDF baseline yields exactly our rows."""
    df = source_frame(spark, payload_lines(300, tmp_path))
    ours = state_rows(df)
    assert_df_equality(udf_state_rows(df), ours, ignore_row_order=True, ignore_nullable=True)
    assert ours.count() > 200  # 20 % updates, 10 % deletes over 300 events: most keys appear once


def test_the_parse_and_dedupe_floor_keeps_the_events_our_decode_keeps(spark, tmp_path):
    """The floor does the least work that still picks the same latest event per key as ours."""
    df = source_frame(spark, payload_lines(300, tmp_path, seed=2))
    kept = ["orderid", "cdc_sequence", "cdc_event_id"]
    assert_df_equality(parse_dedupe_floor_rows(df).select(*kept), state_rows(df).select(*kept),
                       ignore_row_order=True, ignore_nullable=True)


def test_the_typed_flatten_floor_yields_our_values_for_clean_records(spark, tmp_path):
    """The floor types the same values as our decode on records that decode cleanly (the bench's payloads)."""
    df = source_frame(spark, payload_lines(300, tmp_path, seed=4))
    floor = typed_flatten_floor_rows(df)
    ours = decode_flagged(df, ORDERS)
    assert ours.where("_has_errors or _has_warnings").count() == 0
    assert_df_equality(floor, ours.select(*floor.columns), ignore_row_order=True, ignore_nullable=True)
