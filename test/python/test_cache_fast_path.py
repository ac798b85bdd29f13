"""The cache clients' prepared-statement path (0.13.0): on an idle autocommit connection
SyncPostgresCache and PostgresCache run get, set, delete and the three batches as prepared
statements with libpq instead of through a cursor. These tests check that the path is taken, that it gives
what the cursor gives, and that everything else falls back to the cursor: statements dropped
by DEALLOCATE or DISCARD, a user's statement of the same name, errors, a lost connection, a
transaction, Ctrl-C in a lock wait, threads sharing one connection."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import pg_observe.cache
import psycopg
import pytest
from pg_observe import PostgresCache, SyncPostgresCache
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool

FAST = ("pg_observe_cache_get", "pg_observe_cache_set", "pg_observe_cache_delete",
        "pg_observe_cache_get_many", "pg_observe_cache_set_many", "pg_observe_cache_delete_many")


def prepared(conn: psycopg.Connection) -> set[str]:
    """The cache's statements prepared on this connection (read through a cursor)."""
    rows = conn.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'pg_observe_cache_%'").fetchall()
    return {r[0] for r in rows}


def exercise(cache: SyncPostgresCache) -> dict:
    """Every fast call once, with values of every kind; what they returned."""
    out: dict = {}
    cache.set("json", {"a": [1, 2.5, None, "é"]}, ttl=60)
    cache.set("bytes", b"\x00\xff raw")
    cache.set("nul", "a\x00b")
    cache.set("forever", 7)
    out["get"] = [cache.get(k) for k in ("json", "bytes", "nul", "forever")]
    out["missing"] = cache.get("nope", "default")
    out["set_many"] = cache.set_many({"m1": 1, "m2": {"x": "y"}, "m3": "three"}, ttl=60)
    out["get_many"] = cache.get_many(["m1", "bytes", "m2", "nope", "nul", "m3", "m1"])
    out["get_many_empty"] = cache.get_many(["nope1", "nope2"])
    out["delete"] = (cache.delete("forever"), cache.delete("forever"))
    out["delete_many"] = cache.delete_many(["m1", "m2", "nope"])
    out["after"] = cache.get_many(["m1", "m2", "m3"])
    return out


EXPECTED = {
    "get": [{"a": [1, 2.5, None, "é"]}, b"\x00\xff raw", "a\x00b", 7],
    "missing": "default",
    "set_many": 3,
    "get_many": {"m1": 1, "bytes": b"\x00\xff raw", "m2": {"x": "y"}, "nul": "a\x00b", "m3": "three"},
    "get_many_empty": {},
    "delete": (True, False),
    "delete_many": 2,
    "after": {"m3": "three"},
}


