"""Error tracking: capture exceptions into monitoring.capture_error()."""

from __future__ import annotations

import uuid
from typing import Any, Union

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from pg_observe.events import event_from_exception

PoolOrDsn = Union[ConnectionPool, str]


class ErrorTracker:
    """Captures exceptions and messages; every grouping rule runs in the database."""

    def __init__(
        self,
        pool_or_dsn: PoolOrDsn,
        *,
        environment: str = "production",
        release: str | None = None,
        service: str | None = None,
    ) -> None:
        self._pool = pool_or_dsn if isinstance(pool_or_dsn, ConnectionPool) else None
        self._dsn = pool_or_dsn if isinstance(pool_or_dsn, str) else None
        self.environment = environment
        self.release = release
        self.service = service

    def _connection(self, conn: psycopg.Connection | None):
        if conn is not None:
            return _Borrowed(conn)
        if self._pool is not None:
            return self._pool.connection()
        return psycopg.connect(self._dsn, autocommit=True)

    def capture_event(self, event: dict[str, Any], *, conn: psycopg.Connection | None = None) -> uuid.UUID:
        """Stores one event (a dict in the capture_error JSON shape); returns the occurrence id."""
        with self._connection(conn) as c:
            row = c.execute("SELECT monitoring.capture_error(%s)", (Jsonb(event),)).fetchone()
        assert row is not None
        return row[0]

    def capture_exception(
        self,
        error: BaseException,
        *,
        context: dict[str, Any] | None = None,
        level: str = "error",
        conn: psycopg.Connection | None = None,
    ) -> uuid.UUID:
        """Stores an exception with its stack trace and context; returns the occurrence id."""
        event = event_from_exception(
            error, context=context, environment=self.environment, release=self.release,
            service=self.service, level=level,
        )
        return self.capture_event(event, conn=conn)


class _Borrowed:
    """A caller's connection used as a context manager without closing it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> psycopg.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        return None


def init_error_tracker(
    pool_or_dsn: PoolOrDsn,
    *,
    environment: str = "production",
    release: str | None = None,
    service: str | None = None,
) -> ErrorTracker:
    """Creates the tracker an application keeps for its lifetime (the seeds' entry point)."""
    return ErrorTracker(pool_or_dsn, environment=environment, release=release, service=service)
