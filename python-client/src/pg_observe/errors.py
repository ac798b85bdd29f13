"""Error tracking: ErrorTracker (sync) and AsyncErrorTracker (asyncio).

Capturing never blocks and never raises: the event is built in the caller's thread and put on
a bounded in-process queue; a daemon thread (the same one for both trackers, see
:mod:`pg_observe._sender`) stores the queue in batches with ``monitoring.capture_errors()``.
The issue workflow (resolve, unresolve, ignore, assign) calls the database right away: one
stored function per method, awaited on the AsyncErrorTracker.

Every grouping, fingerprinting and scrubbing rule runs in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pg_observe._sender import Sender, TrackerStats, _Raw, own_connection_params
from pg_observe.events import (
    ErrorLike,
    build_event,
    clean_string,
    format_exception_text,
    hostname,
    resolve_error,
    safe_repr,
    safe_str,
    sanitize,
)

PoolOrDsn = Union[ConnectionPool, str]
AsyncPoolOrDsn = Union[AsyncConnectionPool, str]

log = logging.getLogger("pg_observe")

_CAPTURE_SQL = "SELECT monitoring.capture_error(%s)"
_QUEUE_SQL = "SELECT monitoring.queue_error(%s)"

# Options of init_error_tracker(**options) with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "max_queue": 10_000,        # events waiting to be sent, at most; more are dropped and counted
    "batch_size": 500,          # events per capture_errors() call
    "flush_interval": 0.5,      # seconds between sends when fewer than batch_size are waiting
    "backoff_min": 0.1,         # first retry wait when the database is unavailable (seconds)
    "backoff_max": 30.0,        # longest retry wait
    "shutdown_timeout": 2.0,    # how long the atexit hook waits for the queue to be sent
    "connect_timeout": 10,      # seconds, for the sender's own connection (libpq connect_timeout)
    "pool_timeout": 5.0,        # seconds the sender waits for a connection from the pool
    "server_name": None,        # default: socket.gethostname()
    "tags": None,               # tags added to every event (the event's own win)
}
# Options of the seeds (fraiseql) that have no meaning here: accepted, with a warning.
_IGNORED_OPTIONS = ("notification_channels", "auto_notify")


class ErrorGroupNotFound(LookupError):
    """No error group has this fingerprint (or error id): SQLSTATE P0002 from the database."""


@dataclass(frozen=True)
class ErrorGroup:
    """An error group (one row of monitoring.tb_error_log) as a workflow function returned it."""

    error_id: Any
    fingerprint: str
    status: str
    assignee: str | None
    resolved_at: datetime.datetime | None
    error_type: str | None = None
    message: str | None = None
    occurrence_count: int | None = None
    resolved_in_release: str | None = None
    ignored_until: datetime.datetime | None = None
    ignored_until_count: int | None = None
    row: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: dict) -> ErrorGroup:
        return cls(
            error_id=row.get("error_id"), fingerprint=row.get("error_fingerprint"), status=row.get("status"),
            assignee=row.get("assignee"), resolved_at=row.get("resolved_at"), error_type=row.get("error_type"),
            message=row.get("error_message"), occurrence_count=row.get("occurrence_count"),
            resolved_in_release=row.get("resolved_in_release"), ignored_until=row.get("ignored_until"),
            ignored_until_count=row.get("ignored_until_count"), row=dict(row),
        )


class EventId(str):
    """The id of a captured event (32 hex digits; empty when there was nothing to capture).

    It is a plain ``str`` that can also be awaited (``await tracker.capture_exception(e)``
    gives the same string), so that both trackers serve code written for either: the event is
    captured when the method is called, awaited or not.
    """

    __slots__ = ()

    def __await__(self) -> Iterator[Any]:
        yield from ()
        return str(self)


_NO_EVENT = EventId("")


class _Borrowed:
    """A connection used as a context manager without closing it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> Any:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        return None


def _workflow_error(error: pg_errors.NoDataFound) -> ErrorGroupNotFound:
    message = (error.diag.message_primary if error.diag else None) or str(error)
    return ErrorGroupNotFound(message)


def _until(until: Any) -> Any:
    if isinstance(until, datetime.timedelta):
        return datetime.datetime.now(datetime.timezone.utc) + until
    return until


