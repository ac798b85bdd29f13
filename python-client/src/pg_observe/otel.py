"""OpenTelemetry traces in PostgreSQL: a span exporter and trace context for business events.

:class:`PostgreSQLSpanExporter` is an OpenTelemetry SDK ``SpanExporter``: under a
``BatchSpanProcessor`` each batch becomes one call of ``monitoring.ingest_spans()`` (one round
trip), which validates the spans, stores them in ``monitoring.spans`` and sets the bad ones
aside in ``monitoring.rejected_telemetry``::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from pg_observe.otel import PostgreSQLSpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(PostgreSQLSpanExporter(db_pool)))
    trace.set_tracer_provider(provider)

:func:`set_trace_context` and :func:`traced_transaction` put the active span's ids in the
``pg_observe.trace_id`` / ``pg_observe.span_id`` settings of the current transaction, where the
``monitoring.track_changes()`` trigger reads them: the business event rows then join the trace.

Needs the ``otel`` extra (opentelemetry-sdk).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import random
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pg_observe._sender import _transient, own_connection_params
from pg_observe.events import clean_string, safe_str

log = logging.getLogger("pg_observe")

_INGEST_SQL = "SELECT * FROM monitoring.ingest_spans(%s::jsonb)"
_SET_TRACE_SQL = "SELECT set_config('pg_observe.trace_id', %s, true), set_config('pg_observe.span_id', %s, true)"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_DEPTH = 32          # nested attribute values deeper than this are stored as text
_NO_LIMIT = sys.maxsize  # spans are not cut: the SDK's span limits already bound them


# --- span -> the flat JSON of monitoring.ingest_spans() ----------------------------------------------

def _text(value: str) -> str:
    """The string PostgreSQL can store: NUL and lone surrogates become U+FFFD."""
    if value.isascii() and "\x00" not in value:
        return value
    return clean_string(value, _NO_LIMIT)


def _int(value: int) -> int | str:
    # OTLP integers are 64-bit; bigger ones are kept as their digits rather than lost
    if _INT64_MIN <= value <= _INT64_MAX:
        return value
    try:
        return str(value)
    except ValueError:  # more digits than int->str allows (Python >= 3.11)
        return hex(value)


def json_value(value: Any, _depth: int = 0) -> Any:
    """A JSON-ready copy of an attribute value (OpenTelemetry's AnyValue and anything else).

    Tuples and other sequences become lists, bytes become base64 text (as in OTLP/JSON),
    NaN and the infinities their OTLP/JSON names ("NaN", "Infinity", "-Infinity"), integers
    beyond 64 bits their digits as text, strings lose NUL characters; other objects give str().
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, int):
        return _int(int(value))
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if _depth >= _MAX_DEPTH:
        return _text(safe_str(value))
    if isinstance(value, Mapping):
        return {_text(safe_str(key)): json_value(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, (Sequence, set, frozenset)):
        return [json_value(item, _depth + 1) for item in value]
    return _text(safe_str(value))


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {_text(safe_str(key)): json_value(value) for key, value in attributes.items()}


def _trace_state(context: Any) -> str | None:
    state = getattr(context, "trace_state", None)
    header = state.to_header() if state else ""
    return _text(header) if header else None


def span_to_dict(span: ReadableSpan, *, environment: str | None = None, service: str | None = None) -> dict[str, Any]:
    """One finished SDK span as a flat span of ``monitoring.ingest_spans()``.

    ``environment`` and ``service``, when given, are stored instead of the Resource's
    ``deployment.environment`` and ``service.name``.
    """
    context = span.context
    parent = span.parent
    status = span.status
    scope = span.instrumentation_scope
    item: dict[str, Any] = {
        "trace_id": trace.format_trace_id(context.trace_id) if context is not None else None,
        "span_id": trace.format_span_id(context.span_id) if context is not None else None,
        "parent_span_id": trace.format_span_id(parent.span_id) if parent is not None and parent.span_id else None,
        "name": _text(safe_str(span.name)),
        "kind": span.kind.name.lower(),
        "start_time_unix_nano": span.start_time,
        "end_time_unix_nano": span.end_time,
        "status_code": status.status_code.name.lower(),
        "status_message": _text(status.description) if status.description else None,
        "attributes": _attributes(span.attributes),
        "events": [
            {"name": _text(safe_str(event.name)), "time_unix_nano": event.timestamp,
             "attributes": _attributes(event.attributes)}
            for event in span.events
        ],
        "links": [
            {"trace_id": trace.format_trace_id(link.context.trace_id),
             "span_id": trace.format_span_id(link.context.span_id),
             "trace_state": _trace_state(link.context),
             "attributes": _attributes(link.attributes)}
            for link in span.links
        ],
        "resource": _attributes(span.resource.attributes if span.resource is not None else None),
    }
    if scope is not None:
        item["scope"] = {"name": _text(scope.name), "version": _text(scope.version) if scope.version else None}
    trace_state = _trace_state(context)
    if trace_state:
        item["trace_state"] = trace_state
    if environment is not None:
        item["environment"] = _text(environment)
    if service is not None:
        item["service"] = _text(service)
    return item


# --- the exporter ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpanExporterStats:
    """Counters of a PostgreSQLSpanExporter (a snapshot).

    accepted: spans stored; duplicates: spans the database had already (not stored twice);
    rejected: spans refused for their content (see monitoring.rejected_telemetry, or the log
    when the client could not even convert them); failed_batches: exports that returned FAILURE.
    """

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed_batches: int = 0


class PostgreSQLSpanExporter(SpanExporter):
    """OpenTelemetry span exporter storing each batch with ``monitoring.ingest_spans()``.

    ``pool_or_dsn``: a psycopg_pool.ConnectionPool (a connection is borrowed per batch), an
    AsyncConnectionPool (its conninfo and kwargs open one synchronous connection of the
    exporter's own: export() runs in the BatchSpanProcessor's thread, outside any event loop),
    a psycopg Connection (used as is: give it one the application does not use in transactions
    of its own), or a libpq connection string (one connection of the exporter's own).

    ``environment`` / ``service`` override the Resource's ``deployment.environment`` and
    ``service.name`` on every span. ``timeout`` (seconds) bounds one export: connecting, waiting
    for the pool, and retrying while the database is unreachable. Export never raises: it
    returns FAILURE when the batch could not be stored (the SDK logs it and drops the batch).
    """

    _LEFT_IN_FORKS: ClassVar[list] = []

    def __init__(
        self,
        pool_or_dsn: ConnectionPool | AsyncConnectionPool | psycopg.Connection | str,
        *,
        environment: str | None = None,
        service: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._pool: ConnectionPool | None = None
        self._given_conn: psycopg.Connection | None = None
        self._conninfo = ""
        self._conn_kwargs: dict[str, Any] = {}
        if isinstance(pool_or_dsn, ConnectionPool):
            self._pool = pool_or_dsn
            self._conninfo, self._conn_kwargs = pool_or_dsn.conninfo, dict(pool_or_dsn.kwargs or {})
        elif isinstance(pool_or_dsn, AsyncConnectionPool):
            self._conninfo, self._conn_kwargs = pool_or_dsn.conninfo, dict(pool_or_dsn.kwargs or {})
        elif isinstance(pool_or_dsn, psycopg.Connection):
            self._given_conn = pool_or_dsn
        elif isinstance(pool_or_dsn, str):
            self._conninfo = pool_or_dsn
        else:
            raise TypeError("PostgreSQLSpanExporter needs a psycopg_pool.ConnectionPool or AsyncConnectionPool, "
                            f"a psycopg.Connection or a DSN string, got {type(pool_or_dsn).__name__}")
        if timeout <= 0:
            raise ValueError("timeout must be above 0")
        self.environment = environment
        self.service = service
        self.timeout = timeout
        self._lock = threading.Lock()      # one export at a time on the dedicated connection
        self._shutdown = threading.Event()  # also cuts a retry wait short
        self._own_conn: psycopg.Connection | None = None
        self._own_conn_pid = 0
        self._outage_logged = False
        self._counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "failed_batches": 0}

    # --- SpanExporter ------------------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Stores the batch in one ``ingest_spans()`` call; SUCCESS once the database has it."""
        if self._shutdown.is_set():
            return SpanExportResult.FAILURE
        try:
            with self._lock:
                return self._export(spans)
        except Exception:  # a bug of ours must not reach the SDK
            log.warning("pg_observe: error while exporting spans", exc_info=True)
            self._counts["failed_batches"] += 1
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Stops exporting and closes the connection the exporter opened (never a pool or a
        connection it was given)."""
        self._shutdown.set()
        with self._lock:
            self._close_own_conn()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing is buffered here: the BatchSpanProcessor's own flush sends the spans."""
        return True

    @property
    def stats(self) -> SpanExporterStats:
        return SpanExporterStats(**self._counts)

    # --- internals ---------------------------------------------------------------------------------

    def _payload(self, spans: Sequence[ReadableSpan]) -> tuple[str | None, int]:
        """The batch as a JSON array (None when empty), and the number of spans left out."""
        items = []
        unconvertible = 0
        for span in spans:
            try:
                items.append(json.dumps(span_to_dict(span, environment=self.environment, service=self.service),
                                        ensure_ascii=False, allow_nan=False, separators=(",", ":")))
            except Exception:
                unconvertible += 1
                log.warning("pg_observe: cannot convert span %r; left out", getattr(span, "name", None),
                            exc_info=True)
        return ("[" + ",".join(items) + "]" if items else None), unconvertible

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        payload, unconvertible = self._payload(spans)
        self._counts["rejected"] += unconvertible
        if payload is None:
            return SpanExportResult.SUCCESS
        deadline = time.monotonic() + self.timeout
        attempt = 0
        while True:
            try:
                accepted, duplicates, rejected = self._store(payload, max(deadline - time.monotonic(), 0.1))
            except Exception as error:
                transient = _transient(error)
                if transient:
                    self._close_own_conn()
                given = self._given_conn
                lost_for_good = given is not None and (given.closed or given.broken)  # not ours to reopen
                retry = transient and not lost_for_good and not self._shutdown.is_set()
                if not self._outage_logged or not retry:
                    self._outage_logged = retry
                    log.warning("pg_observe: cannot store spans (%s: %s)%s", type(error).__name__,
                                _first_line(error), "; retrying" if retry else "")
                if retry and self._wait_before_retry(attempt, deadline):
                    attempt += 1
                    continue
                self._counts["failed_batches"] += 1
                return SpanExportResult.FAILURE
            if self._outage_logged:
                self._outage_logged = False
                log.warning("pg_observe: storing spans again")
            self._counts["accepted"] += accepted
            self._counts["duplicates"] += duplicates
            self._counts["rejected"] += rejected
            if rejected:
                log.warning("pg_observe: the database rejected %d span(s); see monitoring.rejected_telemetry",
                            rejected)
            return SpanExportResult.SUCCESS

    def _wait_before_retry(self, attempt: int, deadline: float) -> bool:
        """Sleeps with exponential backoff; False when the deadline (or shutdown) comes first."""
        delay = random.uniform(0.5, 1.0) * min(2.0, 0.1 * 2**attempt)
        if time.monotonic() + delay >= deadline:
            return False
        return not self._shutdown.wait(delay)

    def _store(self, payload: str, timeout: float) -> tuple[int, int, int]:
        with self._connection(timeout) as conn:
            row = conn.execute(_INGEST_SQL, (payload,)).fetchone()
        if row is None:
            return 0, 0, 0
        return int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)

    @contextlib.contextmanager
    def _connection(self, timeout: float) -> Iterator[psycopg.Connection]:
        if self._pool is not None and not self._pool.closed:
            with self._pool.connection(timeout=timeout) as conn:
                yield conn
        elif self._given_conn is not None:
            conn = self._given_conn
            if conn.autocommit:
                yield conn
            else:
                with conn.transaction():
                    yield conn
        else:  # a DSN, an async pool, or a pool the application closed before the last batch
            yield self._dedicated(timeout)

    def _dedicated(self, timeout: float) -> psycopg.Connection:
        if self._own_conn is not None and self._own_conn_pid != os.getpid():
            # a forked child: the connection is the parent's; never closed here, kept referenced
            self._LEFT_IN_FORKS.append(self._own_conn)
            self._own_conn = None
        conn = self._own_conn
        if conn is None or conn.closed or conn.broken:
            conninfo, kwargs = own_connection_params(
                self._conninfo, self._conn_kwargs,
                connect_timeout=max(2, math.ceil(timeout)),  # libpq's minimum is 2 seconds
                application_name="pg_observe span exporter")
            conn = self._own_conn = psycopg.connect(conninfo, **kwargs)
            self._own_conn_pid = os.getpid()
        return conn

    def _close_own_conn(self) -> None:
        conn, self._own_conn = self._own_conn, None
        if conn is not None and self._own_conn_pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


