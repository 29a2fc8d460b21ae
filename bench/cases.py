"""The benchmark cases and their baselines: payloads, our pipeline's stages, and the baselines measured
beside them in the same run (Spark's raw parse, the parse + dedupe floor, a Python-UDF decode, a naive
per-record upsert, the merge into small and large tables)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sales_cdc import schema as S
from sales_cdc.config import DEFAULT_EXPECTATIONS, DocsConfig, DqConfig, LakeConfig
from sales_cdc.contract import DEFAULT_CONTRACT, load_contract
from sales_cdc.decode import decode_batch, decode_flagged, decode_pipe_records, split_decoded
from sales_cdc.lake import Lake
from sales_cdc.pipeline import BatchHandler, HandlerOptions
from sales_cdc.quality import DataQuality
from sales_cdc.sql import Dialect, MergeSql, quote
from sales_cdc.transforms import latest_per_key, to_state_rows
from sales_cdc.warehouse import PostgresWarehouse
from sales_cdc_local import generator as G

REPO = Path(__file__).resolve().parent.parent
ORDERS_CONTRACT = load_contract(DEFAULT_CONTRACT)  # the benchmarks run on the tutorial's table
ORDERS, TABLE_NAME = ORDERS_CONTRACT.entity, ORDERS_CONTRACT.table



# --- data ------------------------------------------------------------------------------------------
def payload_lines(count: int, workdir: Path, seed: int = 7) -> list[str]:
    """The generator's fixture mode: ``count`` Pipe payloads (20 % updates, 10 % deletes)."""
    folder = workdir / f"payloads-{count}"
    if folder.exists():
        shutil.rmtree(folder)
    start = datetime.now(UTC) - timedelta(days=3)  # event and creation times stay in the sane range
    G.write_fixtures(G.plan(count, seed=seed, start=start, entity=ORDERS), folder, records_per_file=max(count, 1),
                     start=start, entity=ORDERS)
    return [line for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def source_frame(spark: SparkSession, lines: list[str]) -> DataFrame:
    """A materialised micro-batch, as the Kinesis source hands it over (not timed)."""
    df = spark.createDataFrame([(x, "shardId-000000000000", str(i), None, None) for i, x in enumerate(lines)],
                               S.SOURCE_SCHEMA).repartition(2).cache()
    df.count()
    return df


def spark_jobs_started(spark: SparkSession) -> int:
    """How many Spark jobs this application has started, on any thread (the scheduler's job counter: exact,
    and unlike the status store's list not capped by how many jobs it retains)."""
    counter = spark.sparkContext._jsc.sc().dagScheduler().nextJobId()
    return counter if isinstance(counter, int) else counter.get()  # an AtomicInteger in older Sparks


def in_a_child(module: str, events: int, pg_url: str, env: dict[str, str] | None = None) -> dict:
    """``python -m <module> --events N --warehouse-url URL`` in a child process (its own Python and Spark JVM):
    the JSON object it prints last (:func:`child_main`), or the error it ended with."""
    done = subprocess.run([sys.executable, "-m", module, "--events", str(events), "--warehouse-url", pg_url],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"events": events, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(argv: list[str] | None, description: str, measure: Callable[[int, str], dict]) -> int:
    """A child's command line (:func:`in_a_child`): prints ``measure(events, warehouse_url)`` as one JSON object."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--warehouse-url", required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--driver-memory 4g pyspark-shell")
    print(json.dumps(measure(args.events, args.warehouse_url), default=str))
    return 0


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _seconds(result) -> float:
    return result["seconds"] if isinstance(result, dict) else result


def warm_together(cases: dict[Any, Callable[[], Any]], runs: int = 3) -> dict[Any, Any]:
    """Cases compared with each other, measured round by round: each case once to warm up, then ``runs``
    rounds of every case in turn, and per case its median run (a case returns seconds, or a dict with
    ``seconds``). One run on 2 shared cores varies by up to 1.5x, and the machine's speed drifts from minute
    to minute: measured one case after the other, a case's runs could fall in a slow minute and its
    baseline's in a fast one; in rounds, a slow minute weighs on all of them alike."""
    for case in cases.values():
        case()
    runs_of: dict[Any, list] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            runs_of[name].append(case())
    return {name: sorted(results, key=_seconds)[runs // 2] for name, results in runs_of.items()}


def noop(df: DataFrame) -> None:
    df.write.format("noop").mode("overwrite").save()


def state_rows(df: DataFrame) -> DataFrame:
    """Our decode + dedupe as the batch handler runs it: the decoded batch is checkpointed (eagerly, here),
    then split and deduped into state rows."""
    decoded = decode_batch(df, lambda frame: frame.localCheckpoint(eager=True), ORDERS)
    events, _ = split_decoded(decoded.frame, 0, ORDERS)
    return to_state_rows(latest_per_key(events, ORDERS.keys), 0, ORDERS)


def parse_dedupe_floor_rows(df: DataFrame) -> DataFrame:
    """The least any decode + dedupe does: each payload parsed once (``try_parse_json``), its key, sequence
    and event id read, and the same ``row_number`` dedupe; nothing typed, flattened or checked. Its time,
    measured in the same run, bounds how fast a decode + dedupe can be on this machine."""
    record = F.try_parse_json(S.PAYLOAD)
    parsed = df.select(
        F.variant_get(record, f"$.dynamodb.Keys.{ORDERS.keys[0]}.S", "string").alias(ORDERS.keys[0]),
        F.lpad(F.variant_get(record, "$.dynamodb.SequenceNumber", "string"), S.SEQUENCE_WIDTH, "0")
        .alias(S.CDC_SEQUENCE),
        F.variant_get(record, "$.eventID", "string").alias(S.CDC_EVENT_ID),
        record.alias("record"))
    return plain_latest(parsed)


def plain_latest(events: DataFrame) -> DataFrame:
    """The plain ``row_number`` dedupe of the baselines: no check for two records with one sequence number, which
    the job's ``latest_per_key`` adds (and pays for)."""
    latest = Window.partitionBy(*ORDERS.keys).orderBy(F.col(S.CDC_SEQUENCE).desc(), F.col(S.CDC_EVENT_ID).desc())
    return events.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")


def typed_floor_state_rows(df: DataFrame, entity: S.EntitySchema = ORDERS) -> DataFrame:
    """The least a decode + dedupe yielding our state rows does: :func:`typed_flatten_floor_rows` (nothing
    checked), the plain ``row_number`` dedupe, state rows. Its speed against the Python-UDF baseline bounds
    what any decode into typed columns can reach here, checks or not."""
    unmapped = {prefix + S.UNMAPPED: F.lit(None).cast("string") for prefix in (S.NEW_PREFIX, S.OLD_PREFIX)}
    return to_state_rows(plain_latest(typed_flatten_floor_rows(df, entity).withColumns(unmapped)), 0, entity)


def _unchecked_image(entity: S.EntitySchema) -> T.StructType:
    return T.StructType([T.StructField(f.name, T.StructType([T.StructField(f.ddb_type, T.StringType())]))
                         for f in entity.fields])


def typed_flatten_floor_rows(df: DataFrame, entity: S.EntitySchema = ORDERS) -> DataFrame:
    """The least a decode + flatten into typed columns does: each payload parsed once into the record's shape
    with only the attributes the schema maps, each under its expected type tag, and cast; nothing checked
    (a wrong type tag, an unknown eventName or a value that does not fit its column comes out null or
    rounded), attributes the schema does not know dropped. The same values as ours for records that decode
    cleanly (a test holds it); its time, beside the raw parse's, is what typing alone costs here."""
    image = _unchecked_image(entity)
    record = T.StructType([
        T.StructField("eventID", T.StringType()), T.StructField("eventName", T.StringType()),
        T.StructField("dynamodb", T.StructType([
            T.StructField("ApproximateCreationDateTime", T.DecimalType(20, 6)),
            T.StructField("NewImage", image), T.StructField("OldImage", image),
            T.StructField("SequenceNumber", T.StringType())]))])
    ddb = F.col("r.dynamodb")

    def typed(image_name: str, fld: S.Field) -> Column:
        raw = ddb[image_name][fld.name][fld.ddb_type]
        return F.try_to_timestamp(raw) if isinstance(fld.spark_type, T.TimestampType) else raw.try_cast(fld.spark_type)

    images = [typed(name, f).alias(prefix + f.name)
              for name, prefix in (("NewImage", S.NEW_PREFIX), ("OldImage", S.OLD_PREFIX)) for f in entity.fields]
    key = F.when(F.col("r.eventName") == "REMOVE", ddb["OldImage"][entity.keys[0]]["S"]) \
        .otherwise(ddb["NewImage"][entity.keys[0]]["S"])
    return df.select(F.from_json(S.PAYLOAD, record).alias("r")).select(
        F.col("r.eventID").alias(S.CDC_EVENT_ID), F.col("r.eventName").alias(S.CDC_OP),
        F.lpad(ddb["SequenceNumber"], S.SEQUENCE_WIDTH, "0").alias(S.CDC_SEQUENCE),
        F.timestamp_seconds(ddb["ApproximateCreationDateTime"]).alias(S.CDC_EVENT_TIME),
        key.alias(entity.keys[0]), *images)


def udf_state_rows(df: DataFrame) -> DataFrame:
    """The common Glue approach, producing the columns our decode does: json.loads + boto3's
    TypeDeserializer in a Python UDF, both images as typed columns (their unmapped attributes as JSON),
    event id, op, sequence and event time; then a ``row_number`` dedupe (``plain_latest``) and state rows
    (``to_state_rows``). It checks nothing (a malformed record fails the batch), where
    ours reports each problem."""
    entity = ORDERS
    names = set(entity.names)
    columns = [f for f in S.event_fields(entity) if f.name != S.CDC_WARNINGS and f not in S.SOURCE_FIELDS]
    width = S.SEQUENCE_WIDTH

    def convert(value, spark_type):
        if value is None:
            return None
        if isinstance(spark_type, T.IntegralType):
            return int(value)
        if isinstance(spark_type, T.TimestampType):
            return datetime.fromisoformat(value)
        return value  # str, Decimal (DecimalType), bool

    @F.udf(T.StructType([f.struct_field() for f in columns]))
    def decode(payload):
        import json as _json

        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        record = _json.loads(payload)
        ddb = record["dynamodb"]
        row = [record["eventID"], record["eventName"], ddb["SequenceNumber"].zfill(width),
               datetime.fromtimestamp(ddb["ApproximateCreationDateTime"], UTC),
               deserializer.deserialize(ddb["Keys"][entity.keys[0]])]
        for image_name in ("NewImage", "OldImage"):
            image = ddb.get(image_name) or {}
            item = {k: deserializer.deserialize(v) for k, v in image.items() if k in names}
            row += [convert(item.get(f.name), f.spark_type) for f in entity.fields]
            unmapped = {k: v for k, v in image.items() if k not in names}
            row.append(_json.dumps(unmapped) if unmapped else None)
        return tuple(row)

    events = df.select(decode(S.PAYLOAD).alias("r")).select("r.*")
    return to_state_rows(plain_latest(events), 0, ORDERS)


# --- cases -----------------------------------------------------------------------------------------
class Bench:
    def __init__(self, spark: SparkSession, pg_url: str, workdir: Path):
        self.spark, self.pg_url, self.workdir = spark, pg_url, workdir
        self.quality = DataQuality(DqConfig(expectations_dir=DEFAULT_EXPECTATIONS,
                                            docs=DocsConfig(str(workdir / "docs"))), ORDERS, "bench")
        self.last_lake: Lake | None = None  # the lake of the last ``pipeline`` run (the memory floor reads it)
        self.batch_ids = itertools.count()  # a new id per run, as a stream's batches have (a new constant in plans)

    def _warehouse(self, entity: S.EntitySchema = ORDERS) -> PostgresWarehouse:
        sql = MergeSql(Dialect.POSTGRES, db_schema=f"b_{uuid.uuid4().hex[:10]}", entity=entity)
        warehouse = PostgresWarehouse(self.pg_url, sql, "bench")
        warehouse.ensure_tables()
        return warehouse

    def pipeline(self, df: DataFrame, *, gx: bool, lake: bool, history: bool = False) -> dict:
        entity = replace(ORDERS, history=history)
        warehouse = self._warehouse(entity)
        sink = Lake(LakeConfig(str(self.workdir / f"lake-{uuid.uuid4().hex[:8]}")), "bench", entity) \
            if lake else None
        self.last_lake = sink
        handler = BatchHandler(warehouse=warehouse, lake=sink, quality=self.quality if gx else None,
                               options=HandlerOptions(job_name="bench", alert_quarantine_share=1.0,
                                                      default_stream_id="bench"))
        jobs_before = spark_jobs_started(self.spark)
        started = time.perf_counter()
        result = handler(df, next(self.batch_ids))
        total = time.perf_counter() - started
        handler.docs_written()  # the pages are written after the commit, beside a stream's next batch
        jobs = spark_jobs_started(self.spark) - jobs_before
        warehouse.close()
        return {"seconds": total, "stages": result.seconds, "events": result.events_read, "spark_jobs": jobs}

    def plan_reuse(self, df: DataFrame) -> dict:
        """What the job reuses from one batch to the next, as seconds for the first batch and a later one:
        building the decode's columns for an entity (``decode_pipe_records``, no action run), and rendering a
        batch's Data Docs pages (Jinja templates compiled once per process)."""
        entity = replace(ORDERS, name=f"orders_{uuid.uuid4().hex[:8]}")  # an entity this process has not seen
        decode = [timed(lambda: decode_pipe_records(df, entity)) for _ in range(3)]
        quality = DataQuality(DqConfig(expectations_dir=DEFAULT_EXPECTATIONS,
                                       docs=DocsConfig(str(self.workdir / f"docs-{uuid.uuid4().hex[:8]}"))),
                              ORDERS, "bench-docs")
        state = state_rows(df).localCheckpoint()
        outcomes = [quality.check(state, batch_id, publish=False) for batch_id in range(3)]
        publish = [timed(lambda outcome=outcome: quality.publish(outcome)) for outcome in outcomes]
        return {"decode_build_first_s": decode[0], "decode_build_later_s": min(decode[1:]),
                "docs_publish_first_s": publish[0], "docs_publish_later_s": min(publish[1:])}

    def raw_json_parse(self, df: DataFrame) -> float:
        return timed(lambda: noop(df.select(F.try_parse_json(S.PAYLOAD).alias("v"))))

    def decode_flatten(self, df: DataFrame) -> float:
        """The decode the batch handler runs on a batch whose records all decode (the bench's payloads): values
        and problem flags; the records a flag marks would be decoded a second time, with their messages."""
        return timed(lambda: noop(decode_flagged(df, ORDERS)))

    def typed_flatten_floor(self, df: DataFrame) -> float:
        return timed(lambda: noop(typed_flatten_floor_rows(df)))

    def decode_flatten_with_messages(self, df: DataFrame) -> float:
        """The one-pass decode that builds the messages for every record (decode_pipe_records), for reference."""
        return timed(lambda: noop(decode_pipe_records(df, ORDERS)))

    def typed_floor_dedupe(self, df: DataFrame) -> float:
        return timed(lambda: noop(typed_floor_state_rows(df)))

    def decode_dedupe(self, df: DataFrame) -> float:
        return timed(lambda: noop(state_rows(df)))

    def parse_dedupe_floor(self, df: DataFrame) -> float:
        return timed(lambda: noop(parse_dedupe_floor_rows(df)))

    def udf_one_image(self, df: DataFrame) -> float:
        """A narrow Python-UDF decode, for reference: seven columns of one image (the new one, or the old one
        of a REMOVE), no event time or event id, then ``row_number``."""
        fields = T.StructType([T.StructField("orderid", T.StringType()), T.StructField("op", T.StringType()),
                               T.StructField("seq", T.StringType()), T.StructField("product_name", T.StringType()),
                               T.StructField("quantity", T.IntegerType()), T.StructField("price", T.DecimalType(10, 2)),
                               T.StructField("customer_id", T.StringType())])

        @F.udf(fields)
        def decode(payload):
            import json as _json

            from boto3.dynamodb.types import TypeDeserializer

            record = _json.loads(payload)
            ddb = record["dynamodb"]
            image = ddb.get("NewImage") or ddb.get("OldImage") or {}
            item = {k: TypeDeserializer().deserialize(v) for k, v in image.items()}
            quantity = item.get("quantity")
            return (item.get("orderid"), record["eventName"], ddb["SequenceNumber"].zfill(40),
                    item.get("product_name"), int(quantity) if quantity is not None else None, item.get("price"),
                    item.get("customer_id"))

        rows = df.select(decode(S.PAYLOAD).alias("r")).select("r.*")
        latest = rows.withColumn("_n", F.row_number().over(Window.partitionBy("orderid").orderBy(F.desc("seq"))))
        return timed(lambda: noop(latest.where("_n = 1")))

    def udf_type_deserializer(self, df: DataFrame) -> float:
        """The Python-UDF baseline (:func:`udf_state_rows`), timed."""
        return timed(lambda: noop(udf_state_rows(df)))

    def naive_upsert(self, lines: list[str]) -> float:
        """One autocommit INSERT … ON CONFLICT (or DELETE) per event, as a per-record Lambda does."""
        table = f"naive_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table} (orderid TEXT PRIMARY KEY, product_name TEXT, quantity INT, "
                         f"price NUMERIC(10,2), customer_id TEXT, seq TEXT)")
            started = time.perf_counter()
            for line in lines:
                record = json.loads(line)
                ddb = record["dynamodb"]
                key = ddb["Keys"]["orderid"]["S"]
                if record["eventName"] == "REMOVE":
                    conn.execute(f"DELETE FROM {table} WHERE orderid = %s AND seq <= %s",
                                 (key, ddb["SequenceNumber"].zfill(40)))
                    continue
                image = ddb["NewImage"]
                conn.execute(
                    f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (orderid) DO UPDATE SET "
                    f"product_name = EXCLUDED.product_name, quantity = EXCLUDED.quantity, price = EXCLUDED.price, "
                    f"customer_id = EXCLUDED.customer_id, seq = EXCLUDED.seq WHERE {table}.seq < EXCLUDED.seq",
                    (key, image["product_name"]["S"], int(image["quantity"]["N"]), image["price"]["N"],
                     image["customer_id"]["S"], ddb["SequenceNumber"].zfill(40)))
            return time.perf_counter() - started

    def merge_state(self, batch_lines: list[str]) -> pa.Table:
        """A batch's state rows, as the batch handler hands them to the warehouse."""
        events, _ = split_decoded(decode_pipe_records(source_frame(self.spark, batch_lines), ORDERS), 1, ORDERS)
        return to_state_rows(latest_per_key(events, ORDERS.keys), 1, ORDERS).toArrow()

    def merge_scaling(self, state: pa.Table, table_rows: int) -> float:
        """Merge one batch's state rows into a warehouse table that already holds ``table_rows`` orders. The
        table is new each time (a merged batch is in the ledger: merging it again would skip it), and
        PostgreSQL writes out the load before the clock starts (a checkpoint), so the merge does not pay for
        flushing the million rows just loaded."""
        warehouse = self._warehouse()
        sql = warehouse.sql
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            with conn.cursor().copy(f"COPY {sql.target} (orderid, product_name, quantity, price, cdc_event_id, cdc_op, "
                                    f"cdc_sequence, cdc_batch_id) FROM STDIN") as copy:
                for i in range(table_rows):
                    copy.write_row((f"existing-{i:08d}", "Phone", 1, "199.00", f"e{i}", "INSERT", "0" * 40, 0))
            conn.execute(f"ANALYZE {sql.target}")
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # without the right: measured as is
                conn.execute("CHECKPOINT")
            quarantine = self.spark.createDataFrame([], S.quarantine_schema()).toArrow()
            seconds = timed(lambda: warehouse.merge_batch(batch_id=1, stream_id="bench", state=state,
                                                           quarantine=quarantine))
            warehouse.close()
            conn.execute(f"DROP SCHEMA {quote(sql.db_schema)} CASCADE")  # a million rows each time: free the space
        return seconds
