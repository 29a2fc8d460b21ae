"""A stand-in for the Redshift Data API that runs the statements on PostgreSQL: moto keeps Data API statements
STARTED and has no Redshift to run them, so the Redshift adapter's whole flow (bound parameters, one transaction
per ``batch_execute_statement``, COPY of staged Parquet, UNLOAD to S3) is checked against real SQL semantics here.

What PostgreSQL cannot read is translated at this boundary only: ``DISTKEY``/``SORTKEY`` are dropped, a COPY from
S3 loads the Parquet object's rows, an UNLOAD writes the query's rows as Parquet to S3 (moto), ``:name`` parameters
become psycopg's. Each call opens its own session, as the Data API does (temporary tables end with it)."""

from __future__ import annotations

import io
import re
import uuid

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

_COPY = re.compile(r"^COPY (\S+) FROM '(s3://[^']+)'\s+IAM_ROLE '[^']+'\s+FORMAT AS PARQUET$", re.S)
_UNLOAD = re.compile(r"^UNLOAD \('(.+)'\)\s+TO '(s3://[^']+)'\s+IAM_ROLE '[^']+'\s+FORMAT AS PARQUET ALLOWOVERWRITE$",
                     re.S)
_DIST_SORT = re.compile(r"\s*DISTKEY\([^)]*\)\s*SORTKEY\([^)]*\)")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class DataApiOnPostgres:
    def __init__(self, url: str, s3):
        self.url, self.s3 = url, s3
        self.results: dict[str, tuple[list, list]] = {}
        self.transactions: list[list[str]] = []  # every batch_execute_statement's statements, in order

    def _run(self, conn, sql: str, parameters=None):
        copy, unload = _COPY.match(sql), _UNLOAD.match(sql)
        if copy:
            bucket, key = _split(copy.group(2))
            rows = pq.read_table(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
            if rows.num_rows:
                marks = ", ".join(["%s"] * rows.num_columns)
                conn.cursor().executemany(f"INSERT INTO {copy.group(1)} VALUES ({marks})",
                                          [tuple(r.values()) for r in rows.to_pylist()])
            return None
        if unload:
            cursor = conn.execute(unload.group(1))
            names = [c.name for c in cursor.description]
            table = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in cursor.fetchall()])
            buffer = io.BytesIO()
            pq.write_table(table if table.num_columns else pa.table({n: [] for n in names}), buffer)
            bucket, key = _split(unload.group(2))
            self.s3.put_object(Bucket=bucket, Key=f"{key}0000_part_00.parquet", Body=buffer.getvalue())
            return None
        sql = _DIST_SORT.sub("", re.sub(r":(\w+)", r"%(\1)s", sql))
        return conn.execute(sql, parameters)

    def execute_statement(self, Sql, Parameters=None, **_):
        parameters = {p["name"]: p["value"] for p in Parameters or []}
        with psycopg.connect(self.url) as conn:
            cursor = self._run(conn, Sql, parameters or None)
            rows = cursor.fetchall() if cursor is not None and cursor.description else None
        statement_id = str(uuid.uuid4())
        self.results[statement_id] = rows
        return {"Id": statement_id}

    def batch_execute_statement(self, Sqls, **_):
        if not 1 <= len(Sqls) <= 40:  # botocore refuses such a call before it leaves the client
            raise ValueError(f"Invalid length for parameter Sqls, value: {len(Sqls)}, valid range: 1-40")
        self.transactions.append(list(Sqls))
        with psycopg.connect(self.url) as conn, conn.transaction():
            for sql in Sqls:
                self._run(conn, sql)
        return {"Id": str(uuid.uuid4())}

    def describe_statement(self, Id):
        return {"Id": Id, "Status": "FINISHED", "HasResultSet": self.results.get(Id) is not None}

    def get_statement_result(self, Id):
        def field(value):
            return {"isNull": True} if value is None else {"longValue": value} if isinstance(value, int) \
                else {"stringValue": str(value)}
        return {"Records": [[field(v) for v in row] for row in self.results[Id]]}
