"""The PostgreSQL cache against a real Redis, in one run (issue 7's figures).

The benchmark starts Debian's redis-server on 127.0.0.1 (a free port, no persistence:
``--save '' --appendonly no``) and stops it at the end. Both sides are driven the same way: one
synchronous round trip per operation from Python, the value a small JSON object serialized by
the client (json.dumps / json.loads on the Redis side too), every SET with a TTL of an hour.
PostgreSQL is used through pg_observe's SyncPostgresCache on one autocommit connection per
client, as observe_writer (SET ROLE: the role applications have, whose privileges PostgreSQL
checks at every call, where a superuser's it skips); Redis through a minimal RESP client over
one socket per client (no dependency).

For GET, SET and DELETE, and their batched forms (get_many / MGET, set_many / a pipeline of
SET ... EX, delete_many / DEL k1 ... kn, BATCH keys per call), with 1 and 8 clients (processes,
so that the GIL does not serialize the clients), it reports p50 and p99 latency per call and
throughput, PostgreSQL as the value and Redis as the baseline: the ratio is PostgreSQL / Redis
(for latency lower is better, for throughput higher). Phases alternate the sides (the four
below) in two rounds, and the two rounds of each side are merged, so that a noisy neighbour hurts
both alike. The "ping" figures (SELECT 1 against PING) give the floor of one round trip on each
side: what no cache function can go below.

Two more sides run in the same rounds, for what the ratios mean:

- "redis_py": Redis through redis-py (its synchronous client, with hiredis), the library seed
  001's migration example starts from. The minimal client above spends almost no CPU of its
  own, so it is the harder baseline; redis-py is what a migrating application runs.
- "bare_sql": PostgreSQL through the same client code, its prepared statements swapped for the
  bare SQL of each operation (the upsert, the DELETE, the SELECT, as the superuser; no checks,
  no counting, no function call). Against Redis, it is the floor of these statements on this
  table from this client and machine; the cache against it is what pg_observe's functions add.
- "bare_lookup", for delete_many only: the bare SQL side with the DELETE swapped for a SELECT
  that finds the same 100 keys and deletes nothing. Against Redis's DEL it is what finding the
  rows alone costs, below which no way of deleting them by key can go.

PG_OBSERVE_BENCH_CACHE_OPS sets the single-key calls per phase (default 8000, split among the
clients; a tenth of that for batches), PG_OBSERVE_BENCH_CACHE_BATCH the keys per batch (default 100),
PG_OBSERVE_BENCH_CACHE_DSN another connection string for PostgreSQL (TCP, say).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any, Callable

import psycopg
import redis as redis_py
from _harness import DSN, percentile, report
from pg_observe import cache as cache_module
from pg_observe.cache import SyncPostgresCache

PG_DSN = os.environ.get("PG_OBSERVE_BENCH_CACHE_DSN") or DSN
OPS = int(os.environ.get("PG_OBSERVE_BENCH_CACHE_OPS", "8000"))
BATCH = int(os.environ.get("PG_OBSERVE_BENCH_CACHE_BATCH", "100"))
KEYS = 10_000
TTL = 3600
NAMESPACE = "bench"
ROUNDS = 2
PG_LIKE = ("postgresql", "bare_sql", "bare_lookup")
SYSTEMS = ("postgresql", "redis", "redis_py", "bare_sql", "bare_lookup")
# in the keys a delete phase deletes: two sides of one store never delete each other's keys
# (one letter each, so that every side's keys are as long)
SIDE_TAG = {"postgresql": "p", "redis": "r", "redis_py": "y", "bare_sql": "b", "bare_lookup": "l"}
REDIS_COMMANDS = {"ping": "PING (PostgreSQL: SELECT 1)", "get": "GET", "set": "SET EX", "delete": "DEL",
                  "get_many": "MGET", "set_many": "pipelined SET EX", "delete_many": "DEL k1 .. kn"}


def value_for(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user {i}", "email": f"user{i}@example.com", "roles": ["reader", "writer"],
            "active": True, "score": i * 0.5}


# The bare SQL of each call, under the names and with the parameters and result columns of the
# client's prepared statements (pg_observe.cache._FAST_STATEMENTS), so that the client code is
# the same on both PostgreSQL sides. The batch upsert keeps the key order (8 writers would
# deadlock otherwise); the deletes need not (each worker deletes keys of its own).
_LIVE = "(expires_at IS NULL OR expires_at > clock_timestamp())"
_UPSERT = ("INSERT INTO monitoring.cache_entries "
           "(namespace, key, value, value_bytes, value_type, expires_at, updated_at) {rows} "
           "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, value_bytes = NULL, "
           "value_type = 'json', expires_at = excluded.expires_at, updated_at = excluded.updated_at")
BARE_STATEMENTS = {
    b"pg_observe_cache_get": (
        f"SELECT value, value_bytes, value_type FROM monitoring.cache_entries "
        f"WHERE namespace = $2 AND key = $1 AND {_LIVE}".encode(), None, None),
    b"pg_observe_cache_set": (_UPSERT.format(
        rows="VALUES ($4, $1, $2::jsonb, NULL, 'json', clock_timestamp() + $3::interval, clock_timestamp())").encode(),
        None, None),
    b"pg_observe_cache_delete": (
        f"WITH gone AS (DELETE FROM monitoring.cache_entries WHERE namespace = $2 AND key = $1 RETURNING expires_at) "
        f"SELECT count(*) FILTER (WHERE {_LIVE}) > 0 FROM gone".encode(), None, None),
    b"pg_observe_cache_get_many": (
        f"SELECT COALESCE(json_object_agg(key, value) FILTER (WHERE value_type = 'json'), '{{}}'), "
        f"COALESCE(array_agg(key) FILTER (WHERE value_type <> 'json'), '{{}}'), "
        f"COALESCE(array_agg(value_bytes) FILTER (WHERE value_type <> 'json'), '{{}}'), "
        f"COALESCE(array_agg(value_type) FILTER (WHERE value_type <> 'json'), '{{}}') "
        f"FROM monitoring.cache_entries WHERE namespace = $2 AND key = ANY ($1) AND {_LIVE}".encode(),
        *cache_module._FAST_STATEMENTS[b"pg_observe_cache_get_many"][1:]),
    b"pg_observe_cache_set_many": (
        ("WITH stored AS (" + _UPSERT.format(
            rows="SELECT $3, m.key, m.value, NULL, 'json', clock_timestamp() + $2::interval, clock_timestamp() "
                 "FROM jsonb_each($1::jsonb) m ORDER BY m.key COLLATE \"C\"")
         + " RETURNING 1) SELECT count(*)::integer FROM stored").encode(), None, None),
    b"pg_observe_cache_delete_many": (
        f"WITH gone AS (DELETE FROM monitoring.cache_entries WHERE namespace = $2 AND key = ANY ($1) "
        f"RETURNING expires_at) SELECT (count(*) FILTER (WHERE {_LIVE}))::integer FROM gone".encode(),
        *cache_module._FAST_STATEMENTS[b"pg_observe_cache_delete_many"][1:]),
}
assert BARE_STATEMENTS.keys() == cache_module._FAST_STATEMENTS.keys()
# delete_many's keys found, not deleted: the part of its bare DELETE that finding the rows costs
BARE_LOOKUP = (
    f"SELECT (count(*) FILTER (WHERE {_LIVE}))::integer FROM monitoring.cache_entries "
    f"WHERE namespace = $2 AND key = ANY ($1)".encode(),
    *cache_module._FAST_STATEMENTS[b"pg_observe_cache_delete_many"][1:])


class Resp:
    """A minimal Redis client: one command, one round trip (or a pipeline of several)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    @staticmethod
    def encode(args: tuple[Any, ...]) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(out)

    def read(self) -> Any:
        line = self.reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.reader.read(size + 2)[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self.read() for _ in range(size)]
        raise RuntimeError(f"unexpected reply from Redis: {line!r}")

    def call(self, *args: Any) -> Any:
        self.sock.sendall(self.encode(args))
        return self.read()

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read() for _ in commands]

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", directory, "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            client = Resp(port)
            if client.call("PING") == "PONG":
                client.close()
                return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


