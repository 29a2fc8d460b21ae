"""The SQL builder: identifiers validated and quoted, values bound, both dialects valid."""

from __future__ import annotations

import pytest
import sqlglot

from sales_cdc.config import WarehouseConfig
from sales_cdc.sql import Dialect, MergeSql
from tests.helpers import ORDERS, SORTED


def all_statements(sql: MergeSql) -> list[str]:
    return [*sql.create_statements(), sql.create_stage(), sql.ledger_lookup(), sql.ledger_counts(),
            *sql.merge_statements()]


@pytest.mark.parametrize("soft_delete", [False, True])
@pytest.mark.parametrize("dialect", list(Dialect))
def test_every_statement_parses_in_its_dialect(dialect, soft_delete):
    sql = MergeSql(dialect, db_schema="sales", soft_delete=soft_delete, entity=ORDERS)
    for statement in all_statements(sql):
        # sqlglot's Redshift dialect does not know psycopg's %(name)s placeholders; they are bound values
        parsed = sqlglot.parse_one(statement, read=dialect.value)
        assert parsed is not None, statement


def test_redshift_uses_data_api_placeholders_and_no_values_in_text():
    sql = MergeSql(Dialect.REDSHIFT, entity=ORDERS)
    assert ":job_name" in sql.ledger_lookup() and "%(" not in sql.ledger_lookup()
    insert = sql.ledger_insert()
    for placeholder in (":job_name", ":stream_id", ":batch_id", ":staged_rows", ":quarantined_rows"):
        assert placeholder in insert


def test_redshift_tables_are_distributed_and_sorted_by_the_key():
    target_ddl = MergeSql(Dialect.REDSHIFT, entity=ORDERS).create_statements()[1]
    assert 'DISTKEY("orderid") SORTKEY("orderid")' in target_ddl
    assert "VARCHAR(65535)" in target_ddl  # unmapped attributes


@pytest.mark.parametrize("bad", ['orders"; DROP TABLE x; --', "Orders", "1orders", "sales.orders", "", "a" * 64])
def test_identifiers_from_config_are_validated(bad):
    with pytest.raises(ValueError, match="invalid identifier"):
        MergeSql(Dialect.POSTGRES, db_schema=bad, entity=ORDERS)
    with pytest.raises(ValueError, match="invalid identifier"):
        MergeSql(Dialect.POSTGRES, table=bad, entity=ORDERS)
    with pytest.raises(ValueError, match="invalid identifier"):
        WarehouseConfig(table=bad)


def test_soft_delete_has_no_tombstones_and_hard_delete_has():
    hard = " ".join(MergeSql(Dialect.POSTGRES, entity=ORDERS).merge_statements())
    soft = " ".join(MergeSql(Dialect.POSTGRES, soft_delete=True, entity=ORDERS).merge_statements())
    assert "orders_tombstones" in hard and "orders_tombstones" not in soft
    assert '"is_deleted"' in soft


def test_the_job_user_is_an_iam_role_name_quoted_and_nothing_else():
    from sales_cdc.sql import iam_role_user

    assert iam_role_user("sales-cdc-GlueJobRole-AbC12") == '"IAMR:sales-cdc-GlueJobRole-AbC12"'
    for bad in ['x"; DROP TABLE t; --', "a b", "", "r" * 65]:
        with pytest.raises(ValueError):
            iam_role_user(bad)


def test_the_job_user_grants_reach_its_schema_only(pg_url):
    """The deploy's grants, applied in PostgreSQL to a login role: the job can create, fill and read its
    tables and temporary stages, and cannot touch another schema."""
    import uuid

    import psycopg

    from sales_cdc.sql import job_user_grants

    suffix = uuid.uuid4().hex[:8]
    user, schema, other = f"job_{suffix}", f"sales_{suffix}", f"other_{suffix}"
    with psycopg.connect(pg_url, autocommit=True) as admin:
        database = admin.execute("SELECT current_database()").fetchone()[0]
        admin.execute(f'CREATE ROLE "{user}" LOGIN')
        admin.execute(f'CREATE SCHEMA "{other}"')
        for statement in job_user_grants(schema, database, f'"{user}"'):
            assert sqlglot.parse_one(statement, read="redshift") is not None
            admin.execute(statement)
    with psycopg.connect(pg_url, user=user, autocommit=True) as job:
        job.execute(f'CREATE TABLE "{schema}".t (k int)')
        job.execute(f'INSERT INTO "{schema}".t VALUES (1)')
        job.execute("CREATE TEMP TABLE stage (k int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            job.execute(f'CREATE TABLE "{other}".t (k int)')


ORDERS_REDSHIFT_DDL = """CREATE TABLE IF NOT EXISTS "sales"."orders" (
  "orderid" VARCHAR(256) NOT NULL,
  "product_name" VARCHAR(256),
  "quantity" INTEGER,
  "price" DECIMAL(10,2),
  "customer_id" VARCHAR(256),
  "customer_name" VARCHAR(256),
  "created_at" TIMESTAMP,
  "unmapped_attributes" VARCHAR(65535),
  "cdc_event_id" VARCHAR(256) NOT NULL,
  "cdc_op" VARCHAR(256) NOT NULL,
  "cdc_sequence" VARCHAR(256) NOT NULL,
  "cdc_event_time" TIMESTAMP,
  "cdc_batch_id" BIGINT NOT NULL,
  "loaded_at" TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY ("orderid")
) DISTKEY("orderid") SORTKEY("orderid")"""

SORTED_TOMBSTONES_REDSHIFT_DDL = """CREATE TABLE IF NOT EXISTS "sales"."sorted_tombstones" (
  "pk" VARCHAR(256) NOT NULL,
  "sk" BIGINT NOT NULL,
  "cdc_sequence" VARCHAR(256) NOT NULL,
  "cdc_event_time" TIMESTAMP,
  "cdc_event_id" VARCHAR(256) NOT NULL,
  "cdc_batch_id" BIGINT NOT NULL,
  PRIMARY KEY ("pk", "sk")
) DISTKEY("pk") SORTKEY("pk", "sk")"""


def test_the_warehouse_ddl_of_the_orders_table_as_written_out():
    assert MergeSql(Dialect.REDSHIFT, entity=ORDERS).create_statements()[1] == ORDERS_REDSHIFT_DDL


def test_a_sort_key_is_part_of_every_key_and_join():
    sql = MergeSql(Dialect.REDSHIFT, entity=SORTED)
    assert sql.create_statements()[-1] == SORTED_TOMBSTONES_REDSHIFT_DDL
    assert sql.prune_stale()[0] == (
        'DELETE FROM "stage_sorted" USING "sales"."sorted" AS t\n'
        'WHERE "stage_sorted"."pk" = t."pk" AND "stage_sorted"."sk" = t."sk" '
        'AND NOT "stage_sorted"."cdc_sequence" > t."cdc_sequence"')

