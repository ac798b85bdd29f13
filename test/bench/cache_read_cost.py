"""Backend CPU per cache read, without the scheduler: a diagnostic, not part of make bench.

Runs prepared statements in a loop on one connection, the client and its backend pinned to one
vCPU (Linux only), and reads the backend's CPU time from /proc/<pid>/schedstat: what one call
costs the server, free of the wake-ups that dominate a small call's latency on a busy 2-vCPU
machine. Each single-key statement reads a random key of 10,000 in the namespace 'read-cost';
each batch statement 100 random keys of 11,000, one batch per 20 single calls, so that nearly
every batch misses some keys and counts its distinct keys (in make bench's get_many every key
exists, and only a batch with a repeated key counts them); as the superuser and as
observe_writer (whose privileges PostgreSQL checks at every execution).

    PG_OBSERVE_BENCH_DSN="host=... dbname=..." python test/bench/cache_read_cost.py [calls] [rounds]

docs/cache.md ("The read's cost") has the figures.
"""

from __future__ import annotations

import os
import random
import sys

import psycopg
from _harness import DSN

STATEMENTS = {
    "plain SELECT (superuser)": "SELECT value, value_bytes, value_type FROM monitoring.cache_entries"
                                " WHERE namespace = 'read-cost' AND key = $1"
                                " AND (expires_at IS NULL OR expires_at > clock_timestamp())",
    "cache_get_entry": "SELECT value, value_bytes, value_type FROM monitoring.cache_get_entry($1, 'read-cost')",
    "cache_get": "SELECT monitoring.cache_get($1, 'read-cost')",
}
BATCH_STATEMENTS = {
    "plain SELECT of 100 keys, packed (superuser)":
        "SELECT COALESCE(json_object_agg(key, value) FILTER (WHERE value_type = 'json'), '{}'),"
        " COALESCE(array_agg(key) FILTER (WHERE value_type <> 'json'), '{}'),"
        " COALESCE(array_agg(value_bytes) FILTER (WHERE value_type <> 'json'), '{}'),"
        " COALESCE(array_agg(value_type) FILTER (WHERE value_type <> 'json'), '{}')"
        " FROM monitoring.cache_entries WHERE namespace = 'read-cost' AND key = ANY ($1::text[])"
        " AND (expires_at IS NULL OR expires_at > clock_timestamp())",
    "cache_get_many_packed (100 keys)":
        "SELECT json_values, other_keys, other_values, other_types"
        " FROM monitoring.cache_get_many_packed($1::text[], 'read-cost')",
}


def backend_cpu_seconds(pid: int) -> float:
    # schedstat's first field is the time on a CPU in nanoseconds; /proc/<pid>/stat counts
    # ticks of 10 ms, a step of 2 µs per call over 5,000 batches
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0]) / 1e9


def measure(role: str | None, calls: int, rounds: int) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        pid = conn.info.backend_pid
        os.sched_setaffinity(0, {1})
        os.sched_setaffinity(pid, {1})
        pgconn = conn.pgconn
        rng = random.Random(1)
        keys = [f"user:{rng.randrange(10000)}".encode() for _ in range(calls)]
        batches = [("{" + ",".join(f"user:{rng.randrange(11000)}" for _ in range(100)) + "}").encode()
                   for _ in range(max(calls // 20, 1))]
        cases = [(name, sql, keys) for name, sql in STATEMENTS.items()]
        cases += [(name, sql, batches) for name, sql in BATCH_STATEMENTS.items()]
        for number, (name, sql, arguments) in enumerate(cases):
            if role and "superuser" in name:
                continue
            statement = b"read_cost_%d" % number
            assert pgconn.prepare(statement, sql.encode()).status == psycopg.pq.ExecStatus.COMMAND_OK
            per_call = []
            for _ in range(rounds):
                for argument in arguments[:300]:
                    pgconn.exec_prepared(statement, [argument])
                before = backend_cpu_seconds(pid)
                for argument in arguments:
                    result = pgconn.exec_prepared(statement, [argument])
                per_call.append((backend_cpu_seconds(pid) - before) / len(arguments) * 1e6)
                assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
            print(f"{name + (' as ' + role if role else ''):52s} backend CPU µs/call: "
                  + ", ".join(f"{v:.1f}" for v in per_call))


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SELECT monitoring.cache_set_many(jsonb_object_agg('user:' || i, jsonb_build_object('id', i)),"
                     " interval '1 hour', 'read-cost') FROM generate_series(0, 9999) i")
    try:
        measure(None, calls, rounds)
        measure("observe_writer", calls, rounds)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute("SELECT monitoring.cache_delete_pattern('*', 'read-cost')")


if __name__ == "__main__":
    main()