# --- operations: (system, op) -> a function of (client, i) doing one call ---------------------------

def pg_ops(conn: psycopg.Connection, worker: int, phase: str, rng: random.Random) -> dict[str, Callable[[int], Any]]:
    cache = SyncPostgresCache(conn, namespace=NAMESPACE)
    return {
        "ping": lambda i: conn.execute("SELECT 1", prepare=True).fetchall(),
        "get": lambda i: cache.get(f"user:{rng.randrange(KEYS)}"),
        "set": lambda i: cache.set(f"user:{rng.randrange(KEYS)}", value_for(i), ttl=TTL),
        "delete": lambda i: cache.delete(f"del:{phase}:{worker}:{i}"),
        "get_many": lambda i: cache.get_many([f"user:{rng.randrange(KEYS)}" for _ in range(BATCH)]),
        "set_many": lambda i: cache.set_many({f"user:{rng.randrange(KEYS)}": value_for(j) for j in range(BATCH)},
                                             ttl=TTL),
        "delete_many": lambda i: cache.delete_many([f"del:{phase}:{worker}:{i}:{j}" for j in range(BATCH)]),
    }


def redis_ops(r: Resp, worker: int, phase: str, rng: random.Random) -> dict[str, Callable[[int], Any]]:
    def get(i: int) -> Any:
        raw = r.call("GET", f"{NAMESPACE}:user:{rng.randrange(KEYS)}")
        return json.loads(raw) if raw is not None else None

    def get_many(i: int) -> Any:
        keys = [f"user:{rng.randrange(KEYS)}" for _ in range(BATCH)]
        raws = r.call("MGET", *[f"{NAMESPACE}:{k}" for k in keys])
        return {k: json.loads(v) for k, v in zip(keys, raws) if v is not None}

    return {
        "ping": lambda i: r.call("PING"),
        "get": get,
        "set": lambda i: r.call("SET", f"{NAMESPACE}:user:{rng.randrange(KEYS)}", json.dumps(value_for(i)), "EX", TTL),
        "delete": lambda i: r.call("DEL", f"{NAMESPACE}:del:{phase}:{worker}:{i}"),
        "get_many": get_many,
        "set_many": lambda i: r.pipeline([("SET", f"{NAMESPACE}:user:{rng.randrange(KEYS)}", json.dumps(value_for(j)),
                                           "EX", TTL) for j in range(BATCH)]),
        "delete_many": lambda i: r.call("DEL", *[f"{NAMESPACE}:del:{phase}:{worker}:{i}:{j}" for j in range(BATCH)]),
    }


