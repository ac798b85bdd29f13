"""MetricsRecorder on the real cluster: aggregation, flush windows, outages, limits."""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest
from pg_observe.metrics import MetricsRecorder, MetricsStats
from psycopg_pool import AsyncConnectionPool, ConnectionPool

CLOSED_PORT = "host=127.0.0.1 port=1 dbname=nothing user=nobody connect_timeout=2"


def rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def metric_rows(dsn: str) -> list[tuple]:
    found = rows(dsn, "SELECT metric_name, metric_type, metric_value, labels, environment, service"
                      " FROM monitoring.metrics")
    return sorted(found, key=lambda r: (r[0], r[1], json.dumps(r[3], sort_keys=True), r[2]))


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_seed_calls_synchronous(dsn: str) -> None:
    before = datetime.datetime.now(datetime.timezone.utc)
    with MetricsRecorder(dsn, environment="staging", service="api", flush_interval=30) as metrics:
        assert metrics.increment("graphql.requests.total", labels={"operation": "getUser", "status": "success"})
        assert metrics.increment("graphql.requests.total", labels={"status": "success", "operation": "getUser"})
        metrics.increment("graphql.requests.total", 3, labels={"operation": "getUser", "status": "error"})
        metrics.set_gauge("db.pool.connections.active", value=5, labels={"pool": "primary"})
        metrics.record_histogram("graphql.request.duration_ms", value=12.5, labels={"operation": "getOrders"})
        metrics.record_histogram("graphql.request.duration_ms", value=3.25, labels={"operation": "getOrders"})
        assert metrics.stats.series == 4
        assert metrics.flush(10)
        stats = metrics.stats
        assert (stats.series, stats.pending, stats.rejected, stats.dropped, stats.flushes) == (0, 0, 0, 0, 1)
    after = datetime.datetime.now(datetime.timezone.utc)
    assert metric_rows(dsn) == [
        ("db.pool.connections.active", "gauge", 5.0, {"pool": "primary"}, "staging", "api"),
        ("graphql.request.duration_ms", "histogram", 3.25, {"operation": "getOrders"}, "staging", "api"),
        ("graphql.request.duration_ms", "histogram", 12.5, {"operation": "getOrders"}, "staging", "api"),
        ("graphql.requests.total", "counter", 3.0, {"operation": "getUser", "status": "error"}, "staging", "api"),
        ("graphql.requests.total", "counter", 2.0, {"operation": "getUser", "status": "success"}, "staging", "api"),
    ]
    stamps = rows(dsn, 'SELECT DISTINCT "timestamp" FROM monitoring.metrics')
    assert len(stamps) == 1 and before <= stamps[0][0] <= after  # one flush window, one timestamp


def test_seed_calls_awaited_with_an_async_pool(dsn: str) -> None:
    async def main() -> MetricsStats:
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2, open=False) as pool:
            metrics = MetricsRecorder(pool, flush_interval=30)
            assert await metrics.increment("graphql.requests.total",
                                           labels={"operation": "getUser", "status": "success"}) is True
            await metrics.set_gauge("db.pool.connections.active", value=5, labels={"pool": "primary"})
            await metrics.record_histogram("graphql.request.duration_ms", value=12.5,
                                           labels={"operation": "getOrders"})
            assert await metrics.aflush(10)
            await metrics.aclose()
            return metrics.stats

    stats = asyncio.run(main())
    assert (stats.flushes, stats.rejected, stats.dropped) == (1, 0, 0)
    assert metric_rows(dsn) == [
        ("db.pool.connections.active", "gauge", 5.0, {"pool": "primary"}, "production", None),
        ("graphql.request.duration_ms", "histogram", 12.5, {"operation": "getOrders"}, "production", None),
        ("graphql.requests.total", "counter", 1.0, {"operation": "getUser", "status": "success"}, "production", None),
    ]


def test_sync_pool(dsn: str) -> None:
    pool = ConnectionPool(dsn, min_size=1, max_size=2, open=False)
    with pool, MetricsRecorder(pool, flush_interval=30) as metrics:
        metrics.increment("jobs.done")
        metrics.increment("jobs.done", 2.5)
        assert metrics.flush(10)
        metrics.increment("jobs.done", 4)
        assert metrics.flush(10)
    assert rows(dsn, "SELECT metric_value FROM monitoring.metrics ORDER BY 1") == [(3.5,), (4.0,)]


