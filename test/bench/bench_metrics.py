"""Metrics through MetricsRecorder (aggregated in process, flushed in batches by its thread)
against one INSERT per point from the caller, in the same run: points per second from the
first call until everything is stored.

Two figures: counter increments (aggregated: many increments become one row per series and
flush) and histogram observations (every observation is a row; only the batching helps).
PG_OBSERVE_BENCH_POINTS sets the recorder's points (default 200,000), PG_OBSERVE_BENCH_INSERTS
the baseline's (default 5,000).
"""

from __future__ import annotations

import os
import random
import time

import psycopg
from _harness import DSN, report
from pg_observe.metrics import MetricsRecorder
from psycopg.types.json import Jsonb

POINTS = int(os.environ.get("PG_OBSERVE_BENCH_POINTS", "200000"))
INSERTS = int(os.environ.get("PG_OBSERVE_BENCH_INSERTS", "5000"))
LABELS = [{"operation": op, "status": status} for op in ("getUser", "getOrders", "createOrder", "search", "login")
          for status in ("success", "error")]


def baseline(conn: psycopg.Connection, metric_type: str) -> float:
    """Points per second, one INSERT (one round trip, one commit) per point."""
    rng = random.Random(3)
    start = time.perf_counter()
    for _ in range(INSERTS):
        conn.execute("INSERT INTO monitoring.metrics (metric_name, metric_type, metric_value, labels)"
                     " VALUES (%s, %s, %s, %s)",
                     ("bench.baseline", metric_type, rng.random() * 100, Jsonb(rng.choice(LABELS))))
    return INSERTS / (time.perf_counter() - start)


def through_recorder(conn: psycopg.Connection, metric_type: str) -> tuple[float, int, float]:
    rng = random.Random(5)
    values = [(rng.choice(LABELS), rng.random() * 100) for _ in range(POINTS)]
    name = f"bench.recorder.{metric_type}"
    recorder = MetricsRecorder(DSN, flush_interval=0.2, max_observations=POINTS)
    start = time.perf_counter()
    if metric_type == "counter":
        for labels, _ in values:
            recorder.increment(name, labels=labels)
    else:
        for labels, value in values:
            recorder.record_histogram(name, value, labels=labels)
    calls_done = time.perf_counter()
    if not recorder.flush(timeout=120):
        raise RuntimeError("the recorder did not flush in time")
    elapsed = time.perf_counter() - start
    recorder.close()
    rows, total = conn.execute(
        "SELECT count(*), CASE WHEN %s = 'counter' THEN sum(metric_value) ELSE count(*) END"
        " FROM monitoring.metrics WHERE metric_name = %s", (metric_type, name)).fetchone()
    if int(total) != POINTS:
        raise RuntimeError(f"{name}: {total} points stored, {POINTS} recorded")
    return POINTS / elapsed, rows, (calls_done - start) / POINTS * 1e6


def main() -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("TRUNCATE monitoring.metrics")
        for metric_type in ("counter", "histogram"):
            base = baseline(conn, metric_type)
            rate, rows, call_us = through_recorder(conn, metric_type)
            report(f"metrics_recorder_{metric_type}_points_per_second", rate, "points/s", base,
                   baseline_name="one INSERT per point from the caller", points=POINTS, rows_stored=rows,
                   caller_microseconds_per_call=round(call_us, 2), baseline_points=INSERTS)


if __name__ == "__main__":
    main()
