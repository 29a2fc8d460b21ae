"""Freshness on the moto path (write -> DynamoDB -> stream -> pipe -> Kinesis -> job -> warehouse), and its
baseline: the emulated AWS side alone, with the CPU each of its processes uses."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
from botocore.config import Config
from pyspark.sql import SparkSession

from bench.cases import ORDERS, TABLE_NAME
from sales_cdc import schema as S
from sales_cdc.config import DEFAULT_EXPECTATIONS, DocsConfig, DqConfig, LakeConfig
from sales_cdc.sql import Dialect, MergeSql, quote
from sales_cdc_local import generator as G

# --- freshness on the moto path --------------------------------------------------------------------
FRESHNESS_WARMUP_S = 10.0  # writes before the measured window: a stream's first batches pay one-off costs
# The writer and the pipe run in processes of their own, as they do in AWS (an application writing to
# DynamoDB; the Pipe, a managed service): in the bench's own process they shared one GIL with the Spark
# driver and fell behind (the write -> Kinesis lag rose through the whole run). As stand-ins, their clients
# skip botocore's client-side check of every parameter (a walk of each item's attribute values): CPU the
# job on this machine would otherwise lose to them.
STAND_IN = Config(parameter_validation=False)


def _write_orders(endpoint: str, count: int, rate: float, out: str) -> None:
    """BatchWriteItem calls of 25 on a fixed schedule, handed to a few writer threads so that one slow call
    does not hold the rate down; writes ``{key: acknowledged at}`` to ``out`` at the end."""
    from concurrent.futures import ThreadPoolExecutor

    from boto3.dynamodb.types import TypeSerializer

    from sales_cdc.aws import aws_client

    operations = G.plan(count, update_share=0.0, delete_share=0.0, seed=11, entity=ORDERS)
    dynamodb, serializer, written = aws_client("dynamodb", endpoint=endpoint, config=STAND_IN), TypeSerializer(), {}
    # typed before the clock starts: the application's own work is not what is measured, and on this
    # machine its CPU is taken from the job
    batches = [([o.key[0] for o in chunk], [{k: serializer.serialize(v) for k, v in G.dynamodb_item(o.item).items()}
                                         for o in chunk])
               for chunk in (operations[start:start + 25] for start in range(0, count, 25))]

    def put(keys: list[str], items: list[dict]) -> None:
        G.put_batch(dynamodb, TABLE_NAME, items)
        now = time.time()
        written.update(dict.fromkeys(keys, now))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as writers:
        for n, (keys, items) in enumerate(batches):
            delay = started + n * 25 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            writers.submit(put, keys, items)
    Path(out).write_text(json.dumps(written))


def _run_pipe(endpoint: str, kinesis_endpoint: str, stream_arn: str, state_path: str, out: str, stop,
              counter) -> None:
    """The pipe emulator until ``stop`` is set; counts the records it puts in ``counter`` and writes
    ``{key: put on Kinesis at}`` to ``out`` at the end."""
    from sales_cdc.aws import aws_client
    from sales_cdc_local.local_aws import KINESIS_STREAM
    from sales_cdc_local.pipe_emulator import PipeEmulator

    class TimedPipe(PipeEmulator):
        """When each key left the pipe: splits the latency into write -> Kinesis and Kinesis -> warehouse."""

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.piped: dict[str, float] = {}

        def put_records(self, records: list, **kwargs) -> None:
            super().put_records(records, **kwargs)
            now = time.time()
            for record in records:
                self.piped.setdefault(next(iter(record["dynamodb"]["Keys"][ORDERS.keys[0]].values())), now)
            with counter.get_lock():
                counter.value += len(records)

    pipe = TimedPipe(aws_client("dynamodbstreams", endpoint=endpoint, config=STAND_IN),
                     aws_client("kinesis", endpoint=kinesis_endpoint, config=STAND_IN), stream_arn=stream_arn,
                     kinesis_stream=KINESIS_STREAM, state_path=Path(state_path), partition_key=ORDERS.keys[0])
    pipe.run(idle_seconds=float("inf"), poll_interval=0.1, stop=stop.is_set)
    Path(out).write_text(json.dumps(pipe.piped))


MACHINE, SOURCE, REST = "machine", "source", "job and the rest"  # keys of a cores-used split


class _CpuUse:
    """CPU used by named processes and by the whole machine, sampled every half second on a thread;
    ``cores(start, end)`` is the average number of cores each kept busy between two wall-clock times."""

    def __init__(self, pids: dict[str, int]) -> None:
        import threading

        import psutil

        self._psutil = psutil
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _CpuUse:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            used = {}
            for name, process in self._processes.items():
                try:
                    times = process.cpu_times()
                    used[name] = times.user + times.system
                except self._psutil.Error:  # it has exited
                    pass
            machine = self._psutil.cpu_times()
            used[MACHINE] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
            self._samples.append((time.time(), used))
            if self._stop.wait(0.5):
                return

    def cores(self, start: float, end: float) -> dict[str, float]:
        """From the last sample at or before ``start`` to the first at or after ``end`` (the window widened
        to whole sampling periods, so a window shorter than one still has two samples)."""
        before = [s for s in self._samples if s[0] <= start] or self._samples[:1]
        after = [s for s in self._samples if s[0] >= end] or self._samples[-1:]
        if not before or after[0][0] <= before[-1][0]:
            return {}
        (t0, first), (t1, last) = before[-1], after[0]
        return {name: round((last[name] - first[name]) / (t1 - t0), 2) for name in last if name in first}


class _EmulatedSource:
    """The AWS side of the moto path, each part in a process of its own as in AWS: a moto server per
    service (DynamoDB + stream, Kinesis, S3), the pipe emulator, and the writer (an application writing
    ``total`` inserts to DynamoDB at ``rate``). With one moto process serving the writer's, the pipe's and
    the job's calls, each queued behind the others (the lake's S3 requests: 2.9 s per batch, against 0.6 s)."""

    def __init__(self, rate: float, total: int, workdir: Path, name: str) -> None:
        import multiprocessing

        from sales_cdc_local.local_aws import MotoServer

        self.rate, self.total, self.workdir, self.name = rate, total, workdir, name
        self._processes = multiprocessing.get_context("spawn")  # never fork a process that holds a JVM gateway
        self.dynamodb, self.kinesis, self.s3 = MotoServer(), MotoServer(), MotoServer()
        self.written_path, self.piped_path = workdir / f"{name}-written.json", workdir / f"{name}-piped.json"
        self._stop_pipe = self._processes.Event()
        self.piped = self._processes.Value("q", 0)  # records the pipe has put on Kinesis
        self.pipe = self.writer = None

    def __enter__(self) -> _EmulatedSource:
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # the servers already started do not outlive the failure
            raise

    def _start(self) -> _EmulatedSource:
        from sales_cdc_local.local_aws import create_kinesis_stream, create_source_table

        for server in (self.dynamodb, self.kinesis, self.s3):
            server.start()
        stream_arn = create_source_table(self.dynamodb.client("dynamodb"), ORDERS, TABLE_NAME)
        create_kinesis_stream(self.kinesis.client("kinesis"), shards=2)
        self.pipe = self._processes.Process(target=_run_pipe, daemon=True, args=(
            self.dynamodb.endpoint, self.kinesis.endpoint, stream_arn, str(self.workdir / f"{self.name}-pipe.json"),
            str(self.piped_path), self._stop_pipe, self.piped))
        self.writer = self._processes.Process(target=_write_orders, daemon=True, args=(
            self.dynamodb.endpoint, self.total, self.rate, str(self.written_path)))
        self.pipe.start()
        return self

    def start_writing(self) -> _CpuUse:
        """Starts the writer; returns the sampler of the CPU each part uses (stop it with ``with``)."""
        self.writer.start()
        return _CpuUse({"moto DynamoDB": self.dynamodb.process.pid, "moto Kinesis": self.kinesis.process.pid,
                        "moto S3": self.s3.process.pid, "pipe": self.pipe.pid, "writer": self.writer.pid})

    def stop_pipe(self) -> None:
        """Stops the pipe (it then writes its timings)."""
        self._stop_pipe.set()
        if self.pipe is not None and self.pipe.pid is not None:  # started
            self.pipe.join(timeout=30)

    def __exit__(self, *exc) -> None:
        self.stop_pipe()
        if self.writer is not None and self.writer.pid is not None:
            self.writer.join(timeout=30)
        for server in (self.dynamodb, self.kinesis, self.s3):
            server.stop()

    def times(self) -> tuple[dict[str, float], dict[str, float]]:
        """({key: write acknowledged at}, {key: put on Kinesis at}), once the processes are done."""
        def read(path: Path) -> dict[str, float]:
            return json.loads(path.read_text()) if path.exists() else {}
        return read(self.written_path), read(self.piped_path)


def _p95(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def _cpu_split(cores: dict[str, float]) -> dict[str, float]:
    """Cores used per part of the source, and by everything else on the machine (the job, PostgreSQL)."""
    source = round(sum(v for k, v in cores.items() if k != MACHINE), 2)
    return {**cores, SOURCE: source, REST: round(cores.get(MACHINE, 0.0) - source, 2)}


def source_alone(rate: float, seconds: float, workdir: Path) -> dict:
    """Baseline for freshness, in the same run: the emulated AWS side alone (writer -> moto DynamoDB +
    stream -> pipe -> moto Kinesis), no job. Its write -> Kinesis lag is the floor of the freshness figure,
    and the CPU it uses at the target rate is CPU the job does not get on this machine (in AWS these are
    other machines)."""
    import statistics

    total = int(rate * seconds)
    with _EmulatedSource(rate, total, workdir, "source-alone") as source, source.start_writing() as cpu:
        source.writer.join()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and source.piped.value < total:
            time.sleep(0.2)
    written, piped = source.times()  # the pipe writes its timings when the source stops it
    if not written:
        return {"events": 0}
    first, last = min(written.values()), max(written.values())
    lags = [piped[k] - written[k] for k in written if k in piped]
    return {"events": len(written), "piped": len(lags), "target_rate": rate,
            "achieved_write_rate": len(written) / max(1e-9, last - first),
            "write_to_kinesis_p50_s": statistics.median(lags) if lags else None,
            "write_to_kinesis_p95_s": _p95(lags) if lags else None,
            "cores_used": _cpu_split(cpu.cores(first, last))}


class _Visible:
    """When each key became visible in the warehouse: polls the ledger (a row per batch, committed with the
    batch's rows) every 0.1 s and reads only a newly committed batch's keys (reading the whole table each
    time cost the bench's process, the Spark driver's GIL, and PostgreSQL up to a quarter of a core)."""

    def __init__(self, pg_url: str, db_schema: str, total: int) -> None:
        import threading

        self.pg_url, self.total, self.at = pg_url, total, {}
        self.sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS)
        self.finished = threading.Event()  # stops the watcher before the moto server goes away
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        row_batch, key = quote(S.CDC_BATCH_ID), quote(ORDERS.keys[0])
        last_batch = -1
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            while len(self.at) < self.total and not self.finished.is_set():
                try:
                    newest = conn.execute(f"SELECT max({quote('batch_id')}) FROM {self.sql.ledger}").fetchone()[0]
                    rows = [] if newest is None or newest <= last_batch else conn.execute(
                        f"SELECT {key} FROM {self.sql.target} WHERE {row_batch} > %s", (last_batch,)).fetchall()
                except psycopg.errors.UndefinedTable:
                    newest, rows = None, []
                now = time.time()
                for (found,) in rows:
                    self.at.setdefault(found, now)
                if newest is not None:  # a batch with no rows in the table (all quarantined) is seen too
                    last_batch = max(last_batch, newest)
                time.sleep(0.1)

    def stop(self) -> None:
        self.finished.set()
        self.thread.join(timeout=30)


def freshness(spark: SparkSession, pg_url: str, rate: float, seconds: float, workdir: Path,
              warmup: float = FRESHNESS_WARMUP_S) -> dict:
    """p50/p95 from the DynamoDB write (BatchWriteItem acknowledged) to the row being visible in the
    warehouse, with the whole local path running: moto DynamoDB + stream, the pipe emulator, Kinesis, the
    streaming job (GX with its Data Docs site, and a Delta lake on moto S3), PostgreSQL. Inserts only, so every
    key's first appearance is its write. Writes run for ``warmup + seconds``; only those after the warm-up are measured
    (a stream runs for days: its first batches pay the JVM's and Spark's one-off costs)."""
    from sales_cdc.config import JobConfig, KinesisConfig, SinkConfig, StreamConfig, WarehouseConfig
    from sales_cdc.job import run_stream
    from sales_cdc.lake import moto_storage_options

    total = int(rate * (warmup + seconds))
    db_schema = f"fresh_{uuid.uuid4().hex[:8]}"
    with _EmulatedSource(rate, total, workdir, "fresh") as source:
        source.s3.client("s3").create_bucket(Bucket="fresh-lake")
        visible = _Visible(pg_url, db_schema, total)
        started = time.monotonic()
        sinks = SinkConfig(WarehouseConfig(db_schema=db_schema),
                           LakeConfig("s3://fresh-lake/lake", moto_storage_options(source.s3.endpoint)))
        # with a Data Docs site, as a deployed job writes one
        quality = DqConfig(expectations_dir=DEFAULT_EXPECTATIONS, docs=DocsConfig(str(workdir / "docs")))
        config = JobConfig(ORDERS, "bench-freshness", sinks, quality)
        stream = StreamConfig(KinesisConfig(endpoint_url=source.kinesis.endpoint, max_records_per_shard=50_000),
                              workdir / "fresh-checkpoint", available_now=False, trigger_interval="1 second")
        deadline = time.monotonic() + warmup + seconds + 120
        try:
            with source.start_writing() as cpu:
                summary = run_stream(spark, config, stream, pg_url, stop_when=lambda _: (
                    not source.writer.is_alive() and len(visible.at) >= total) or time.monotonic() > deadline)
        finally:
            visible.stop()
    written, piped = source.times()
    figures = _freshness_figures(written, piped, visible.at, warmup)
    if "p50_s" not in figures:
        return figures
    batches = [b for b in summary.batches if b.events_read]
    first_write = min(written.values())
    return {**figures, "target_rate": rate, "batches": len(batches),
            "cores_used": _cpu_split(cpu.cores(first_write + warmup, max(written.values()))),
            "batch_dq_outcomes": dict(Counter(b.dq_outcome for b in batches)),
            "batch_events_median": statistics.median(b.events_read for b in batches),
            "batch_seconds_median": statistics.median(b.elapsed_seconds for b in batches),
            "batch_stage_seconds_median": {
                stage: round(statistics.median(b.seconds.get(stage, 0.0) for b in batches), 2)
                for stage in batches[0].seconds} if batches else {},
            "wall_s": time.monotonic() - started}


def _freshness_figures(written: dict[str, float], piped: dict[str, float], visible: dict[str, float],
                       warmup: float) -> dict:
    """The latencies of the keys written after the warm-up: write -> visible, write -> Kinesis, Kinesis ->
    visible, and the median per 5 s of write time (flat is a steady state, rising is falling behind)."""
    if not written:
        return {"events": 0, "visible": 0}
    first_write = min(written.values())
    measured = {k: t for k, t in written.items() if t >= first_write + warmup}
    latencies = sorted(visible[k] - measured[k] for k in measured if k in visible)
    if not latencies:
        return {"events": len(measured), "visible": 0}
    to_kinesis = [piped[k] - measured[k] for k in measured if k in piped]
    to_warehouse = [visible[k] - piped[k] for k in measured if k in piped and k in visible]

    def by_window(pairs: list[tuple[float, float]], width: float = 5.0) -> list[float]:
        windows: dict[int, list[float]] = {}
        for at, latency in pairs:
            windows.setdefault(int((at - first_write) // width), []).append(latency)
        return [round(statistics.median(windows[w]), 2) for w in sorted(windows)]

    return {"events": len(measured), "visible": len(latencies), "warmup_s": warmup,
            "warmup_events": len(written) - len(measured),
            "achieved_write_rate": len(written) / max(1e-9, max(written.values()) - first_write),
            "p50_s": statistics.median(latencies), "p95_s": _p95(latencies), "max_s": latencies[-1],
            "write_to_kinesis_p50_s": statistics.median(to_kinesis), "write_to_kinesis_p95_s": _p95(to_kinesis),
            "kinesis_to_warehouse_p50_s": statistics.median(to_warehouse),
            "kinesis_to_warehouse_p95_s": _p95(to_warehouse),
            "write_to_kinesis_p50_by_5s": by_window([(written[k], piped[k] - written[k]) for k in written
                                                     if k in piped]),
            "write_to_visible_p50_by_5s": by_window([(written[k], visible[k] - written[k]) for k in written
                                                     if k in visible])}


# --- report ----------------------------------------------------------------------------------------
