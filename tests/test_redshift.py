"""Redshift adapter: statements from the one builder, valid Redshift SQL, no values in SQL text, the
meta-driven ledger row checked on real PostgreSQL, and the Data API / S3 call flow on a moto server."""

from __future__ import annotations

import io
import uuid
from dataclasses import replace
from decimal import Decimal

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from sqlglot import exp

from sales_cdc import schema as S
from sales_cdc.migration import Migration
from sales_cdc.sql import BATCH_META_FIELDS, Dialect, MergeSql, check_role_arn, check_s3_uri, job_user_grants
from sales_cdc.warehouse.redshift import (
    DataApiConnection,
    Polling,
    RedshiftDataApiWarehouse,
    RedshiftStatementError,
    RedshiftTarget,
)
from tests.helpers import ORDERS, shop_orders
from tests.redshift_on_postgres import DataApiOnPostgres

ROLE = "arn:aws:iam::123456789012:role/sales-cdc-redshift-copy"
STREAM = "5f0c8a52-8d2e-4a54-9a3e-0b8f1f3c2d11"
OBJECTS = {"state": "s3://sales-cdc-staging/merge/job/s/7/state.parquet",
           "batch": "s3://sales-cdc-staging/merge/job/s/7/batch.parquet",
           "quarantine": "s3://sales-cdc-staging/merge/job/s/7/quarantine.parquet",
           "dq_results": "s3://sales-cdc-staging/merge/job/s/7/dq_results.parquet"}


def warehouse(data_api=None, s3=None, soft_delete=False, timeout=900.0) -> RedshiftDataApiWarehouse:
    connection = DataApiConnection("dev", workgroup_name="sales-cdc",
                                   secret_arn="arn:aws:secretsmanager:us-east-1:123456789012:secret:redshift-admin-AbCdEf")
    target = RedshiftTarget(connection, ROLE, "s3://sales-cdc-staging/merge", Polling(timeout, initial_seconds=0.01))
    return RedshiftDataApiWarehouse(data_api, s3, MergeSql(Dialect.REDSHIFT, soft_delete=soft_delete, entity=ORDERS), "sales-cdc",
                                    target)


@pytest.mark.parametrize("soft_delete", [False, True])
def test_every_statement_of_a_batch_transaction_is_valid_redshift(soft_delete):
    statements = warehouse(soft_delete=soft_delete).staged_batch_statements(OBJECTS)
    parsed = [sqlglot.parse_one(s, read="redshift") for s in statements]
    copies = [p for p in parsed if isinstance(p, exp.Copy)]
    assert len(copies) == 4  # state, batch meta, quarantine, dq results
    assert all(isinstance(p, (exp.Create, exp.Copy, exp.Insert, exp.Delete)) for p in parsed)
    ddl = warehouse().sql.create_statements()
    assert all(isinstance(sqlglot.parse_one(s, read="redshift"), exp.Create) for s in ddl)
    assert any('"dq_results"' in s for s in ddl)


def test_no_value_of_the_batch_is_in_the_sql_text():
    text = "\n".join(warehouse().staged_batch_statements(OBJECTS))
    assert STREAM not in text and ":" not in text.replace("s3://", "").replace("arn:aws:iam::", "").replace(
        ":role/", "")  # no bound-parameter placeholders either: batches take none
    assert "FROM \"stage_batch\" AS m" in text


@pytest.mark.parametrize("bad", ["s3://bucket/x'; DROP TABLE sales.orders; --", "s3://Bucket/x", "https://b/x",
                                 "s3://bucket/a b"])
def test_copy_literals_are_checked(bad):
    with pytest.raises(ValueError, match="s3://"):
        check_s3_uri(bad)
    with pytest.raises(ValueError, match="role ARN"):
        check_role_arn("arn:aws:iam::123456789012:role/x' CREDENTIALS 'y")


