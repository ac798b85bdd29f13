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

    with psycopg.connect(dsn) as conn:
        print("Error groups (monitoring.tb_error_log):")
        for row in conn.execute(
            "SELECT error_type, left(error_message, 60), occurrence_count, status"
            " FROM monitoring.tb_error_log ORDER BY last_seen DESC LIMIT 10"
        ):
            print("  %-24s %-62s x%-3d %s" % row)
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
