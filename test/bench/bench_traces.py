"""Traces, in one run:

1. span ingestion through ingest_spans() (batches of 1,000) against COPY of the same rows into
   the same table (PG_OBSERVE_BENCH_SPANS, default 200,000), in alternating rounds
   (PG_OBSERVE_BENCH_SPAN_ROUNDS, default 3), medians of each;
2. OTLP/JSON through the receiver (pg-observe otlp-receiver, HTTP on 127.0.0.1, batches of 512
   as BatchSpanProcessor sends them) against ingest_spans() alone with the same batches;
3. seed 000's "Slowest operations (P99)" over the last hour out of
   PG_OBSERVE_BENCH_SPANS_TOTAL spans (default 10,000,000) spread over 30 days: its time
   against the same query over all 30 days, and the partitions it scans.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import random
import statistics
import time

import psycopg
from _harness import DSN, report
from pg_observe.otlp_receiver import OTLPReceiver

COUNT = int(os.environ.get("PG_OBSERVE_BENCH_SPANS", "200000"))
OTLP_COUNT = int(os.environ.get("PG_OBSERVE_BENCH_OTLP_SPANS", "50000"))
TOTAL = int(os.environ.get("PG_OBSERVE_BENCH_SPANS_TOTAL", "10000000"))
BATCH = 1000
INGEST_ROUNDS = int(os.environ.get("PG_OBSERVE_BENCH_SPAN_ROUNDS", "3"))
OTLP_BATCH = 512
OPERATIONS = [f"{verb} /api/{thing}" for verb in ("GET", "POST")
              for thing in ("orders", "users", "cart", "search", "pay")]
SLOWEST_P99 = """
SELECT
    operation_name,
    COUNT(*) as request_count,
    percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms) as p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) as p95_ms,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) as p99_ms,
    MAX(duration_ms) as max_ms