def test_the_meta_driven_ledger_row_and_merge_work_on_postgresql(pg_url, db_schema):
    """The Redshift batch runs without bound parameters; the same builder's statements for PostgreSQL
    prove the ledger row computed from the one-row ``batch`` stage."""
    sql = MergeSql(Dialect.POSTGRES, db_schema=db_schema, entity=ORDERS)
    meta, create_meta = sql.temp_stage("batch", BATCH_META_FIELDS)
    with psycopg.connect(pg_url) as conn:
        for statement in sql.create_statements():
            conn.execute(statement)
        conn.execute(sql.create_stage())
        conn.execute(create_meta)
        conn.execute(f"INSERT INTO {meta} VALUES ('job', 's', 7, 5, 1, 'v1', 2, 0, 9, %s)", ('{"decode": 0.5}',))
        columns = "orderid, cdc_event_id, cdc_op, cdc_sequence, cdc_batch_id"
        conn.execute(f"INSERT INTO {sql.target} ({columns}) VALUES ('o5', 'e5', 'INSERT', %s, 6)", ("5".zfill(40),))
        # o4 and o5 come from a backfill (sequence 0): o5 is stored already, so its snapshot row is skipped
        for orderid, op, seq in (("o1", "INSERT", 1), ("o2", "INSERT", 2), ("o3", "REMOVE", 3), ("o4", "INSERT", 0),
                                 ("o5", "INSERT", 0)):
            conn.execute(f"INSERT INTO {sql.stage} ({columns}) VALUES (%s, %s, %s, %s, 7)",
                         (orderid, f"e{seq}", op, str(seq).zfill(40)))
        for statement in sql.merge_statements_from_meta(meta):
            conn.execute(statement)
        assert conn.execute(f"SELECT job_name, stream_id, batch_id, staged_rows, upserted_rows, deleted_rows, "
                            f"stale_rows, quarantined_rows, snapshot_rows, snapshot_loaded_rows, "
                            f"snapshot_quarantined_rows, events_read, stage_seconds FROM {sql.ledger}").fetchall() == [
            ("job", "s", 7, 5, 3, 1, 1, 1, 2, 1, 0, 9, '{"decode": 0.5}')]
        assert sorted(r[0] for r in conn.execute(f"SELECT orderid FROM {sql.target}").fetchall()) == [
            "o1", "o2", "o4", "o5"]


# --- the call flow against a moto server ------------------------------------------------------------
def test_data_api_query_flow_and_parquet_staging_on_moto(moto):
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="sales-cdc-staging")
    data_api = moto.client("redshift-data")
    wh = warehouse(data_api, s3, timeout=1.0)

    # moto keeps every statement STARTED: the poll backs off, gives up at the timeout and cancels it
    with pytest.raises(RedshiftStatementError, match="still STARTED after 1 s: cancelled") as error:
        wh.query(wh.sql.ledger_lookup(), {"job_name": "sales-cdc", "stream_id": STREAM, "batch_id": 7})
    statement_id = str(error.value).split()[1]
    described = data_api.describe_statement(Id=statement_id)
    assert described["Status"] == "ABORTED"
    assert described["QueryString"] == wh.sql.ledger_lookup()

    # the batch's rows are staged for COPY: encrypted, under the batch's own prefix
    state = pa.Table.from_pylist([{column: None for column in wh.sql.stage_columns}
                                  | {"orderid": "o1", "quantity": 1, "price": Decimal("199.00"), "cdc_op": "INSERT"}])
    quarantine = pa.Table.from_pylist([], schema=pa.schema([(c, pa.string()) for c in wh.sql.quarantine_columns]))
    objects = wh.stage_batch(batch_id=7, stream_id=STREAM, state=state, quarantine=quarantine)
    assert objects == {name: f"s3://sales-cdc-staging/merge/sales-cdc/{STREAM}/7/{name}.parquet"
                       for name in ("state", "batch")}  # no quarantine object for no quarantined rows
    body = s3.get_object(Bucket="sales-cdc-staging", Key=objects["state"].split("/", 3)[3])
    assert body["ServerSideEncryption"] == "aws:kms"
    assert pq.read_table(io.BytesIO(body["Body"].read())).to_pylist() == state.to_pylist()


