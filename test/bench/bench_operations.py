"""Operations, in one run, with PG_OBSERVE_BENCH_OCCURRENCES occurrences (default 10,000,000)
spread evenly over the last 12 months (in time order, as a log is written) in
monitoring.tb_error_occurrence and in an unpartitioned copy of the same rows with the same
indexes:

1. seed 000's "last 7 days" query (SELECT * ... WHERE occurred_at > now() - '7 days'),
   partitioned against unpartitioned: server time from EXPLAIN ANALYZE, and the plans;
2. retention: dropping the oldest month (drop_old_error_occurrence_partitions) against
   DELETE of the same rows from the copy;
3. monitoring.prometheus_metrics() with the data loaded against the same call before it was
   loaded (same groups, no occurrences), and the scans it made of the occurrence partitions
   holding data (the default partition, empty, is counted by the partition checks).

The rows are written with triggers off (session_replication_role = replica): this measures
reading and expiring stored data, not the capture path (bench_errors measures that).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import psycopg
from _harness import DSN, report

OCCURRENCES = int(os.environ.get("PG_OBSERVE_BENCH_OCCURRENCES", "10000000"))
GROUPS = 500
CHUNK = 1_000_000
LAST_7_DAYS = "SELECT * FROM monitoring.tb_error_occurrence WHERE occurred_at > NOW() - INTERVAL '7 days'"
STACK = ("Traceback (most recent call last):\n"
         '  File "/app/shop/views.py", line 88, in checkout\n    order = service.place(cart)\n'
         '  File "/app/shop/service.py", line 214, in place\n    self.payments.charge(order)\n'
         '  File "/app/shop/payments.py", line 51, in charge\n    raise PaymentError(reply.reason)\n')


def progress(message: str) -> None:
    print(f"bench_operations: {message}", file=sys.stderr, flush=True)


def load(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE monitoring.tb_error_occurrence, monitoring.tb_error_log CASCADE")
    # a partition for each of the last 13 months (pg_partman made only the current and future ones)
    conn.execute("SELECT monitoring.create_error_occurrence_partition("
                 "(date_trunc('month', now()) - m * interval '1 month')::date) FROM generate_series(1, 13) m")
    conn.execute(
        "INSERT INTO monitoring.tb_error_log (error_fingerprint, error_type, error_message, title, occurrence_count)"
        " SELECT md5(g::text), (ARRAY['PaymentError','TimeoutError','KeyError','ValueError'])[1 + g %% 4],"
        " 'failure ' || g, 'failure ' || g, %s / %s FROM generate_series(1, %s) g", (OCCURRENCES, GROUPS, GROUPS))


def fill(conn: psycopg.Connection) -> None:
    done = 0
    while done < OCCURRENCES:
        n = min(CHUNK, OCCURRENCES - done)
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(
                """INSERT INTO monitoring.tb_error_occurrence
                       (error_id, occurred_at, received_at, exception_type, message, stack_trace, context,
                        environment, service, level, trace_id)
                   SELECT g.error_id, t.at, t.at, g.error_type,
                          'Payment declined for order ' || i || ': card_declined (user u-' || i %% 1000 || ')',
                          %s, jsonb_build_object('order_id', i, 'cart_items', i %% 7, 'region', 'eu-west-1',
                                                 'request_id', md5(i::text)),
                          'production', 'shop', 'error', md5(i::text) || md5((i + 1)::text)
                   FROM generate_series(%s::bigint, %s::bigint) i
                   CROSS JOIN LATERAL (SELECT now() - interval '365 days' * (1 - i / %s::float8) AS at) t
                   JOIN (SELECT error_id, error_type, row_number() OVER (ORDER BY error_fingerprint) - 1 AS k
                         FROM monitoring.tb_error_log) g ON g.k = i %% %s""",
                (STACK, done, done + n - 1, OCCURRENCES, GROUPS))
        done += n
        progress(f"{done:,} of {OCCURRENCES:,} occurrences written")
    progress("unpartitioned copy with the same indexes")
    conn.execute("DROP TABLE IF EXISTS public.bench_occurrence_unpartitioned")
    conn.execute("CREATE TABLE public.bench_occurrence_unpartitioned"
                 " (LIKE monitoring.tb_error_occurrence INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.execute("INSERT INTO public.bench_occurrence_unpartitioned SELECT * FROM monitoring.tb_error_occurrence")
    for ddl in ("ALTER TABLE public.bench_occurrence_unpartitioned ADD PRIMARY KEY (occurrence_id, occurred_at)",
                "CREATE INDEX ON public.bench_occurrence_unpartitioned (error_id, occurred_at DESC)",
                "CREATE INDEX ON public.bench_occurrence_unpartitioned (occurred_at DESC)",
                "CREATE INDEX ON public.bench_occurrence_unpartitioned (trace_id) WHERE trace_id IS NOT NULL"):
        conn.execute(ddl)
    progress("vacuum analyze")
    conn.execute("VACUUM ANALYZE monitoring.tb_error_occurrence")
    conn.execute("VACUUM ANALYZE public.bench_occurrence_unpartitioned")


def explain(conn: psycopg.Connection, sql: str, runs: int = 5) -> tuple[float, dict]:
    """Median server time (ms) over runs after one warm-up, and the last plan."""
    times, plan = [], {}
    for i in range(runs + 1):
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql).fetchone()[0][0]
        if i:
            times.append(plan["Execution Time"] + plan["Planning Time"])
    return statistics.median(times), plan


def plan_summary(plan: dict) -> str:
    """Node types and relations of a plan, in order: what it read and how."""
    parts = []

    def walk(node: dict) -> None:
        relation = node.get("Relation Name")
        parts.append(node["Node Type"] + (f" on {relation}" if relation else ""))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    scans = [p for p in parts if " on " in p]
    others = [p for p in parts if " on " not in p]
    return f"{'; '.join(others)}; {len(scans)} scans: " + ", ".join(sorted(set(scans)))


def bench_last_7_days(conn: psycopg.Connection) -> None:
    part_ms, part_plan = explain(conn, LAST_7_DAYS)
    flat_ms, flat_plan = explain(conn, LAST_7_DAYS.replace("monitoring.tb_error_occurrence",
                                                           "public.bench_occurrence_unpartitioned"))
    report("last_7_days_query_speedup", flat_ms / part_ms, "x", 1.0,
           baseline_name="the same query on an unpartitioned copy with the same indexes",
           partitioned_ms=round(part_ms, 2), unpartitioned_ms=round(flat_ms, 2),
           rows=part_plan["Plan"]["Actual Rows"], occurrences=OCCURRENCES,
           partitioned_plan=plan_summary(part_plan), unpartitioned_plan=plan_summary(flat_plan))


def bench_retention(conn: psycopg.Connection) -> None:
    oldest, boundary, rows = conn.execute(
        """SELECT o.oldest, o.boundary, (SELECT count(*) FROM public.bench_occurrence_unpartitioned
                                         WHERE occurred_at < o.boundary)
           FROM (SELECT min(occurred_at) AS oldest,
                        date_trunc('month', min(occurred_at)) + interval '2 months' AS boundary
                 FROM public.bench_occurrence_unpartitioned) o""").fetchone()
    # expire the oldest (partial) month and the first whole one: over a month of rows
    months = conn.execute("SELECT (extract(year FROM age(date_trunc('month', now()), %s)) * 12"
                          " + extract(month FROM age(date_trunc('month', now()), %s)))::int",
                          (boundary, boundary)).fetchone()[0]
    start = time.perf_counter()
    dropped = [r[0] for r in conn.execute("SELECT * FROM monitoring.drop_old_error_occurrence_partitions(%s)",
                                           (months,)).fetchall()]
    drop_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    deleted = conn.execute("DELETE FROM public.bench_occurrence_unpartitioned WHERE occurred_at < %s",
                           (boundary,)).rowcount
    delete_ms = (time.perf_counter() - start) * 1000
    left = conn.execute("SELECT count(*) FROM monitoring.tb_error_occurrence WHERE occurred_at < %s",
                        (boundary,)).fetchone()[0]
    report("retention_drop_speedup", delete_ms / drop_ms, "x", 1.0,
           baseline_name="DELETE of the same rows from the unpartitioned copy",
           drop_ms=round(drop_ms, 2), delete_ms=round(delete_ms, 2), rows_expired=rows, rows_deleted=deleted,
           rows_left_in_partitioned=left, dropped=dropped, oldest=oldest.isoformat())


def occurrence_scans(conn: psycopg.Connection) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        """SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0)::bigint
           FROM pg_stat_user_tables s JOIN pg_inherits i ON i.inhrelid = s.relid
           WHERE i.inhparent = 'monitoring.tb_error_occurrence'::regclass
             AND s.relname <> 'tb_error_occurrence_default'""").fetchone()[0]


def time_prometheus(conn: psycopg.Connection, runs: int = 7) -> float:
    conn.execute("SELECT monitoring.prometheus_metrics()")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        conn.execute("SELECT monitoring.prometheus_metrics()").fetchone()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    with psycopg.connect(DSN, autocommit=True) as conn, psycopg.connect(DSN, autocommit=True) as observer:
        load(conn)
        empty_ms = time_prometheus(conn)
        progress(f"loading {OCCURRENCES:,} occurrences (takes a while)")
        fill(conn)
        before = occurrence_scans(observer)
        loaded_ms = time_prometheus(conn)
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT 1")  # the flush happens at the end of a statement
        time.sleep(1.5)
        scans = occurrence_scans(observer) - before
        size = conn.execute("SELECT pg_size_pretty(sum(pg_total_relation_size(i.inhrelid))) FROM pg_inherits i"
                            " WHERE i.inhparent = 'monitoring.tb_error_occurrence'::regclass").fetchone()[0]
        report("prometheus_metrics_ms_with_occurrences", loaded_ms, "ms", empty_ms,
               baseline_name="prometheus_metrics() with the same groups and no occurrences",
               occurrences=OCCURRENCES, occurrence_table_size=size, occurrence_partition_scans=scans)
        bench_last_7_days(conn)
        bench_retention(conn)
        conn.execute("DROP TABLE public.bench_occurrence_unpartitioned")


if __name__ == "__main__":
    main()
