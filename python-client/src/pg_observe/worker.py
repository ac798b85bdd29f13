"""The worker: drains the error capture queue and wakes the database's dispatcher.

All logic is in the database (monitoring.process_error_queue(), monitoring.dispatch_notifications()).
This loop only LISTENs on the channel the capture notifies, and on every wake-up and on a short
timer (for retries that come due and as a safety net for a lost notification) captures what
queue_error() queued, then CALLs the dispatcher; it reconnects with backoff when the database
goes away. Killing it at any moment loses nothing: a batch of queued events being captured is
undone with its transaction, and a claimed message is taken again by the next dispatcher once
its claim expires.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

import psycopg

CHANNEL = "pg_observe_notification"
log = logging.getLogger("pg_observe.worker")


@dataclass
class DispatchTotals:
    """What the worker's dispatcher calls reported since it started."""

    calls: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    queued_errors: int = 0


class NotificationWorker:
    """LISTEN for queued notifications; capture queued error events and call
    monitoring.dispatch_notifications().

    ``interval`` bounds the time between two calls without a wake-up (seconds);
    ``max_messages`` bounds one call (messages, or queued events); ``name`` labels the dispatcher in the delivery log.
    """

    def __init__(
        self,
        dsn: str,
        *,
        interval: float = 1.0,
        max_messages: int = 1000,
        name: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.interval = max(0.05, float(interval))
        self.max_messages = max(1, int(max_messages))
        self.name = name or f"worker@{socket.gethostname()}/{os.getpid()}"
        self.totals = DispatchTotals()
        self._queue_exists = True
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask run() to return after the current dispatcher call."""
        self._stop.set()

    def drain_errors_once(self, conn: psycopg.Connection, max_seconds: float = 5.0) -> int:
        """Captures queued error events, batch after batch (each its own transaction), until
        the queue is empty or ``max_seconds`` have passed (the dispatcher's turn comes even
        under constant load); returns how many. An extension older than the queue has none.
        A failing batch is logged and left queued: it must not stop the notifications."""
        if not self._queue_exists:
            return 0
        total = 0
        deadline = time.monotonic() + max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                row = conn.execute("SELECT monitoring.process_error_queue(%s)", (self.max_messages,)).fetchone()
            except psycopg.errors.UndefinedFunction:
                self._queue_exists = False
                log.info("no error capture queue in this database (pg_observe older than 0.8.0)")
                break
            except psycopg.errors.InsufficientPrivilege:
                self._queue_exists = False
                log.warning("this role may not process the error capture queue (grant observe_dispatcher);"
                            " pg_cron's job pg_observe_error_queue is left to do it")
                break
            except psycopg.Error as error:
                if conn.broken:
                    raise   # the connection is gone: run() reconnects
                log.warning("capturing queued error events failed (%s: %s); they stay queued",
                            type(error).__name__, str(error).strip())
                break
            taken = int(row[0] or 0) if row else 0
            total += taken
            if taken < self.max_messages:
                break
        self.totals.queued_errors += total
        if total:
            log.info("captured %d queued error events", total)
        return total

    def dispatch_once(self, conn: psycopg.Connection) -> int:
        """One dispatcher call; returns how many messages it sent."""
        row = conn.execute("CALL monitoring.dispatch_notifications(%s, %s)", (self.max_messages, self.name)).fetchone()
        sent, failed, dead = (int(v or 0) for v in row) if row else (0, 0, 0)
        self.totals.calls += 1
        self.totals.sent += sent
        self.totals.failed += failed
        self.totals.dead += dead
        if sent or failed or dead:
            log.info("dispatched: %d sent, %d failed, %d dead", sent, failed, dead)
        return sent

    def run(self) -> None:
        """Run until stop() is called; reconnects with exponential backoff (up to 30 s)."""
        backoff = 0.5
        while not self._stop.is_set():
            try:
                # autocommit: the dispatcher is a procedure that commits between its steps
                with psycopg.connect(self.dsn, autocommit=True, application_name="pg-observe worker") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    backoff = 0.5
                    self._serve(conn)
            except psycopg.OperationalError as exc:
                log.warning("database unavailable (%s); retrying in %.1f s", str(exc).strip(), backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _serve(self, conn: psycopg.Connection) -> None:
        while not self._stop.is_set():
            self.drain_errors_once(conn)   # first: the captures queue their notifications
            self.dispatch_once(conn)
            deadline = time.monotonic() + self.interval
            # Wake-ups that arrived while dispatching are consumed here at once; their
            # messages were either sent already or are sent by the next call.
            while not self._stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                woken = False
                for _ in conn.notifies(timeout=min(remaining, 0.5), stop_after=1):
                    woken = True
                if woken:
                    break


def run_worker(dsn: str, **options: object) -> NotificationWorker:
    """Run a NotificationWorker in the calling thread until SIGINT/SIGTERM (see the CLI)."""
    worker = NotificationWorker(dsn, **options)  # type: ignore[arg-type]
    worker.run()
    return worker