def test_a_failed_statement_surfaces_redshift_error_text():
    # moto's Data API always reports FINISHED, so the failure path needs a stand-in at the client boundary
    class FailingDataApi:
        def execute_statement(self, **request):
            return {"Id": str(uuid.uuid4())}

        def describe_statement(self, Id):
            return {"Id": Id, "Status": "FAILED", "Error": 'ERROR: relation "sales.orders" does not exist'}

    with pytest.raises(Exception, match=r'relation "sales\.orders" does not exist'):
        warehouse(FailingDataApi()).query("SELECT 1")


def test_the_deploy_creates_the_job_user_with_rights_on_its_schema_only():
    # moto has no Redshift Serverless namespaces and keeps Data API statements STARTED: stand-ins at the clients
    class RecordingDataApi:
        def __init__(self):
            self.statements = []

        def execute_statement(self, **request):
            self.statements.append((request["Sql"], request.get("Parameters"), request["SecretArn"]))
            return {"Id": str(len(self.statements))}

        def describe_statement(self, Id):
            return {"Id": Id, "Status": "FINISHED", "HasResultSet": self.statements[int(Id) - 1][0].startswith("SELECT")}

        def get_statement_result(self, Id):
            return {"Records": []}  # no such user yet

    class Serverless:
        def get_namespace(self, namespaceName):
            return {"namespace": {"adminPasswordSecretArn": f"arn:aws:secretsmanager:us-east-1:1:secret:{namespaceName}"}}

    from sales_cdc_local.deploy import create_job_user

    data_api = RecordingDataApi()
    outputs = {"RedshiftNamespace": "sales-ns", "RedshiftDatabase": "sales", "RedshiftWorkgroup": "sales-wg",
               "GlueJobRoleName": "sales-cdc-job"}
    assert create_job_user(data_api, Serverless(), outputs, db_schema="sales") == '"IAMR:sales-cdc-job"'
    sql = [statement for statement, _, _ in data_api.statements]
    assert sql[0].startswith("SELECT 1 FROM pg_user") and data_api.statements[0][1] == [
        {"name": "name", "value": "IAMR:sales-cdc-job"}]
    assert sql[1] == 'CREATE USER "IAMR:sales-cdc-job" PASSWORD DISABLE'
    assert sql[2:] == job_user_grants("sales", "sales", '"IAMR:sales-cdc-job"')
    assert {secret for _, _, secret in data_api.statements} == {"arn:aws:secretsmanager:us-east-1:1:secret:sales-ns"}


