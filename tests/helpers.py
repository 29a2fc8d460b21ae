"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from sales_cdc import schema as S
from sales_cdc.config import DEFAULT_EXPECTATIONS
from sales_cdc.contract import DEFAULT_CONTRACT, load_contract, parse_contract
from sales_cdc_local.records import stream_record, to_json_line

REPO = Path(__file__).parent.parent

# the default contract's entity: the tutorial's orders table, which most tests replicate
ORDERS_CONTRACT = load_contract(DEFAULT_CONTRACT)
ORDERS = ORDERS_CONTRACT.entity

# a table with a partition and a sort key, whose items share partitions and sort values
SORTED = parse_contract({
    "table": "Sorted", "entity": "sorted", "key": {"partition": "pk", "sort": "sk"},
    "attributes": {"pk": {"dynamodb": "S", "type": "string"}, "sk": {"dynamodb": "N", "type": "bigint"},
                   "product_name": {"dynamodb": "S", "type": "string"}, "quantity": {"dynamodb": "N", "type": "integer"},
                   "price": {"dynamodb": "N", "type": "decimal(10,2)"}, "customer_id": {"dynamodb": "S", "type": "string"}}},
    "tests/helpers.py").entity


# the worked example of docs/schema-evolution.md: the tutorial's four attributes, under the entity shop_orders
SHOP_ORDERS = {"orderid": {"dynamodb": "S", "type": "string", "required": True},
               "product_name": {"dynamodb": "S", "type": "string", "required": True},
               "quantity": {"dynamodb": "N", "type": "integer", "required": True},
               "price": {"dynamodb": "N", "type": "decimal(10,2)", "required": True}}


def shop_orders_contract(policy: str = "keep_json", **changes) -> dict:
    """The contract document of ``shop_orders`` with attributes changed (a dict merged in), added, or removed (None)."""
    attributes = {**SHOP_ORDERS}
    for name, spec in changes.items():
        if spec is None:
            attributes.pop(name)
        else:
            attributes[name] = {**attributes.get(name, {}), **spec}
    return {"table": "ShopOrders", "entity": "shop_orders", "key": {"partition": "orderid"},
            "on_new_attribute": policy, "attributes": attributes}


def shop_orders(policy: str = "keep_json", **changes) -> S.EntitySchema:
    return parse_contract(shop_orders_contract(policy, **changes), "tests/helpers.py").entity


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


def order(orderid: str, quantity: int = 1, price: str = "10.00", **extra) -> dict:
    return {"orderid": orderid, "product_name": "Phone", "quantity": quantity, "price": Decimal(price),
            "customer_id": "c1", **extra}


def insert(orderid, seq, **kw):
    return stream_record("INSERT", seq, key=orderid, new=order(orderid, **kw), entity=ORDERS)


def modify(orderid, seq, **kw):
    return stream_record("MODIFY", seq, key=orderid, new=order(orderid, **kw), old=order(orderid), entity=ORDERS)


def remove(orderid, seq, **kw):
    return stream_record("REMOVE", seq, key=orderid, old=order(orderid, **kw), entity=ORDERS)


EXPECTATIONS = DEFAULT_EXPECTATIONS


def copy_project(tmp_path: Path) -> Path:
    target = tmp_path / "expectations"
    shutil.copytree(EXPECTATIONS, target, ignore=shutil.ignore_patterns("uncommitted"))
    return target


def edit_rule(project: Path, suite: str, rule_check, change) -> None:
    path = project / "expectations" / f"{suite}.json"
    document = json.loads(path.read_text())
    matched = [e for e in document["expectations"] if rule_check(e)]
    assert matched, "no expectation matched"
    for expectation in matched:
        change(expectation)
    path.write_text(json.dumps(document, indent=2))


def is_quantity_between(e: dict) -> bool:
    return e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "quantity"


COLUMNS = [*ORDERS.names, S.UNMAPPED, S.CDC_SEQUENCE]


TEMPLATE = REPO / "infra" / "cloudformation" / "sales-cdc.yaml"


# What moto's CloudFormation can create (docs/design.md §3); Glue, Pipes, Secrets, alarms and Redshift
# Serverless are checked statically here and by cfn-lint / checkov (make lint).
MOTO_TYPES = {"AWS::KMS::Key", "AWS::DynamoDB::Table", "AWS::Kinesis::Stream", "AWS::SQS::Queue", "AWS::IAM::Role",
              "AWS::S3::Bucket", "AWS::SNS::Topic", "AWS::Logs::LogGroup"}


def without_removed(value, removed: set[str]):
    """``value`` with references to removed resources replaced by placeholder strings."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in removed:
            return f"removed-{value['Ref']}"
        if set(value) == {"Fn::GetAtt"} and value["Fn::GetAtt"][0] in removed:
            return f"arn:aws:iam::123456789012:role/removed-{value['Fn::GetAtt'][0]}"
        if set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
            text = re.sub(r"\$\{(\w+)(\.[\w.]+)?\}",
                          lambda m: f"removed-{m.group(1)}" if m.group(1) in removed else m.group(0), value["Fn::Sub"])
            return {"Fn::Sub": text}
        return {k: without_removed(v, removed) for k, v in value.items()}
    if isinstance(value, list):
        return [without_removed(v, removed) for v in value]
    return value


def read_all(kinesis, stream: str) -> list[dict]:
    """Every record on a (moto) Kinesis stream, from each shard's start."""
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            records += response["Records"]
            if not response["Records"]:
                break
            iterator = response.get("NextShardIterator")
    return records


def put_fixture_lines(kinesis, stream: str, folder: Path) -> int:
    """Every line of the folder's fixture files, in name order, as records of a (moto) Kinesis stream."""
    lines = [line for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines() if line.strip()]
    for start in range(0, len(lines), 500):
        kinesis.put_records(StreamName=stream, Records=[
            {"Data": line.encode(), "PartitionKey": str(start + i)} for i, line in enumerate(lines[start:start + 500])])
    return len(lines)


HARNESS_ONLY = ("sales_cdc_local", "rich", "faker", "pgserver", "moto")  # the local extra's: never the job's
# Python source that makes the harness and its libraries unimportable in the process that runs it
HARNESS_BLOCKER = f"""
import importlib.abc, sys
class _HarnessBlocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(HARNESS_ONLY)!r}:
            raise ImportError("the job imported " + name + ": the job package runs alone")
sys.meta_path.insert(0, _HarnessBlocked())
"""


CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")
# offline, whatever the machine's network: every host name fails to resolve, nothing is fetched in the background
OFFLINE = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--hide-scrollbars", "--virtual-time-budget=5000"]


def _chromium() -> str:
    assert CHROMIUM is not None, "chromium is not installed: `make install` adds chromium-headless-shell (Debian)"
    return CHROMIUM


def rendered_dom(page: Path) -> str:
    """The page's DOM once its scripts ran, in headless Chromium, offline."""
    dom = subprocess.run([_chromium(), *OFFLINE, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "<body" in dom
    return dom


def screenshot(page: Path, image: Path, size: str = "1400,1000") -> Path:
    """What a reader sees of the page (headless Chromium, offline), as a PNG."""
    image.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_chromium(), *OFFLINE, f"--window-size={size}", f"--screenshot={image}", page.as_uri()],
                   capture_output=True, timeout=60, check=True)
    assert image.stat().st_size > 10_000, f"{image}: an empty page?"
    return image
