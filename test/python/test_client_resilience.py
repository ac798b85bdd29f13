"""The background sender when the database is not there: a real closed port, a real missing database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pg_observe
import psycopg
import pytest

CLOSED_PORT = "host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=2"


def test_bounded_queue_drops_newest_and_never_raises() -> None:
    tracker = pg_observe.init_error_tracker(CLOSED_PORT, max_queue=5, batch_size=2, backoff_min=0.05)
    slowest = 0.0
    for i in range(50):
        start = time.perf_counter()
        try:
            raise ValueError(f"order {i}")
        except ValueError as error:
            event_id = tracker.capture_exception(error, context={"i": i})
        slowest = max(slowest, time.perf_counter() - start)
        assert len(event_id) == 32
    assert slowest < 0.05, f"a capture took {slowest * 1000:.1f} ms"
    stats = tracker.stats
    assert stats.queued <= 5 and stats.dropped >= 45 and stats.sent == 0
    deadline = time.monotonic() + 5
    while tracker.stats.failed_batches == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tracker.stats.failed_batches >= 1  # it tried, the port is closed
    assert tracker.flush(0.3) is False
    assert tracker.close(0.3) is False
    stats = tracker.stats
    assert (stats.sent, stats.queued, stats.dropped) == (0, 0, 50)  # what was left is counted on close


def test_database_down_then_up(admin_dsn: str) -> None:
    dbname = f"pg_observe_client_late_{uuid.uuid4().hex[:8]}"
    dsn = admin_dsn.replace("dbname=postgres", f"dbname={dbname}")
    tracker = pg_observe.init_error_tracker(dsn, environment="late", backoff_min=0.05, backoff_max=1.0)
    try:
        ids = []
        for i in range(3):
            try:
                raise ConnectionError(f"upstream {i} down")
            except ConnectionError as error:
                ids.append(tracker.capture_exception(error))
        deadline = time.monotonic() + 10
        while tracker.stats.failed_batches < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tracker.stats.failed_batches >= 2 and tracker.stats.queued == 3  # kept while the database is away
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        time.sleep(0.3)  # the database is there, the extension is not yet: still kept
        assert tracker.stats.queued == 3 and tracker.stats.sent == 0
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute("CREATE EXTENSION pg_observe CASCADE")
        assert tracker.flush(15)
        stats = tracker.stats
        assert (stats.sent, stats.queued, stats.dropped) == (3, 0, 0)
        with psycopg.connect(dsn) as conn:
            stored = {r[0].hex for r in conn.execute("SELECT event_id FROM monitoring.tb_error_occurrence")}
        assert stored == set(ids)
    finally:
        tracker.close(1)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def test_connection_lost_while_running(dsn: str, admin_dsn: str) -> None:
    """The sender's own connection is terminated by the server: the next batch reconnects."""
    with pg_observe.init_error_tracker(dsn, backoff_min=0.05) as tracker:
        tracker.capture_message("before")
        assert tracker.flush(10)
        dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                   " WHERE datname = %s AND application_name = 'pg_observe client'",
                                   (dbname,)).fetchone()[0]
        assert killed == 1
        tracker.capture_message("after")
        assert tracker.flush(10)
        assert tracker.stats.sent == 2
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM monitoring.tb_error_occurrence").fetchone()[0] == 2


def test_refused_event_does_not_block_the_others(dsn: str) -> None:
    """An event the database refuses (here: a JSON array where an object is needed) is counted, not retried."""
    with pg_observe.init_error_tracker(dsn, flush_interval=30) as tracker:
        good = [tracker.capture_message(f"good {i}") for i in range(4)]
        tracker._sender.put(["not", "an", "object"])  # what a buggy prebuilt event could be
        good.append(tracker.capture_message("good 4"))
        assert tracker.flush(10)
        stats = tracker.stats
        assert (stats.sent, stats.rejected) == (5, 1)
    with psycopg.connect(dsn) as conn:
        stored = {r[0].hex for r in conn.execute("SELECT event_id FROM monitoring.tb_error_occurrence")}
    assert stored == set(good)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_batches(dsn: str, batch_size: int) -> None:
    with pg_observe.init_error_tracker(dsn, batch_size=batch_size) as tracker:
        for i in range(20):
            tracker.capture_message(f"batched {i % 3}")
        assert tracker.flush(10)
        assert tracker.stats.sent == 20
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM monitoring.tb_error_occurrence").fetchone()[0] == 20


def test_atexit_sends_what_is_left(dsn: str) -> None:
    """A process that captures and exits without flush(): the atexit hook sends the queue."""
    script = ("import sys, pg_observe\n"
              "tracker = pg_observe.init_error_tracker(sys.argv[1], flush_interval=60)\n"
              "try:\n    1 / 0\nexcept ZeroDivisionError as error:\n    tracker.capture_exception(error)\n"
              "tracker.capture_message('last words')\n")
    subprocess.run([sys.executable, "-c", script, dsn], check=True, timeout=30)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT exception_type, message FROM monitoring.tb_error_occurrence ORDER BY 1").fetchall()
    assert rows == [("Error", "last words"), ("ZeroDivisionError", "division by zero")]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_sender(dsn: str) -> None:
    """A tracker made before fork (a preloading server) still captures in the child."""
    with pg_observe.init_error_tracker(dsn) as tracker:
        tracker.capture_message("from the parent")
        assert tracker.flush(10)
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status only
            ok = False
            try:
                tracker.capture_message("from the child")
                ok = tracker.flush(10) and tracker.stats.sent == 1
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        tracker.capture_message("from the parent again")  # the parent's connection was left alone
        assert tracker.flush(10) and tracker.stats.sent == 2
    with psycopg.connect(dsn) as conn:
        messages = {r[0] for r in conn.execute("SELECT message FROM monitoring.tb_error_occurrence")}
    assert messages == {"from the parent", "from the child", "from the parent again"}