_WORKFLOW_SQL = {
    "resolve": "SELECT * FROM monitoring.resolve_error(p_fingerprint => %s, p_in_release => %s, p_actor => %s)",
    "unresolve": "SELECT * FROM monitoring.unresolve_error(p_fingerprint => %s, p_actor => %s)",
    "ignore": "SELECT * FROM monitoring.ignore_error(p_fingerprint => %s, p_until => %s,"
              " p_more_occurrences => %s, p_actor => %s)",
    "assign": "SELECT * FROM monitoring.assign_error(p_fingerprint => %s, p_assignee => %s, p_actor => %s)",
}


class _TrackerBase:
    """What both trackers share: configuration, event building, the background sender."""

    def __init__(
        self,
        pool_or_dsn: Any,
        *,
        environment: str = "production",
        release: str | None = None,
        service: str | None = None,
        **options: Any,
    ) -> None:
        for name in _IGNORED_OPTIONS:
            if name in options:
                options.pop(name)
                warnings.warn(f"pg_observe: option {name!r} is ignored; notifications are configured in the"
                              " database", stacklevel=3)
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise TypeError(f"unknown option(s) for the error tracker: {', '.join(sorted(unknown))}")
        self.options = {**DEFAULT_OPTIONS, **options}
        self.environment = environment
        self.release = release
        self.service = service
        self.server_name = self.options["server_name"] or hostname()
        self.default_tags = dict(self.options["tags"] or {})
        self._pool: Any = None
        self._dsn: str | None = None
        self._accept(pool_or_dsn)
        self._sender_conn: psycopg.Connection | None = None
        self._sender = Sender(
            self._sender_connection, reset=self._close_sender_conn, forget=self._forget_sender_conn,
            max_queue=self.options["max_queue"], batch_size=self.options["batch_size"],
            flush_interval=self.options["flush_interval"], backoff_min=self.options["backoff_min"],
            backoff_max=self.options["backoff_max"], name=f"pg_observe-sender-{id(self):x}",
        )
        self._sender.shutdown_timeout = self.options["shutdown_timeout"]

    def _accept(self, pool_or_dsn: Any) -> None:
        raise NotImplementedError

    # --- the sender's own connection ---------------------------------------------------------------

    def _direct_params(self) -> tuple[str, dict[str, Any]]:
        """conninfo and keyword arguments for a connection of the sender's own."""
        if self._pool is not None:
            conninfo, kwargs = self._pool.conninfo, dict(self._pool.kwargs or {})
        else:
            conninfo, kwargs = self._dsn or "", {}
        return own_connection_params(conninfo, kwargs, connect_timeout=self.options["connect_timeout"],
                                     application_name="pg_observe client")

    def _dedicated(self) -> _Borrowed:
        conn = self._sender_conn
        if conn is None or conn.closed or conn.broken:
            conninfo, kwargs = self._direct_params()
            conn = self._sender_conn = psycopg.connect(conninfo, **kwargs)
        return _Borrowed(conn)

    def _sender_connection(self) -> Any:
        pool = self._pool
        if isinstance(pool, ConnectionPool) and not pool.closed:
            return pool.connection(timeout=self.options["pool_timeout"])
        return self._dedicated()  # a DSN, an async pool, or a pool closed before the queue was sent

    def _close_sender_conn(self) -> None:
        conn, self._sender_conn = self._sender_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    _LEFT_IN_FORKS: ClassVar[list] = []

    def _forget_sender_conn(self) -> None:
        if self._sender_conn is not None:
            # the parent's connection: never closed here, kept referenced so that it is not finalised
            self._LEFT_IN_FORKS.append(self._sender_conn)
            self._sender_conn = None

    # --- building events ---------------------------------------------------------------------------

    def _fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self.default_tags:
            tags = fields.get("tags")
            merged = dict(self.default_tags)
            if tags:
                with contextlib.suppress(Exception):
                    merged.update(tags)
            fields["tags"] = merged
        return fields

    def _build(self, error: BaseException | None, message: Any, fields: dict[str, Any]) -> dict[str, Any]:
        try:
            return build_event(error, message=message, environment=self.environment, release=self.release,
                               service=self.service, server_name=self.server_name, **self._fields(fields))
        except Exception:
            self._sender.count_internal_error()
            return self._fallback_event(error, message, fields)

    def _fallback_event(self, error: BaseException | None, message: Any, fields: dict[str, Any]) -> dict[str, Any]:
        """A best-effort event when building the full one failed: every value through repr()."""
        event = build_event(None, message="", environment=self.environment, release=self.release,
                            service=self.service, server_name=self.server_name, level="error")
        if error is not None:
            event["exception_type"] = clean_string(safe_str(getattr(type(error), "__qualname__", "Error")), 512)
            event["message"] = clean_string(safe_str(error))
            with contextlib.suppress(Exception):
                event["stack_trace"] = clean_string(format_exception_text(error))
        elif message is not None:
            event["message"] = clean_string(safe_str(message))
        if isinstance(fields.get("level"), str):
            event["level"] = fields["level"]
        context = fields.get("context")
        if context is not None:
            try:
                event["context"] = {clean_string(safe_str(k), 1024): clean_string(safe_repr(v))
                                    for k, v in dict(context).items()}
            except Exception:
                event["context"] = {"value": clean_string(safe_repr(context))}
        for key in ("tags", "user", "fingerprint", "request", "logger", "transaction"):
            if fields.get(key) is not None:
                with contextlib.suppress(Exception):
                    event[key] = sanitize(fields[key])
        return event

    def _make(self, error: ErrorLike, message: Any, fields: dict[str, Any], exception: bool) -> dict | None:
        """The event for a capture call, or None when there is nothing to capture. Never raises."""
        try:
            if exception:
                exc = resolve_error(error)
                if exc is None:
                    return None
                return self._build(exc, message, fields)
            return self._build(None, message, fields)
        except Exception:
            self._sender.count_internal_error()
            return None

    def _enqueue(self, event: dict | None) -> EventId:
        if event is None:
            return _NO_EVENT
        try:
            self._sender.put(event)
            return EventId(event.get("event_id") or "")
        except Exception:
            self._sender.count_internal_error()
            return _NO_EVENT

    # --- public, shared ------------------------------------------------------------------------------

    def enqueue_event(self, event: dict[str, Any]) -> EventId:
        """Queues a prebuilt event (capture_error's JSON shape) for the background sender.

        The event is copied and repaired in the caller's thread; an ``event_id`` is added when it
        has none, and ``environment``, ``release``, ``service`` and ``server_name`` from the tracker
        when it does not set them. Never raises; returns the event id.
        """
        try:
            prepared = self._prepare_prebuilt(event)
            return self._enqueue(sanitize(prepared))
        except Exception:
            self._sender.count_internal_error()
            return _NO_EVENT

    def _enqueue_raw(self, event: dict[str, Any], transform: Any = None) -> EventId:
        """As enqueue_event, but ``transform`` and the repairs run in the sender thread: the caller
        hands the dict over and must not change it afterwards."""
        try:
            prepared = self._prepare_prebuilt(event)
            self._sender.put(_Raw(prepared, transform))
            return EventId(prepared.get("event_id") or "")
        except Exception:
            self._sender.count_internal_error()
            return _NO_EVENT

    def _prepare_prebuilt(self, event: dict[str, Any]) -> dict[str, Any]:
        import uuid

        prepared = dict(event)
        if not prepared.get("event_id"):
            prepared["event_id"] = uuid.uuid4().hex
        for key, value in (("environment", self.environment), ("release", self.release),
                           ("service", self.service), ("server_name", self.server_name)):
            if value is not None and not prepared.get(key):
                prepared[key] = value
        if self.default_tags:
            tags = prepared.get("tags")
            if isinstance(tags, dict):
                prepared["tags"] = {**self.default_tags, **tags}
            elif not tags:
                prepared["tags"] = dict(self.default_tags)
        return prepared

    @property
    def stats(self) -> TrackerStats:
        """Counters of the background sender: queued, sent, dropped, failed_batches, ..."""
        return self._sender.stats

    # the sender's flush and close, blocking: for the atexit hook, the sentry transport, the ASGI middleware
    def _flush_blocking(self, timeout: float | None = 5.0) -> bool:
        return self._sender.flush(timeout)

    def _close_blocking(self, timeout: float | None = 5.0) -> bool:
        return self._sender.close(timeout)