def test_the_fast_path_is_taken_and_gives_what_the_cursor_gives(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert exercise(SyncPostgresCache(conn, namespace="fast")) == EXPECTED
        assert prepared(conn) == set(FAST), "every call ran its prepared statement"
    with psycopg.connect(dsn) as conn:   # in a transaction: cursors only
        assert exercise(SyncPostgresCache(conn, namespace="cursor")) == EXPECTED
        assert prepared(conn) == set()
        conn.commit()


@pytest.mark.parametrize("drop", ["DEALLOCATE ALL", "DISCARD ALL", "DEALLOCATE pg_observe_cache_get"])
def test_statements_dropped_under_the_client(dsn: str, drop: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        cache.set("k", "v")
        assert cache.get("k") == "v"
        conn.execute(drop)
        assert cache.get("k") == "v", "the cursor answers the call whose statement was gone"
        assert cache.get("k") == "v"
        assert "pg_observe_cache_get" in prepared(conn), "prepared again"


def test_a_users_statement_of_the_same_name_is_left_alone(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.pgconn.exec_(b"PREPARE pg_observe_cache_get(text, text) AS SELECT 'mine'::text, $1, $2")
        cache = SyncPostgresCache(conn)
        cache.set("k", {"v": 1})
        assert cache.get("k") == {"v": 1}
        assert cache.get("k") == {"v": 1}
        statement, = conn.execute("SELECT statement FROM pg_prepared_statements"
                                  " WHERE name = 'pg_observe_cache_get'").fetchone()
        assert "'mine'" in statement, "the user's statement is not replaced"


def test_errors_are_psycopgs_own_and_the_path_stays_on(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        cache.set("k", 1)
        with pytest.raises(pg_errors.ProgramLimitExceeded, match="longer than the limit of 1024 bytes"):
            cache.set("x" * 2000, 1)
        with pytest.raises(pg_errors.ProgramLimitExceeded):
            cache.set_many({"y" * 2000: 1})
        with pytest.raises(pg_errors.InvalidParameterValue, match="namespace"):
            SyncPostgresCache(conn, namespace="n" * 65).delete_many(["k"])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert cache.get("k") == 1
        cache.set("k", 2)
        assert cache.set_many({"k": 3, "l": 4}) == 2
        assert cache.get_many(["k", "l"]) == {"k": 3, "l": 4}
        assert {"pg_observe_cache_get", "pg_observe_cache_set", "pg_observe_cache_set_many",
                "pg_observe_cache_get_many"} <= prepared(conn), "prepared again after the errors"


# refused_rows counts the refused rows written (a sequence survives the rollback): a call
# that failed and was run again would write its row twice.
REFUSE_AT_COMMIT = """
CREATE SEQUENCE public.refused_rows;
CREATE FUNCTION public.refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.key LIKE 'refused%' THEN
        PERFORM nextval('public.refused_rows');
        RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON monitoring.cache_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.refuse_at_commit();
"""


def test_a_commit_that_fails_after_the_row_raises_and_stores_nothing(dsn: str) -> None:
    """A deferred check fails at the implicit commit, after the server has sent the call's
    row: the call raises that error (not the row), and nothing of it is stored."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(REFUSE_AT_COMMIT)
        cache = SyncPostgresCache(conn, namespace="commit")
        cache.set("fine", 1)
        assert cache.set_many({"fine2": 2}) == 1
        assert {b"pg_observe_cache_set", b"pg_observe_cache_set_many"} <= registered(conn), "the prepared path"
        with pytest.raises(pg_errors.CheckViolation, match="refused at commit"):
            cache.set("refused", 1)
        with pytest.raises(pg_errors.CheckViolation, match="refused at commit"):
            cache.set_many({"a": 1, "refused2": 2})
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert cache.get_many(["fine", "fine2", "a", "refused", "refused2"]) == {"fine": 1, "fine2": 2}
        assert conn.execute("SELECT last_value FROM public.refused_rows").fetchone() == (2,), "each call ran once"
        cache.set("fine", 3)
        assert cache.get("fine") == 3, "the path works after the failed commits"
        assert b"pg_observe_cache_set" in registered(conn)


def test_async_commit_that_fails_after_the_row_raises_and_stores_nothing(dsn: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(REFUSE_AT_COMMIT)
            cache = PostgresCache(conn, namespace="acommit")
            await cache.set("fine", 1)
            assert b"pg_observe_cache_set" in registered(conn), "the prepared path"
            with pytest.raises(pg_errors.CheckViolation, match="refused at commit"):
                await cache.set("refused", 1)
            with pytest.raises(pg_errors.CheckViolation, match="refused at commit"):
                await cache.set_many({"a": 1, "refused2": 2})
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert await cache.get_many(["fine", "a", "refused", "refused2"]) == {"fine": 1}
            assert b"pg_observe_cache_set_many" in registered(conn), "the prepared path"
            cur = await conn.execute("SELECT last_value FROM public.refused_rows")
            assert await cur.fetchone() == (2,), "each call ran once"
            await cache.set("fine", 3)
            assert await cache.get("fine") == 3

    asyncio.run(main())


def test_a_lost_connection_raises_operational_error(dsn: str) -> None:
    conn = psycopg.connect(dsn, autocommit=True)
    cache = SyncPostgresCache(conn)
    cache.set("k", 1)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    time.sleep(0.2)
    with pytest.raises(psycopg.OperationalError):
        cache.get("k")
    conn.close()


def test_ctrl_c_in_a_lock_wait_cancels_the_call(dsn: str) -> None:
    """A set waiting for a row another transaction holds: Ctrl-C (SIGINT) interrupts it, the
    server cancels it, and the connection is usable afterwards."""
    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn) as holder:
        cache = SyncPostgresCache(conn)
        cache.set("locked", "before")
        SyncPostgresCache(holder).set("locked", "holder's")   # holds the row until rollback
        # a real SIGINT to the main thread, as Ctrl-C sends: it must wake the wait for the server
        timer = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
        # should the wait not be interrupted, the holder ends after 10 s and the test fails below
        holder_pid = holder.info.backend_pid
        def end_holder() -> None:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (holder_pid,))

        release = threading.Timer(10, end_holder)
        started = time.monotonic()
        timer.start()
        release.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                cache.set("locked", "waiting")
        finally:
            timer.cancel()
            release.cancel()
        assert time.monotonic() - started < 5, "Ctrl-C did not interrupt the wait"
        holder.rollback()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert cache.get("locked") == "before", "the cancelled set did not happen"
        cache.set("locked", "after")
        assert cache.get("locked") == "after"


def registered(conn: psycopg.Connection | psycopg.AsyncConnection) -> set[bytes] | None:
    """The client's record of the statements it prepared on the connection (None: cursors only)."""
    return pg_observe.cache._prepared.get(conn, set())


def test_threads_sharing_one_connection_get_their_own_answers(dsn: str) -> None:
    """Eight threads whose first calls on a fresh connection come at once: each gets its own
    answer, and the path stays on (they do not prepare the same statement twice)."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        SyncPostgresCache(setup).set_many({f"t{n}": n for n in range(8)})
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        barrier = threading.Barrier(8)
        wrong: list[tuple[int, object]] = []

        def worker(n: int) -> None:
            barrier.wait()
            for i in range(200):
                got = cache.get(f"t{n}")
                if got != n:
                    wrong.append((n, got))
                if i % 50 == 0:
                    many = cache.get_many([f"t{n}", f"t{(n + 1) % 8}"])
                    if many != {f"t{n}": n, f"t{(n + 1) % 8}": (n + 1) % 8}:
                        wrong.append((n, many))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert wrong == []
        assert registered(conn) == {b"pg_observe_cache_get", b"pg_observe_cache_get_many"}


def test_every_call_runs_once_and_is_counted_once(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn, namespace="once")
        cache.set("a", 1)
        for _ in range(5):
            assert cache.get("a") == 1
        for _ in range(3):
            assert cache.get("absent") is None
        assert cache.get_many(["a", "absent"]) == {"a": 1}
        conn.execute("SELECT monitoring.cache_flush_stats()")
        assert registered(conn) == {b"pg_observe_cache_set", b"pg_observe_cache_get", b"pg_observe_cache_get_many"}
    with psycopg.connect(dsn) as other:
        row = other.execute("SELECT hits, misses, sets FROM monitoring.cache_stats WHERE namespace = 'once'").fetchone()
    assert row == (6, 4, 1)


def test_a_lost_pool_connection_raises_and_the_call_is_not_repeated(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        cache = SyncPostgresCache(pool)
        cache.set("k", 1)
        with pool.connection() as conn:
            pid = conn.info.backend_pid
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            cache.delete("k")
        assert cache.delete("k") is True, "the failed call deleted nothing; the pool's next connection does"


@pytest.mark.parametrize("kwargs", [{"client_encoding": "LATIN1"}, {"prepare_threshold": None}])
def test_connections_the_path_must_not_use(dsn: str, kwargs: dict) -> None:
    """A client encoding other than UTF8 (the bytes would be read as LATIN1), or prepared
    statements switched off (PgBouncer in transaction mode): cursors."""
    with psycopg.connect(dsn, autocommit=True, **kwargs) as conn:
        cache = SyncPostgresCache(conn)
        cache.set("clé", {"valeur": "été"})
        assert cache.get("clé") == {"valeur": "été"}
        assert cache.get_many(["clé"]) == {"clé": {"valeur": "été"}}
        assert prepared(conn) == set()
    with psycopg.connect(dsn, autocommit=True) as utf8:
        assert SyncPostgresCache(utf8).get("clé") == {"valeur": "été"}, "stored as the characters given"


def test_a_statement_prepared_by_an_interrupted_call_is_taken_over(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        sql, types, _ = pg_observe.cache._FAST_STATEMENTS[b"pg_observe_cache_get"]
        conn.pgconn.prepare(b"pg_observe_cache_get", sql, types)   # as if Ctrl-C came before the client knew
        cache = SyncPostgresCache(conn)
        cache.set("k", 1)
        assert cache.get("k") == 1
        assert b"pg_observe_cache_get" in registered(conn)


def test_notifications_reach_the_handlers(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn, autocommit=True) as other:
        heard: list[str] = []
        conn.add_notify_handler(lambda n: heard.append(n.payload))
        conn.execute("LISTEN cache_test")
        cache = SyncPostgresCache(conn)
        cache.set("k", 1)
        other.execute("NOTIFY cache_test, 'hello'")
        deadline = time.monotonic() + 5
        while not heard and time.monotonic() < deadline:
            assert cache.get("k") == 1
            time.sleep(0.05)
        assert heard == ["hello"]
        assert b"pg_observe_cache_get" in registered(conn)


def test_hostile_keys_and_values_on_the_fast_path(dsn: str) -> None:
    """Quotes, backslashes, braces and commas are array syntax in text form: the binary arrays
    carry them as they are."""
    keys = ['a"b', "c\\d", "{e,f}", "NULL", "", " spaced ", "ünï", "x" * 1024]
    with psycopg.connect(dsn, autocommit=True) as conn:
        cache = SyncPostgresCache(conn)
        assert cache.set_many({k: k for k in keys}) == len(keys)
        assert cache.get_many(keys) == {k: k for k in keys}
        assert [cache.get(k) for k in keys] == keys
        assert cache.delete_many(keys) == len(keys)
        assert cache.get_many(keys) == {}
        assert "pg_observe_cache_get_many" in prepared(conn)


# ---------------------------------------------------------------- the asyncio client

async def aexercise(cache: PostgresCache) -> dict:
    """exercise() through PostgresCache."""
    out: dict = {}
    await cache.set("json", {"a": [1, 2.5, None, "é"]}, ttl=60)
    await cache.set("bytes", b"\x00\xff raw")
    await cache.set("nul", "a\x00b")
    await cache.set("forever", 7)
    out["get"] = [await cache.get(k) for k in ("json", "bytes", "nul", "forever")]
    out["missing"] = await cache.get("nope", "default")
    out["set_many"] = await cache.set_many({"m1": 1, "m2": {"x": "y"}, "m3": "three"}, ttl=60)
    out["get_many"] = await cache.get_many(["m1", "bytes", "m2", "nope", "nul", "m3", "m1"])
    out["get_many_empty"] = await cache.get_many(["nope1", "nope2"])
    out["delete"] = (await cache.delete("forever"), await cache.delete("forever"))
    out["delete_many"] = await cache.delete_many(["m1", "m2", "nope"])
    out["after"] = await cache.get_many(["m1", "m2", "m3"])
    return out


async def aprepared(conn: psycopg.AsyncConnection) -> set[str]:
    cur = await conn.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'pg_observe_cache_%'")
    return {r[0] for r in await cur.fetchall()}


def test_async_fast_path_gives_what_the_cursor_gives(dsn: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            assert await aexercise(PostgresCache(conn, namespace="afast")) == EXPECTED
            assert await aprepared(conn) == set(FAST)
            await conn.execute("DISCARD ALL")
            cache = PostgresCache(conn, namespace="afast")
            await cache.set("k", "v")
            assert await cache.get("k") == "v"
            with pytest.raises(pg_errors.ProgramLimitExceeded):
                await cache.set("x" * 2000, 1)
            await cache.set("k", "w")
            assert await cache.get("k") == "w"
            assert {"pg_observe_cache_get", "pg_observe_cache_set"} <= await aprepared(conn)
        async with await psycopg.AsyncConnection.connect(dsn) as conn:   # a transaction: cursors
            assert await aexercise(PostgresCache(conn, namespace="acursor")) == EXPECTED
            assert await aprepared(conn) == set()
            await conn.commit()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:   # first calls at once
            cache = PostgresCache(conn, namespace="afast")
            got = await asyncio.gather(*(cache.get(k, k) for k in ("json", "m3", "x", "y")))
            assert got == [{"a": [1, 2.5, None, "é"]}, "three", "x", "y"]
            assert registered(conn) == {b"pg_observe_cache_get"}
        async with AsyncConnectionPool(dsn, min_size=2, max_size=2, open=False) as pool:   # not autocommit
            caches = [PostgresCache(pool, namespace=f"apool{n}") for n in range(8)]
            results = await asyncio.gather(*(aexercise(c) for c in caches))
            assert results == [EXPECTED] * 8

    asyncio.run(main())


def test_async_cancelled_call_in_a_lock_wait_is_cancelled_on_the_server(dsn: str) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn, \
                await psycopg.AsyncConnection.connect(dsn) as holder:
            cache = PostgresCache(conn)
            await cache.set("locked", "before")
            await PostgresCache(holder).set("locked", "holder's")   # holds the row until rollback
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(cache.set("locked", "waiting"), timeout=0.5)
            assert time.monotonic() - started < 5
            await holder.rollback()
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert await cache.get("locked") == "before", "the cancelled set did not happen"
            await cache.set("locked", "after")
            assert await cache.get("locked") == "after"
            assert b"pg_observe_cache_set" in registered(conn), "the prepared call was the one cancelled"

    asyncio.run(main())
