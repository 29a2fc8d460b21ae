"""The benchmark report: the machine, each target's check, results.md and the throughput chart."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from bench.freshness import MACHINE, REST, SOURCE


def machine() -> dict:
    import deltalake
    import great_expectations
    import pyspark

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cores": os.cpu_count(), "memory_gb": round(memory / 2**30, 1),
            "python": platform.python_version(), "pyspark": pyspark.__version__,
            "great_expectations": great_expectations.__version__, "deltalake": deltalake.__version__,
            "platform": platform.platform(), "spark_master": "local[2]"}


def check(name: str, value: float, target: str, ok: bool) -> dict:
    return {"target": name, "value": round(value, 3), "goal": target, "pass": bool(ok)}



def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    m = results["machine"]
    lines = [f"# Benchmark results ({results['when']})", "",
             f"{m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, PySpark {m['pyspark']} "
             f"({m['spark_master']}), GX {m['great_expectations']}, deltalake {m['deltalake']}", "",
             "| events | end-to-end ev/s | without GX ev/s | ceiling ev/s | GX share | decode s | "
             "decode with messages s | raw parse s | UDF decode+dedupe s | UDF, one image s | our decode+dedupe s | "
             "unchecked typed floor s | Spark jobs | stages (end-to-end, s) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["sizes"]:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in r["end_to_end"]["stages"].items())
        rates = [r[k]["events_per_s"] for k in ("end_to_end", "without_gx", "ceiling_decode_dedupe_merge")]
        seconds = [r[k] for k in ("decode_flatten_s", "decode_flatten_with_messages_s", "raw_json_parse_s",
                                  "udf_type_deserializer_s", "udf_one_image_s", "decode_dedupe_s",
                                  "typed_floor_dedupe_s")]
        lines.append(f"| {r['events']} | " + " | ".join(f"{x:,.0f}" for x in rates) + f" | {r['gx_share']:.0%} | "
                     + " | ".join(f"{x:.2f}" for x in seconds)
                     + f" | {r['end_to_end'].get('spark_jobs', '')} | {stages} |")
    lines += ["", f"Naive per-record upsert: {results['naive_upsert']['events_per_s']:,.0f} events/s "
                  f"({results['naive_upsert']['events']} events).",
              f"Merge of a {results['merge']['batch_events']}-event batch: "
              + " vs ".join(f"{s:.2f} s into {n:,} rows" for s, n in zip(results["merge"]["seconds"],
                                                                          results["merge"]["into_rows"], strict=True)),
              f"Raw write of a {results['raw_write']['batch_events']}-event batch (each record once), "
              "and a plain append: " + _raw_text(results["raw_write"]),
              _fixed_text(results["fixed_cost"]),
              _largest_text(results["largest"]),
              _memory_text(results["memory"]),
              _core_count_text(results["cores"]),
              *["Freshness (DynamoDB write -> visible in the warehouse, moto path, 1 s trigger): "
                + _freshness_text(fresh) for fresh in results["freshness"]],
              _floor_text(results["sizes"][-1]),
              _typed_floor_text(results["sizes"][-1]),
              "Baseline, the emulated source alone (writer -> moto DynamoDB + stream -> pipe -> moto Kinesis, "
              "no job): " + _source_text(results["source_alone"]),
              "", "| target | value | goal | |", "|---|---:|---|---|"]
    lines += [f"| {c['target']} | {c['value']} | {c['goal']} | {'pass' if c['pass'] else 'FAIL'} |"
              for c in results["checks"]]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    chart(results, out / "throughput.png")


def _fixed_text(fixed: dict) -> str:
    stages = ", ".join(f"{k} {v:.2f}" for k, v in fixed["stages"].items())
    return (f"Fixed cost per batch (a one-event batch, whole pipeline): {fixed['seconds']:.2f} s, "
            f"{fixed.get('spark_jobs', '?')} Spark jobs; stages (s): {stages}.")


def _largest_text(largest: dict) -> str:
    if "error" in largest:
        return f"The largest batch, {largest['events']:,} events, failed: {largest['error']}"
    return (f"The largest batch, {largest['events']:,} events: {largest['seconds']:.2f} s "
            f"({largest['events_per_s']:,.0f} events/s), {largest.get('spark_jobs', '?')} Spark jobs.")


def _memory_text(memory: list[dict]) -> str:
    """The driver's peak memory per batch size (``bench.memory``), each size in a process of its own."""
    def one(m: dict) -> str:
        if "error" in m:
            return f"{m['events']:,} events failed: {m['error']}"
        return (f"{m['events']:,} events ({m['state_rows']:,} state rows) {m['driver_python_peak_mb']:.0f} MB "
                f"(the JVM {m['jvm_peak_mb']:.0f} MB; delta-rs's MERGE of those state rows alone "
                f"{m['delta_merge_alone_peak_mb']:.0f} MB)")
    return ("Driver memory, one batch in a process of its own per size, data quality and the Delta lake on (how much "
            "the driver's Python process grows at its peak, whoever allocates: Spark's collect, pandas, delta-rs, "
            "the COPY; the Spark JVM, which in local mode also runs the executors, beside it): "
            + "; ".join(one(m) for m in memory) + ".")


