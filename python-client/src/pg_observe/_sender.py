"""The background sender: a bounded in-process queue drained by one daemon thread.

The application's thread only appends a ready event to a deque under a lock (a few hundred
nanoseconds). The sender thread wakes every ``flush_interval`` seconds, or as soon as
``batch_size`` events are waiting, or when :meth:`Sender.flush` asks, serialises the events and
stores each batch with ONE ``SELECT monitoring.capture_errors(<json array>)``.

* Database unreachable (connection refused, database or extension missing, server shutting
  down, pool exhausted, ...): the batch is kept and retried with exponential backoff and jitter
  (``backoff_min`` doubling up to ``backoff_max``; each wait is drawn between half and all of
  that). While a :meth:`flush` is waiting the wait is at most 0.25 s.
* Events in the queue plus the batch being sent never exceed ``max_queue``; an event that does
  not fit is dropped (the newest: the one being captured) and counted in ``stats.dropped``.
* The database refuses a batch for what is in it (a data error rather than a connection
  error): the batch is split in halves until the events it refuses are alone; those are
  counted in ``stats.rejected`` and the others stored.
* Repeated events are harmless: the database skips an ``event_id`` it has already stored, so a
  batch whose commit was lost with the connection is simply sent again.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from pg_observe.events import sanitize

log = logging.getLogger("pg_observe")

# Errors after which the same batch is tried again later: the database is not there (yet).
_TRANSIENT = (
    psycopg.OperationalError,   # connection refused or lost, admin shutdown, too many connections...
    psycopg.InterfaceError,     # connection closed
    pg_errors.InvalidCatalogName,  # database does not exist (yet)
    pg_errors.InvalidSchemaName,   # extension not installed (yet)
    pg_errors.UndefinedFunction,   # extension older than capture_errors (being upgraded)
    pg_errors.UndefinedTable,
    pg_errors.InsufficientPrivilege,
    pg_errors.ReadOnlySqlTransaction,  # a standby during failover
)

try:  # psycopg_pool is a dependency, but keep the sender importable without it
    from psycopg_pool import PoolClosed, PoolTimeout

    _TRANSIENT = (*_TRANSIENT, PoolTimeout, PoolClosed)
except ImportError:  # pragma: no cover
    pass


@dataclass(frozen=True)
class TrackerStats:
    """Counters of a tracker's background sender (a snapshot).

    queued: events waiting or being sent now; sent: events the database accepted (including
    repeats of an event id it skipped); dropped: events lost because the queue was full, or
    still queued when the tracker was closed; failed_batches: attempts to store a batch that
    failed (each retry counts); rejected: events the database refused for their content;
    internal_errors: exceptions swallowed while capturing (the event was then sent repaired, or
    dropped if even that failed).
    """

    queued: int = 0
    sent: int = 0
    dropped: int = 0
    failed_batches: int = 0
    rejected: int = 0
    internal_errors: int = 0


def _transient(error: BaseException) -> bool:
    return isinstance(error, _TRANSIENT)


def own_connection_params(conninfo: str, kwargs: dict[str, Any], *, connect_timeout: float,
                          application_name: str) -> tuple[str, dict[str, Any]]:
    """conninfo and keyword arguments for a connection of pg_observe's own (the trackers', the
    recorder's, the exporter's): a connect timeout and an application name unless the caller's
    settings give them, and autocommit."""
    kwargs = dict(kwargs)
    try:
        given = {**conninfo_to_dict(conninfo), **kwargs}
    except Exception:
        given = dict(kwargs)
    if "connect_timeout" not in given:
        kwargs["connect_timeout"] = connect_timeout
    if "application_name" not in given:
        kwargs["application_name"] = application_name
    kwargs["autocommit"] = True
    return conninfo, kwargs


def after_fork_in_child(owner: Any) -> None:
    """Calls ``owner._after_fork()`` in every forked child, for as long as ``owner`` lives: its
    thread does not exist there and its lock may be held by it."""
    ref = weakref.ref(owner)

    def after_fork() -> None:
        target = ref()
        if target is not None:
            target._after_fork()

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork)


class Sender:
    """Bounded queue plus the daemon thread that empties it into the database."""

    def __init__(
        self,
        connection: Callable[[], Any],
        *,
        reset: Callable[[], None],
        forget: Callable[[], None],
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        backoff_min: float = 0.1,
        backoff_max: float = 30.0,
        name: str = "pg_observe-sender",
    ) -> None:
        if max_queue < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError("max_queue and batch_size must be positive, flush_interval above 0")
        self._connection = connection  # a context manager factory giving a psycopg connection
        self._reset = reset             # close a (possibly broken) dedicated connection
        self._forget = forget           # drop it without closing (in a forked child: it is the parent's)
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._name = name
        self._init_state()
        self._start()
        atexit.register(self._atexit)
        after_fork_in_child(self)

    # --- state --------------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._done_cond = threading.Condition(self._lock)
        self._wakeup = threading.Event()
        self._queue: collections.deque = collections.deque()
        self._in_flight = 0
        self._accepted = 0    # events taken in (sequence number of the last one)
        self._finished = 0    # events done with: sent, rejected or dropped after being taken in
        self._flush_waiters = 0
        self._stopping = False
        self._give_up_at: float | None = None
        self._closed = False
        self._sent = 0
        self._dropped = 0
        self._failed_batches = 0
        self._rejected = 0
        self._internal_errors = 0
        self._outage_logged = False
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        # In a forked child the thread is gone and the lock may be held by it: start afresh.
        # Events queued before the fork are the parent's to send.
        closed = self._closed
        self._forget()
        self._init_state()
        if not closed:
            self._start()
        else:
            self._closed = True

    # --- the application's side ---------------------------------------------------------------

    def put(self, event: Any) -> bool:
        """Queues one event (a JSON-ready dict, or _Raw(dict) to be repaired by the sender).

        Never blocks and never raises: False when the event was dropped.
        """
        with self._lock:
            if self._closed or len(self._queue) + self._in_flight >= self.max_queue:
                self._dropped += 1
                return False
            self._queue.append(event)
            self._accepted += 1
            wake = len(self._queue) >= self.batch_size
        if wake:
            self._wakeup.set()
        return True

    def count_internal_error(self) -> None:
        with self._lock:
            self._internal_errors += 1

    @property
    def stats(self) -> TrackerStats:
        with self._lock:
            return TrackerStats(
                queued=len(self._queue) + self._in_flight, sent=self._sent, dropped=self._dropped,
                failed_batches=self._failed_batches, rejected=self._rejected,
                internal_errors=self._internal_errors,
            )

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Waits until every event queued before the call is stored (or refused). True if so."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._lock:
            target = self._accepted
            if self._finished >= target:
                return True
            if self._thread is None or not self._thread.is_alive() or self._thread is threading.current_thread():
                return False
            self._flush_waiters += 1
        try:
            self._wakeup.set()
            with self._lock:
                while self._finished < target:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._done_cond.wait(remaining if remaining is None else min(remaining, 0.5))
                return True
        finally:
            with self._lock:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = 5.0) -> bool:
        """Sends what is queued (waiting at most ``timeout``), then stops the thread.

        Events still queued when the time is up are counted as dropped. True if all were sent.
        """
        with self._lock:
            if self._closed:
                return self._finished >= self._accepted
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._stopping = True
            self._give_up_at = time.monotonic()
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(timeout or 0.0, 0.0) + 1.0)
        try:
            atexit.unregister(self._atexit)
        except Exception:
            pass
        return flushed

    def _atexit(self) -> None:
        try:
            self.close(timeout=self.shutdown_timeout)
        except Exception:
            pass

    shutdown_timeout = 2.0

    # --- the sender thread ----------------------------------------------------------------------

    def _take(self) -> list:
        with self._lock:
            n = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(n)]
            self._in_flight = n
        return batch

    def _done(self, batch_size: int, *, sent: int = 0, rejected: int = 0, dropped: int = 0) -> None:
        with self._lock:
            self._in_flight = 0
            self._sent += sent
            self._rejected += rejected
            self._dropped += dropped
            self._finished += batch_size
            self._done_cond.notify_all()

    def _run(self) -> None:
        while True:
            self._wakeup.wait(self.flush_interval)
            self._wakeup.clear()
            try:
                while True:
                    batch = self._take()
                    if not batch:
                        break
                    if not self._deliver(batch):
                        break
            except Exception:  # a bug of ours must not stop the thread (WARNING: not an event for Sentry's logging)
                log.warning("pg_observe: error in the sender thread", exc_info=True)
                with self._lock:
                    self._internal_errors += 1
                    if self._in_flight:
                        self._dropped += self._in_flight
                        self._finished += self._in_flight
                        self._in_flight = 0
                        self._done_cond.notify_all()
            with self._lock:
                if self._stopping and (not self._queue or self._give_up()):
                    self._abandon_queue()
                    break
        try:
            self._reset()
        except Exception:
            pass

    def _give_up(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _abandon_queue(self) -> None:
        # under self._lock: what is still queued when closing is lost
        lost = len(self._queue)
        if lost:
            self._queue.clear()
            self._dropped += lost
            self._finished += lost
            self._done_cond.notify_all()

    def _deliver(self, batch: list) -> bool:
        """Stores the batch, retrying while the database is unavailable. False if given up."""
        payloads, bad = self._serialise(batch)
        attempt = 0
        while True:
            try:
                sent, rejected = self._store(payloads)
            except Exception as error:  # transient: keep the batch and try again later
                with self._lock:
                    self._failed_batches += 1
                    giving_up = self._stopping and self._give_up()
                if not self._outage_logged:
                    self._outage_logged = True
                    log.warning("pg_observe: cannot store errors (%s: %s); retrying in the background",
                                type(error).__name__, str(error).strip().splitlines()[0] if str(error) else "")
                if giving_up:
                    self._done(len(batch), dropped=len(batch))
                    return False
                self._reset()
                self._sleep(attempt)
                attempt += 1
                continue
            if self._outage_logged:
                self._outage_logged = False
                log.warning("pg_observe: storing errors again")
            self._done(len(batch), sent=sent, rejected=rejected + bad)
            return True

    def _sleep(self, attempt: int) -> None:
        ceiling = min(self.backoff_max, self.backoff_min * (2 ** min(attempt, 30)))
        delay = random.uniform(ceiling / 2, ceiling)
        deadline = time.monotonic() + delay
        while True:
            with self._lock:
                if self._flush_waiters or self._stopping:
                    deadline = min(deadline, time.monotonic() + min(0.25, delay))
                if self._stopping and self._give_up():
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.wait(min(remaining, 0.25))
            self._wakeup.clear()

    def _serialise(self, batch: list) -> tuple[list[str], int]:
        payloads = []
        bad = 0
        for item in batch:
            try:
                if isinstance(item, _Raw):
                    item = sanitize(item.transform(item.event) if item.transform else item.event)
                payloads.append(json.dumps(item, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
            except Exception:
                try:
                    payloads.append(json.dumps(sanitize(getattr(item, "event", item)), ensure_ascii=False,
                                               allow_nan=False, separators=(",", ":")))
                    with self._lock:
                        self._internal_errors += 1
                except Exception:
                    bad += 1
                    with self._lock:
                        self._internal_errors += 1
        return payloads, bad

    def _store(self, payloads: list[str]) -> tuple[int, int]:
        """(stored, refused). Raises only transient errors."""
        if not payloads:
            return 0, 0
        try:
            with self._connection() as conn:
                conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", ("[" + ",".join(payloads) + "]",))
            return len(payloads), 0
        except Exception as error:
            if _transient(error):
                raise
            if len(payloads) == 1:
                log.warning("pg_observe: the database refused an error event: %s", str(error).strip()[:500])
                return 0, 1
        middle = len(payloads) // 2
        first = self._store(payloads[:middle])
        second = self._store(payloads[middle:])
        return first[0] + second[0], first[1] + second[1]


class _Raw:
    """An event built elsewhere (sentry-sdk): transformed and repaired in the sender thread."""

    __slots__ = ("event", "transform")

    def __init__(self, event: Any, transform: Callable[[Any], Any] | None = None) -> None:
        self.event = event
        self.transform = transform