def redis_py_ops(r: redis_py.Redis, worker: int, phase: str,
                 rng: random.Random) -> dict[str, Callable[[int], Any]]:
    def get(i: int) -> Any:
        raw = r.get(f"{NAMESPACE}:user:{rng.randrange(KEYS)}")
        return json.loads(raw) if raw is not None else None

    def get_many(i: int) -> Any:
        keys = [f"user:{rng.randrange(KEYS)}" for _ in range(BATCH)]
        raws = r.mget([f"{NAMESPACE}:{k}" for k in keys])
        return {k: json.loads(v) for k, v in zip(keys, raws) if v is not None}

    def set_many(i: int) -> Any:
        pipe = r.pipeline(transaction=False)
        for j in range(BATCH):
            pipe.set(f"{NAMESPACE}:user:{rng.randrange(KEYS)}", json.dumps(value_for(j)), ex=TTL)
        return pipe.execute()

    return {
        "ping": lambda i: r.ping(),
        "get": get,
        "set": lambda i: r.set(f"{NAMESPACE}:user:{rng.randrange(KEYS)}", json.dumps(value_for(i)), ex=TTL),
        "delete": lambda i: r.delete(f"{NAMESPACE}:del:{phase}:{worker}:{i}"),
        "get_many": get_many,
        "set_many": set_many,
        "delete_many": lambda i: r.delete(*[f"{NAMESPACE}:del:{phase}:{worker}:{i}:{j}" for j in range(BATCH)]),
    }


