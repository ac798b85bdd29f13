"""Metrics: counters, gauges and histograms aggregated in process, stored by a daemon thread.

The application's thread only validates the call and updates an in-memory table under a lock
(a few microseconds, no I/O). Every ``flush_interval`` seconds the background thread cuts the
table (the "flush window") and stores it with ONE ``SELECT * FROM monitoring.record_metrics(...)``
(split in chunks of ``batch_size`` points when bigger), every point stamped with the time the
window was cut:

* counter: the sum of the increments of the window (one delta point per series);
* gauge: the last value set in the window;
* histogram: every observation of the window, as one point with ``"values": [...]``.

A series is (type, name, labels); labels are a dict of str to str/int/float/bool/None.

What is kept, retried and dropped:

* Memory is bounded: at most ``max_series`` series and ``max_observations`` histogram values
  wait in the table. A call that needs a new series (or value) beyond that is dropped and
  counted in ``stats.dropped``; existing series keep aggregating.
* Database unavailable (connection refused, database or extension missing, ...): the cut
  window is kept and retried with exponential backoff and jitter, while new calls keep
  aggregating into the next window (so an outage costs no counts, only time resolution: the
  next window spans it). Delivery is at-least-once: a window whose commit was lost with the
  connection is sent again.
* The database refuses points for what they are: ``record_metrics`` stores them in
  ``monitoring.rejected_telemetry`` and reports them (``stats.rejected``); a chunk that raises
  a data error is split in halves until the refused points are alone, and those are counted
  in ``stats.rejected`` and never retried.
* NaN and +/-infinity cannot travel in JSON: they are dropped in the caller's thread and
  counted in ``stats.invalid`` (as is a counter whose sum overflows). Label sets are sent as
  they are: the database refuses more than 256 keys (``stats.rejected``).
* ``close()`` (also run at exit) sends what is left, waiting at most ``timeout``; what is still
  unsent then is counted in ``stats.dropped``. Later calls are dropped and counted.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import decimal
import json
import logging
import math
import numbers
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pg_observe._sender import _transient, after_fork_in_child, own_connection_params
from pg_observe.errors import _Borrowed

log = logging.getLogger("pg_observe")

_RECORD_SQL = "SELECT * FROM monitoring.record_metrics(%s::jsonb)"

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricsStats:
    """Counters of a recorder (a snapshot).

    series: series waiting in the current window; pending: points cut and not stored yet;
    sent: rows the database stored (record_metrics' ``accepted``: one per counter or gauge
    point, one per histogram observation); rejected: points the database refused (its
    ``rejected``, kept in monitoring.rejected_telemetry, plus points a data error refused);
    dropped: calls whose data was not kept (limits reached, recorder closed, still unsent at
    close); invalid: calls (or counter sums) dropped for a NaN or infinite value; flushes:
    windows stored; failed_flushes: attempts to store that failed on an unavailable database
    (each retry counts).
    """

    series: int = 0
    pending: int = 0
    sent: int = 0
    rejected: int = 0
    dropped: int = 0
    invalid: int = 0
    flushes: int = 0
    failed_flushes: int = 0


class Recorded:
    """What a recording call returns: true when the value was kept, false when dropped.

    The work is done when the method is called; the object can also be awaited (giving the
    same bool), so ``metrics.increment(...)`` and ``await metrics.increment(...)`` both work.
    """

    __slots__ = ("kept",)

    def __init__(self, kept: bool) -> None:
        self.kept = kept

    def __bool__(self) -> bool:
        return self.kept

    def __await__(self) -> Iterator[Any]:
        yield from ()
        return self.kept

    def __repr__(self) -> str:
        return f"Recorded({self.kept})"


_KEPT = Recorded(True)
_DROPPED = Recorded(False)


def _check_name(name: Any) -> None:
    if name.__class__ is not str and not isinstance(name, str):
        raise TypeError(f"metric name must be a str, got {type(name).__name__}")
    if not name:
        raise ValueError("metric name must not be empty")


def _number(value: Any) -> float | None:
    """The value as a float; None when it is NaN or infinite. TypeError when not a number."""
    cls = value.__class__
    if cls is not float and cls is not int:
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, decimal.Decimal)):
            raise TypeError(f"metric value must be a real number, got {type(value).__name__}")
    try:
        number = float(value)
    except (OverflowError, ValueError):  # an int beyond double, a signalling NaN
        return None
    return number if math.isfinite(number) else None


_SCALARS = (str, int, float, bool, type(None))


def _label_key(labels: Any) -> tuple:
    """The labels as a sorted tuple (the series key); raises on what JSON labels cannot hold."""
    if labels is None:
        return ()
    if not isinstance(labels, Mapping):
        raise TypeError(f"labels must be a dict, got {type(labels).__name__}")
    items = []
    for key, value in labels.items():
        if key.__class__ is not str and not isinstance(key, str):
            raise TypeError(f"label names must be str, got {type(key).__name__}")
        cls = value.__class__
        if cls is bool:
            value = (bool, value)  # True == 1 for a dict: keep them apart, as jsonb does
        elif cls is float:
            if not math.isfinite(value):
                raise ValueError(f"label {key!r} is {value}: not representable in JSON")
        elif cls not in _SCALARS and not isinstance(value, (str, int, float)):
            raise TypeError(f"label {key!r} must be a str, int, float, bool or None, got {type(value).__name__}")
        items.append((key, value))
    items.sort(key=lambda item: item[0])
    return tuple(items)


def _labels_from_key(key: tuple) -> dict[str, Any]:
    return {k: (v[1] if v.__class__ is tuple else v) for k, v in key}


class _Window:
    """A cut window: its series, then (in the sender thread) its chunks of serialised points."""

    __slots__ = ("chunks", "next", "seq", "series", "timestamp")

    def __init__(self, seq: int, series: dict, timestamp: str) -> None:
        self.seq = seq
        self.series = series
        self.timestamp = timestamp
        self.chunks: list[tuple[list[str], int]] | None = None  # (points, calls they aggregate)
        self.next = 0

    def unsent_calls(self) -> int:
        if self.chunks is None:
            return sum(entry[1] for entry in self.series.values())
        return sum(calls for _, calls in self.chunks[self.next:])


class MetricsRecorder:
    """Records counters, gauges and histograms; a daemon thread stores them every flush window.

    ``pool_or_dsn``: a psycopg_pool.ConnectionPool (a connection is borrowed per flush), a
    psycopg_pool.AsyncConnectionPool or a DSN string (the thread keeps a synchronous connection
    of its own, opened with the pool's ``conninfo`` and ``kwargs``). The recording methods
    never block and return an awaitable :class:`Recorded`; they raise TypeError or ValueError
    only for a call that can never be right (a name that is not a str, a value that is not a
    number, labels that are not a dict of scalars). See the module documentation for what is
    dropped and retried.
    """

    shutdown_timeout = 2.0  # how long the atexit hook waits for the last window

    def __init__(
        self,
        pool_or_dsn: Any,
        *,
        environment: str = "production",
        service: str | None = None,
        flush_interval: float = 1.0,
        max_series: int = 10_000,
        max_observations: int = 100_000,
        batch_size: int = 1_000,
        backoff_min: float = 0.1,
        backoff_max: float = 30.0,
        shutdown_timeout: float = 2.0,
        connect_timeout: int = 10,
        pool_timeout: float = 5.0,
    ) -> None:
        if flush_interval <= 0 or max_series < 1 or max_observations < 0 or batch_size < 1:
            raise ValueError("flush_interval must be above 0, max_series and batch_size positive,"
                             " max_observations not negative")
        if isinstance(pool_or_dsn, (ConnectionPool, AsyncConnectionPool)):
            self._pool: Any = pool_or_dsn
            self._dsn: str | None = None
        elif isinstance(pool_or_dsn, str):
            self._pool, self._dsn = None, pool_or_dsn
        else:
            raise TypeError(f"MetricsRecorder needs a psycopg_pool.ConnectionPool, an AsyncConnectionPool or a"
                            f" DSN string, got {type(pool_or_dsn).__name__}")
        self.environment = environment
        self.service = service
        self.flush_interval = flush_interval
        self.max_series = max_series
        self.max_observations = max_observations
        self.batch_size = batch_size
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.shutdown_timeout = shutdown_timeout
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout
        self._conn: psycopg.Connection | None = None
        self._init_state()
        self._start()
        atexit.register(self._atexit)
        after_fork_in_child(self)

    # --- state ------------------------------------------------------------------------------------

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._done_cond = threading.Condition(self._lock)
        self._wakeup = threading.Event()
        # (type, name, label key) -> [labels dict, value (float, or list for a histogram), calls]
        self._live: dict[tuple, list] = {}
        self._live_observations = 0
        self._window: _Window | None = None
        self._cut_seq = 0       # windows cut so far
        self._done_seq = 0      # windows stored (or refused, or abandoned)
        self._lost_seq = 0      # last window abandoned at close
        self._flush_target = 0  # a flush() waits for this window
        self._stopping = False
        self._give_up_at: float | None = None
        self._closed = False
        self._sent = self._rejected = self._dropped = self._invalid = 0
        self._flushes = self._failed_flushes = 0
        self._outage_logged = False
        self._invalid_logged = False
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"pg_observe-metrics-{id(self):x}", daemon=True)
        self._thread.start()

    _LEFT_IN_FORKS: ClassVar[list] = []

    def _after_fork(self) -> None:
        # The child starts empty: what was recorded before the fork is the parent's to send, the
        # lock may be held by the parent's thread (gone here), the connection is the parent's.
        closed = self._closed
        if self._conn is not None:
            self._LEFT_IN_FORKS.append(self._conn)  # never closed nor finalised here
            self._conn = None
        self._init_state()
        if closed:
            self._closed = True
        else:
            self._start()

    # --- recording (the application's thread) ------------------------------------------------------

    def increment(self, name: str, value: float = 1, labels: Mapping[str, Any] | None = None) -> Recorded:
        """Adds ``value`` (default 1, not negative) to the counter; sent as one delta per window."""
        _check_name(name)
        number = _number(value)
        if number is not None and number < 0:
            raise ValueError(f"a counter only goes up (got {value}); use set_gauge for a value that goes down")
        key = (COUNTER, name, _label_key(labels))
        with self._lock:
            if number is None:
                return self._invalid_call()
            if self._closed:
                self._dropped += 1
                return _DROPPED
            entry = self._live.get(key)
            if entry is None:
                if len(self._live) >= self.max_series:
                    self._dropped += 1
                    return _DROPPED
                self._live[key] = [_labels_from_key(key[2]), number, 1]
            else:
                entry[1] += number
                entry[2] += 1
        return _KEPT

    def set_gauge(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> Recorded:
        """Sets the gauge; the last value of the window is sent."""
        _check_name(name)
        number = _number(value)
        key = (GAUGE, name, _label_key(labels))
        with self._lock:
            if number is None:
                return self._invalid_call()
            if self._closed:
                self._dropped += 1
                return _DROPPED
            entry = self._live.get(key)
            if entry is None:
                if len(self._live) >= self.max_series:
                    self._dropped += 1
                    return _DROPPED
                self._live[key] = [_labels_from_key(key[2]), number, 1]
            else:
                entry[1] = number
                entry[2] += 1
        return _KEPT

    def record_histogram(self, name: str, value: float, labels: Mapping[str, Any] | None = None) -> Recorded:
        """Adds one observation; every observation of the window is sent (one row each)."""
        _check_name(name)
        number = _number(value)
        key = (HISTOGRAM, name, _label_key(labels))
        with self._lock:
            if number is None:
                return self._invalid_call()
            if self._closed or self._live_observations >= self.max_observations:
                self._dropped += 1
                return _DROPPED
            entry = self._live.get(key)
            if entry is None:
                if len(self._live) >= self.max_series:
                    self._dropped += 1
                    return _DROPPED
                self._live[key] = [_labels_from_key(key[2]), [number], 1]
            else:
                entry[1].append(number)
                entry[2] += 1
            self._live_observations += 1
        return _KEPT

    observe = record_histogram

    def _invalid_call(self) -> Recorded:
        # under self._lock
        self._invalid += 1
        if not self._invalid_logged:
            self._invalid_logged = True
            log.warning("pg_observe: dropping a NaN or infinite metric value (counted in stats.invalid)")
        return _DROPPED

    @property
    def stats(self) -> MetricsStats:
        """A snapshot of the counters (see :class:`MetricsStats`)."""
        with self._lock:
            window = self._window
            pending = 0
            if window is not None:
                pending = len(window.series) if window.chunks is None else sum(
                    len(points) for points, _ in window.chunks[window.next:])
            return MetricsStats(series=len(self._live), pending=pending, sent=self._sent, rejected=self._rejected,
                                dropped=self._dropped, invalid=self._invalid, flushes=self._flushes,
                                failed_flushes=self._failed_flushes)

    # --- flush and close ---------------------------------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Waits until what was recorded before the call is stored (or refused). True if so.

        Blocks the calling thread (use :meth:`aflush` in asyncio code); the sending is still
        done by the background thread.
        """
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        with self._lock:
            if self._live:
                target = self._cut_seq + 1
            elif self._done_seq < self._cut_seq:
                target = self._cut_seq
            else:
                return True
            if self._thread is None or not self._thread.is_alive() or self._thread is threading.current_thread():
                return False
            self._flush_target = max(self._flush_target, target)
        self._wakeup.set()
        with self._lock:
            while self._done_seq < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._done_cond.wait(0.5 if remaining is None else min(remaining, 0.5))
            return self._lost_seq < target

    def close(self, timeout: float | None = 5.0) -> bool:
        """Sends what is left (waiting at most ``timeout``) and stops the thread.

        What is still unsent then is counted as dropped, as are later calls. The pool, if one
        was given, stays open: it is the application's. True if everything was stored.
        """
        with self._lock:
            if self._closed:
                return not self._live and self._window is None and self._lost_seq == 0
        flushed = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._stopping = True
            self._give_up_at = time.monotonic()
        self._wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(timeout or 0.0, 0.0) + 1.0)
        with contextlib.suppress(Exception):
            atexit.unregister(self._atexit)
        with self._lock:
            return flushed and self._lost_seq == 0

    async def aflush(self, timeout: float | None = 5.0) -> bool:
        """:meth:`flush` for asyncio code: waits in a worker thread, not on the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = 5.0) -> bool:
        """:meth:`close` for asyncio code."""
        return await asyncio.to_thread(self.close, timeout)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.close(timeout=self.shutdown_timeout)

    def __enter__(self) -> MetricsRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MetricsRecorder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- the background thread ----------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0  # failed attempts at the current window
        next_tick = time.monotonic() + self.flush_interval
        while True:
            if attempt:
                self._backoff(attempt - 1)
            else:
                self._wait(next_tick)
            with self._lock:
                now = time.monotonic()
                if self._window is None and self._live and (
                        now >= next_tick or self._flush_target > self._done_seq or self._stopping):
                    self._cut()
                if now >= next_tick:
                    next_tick = now + self.flush_interval
                window = self._window
            if window is not None:
                try:
                    attempt = 0 if self._deliver(window) else attempt + 1
                except Exception:  # a bug of ours must not stop the thread: the window is lost
                    log.warning("pg_observe: error in the metrics thread", exc_info=True)
                    attempt = 0
                    with self._lock:
                        self._dropped += window.unsent_calls()
                        self._finish(window)
            with self._lock:
                if self._stopping and ((self._window is None and not self._live) or self._give_up()):
                    self._abandon()
                    break
        self._close_conn()

    def _cut(self) -> None:
        # under self._lock: the live table becomes the window to send, stamped now
        self._cut_seq += 1
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self._window = _Window(self._cut_seq, self._live, stamp)
        self._live = {}
        self._live_observations = 0

    def _finish(self, window: _Window) -> None:
        # under self._lock
        self._window = None
        self._done_seq = window.seq
        self._done_cond.notify_all()

    def _give_up(self) -> bool:
        return self._give_up_at is not None and time.monotonic() >= self._give_up_at

    def _abandon(self) -> None:
        # under self._lock: closing and the time is up; what is left is lost (and flush() told so)
        lost = 0
        if self._window is not None:
            lost += self._window.unsent_calls()
            self._lost_seq = self._window.seq
            self._finish(self._window)
        if self._live:
            lost += sum(entry[2] for entry in self._live.values())
            self._live = {}
            self._live_observations = 0
            self._cut_seq += 1
            self._lost_seq = self._done_seq = self._cut_seq
            self._done_cond.notify_all()
        self._dropped += lost

    def _wait(self, deadline: float) -> None:
        while True:
            with self._lock:
                if self._stopping or (self._flush_target > self._done_seq):
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.wait(remaining)
            self._wakeup.clear()

    def _backoff(self, attempt: int) -> None:
        ceiling = min(self.backoff_max, self.backoff_min * (2 ** min(attempt, 30)))
        delay = random.uniform(ceiling / 2, ceiling)
        deadline = time.monotonic() + delay
        while True:
            with self._lock:
                if self._flush_target > self._done_seq or self._stopping:
                    deadline = min(deadline, time.monotonic() + min(0.25, delay))
                if self._stopping and self._give_up():
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.wait(min(remaining, 0.25))
            self._wakeup.clear()

    def _serialise(self, window: _Window) -> None:
        """The window's series as chunks of JSON points (in this thread, not the caller's)."""
        chunks: list[tuple[list[str], int]] = []
        points: list[str] = []
        calls = invalid = 0
        common: dict[str, Any] = {"timestamp": window.timestamp, "environment": self.environment}
        if self.service is not None:
            common["service"] = self.service
        for (kind, name, _), (labels, value, count) in window.series.items():
            point = {"metric_name": name, "metric_type": kind, "labels": labels, **common}
            if kind == HISTOGRAM:
                point["values"] = value
            elif math.isfinite(value):
                point["metric_value"] = value
            else:  # a counter sum beyond double
                invalid += count
                continue
            try:
                points.append(json.dumps(point, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
            except ValueError:  # a non-finite float hidden in a float subclass of a label
                invalid += count
                continue
            calls += count
            if len(points) >= self.batch_size:
                chunks.append((points, calls))
                points, calls = [], 0
        if points:
            chunks.append((points, calls))
        with self._lock:
            window.chunks = chunks
            window.series = {}
            self._invalid += invalid

    def _deliver(self, window: _Window) -> bool:
        """One attempt at storing the rest of the window. False if the database is unavailable."""
        if window.chunks is None:
            self._serialise(window)
        assert window.chunks is not None
        while window.next < len(window.chunks):
            points, _ = window.chunks[window.next]
            try:
                sent, rejected = self._store(points)
            except Exception as error:  # transient: keep the window, try again later
                with self._lock:
                    self._failed_flushes += 1
                if not self._outage_logged:
                    self._outage_logged = True
                    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                    log.warning("pg_observe: cannot store metrics (%s: %s); retrying in the background",
                                type(error).__name__, first)
                self._close_conn()
                return False
            with self._lock:
                self._sent += sent
                self._rejected += rejected
                window.next += 1
        if self._outage_logged:
            self._outage_logged = False
            log.warning("pg_observe: storing metrics again")
        with self._lock:
            if window.chunks:
                self._flushes += 1
            self._finish(window)
        return True

    def _store(self, points: list[str]) -> tuple[int, int]:
        """(accepted, rejected) as record_metrics counts them. Raises only transient errors."""
        if not points:
            return 0, 0
        try:
            with self._connection() as conn:
                rows = conn.cursor(row_factory=tuple_row).execute(
                    _RECORD_SQL, ("[" + ",".join(points) + "]",)).fetchall()
            return sum(r[0] or 0 for r in rows), sum(r[1] or 0 for r in rows)
        except Exception as error:
            if _transient(error):
                raise
            if len(points) == 1:
                log.warning("pg_observe: the database refused a metric point: %s", str(error).strip()[:500])
                return 0, 1
        middle = len(points) // 2
        first = self._store(points[:middle])
        second = self._store(points[middle:])
        return first[0] + second[0], first[1] + second[1]

    # --- the thread's connection ---------------------------------------------------------------------

    def _connection(self) -> Any:
        pool = self._pool
        if isinstance(pool, ConnectionPool) and not pool.closed:
            return pool.connection(timeout=self.pool_timeout)
        # a DSN, an async pool (its connections belong to its event loop), or a closed pool
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conninfo, kwargs = self._direct_params()
            conn = self._conn = psycopg.connect(conninfo, **kwargs)
        return _Borrowed(conn)

    def _direct_params(self) -> tuple[str, dict[str, Any]]:
        if self._pool is not None:
            conninfo, kwargs = self._pool.conninfo, dict(self._pool.kwargs or {})
        else:
            conninfo, kwargs = self._dsn or "", {}
        return own_connection_params(conninfo, kwargs, connect_timeout=self.connect_timeout,
                                     application_name="pg_observe metrics")

    def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
