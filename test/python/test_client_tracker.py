"""ErrorTracker and AsyncErrorTracker against a real database: every public method, rows checked."""

from __future__ import annotations

import asyncio
import datetime
import time

import pg_observe
import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool


class PaymentError(Exception):
    pass


def _charge(order_id: int) -> None:
    raise ConnectionError(f"gateway timeout for order {order_id}")


def _process(order_id: int) -> None:
    try:
        _charge(order_id)
    except ConnectionError as error:
        raise PaymentError("payment failed") from error


def _occurrence(dsn: str, event_id: str) -> dict:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        row = conn.execute("SELECT o.*, g.error_fingerprint FROM monitoring.tb_error_occurrence o"
                           " JOIN monitoring.tb_error_log g USING (error_id) WHERE o.event_id = %s::uuid",
                           (event_id,)).fetchone()
    assert row is not None, f"event {event_id} not stored"
    return row


def _group(dsn: str, fingerprint: str) -> dict:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM monitoring.tb_error_log WHERE error_fingerprint = %s",
                            (fingerprint,)).fetchone()


def test_capture_exception_full_event(dsn: str) -> None:
    """Chained exceptions, frames, context, tags, user, release, environment, service, OTel ids."""
    tracer = TracerProvider().get_tracer("test_client_tracker")
    with pg_observe.init_error_tracker(dsn, environment="staging", release="2.4.1", service="billing",
                                       tags={"region": "eu"}) as tracker:
        with tracer.start_as_current_span("checkout") as span:
            try:
                _process(42)
            except PaymentError:
                event_id = tracker.capture_exception(  # error=None: the exception being handled
                    context={"order_id": 42, "items": [1, 2], "password": "hunter2"},
                    tags={"area": "payments"}, user={"id": "u-9", "email": "u9@example.com"},
                    fingerprint=["payment_timeout_error"])
            span_context = span.get_span_context()
        assert tracker.flush(10)
        assert tracker.stats.sent == 1 and tracker.stats.queued == 0
    row = _occurrence(dsn, event_id)
    assert row["exception_type"] == f"{__name__}.PaymentError"
    assert row["message"] == "payment failed"
    chain = row["exception_chain"]
    assert [e["type"] for e in chain] == ["ConnectionError", f"{__name__}.PaymentError"]  # cause first
    assert chain[0]["value"] == "gateway timeout for order 42"
    assert chain[0]["stacktrace"]["frames"][-1]["function"] == "_charge"
    assert [f["function"] for f in row["frames"]][-2:] == ["test_capture_exception_full_event", "_process"]
    assert all(f["in_app"] for f in row["frames"])
    assert row["frames"][-1]["context_line"] == 'raise PaymentError("payment failed") from error'
    assert "The above exception was the direct cause" in row["stack_trace"]
    assert row["context"]["order_id"] == 42 and row["context"]["items"] == [1, 2]
    assert row["context"]["password"] == "[Filtered]"  # scrubbed by the database
    assert row["tags"] == {"region": "eu", "area": "payments"}
    assert row["user_info"] == {"id": "u-9", "email": "u9@example.com"}
    assert (row["environment"], row["release_version"], row["service"]) == ("staging", "2.4.1", "billing")
    assert row["level"] == "error" and row["server_name"]
    assert row["trace_id"] == format(span_context.trace_id, "032x")
    assert row["span_id"] == format(span_context.span_id, "016x")
    assert row["context"]["contexts"]["trace"]["trace_id"] == row["trace_id"]
    assert row["error_fingerprint"] == "payment_timeout_error"


def test_no_trace_ids_without_a_span(dsn: str) -> None:
    with pg_observe.init_error_tracker(dsn) as tracker:
        event_id = tracker.capture_message("no span here", level="warning")
        assert tracker.flush(10)
    row = _occurrence(dsn, event_id)
    assert (row["trace_id"], row["span_id"], row["level"], row["message"]) == (None, None, "warning", "no span here")


