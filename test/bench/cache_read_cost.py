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

import contextlib
import os
import random
import sys
from collections.abc import Iterator

import psycopg
from _harness import DSN
from bench_cache import BARE_STATEMENTS
from pg_observe.cache import _FAST_STATEMENTS

# (name, SQL, parameter types): the bare SQL and the client's own statements, as make bench's
# bench_cache.py runs them ($1 the key or keys, $2 the namespace)
SINGLE_KEY_STATEMENTS = [
    ("plain SELECT (superuser)", *BARE_STATEMENTS[b"pg_observe_cache_get"][:2]),
    ("cache_get_entry", *_FAST_STATEMENTS[b"pg_observe_cache_get"][:2]),
    ("cache_get", b"SELECT monitoring.cache_get($1, $2)", None),
]
BATCH_STATEMENTS = [
    ("plain SELECT of 100 keys, packed (superuser)", *BARE_STATEMENTS[b"pg_observe_cache_get_many"][:2]),
    ("cache_get_many_packed (100 keys)", *_FAST_STATEMENTS[b"pg_observe_cache_get_many"][:2]),
]
NAMESPACE = b"read-cost"


def backend_cpu_seconds(pid: int) -> float:
    # schedstat's first field is the time on a CPU in nanoseconds; /proc/<pid>/stat counts
    # ticks of 10 ms, a step of 2 µs per call over 5,000 batches
    with open(f"/proc/{pid}/schedstat") as schedstat:
        return int(schedstat.read().split()[0]) / 1e9


@contextlib.contextmanager
def pinned_connection(role: str | None) -> Iterator[psycopg.Connection]:
    """An autocommit connection (as the role, if any), this process and its backend pinned to
    vCPU 1: the backend's CPU time is then its own work, free of the scheduler's wake-ups."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        os.sched_setaffinity(0, {1})
        os.sched_setaffinity(conn.info.backend_pid, {1})
        yield conn


def measure(role: str | None, calls: int, rounds: int) -> None:
    with pinned_connection(role) as conn:
        pid = conn.info.backend_pid
        pgconn = conn.pgconn
        rng = random.Random(1)
        keys = [f"user:{rng.randrange(10000)}".encode() for _ in range(calls)]
        batches = [("{" + ",".join(f"user:{rng.randrange(11000)}" for _ in range(100)) + "}").encode()
                   for _ in range(max(calls // 20, 1))]
        cases = [(name, sql, types, keys) for name, sql, types in SINGLE_KEY_STATEMENTS]
        cases += [(name, sql, types, batches) for name, sql, types in BATCH_STATEMENTS]
        for number, (name, sql, types, arguments) in enumerate(cases):
            if role and "superuser" in name:
                continue
            statement = b"read_cost_%d" % number
            assert pgconn.prepare(statement, sql, types).status == psycopg.pq.ExecStatus.COMMAND_OK
            per_call = []
            for _ in range(rounds):
                for argument in arguments[:300]:
                    pgconn.exec_prepared(statement, [argument, NAMESPACE])
                before = backend_cpu_seconds(pid)
                for argument in arguments:
                    result = pgconn.exec_prepared(statement, [argument, NAMESPACE])
                per_call.append((backend_cpu_seconds(pid) - before) / len(arguments) * 1e6)
                assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
            print(f"{name + (' as ' + role if role else ''):52s} backend CPU µs/call: "
                  + ", ".join(f"{v:.1f}" for v in per_call))


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute("SELECT monitoring.cache_set_many(jsonb_object_agg('user:' || i, jsonb_build_object('id', i)),"
                     " interval '1 hour', %s) FROM generate_series(0, 9999) i", [NAMESPACE.decode()])
    try:
        measure(None, calls, rounds)
        measure("observe_writer", calls, rounds)
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute("SELECT monitoring.cache_delete_pattern('*', %s)", [NAMESPACE.decode()])


if __name__ == "__main__":
    main()
