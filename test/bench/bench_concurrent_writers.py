"""8 concurrent writers, each on its own connection capturing one event per round trip, all on
ONE fingerprint, against 8 writers on distinct fingerprints, in the same run."""

from __future__ import annotations

import os
import threading
import time

import psycopg
from _harness import DSN, report
from psycopg.types.json import Jsonb

WRITERS = 8
SECONDS = float(os.environ.get("PG_OBSERVE_BENCH_SECONDS", "10"))


def run(same_fingerprint: bool) -> float:
    counts = [0] * WRITERS
    stop = time.monotonic() + SECONDS
    barrier = threading.Barrier(WRITERS)

    def writer(w: int) -> None:
        with psycopg.connect(DSN, autocommit=True) as conn:
            fp = "hot-fingerprint" if same_fingerprint else f"cold-fingerprint-{w}"
            event = {"exception_type": "Contention", "message": "writer", "fingerprint": [fp],
                     "context": {"writer": w}}
            barrier.wait()
            while time.monotonic() < stop:
                conn.execute("SELECT monitoring.capture_error(%s)", (Jsonb(event),))
                counts[w] += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / SECONDS


def main() -> None:
    distinct = run(same_fingerprint=False)
    same = run(same_fingerprint=True)
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SELECT * FROM monitoring.run_maintenance()")
        exact = conn.execute(
            "SELECT occurrence_count,"
            " (SELECT count(*) FROM monitoring.tb_error_occurrence o WHERE o.error_id = g.error_id)"
            " FROM monitoring.tb_error_log g WHERE error_fingerprint = 'hot-fingerprint'").fetchone()
    report("one_fingerprint_8_writers_throughput", same, "captures/s", distinct,
           baseline_name="8 writers on distinct fingerprints", writers=WRITERS, seconds=SECONDS,
           hot_group_count_matches_rows=bool(exact and exact[0] == exact[1]))


if __name__ == "__main__":
    main()
