"""The job package stands alone: the wheel Glue installs holds the job only, and the job never imports the
local harness (or what only the harness needs)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from sales_cdc_local.deploy import build_wheel

HARNESS_ONLY = ("sales_cdc_local", "rich", "faker", "pgserver", "moto")


def test_the_glue_wheel_holds_the_job_alone(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    packages = {n.split("/")[0] for n in names}
    assert {p for p in packages if not p.endswith(".dist-info")} == {"sales_cdc"}
    assert "sales_cdc/contracts/orders.yaml" in names  # the default contract travels with the job
    assert not [n for n in names if n.endswith("entry_points.txt")]  # no console script: Glue runs glue_job.py
    requires = [line.split(":", 1)[1].strip().lower() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires and not [r for r in requires if r.startswith(("rich", "faker", "moto", "pgserver", "pyspark"))]


BLOCKER = """
import importlib.abc, pkgutil, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked}:
            raise ImportError("the job imported " + name)
sys.meta_path.insert(0, Blocked())
import sales_cdc
for module in pkgutil.walk_packages(sales_cdc.__path__, "sales_cdc."):
    __import__(module.name)
print("imported", len(sys.modules))
"""


def test_the_job_imports_nothing_of_the_harness():
    """Every module of the job imports with the harness and its libraries made unimportable."""
    done = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=set(HARNESS_ONLY))], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("imported")
