"""Crashes, SIGTERM and failures, as a user meets them: the CLI in its own process (outages: test_outages.py).

- A crash (SIGKILL, through ``SALES_CDC_CRASH_AT``) at every boundary between a batch's writes, one after
  the other on the same checkpoint, then a run to the end: the warehouse, silver and raw equal one clean run.
- SIGTERM mid-run stops between batches, prints no stack trace; the restart converges.
- Expected failures print one line, no traceback; a successful run prints no stack trace and no ERROR line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from deltalake import DeltaTable

from sales_cdc import schema as S
from sales_cdc.faults import BATCH_POINTS, ENV
from sales_cdc.sql import Dialect, MergeSql
from sales_cdc_local.cli import stage_fixtures
from sales_cdc_local.parser import DEFAULT_EXPECTED, DEFAULT_FIXTURES
from sales_cdc_local.verify import diff_rows, load_expected, read_state
from tests.helpers import ORDERS

pytestmark = pytest.mark.slow
COLUMNS = [*ORDERS.names, S.UNMAPPED, S.CDC_SEQUENCE]
NOISE = ("Traceback", "\tat ", "ERROR", "Exception in thread", "StackOverflowError",
         "log4j", "NativeCodeLoader", "incubator modules")  # (the last three: Spark's and the JVM's start-up lines)


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sales_cdc_local.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The command in a process group of its own, as a terminal starts it (``interrupt`` then reaches all of it)."""
    return subprocess.Popen([sys.executable, "-m", "sales_cdc_local.cli", *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True)


def interrupt(process: subprocess.Popen, signum: int = signal.SIGINT) -> str:
    """Ctrl-C as a terminal sends it (SIGINT to the whole process group), or SIGTERM to the process alone; the
    command's output once it has stopped."""
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    try:
        return process.communicate(timeout=300)[0]
    finally:
        process.kill()


def assert_stopped_cleanly(process: subprocess.Popen, output: str) -> None:
    """Exit 130, the run's summary, one line saying so, no traceback."""
    assert process.returncode == 130, output[-3000:]
    assert "run summary" in output and "stopped on request" in output, output[-3000:]
    assert_clean(output)


def assert_clean(output: str) -> None:
    noisy = [line for line in output.splitlines() if any(n in line for n in NOISE)]
    assert noisy == [], "\n".join(noisy[:10])


class Run:
    """The fixture files through ``sales-cdc run`` into a warehouse schema and a local lake."""

    def __init__(self, tmp_path: Path, fixtures_dir: Path, url: str, schema: str, dq: bool = True,
                 lake: tuple[str, ...] = ()):
        self.tmp, self.fixtures, self.url, self.schema = tmp_path, fixtures_dir, url, schema
        stage_fixtures(DEFAULT_FIXTURES, tmp_path / "inbox")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.args = ["run", "--source-dir", str(tmp_path / "inbox"), "--checkpoint-dir", str(tmp_path / "ck"),
                     "--warehouse-url", url, "--db-schema", schema,
                     *(lake or ("--lake-root", str(tmp_path / "lake"))),
                     "--max-files-per-trigger", "1", "--job-name", "reliability",
                     *(["--docs-location", str(tmp_path / "docs")] if dq else ["--no-dq"])]
        self.sql = MergeSql(Dialect.POSTGRES, db_schema=schema, entity=ORDERS)

    def start(self, *extra: str, env: dict | None = None) -> subprocess.Popen:
        return start_cli(*self.args, *extra, env=env)

    def __call__(self, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return cli(*self.args, *extra, env=env)

    def committed_batches(self) -> int:
        try:
            with psycopg.connect(self.url) as conn:
                return conn.execute(f"SELECT count(*) FROM {self.sql.ledger}").fetchone()[0]
        except psycopg.errors.UndefinedTable:
            return 0

    def assert_converged(self) -> None:
        """The state one clean run gives: warehouse == expected, silver == warehouse, raw once per record."""
        actual = read_state(self.url, self.sql, COLUMNS)
        assert diff_rows(actual, load_expected(DEFAULT_EXPECTED), ("orderid",)) == []
        silver = DeltaTable(str(self.tmp / "lake" / "silver" / "orders")).to_pyarrow_table().to_pylist()
        assert {(r["orderid"], r[S.CDC_SEQUENCE]) for r in silver} == {(r["orderid"], r[S.CDC_SEQUENCE])
                                                                       for r in actual}
        raw = DeltaTable(str(self.tmp / "lake" / "raw" / "orders_events")).to_pyarrow_table(columns=[S.PAYLOAD])
        lines = [line for f in sorted(DEFAULT_FIXTURES.glob("*.jsonl"))
                 for line in f.read_text().splitlines() if line.strip()]
        assert sorted(raw[S.PAYLOAD].to_pylist()) == sorted(set(lines))  # a redelivered record is the same record
        with psycopg.connect(self.url) as conn:
            batches = conn.execute(f"SELECT batch_id FROM {self.sql.ledger} ORDER BY batch_id").fetchall()
        assert [b for (b,) in batches] == list(range(6))


def wait_until(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_crash_at_every_boundary_then_a_restart_converges(tmp_path, fixtures_dir, pg_url):
    run = Run(tmp_path, fixtures_dir, pg_url, "crash")
    for point in BATCH_POINTS:
        crashed = run(env={ENV: point})
        assert crashed.returncode == -signal.SIGKILL, f"{point}: {crashed.returncode} {crashed.stdout[-2000:]}"
    finished = run()
    assert finished.returncode == 0, finished.stdout[-3000:]
    run.assert_converged()


def test_an_unknown_crash_point_is_refused(tmp_path, fixtures_dir, pg_url):
    refused = Run(tmp_path, fixtures_dir, pg_url, "crash_typo", dq=False)(env={ENV: "after-everything"})
    assert refused.returncode == 1 and "is not a crash point" in refused.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_stops_between_batches_without_a_stack_trace_and_the_restart_converges(
        tmp_path, fixtures_dir, pg_url, signum):
    run = Run(tmp_path, fixtures_dir, pg_url, f"stop_{signum}")
    process = run.start("--continuous", "--trigger-interval", "1 second")
    try:
        wait_until(lambda: run.committed_batches() >= 1, what="the first batch")
    finally:
        output = interrupt(process, signum)
    assert_stopped_cleanly(process, output)
    assert run.committed_batches() < 6
    finished = run()
    assert finished.returncode == 0, finished.stdout[-3000:]
    run.assert_converged()


@pytest.mark.parametrize("problem", ["source is a file", "checkpoint parent missing", "warehouse unreachable"])
def test_expected_failures_are_one_line_without_a_traceback(tmp_path, problem):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "file.jsonl").write_text("{}\n")
    args = {"source is a file": ["--source-dir", str(tmp_path / "file.jsonl"), "--checkpoint-dir", str(tmp_path / "ck")],
            "checkpoint parent missing": ["--source-dir", str(tmp_path / "inbox"),
                                          "--checkpoint-dir", str(tmp_path / "no" / "such" / "ck")],
            "warehouse unreachable": ["--source-dir", str(tmp_path / "inbox"), "--checkpoint-dir", str(tmp_path / "ck"),
                                      "--warehouse-url", "postgresql://nobody@127.0.0.1:1/nothing"]}[problem]
    failed = cli("run", *args, "--no-dq")
    assert failed.returncode == 1
    output = failed.stdout + failed.stderr
    assert_clean(output)
    assert [line for line in output.splitlines() if line.startswith("error:")] != []
    assert not (tmp_path / "no").exists()
    verbose = cli("-v", "run", *args, "--no-dq")
    assert "Traceback" in verbose.stdout + verbose.stderr  # the traceback is there when asked for


def test_a_successful_fixture_demo_prints_no_stack_trace_and_no_error_line(tmp_path, pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute('DROP SCHEMA IF EXISTS "clean_demo" CASCADE')
    demo = cli("demo-fixtures", "--work-dir", str(tmp_path / "demo"), "--warehouse-url", pg_url,
               "--db-schema", "clean_demo")
    assert demo.returncode == 0, demo.stdout[-3000:]
    assert_clean(demo.stdout + demo.stderr)


def test_ctrl_c_stops_the_demo_after_the_batch_in_progress(tmp_path, pg_url):
    """The whole source side (moto, the pipe emulator, Spark's Kinesis readers) under one Ctrl-C: the batch in
    progress finishes, the summary is printed, the services stop, no traceback."""
    process = start_cli("demo", "--count", "400", "--work-dir", str(tmp_path / "demo"), "--warehouse-url", pg_url,
                        "--db-schema", "demo_interrupted")
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:  # as it comes: the test waits for a line before it interrupts
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("streaming job running" in line for line in lines), what="the streaming job")
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=300)
    finally:
        process.kill()
    reader.join(timeout=10)
    assert_stopped_cleanly(process, "".join(lines))
