"""pg_observe.otel: the span exporter under the real OpenTelemetry SDK, and trace context."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
import warnings

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from pg_observe.otel import (
    PostgreSQLSpanExporter,
    async_set_trace_context,
    async_traced_transaction,
    json_value,
    set_trace_context,
    span_to_dict,
    traced_transaction,
)
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

LINKED = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1))


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _finished_spans(**resource: object) -> list:
    """Real SDK spans: a server root with a client child (event, link, error status)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.orders", "1.2.3")
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER, attributes={
        "http.method": "GET", "http.status_code": 200, "ratio": 0.25, "cached": False,
        "tags": ("a", "b"), "sizes": [1, 2, 3], "weights": [0.5, 1.5], "flags": [True, False],
        "nul": "a\x00b", "nan": float("nan"), "raw": b"\x00\xff",
    }):
        with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT, links=[
            Link(LINKED, {"link.reason": "retry of"}),
        ]) as child:
            child.add_event("rows fetched", {"db.rows": 3})
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.shutdown()
    return sorted(memory.get_finished_spans(), key=lambda span: span.start_time)


# --- conversions, without a database ----------------------------------------------------------------

def test_json_value_makes_every_value_storable() -> None:
    assert json_value(("a", 1, 2.5, True, None)) == ["a", 1, 2.5, True, None]
    assert json_value("a\x00b") == "a\ufffdb"
    assert json_value("bad \ud800 surrogate") == "bad \ufffd surrogate"
    assert json_value(b"\x00\xff") == "AP8="  # base64, as OTLP/JSON's bytesValue
    assert json_value(float("nan")) == "NaN"
    assert json_value(float("inf")) == "Infinity"
    assert json_value(-math.inf) == "-Infinity"
    assert json_value(2**64) == str(2**64)
    assert json_value(-(2**63)) == -(2**63)
    assert json_value({"k\x00": [b"x", {"n": float("-inf")}]}) == {"k\ufffd": ["eA==", {"n": "-Infinity"}]}
    assert json_value(_Unprintable()).startswith("<")  # repr() when str() raises
    assert json_value(frozenset({1})) == [1]
    deep: list = []
    node = deep
    for _ in range(100):
        node.append([])
        node = node[0]
    json.dumps(json_value(deep), allow_nan=False)  # cut, not a RecursionError


def test_span_to_dict_gives_the_flat_span_shape() -> None:
    root, child = _finished_spans(**{"service.name": "checkout", "deployment.environment": "staging"})
    flat_root = span_to_dict(root)
    flat_child = span_to_dict(child, environment="test", service="orders")
    json.dumps([flat_root, flat_child], allow_nan=False, ensure_ascii=False).encode("utf-8")

    assert flat_root["trace_id"] == trace.format_trace_id(root.context.trace_id)
    assert len(flat_root["trace_id"]) == 32 and len(flat_root["span_id"]) == 16
    assert flat_root["parent_span_id"] is None
    assert flat_child["parent_span_id"] == flat_root["span_id"]
    assert flat_child["trace_id"] == flat_root["trace_id"]
    assert flat_root["name"] == "GET /orders"
    assert (flat_root["kind"], flat_child["kind"]) == ("server", "client")
    assert flat_root["start_time_unix_nano"] == root.start_time
    assert flat_root["end_time_unix_nano"] == root.end_time
    assert flat_root["status_code"] == "unset" and flat_root["status_message"] is None
    assert (flat_child["status_code"], flat_child["status_message"]) == ("error", "timeout")
    assert flat_root["attributes"]["tags"] == ["a", "b"]
    assert flat_root["attributes"]["nul"] == "a\ufffdb"
    assert flat_root["attributes"]["nan"] == "NaN"
    assert flat_root["attributes"]["raw"] == "AP8="
    assert flat_child["events"] == [{"name": "rows fetched", "time_unix_nano": child.events[0].timestamp,
                                     "attributes": {"db.rows": 3}}]
    assert flat_child["links"] == [{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
                                    "trace_state": None, "attributes": {"link.reason": "retry of"}}]
    assert flat_root["resource"]["service.name"] == "checkout"
    assert flat_root["scope"] == {"name": "shop.orders", "version": "1.2.3"}
    assert "environment" not in flat_root and "service" not in flat_root  # the database reads the resource
    assert (flat_child["environment"], flat_child["service"]) == ("test", "orders")


