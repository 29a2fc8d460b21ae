"""One batch size through the whole pipeline in a Spark of its own, for comparing core counts (``make bench`` runs
it with ``local[1]`` and ``local[2]``, one after the other): a Spark's master is fixed when its JVM starts.

``python -m bench.cores --events 100000 --warehouse-url URL`` prints one JSON object: the median of three runs
after a warm-up, as every case of the bench. The master comes from ``SALES_CDC_SPARK_MASTER``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from functools import partial
from pathlib import Path

from bench.cases import Bench, child_main, in_a_child, payload_lines, source_frame, warm_together
from sales_cdc.job import MASTER_ENV, build_spark


def measure(events: int, pg_url: str) -> dict:
    spark = build_spark("sales-cdc-bench-cores", shuffle_partitions=4)
    workdir = Path(tempfile.mkdtemp(prefix="sales-cdc-bench-cores-"))
    bench = Bench(spark, pg_url, workdir)
    df = source_frame(spark, payload_lines(events, workdir))
    result = warm_together({"full": partial(bench.pipeline, df, gx=True, lake=True)})["full"]
    return {"master": spark.sparkContext.master, "events": events, **result}


def in_a_spark_of_its_own(master: str, events: int, pg_url: str) -> dict:
    """:func:`measure` in a child process whose Spark runs ``master``."""
    return {"master": master, **in_a_child("bench.cores", events, pg_url, env={**os.environ, MASTER_ENV: master})}


def main(argv: list[str] | None = None) -> int:
    return child_main(argv, __doc__.splitlines()[0], measure)


if __name__ == "__main__":
    sys.exit(main())
