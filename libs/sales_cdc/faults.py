"""Fault injection for the crash tests: off unless ``SALES_CDC_CRASH_AT`` names a crash point.

``SALES_CDC_CRASH_AT=<point>`` makes the process kill itself with SIGKILL (no clean-up, no exception
handler, as a power cut or an OOM kill would) the first time it reaches that point. The points are the
boundaries between the writes of one batch (docs/reliability.md); each is named where it is reached.
"""

from __future__ import annotations

import os
import signal

ENV = "SALES_CDC_CRASH_AT"
BATCH_POINTS = (
    "after-stage-load",  # the warehouse stage is loaded, its transaction open
    "before-warehouse-commit",  # the merge is done, the transaction waits for the lake
    "after-warehouse-commit",  # the ledger holds the batch, Spark's checkpoint does not yet
    "raw-files-written",  # the raw layer's files are written by Spark's tasks, not committed
    "between-lake-layers",  # raw is committed, silver is not
    "mid-docs",  # the Data Docs pages are half written
)
BACKFILL_POINTS = ("backfill-between-pages",)  # a page is delivered, its checkpoint does not say so yet
POINTS = BATCH_POINTS + BACKFILL_POINTS


def check_setting() -> None:
    """Refuse an unknown crash point at start-up (a typo would make a crash test pass without crashing)."""
    value = os.environ.get(ENV)
    if value and value not in POINTS:
        raise ValueError(f"{ENV}={value!r} is not a crash point; use one of {', '.join(POINTS)}")


def crash_point(name: str) -> None:
    """SIGKILL this process if ``SALES_CDC_CRASH_AT`` is ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
