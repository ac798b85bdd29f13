"""Seed 000's correlation queries, unchanged, on data produced the way an application produces
it: spans by the real OpenTelemetry SDK through PostgreSQLSpanExporter under a
BatchSpanProcessor, errors by the error tracker inside those spans (which reads the active span),
business events by track_changes() in transactions opened with traced_transaction(), and metrics
by MetricsRecorder. Each query must return the rows the scenario implies."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode
from pg_observe import MetricsRecorder, init_error_tracker
from pg_observe.otel import PostgreSQLSpanExporter, traced_transaction

ERROR_TRACE = """
SELECT
    e.fingerprint,
    e.message,
    e.occurred_at,
    t.operation_name,
    t.duration_ms,
    t.status_code,
    t.attributes
FROM monitoring.errors e
JOIN monitoring.traces t ON e.trace_id = t.trace_id
WHERE e.fingerprint = 'payment_processing_error'
ORDER BY e.occurred_at DESC
LIMIT 20;
"""
ERROR_BUSINESS = """
SELECT
    e.fingerprint,
    e.message,
    e.context->>'order_id' as order_id,
    c.entity_name,
    c.entity_id,
    c.change_type,
    c.before_data,
    c.after_data,
    c.changed_at
FROM monitoring.errors e
JOIN tb_entity_change_log c ON e.context->>'order_id' = c.entity_id::text
WHERE e.fingerprint = 'order_processing_error'
  AND c.entity_name = 'order'
ORDER BY e.occurred_at DESC;
"""
TRACE_METRICS = """
SELECT
    t.trace_id,
    t.operation_name,
    t.duration_ms,
    m.metric_value as db_query_count,
    t.attributes->>'user_id' as user_id
FROM monitoring.traces t
LEFT JOIN LATERAL (
    SELECT SUM(metric_value) as metric_value
    FROM monitoring.metrics
    WHERE metric_name = 'db.queries.count'
      AND timestamp BETWEEN t.start_time AND t.end_time
) m ON true
WHERE t.duration_ms > 1000  -- Slower than 1 second
ORDER BY t.duration_ms DESC
LIMIT 50;
"""
FULL = """
SELECT
    e.fingerprint,
    e.message,
    e.occurred_at,
    t.operation_name,
    t.duration_ms,
    t.status_code,
    c.entity_name,
    c.change_type,
    e.context->>'user_id' as user_id,
    COUNT(*) OVER (PARTITION BY e.fingerprint) as error_count
FROM monitoring.errors e
LEFT JOIN monitoring.traces t ON e.trace_id = t.trace_id
LEFT JOIN tb_entity_change_log c
    ON t.trace_id = c.trace_id::text
    AND c.changed_at BETWEEN e.occurred_at - INTERVAL '1 second'
                         AND e.occurred_at + INTERVAL '1 second'
WHERE e.occurred_at > NOW() - INTERVAL '24 hours'
  AND e.resolved_at IS NULL
ORDER BY e.occurred_at DESC;
"""
HIGHEST_ERROR_RATE = """
SELECT
    t.operation_name,
    COUNT(DISTINCT t.trace_id) as total_requests,
    COUNT(DISTINCT e.id) as errors,
    ROUND(100.0 * COUNT(DISTINCT e.id) / COUNT(DISTINCT t.trace_id), 2) as error_rate_pct
FROM monitoring.traces t
LEFT JOIN monitoring.errors e ON t.trace_id = e.trace_id
WHERE t.start_time > NOW() - INTERVAL '1 hour'
GROUP BY t.operation_name
HAVING COUNT(DISTINCT t.trace_id) > 10
ORDER BY error_rate_pct DESC;
"""
TIMELINE = """
SELECT
    t.trace_id,
    t.operation_name,
    t.start_time,
    t.duration_ms,
    e.exception_type,
    e.message,
    c.entity_name,
    c.change_type
