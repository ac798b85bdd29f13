"""One event per round trip: the client's write call (queue_error: one INSERT into the capture
queue, grouped later in batches) against a bare single-row INSERT of the same JSON into an
unpartitioned table, on the same connection, interleaved. Then what the queue defers: the
drain of those events through the full capture path, per event. And, for comparison, the
synchronous capture_event (the full path in the round trip) against the same baseline."""

from __future__ import annotations

import time

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

        def queue_write() -> None:
            tracker.queue_error(event, conn=conn)

        def sync_write() -> None:
            tracker.capture_event(event, conn=conn)

        def bare_insert() -> None:
            conn.execute("INSERT INTO bench_plain_insert (payload) VALUES (%s)", (Jsonb(event),))

        interleaved_latencies(queue_write, bare_insert, WARMUP)
        queued, bare = interleaved_latencies(queue_write, bare_insert, ROUNDS)

        waiting = conn.execute("SELECT count(*) FROM monitoring.error_queue").fetchone()[0]
        start = time.perf_counter()
        while conn.execute("SELECT monitoring.process_error_queue(1000)").fetchone()[0]:
            pass
        drain_ms = (time.perf_counter() - start) * 1000

        interleaved_latencies(sync_write, bare_insert, WARMUP)
        sync, sync_bare = interleaved_latencies(sync_write, bare_insert, ROUNDS)
    report("capture_round_trip_p50", percentile(queued, 50), "ms", percentile(bare, 50),
           baseline_name="bare INSERT into an unpartitioned table, p50", call="queue_error", rounds=ROUNDS)
    report("capture_round_trip_p99", percentile(queued, 99), "ms", percentile(bare, 99),
           baseline_name="bare INSERT into an unpartitioned table, p99", call="queue_error", rounds=ROUNDS)
    report("queued_capture_drain_per_event", drain_ms / waiting, "ms", percentile(bare, 50),
           baseline_name="bare INSERT into an unpartitioned table, p50", events=waiting,
           note="process_error_queue(1000) until empty: the deferred work of each queued event")
    report("capture_event_round_trip_p50", percentile(sync, 50), "ms", percentile(sync_bare, 50),
           baseline_name="bare INSERT into an unpartitioned table, p50", call="capture_event (synchronous)",
           rounds=ROUNDS)


if __name__ == "__main__":
    main()
