"""The job package stands alone: the wheel Glue installs holds the job only, and the job never imports the
local harness (or what only the harness needs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from sales_cdc_local.cli import stage_fixtures
from sales_cdc_local.deploy import REPO, build_wheel
from sales_cdc_local.parser import DEFAULT_FIXTURES
from tests.helpers import HARNESS_BLOCKER


def archive_text(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(name).decode()


def test_the_glue_wheel_holds_the_job_alone(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    packages = {n.split("/")[0] for n in names}
    assert {p for p in packages if not p.endswith(".dist-info")} == {"sales_cdc"}
    assert "sales_cdc/contracts/orders.yaml" in names  # the default contract travels with the job
    manifest = json.loads(archive_text(wheel, "sales_cdc/quality/static/vendor/MANIFEST.json"))
    vendored = {f"sales_cdc/quality/static/vendor/{p['npm'].rsplit('@', 1)[0].split('/')[-1]}/{name}"
                for p in manifest for name in p["files"]}
    assert vendored <= set(names)  # and the docs pages' scripts, styles and fonts, every one of them
    assert "sales_cdc/quality/templates/index.html.j2" in names
    assert not [n for n in names if n.endswith("entry_points.txt")]  # no console script: Glue runs glue_job.py
    requires = [line.split(":", 1)[1].strip().lower() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires and not [r for r in requires if r.startswith(("rich", "faker", "moto", "pgserver", "pyspark"))]


BLOCKER = HARNESS_BLOCKER + """
import pkgutil
import sales_cdc
for module in pkgutil.walk_packages(sales_cdc.__path__, "sales_cdc."):
    __import__(module.name)
print("imported", len(sys.modules))
"""


def test_the_job_imports_nothing_of_the_harness():
    """Every module of the job imports with the harness and its libraries made unimportable."""
    done = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("imported")


INSTALLED = """
import sales_cdc, sales_cdc_local
print(sales_cdc.__file__)
print(sales_cdc_local.__file__)
"""


@pytest.mark.slow
def test_a_non_editable_install_runs_from_an_empty_folder(tmp_path, pg_url):
    """The wheel a user installs (the local extra's, not the editable checkout) finds its suites, its contract and
    the fixtures from any folder: `--help`, `--version`, the offline demo and `run` from an empty one."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    shutil.rmtree(REPO / "build", ignore_errors=True)  # what setuptools left: not for the next wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # the dependencies are this environment's (no download); the project itself only from the wheel
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next((tmp_path / "dist").glob("sales_cdc-*.whl"))
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300)
    empty = tmp_path / "elsewhere"
    empty.mkdir()

    def sales_cdc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "sales-cdc"), *args], cwd=empty, capture_output=True, text=True,
                              timeout=900, check=False)

    where = subprocess.run([str(python), "-c", INSTALLED], cwd=empty, capture_output=True, text=True, check=True)
    assert all(line.startswith(site) for line in where.stdout.split()), where.stdout  # not the checkout's
    assert sales_cdc("--help").returncode == 0
    assert sales_cdc("--version").stdout.strip() == f"sales-cdc {version('sales-cdc')}"
    demo = sales_cdc("demo-fixtures", "--warehouse-url", pg_url, "--db-schema", "installed")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "OK" in demo.stdout and "Traceback" not in demo.stdout + demo.stderr
    assert (empty / ".demo" / "data_docs" / "index.html").exists()
    stage_fixtures(DEFAULT_FIXTURES, empty / "inbox")  # and the job itself, on relative paths, from that folder
    run = sales_cdc("run", "--source-dir", "inbox", "--checkpoint-dir", "ck", "--warehouse-url", pg_url,
                    "--db-schema", "installed_run")
    assert run.returncode == 0 and "rows upserted" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
