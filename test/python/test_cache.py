"""The PostgreSQL cache through pg_observe.PostgresCache (asyncio) and SyncPostgresCache:
seed 001's examples as written, every method, values of every type, bad input, concurrency
from 8 connections, pools and transactions, statistics, privileges, and what UNLOGGED means
after a crash and on a streaming replica (a throwaway cluster of its own)."""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pg_observe
import psycopg
import pytest
from pg_observe import PostgresCache, SyncPostgresCache
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool

MISSING = object()


def stats(dsn: str, namespace: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT hits, misses, sets FROM monitoring.cache_stats WHERE namespace = %s",
                           (namespace,)).fetchone()
    return row if row else (0, 0, 0)


# ---------------------------------------------------------------- seed 001, as written

def test_seed_migration_example_as_written(dsn: str) -> None:
    """Seed 001, "Migrating from Redis", After: the same four lines, on an AsyncConnectionPool."""
    async def main() -> object:
        async with AsyncConnectionPool(dsn, open=False) as db_pool:
            from pg_observe import PostgresCache

            cache = PostgresCache(db_pool)

            await cache.set("key", "value", ttl=3600)
            value = await cache.get("key")
            return value

    assert asyncio.run(main()) == "value"


def test_seed_setup_example_as_written(dsn: str) -> None:
    """Seed 001, "PostgreSQL Caching", Setup, with its data."""
    user_data = {"id": 123, "name": "Ada", "roles": ["admin"]}
    product1, product2, product3 = {"sku": 1}, {"sku": 2, "tags": ["x"]}, {"sku": 3, "price": 9.5}

    async def main() -> tuple:
        async with AsyncConnectionPool(dsn, open=False) as db_pool:
            cache = PostgresCache(db_pool)

            await cache.set("user:123", user_data, ttl=3600)  # 1 hour TTL
            value = await cache.get("user:123")
            got = value
            await cache.delete("user:123")
            after_delete = await cache.get("user:123")

            await cache.set("user:1", 1)
            await cache.set("user:2", 2)
            await cache.delete_pattern("user:*")  # Clear all user caches
            after_pattern = await cache.get_many(["user:1", "user:2"])

            await cache.set_many({
                "product:1": product1,
                "product:2": product2,
                "product:3": product3
            }, ttl=1800)

            values = await cache.get_many(["product:1", "product:2", "product:3"])
            ttl = await cache.ttl("product:2")
            return got, after_delete, after_pattern, values, ttl

    got, after_delete, after_pattern, values, ttl = asyncio.run(main())
    assert got == user_data
    assert after_delete is None
    assert after_pattern == {}
    assert values == {"product:1": product1, "product:2": product2, "product:3": product3}
    assert 1790 < ttl <= 1800


def test_shared_across_instances(dsn: str) -> None:
    """Seed 001: what one application instance sets, another (its own pool) reads at once."""
    with ConnectionPool(dsn, min_size=1, max_size=2) as pool_1, ConnectionPool(dsn, min_size=1, max_size=2) as pool_2:
        SyncPostgresCache(pool_1).set("config:feature_flags", {"new_ui": True})
        assert SyncPostgresCache(pool_2).get("config:feature_flags") == {"new_ui": True}


# ---------------------------------------------------------------- every method, sync and async

def test_every_method_sync(dsn: str) -> None:
    with SyncPostgresCache(dsn, namespace="app") as cache:
        cache.set("a", {"x": 1}, ttl=60)
        assert cache.get("a") == {"x": 1}
        assert cache.get("nope") is None
        assert cache.get("nope", MISSING) is MISSING
        assert 59 < cache.ttl("a") <= 60
        assert cache.exists("a") and not cache.exists("nope")
        assert cache.expire("a", None) is True
        assert cache.ttl("a") == -1.0
        assert cache.expire("nope", 5) is False
        assert cache.ttl("nope") == -2.0
        assert cache.set_many({"b:1": 1, "b:2": b"\x00two", "b:3": "th\x00ree"}, ttl=datetime.timedelta(minutes=5)) == 3
        assert cache.get_many(["b:3", "nope", "b:1", "b:2"]) == {"b:3": "th\x00ree", "b:1": 1, "b:2": b"\x00two"}
        assert list(cache.get_many(["b:3", "b:1"])) == ["b:3", "b:1"], "in the order asked"
        assert cache.keys("b:*") == ["b:1", "b:2", "b:3"]
        assert cache.keys("b:*", limit=1) == ["b:1"]
        assert cache.incr("n") == 1
        assert cache.incr("n", 9) == 10
        assert cache.incr("rate", ttl=30) == 1 and 29 < cache.ttl("rate") <= 30
        assert cache.set_if_absent("lock", "me", ttl=30) is True
        assert cache.set_if_absent("lock", "you", ttl=30) is False
        assert cache.get("lock") == "me"
        assert cache.delete("lock") is True and cache.delete("lock") is False
        assert cache.delete_many(["b:1", "b:2", "nope"]) == 2
        assert cache.delete_pattern("b:*") == 1
        assert cache.clear() == 3   # a, n, rate
        assert cache.keys() == []
        assert cache.set_many({}) == 0 and cache.get_many([]) == {}