def test_10000_increments_from_4_threads(dsn: str) -> None:
    """Windows are cut while the threads increment: no increment is lost or counted twice."""
    with MetricsRecorder(dsn, flush_interval=0.01) as metrics:
        start = threading.Barrier(4)

        def work(n: int) -> None:
            start.wait()
            for i in range(2_500):
                metrics.increment("orders.created", labels={"shard": (n + i) % 2})
                if i % 250 == 0:
                    time.sleep(0.005)  # long enough for windows to be cut meanwhile

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            metrics.flush(10)  # more windows cut while they run
        for thread in threads:
            thread.join()
        assert metrics.flush(10)
        stats = metrics.stats
        assert (stats.dropped, stats.rejected, stats.invalid) == (0, 0, 0)
        assert stats.flushes >= 2
    total, count, per_shard = rows(dsn, "SELECT sum(metric_value), count(*), count(DISTINCT labels)"
                                        " FROM monitoring.metrics WHERE metric_name = 'orders.created'")[0]
    assert total == 10_000 and per_shard == 2
    assert stats.sent == count


def test_gauge_keeps_the_last_value_of_each_window(dsn: str) -> None:
    with MetricsRecorder(dsn, flush_interval=30) as metrics:
        for value in (1, 7.5, 3):
            metrics.set_gauge("queue.depth", value, labels={"queue": "emails"})
        metrics.set_gauge("queue.depth", 42, labels={"queue": "sms"})
        assert metrics.flush(10)
        metrics.set_gauge("queue.depth", 0, labels={"queue": "emails"})
        assert metrics.flush(10)
    assert rows(dsn, "SELECT labels->>'queue', metric_value FROM monitoring.metrics ORDER BY \"timestamp\", 1") == [
        ("emails", 3.0), ("sms", 42.0), ("emails", 0.0)]


def test_histogram_keeps_every_observation(dsn: str) -> None:
    values = [round(random.uniform(0, 1000), 3) for _ in range(1_000)]
    with MetricsRecorder(dsn, flush_interval=30) as metrics:
        for i, value in enumerate(values):
            metrics.record_histogram("http.duration_ms", value, labels={"route": "/a" if i % 2 else "/b"})
        assert metrics.flush(10)
    stored = rows(dsn, "SELECT metric_value FROM monitoring.metrics WHERE metric_type = 'histogram'")
    assert sorted(v for (v,) in stored) == sorted(values)


def test_big_window_is_sent_in_chunks(dsn: str) -> None:
    with MetricsRecorder(dsn, flush_interval=30, batch_size=7) as metrics:
        for i in range(20):
            metrics.increment("chunked", labels={"i": i})
        assert metrics.flush(10)
        assert metrics.stats.flushes == 1
    assert rows(dsn, "SELECT count(*), sum((labels->>'i')::int) FROM monitoring.metrics") == [(20, 190)]


def test_flush_and_close(dsn: str) -> None:
    metrics = MetricsRecorder(dsn, flush_interval=30)
    assert metrics.flush(1)  # nothing to send
    metrics.increment("a")
    assert metrics.close(10)
    assert metrics.close(1)  # twice is harmless
    assert not metrics.increment("a")  # dropped after close, and counted
    assert not metrics.set_gauge("g", 1) and not metrics.record_histogram("h", 1)
    stats = metrics.stats
    assert stats.dropped == 3 and stats.flushes == 1
    assert rows(dsn, "SELECT metric_name, metric_value FROM monitoring.metrics") == [("a", 1.0)]


def test_close_at_exit_sends_the_last_window(dsn: str) -> None:
    script = ("import sys\nfrom pg_observe.metrics import MetricsRecorder\n"
              "metrics = MetricsRecorder(sys.argv[1], flush_interval=60)\n"
              "metrics.increment('exits', 2)\nmetrics.record_histogram('last', 1.5)\n")
    subprocess.run([sys.executable, "-c", script, dsn], check=True, timeout=30)
    assert rows(dsn, "SELECT metric_name, metric_value FROM monitoring.metrics ORDER BY 1") == [
        ("exits", 2.0), ("last", 1.5)]


def test_dead_port_never_blocks_the_caller() -> None:
    metrics = MetricsRecorder(CLOSED_PORT, flush_interval=0.01, backoff_min=0.01, backoff_max=0.05)
    slowest = 0.0
    for i in range(3_000):
        start = time.perf_counter()
        metrics.increment("c", labels={"i": i % 10})
        metrics.set_gauge("g", i)
        metrics.record_histogram("h", i)
        slowest = max(slowest, time.perf_counter() - start)
    assert slowest < 0.05, f"three calls took {slowest * 1000:.1f} ms"
    assert wait_for(lambda: metrics.stats.failed_flushes >= 3)
    stats = metrics.stats
    assert stats.sent == 0 and stats.pending > 0
    start = time.perf_counter()
    assert metrics.flush(0.3) is False
    assert metrics.close(0.3) is False
    assert time.perf_counter() - start < 3
    stats = metrics.stats
    assert (stats.sent, stats.pending, stats.series, stats.flushes) == (0, 0, 0, 0)
    assert stats.dropped == 9_000  # every call, counted when close gave up