def _core_count_text(cores: list[dict]) -> str:
    runs = [f"{c['master']} {c['seconds']:.2f} s" if "seconds" in c else f"{c['master']} failed: {c.get('error')}"
            for c in cores]
    return f"One batch of {cores[0]['events']:,} events, whole pipeline, per Spark master: {', '.join(runs)}."


def _floor_text(size: dict) -> str:
    floor, udf = size["parse_dedupe_floor_s"], size["udf_type_deserializer_s"]
    return (f"Floor of any decode + dedupe at {size['events']} events (each payload parsed once, key and sequence "
            f"read, the same row_number dedupe; nothing typed or checked): {floor:.2f} s, {udf / floor:.1f}x "
            f"faster than the Python-UDF baseline ({udf:.2f} s); ours {size['decode_dedupe_s']:.2f} s. The least a "
            f"decode + dedupe yielding our typed state rows does (the typed flatten below, nothing checked, the same "
            f"dedupe): {size['typed_floor_dedupe_s']:.2f} s, {udf / size['typed_floor_dedupe_s']:.2f}x the UDF.")


def _typed_floor_text(size: dict) -> str:
    parse, floor, ours = size["raw_json_parse_s"], size["typed_flatten_floor_s"], size["decode_flatten_s"]
    return (f"Floor of a decode + flatten into typed columns at {size['events']} events (parsed once, the mapped "
            f"attributes cast; nothing checked, unknown attributes dropped): {floor:.2f} s, {parse / floor:.2f} of "
            f"the raw parse's speed ({parse:.2f} s); ours, with every check and unknown attributes kept: "
            f"{ours:.2f} s, {parse / ours:.2f}.")


def _freshness_text(fresh: dict) -> str:
    if not fresh.get("visible"):
        return "no event became visible"
    lag_by_window = ", ".join(f"{x:.1f}" for x in fresh.get("write_to_kinesis_p50_by_5s", []))
    return (f"p50 {fresh['p50_s']:.2f} s, p95 {fresh['p95_s']:.2f} s over {fresh['visible']} events written at "
            f"{fresh['achieved_write_rate']:,.0f}/s (target {fresh['target_rate']:,.0f}/s) after "
            f"{fresh.get('warmup_s', 0):.0f} s of warm-up; of which write -> on "
            f"Kinesis (moto stream + pipe) p50 {fresh['write_to_kinesis_p50_s']:.2f} s / p95 "
            f"{fresh['write_to_kinesis_p95_s']:.2f} s, Kinesis -> warehouse (the job) p50 "
            f"{fresh['kinesis_to_warehouse_p50_s']:.2f} s / p95 {fresh['kinesis_to_warehouse_p95_s']:.2f} s; "
            f"{fresh['batches']} batches, median {fresh['batch_events_median']:,.0f} events in "
            f"{fresh['batch_seconds_median']:.2f} s; median write -> on Kinesis per 5 s of writes (flat: keeping "
            f"up, rising: falling behind): {lag_by_window} s; {_cores_text(fresh.get('cores_used', {}))}")