# --- a schema migration through the Data API, run on PostgreSQL ----------------------------------------------
def test_a_migration_through_the_data_api_adds_widens_and_promotes_in_one_transaction(spark, pg_url, db_schema, moto):
    """Redshift cannot change a column's type in place inside a transaction: quantity is widened by a copy into
    a new column and a swap of names, in the migration's one transaction with the promotion and the history."""
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="sales-cdc-staging")
    api = DataApiOnPostgres(pg_url, s3)
    before = shop_orders()
    wh = RedshiftDataApiWarehouse(api, s3, MergeSql(Dialect.REDSHIFT, before, db_schema), "sales-cdc",
                                  RedshiftTarget(DataApiConnection("dev", workgroup_name="wg"), ROLE,
                                                 "s3://sales-cdc-staging/merge", Polling(5, initial_seconds=0.01)))
    wh.ensure_tables()
    fields = wh.sql.stored_fields
    state = pa.Table.from_pylist(
        [{"orderid": "o1", "product_name": "Lamp", "quantity": 2, "price": Decimal("9.99"),
          "unmapped_attributes": '{"discount":{"N":"1.5"},"gift":{"BOOL":true}}', "cdc_event_id": "e1",
          "cdc_op": "INSERT", "cdc_sequence": "1".zfill(40), "cdc_batch_id": 0},
         {"orderid": "o2", "product_name": "Lamp", "quantity": 3, "price": Decimal("5.00"),
          "unmapped_attributes": '{"discount":{"N":"1.234"}}', "cdc_event_id": "e2", "cdc_op": "INSERT",
          "cdc_sequence": "2".zfill(40), "cdc_batch_id": 0}],
        schema=pa.schema([(f.name, f.arrow_type) for f in fields]))
    quarantine = pa.Table.from_pylist([], schema=pa.schema([(f.name, f.arrow_type) for f in S.QUARANTINE_FIELDS]))
    assert wh.merge_batch(batch_id=0, stream_id=STREAM, state=state, quarantine=quarantine).upserted_rows == 2
    after = shop_orders(discount={"dynamodb": "N", "type": "decimal(6,2)"}, quantity={"type": "bigint"})
    migration = Migration(spark, wh, None, "sales-cdc")
    migration.run(after, "contract.yaml")
    with psycopg.connect(pg_url) as conn:
        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                                  "%s AND table_name = 'shop_orders'", (db_schema,)).fetchall())
        rows = conn.execute(f'SELECT orderid, quantity, discount, unmapped_attributes FROM "{db_schema}".shop_orders '
                            "ORDER BY orderid").fetchall()
        recorded = conn.execute(f'SELECT change, column_name, values_promoted, values_kept FROM "{db_schema}".'
                                "schema_changes WHERE change <> 'contract' ORDER BY column_name").fetchall()
    assert (types["quantity"], types["discount"]) == ("bigint", "numeric")
    assert rows == [("o1", 2, Decimal("1.50"), '{"gift":{"BOOL":true}}'), ("o2", 3, None, '{"discount":{"N":"1.234"}}')]
    assert recorded == [("add_column", "discount", 1, 1), ("widen", "quantity", 0, 0)]
    transaction = api.transactions[-1]
    assert 'ALTER TABLE "' + db_schema + '"."shop_orders" RENAME COLUMN "quantity__widened" TO "quantity"' in transaction
    assert any(s.startswith(f'UPDATE "{db_schema}"."shop_orders" SET "quantity" = COALESCE(s."quantity"')
               for s in transaction)
    for statement in transaction:
        sqlglot.parse_one(statement, read="redshift")
    assert not migration.plan(after, "contract.yaml").pending  # a second start: nothing to do


def test_a_migration_larger_than_one_data_api_call_runs_in_several_transactions(spark, pg_url, db_schema, moto):
    """One batch_execute_statement takes at most 40 statements: 45 new columns go in two calls, split between
    whole changes, the history in the last; the columns are all there and a second start finds nothing to do."""
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="sales-cdc-staging")
    api = DataApiOnPostgres(pg_url, s3)
    wh = RedshiftDataApiWarehouse(api, s3, MergeSql(Dialect.REDSHIFT, shop_orders(), db_schema), "sales-cdc",
                                  RedshiftTarget(DataApiConnection("dev", workgroup_name="wg"), ROLE,
                                                 "s3://sales-cdc-staging/merge", Polling(5, initial_seconds=0.01)))
    wh.ensure_tables()
    wide = shop_orders(**{f"extra_{i:02d}": {"dynamodb": "S", "type": "string"} for i in range(45)})
    migration = Migration(spark, wh, None, "sales-cdc")
    migration.run(wide, "contract.yaml")
    sizes = [len(t) for t in api.transactions[-2:]]
    assert sizes[0] <= 40 and sizes[1] <= 40 and sum(sizes) == 45 + 3  # 45 ADD COLUMNs, then the history's 3
    assert "INSERT INTO" in api.transactions[-1][-1]
    with psycopg.connect(pg_url) as conn:
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema ="
                                              " %s AND table_name = 'shop_orders'", (db_schema,)).fetchall()}
    assert {f"extra_{i:02d}" for i in range(45)} <= columns
    assert not migration.plan(wide, "contract.yaml").pending


