"""Where the backend CPU of a 100-key delete_many goes: a diagnostic, not part of make bench.

Runs prepared statements in a loop on one connection, the client and its backend pinned to one
vCPU (Linux only), and reads the backend's CPU time from /proc/<pid>/schedstat, as
cache_read_cost.py does. Every statement gets what make bench's delete_many sends (an array of
100 keys in binary, keys "del:<i>:<j>" that exist, and the namespace) and does a little more
than the one before it: a statement that only reads the array's length (the floor of one call
with that parameter), a SELECT of the array's first key, a SELECT of all 100 (found, not
deleted), the bare DELETE of make bench's bare SQL side, and the client's cache_delete_many as
observe_writer. The statements that delete get keys of their own, written before each round.

    PG_OBSERVE_BENCH_DSN="host=... dbname=..." python test/bench/cache_delete_cost.py [calls] [rounds]

docs/cache.md ("Why delete_many cannot reach 1.5x on PostgreSQL 15") has the figures.
"""

from __future__ import annotations

import sys

import psycopg
from _harness import DSN
from bench_cache import BARE_LOOKUP, BARE_STATEMENTS
from cache_read_cost import backend_cpu_seconds, pinned_connection
from pg_observe.cache import _FAST_STATEMENTS, _text_array

NAMESPACE = "delete-cost"
BATCH = 100
_PARAMETERS, _FORMATS = _FAST_STATEMENTS[b"pg_observe_cache_delete_many"][1:]
# (name, SQL, role, deletes): each does a little more than the one before
CASES = [
    ("the array's length only", b"SELECT cardinality($1) + octet_length($2::text)", None, False),
    ("SELECT of the first key", b"SELECT count(*)::integer FROM monitoring.cache_entries "
                                b"WHERE namespace = $2 AND key = ANY (($1)[1:1])", None, False),
    ("SELECT of the 100 keys", BARE_LOOKUP[0], None, False),
    ("bare DELETE of the 100 keys", BARE_STATEMENTS[b"pg_observe_cache_delete_many"][0], None, True),
    ("cache_delete_many as observe_writer", _FAST_STATEMENTS[b"pg_observe_cache_delete_many"][0],
     "observe_writer", True),
]


def keys_of(tag: str, calls: int) -> list[list[str]]:
    return [[f"del:{tag}:{i}:{j}" for j in range(BATCH)] for i in range(calls)]


def write(conn: psycopg.Connection, batches: list[list[str]]) -> None:
    keys = [k for batch in batches for k in batch]
    for start in range(0, len(keys), 10_000):
        conn.execute("SELECT monitoring.cache_set_many(jsonb_object_agg(k, 1), interval '1 hour', %s)"
                     " FROM unnest(%s::text[]) k", [NAMESPACE, keys[start:start + 10_000]])


def measure(sql: bytes, role: str | None, arrays: list[bytes], warm: list[bytes]) -> tuple[float, bytes]:
    """Backend CPU µs per call of one statement over the arrays, and the last call's result."""
    with pinned_connection(role) as conn:
        pid = conn.info.backend_pid
        pgconn = conn.pgconn
        prepared = pgconn.prepare(b"delete_cost", sql, _PARAMETERS)
        assert prepared.status == psycopg.pq.ExecStatus.COMMAND_OK, prepared.error_message
        for array in warm:
            pgconn.exec_prepared(b"delete_cost", [array, NAMESPACE.encode()], _FORMATS)
        before = backend_cpu_seconds(pid)
        for array in arrays:
            result = pgconn.exec_prepared(b"delete_cost", [array, NAMESPACE.encode()], _FORMATS)
        cpu = (backend_cpu_seconds(pid) - before) / len(arrays) * 1e6
        assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
        return cpu, result.get_value(0, 0)


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    found = keys_of("found", calls)
    found_arrays = [_text_array(batch) for batch in found]
    # the deleting statements warm up on keys that do not exist: they delete nothing there
    absent_arrays = [_text_array(batch) for batch in keys_of("absent", 200)]
    per_call: dict[str, list[float]] = {name: [] for name, *_ in CASES}
    with psycopg.connect(DSN, autocommit=True) as setup:
        write(setup, found)
        try:
            for rnd in range(rounds):
                for number, (name, sql, role, deletes) in enumerate(CASES):
                    arrays = found_arrays
                    if deletes:   # keys of its own
                        batches = keys_of(f"r{rnd}c{number}", calls)
                        write(setup, batches)
                        arrays = [_text_array(batch) for batch in batches]
                    setup.execute("VACUUM ANALYZE monitoring.cache_entries")
                    cpu, last = measure(sql, role, arrays, absent_arrays if deletes else found_arrays[:200])
                    if deletes:   # every call deleted 100 live keys
                        assert last == str(BATCH).encode(), last
                    per_call[name].append(cpu)
        finally:
            setup.execute("SELECT monitoring.cache_delete_pattern('*', %s)", [NAMESPACE])
    for name, values in per_call.items():
        print(f"{name:40s} backend CPU µs/call: " + ", ".join(f"{v:.1f}" for v in values))


if __name__ == "__main__":
    main()