def test_capture_message_and_workflow_sync(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=2) as pool, \
            pg_observe.init_error_tracker(pool, environment="test", release="1.0") as tracker:
        event_id = tracker.capture_message("disk almost full", level="warning", context={"free_mb": 12},
                                           fingerprint="disk_full", tags={"host": "db1"}, user=17)
        assert tracker.flush(10)
        row = _occurrence(dsn, event_id)
        assert (row["message"], row["level"], row["context"], row["user_info"]) == \
            ("disk almost full", "warning", {"free_mb": 12}, {"id": "17"})

        group = tracker.resolve_error("disk_full", in_release="1.1")
        assert isinstance(group, pg_observe.ErrorGroup)
        assert (group.fingerprint, group.status, group.resolved_in_release) == ("disk_full", "resolved", "1.1")
        assert group.resolved_at is not None
        assert _group(dsn, "disk_full")["status"] == "resolved"

        group = tracker.unresolve_error("disk_full")
        assert (group.status, group.resolved_at) == ("unresolved", None)

        until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        group = tracker.ignore_error("disk_full", until=until, more_occurrences=5)
        assert group.status == "ignored" and group.ignored_until == until
        assert _group(dsn, "disk_full")["ignored_until_count"] == 6
        group = tracker.ignore_error("disk_full", until=datetime.timedelta(minutes=5))
        assert group.ignored_until > datetime.datetime.now(datetime.timezone.utc)

        group = tracker.assign_error("disk_full", "dev@example.com")
        assert group.assignee == "dev@example.com"
        assert _group(dsn, "disk_full")["assignee"] == "dev@example.com"
        assert tracker.assign_error(str(group.error_id), None).assignee is None  # by error id too


def test_unknown_fingerprint_is_a_clear_error(dsn: str) -> None:
    with pg_observe.init_error_tracker(dsn) as tracker:
        for call in (lambda: tracker.resolve_error("no_such_issue"), lambda: tracker.unresolve_error("no_such_issue"),
                     lambda: tracker.ignore_error("no_such_issue"),
                     lambda: tracker.assign_error("no_such_issue", "x")):
            with pytest.raises(pg_observe.ErrorGroupNotFound, match="no_such_issue") as info:
                call()
            assert isinstance(info.value, LookupError)
            assert isinstance(info.value.__cause__, psycopg.errors.NoDataFound)


def test_async_tracker_every_method(dsn: str) -> None:
    async def main() -> None:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
            tracker = pg_observe.init_error_tracker(pool, environment="async", service="worker")
            assert isinstance(tracker, pg_observe.AsyncErrorTracker)
            try:
                _process(7)
            except PaymentError as error:
                event_id = await tracker.capture_exception(error, context={"job": "charge"},
                                                           fingerprint=["async_payment"], user={"id": "a1"})
            message_id = await tracker.capture_message("queue lag high", level="warning", tags={"q": "mail"})
            assert isinstance(event_id, str) and len(event_id) == 32 and len(message_id) == 32
            assert await tracker.flush(10)
            assert tracker.stats.sent == 2

            row = _occurrence(dsn, event_id)
            assert row["exception_type"] == f"{__name__}.PaymentError" and len(row["exception_chain"]) == 2
            assert (row["environment"], row["service"], row["context"]["job"]) == ("async", "worker", "charge")
            assert _occurrence(dsn, message_id)["tags"] == {"q": "mail"}

            assert (await tracker.resolve_error(fingerprint="async_payment")).status == "resolved"
            assert (await tracker.unresolve_error("async_payment")).status == "unresolved"
            assert (await tracker.ignore_error(fingerprint="async_payment", more_occurrences=3)).status == "ignored"
            assert (await tracker.assign_error(fingerprint="async_payment", assignee="ops")).assignee == "ops"
            assert _group(dsn, "async_payment")["assignee"] == "ops"
            with pytest.raises(pg_observe.ErrorGroupNotFound):
                await tracker.resolve_error(fingerprint="missing")
            assert await tracker.close()

        # a DSN works as well; capture works without await too
        tracker = pg_observe.init_async_error_tracker(dsn, environment="async-dsn")
        try:
            raise ValueError("not awaited")
        except ValueError:
            event_id = tracker.capture_exception()
        assert await tracker.flush(10)
        assert (await tracker.resolve_error(_occurrence(dsn, event_id)["error_fingerprint"])).status == "resolved"
        await tracker.close()

    asyncio.run(main())


def test_sync_tracker_can_be_awaited(dsn: str) -> None:
    """Code written for the seeds awaits capture_exception; the sync tracker accepts that too."""
    with pg_observe.init_error_tracker(dsn) as tracker:
        async def handler() -> str:
            try:
                raise KeyError("k")
            except KeyError as error:
                return await tracker.capture_exception(error)

        event_id = asyncio.run(handler())
        assert tracker.flush(10)
    assert _occurrence(dsn, event_id)["exception_type"] == "KeyError"


def test_enqueue_event_and_flat_shape(dsn: str) -> None:
    with pg_observe.init_error_tracker(dsn, environment="test", service="importer") as tracker:
        event_id = tracker.enqueue_event({"exception_type": "ImportError", "message": "bad row\x00",
                                          "context": {"row": 3}, "trace_id": "a" * 32, "span_id": "b" * 16})
        assert tracker.flush(10)
    row = _occurrence(dsn, event_id)
    assert (row["exception_type"], row["message"], row["service"], row["environment"]) == \
        ("ImportError", "bad row\ufffd", "importer", "test")
    assert (row["trace_id"], row["span_id"]) == ("a" * 32, "b" * 16)