def _capture_fields(context: Any, level: str, tags: Any, user: Any, fingerprint: Any, request: Any,
                    transaction: str | None, logger: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"context": context, "level": level, "tags": tags, "user": user,
                              "fingerprint": fingerprint}
    if request is not None:
        fields["request"] = request
    if transaction is not None:
        fields["transaction"] = transaction
    if logger is not None:
        fields["logger"] = logger
    return fields


class ErrorTracker(_TrackerBase):
    """Captures exceptions and messages; every grouping rule runs in the database.

    ``pool_or_dsn``: a psycopg_pool.ConnectionPool (the sender borrows a connection per batch)
    or a libpq connection string (the sender keeps one connection of its own; workflow
    methods open one per call). See :data:`DEFAULT_OPTIONS` for ``**options``.
    """

    def _accept(self, pool_or_dsn: Any) -> None:
        if isinstance(pool_or_dsn, ConnectionPool):
            self._pool = pool_or_dsn
        elif isinstance(pool_or_dsn, str):
            self._dsn = pool_or_dsn
        else:
            raise TypeError(f"ErrorTracker needs a psycopg_pool.ConnectionPool or a DSN string, "
                            f"got {type(pool_or_dsn).__name__}")

    def _connection(self) -> Any:
        if self._pool is not None:
            return self._pool.connection()
        return psycopg.connect(self._dsn, autocommit=True)

    # --- capture -------------------------------------------------------------------------------------

    def capture_exception(
        self,
        error: ErrorLike = None,
        *,
        context: Any = None,
        level: str = "error",
        tags: Any = None,
        user: Any = None,
        fingerprint: Any = None,
        request: Any = None,
        transaction: str | None = None,
        logger: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> EventId:
        """Captures an exception (or exc_info tuple; None: the one being handled); returns its event id.

        Returns at once: the event is sent by the background thread. With ``conn``, it is written
        on that connection instead, in the caller's transaction (inside a savepoint, so a failure
        leaves the transaction usable; if the transaction has already failed, the event is queued).
        Never raises; an empty id when there was no exception to capture.
        """
        event = self._make(error, None, _capture_fields(context, level, tags, user, fingerprint, request,
                                                         transaction, logger), True)
        if conn is not None and event is not None:
            return self._write_on(conn, event)
        return self._enqueue(event)

    def capture_message(
        self,
        message: str,
        *,
        level: str = "info",
        context: Any = None,
        tags: Any = None,
        user: Any = None,
        fingerprint: Any = None,
        request: Any = None,
        transaction: str | None = None,
        logger: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> EventId:
        """Captures a message (no exception); returns its event id at once. Never raises."""
        event = self._make(None, message, _capture_fields(context, level, tags, user, fingerprint, request,
                                                           transaction, logger), False)
        if conn is not None and event is not None:
            return self._write_on(conn, event)
        return self._enqueue(event)

    def _write_on(self, conn: psycopg.Connection, event: dict[str, Any]) -> EventId:
        try:
            status = conn.info.transaction_status
            if status == psycopg.pq.TransactionStatus.INERROR:
                return self._enqueue(event)
            if conn.autocommit and status == psycopg.pq.TransactionStatus.IDLE:
                conn.execute(_CAPTURE_SQL, (Jsonb(event),))
                return EventId(event["event_id"])
            conn.execute("SAVEPOINT pg_observe_capture")
            try:
                conn.execute(_CAPTURE_SQL, (Jsonb(event),))
            except psycopg.Error:
                conn.execute("ROLLBACK TO SAVEPOINT pg_observe_capture")
                conn.execute("RELEASE SAVEPOINT pg_observe_capture")
                raise
            conn.execute("RELEASE SAVEPOINT pg_observe_capture")
            return EventId(event["event_id"])
        except Exception as error:
            log.warning("pg_observe: cannot write the event on the given connection (%s); queued instead",
                        type(error).__name__)
            self._sender.count_internal_error()
            return self._enqueue(event)

    def capture_event(self, event: dict[str, Any], *, conn: psycopg.Connection | None = None) -> Any:
        """Stores one prebuilt event NOW (one capture_error() call) and returns the occurrence id.

        The direct, synchronous write: it raises what the database raises. On ``conn`` it is
        part of the caller's transaction. For the never-blocking path use :meth:`enqueue_event`.
        """
        with (_Borrowed(conn) if conn is not None else self._connection()) as c:
            row = c.execute(_CAPTURE_SQL, (Jsonb(event),)).fetchone()
        return row[0] if row else None

    def queue_error(self, event: dict[str, Any], *, conn: psycopg.Connection | None = None) -> Any:
        """Queues one prebuilt event in the database (one queue_error() call: a single INSERT)
        and returns its event id; the grouping runs later, in batches (docs/errors.md).

        The cheapest synchronous write; it raises what the database raises. On ``conn`` it is
        part of the caller's transaction.
        """
        with (_Borrowed(conn) if conn is not None else self._connection()) as c:
            row = c.execute(_QUEUE_SQL, (Jsonb(event),)).fetchone()
        return row[0] if row else None

    # --- the issue workflow -----------------------------------------------------------------------

    def _workflow(self, action: str, params: tuple) -> ErrorGroup:
        try:
            with self._connection() as conn:
                row = conn.cursor(row_factory=dict_row).execute(_WORKFLOW_SQL[action], params).fetchone()
        except pg_errors.NoDataFound as error:
            raise _workflow_error(error) from error
        return ErrorGroup.from_row(row or {})

    def resolve_error(self, fingerprint: str, in_release: str | None = None, *,
                      actor: str | None = None) -> ErrorGroup:
        """Resolves the group; with ``in_release``, older releases' occurrences do not reopen it."""
        return self._workflow("resolve", (fingerprint, in_release, actor))

    def unresolve_error(self, fingerprint: str, *, actor: str | None = None) -> ErrorGroup:
        """Reopens a resolved or ignored group."""
        return self._workflow("unresolve", (fingerprint, actor))

    def ignore_error(self, fingerprint: str, until: Any = None, more_occurrences: int | None = None, *,
                     actor: str | None = None) -> ErrorGroup:
        """Ignores the group: forever, until a time (datetime or timedelta), or N more occurrences."""
        return self._workflow("ignore", (fingerprint, _until(until), more_occurrences, actor))

    def assign_error(self, fingerprint: str, assignee: str | None, *, actor: str | None = None) -> ErrorGroup:
        """Assigns the group to someone (None or "" unassigns)."""
        return self._workflow("assign", (fingerprint, assignee, actor))

    # --- lifecycle --------------------------------------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Waits until what was captured so far is stored; False if ``timeout`` ran out first."""
        return self._sender.flush(timeout)

    def close(self, timeout: float | None = 5.0) -> bool:
        """Sends what is queued (at most ``timeout`` seconds) and stops the sender thread.

        Later captures are dropped (and counted). The pool, if one was given, stays open: it is
        the application's.
        """
        return self._sender.close(timeout)

    def __enter__(self) -> ErrorTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncErrorTracker(_TrackerBase):
    """The asyncio tracker: ``await tracker.capture_exception(e)``, ``await tracker.resolve_error(...)``.

    ``pool_or_dsn``: a psycopg_pool.AsyncConnectionPool (used by the workflow methods) or a DSN.
    Capturing is the same as on :class:`ErrorTracker` and never touches the event loop: the
    event goes to the same thread-based background sender, which stores batches on a
    synchronous connection of its own (opened with the pool's ``conninfo`` and ``kwargs``).
    ``capture_*`` return an awaitable :class:`EventId`, so the capture happens when they are
    called, awaited or not; the workflow methods, ``flush`` and ``close`` are coroutines.
    """

    def _accept(self, pool_or_dsn: Any) -> None:
        if isinstance(pool_or_dsn, AsyncConnectionPool):
            self._pool = pool_or_dsn
        elif isinstance(pool_or_dsn, str):
            self._dsn = pool_or_dsn
        else:
            raise TypeError(f"AsyncErrorTracker needs a psycopg_pool.AsyncConnectionPool or a DSN string, "
                            f"got {type(pool_or_dsn).__name__}")

    @contextlib.asynccontextmanager
    async def _connection(self) -> Any:
        if self._pool is not None:
            async with self._pool.connection() as conn:
                yield conn
        else:
            async with await psycopg.AsyncConnection.connect(self._dsn, autocommit=True) as conn:
                yield conn

    def capture_exception(
        self,
        error: ErrorLike = None,
        *,
        context: Any = None,
        level: str = "error",
        tags: Any = None,
        user: Any = None,
        fingerprint: Any = None,
        request: Any = None,
        transaction: str | None = None,
        logger: str | None = None,
    ) -> EventId:
        """Captures an exception (None: the one being handled); ``await`` it for the event id.

        The event is built and queued when this is called; nothing waits on the database.
        """
        event = self._make(error, None, _capture_fields(context, level, tags, user, fingerprint, request,
                                                         transaction, logger), True)
        return self._enqueue(event)

    def capture_message(
        self,
        message: str,
        *,
        level: str = "info",
        context: Any = None,
        tags: Any = None,
        user: Any = None,
        fingerprint: Any = None,
        request: Any = None,
        transaction: str | None = None,
        logger: str | None = None,
    ) -> EventId:
        """Captures a message; ``await`` it for the event id. Never raises."""
        event = self._make(None, message, _capture_fields(context, level, tags, user, fingerprint, request,
                                                           transaction, logger), False)
        return self._enqueue(event)

    async def capture_event(self, event: dict[str, Any], *, conn: psycopg.AsyncConnection | None = None) -> Any:
        """Stores one prebuilt event NOW (one capture_error() call); returns the occurrence id. Raises."""
        if conn is not None:
            cur = await conn.execute(_CAPTURE_SQL, (Jsonb(event),))
            row = await cur.fetchone()
        else:
            async with self._connection() as c:
                cur = await c.execute(_CAPTURE_SQL, (Jsonb(event),))
                row = await cur.fetchone()
        return row[0] if row else None

    async def queue_error(self, event: dict[str, Any], *, conn: psycopg.AsyncConnection | None = None) -> Any:
        """Queues one prebuilt event in the database (one queue_error() call); returns its event id. Raises."""
        if conn is not None:
            cur = await conn.execute(_QUEUE_SQL, (Jsonb(event),))
            row = await cur.fetchone()
        else:
            async with self._connection() as c:
                cur = await c.execute(_QUEUE_SQL, (Jsonb(event),))
                row = await cur.fetchone()
        return row[0] if row else None

    async def _workflow(self, action: str, params: tuple) -> ErrorGroup:
        try:
            async with self._connection() as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute(_WORKFLOW_SQL[action], params)
                row = await cur.fetchone()
        except pg_errors.NoDataFound as error:
            raise _workflow_error(error) from error
        return ErrorGroup.from_row(row or {})

    async def resolve_error(self, fingerprint: str, in_release: str | None = None, *,
                            actor: str | None = None) -> ErrorGroup:
        """Resolves the group; with ``in_release``, older releases' occurrences do not reopen it."""
        return await self._workflow("resolve", (fingerprint, in_release, actor))

    async def unresolve_error(self, fingerprint: str, *, actor: str | None = None) -> ErrorGroup:
        """Reopens a resolved or ignored group."""
        return await self._workflow("unresolve", (fingerprint, actor))

    async def ignore_error(self, fingerprint: str, until: Any = None, more_occurrences: int | None = None, *,
                           actor: str | None = None) -> ErrorGroup:
        """Ignores the group: forever, until a time (datetime or timedelta), or N more occurrences."""
        return await self._workflow("ignore", (fingerprint, _until(until), more_occurrences, actor))

    async def assign_error(self, fingerprint: str, assignee: str | None, *,
                           actor: str | None = None) -> ErrorGroup:
        """Assigns the group to someone (None or "" unassigns)."""
        return await self._workflow("assign", (fingerprint, assignee, actor))

    async def flush(self, timeout: float | None = 5.0) -> bool:
        """Waits (in a worker thread, not blocking the loop) until what was captured is stored."""
        return await asyncio.to_thread(self._sender.flush, timeout)

    async def close(self, timeout: float | None = 5.0) -> bool:
        """Sends what is queued (at most ``timeout`` seconds) and stops the sender thread."""
        return await asyncio.to_thread(self._sender.close, timeout)

    async def __aenter__(self) -> AsyncErrorTracker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def init_error_tracker(
    pool_or_dsn: Any,
    *,
    environment: str = "production",
    release: str | None = None,
    service: str | None = None,
    **options: Any,
) -> ErrorTracker | AsyncErrorTracker:
    """Creates the tracker an application keeps for its lifetime (the seeds' entry point).

    A ConnectionPool or a DSN gives an :class:`ErrorTracker`. An AsyncConnectionPool gives an
    :class:`AsyncErrorTracker` (as :func:`init_async_error_tracker`), since the seeds call
    ``init_error_tracker(db_pool)`` with an asyncio pool and then ``await tracker.resolve_error(...)``.
    ``**options``: see :data:`DEFAULT_OPTIONS`.
    """
    if isinstance(pool_or_dsn, AsyncConnectionPool):
        return AsyncErrorTracker(pool_or_dsn, environment=environment, release=release, service=service,
                                 **options)
    return ErrorTracker(pool_or_dsn, environment=environment, release=release, service=service, **options)


def init_async_error_tracker(
    pool_or_dsn: AsyncPoolOrDsn,
    *,
    environment: str = "production",
    release: str | None = None,
    service: str | None = None,
    **options: Any,
) -> AsyncErrorTracker:
    """Creates an :class:`AsyncErrorTracker` (an AsyncConnectionPool or a DSN)."""
    return AsyncErrorTracker(pool_or_dsn, environment=environment, release=release, service=service, **options)
