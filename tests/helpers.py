"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import parse_qs, urlparse

from sales_cdc import schema as S
from sales_cdc.contract import DEFAULT_CONTRACT, load_contract
from sales_cdc_local.records import to_json_line

# the default contract's entity: the tutorial's orders table, which most tests replicate
ORDERS_CONTRACT = load_contract(DEFAULT_CONTRACT)
ORDERS = ORDERS_CONTRACT.entity


def source_rows(spark, *records):
    """A micro-batch of source rows from stream records (dicts) or raw payload lines (str)."""
    lines = [r if isinstance(r, str) else to_json_line(r) for r in records]
    return spark.createDataFrame([(line, "file", None, None, None) for line in lines], S.SOURCE_SCHEMA)


class Outage:
    """A TCP proxy to a server (TCP ``(host, port)`` or a unix socket path) that can be cut and restored:
    ``down()`` closes the listener and every open connection, as a stopped server or a network cut would;
    ``up()`` listens again on the same port."""

    def __init__(self, target: str | tuple[str, int]):
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.up()

    def _connect_target(self) -> socket.socket:
        family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
        conn = socket.socket(family, socket.SOCK_STREAM)
        conn.connect(self.target)
        return conn

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = self._connect_target()
            except OSError:
                client.close()
                continue
            self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.close()

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        for conn in self._open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._open.clear()


def postgres_socket(url: str) -> str:
    """The unix socket of an embedded PostgreSQL URL (``...?host=<dir>``)."""
    parsed = urlparse(url)
    return f"{parse_qs(parsed.query)['host'][0]}/.s.PGSQL.{parsed.port or 5432}"
