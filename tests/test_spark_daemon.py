"""The local sessions' Python worker daemon (``sales_cdc.spark_daemon``): PySpark's, with Python 3.12's lazy
zip-directory re-read on Python 3.11 (an archive is read again only when it changed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from sales_cdc.job import DAEMON_MODULE

# run in a fresh interpreter: the patch is process-wide, and the test process imports from no archive of its own
LAZY_RE_READ = textwrap.dedent("""
    import importlib, os, sys, time, zipfile, zipimport
    from sales_cdc import spark_daemon

    archive = os.path.join(sys.argv[1], "shipped.zip")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("first.py", "VALUE = 1")
    sys.path.insert(0, archive)
    import first

    reads = []
    real_read = zipimport._read_directory
    zipimport._read_directory = lambda path: reads.append(path) or real_read(path)
    spark_daemon._read_lazily()
    importlib.invalidate_caches()
    assert reads == [], f"an unchanged archive was read again: {reads}"

    time.sleep(0.01)  # a later modification time, whatever the filesystem's resolution
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("second.py", "VALUE = 2")
    importlib.invalidate_caches()
    import second
    assert (first.VALUE, second.VALUE) == (1, 2) and reads == [archive], reads
    print("ok")
""")


def test_an_archive_is_read_again_only_when_it_changed(tmp_path):
    result = subprocess.run([sys.executable, "-c", LAZY_RE_READ, str(tmp_path)], capture_output=True, text=True,
                            env=os.environ, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12+ re-reads lazily itself: the daemon is not set")
def test_the_local_session_runs_its_python_tasks_through_the_daemon(spark):
    assert spark.sparkContext.getConf().get("spark.python.daemon.module") == DAEMON_MODULE

    def doubled(batches):
        for batch in batches:
            yield pa.RecordBatch.from_pydict({"id": pa.compute.multiply(batch.column("id"), 2)})

    rows = spark.range(4).repartition(2).mapInArrow(doubled, "id long").collect()
    assert sorted(r["id"] for r in rows) == [0, 2, 4, 6]