def worker_main(system: str, op: str, phase: str, worker: int, calls: int, redis_port: int,
                barrier: Any, results: Any) -> None:
    rng = random.Random(worker * 7919 + len(phase))
    phase += SIDE_TAG[system]
    if system in ("bare_sql", "bare_lookup"):   # this process only: the same client, the bare statements
        cache_module._FAST_STATEMENTS.update(BARE_STATEMENTS)
    if system == "bare_lookup":
        cache_module._FAST_STATEMENTS[b"pg_observe_cache_delete_many"] = BARE_LOOKUP
    if system in PG_LIKE:
        conn = psycopg.connect(PG_DSN, autocommit=True)
        if system == "postgresql":   # as an application: PostgreSQL checks its privileges, a superuser's it skips
            conn.execute("SET ROLE observe_writer")
        client: Any = SyncPostgresCache(conn, namespace=NAMESPACE)
        ops = pg_ops(conn, worker, phase, rng)
        warm: Callable[[int], Any] = lambda i: client.get(f"user:{i}")  # noqa: E731
    elif system == "redis_py":
        client = redis_py.Redis(host="127.0.0.1", port=redis_port)
        ops = redis_py_ops(client, worker, phase, rng)
        warm = lambda i: client.get(f"{NAMESPACE}:user:{i}")  # noqa: E731
    else:
        client = Resp(redis_port)
        ops = redis_ops(client, worker, phase, rng)
        warm = lambda i: client.call("GET", f"{NAMESPACE}:user:{i}")  # noqa: E731
    for i in range(200):   # connections warm, statements prepared (psycopg prepares from the 5th call)
        warm(i)
    if op not in ("delete", "delete_many"):
        for i in range(20):
            ops[op](i)
    fn = ops[op]
    latencies = []
    barrier.wait()
    start = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        latencies.append((time.perf_counter() - t0) * 1000)
    end = time.perf_counter()
    if system in PG_LIKE and op != "ping" and f"pg_observe_cache_{op}".encode() not in (
            cache_module._prepared.get(conn) or ()):
        raise RuntimeError(f"{system} {op}: the client did not use its prepared statement")
    results.put((latencies, start, end))
    if system in PG_LIKE:
        conn.close()
    else:
        client.close()


def populate_deletes(system: str, redis_port: int, op: str, phase: str, clients: int, calls: int) -> None:
    """The keys a delete phase deletes: every call deletes keys that exist."""
    phase += SIDE_TAG[system]
    keys = [f"del:{phase}:{w}:{i}" for w in range(clients) for i in range(calls)]
    if op == "delete_many":
        keys = [f"{k}:{j}" for k in keys for j in range(BATCH)]
    if system in PG_LIKE:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            cache = SyncPostgresCache(conn, namespace=NAMESPACE)
            for start in range(0, len(keys), 5000):
                cache.set_many({k: 1 for k in keys[start:start + 5000]}, ttl=TTL)
    else:
        r = Resp(redis_port)
        for start in range(0, len(keys), 5000):
            r.pipeline([("SET", f"{NAMESPACE}:{k}", "1", "EX", TTL) for k in keys[start:start + 5000]])
        r.close()


def run_phase(system: str, op: str, clients: int, calls: int, redis_port: int, phase: str) -> tuple[list[float], float]:
    if op in ("delete", "delete_many"):
        populate_deletes(system, redis_port, op, phase, clients, calls)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(clients)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(system, op, phase, w, calls, redis_port, barrier, results))
             for w in range(clients)]
    for p in procs:
        p.start()
    gathered = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{system} {op} worker failed")
    latencies = [lat for g in gathered for lat in g[0]]
    elapsed = max(g[2] for g in gathered) - min(g[1] for g in gathered)
    return latencies, clients * calls / elapsed