FROM monitoring.traces t
LEFT JOIN monitoring.errors e ON t.trace_id = e.trace_id
LEFT JOIN tb_entity_change_log c ON t.trace_id = c.trace_id::text
WHERE t.trace_id = 'your-trace-id-here'
ORDER BY t.start_time;
"""


class PaymentError(Exception):
    pass


@pytest.fixture
def world(dsn: str) -> dict:
    """Twelve checkout requests; request 3 fails in its payment span, request 7 is slow."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id integer PRIMARY KEY, status text NOT NULL)")
        conn.execute("SELECT monitoring.track_changes('public.orders', 'order')")
    exporter = PostgreSQLSpanExporter(dsn)
    provider = TracerProvider(resource=Resource.create({"service.name": "shop", "deployment.environment": "test"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("checkout")
    tracker = init_error_tracker(dsn, environment="test", flush_interval=0.05)
    metrics = MetricsRecorder(dsn, environment="test", flush_interval=0.05)
    traces: dict[int, str] = {}
    with psycopg.connect(dsn) as app:
        for request in range(1, 13):
            with tracer.start_as_current_span("POST /checkout", attributes={"user_id": f"u-{request}"}) as root:
                traces[request] = format(root.get_span_context().trace_id, "032x")
                with tracer.start_as_current_span("charge") as charge:
                    with traced_transaction(app):
                        app.execute("INSERT INTO orders VALUES (%s, 'paid')", (request,))
                    if request == 3:
                        try:
                            raise PaymentError("card declined")
                        except PaymentError as error:
                            charge.set_status(Status(StatusCode.ERROR, "card declined"))
                            context = {"order_id": str(request), "user_id": f"u-{request}"}
                            tracker.capture_exception(error, context=context, fingerprint=["payment_processing_error"])
                            tracker.capture_message("order stuck after payment", level="error", context=context,
                                                    fingerprint=["order_processing_error"])
                if request == 7:
                    # a slow request, with a database metric recorded inside it
                    time.sleep(1.1)
                    metrics.increment("db.queries.count", 3)
                    assert metrics.flush()
            if request == 7:
                metrics.increment("db.queries.count", 4)   # after the request: not in its window
                assert metrics.flush()
        assert tracker.flush(5)
        provider.force_flush()
        metrics.close()
        tracker.close()
        provider.shutdown()
    return {"traces": traces, "dsn": dsn}


def _rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET search_path = public, monitoring")
        return conn.execute(sql).fetchall()


def test_the_seed_correlation_queries_on_real_sdk_data(world: dict) -> None:
    dsn, traces = world["dsn"], world["traces"]

    rows = _rows(dsn, ERROR_TRACE)
    assert sorted((r[0], r[1], r[3], r[5]) for r in rows) == [
        ("payment_processing_error", "card declined", "POST /checkout", 0),
        ("payment_processing_error", "card declined", "charge", 2),
    ]
    assert {r[6].get("user_id") for r in rows} == {"u-3", None}

    rows = _rows(dsn, ERROR_BUSINESS)
    assert [(r[0], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows] == [
        ("order_processing_error", "3", "order", "3", "INSERT", None, {"id": 3, "status": "paid"})]

    rows = _rows(dsn, TRACE_METRICS)
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [(traces[7], "POST /checkout", 3, "u-7")]
    assert rows[0][2] > 1000

    rows = _rows(dsn, FULL)
    assert sorted((r[0], r[3], r[6], r[7], r[8], r[9]) for r in rows) == [
        ("order_processing_error", "POST /checkout", "order", "INSERT", "u-3", 2),
        ("order_processing_error", "charge", "order", "INSERT", "u-3", 2),
        ("payment_processing_error", "POST /checkout", "order", "INSERT", "u-3", 2),
        ("payment_processing_error", "charge", "order", "INSERT", "u-3", 2),
    ]

    rows = _rows(dsn, HIGHEST_ERROR_RATE)
    assert [(r[0], r[1], r[2], float(r[3])) for r in rows] == [
        ("POST /checkout", 12, 2, 16.67), ("charge", 12, 2, 16.67)]

    rows = _rows(dsn, TIMELINE.replace("your-trace-id-here", traces[3]))
    assert [(r[0], r[1], r[6], r[7]) for r in rows] == [
        (traces[3], "POST /checkout", "order", "INSERT"), (traces[3], "POST /checkout", "order", "INSERT"),
        (traces[3], "charge", "order", "INSERT"), (traces[3], "charge", "order", "INSERT")]
    assert "test_correlation_e2e.PaymentError" in {r[4] for r in rows}
    assert {r[5] for r in rows} == {"card declined", "order stuck after payment"}
    assert all(isinstance(r[2], dt.datetime) for r in rows)


def test_trace_timeline_puts_the_error_and_the_change_in_their_span(world: dict) -> None:
    rows = _rows(world["dsn"], f"SELECT depth, operation_name, errors, changes FROM"
                              f" monitoring.trace_timeline('{world['traces'][3]}')")
    assert [(r[0], r[1]) for r in rows] == [(0, "POST /checkout"), (1, "charge")]
    charge = rows[1]
    assert {e["exception_type"] for e in charge[2]} == {"test_correlation_e2e.PaymentError", "Error"}
    assert [(c["entity_name"], c["entity_id"], c["change_type"]) for c in charge[3]] == [("order", "3", "INSERT")]