def test_points_recorded_while_the_database_is_missing_are_stored_later(admin_dsn: str) -> None:
    dbname = f"pg_observe_metrics_late_{uuid.uuid4().hex[:8]}"
    dsn = admin_dsn.replace("dbname=postgres", f"dbname={dbname}")
    metrics = MetricsRecorder(dsn, flush_interval=0.05, backoff_min=0.05, backoff_max=0.5)
    try:
        metrics.increment("late.counter", 5)
        metrics.set_gauge("late.gauge", 1)
        metrics.record_histogram("late.histogram", 10)
        assert wait_for(lambda: metrics.stats.failed_flushes >= 2)
        metrics.increment("late.counter", 2)  # the next window keeps aggregating meanwhile
        metrics.set_gauge("late.gauge", 2)
        metrics.record_histogram("late.histogram", 20)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{dbname}"')
        failed = metrics.stats.failed_flushes
        assert wait_for(lambda: metrics.stats.failed_flushes > failed)  # database there, extension not yet
        assert metrics.stats.sent == 0 and metrics.stats.pending == 3
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            conn.execute("CREATE EXTENSION pg_observe CASCADE")
        assert metrics.flush(15)
        stats = metrics.stats
        assert (stats.pending, stats.series, stats.dropped, stats.rejected) == (0, 0, 0, 0)
        assert rows(dsn, "SELECT metric_name, metric_value FROM monitoring.metrics ORDER BY 1, \"timestamp\"") == [
            ("late.counter", 5.0), ("late.counter", 2.0), ("late.gauge", 1.0), ("late.gauge", 2.0),
            ("late.histogram", 10.0), ("late.histogram", 20.0)]
    finally:
        metrics.close(1)
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def test_connection_lost_between_flushes(dsn: str, admin_dsn: str) -> None:
    with MetricsRecorder(dsn, flush_interval=30, backoff_min=0.05) as metrics:
        metrics.increment("before")
        assert metrics.flush(10)
        dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        killed = rows(admin_dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                 " WHERE datname = %s AND application_name = 'pg_observe metrics'", (dbname,))
        assert killed == [(1,)]
        metrics.increment("after")
        assert metrics.flush(10)
    assert rows(dsn, "SELECT metric_name FROM monitoring.metrics ORDER BY 1") == [("after",), ("before",)]


def test_nan_and_infinity_are_dropped_and_counted(dsn: str) -> None:
    """JSON has no NaN or infinity: such values never leave the process (stats.invalid)."""
    with MetricsRecorder(dsn, flush_interval=30) as metrics:
        assert not metrics.set_gauge("g", math.nan)
        assert not metrics.record_histogram("h", math.inf)
        assert not metrics.increment("c", -math.inf)
        assert not metrics.increment("c", 10**400)  # beyond double precision
        assert metrics.record_histogram("h", 1.0)
        assert metrics.increment("overflow", 1e308) and metrics.increment("overflow", 1e308)  # the sum is inf
        assert metrics.flush(10)
        stats = metrics.stats
        assert (stats.invalid, stats.rejected, stats.dropped) == (6, 0, 0)
    assert rows(dsn, "SELECT metric_name, metric_value FROM monitoring.metrics") == [("h", 1.0)]


def test_huge_label_set_is_refused_by_the_database(dsn: str) -> None:
    """Labels are sent as given; record_metrics keeps a point with more than 256 keys aside."""
    huge = {f"k{i:03}": i for i in range(300)}
    with MetricsRecorder(dsn, flush_interval=30) as metrics:
        assert metrics.increment("too.many.labels", labels=huge)
        metrics.increment("fine", labels={f"k{i:03}": i for i in range(256)})
        assert metrics.flush(10)
        assert metrics.stats.rejected == 1
    stored = rows(dsn, "SELECT metric_name, (SELECT count(*) FROM jsonb_object_keys(labels)) FROM monitoring.metrics")
    assert stored == [("fine", 256)]
    rejected = rows(dsn, "SELECT kind, payload->>'metric_name' FROM monitoring.rejected_telemetry")
    assert rejected == [("metric", "too.many.labels")]