# --- the change history through the Data API, run on PostgreSQL ------------------------------------------------
def test_the_history_is_staged_and_merged_in_the_batchs_transaction_also_out_of_order(pg_url, db_schema, moto):
    """Merge rule 7 on Redshift's path: the versions go through a staged Parquet object and the same statements;
    a late event, in a later batch, lands between two versions."""
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="sales-cdc-staging")
    entity = replace(ORDERS, history=True)
    wh = RedshiftDataApiWarehouse(DataApiOnPostgres(pg_url, s3), s3, MergeSql(Dialect.REDSHIFT, entity, db_schema),
                                  "sales-cdc", RedshiftTarget(DataApiConnection("dev", workgroup_name="wg"), ROLE,
                                                              "s3://sales-cdc-staging/merge",
                                                              Polling(5, initial_seconds=0.01)))
    wh.ensure_tables()

    def rows(fields, *events):
        made = [{"orderid": "o1", "product_name": "Lamp", "quantity": q, "price": Decimal("9.99"),
                 S.CDC_EVENT_ID: f"e{seq}", S.CDC_BATCH_ID: 0, S.CDC_EVENT_TIME: None,
                 **dict.fromkeys((S.CDC_OP, S.OPERATION), "MODIFY"),
                 **dict.fromkeys((S.CDC_SEQUENCE, S.VALID_FROM_SEQUENCE), str(seq).zfill(40)), S.IS_DELETED: False}
                for seq, q in events]
        return pa.Table.from_pylist([{f.name: r.get(f.name) for f in fields} for r in made],
                                    schema=pa.schema([(f.name, f.arrow_type) for f in fields]))

    quarantine = pa.Table.from_pylist([], schema=pa.schema([(f.name, f.arrow_type) for f in S.QUARANTINE_FIELDS]))
    versions = S.version_fields(entity)
    wh.merge_batch(batch_id=0, stream_id=STREAM, state=rows(wh.sql.stored_fields, (30, 3)), quarantine=quarantine,
                   superseded=rows(versions, (10, 1)))
    wh.merge_batch(batch_id=1, stream_id=STREAM, state=rows(wh.sql.stored_fields, (20, 2)), quarantine=quarantine)
    with psycopg.connect(pg_url) as conn:
        history = conn.execute(f'SELECT quantity, valid_from_sequence, valid_to_sequence, is_current FROM '
                               f'"{db_schema}".orders_history ORDER BY valid_from_sequence').fetchall()
    seq = [str(n).zfill(40) for n in (10, 20, 30)]
    assert history == [(1, seq[0], seq[1], False), (2, seq[1], seq[2], False), (3, seq[2], None, True)]


def test_the_history_statements_are_valid_redshift():
    wh = warehouse()
    wh.sql = replace(wh.sql, entity=replace(ORDERS, history=True))
    superseded = OBJECTS["state"].replace("state", "superseded")
    statements = wh.staged_batch_statements({**OBJECTS, "superseded": superseded})
    parsed = [sqlglot.parse_one(s, read="redshift") for s in statements]
    assert len([p for p in parsed if isinstance(p, exp.Copy)]) == 5
    # before the merge (it prunes the stage): the state rows' versions joined to the superseded, the ends staged,
    # the held versions' ends updated, the new versions inserted
    at = next(i for i, s in enumerate(statements) if superseded in s) + 1
    latest, ends, update, insert = parsed[at:at + 4]
    assert isinstance(latest, exp.Insert) and isinstance(ends, exp.Create)
    assert isinstance(update, exp.Update) and isinstance(insert, exp.Insert)
    assert "ON COMMIT" not in statements[at + 1]  # a PostgreSQL clause Redshift has not
    assert any(s.startswith("DELETE FROM") for s in statements[at + 4:])  # the merge's pruning comes after
    assert any('"orders_history"' in s for s in wh.sql.create_statements())
