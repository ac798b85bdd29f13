"""The capture queue with commits and several connections: the client's queue_error (sync and
async), the worker draining it, drainers sharing it without double capture, a drainer killed
mid-batch losing nothing, the committing procedure, and bad input through the queue."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pg_observe
import psycopg
import pytest
from pg_observe.worker import NotificationWorker
from test_notifications import wait_for


def count(conn: psycopg.Connection, sql: str, params: tuple = ()) -> int:
    return int(conn.execute(sql, params).fetchone()[0])


def test_client_queue_error_returns_the_event_id_and_groups_later(dsn: str) -> None:
    tracker = pg_observe.init_error_tracker(dsn, environment="queue-test")
    try:
        given = uuid.uuid4()
        assert tracker.queue_error({"exception_type": "QueuedByClient", "message": "one",
                                    "event_id": given.hex}) == given
        other = tracker.queue_error({"exception_type": "QueuedByClient", "message": "two"})
        assert isinstance(other, uuid.UUID) and other != given
    finally:
        tracker.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert count(conn, "SELECT count(*) FROM monitoring.tb_error_occurrence") == 0
        assert count(conn, "SELECT monitoring.process_error_queue()") == 2
        assert sorted(r[0] for r in conn.execute("SELECT event_id FROM monitoring.tb_error_occurrence")) == \
            sorted([given, other])


def test_async_client_queue_error(dsn: str) -> None:
    async def run() -> uuid.UUID:
        tracker = pg_observe.init_async_error_tracker(dsn, environment="queue-test")
        try:
            return await tracker.queue_error({"exception_type": "QueuedAsync", "message": "async"})
        finally:
            await tracker.close()

    event_id = asyncio.run(run())
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert count(conn, "SELECT monitoring.process_error_queue()") == 1
        assert count(conn, "SELECT count(*) FROM monitoring.tb_error_occurrence WHERE event_id = %s", (event_id,)) == 1


def test_queue_error_in_the_callers_transaction_is_undone_with_it(dsn: str) -> None:
    tracker = pg_observe.init_error_tracker(dsn)
    try:
        with psycopg.connect(dsn) as conn:
            tracker.queue_error({"exception_type": "RolledBack"}, conn=conn)
            conn.rollback()
            tracker.queue_error({"exception_type": "Committed"}, conn=conn)
            conn.commit()
    finally:
        tracker.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert [r[0] for r in conn.execute("SELECT event ->> 'exception_type' FROM monitoring.error_queue")] == \
            ["Committed"]


def test_worker_captures_queued_events_within_a_second(dsn: str) -> None:
    worker = NotificationWorker(dsn, interval=0.2, name="queue-test-worker")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.monotonic()
            conn.execute("SELECT monitoring.queue_error('{\"exception_type\": \"WorkerDrained\"}')")
            assert wait_for(lambda: count(conn, "SELECT count(*) FROM monitoring.tb_error_occurrence"
                                                " WHERE exception_type = 'WorkerDrained'") == 1, 5)
            assert time.monotonic() - started < 2.0
            assert count(conn, "SELECT count(*) FROM monitoring.error_queue") == 0
    finally:
        worker.stop()
        thread.join(5)
    assert worker.totals.queued_errors == 1


def test_drainers_share_the_queue_without_capturing_twice(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT monitoring.queue_error(jsonb_build_object("
                     "'exception_type', 'Shared', 'message', 'n ' || i)) FROM generate_series(1, 600) i")
    taken: list[int] = []
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                while n := count(c, "SELECT monitoring.process_error_queue(25)"):
                    taken.append(n)
        except BaseException as exc:   # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(taken) == 600
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert count(conn, "SELECT count(*) FROM monitoring.tb_error_occurrence WHERE exception_type = 'Shared'") == 600
        assert count(conn, "SELECT count(DISTINCT event_id) FROM monitoring.tb_error_occurrence") == 600
        assert count(conn, "SELECT sum(occurrence_count) FROM monitoring.error_groups"
                           " WHERE error_type = 'Shared'") == 600


def test_a_drainer_killed_mid_batch_loses_nothing(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT monitoring.queue_error(jsonb_build_object("
                     "'exception_type', 'Killed', 'message', 'n ' || i)) FROM generate_series(1, 50) i")
        victim = psycopg.connect(dsn)
        victim.execute("SELECT monitoring.process_error_queue()")   # taken, captured, not committed
        other_drainer = count(conn, "SELECT monitoring.process_error_queue()")
        assert other_drainer == 0, "the batch is held by the first drainer: SKIP LOCKED passes it by"
        conn.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):
            victim.execute("SELECT 1")
        victim.close()
        assert count(conn, "SELECT count(*) FROM monitoring.error_queue") == 50
        assert count(conn, "SELECT count(*) FROM monitoring.tb_error_occurrence") == 0
        assert count(conn, "SELECT monitoring.process_error_queue()") == 50
        assert count(conn, "SELECT count(*) FROM monitoring.tb_error_occurrence WHERE exception_type = 'Killed'") == 50


def test_drain_error_queue_commits_batch_by_batch(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT monitoring.queue_error(jsonb_build_object("
                     "'exception_type', 'Drained', 'message', 'n ' || i)) FROM generate_series(1, 35) i")
        conn.execute("CALL monitoring.drain_error_queue(50, 10)")
        assert count(conn, "SELECT count(*) FROM monitoring.error_queue") == 0
        assert count(conn, "SELECT count(*) FROM monitoring.tb_error_occurrence WHERE exception_type = 'Drained'") == 35
        # inside a transaction block a committing procedure is refused: nothing half done
        with pytest.raises(psycopg.errors.InvalidTransactionTermination):
            with conn.transaction():
                conn.execute("CALL monitoring.drain_error_queue()")


@pytest.mark.parametrize(
    ("event", "check_sql", "expected"),
    [
        ({"exception_type": "Huge", "message": "m" * 10_000_000},
         "SELECT length(message) < 9000 AND message LIKE '%truncated 9991808 characters]' FROM"
         " monitoring.tb_error_occurrence WHERE exception_type = 'Huge'", True),
        ({"exception_type": "Future", "timestamp": "2099-01-01T00:00:00Z"},
         "SELECT occurred_at < now() + interval '1 minute' AND client_timestamp = '2099-01-01T00:00:00Z'"
         " FROM monitoring.tb_error_occurrence WHERE exception_type = 'Future'", True),
        ({"exception_type": "Epoch", "timestamp": 0},
         "SELECT occurred_at > now() - interval '1 hour' AND client_timestamp = 'epoch'"
         " FROM monitoring.tb_error_occurrence WHERE exception_type = 'Epoch'", True),
        ({"exception_type": "Wrapped", "context": "just text"},
         "SELECT context FROM monitoring.tb_error_occurrence WHERE exception_type = 'Wrapped'", {"value": "just text"}),
        ({"message": "no type at all", "exception_type": None},
         "SELECT exception_type FROM monitoring.tb_error_occurrence WHERE message = 'no type at all'", "Error"),
        ({"exception_type": "Hostile'); DROP TABLE monitoring.error_queue; --", "context": {"password": "hunter2"}},
         "SELECT context ->> 'password' FROM monitoring.tb_error_occurrence WHERE exception_type LIKE 'Hostile%'",
         "[Filtered]"),
    ],
    ids=["10MB-message", "2099", "1970", "non-object-context", "missing-type", "hostile-and-secret"],
)
def test_bad_input_through_the_queue_is_repaired_not_lost(dsn: str, event: dict, check_sql: str, expected) -> None:
    tracker = pg_observe.init_error_tracker(dsn)
    try:
        tracker.queue_error(event)
    finally:
        tracker.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert count(conn, "SELECT monitoring.process_error_queue()") == 1
        assert count(conn, "SELECT count(*) FROM monitoring.error_queue_failed") == 0
        assert conn.execute(check_sql).fetchone()[0] == expected


def test_nul_and_non_objects_are_refused_at_the_door(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UntranslatableCharacter):
            conn.execute("SELECT monitoring.queue_error(%s::jsonb)", ('{"message": "a\\u0000b"}',))
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT monitoring.queue_error(%s::jsonb)", ('{"message": ',))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be a JSON object, got string"):
            conn.execute("""SELECT monitoring.queue_error('"text"')""")
        assert count(conn, "SELECT count(*) FROM monitoring.error_queue") == 0
