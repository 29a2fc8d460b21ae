"""An embedded PostgreSQL (``pgserver``) for the demo and tests: no install, no root restrictions."""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sales_cdc.errors import JobError

log = logging.getLogger(__name__)

POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_DATA_DIR = Path(".demo/postgres")  # the embedded PostgreSQL of `sales-cdc run` without --warehouse-url


def start_embedded_postgres(data_dir: Path) -> tuple[str, object]:
    """Start (or reuse) a PostgreSQL server with its data in ``data_dir``; return (url, server handle).

    The server stops when the handle is garbage-collected or ``server.cleanup()`` is called.
    """
    if "XDG_RUNTIME_DIR" not in os.environ:  # pgserver's platformdirs warns without a private one
        runtime = Path(tempfile.gettempdir()) / f"sales-cdc-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir.resolve()), cleanup_mode="stop")
    return server.get_uri(), server


@dataclass
class WarehouseConnection:
    url: str
    server: object | None  # the embedded server handle, kept alive while in use


@contextmanager
def warehouse_connection(url: str | None, data_dir: Path = DEFAULT_DATA_DIR):
    """The warehouse at ``url``, or (None) an embedded PostgreSQL started in ``data_dir`` for the duration."""
    if url:
        scheme = url.partition("://")[0] if "://" in url else None
        if scheme not in POSTGRES_SCHEMES:  # the URL itself is not repeated: it may hold a password
            raise JobError(f"--warehouse-url: a {scheme or 'non-URL'} address, where a PostgreSQL URL "
                           "(postgresql://user@host:5432/db) was expected; locally the warehouse is PostgreSQL "
                           "(Redshift is reached through the Data API on AWS)")
        yield WarehouseConnection(url, None)
        return
    url, server = start_embedded_postgres(data_dir)
    log.info("embedded PostgreSQL started in %s", data_dir)
    try:
        yield WarehouseConnection(url, server)
    finally:
        server.cleanup()
