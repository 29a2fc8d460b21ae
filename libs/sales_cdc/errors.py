"""Expected failures and how they are told: one line that says what failed, the likely cause and what to do.

The job raises :class:`JobError` where it knows what went wrong; :func:`one_line` turns the errors a run
meets in practice (an unreachable warehouse or lake, a bad path) into such a line too. The CLI prints it
alone, and the traceback only with ``-v``.
"""

from __future__ import annotations

import re

import psycopg
from botocore.exceptions import BotoCoreError


class JobError(Exception):
    """An expected failure; its message is the one line the user sees."""


class StopRequested(JobError):
    """A batch refused to start because the job was asked to stop (SIGTERM): nothing of it was written."""


class Interrupted(KeyboardInterrupt):
    """The job was stopped (Ctrl-C, SIGTERM) between two batches: ``summary`` is what it did until then."""

    def __init__(self, summary) -> None:
        super().__init__()
        self.summary = summary


class SinkUnavailable(JobError):
    """A sink (warehouse, lake, docs site) stayed unreachable for the configured retry time."""


# Errors of a sink that a retry can cure: the connection, the network, an object store's 5xx. Data errors
# (a row the warehouse refuses) are not among them: retrying them gives the same answer.
TRANSIENT = (psycopg.OperationalError, OSError, BotoCoreError)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_ERROR_LINE = re.compile(r"^\s*([\w.]+(Error|Exception)): (.+)$")


def _innermost_error(text: str) -> str:
    """The last ``SomeError: message`` line of a wrapped error's text (Spark puts the Python traceback of
    the failure in its own message), else the text's first line."""
    found = [m for m in map(_ERROR_LINE.match, text.splitlines()) if m]
    if not found:
        return text.strip().splitlines()[0] if text.strip() else "unknown error"
    last = found[-1]
    return f"{last.group(1).rsplit('.', 1)[-1]}: {last.group(3).strip()}"


def one_line(exc: BaseException) -> str:
    """The line the CLI prints for ``exc``."""
    if isinstance(exc, JobError):
        return str(exc)
    if isinstance(exc, psycopg.OperationalError):
        return (f"the warehouse is unreachable ({first_line(exc)}); check that PostgreSQL runs and the URL is right, "
                "then run again: the job resumes from its checkpoint")
    if type(exc).__name__ == "StreamingQueryException":  # Spark's, e.g. a source that failed after its retries
        return (f"the streaming query failed: {_innermost_error(str(exc))[:300]}; run with -v for Spark's log, then "
                "run again: the job resumes from its checkpoint")
    if isinstance(exc, (OSError, BotoCoreError)):
        return (f"{type(exc).__name__}: {first_line(exc)}; check the path or endpoint, then run again: the job "
                "resumes from its checkpoint")
    return f"{type(exc).__name__}: {first_line(exc)} (run with -v for the traceback)"
