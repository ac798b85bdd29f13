"""The client's simplest write (capture_event: one round trip into monitoring.capture_error,
through the grouping trigger and partition routing) against a bare single-row INSERT of the
same JSON into an unpartitioned table, on the same connection, interleaved."""

from __future__ import annotations

import pg_observe
import psycopg
from _harness import DSN, interleaved_latencies, percentile, report
from psycopg.types.json import Jsonb

ROUNDS = 3000
WARMUP = 200


def main() -> None:
    event = {
        "exception_type": "ValueError",
        "message": "order 1234 not found",
        "stack_trace": "Traceback (most recent call last):\n" + "  File \"app.py\", line 10, in handler\n" * 15,
        "context": {"user_id": 42, "request_id": "req-1", "path": "/orders/1234"},
        "environment": "bench",
    }
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_plain_insert (id bigserial PRIMARY KEY, payload jsonb NOT NULL)")
        tracker = pg_observe.init_error_tracker(DSN, environment="bench")

        def client_write() -> None:
            tracker.capture_event(event, conn=conn)

        def bare_insert() -> None:
            conn.execute("INSERT INTO bench_plain_insert (payload) VALUES (%s)", (Jsonb(event),))

        interleaved_latencies(client_write, bare_insert, WARMUP)
        client, bare = interleaved_latencies(client_write, bare_insert, ROUNDS)
    report("capture_round_trip_p50", percentile(client, 50), "ms", percentile(bare, 50),
           baseline_name="bare INSERT into an unpartitioned table, p50", rounds=ROUNDS)
    report("capture_round_trip_p99", percentile(client, 99), "ms", percentile(bare, 99),
           baseline_name="bare INSERT into an unpartitioned table, p99", rounds=ROUNDS)


if __name__ == "__main__":
    main()
