"""The client against a real database: real exceptions in, rows out (the basics)."""

from __future__ import annotations

import json

import pg_observe
import psycopg
from psycopg_pool import ConnectionPool


def _fail_deep(n: int) -> None:
    if n == 0:
        raise KeyError("missing order 12345")
    _fail_deep(n - 1)


def test_capture_exception_stores_type_message_frames_and_context(dsn: str) -> None:
    with pg_observe.init_error_tracker(dsn, environment="test", release="1.2.3", service="api") as tracker:
        try:
            _fail_deep(3)
        except KeyError as error:
            event_id = tracker.capture_exception(error, context={"user_id": 7})
        assert isinstance(event_id, str) and len(event_id) == 32
        assert tracker.flush(10)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT exception_type, message, environment, release_version, service, context->>'user_id',"
            " jsonb_array_length(frames), frames->-1->>'function', frames->-1->>'in_app', stack_trace"
            " FROM monitoring.tb_error_occurrence WHERE event_id = %s::uuid",
            (event_id,),
        ).fetchone()
    assert row is not None
    exc_type, message, env, release, service, user_id, n_frames, last_fn, in_app, stack = row
    assert exc_type == "KeyError"
    assert message == "'missing order 12345'"
    assert (env, release, service, user_id) == ("test", "1.2.3", "api", "7")
    assert n_frames == 5  # this test, then _fail_deep four times
    assert last_fn == "_fail_deep"
    assert in_app == "true"
    assert stack.startswith("Traceback (most recent call last)")
    assert stack.rstrip().endswith("KeyError: 'missing order 12345'")


def test_same_error_twice_is_one_group(dsn: str) -> None:
    with pg_observe.init_error_tracker(dsn, environment="test") as tracker:
        for order in (1, 2):
            try:
                raise ValueError(f"order {order} not found")
            except ValueError as error:
                tracker.capture_exception(error)
        assert tracker.flush(10)
    with psycopg.connect(dsn) as conn:
        groups = conn.execute(
            "SELECT occurrence_count FROM monitoring.error_groups WHERE error_type = 'ValueError'"
        ).fetchall()
    assert groups == [(2,)]


def test_pool_and_callers_transaction(dsn: str) -> None:
    """With conn= the capture is part of the caller's transaction: rolled back with it."""
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        tracker = pg_observe.init_error_tracker(pool, environment="test")
        try:
            raise RuntimeError("kept")
        except RuntimeError as error:
            tracker.capture_exception(error)
        with psycopg.connect(dsn) as conn:
            try:
                raise RuntimeError("rolled back")
            except RuntimeError as error:
                tracker.capture_exception(error, conn=conn)
            conn.rollback()
        with psycopg.connect(dsn) as conn:
            conn.execute("SELECT 1")  # a transaction of the caller's is open
            try:
                raise RuntimeError("committed with the caller")
            except RuntimeError as error:
                tracker.capture_exception(error, conn=conn)
            conn.commit()
        assert tracker.flush(10)
        tracker.close()
        with pool.connection() as conn:
            messages = [r[0] for r in conn.execute("SELECT message FROM monitoring.errors ORDER BY 1").fetchall()]
    assert messages == ["committed with the caller", "kept"]


def test_capture_event_writes_now_and_returns_the_occurrence(dsn: str) -> None:
    with pg_observe.init_error_tracker(dsn, environment="test") as tracker:
        occurrence_id = tracker.capture_event({"exception_type": "FlatError", "message": "flat shape",
                                               "stack_trace": "Traceback (most recent call last):\n"
                                                              '  File "app.py", line 3, in main\nFlatError: x\n'})
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT exception_type, environment FROM monitoring.tb_error_occurrence"
                           " WHERE occurrence_id = %s", (occurrence_id,)).fetchone()
    assert row == ("FlatError", "production")  # a prebuilt event is stored as it is


def test_event_from_exception_marks_library_frames_not_in_app() -> None:
    try:
        json.loads("{")
    except json.JSONDecodeError as error:
        event = pg_observe.event_from_exception(error)
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    flags = {f["filename"]: f["in_app"] for f in frames}
    assert flags["test_client.py"] is True
    assert flags["decoder.py"] is False
    assert frames[-1]["module"] == "json.decoder"
    assert event["platform"] == "python" and len(event["event_id"]) == 32
