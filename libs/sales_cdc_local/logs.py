"""What the command line prints while it runs: one progress line per batch by default, nothing but warnings with
``--quiet``, every logger of the project with ``-v``; as text for a terminal or as JSON lines for a log shipper.

Spark's JVM writes its own start-up lines and log to a file unless ``-v`` (``sales_cdc.job.SPARK_OUTPUT_ENV``):
the log level and the destination are chosen here, before the JVM starts.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sales_cdc.job import SPARK_OUTPUT_ENV
from sales_cdc.pipeline import PROGRESS_LOGGER

PROJECT_LOGGERS = ("sales_cdc", "sales_cdc_local")
LOG_FORMATS = ("text", "json")
HANDLER_NAME = "sales-cdc"
SPARK_OUTPUT = Path(tempfile.gettempdir()) / "sales-cdc-spark.log"  # Spark's own output when not -v


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's structured ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        document = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                    "level": record.levelname, "logger": record.name, "message": record.getMessage(),
                    **getattr(record, "fields", {})}
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure(verbose: bool, quiet: bool, log_format: str = "text") -> None:
    """Levels and format of the command's output (see the module's docstring)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else
                                           "%(message)s"))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    # ours replaces what an earlier command of the process set (a test's run), and leaves others' handlers alone
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(logging.WARNING)  # libraries (pgserver, py4j, botocore): their warnings only, even with -v
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.WARNING if quiet else logging.INFO)
    # py4j logs a batch's exception, traceback included, before Spark hands it back to us: the job reports it
    # itself (one line; the traceback with -v)
    logging.getLogger("py4j").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    if not verbose:
        os.environ.setdefault(SPARK_OUTPUT_ENV, str(SPARK_OUTPUT))