def test_every_method_async(dsn: str) -> None:
    async def main() -> None:
        async with PostgresCache(dsn, namespace="app") as cache:
            await cache.set("a", {"x": 1}, ttl=60)
            assert await cache.get("a") == {"x": 1}
            assert await cache.get("nope", MISSING) is MISSING
            assert 59 < await cache.ttl("a") <= 60
            assert await cache.exists("a") and not await cache.exists("nope")
            assert await cache.expire("a", None) is True
            assert await cache.ttl("a") == -1.0
            assert await cache.set_many({"b:1": 1, "b:2": b"two"}, ttl=300) == 2
            assert await cache.get_many(["b:1", "b:2", "b:9"]) == {"b:1": 1, "b:2": b"two"}
            assert await cache.keys("b:?") == ["b:1", "b:2"]
            assert await cache.incr("n", 5) == 5
            assert await cache.set_if_absent("lock", 1) is True
            assert await cache.set_if_absent("lock", 2) is False
            assert await cache.delete("lock") is True
            assert await cache.delete_many(["b:1"]) == 1
            assert await cache.delete_pattern("b:*") == 1
            assert await cache.clear() == 2

    asyncio.run(main())


def test_async_connection_and_namespaces(dsn: str) -> None:
    async def main() -> tuple:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        try:
            one, two = PostgresCache(conn, namespace="one"), PostgresCache(conn, namespace="two")
            await one.set("k", "from one")
            await two.set("k", "from two")
            result = (await one.get("k"), await two.get("k"), await one.delete_pattern("*"), await two.get("k"))
        finally:
            await conn.close()
        return result

    assert asyncio.run(main()) == ("from one", "from two", 1, "from two")


# ---------------------------------------------------------------- values

@pytest.mark.parametrize("value", [
    {"nested": {"list": [1, 2.5, None, True, "é"]}}, [1, "two", [3]], 0, -7, 2 ** 100, 3.25, True, False, "",
    "plain", "emoji 🎉 and ünïcode", "with\x00nul", "\x00", b"", b"\x00\xff\x00", "42",
])
def test_values_round_trip_exactly(dsn: str, value: object) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        cache.set("v", value)
        got = cache.get("v", MISSING)
        assert got == value and type(got) is type(value)
        cache.set_many({"v2": value})
        assert cache.get_many(["v2"]) == {"v2": value}


