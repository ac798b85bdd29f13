"""make demo: raise a few real exceptions, capture them with pg_observe, show what was stored."""

from __future__ import annotations

import json
import sys

import pg_observe
import psycopg


def parse_config(text: str) -> dict:
    return json.loads(text)


def charge(order_id: int, amount: float) -> float:
    if amount <= 0:
        raise ValueError(f"order {order_id}: amount must be positive, got {amount}")
    return amount


def lookup(user_id: int) -> str:
    users = {1: "ada"}
    return users[user_id]


def tracker_fingerprint(dsn: str, error_type: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT error_fingerprint FROM monitoring.tb_error_log WHERE error_type = %s"
                           " ORDER BY last_seen DESC LIMIT 1", (error_type,)).fetchone()
    return row[0]


def main(dsn: str) -> None:
    tracker = pg_observe.init_error_tracker(dsn, environment="demo", release="0.2.0", service="demo")
    failures = [
        lambda: parse_config("{broken"),
        lambda: charge(1001, -5),
        lambda: charge(1002, 0),
        lambda: lookup(42),
        lambda: 1 / 0,
    ]
    for i, fail in enumerate(failures):
        try:
            fail()
        except Exception as error:
            tracker.capture_exception(error, context={"user_id": i % 3, "request_id": f"req-{i}"})
    # Capture only queues (it never blocks the application); send what is queued now.
    tracker.flush()
    tracker.resolve_error(tracker_fingerprint(dsn, "ZeroDivisionError"), in_release="0.2.0")
    try:
        failures[-1]()  # the same error again, after it was resolved: a regression
    except ZeroDivisionError as error:
        tracker.capture_exception(error)
    tracker.flush()
    tracker.close()

    with psycopg.connect(dsn) as conn:
        print("Issues (monitoring.error_groups):")
        for row in conn.execute(
            "SELECT error_type, left(title, 56), fingerprint_method, occurrence_count, status,"
            " CASE WHEN regressed_at IS NOT NULL THEN 'regressed' ELSE '' END"
            " FROM monitoring.error_groups ORDER BY last_seen DESC LIMIT 10"
        ):
            print("  %-30s %-58s %-8s x%-3d %-10s %s" % row)
        print("\nActivity (monitoring.error_activity):")
        for row in conn.execute(
            "SELECT a.created_at::timestamp(0), g.error_type, a.action, a.details::text"
            " FROM monitoring.error_activity a JOIN monitoring.tb_error_log g USING (error_id)"
            " WHERE a.action <> 'first_seen' ORDER BY a.activity_id"
        ):
            print("  %s  %-20s %-10s %s" % row)
        print("\nLatest occurrences (monitoring.errors):")
        for row in conn.execute(
            "SELECT occurred_at::timestamp(0), exception_type, left(message, 50), context->>'request_id'"
            " FROM monitoring.errors ORDER BY occurred_at DESC LIMIT 5"
        ):
            print("  %s  %-24s %-52s %s" % row)
        print("\nMaintenance (monitoring.run_maintenance()):")
        for row in conn.execute("SELECT * FROM monitoring.run_maintenance()"):
            print("  %-22s %-34s %s" % row)
        jobs = conn.execute("SELECT jobname, schedule FROM cron.job WHERE jobname LIKE 'pg_observe%'").fetchall()
        print("\npg_cron jobs:", ", ".join(f"{name} ({schedule})" for name, schedule in jobs))


if __name__ == "__main__":
    main(sys.argv[1])