def test_exporter_arguments() -> None:
    with pytest.raises(TypeError):
        PostgreSQLSpanExporter(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PostgreSQLSpanExporter("dbname=x", timeout=0)
    assert PostgreSQLSpanExporter("dbname=x").force_flush() is True
    assert PostgreSQLSpanExporter("dbname=x").export([]) == SpanExportResult.SUCCESS  # nothing to send


def test_export_fails_without_raising_when_the_database_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    exporter = PostgreSQLSpanExporter(f"host=127.0.0.1 port={_free_port()} dbname=x user=x", timeout=1.0)
    started = time.monotonic()
    assert exporter.export(_finished_spans()) == SpanExportResult.FAILURE
    assert time.monotonic() - started < 5
    assert exporter.stats.failed_batches == 1
    assert "cannot store spans" in caplog.text
    exporter.shutdown()
    assert exporter.export(_finished_spans()) == SpanExportResult.FAILURE  # after shutdown


# --- the exporter on the real cluster ----------------------------------------------------------------

def _spans(dsn: str, trace_id: str | None = None) -> list[dict]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM monitoring.spans WHERE %(t)s::text IS NULL OR trace_id = %(t)s ORDER BY start_time",
            {"t": trace_id},
        ).fetchall()


def test_batch_span_processor_stores_the_spans(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=2, open=True) as pool:
        exporter = PostgreSQLSpanExporter(pool)
        provider = TracerProvider(resource=Resource.create({"service.name": "checkout",
                                                            "deployment.environment": "staging"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        tracer = provider.get_tracer("shop.orders", "1.2.3")
        with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER, attributes={
            "http.method": "GET", "http.status_code": 200, "ratio": 0.25, "cached": False,
            "tags": ("a", "b"), "sizes": [1, 2, 3], "weights": [0.5, 1.5], "flags": [True, False],
            "nul": "a\x00b", "nan": float("nan"), "raw": b"\x00\xff",
        }) as root:
            time.sleep(0.01)
            with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                              links=[Link(LINKED, {"link.reason": "retry of"})]) as child:
                child.add_event("rows fetched", {"db.rows": 3})
                child.set_status(Status(StatusCode.ERROR, "timeout"))
        assert provider.force_flush(10_000)
        trace_id = trace.format_trace_id(root.get_span_context().trace_id)
        rows = _spans(dsn, trace_id)
        provider.shutdown()
    assert exporter.stats.accepted == 2 and exporter.stats.rejected == 0

    assert [row["operation_name"] for row in rows] == ["GET /orders", "SELECT orders"]
    stored_root, stored_child = rows
    assert stored_root["span_id"] == trace.format_span_id(root.get_span_context().span_id)
    assert stored_root["parent_span_id"] is None
    assert stored_child["span_id"] == trace.format_span_id(child.get_span_context().span_id)
    assert stored_child["parent_span_id"] == stored_root["span_id"]
    assert (stored_root["kind"], stored_child["kind"]) == ("server", "client")
    assert (stored_root["status_code"], stored_child["status_code"]) == (0, 2)
    assert stored_child["status_message"] == "timeout"
    assert stored_root["attributes"] == {
        "http.method": "GET", "http.status_code": 200, "ratio": 0.25, "cached": False,
        "tags": ["a", "b"], "sizes": [1, 2, 3], "weights": [0.5, 1.5], "flags": [True, False],
        "nul": "a\ufffdb", "nan": "NaN", "raw": "AP8=",
    }
    assert stored_child["events"][0]["name"] == "rows fetched"
    assert stored_child["events"][0]["attributes"] == {"db.rows": 3}
    assert stored_child["links"][0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert stored_child["links"][0]["span_id"] == "b7ad6b7169203331"
    expected_ms = (root.end_time - root.start_time) / 1e6
    assert stored_root["duration_ms"] == pytest.approx(expected_ms, abs=0.01)
    assert stored_root["duration_ms"] >= 10
    assert stored_root["start_time"].timestamp() == pytest.approx(root.start_time / 1e9, abs=1e-5)
    assert (stored_root["service"], stored_root["environment"]) == ("checkout", "staging")
    assert stored_root["resource"]["service.name"] == "checkout"
    assert stored_root["scope"] == {"name": "shop.orders", "version": "1.2.3"}

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        view = conn.execute("SELECT * FROM monitoring.traces WHERE trace_id = %s ORDER BY start_time",
                            (trace_id,)).fetchall()
    assert [(r["span_id"], r["parent_span_id"], r["status_code"], r["environment"]) for r in view] == [
        (r["span_id"], r["parent_span_id"], r["status_code"], r["environment"]) for r in rows
    ]


@pytest.mark.parametrize("kind", ["dsn", "connection", "autocommit_connection", "async_pool", "closed_pool"])
def test_every_kind_of_pool_or_dsn(dsn: str, kind: str) -> None:
    opened: list = []
    if kind == "dsn":
        target: object = dsn
    elif kind in ("connection", "autocommit_connection"):
        target = psycopg.connect(dsn, autocommit=kind == "autocommit_connection")
        opened.append(target)
    elif kind == "async_pool":
        target = AsyncConnectionPool(dsn, open=False)  # never opened: its conninfo is what counts
    else:
        target = ConnectionPool(dsn, min_size=1, open=True)
        target.close()  # closed by the application before the last batch: a connection of our own
    exporter = PostgreSQLSpanExporter(target, environment="test", service="billing")
    spans = _finished_spans()
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    if kind == "connection":
        assert target.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # committed
    rows = _spans(dsn, trace.format_trace_id(spans[0].context.trace_id))
    assert len(rows) == 2
    assert {(row["environment"], row["service"]) for row in rows} == {("test", "billing")}
    for conn in opened:
        assert not conn.closed  # shutdown() leaves what it was given open
        conn.close()


def test_a_span_sent_twice_is_stored_once(dsn: str) -> None:
    exporter = PostgreSQLSpanExporter(dsn)
    spans = _finished_spans()
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans[:1]) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert (exporter.stats.accepted, exporter.stats.duplicates) == (2, 1)
    assert len(_spans(dsn)) == 2


def test_exporter_reconnects_after_its_connection_is_killed(dsn: str) -> None:
    exporter = PostgreSQLSpanExporter(dsn)
    assert exporter.export(_finished_spans()) == SpanExportResult.SUCCESS
    with psycopg.connect(dsn, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'pg_observe span exporter' AND datname = current_database()"
        ).fetchone()[0]
    assert killed == 1
    assert exporter.export(_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert len(_spans(dsn)) == 4


def test_huge_int_and_infinity_attributes_are_stored(dsn: str) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("odd values\x00", attributes={
        "big": 2**70, "inf": float("inf"), "surrogate": "x\ud800y",
    }):
        pass
    exporter = PostgreSQLSpanExporter(dsn)
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()
    (row,) = _spans(dsn)
    assert row["operation_name"] == "odd values\ufffd"
    assert row["attributes"] == {"big": str(2**70), "inf": "Infinity", "surrogate": "x\ufffdy"}


# --- trace context -----------------------------------------------------------------------------------

def _settings(conn: psycopg.Connection) -> tuple[str, str]:
    row = conn.execute("SELECT coalesce(current_setting('pg_observe.trace_id', true), ''),"
                       " coalesce(current_setting('pg_observe.span_id', true), '')").fetchone()
    return row[0], row[1]


def _tracer() -> trace.Tracer:
    return TracerProvider().get_tracer("test")


def test_traced_transaction_sets_the_trace_for_the_transaction_only(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, _tracer().start_as_current_span("place order") as span:
        context = span.get_span_context()
        with traced_transaction(conn) as same:
            assert same is conn
            assert _settings(conn) == (trace.format_trace_id(context.trace_id),
                                       trace.format_span_id(context.span_id))
        assert _settings(conn) == ("", "")


def test_traced_transaction_without_a_span_is_a_plain_transaction(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        with traced_transaction(conn):
            assert _settings(conn) == ("", "")
            conn.execute("SELECT 1")


def test_set_trace_context_on_a_connection_and_a_cursor(dsn: str) -> None:
    tracer = _tracer()
    with psycopg.connect(dsn) as conn, tracer.start_as_current_span("outer") as outer:
        trace_id = set_trace_context(conn)  # not autocommit: this query opens the transaction
        assert trace_id == trace.format_trace_id(outer.get_span_context().trace_id)
        assert _settings(conn)[0] == trace_id
        conn.commit()
        assert _settings(conn) == ("", "")
        conn.rollback()
        with tracer.start_as_current_span("inner") as inner, conn.cursor() as cursor:
            assert set_trace_context(cursor) == trace_id
            assert _settings(conn)[1] == trace.format_span_id(inner.get_span_context().span_id)
        explicit = tracer.start_span("explicit")
        set_trace_context(conn, explicit)
        assert _settings(conn)[1] == trace.format_span_id(explicit.get_span_context().span_id)
        explicit.end()


def test_set_trace_context_sends_nothing_without_a_span_or_outside_a_transaction(dsn: str) -> None:
    closed = psycopg.connect(dsn)
    closed.close()
    assert set_trace_context(closed) is None  # no span: no query (a query would fail on it)
    with psycopg.connect(dsn, autocommit=True) as conn, _tracer().start_as_current_span("s"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert set_trace_context(conn) is None
        assert any(issubclass(w.category, RuntimeWarning) for w in caught)
        assert _settings(conn) == ("", "")
        with conn.transaction():
            with pytest.raises(psycopg.errors.DivisionByZero):
                conn.execute("SELECT 1/0")
            assert set_trace_context(conn) is None  # a failed transaction: nothing sent
            raise psycopg.Rollback()


def test_async_traced_transaction(dsn: str) -> None:
    async def main() -> tuple[tuple[str, str], tuple[str, str], str]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            with _tracer().start_as_current_span("async") as span:
                async with async_traced_transaction(aconn):
                    inside = await (await aconn.execute(
                        "SELECT current_setting('pg_observe.trace_id', true),"
                        " current_setting('pg_observe.span_id', true)")).fetchone()
                async with aconn.transaction():
                    assert await async_set_trace_context(aconn) is not None
                after = await (await aconn.execute(
                    "SELECT coalesce(current_setting('pg_observe.trace_id', true), ''),"
                    " coalesce(current_setting('pg_observe.span_id', true), '')")).fetchone()
            return tuple(inside), tuple(after), trace.format_trace_id(span.get_span_context().trace_id)

    inside, after, trace_id = asyncio.run(main())
    assert inside[0] == trace_id and len(inside[1]) == 16
    assert after == ("", "")


def test_tracked_changes_carry_the_trace(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric)")
        conn.execute("SELECT monitoring.track_changes('orders')")
        with _tracer().start_as_current_span("place order") as span:
            with traced_transaction(conn):
                conn.execute("INSERT INTO orders VALUES (1, 9.5)")
        conn.execute("INSERT INTO orders VALUES (2, 1)")  # outside the span
        rows = conn.execute("SELECT entity_id, trace_id, span_id FROM monitoring.tb_entity_change_log"
                            " ORDER BY entity_id").fetchall()
    context = span.get_span_context()
    assert rows == [("1", trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)),
                    ("2", None, None)]