def _cores_text(cores: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cores.items() if k not in (MACHINE, SOURCE, REST))
    return (f"cores busy {cores.get(MACHINE, 0):.2f} of {os.cpu_count()}: {SOURCE} {cores.get(SOURCE, 0):.2f} "
            f"({parts}), {REST} {cores.get(REST, 0):.2f}")


def _source_text(source: dict) -> str:
    if not source.get("piped"):
        return "nothing reached Kinesis"
    return (f"{source['events']} writes at {source['achieved_write_rate']:,.0f}/s (target "
            f"{source['target_rate']:,.0f}/s), write -> on Kinesis p50 {source['write_to_kinesis_p50_s']:.2f} s / "
            f"p95 {source['write_to_kinesis_p95_s']:.2f} s; {_cores_text(source['cores_used'])}")


def chart(results: dict, path: Path) -> None:
    """Throughput per batch size beside its baselines; seconds per batch by size, with the targets as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rates, times) = plt.subplots(1, 2, figsize=(12, 4.5))
    _throughput(rates, results)
    _batch_seconds(times, results)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _throughput(ax, results: dict) -> None:
    sizes = [r["events"] for r in results["sizes"]]
    series = {"end-to-end": [r["end_to_end"]["events_per_s"] for r in results["sizes"]],
              "without GX": [r["without_gx"]["events_per_s"] for r in results["sizes"]],
              "decode+dedupe+merge ceiling": [r["ceiling_decode_dedupe_merge"]["events_per_s"]
                                              for r in results["sizes"]],
              "naive per-record upsert": [results["naive_upsert"]["events_per_s"]] * len(sizes)}
    width = 0.2
    for i, (name, values) in enumerate(series.items()):
        ax.bar([x + i * width for x in range(len(sizes))], values, width, label=name)
    ax.set_xticks([x + 1.5 * width for x in range(len(sizes))], [f"{s:,}" for s in sizes])
    ax.set_xlabel("events per micro-batch")
    ax.set_ylabel("events / s")
    ax.set_title("throughput (local[2])")
    ax.legend(fontsize=8)


def _batch_seconds(ax, results: dict) -> None:
    """Seconds per batch by size (log-log), the naive upsert's as a line, and the targets: a one-event batch
    <= 0.4 s, a 1000-event batch <= 0.6 s."""
    largest = results["largest"]
    points = sorted([(1, results["fixed_cost"]["seconds"]), *[(r["events"], r["end_to_end"]["seconds"])
                                                               for r in results["sizes"]],
                     *([(largest["events"], largest["seconds"])] if "seconds" in largest else [])])
    events = [e for e, _ in points]
    ax.plot(events, [s for _, s in points], marker="o", label="whole batch")
    ax.plot(events, [e / results["naive_upsert"]["events_per_s"] for e in events], linestyle=":",
            label="naive per-record upsert")
    ax.scatter([1, 1000], [0.4, 0.6], marker="_", s=400, color="red", label="targets (1 event, 1000 events)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events per micro-batch")
    ax.set_ylabel("seconds per batch")
    ax.set_title("batch time by size")
    ax.legend(fontsize=8)


def _raw_text(raw: dict) -> str:
    return " vs ".join(f"{s:.2f} s (append {a:.2f} s) into a day of {n:,} rows"
                       for s, a, n in zip(raw["seconds"], raw["append_s"], raw["day_rows"], strict=True))