FROM monitoring.traces
WHERE start_time > NOW() - INTERVAL '1 hour'
GROUP BY operation_name
HAVING COUNT(*) > 10
ORDER BY p99_ms DESC
LIMIT 20
"""


def spans(count: int, seed: int = 7) -> list[dict]:
    """Traces of 10 spans: a server span and nine children with realistic attributes."""
    rng = random.Random(seed)
    now = time.time_ns()
    out = []
    for t in range(count // 10):
        trace_id = f"{rng.getrandbits(128):032x}"
        root_id = f"{rng.getrandbits(64):016x}"
        start = now - rng.randrange(0, 3_000_000_000_000)  # the last 50 minutes
        operation = rng.choice(OPERATIONS)
        for i in range(10):
            span_start = start + i * 1_000_000
            duration = rng.randrange(100_000, 200_000_000)
            out.append({
                "trace_id": trace_id, "span_id": root_id if i == 0 else f"{rng.getrandbits(64):016x}",
                "parent_span_id": None if i == 0 else root_id,
                "name": operation if i == 0 else rng.choice(("db.query", "cache.get", "http.client", "render")),
                "kind": "server" if i == 0 else "client",
                "start_time_unix_nano": span_start, "end_time_unix_nano": span_start + duration,
                "status_code": "error" if rng.random() < 0.02 else "unset",
                "attributes": {"http.method": operation.split()[0], "http.route": operation.split()[1],
                               "http.status_code": 200, "db.system": "postgresql",
                               "db.statement": f"SELECT * FROM orders WHERE id = $1 /* {t % 50} */",
                               "user.id": f"u-{rng.randrange(10000)}", "net.peer.name": "db.internal",
                               "thread.id": rng.randrange(64)},
                "resource": {"service.name": "shop", "deployment.environment": "production",
                             "host.name": f"web-{t % 8}", "telemetry.sdk.language": "python"},
                "scope": {"name": "opentelemetry.instrumentation.flask", "version": "0.48b0"},
            })
    return out


def _iso(nanos: int) -> str:
    return dt.datetime.fromtimestamp(nanos / 1e9, dt.timezone.utc).isoformat()


def copy_rows(batch: list[dict]) -> list[tuple]:
    """The same spans as the rows ingest_spans() stores, for COPY."""
    rows = []
    for s in batch:
        rows.append((s["trace_id"], s["span_id"], s["parent_span_id"], "shop", s["name"], s["kind"],
                     _iso(s["start_time_unix_nano"]), _iso(s["end_time_unix_nano"]),
                     (s["end_time_unix_nano"] - s["start_time_unix_nano"]) / 1e6,
                     2 if s["status_code"] == "error" else 0, json.dumps(s["attributes"]), json.dumps(s["resource"]),
                     json.dumps(s["scope"]), "production"))
    return rows


def otlp_request(batch: list[dict]) -> bytes:
    def value(v: object) -> dict:
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        return {"stringValue": str(v)}

    def attrs(d: dict) -> list:
        return [{"key": k, "value": value(v)} for k, v in d.items()]

    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": attrs(batch[0]["resource"])},
        "scopeSpans": [{"scope": batch[0]["scope"], "spans": [{
            "traceId": s["trace_id"], "spanId": s["span_id"], "parentSpanId": s["parent_span_id"] or "",
            "name": s["name"], "kind": 2 if s["kind"] == "server" else 3,
            "startTimeUnixNano": str(s["start_time_unix_nano"]), "endTimeUnixNano": str(s["end_time_unix_nano"]),
            "attributes": attrs(s["attributes"]), "status": {"code": 2 if s["status_code"] == "error" else 0},
        } for s in batch]}]}]}).encode()


def bench_ingest(conn: psycopg.Connection) -> None:
    """COPY and ingest_spans() in alternating rounds into the emptied table; medians of each.

    One COPY against one ingestion moved the ratio by a tenth between runs (COPY into a fresh
    table varied from 68,000 to 84,000 rows/s on this machine while ingestion stayed within 5%)."""
    data = spans(COUNT)
    rows = copy_rows(data)
    # Both sides get their rows ready before the clock starts: COPY its tuples, this its JSON text.
    bodies = [json.dumps(data[i:i + BATCH]) for i in range(0, COUNT, BATCH)]
    copy_rates, ingest_rates = [], []
    accepted = 0
    for _ in range(INGEST_ROUNDS):
        conn.execute("TRUNCATE monitoring.spans")
        start = time.perf_counter()
        with conn.cursor().copy(
                "COPY monitoring.spans (trace_id, span_id, parent_span_id, service, operation_name, kind, start_time,"
                " end_time, duration_ms, status_code, attributes, resource, scope, environment) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        copy_rates.append(COUNT / (time.perf_counter() - start))
        conn.execute("TRUNCATE monitoring.spans")

        start = time.perf_counter()
        accepted = 0
        for body in bodies:
            accepted += conn.execute("SELECT accepted FROM monitoring.ingest_spans(%s::jsonb)", (body,)).fetchone()[0]
        ingest_rates.append(accepted / (time.perf_counter() - start))
    report("span_ingest_rows_per_second", statistics.median(ingest_rates), "rows/s", statistics.median(copy_rates),
           baseline_name="COPY of the same rows into monitoring.spans (median of alternating rounds)", spans=COUNT,
           accepted=accepted, batch=BATCH, rounds=INGEST_ROUNDS,
           ingest_rates=[round(r) for r in ingest_rates], copy_rates=[round(r) for r in copy_rates])


def bench_otlp(conn: psycopg.Connection) -> None:
    data = spans(OTLP_COUNT, seed=11)
    batches = [data[i:i + OTLP_BATCH] for i in range(0, len(data), OTLP_BATCH)]
    bodies = [otlp_request(b) for b in batches]
    flat = [json.dumps(b) for b in batches]
    conn.execute("TRUNCATE monitoring.spans")
    start = time.perf_counter()
    for body in flat:
        conn.execute("SELECT * FROM monitoring.ingest_spans(%s::jsonb)", (body,))
    direct_seconds = time.perf_counter() - start
    conn.execute("TRUNCATE monitoring.spans")

    receiver = OTLPReceiver(DSN, host="127.0.0.1", port=0)
    receiver.start()
    try:
        http_conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=60)
        start = time.perf_counter()
        for body in bodies:
            http_conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/json"})
            response = http_conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"receiver answered {response.status}")
        receiver_seconds = time.perf_counter() - start
        http_conn.close()
    finally:
        receiver.stop()
    stored = conn.execute("SELECT count(*) FROM monitoring.spans").fetchone()[0]
    report("otlp_receiver_spans_per_second", OTLP_COUNT / receiver_seconds, "spans/s", OTLP_COUNT / direct_seconds,
           baseline_name="ingest_spans() called directly with the same batches", spans=OTLP_COUNT, stored=stored,
           batch=OTLP_BATCH, receiver_seconds=round(receiver_seconds, 2), direct_seconds=round(direct_seconds, 2))


def _partitions_scanned(plan: dict) -> set[str]:
    found = set()
    if "Relation Name" in plan and plan.get("Actual Loops", 1) > 0:
        found.add(plan["Relation Name"])
    for child in plan.get("Plans", []):
        found |= _partitions_scanned(child)
    return found


def bench_slowest_operations(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE monitoring.spans")
    # pg_partman premakes 4 days back: make the other 27 days' partitions, as a month of use would have.
    partman = conn.execute("SELECT monitoring._partman_schema()").fetchone()[0]
    missing = [r[0] for r in conn.execute(
        "SELECT d FROM generate_series(date_trunc('day', now()) - interval '31 days',"
        "                              date_trunc('day', now()) - interval '1 day', interval '1 day') d"
        " WHERE to_char(d, '\"spans_p\"YYYY_MM_DD') NOT IN"
        "       (SELECT relname FROM pg_class WHERE relnamespace = 'monitoring'::regnamespace)").fetchall()]
    if missing:
        conn.execute(f"SELECT {partman}.create_partition_time('monitoring.spans', %s, false)", (missing,))
    conn.execute("SET search_path = public")  # pg_partman 4.7 leaves its own behind
    per_second = TOTAL / (30 * 86400)
    start = time.perf_counter()
    for day in range(30):
        conn.execute("""
            INSERT INTO monitoring.spans (trace_id, span_id, service, operation_name, kind, start_time, end_time,
                                          duration_ms, status_code, attributes, environment)
            SELECT md5(g::text), left(md5(g::text || 's'), 16), 'shop', (%(ops)s::text[])[1 + g %% 10], 'server',
                   t, t + make_interval(secs => d / 1000), d, CASE WHEN g %% 50 = 0 THEN 2 ELSE 0 END,
                   jsonb_build_object('http.route', '/api/x', 'db.system', 'postgresql'), 'production'
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g,
                 LATERAL (SELECT now() - make_interval(secs => (g - %(first)s::bigint) / %(per_second)s::float8)
                                 - make_interval(days => %(day)s::int) AS t,
                                 (random() * random() * 2000)::double precision AS d) v
        """, {"ops": OPERATIONS, "first": day * TOTAL // 30, "last": (day + 1) * TOTAL // 30 - 1,
              "per_second": per_second, "day": day})
    load_seconds = time.perf_counter() - start
    conn.execute("ANALYZE monitoring.spans")
    partitions = conn.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'monitoring.spans'::regclass").fetchone()[0]
    default_partition = conn.execute("SELECT monitoring._default_partition('monitoring.spans')::text").fetchone()[0]
    in_default = conn.execute(f"SELECT count(*) FROM {default_partition}").fetchone()[0]

    def timed(sql: str, runs: int = 5) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            conn.execute(sql).fetchall()
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)

    hour_ms = timed(SLOWEST_P99)
    all_ms = timed(SLOWEST_P99.replace("NOW() - INTERVAL '1 hour'", "NOW() - INTERVAL '31 days'"), runs=3)
    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + SLOWEST_P99).fetchone()[0][0]["Plan"]
    scanned = sorted(_partitions_scanned(plan))
    rows_in_hour = conn.execute(
        "SELECT count(*) FROM monitoring.spans WHERE start_time > now() - interval '1 hour'").fetchone()[0]
    report("slowest_operations_p99_last_hour_ms", hour_ms, "ms", all_ms,
           baseline_name="the same query over all 30 days", spans=TOTAL, spans_in_hour=rows_in_hour,
           partitions=partitions, partitions_scanned=len(scanned), scanned=scanned, spans_in_default=in_default,
           load_seconds=round(load_seconds, 1))


def main() -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        bench_ingest(conn)
        bench_otlp(conn)
        bench_slowest_operations(conn)


if __name__ == "__main__":
    main()