# --- trace context for business events ---------------------------------------------------------------

def _span_ids(span: Any) -> tuple[str, str] | None:
    if span is None:
        span = trace.get_current_span()
    context = span.get_span_context()
    if context is None or not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def _outside_transaction(conn: Any) -> bool:
    return bool(conn.autocommit) and conn.info.transaction_status == TransactionStatus.IDLE


_OUTSIDE_WARNING = ("pg_observe: set_trace_context() on an autocommit connection outside a transaction "
                    "block sets nothing (the setting would end with its own statement); use "
                    "traced_transaction(conn) or call it inside conn.transaction()")


def set_trace_context(conn_or_cursor: psycopg.Connection | psycopg.Cursor, span: Any = None) -> str | None:
    """Sets ``pg_observe.trace_id`` and ``pg_observe.span_id`` for the current transaction.

    The ids are those of ``span`` or else of the active OpenTelemetry span; returns the trace
    id (32 hex digits), or None without any query when there is no valid span. The settings are
    transaction-local (SET LOCAL semantics, ``set_config(..., true)``) so they never leak into
    the connection's next transaction, which matters with pooled connections:

    * inside a transaction block (``conn.transaction()``, or a non-autocommit connection, where
      this query itself opens the transaction) they last until COMMIT or ROLLBACK;
    * on an autocommit connection outside a transaction block they would end with this very
      statement: nothing is sent, a RuntimeWarning is issued and None returned;
    * in a failed transaction nothing is sent either (None).

    With a cursor, the query runs on that cursor (its previous result is replaced).
    """
    ids = _span_ids(span)
    if ids is None:
        return None
    conn = conn_or_cursor.connection
    if _outside_transaction(conn):
        warnings.warn(_OUTSIDE_WARNING, RuntimeWarning, stacklevel=2)
        return None
    if conn.info.transaction_status == TransactionStatus.INERROR:
        return None
    conn_or_cursor.execute(_SET_TRACE_SQL, ids)
    return ids[0]


