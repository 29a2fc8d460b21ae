"""The driver's memory for one batch size, in a process of its own: how much the driver's Python process grows at
its peak while one batch goes through the whole pipeline (data quality and the Delta lake on), and beside it the
floor that the local lake sets, delta-rs's MERGE of the same state rows alone.

Measured as the peak resident set (Linux's ``VmHWM``, reset through ``/proc/<pid>/clear_refs`` just before the
batch) above the resident set at that moment: everything the process holds counts, whoever allocated it (Spark's
collected Arrow, pandas, delta-rs's Rust allocations, the CSV sent to COPY). A process of its own per size,
because memory a batch frees stays with the process and would hide the next batch's growth. The Spark JVM's own
peak is reported beside it; in local mode it holds the executors' work too, so it is context, not the target.

``python -m bench.memory --events 100000 --warehouse-url URL`` prints one JSON object.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
import tempfile
import uuid
from pathlib import Path

from deltalake import DeltaTable, write_deltalake

from bench.cases import Bench, child_main, in_a_child, payload_lines, source_frame
from sales_cdc.job import build_spark

WARM_UP_EVENTS = 1_000  # batches run first, so that one-off costs (JIT, GX's first run, imports) are not counted


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1])


def _release_free_memory() -> None:
    """Hand the Python process's freed heap back to the system (glibc's ``malloc_trim``), so that the batch's
    allocations show as growth instead of reusing what the payloads' set-up freed (1M payloads leave ~1 GB)."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL(libc).malloc_trim(0)


class PeakRss:
    """The most each process's resident set grows above where it was on entry (MB): its peak is reset on entry
    (``clear_refs`` 5), so what the process held before does not count; this process's freed heap is released
    first, so that memory it freed before is not reused unseen."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids, self.start, self.growth_mb = pids, {}, {}

    def __enter__(self) -> PeakRss:
        _release_free_memory()
        for name, pid in self.pids.items():
            with open(f"/proc/{pid}/clear_refs", "w") as refs:
                refs.write("5")
            self.start[name] = _status_kb(pid, "VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.growth_mb = {name: (_status_kb(pid, "VmHWM") - self.start[name]) / 1024 for name, pid in self.pids.items()}


def _merge_alone(bench: Bench, workdir: Path) -> tuple[int, float]:
    """The floor: delta-rs's MERGE of the measured batch's state rows (read back from its silver, before the
    measurement) into an empty Delta table, alone: the rows, and MB the process grows."""
    source = DeltaTable(bench.last_lake.silver_uri).to_pyarrow_table()
    target = str(workdir / f"floor-{uuid.uuid4().hex[:8]}")
    write_deltalake(target, source.schema.empty_table())
    with PeakRss({"python": os.getpid()}) as peak:
        (DeltaTable(target).merge(source, predicate=bench.last_lake.rules.same_item(), source_alias="s",
                                  target_alias="t")
         .when_matched_update_all().when_not_matched_insert_all().execute())
    return source.num_rows, peak.growth_mb["python"]


def measure(events: int, pg_url: str) -> dict:
    spark = build_spark("sales-cdc-bench-memory", shuffle_partitions=4)
    workdir = Path(tempfile.mkdtemp(prefix="sales-cdc-bench-memory-"))
    bench = Bench(spark, pg_url, workdir)
    warm_up = source_frame(spark, payload_lines(WARM_UP_EVENTS, workdir, seed=1))
    for _ in range(2):
        bench.pipeline(warm_up, gx=True, lake=True)
    df = source_frame(spark, payload_lines(events, workdir, seed=13))
    pids = {"python": os.getpid(), "jvm": spark.sparkContext._jvm.ProcessHandle.current().pid()}
    with PeakRss(pids) as peak:
        result = bench.pipeline(df, gx=True, lake=True)
    state_rows, merge_alone = _merge_alone(bench, workdir)
    return {"events": events, "seconds": result["seconds"], "driver_python_peak_mb": peak.growth_mb["python"],
            "jvm_peak_mb": peak.growth_mb["jvm"], "state_rows": state_rows, "delta_merge_alone_peak_mb": merge_alone}


def in_a_process_of_its_own(events: int, pg_url: str) -> dict:
    """:func:`measure` in a child process (its own Python and Spark JVM)."""
    return in_a_child("bench.memory", events, pg_url)


def main(argv: list[str] | None = None) -> int:
    return child_main(argv, __doc__.splitlines()[0], measure)


if __name__ == "__main__":
    sys.exit(main())