def setting(conn: psycopg.Connection, name: str) -> str:
    return str(conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0])


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="pg_observe_bench_redis_")
    redis, port = start_redis(workdir)
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute("SELECT monitoring.cache_delete_pattern('*', %s)", (NAMESPACE,))
            cache = SyncPostgresCache(conn, namespace=NAMESPACE)
            for start in range(0, KEYS, 1000):
                cache.set_many({f"user:{i}": value_for(i) for i in range(start, start + 1000)}, ttl=TTL)
            server = {"pg_transport": "unix socket" if conn.info.host.startswith("/") else "tcp " + conn.info.host,
                      "pg_fsync": setting(conn, "fsync"), "pg_synchronous_commit": setting(conn, "synchronous_commit"),
                      "pg_shared_buffers": setting(conn, "shared_buffers"),
                      "pg_wal_writer_flush_after": setting(conn, "wal_writer_flush_after"),
                      "pg_version": setting(conn, "server_version")}
        r = Resp(port)
        r.pipeline([("SET", f"{NAMESPACE}:user:{i}", json.dumps(value_for(i)), "EX", TTL) for i in range(KEYS)])
        server["redis_version"] = r.call("INFO", "server").decode().split("redis_version:")[1].split()[0]
        r.close()
        common = {"cpus": os.cpu_count(), "keys": KEYS, "ttl_seconds": TTL, "redis_transport": "tcp 127.0.0.1",
                  **server}
        redis_py_client = {"redis_py_version": redis_py.__version__, "hiredis": redis_py.utils.HIREDIS_AVAILABLE}

        for op in ("ping", "get", "set", "delete", "get_many", "set_many", "delete_many"):
            batched = op.endswith("_many")
            for clients in (1, 8):
                total = max(OPS // 10 if batched else OPS, clients)
                calls = total // clients
                systems = [system for system in SYSTEMS if not (op == "ping" and system == "bare_sql")
                           and (op == "delete_many" or system != "bare_lookup")]
                lat: dict[str, list[float]] = {system: [] for system in systems}
                rates: dict[str, list[float]] = {system: [] for system in systems}
                for rnd in range(ROUNDS):
                    for system in systems:
                        latencies, rate = run_phase(system, op, clients, calls, port, f"{op}{clients}r{rnd}")
                        lat[system] += latencies
                        rates[system].append(rate)
                keys_per_call = BATCH if batched else 1
                extra = {"clients": clients, "calls": total * ROUNDS, "keys_per_call": keys_per_call,
                         "redis_command": REDIS_COMMANDS[op],
                         **common}
                p50 = {system: percentile(lat[system], 50) for system in systems}
                for q in (50, 99):
                    report(f"cache_{op}_{clients}c_p{q}_ms", percentile(lat["postgresql"], q), "ms",
                           percentile(lat["redis"], q), baseline_name="Redis", lower_is_better=True, **extra)
                pg_rate = sum(rates["postgresql"]) / ROUNDS * keys_per_call
                redis_rate = sum(rates["redis"]) / ROUNDS * keys_per_call
                report(f"cache_{op}_{clients}c_keys_per_second", pg_rate, "keys/s", redis_rate,
                       baseline_name="Redis", lower_is_better=False, **extra)
                report(f"cache_{op}_{clients}c_p50_ms_vs_redis_py", p50["postgresql"], "ms", p50["redis_py"],
                       baseline_name="Redis through redis-py", lower_is_better=True, **extra, **redis_py_client)
                if "bare_sql" in systems:
                    report(f"cache_{op}_{clients}c_bare_sql_p50_ms", p50["bare_sql"], "ms", p50["redis"],
                           value_name="the bare SQL statement", baseline_name="Redis", lower_is_better=True, **extra)
                    report(f"cache_{op}_{clients}c_p50_ms_vs_bare_sql", p50["postgresql"], "ms", p50["bare_sql"],
                           baseline_name="the bare SQL statement", lower_is_better=True, **extra)
                if "bare_lookup" in systems:
                    report(f"cache_{op}_{clients}c_bare_lookup_p50_ms", p50["bare_lookup"], "ms", p50["redis"],
                           value_name="the bare SELECT of the same keys (found, not deleted)", baseline_name="Redis",
                           lower_is_better=True, **extra)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute("SELECT monitoring.cache_delete_pattern('*', %s)", (NAMESPACE,))
    finally:
        redis.terminate()
        try:
            redis.wait(timeout=10)
        except subprocess.TimeoutExpired:
            redis.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
