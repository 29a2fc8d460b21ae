"""What puts records on Kinesis while the demo's job runs, each on a thread of its own: the pipe emulator (the
table's stream), and, with a preload, the generator's later writes and the backfill of the items written before
the stream was enabled (docs/backfill.md). ``drained`` tells the job when it has read all they put."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sales_cdc.backfill import KinesisTarget, ScanSettings, scan_backfill
from sales_cdc.contract import Contract
from sales_cdc.results import RunSummary
from sales_cdc.sources.scan import LocalText

from . import generator as G
from .local_aws import KINESIS_STREAM, MotoServer
from .pipe_emulator import PipeEmulator

IDLE_SECONDS = 2.0  # the pipe stops once the writes are done and the stream has been quiet this long


class Feeding:
    def __init__(self, moto: MotoServer, stream_arn: str, contract: Contract, work_dir: Path,
                 later: list[G.Operation] | None = None, rate: float | None = None, backfill: bool = False):
        self.moto, self.contract, self.work_dir, self.later, self.rate = moto, contract, work_dir, later, rate
        self.emulator = PipeEmulator(moto.client("dynamodbstreams"), moto.client("kinesis"), stream_arn=stream_arn,
                                     kinesis_stream=KINESIS_STREAM, partition_key=contract.entity.keys[0],
                                     state_path=work_dir / "pipe-state.json")
        self.backfill = backfill
        self.backfilled = 0  # snapshot records the backfill put on Kinesis
        self.errors: list[BaseException] = []
        self._writes_done, self._done = threading.Event(), {}

    def __enter__(self) -> Feeding:
        work = {"pipe": self._pump, "writes": self._write, **({"backfill": self._backfill} if self.backfill else {})}
        for name, target in work.items():
            self._done[name] = threading.Event()
            threading.Thread(target=self._guarded, args=(name, target), name=f"demo-{name}", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        return None

    def _guarded(self, name: str, target) -> None:
        try:
            target()
        except BaseException as error:  # surfaced by the main thread (drained)
            self.errors.append(error)
        finally:
            self._done[name].set()

    def _pump(self) -> None:
        idle_since = time.monotonic()
        while True:
            if self.emulator.poll_once():
                idle_since = time.monotonic()
            elif self._writes_done.is_set() and time.monotonic() - idle_since >= IDLE_SECONDS:
                return
            time.sleep(0.2)

    def _write(self) -> None:
        try:
            if self.later:
                G.write_to_dynamodb(self.later, self.moto.resource("dynamodb"), self.contract.table,
                                    entity=self.contract.entity, rate=self.rate)
        finally:
            self._writes_done.set()

    def _backfill(self) -> None:
        target = KinesisTarget(KINESIS_STREAM, self.moto.endpoint)
        settings = ScanSettings(self.contract.table, LocalText(self.work_dir / "backfill.json"), segments=4,
                                page_size=200)
        self.backfilled = scan_backfill(self.moto.client("dynamodb"), self.contract.entity, target, settings).items

    def drained(self, summary: RunSummary) -> bool:
        if self.errors:
            raise RuntimeError("feeding Kinesis failed") from self.errors[0]
        read = sum(b.events_read for b in summary.batches)
        return all(done.is_set() for done in self._done.values()) and \
            read >= self.emulator.records_put + self.backfilled

    @property
    def records_put(self) -> int:
        return self.emulator.records_put + self.backfilled
