"""Shared fixtures: one local[2] SparkSession and one embedded PostgreSQL for the whole session."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from sales_cdc.job import build_spark
from sales_cdc_local.embedded import start_embedded_postgres

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def spark():
    session = build_spark("sales-cdc-tests", shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory):
    url, server = start_embedded_postgres(tmp_path_factory.mktemp("postgres"))
    yield url
    server.cleanup()


@pytest.fixture
def db_schema(pg_url):
    """A fresh warehouse schema per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def moto():
    """A real moto server in its own process, shared by the session (tests use their own resource names)."""
    from sales_cdc_local.local_aws import MotoServer

    with MotoServer() as server:
        yield server