def test_point_the_database_cannot_take_is_counted_not_retried(dsn: str) -> None:
    """A lone surrogate cannot be encoded: the chunk is split until that point is alone."""
    with MetricsRecorder(dsn, flush_interval=30) as metrics:
        for i in range(3):
            metrics.increment("good", labels={"i": i})
        metrics.increment("bad", labels={"path": "caf\udce9"})  # what os.fsdecode gives for bad bytes
        assert metrics.flush(10)
        stats = metrics.stats
        assert (stats.sent, stats.rejected, stats.failed_flushes, stats.pending) == (3, 1, 0, 0)
    assert rows(dsn, "SELECT count(*) FROM monitoring.metrics WHERE metric_name = 'good'") == [(3,)]


def test_memory_is_bounded(dsn: str) -> None:
    with MetricsRecorder(dsn, flush_interval=30, max_series=10, max_observations=5) as metrics:
        kept = [bool(metrics.increment("c", labels={"user": i})) for i in range(25)]
        assert kept == [True] * 10 + [False] * 15
        assert metrics.increment("c", labels={"user": 3})  # an existing series still counts
        assert not metrics.set_gauge("g", 1)
        assert metrics.stats.dropped == 16
        assert metrics.flush(10)
        observed = [bool(metrics.record_histogram("h", i)) for i in range(8)]
        assert observed == [True] * 5 + [False] * 3
        assert metrics.flush(10)
        stats = metrics.stats
        assert stats.dropped == 19 and stats.series == 0
    assert rows(dsn, "SELECT metric_type, count(*), sum(metric_value) FROM monitoring.metrics GROUP BY 1 ORDER BY 1") \
        == [("counter", 10, 11.0), ("histogram", 5, 10.0)]


def test_labels_are_sorted_and_typed(dsn: str) -> None:
    with MetricsRecorder(dsn, flush_interval=30) as metrics:
        metrics.increment("t", labels={"b": 1, "a": "x"})
        metrics.increment("t", labels={"a": "x", "b": 1})
        metrics.increment("t", labels={"a": "x", "b": True})  # not the same series as 1
        metrics.increment("t", labels={"a": None})
        metrics.increment("t", labels={})
        metrics.increment("t")
        assert metrics.stats.series == 4
        assert metrics.flush(10)
    assert sorted(rows(dsn, "SELECT labels::text, metric_value FROM monitoring.metrics")) == [
        ('{"a": "x", "b": 1}', 2.0), ('{"a": "x", "b": true}', 1.0), ('{"a": null}', 1.0), ("{}", 2.0)]


def test_bad_calls_raise_at_once() -> None:
    metrics = MetricsRecorder(CLOSED_PORT, flush_interval=30)
    try:
        for call, error in [
            (lambda: metrics.increment(3), TypeError),
            (lambda: metrics.increment(""), ValueError),
            (lambda: metrics.increment("c", "1"), TypeError),
            (lambda: metrics.increment("c", True), TypeError),
            (lambda: metrics.increment("c", -1), ValueError),
            (lambda: metrics.set_gauge("g", None), TypeError),
            (lambda: metrics.record_histogram("h", 1, labels=["a"]), TypeError),
            (lambda: metrics.record_histogram("h", 1, labels={1: "a"}), TypeError),
            (lambda: metrics.set_gauge("g", 1, labels={"a": [1]}), TypeError),
            (lambda: metrics.set_gauge("g", 1, labels={"a": math.nan}), ValueError),
        ]:
            with pytest.raises(error):
                call()
        assert metrics.stats.series == 0
        with pytest.raises(TypeError):
            MetricsRecorder(42)
    finally:
        metrics.close(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_records_on_its_own(dsn: str) -> None:
    with MetricsRecorder(dsn, flush_interval=30) as metrics:
        metrics.increment("forks", labels={"who": "parent"})
        assert metrics.flush(10)
        metrics.increment("forks", labels={"who": "parent"})  # not flushed yet: the child must not send it
        pid = os.fork()
        if pid == 0:
            ok = False
            try:
                metrics.increment("forks", labels={"who": "child"})
                ok = metrics.flush(10) and metrics.stats.flushes == 1
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert metrics.flush(10) and metrics.stats.flushes == 2
    assert rows(dsn, "SELECT labels->>'who', sum(metric_value) FROM monitoring.metrics GROUP BY 1 ORDER BY 1") == [
        ("child", 1.0), ("parent", 2.0)]
