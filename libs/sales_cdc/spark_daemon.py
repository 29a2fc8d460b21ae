"""PySpark's Python worker daemon, for local sessions on Python 3.11: PySpark's own, with CPython's fix of
gh-103200 (Python 3.12) applied to the workers it forks.

Every Python task (the raw layer's file writes, a Python UDF) starts with ``importlib.invalidate_caches()``
(PySpark's worker, so that files shipped to the task can be imported). Before Python 3.12, that makes every
zip importer read its archive's directory again: the workers import PySpark from Spark's ``pyspark.zip``,
through a dozen importers, so each task started ~0.3 s late, one-event batch or not (docs/benchmarks.md).
Python 3.12 made the re-read lazy. Here an importer re-reads its archive only when the file changed since its
directory was read; an archive a task brings (``addPyFile``) is read as before. Glue 6.0 runs Python 3.13,
which needs none of this: :func:`sales_cdc.job.build_spark` names this module only where it helps.

Nothing here may print: the daemon's standard output is how it hands Spark its port.
"""

from __future__ import annotations

import os
import sys
import zipimport

from pyspark import daemon

_reread = zipimport.zipimporter.invalidate_caches
_read_as_of: dict[str, tuple[int, int] | None] = {}  # archive -> (mtime, size) when its directory was read


def _stamp(archive: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(archive)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _invalidate_if_changed(importer: zipimport.zipimporter) -> None:
    archive, cached = importer.archive, zipimport._zip_directory_cache
    stamp = _stamp(archive)
    if stamp is not None and _read_as_of.get(archive) == stamp and archive in cached:
        importer._files = cached[archive]  # the directory as last read, by this importer or another
        return
    _reread(importer)
    _read_as_of[archive] = stamp


def _read_lazily() -> None:
    """Archives read so far (PySpark's own, imported by the daemon) count as read now; then the patch."""
    for archive in list(zipimport._zip_directory_cache):
        _read_as_of[archive] = _stamp(archive)
    zipimport.zipimporter.invalidate_caches = _invalidate_if_changed


if __name__ == "__main__":
    if sys.version_info < (3, 12):
        _read_lazily()
    daemon.manager()
