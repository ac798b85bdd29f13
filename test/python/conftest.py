"""Fixtures on the project's real cluster (started by make test): a fresh database per test
with pg_observe installed, made by pytest-postgresql from a template."""

from __future__ import annotations

import os

import psycopg
import pytest
from pytest_postgresql import factories

HOST = os.environ.get("PG_OBSERVE_TEST_HOST", "")
PORT = os.environ.get("PG_OBSERVE_TEST_PORT", "54329")


def _install(host: str, port: int, user: str, dbname: str, password: str | None = None, **_: object) -> None:
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_observe CASCADE")


postgresql_server = factories.postgresql_noproc(
    host=HOST, port=PORT, user="postgres", dbname="pg_observe_pytest", load=[_install]
)
postgresql = factories.postgresql("postgresql_server")


@pytest.fixture
def dsn(postgresql: psycopg.Connection) -> str:
    """Connection string of the per-test database."""
    info = postgresql.info
    return f"host={info.host} port={info.port} user={info.user} dbname={info.dbname}"


@pytest.fixture
def admin_dsn() -> str:
    """The maintenance database, for creating and dropping databases of a test's own."""
    return f"host={HOST} port={PORT} user=postgres dbname=postgres"
