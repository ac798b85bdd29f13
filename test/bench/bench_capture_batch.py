"""Batch capture through the full path (capture_errors: mapping, dedupe, scrubbing, fingerprint,
grouping, partition routing) against COPY of the same rows into the same occurrences table with
its triggers off, in the same run. Then the storage per occurrence.

PG_OBSERVE_BENCH_EVENTS sets the number of events (default 100000)."""

from __future__ import annotations

import json
import os
import time

import psycopg
from _events import events
from _harness import DSN, report
from psycopg.types.json import Jsonb

COUNT = int(os.environ.get("PG_OBSERVE_BENCH_EVENTS", "100000"))
BATCH = 1000
COLUMNS = ("event_id", "exception_type", "message", "stack_trace", "frames", "context", "user_info", "environment",
           "release_version", "service", "trace_id", "span_id")


def main() -> None:
    evs = events(COUNT)
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("TRUNCATE monitoring.tb_error_log CASCADE")
        # Baseline: COPY of the same rows, triggers off (session_replication_role = replica).
        start = time.perf_counter()
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            with conn.cursor().copy(f"COPY monitoring.tb_error_occurrence ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for e in evs:
                    copy.write_row((e["event_id"], e["exception_type"], e["message"], e["stack_trace"],
                                    json.dumps(e["frames"]), json.dumps(e["context"]), json.dumps(e["user"]),
                                    e["environment"], e["release"], e["service"], e["trace_id"], e["span_id"]))
        copy_seconds = time.perf_counter() - start
        conn.execute("TRUNCATE monitoring.tb_error_occurrence")

        start = time.perf_counter()
        for i in range(0, COUNT, BATCH):
            conn.execute("SELECT monitoring.capture_errors(%s)", (Jsonb(evs[i:i + BATCH]),))
        capture_seconds = time.perf_counter() - start

        stored, groups = conn.execute(
            "SELECT (SELECT count(*) FROM monitoring.tb_error_occurrence),"
            " (SELECT count(*) FROM monitoring.tb_error_log)"
        ).fetchone()
        conn.execute("ANALYZE monitoring.tb_error_occurrence")
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'monitoring.tb_error_occurrence'::regclass").fetchone()[0]
    report("batch_capture_rows_per_second", COUNT / capture_seconds, "rows/s", COUNT / copy_seconds,
           baseline_name="COPY of the same rows, triggers off", events=COUNT, batch=BATCH,
           stored=stored, groups=groups, capture_seconds=round(capture_seconds, 2), copy_seconds=round(copy_seconds, 2))
    report("storage_bytes_per_occurrence", size / stored, "bytes", 1.5 * 1024,
           baseline_name="seed 000's claim: 1.5 KB per error (table and indexes)")


if __name__ == "__main__":
    main()