def test_value_conversions_are_json_semantics(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        cache.set("tuple", (1, 2))
        assert cache.get("tuple") == [1, 2]
        cache.set("intkeys", {1: "a"})
        assert cache.get("intkeys") == {"1": "a"}
        cache.set("bytearray", bytearray(b"ab"))
        assert cache.get("bytearray") == b"ab"
        cache.set("none", None)
        assert cache.get("none", MISSING) is None, "None is stored (JSON null): get(key, default) tells it from absent"
        with pytest.raises(ValueError):
            cache.set("nan", float("nan"))
        with pytest.raises(TypeError):
            cache.set("set", {1, 2})
        with pytest.raises(TypeError):
            cache.set_if_absent("lock", b"bytes")


def test_a_value_of_100_mb(dsn: str) -> None:
    """Documented behaviour: values are limited by PostgreSQL only; 100 MB takes seconds, not an error."""
    big_bytes = os.urandom(100 * 1024 * 1024)
    big_text = "x" * (100 * 1024 * 1024)
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        started = time.monotonic()
        cache.set("big:bytes", big_bytes)
        assert cache.get("big:bytes") == big_bytes
        cache.set("big:json", big_text)
        assert cache.get("big:json") == big_text
        assert time.monotonic() - started < 120
        size, = conn.execute("SELECT pg_column_size(value) FROM monitoring.cache_entries"
                             " WHERE key = 'big:json'").fetchone()
        assert size < 10 * 1024 * 1024, "a compressible value is stored compressed (TOAST)"
        assert cache.delete_many(["big:bytes", "big:json"]) == 2


# ---------------------------------------------------------------- bad input

def test_bad_keys_and_ttls(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        cache.set("", "empty key")
        assert cache.get("") == "empty key"
        cache.set("k" * 1024, 1)
        with pytest.raises(pg_errors.ProgramLimitExceeded, match="1048576 bytes is longer than the limit of 1024"):
            cache.set("k" * 1024 * 1024, 1)
        assert cache.get("k" * 1024 * 1024) is None
        with pytest.raises(ValueError, match="NUL"):
            cache.set("a\x00b", 1)
        with pytest.raises(ValueError, match="NUL"):
            cache.get_many(["ok", "a\x00b"])
        with pytest.raises(TypeError):
            cache.set(b"bytes-key", 1)   # type: ignore[arg-type]
        with pytest.raises(TypeError):
            cache.get_many("abc")
        for ttl in (0, -1, -0.5, datetime.timedelta(0), datetime.timedelta(seconds=-3)):
            with pytest.raises(ValueError, match="ttl must be positive"):
                cache.set("t", 1, ttl=ttl)
        with pytest.raises(TypeError):
            cache.set("t", 1, ttl=True)
        with pytest.raises(TypeError):
            cache.set("t", 1, ttl="60")   # type: ignore[arg-type]
        assert cache.get("t") is None
        cache.set("t", 1, ttl=datetime.timedelta(days=365 * 100))
        assert cache.ttl("t") > 99 * 365 * 86400
        with pytest.raises(pg_errors.DatetimeFieldOverflow):
            cache.set("t", 1, ttl=datetime.timedelta(days=999_999_999))
        with pytest.raises(TypeError):
            cache.incr("n", 1.5)   # type: ignore[arg-type]
        cache.set("s", "text")
        with pytest.raises(pg_errors.WrongObjectType, match="does not hold an integer"):
            cache.incr("s")
    with pytest.raises(TypeError, match="SyncPostgresCache"):
        PostgresCache(ConnectionPool(dsn, open=False))   # type: ignore[arg-type]
    with pytest.raises(TypeError, match="PostgresCache"):
        SyncPostgresCache(AsyncConnectionPool(dsn, open=False))   # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SyncPostgresCache(dsn, namespace="a\x00b")


def test_expiry_with_the_clock(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        cache.set("short", "soon gone", ttl=0.3)
        cache.set_many({"m1": 1, "m2": 2}, ttl=0.3)
        cache.incr("counter", ttl=0.3)
        assert cache.get("short") == "soon gone"
        time.sleep(0.5)
        assert cache.get("short") is None, "an expired key is never returned, before any cleanup"
        assert cache.get_many(["m1", "m2"]) == {}
        assert cache.incr("counter") == 1, "an expired counter starts again"
        assert cache.set_if_absent("short", "again") is True
        rows, = conn.execute("SELECT count(*) FROM monitoring.cache_entries"
                             " WHERE expires_at <= clock_timestamp()").fetchone()
        assert rows == 2
        assert conn.execute("SELECT monitoring.expire_cache()").fetchone()[0] == "2 expired cache entries deleted"


# ---------------------------------------------------------------- concurrency

def run_threads(count: int, target: Callable[..., None], *args: object) -> list[BaseException]:
    failures: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n, *args)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return failures


def test_eight_connections_set_and_delete_one_key(dsn: str) -> None:
    """Documented behaviour: no error, no lost update; the key ends absent or with one writer's value."""
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cache = SyncPostgresCache(conn)
            barrier.wait()
            for i in range(150):
                if (i + n) % 3:
                    cache.set("hot", {"writer": n, "i": i}, ttl=60)
                else:
                    cache.delete("hot")
                got = cache.get("hot")
                assert got is None or set(got) == {"writer", "i"}

    assert run_threads(8, worker) == []
    final = SyncPostgresCache(psycopg.connect(dsn, autocommit=True)).get("hot")
    assert final is None or final["writer"] in range(8)


def test_eight_connections_increment_exactly(dsn: str) -> None:
    def worker(n: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cache = SyncPostgresCache(conn)
            for _ in range(100):
                cache.incr("hits")

    assert run_threads(8, worker) == []
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert SyncPostgresCache(conn).get("hits") == 800


def test_eight_connections_race_for_a_lock(dsn: str) -> None:
    rounds = 15
    barriers = [threading.Barrier(8) for _ in range(rounds)]
    winners: list[list[int]] = [[] for _ in range(rounds)]

    def worker(n: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            cache = SyncPostgresCache(conn)
            for r in range(rounds):
                barriers[r].wait()
                if cache.set_if_absent(f"lock:{r}", n, ttl=30):
                    winners[r].append(n)

    assert run_threads(8, worker) == []
    assert [len(w) for w in winners] == [1] * rounds, "exactly one connection takes each lock"


def test_batches_in_any_key_order_do_not_deadlock(dsn: str) -> None:
    """set_many, delete_many and delete_pattern lock rows in key order: no deadlock between them."""
    keys = [f"shared:{i:03d}" for i in range(60)]

    def worker(n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(dsn, autocommit=True) as conn:
            cache = SyncPostgresCache(conn)
            for _ in range(25):
                mine = rng.sample(keys, len(keys))
                action = rng.randrange(3)
                if action == 0:
                    cache.set_many({k: n for k in mine}, ttl=60)
                elif action == 1:
                    cache.delete_many(mine[:30])
                else:
                    cache.delete_pattern("shared:0[0-4]*")

    failures = run_threads(8, worker)
    assert not [f for f in failures if isinstance(f, pg_errors.DeadlockDetected)], failures
    assert failures == []


# ---------------------------------------------------------------- connections and transactions

def test_pool_connections_are_returned_as_they_were(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1) as pool:   # not autocommit
        cache = SyncPostgresCache(pool)
        cache.set("k", 1)
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with psycopg.connect(dsn) as other:
            assert other.execute("SELECT monitoring.cache_get('k')").fetchone()[0] == 1, "committed at once"


def test_a_connection_in_a_transaction_joins_it(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:   # not autocommit: the calls join its transaction
        cache = SyncPostgresCache(conn)
        cache.set("tx", "inside")
        assert cache.get("tx") == "inside"
        conn.rollback()
        assert cache.get("tx") is None, "rolled back with the caller's transaction"
        conn.rollback()


# ---------------------------------------------------------------- statistics

def test_statistics_are_counted_without_a_write_per_get(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn, namespace="stats")
        cache.set("a", 1)
        for _ in range(5):
            cache.get("a")
        cache.get("nope")
        cache.get_many(["a", "nope", "nope2"])
        rows, = conn.execute("SELECT count(*) FROM monitoring.cache_counters").fetchone()
        assert rows == 0, "nothing written yet: the counts wait in the session"
        conn.execute("SELECT monitoring.cache_flush_stats()")
        assert stats(dsn, "stats") == (6, 3, 1)
        for _ in range(150):
            cache.get("a")
        hits, _, _ = stats(dsn, "stats")
        assert hits >= 6 + 100, "a session adds its counts by itself every 100 events"


def test_statistics_wait_while_the_transaction_is_read_only(dsn: str) -> None:
    namespace = f"ro-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn) as conn:
        cache = SyncPostgresCache(conn, namespace=namespace)
        conn.execute("SET TRANSACTION READ ONLY")
        for _ in range(300):
            assert cache.get("nope") is None, "reads work in read-only transactions (no counter write)"
        letters, batch = conn.execute("SELECT length(current_setting('pg_observe.cache_pending')),"
                                      " current_setting('pg_observe.cache_pending_batch')").fetchone()
        assert letters < 110, "the letters do not pile up: the full lists became batch counts"
        assert batch.split(",")[1] == str(300 - (letters - 10))
        conn.commit()
        assert stats(dsn, namespace) == (0, 0, 0)
        conn.execute("SELECT monitoring.cache_flush_stats()")
        conn.commit()
    assert stats(dsn, namespace) == (0, 300, 0), "and are added once the session may write"


# ---------------------------------------------------------------- privileges, as an application login

def test_an_application_login_with_observe_writer(dsn: str) -> None:
    role = f"cache_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN IN ROLE observe_writer")
    try:
        with psycopg.connect(dsn + f" user={role}", autocommit=True) as conn:
            cache = SyncPostgresCache(conn)
            cache.set("session:1", {"user": 1}, ttl=900)
            assert cache.get("session:1") == {"user": 1}
            assert cache.delete_pattern("session:*") == 1
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM monitoring.cache_entries")
            with pytest.raises(pg_errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM monitoring.cache_stats")
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")


def test_the_package_exports_the_cache() -> None:
    assert pg_observe.PostgresCache is PostgresCache and pg_observe.SyncPostgresCache is SyncPostgresCache


# ---------------------------------------------------------------- UNLOGGED: crash restart and replicas

PGBIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*args: str) -> None:
    command = list(args)
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


@pytest.fixture
def throwaway_cluster() -> Iterator[dict]:
    """A cluster of this test's own (the project's cluster must never be restarted)."""
    if not (PGBIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries are not installed")
    base = Path(tempfile.mkdtemp(prefix="pg_observe_unlogged_"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    sock = base / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(sock, "postgres", "postgres")
    info = {"base": base, "sock": str(sock), "port": _free_port(), "started": []}

    def start(data: Path, port: int) -> None:
        _as_postgres(str(PGBIN / "pg_ctl"), "-D", str(data), "-l", str(data.parent / f"{data.name}.log"),
                     "-w", "-t", "60", "-o", f"-p {port} -k {sock} -c listen_addresses=''", "start")
        if data not in info["started"]:
            info["started"].append(data)

    def stop(data: Path, mode: str) -> None:
        _as_postgres(str(PGBIN / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop")

    def dsn(port: int) -> str:
        return f"host={sock} port={port} user=postgres dbname=postgres"

    info.update(start=start, stop=stop, dsn=dsn)
    _as_postgres(str(PGBIN / "initdb"), "-D", str(base / "primary"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--locale=C.UTF-8")
    try:
        yield info
    finally:
        for data in info["started"]:
            command = [str(PGBIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
            if os.geteuid() == 0:
                command = ["runuser", "-u", "postgres", "--", *command]
            subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_unlogged_truth_crash_restart_and_replica(throwaway_cluster: dict) -> None:
    """Seed 001 says the UNLOGGED cache "survives crashes": it survives a clean restart, is
    emptied by a crash restart, and a streaming replica cannot read it at all."""
    c = throwaway_cluster
    primary = c["base"] / "primary"
    port = c["port"]
    c["start"](primary, port)
    with psycopg.connect(c["dsn"](port), autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION pg_observe CASCADE")
        conn.execute("CREATE TABLE durable (note text)")

    def write(note: str) -> None:
        with psycopg.connect(c["dsn"](port), autocommit=True) as conn:
            SyncPostgresCache(conn).set("survivor", note)
            conn.execute("INSERT INTO durable VALUES (%s)", (note,))
            conn.execute("CHECKPOINT")

    def read() -> tuple[object, int]:
        with psycopg.connect(c["dsn"](port), autocommit=True) as conn:
            return (SyncPostgresCache(conn).get("survivor"),
                    conn.execute("SELECT count(*) FROM durable").fetchone()[0])

    write("before a clean restart")
    c["stop"](primary, "fast")
    c["start"](primary, port)
    assert read() == ("before a clean restart", 1), "a clean shutdown keeps the cache"

    write("before a crash")
    c["stop"](primary, "immediate")   # what a crash, a kill -9 or a power loss leaves
    c["start"](primary, port)
    assert read() == (None, 2), "after a crash restart the cache is empty; logged tables keep their rows"

    # a streaming replica: the table exists there, but it cannot be read
    write("on the primary")
    standby = c["base"] / "standby"
    standby_port = _free_port()
    _as_postgres(str(PGBIN / "pg_basebackup"), "-h", c["sock"], "-p", str(port), "-U", "postgres", "-D", str(standby),
                 "-R", "-X", "stream")
    c["start"](standby, standby_port)
    with psycopg.connect(c["dsn"](standby_port), autocommit=True) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        assert replica.execute("SELECT count(*) FROM durable").fetchone()[0] == 3
        with pytest.raises(pg_errors.FeatureNotSupported, match="cannot access temporary or unlogged relations"):
            SyncPostgresCache(replica).get("survivor")