def test_repairs_nul_long_deep_unserialisable(dsn: str) -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class WeirdMessage(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    deep: dict = {}
    node = deep
    for _ in range(30):
        node["next"] = {}
        node = node["next"]
    circular: dict = {"name": "loop"}
    circular["self"] = circular
    context = {
        "nul\x00key": "a\x00b", "big": "x" * 100_000, "deep": deep, "obj": Unprintable(), "when":
        datetime.date(2024, 1, 2), "raw": b"\xffbytes\x00", "nan": float("nan"), "set": {1}, "circular": circular,
        "surrogate": "bad \udc80 text",
    }
    with pg_observe.init_error_tracker(dsn) as tracker:
        try:
            raise ValueError("nul \x00 in message " + "y" * 100_000)
        except ValueError as error:
            big_id = tracker.capture_exception(error, context=context)
        try:
            raise WeirdMessage()
        except WeirdMessage as error:
            weird_id = tracker.capture_exception(error)
        assert tracker.flush(10)
        assert tracker.stats.rejected == 0 and tracker.stats.internal_errors == 0
    row = _occurrence(dsn, big_id)
    assert row["message"].startswith("nul \ufffd in message yyy")
    ctx = row["context"]
    assert ctx["nul\ufffdkey"] == "a\ufffdb"
    assert 65536 < len(ctx["big"]) < 65600 and ctx["big"].endswith("characters]")
    depth, node = 0, ctx["deep"]
    while isinstance(node, dict):
        node, depth = node["next"], depth + 1
    assert node == "[depth limit]" and depth == 19
    assert ctx["obj"] == "<unrepresentable Unprintable>"
    assert ctx["when"] == "2024-01-02" and ctx["raw"] == "\ufffdbytes\ufffd" and ctx["nan"] == "nan"
    assert ctx["set"] == [1] and ctx["circular"]["self"] == "[circular reference]"
    assert ctx["surrogate"] == "bad \ufffd text"
    weird = _occurrence(dsn, weird_id)
    assert weird["exception_type"].endswith("<locals>.WeirdMessage")
    assert weird["message"] == "WeirdMessage()"  # str() raised: repr() instead


def test_a_failure_inside_capture_is_swallowed_and_a_best_effort_event_sent(dsn: str) -> None:
    class HostileDict(dict):
        def items(self):  # what the event builder walks
            raise RuntimeError("hostile")

    with pg_observe.init_error_tracker(dsn) as tracker:
        try:
            raise LookupError("with a hostile context")
        except LookupError as error:
            event_id = tracker.capture_exception(error, context=HostileDict(order=object()))
        assert event_id
        assert tracker.flush(10)
        assert tracker.stats.internal_errors == 1
    row = _occurrence(dsn, event_id)
    assert row["message"] == "with a hostile context" and row["exception_type"] == "LookupError"
    assert row["context"]["order"].startswith("<object object at")
    assert "LookupError: with a hostile context" in row["stack_trace"]


def test_nothing_to_capture_and_flush_close(dsn: str) -> None:
    tracker = pg_observe.init_error_tracker(dsn, flush_interval=30)  # nothing is sent unless asked
    assert tracker.capture_exception() == ""  # no exception being handled: nothing captured
    ids = [tracker.capture_message(f"message {i}") for i in range(3)]
    time.sleep(0.2)
    assert tracker.stats.queued == 3 and tracker.stats.sent == 0
    assert tracker.flush(10) and tracker.stats.sent == 3
    ids.append(tracker.capture_message("sent by close"))
    assert tracker.close(10)
    assert tracker.stats.sent == 4
    tracker.capture_message("after close")
    assert tracker.stats.dropped == 1
    with psycopg.connect(dsn) as conn:
        stored = {r[0].hex for r in conn.execute("SELECT event_id FROM monitoring.tb_error_occurrence").fetchall()}
    assert stored == set(ids)


def test_unknown_option_and_wrong_target() -> None:
    with pytest.raises(TypeError, match="max_queu"):
        pg_observe.init_error_tracker("dbname=x", max_queu=3)
    with pytest.raises(TypeError):
        pg_observe.init_error_tracker(42)
    with pytest.warns(UserWarning, match="notification"):
        tracker = pg_observe.init_error_tracker("host=127.0.0.1 port=1", notification_channels=["email"])
    tracker.close(0)