async def async_set_trace_context(
    aconn_or_cursor: psycopg.AsyncConnection | psycopg.AsyncCursor, span: Any = None
) -> str | None:
    """:func:`set_trace_context` for a psycopg AsyncConnection or AsyncCursor."""
    ids = _span_ids(span)
    if ids is None:
        return None
    conn = aconn_or_cursor.connection
    if _outside_transaction(conn):
        warnings.warn(_OUTSIDE_WARNING, RuntimeWarning, stacklevel=2)
        return None
    if conn.info.transaction_status == TransactionStatus.INERROR:
        return None
    await aconn_or_cursor.execute(_SET_TRACE_SQL, ids)
    return ids[0]


@contextlib.contextmanager
def traced_transaction(conn: psycopg.Connection, span: Any = None) -> Iterator[psycopg.Connection]:
    """``with conn.transaction()`` with the trace context set first; yields the connection.

    Changes made in the block by tables under ``monitoring.track_changes()`` carry the active
    span's trace and span ids. Without a valid span, it is a plain transaction.
    """
    with conn.transaction():
        set_trace_context(conn, span)
        yield conn


@contextlib.asynccontextmanager
async def async_traced_transaction(
    aconn: psycopg.AsyncConnection, span: Any = None
) -> AsyncIterator[psycopg.AsyncConnection]:
    """:func:`traced_transaction` for a psycopg AsyncConnection."""
    async with aconn.transaction():
        await async_set_trace_context(aconn, span)
        yield aconn


__all__ = [
    "PostgreSQLSpanExporter",
    "SpanExporterStats",
    "async_set_trace_context",
    "async_traced_transaction",
    "json_value",
    "set_trace_context",
    "span_to_dict",
    "traced_transaction",
]
