"""The PostgreSQL cache (seed 001's ``PostgresCache``): a Redis-style key/value cache in an
UNLOGGED table of the database, shared by every application instance (docs/cache.md).

:class:`PostgresCache` is the asyncio client (an ``AsyncConnectionPool``, an
``AsyncConnection`` or a DSN); :class:`SyncPostgresCache` has the same methods without
``await`` (a ``ConnectionPool``, a ``Connection`` or a DSN). Each method is one stored-function
call, one round trip. Values: anything JSON can hold is stored as ``jsonb`` (a tuple comes back
as a list, dict keys as strings); ``bytes`` and ``str`` come back exactly as given, a ``str``
with a NUL character included (stored as UTF-8 bytes, since JSON in PostgreSQL cannot hold
one). ``ttl`` is in seconds (int or float) or a ``timedelta``; ``None`` means never expires.

Connections: a pool's connection is switched to autocommit while the call runs, so that each
call is one round trip and commits on its own. A connection you pass is used as it is: in
autocommit mode every call commits on its own; otherwise the calls join its transaction,
which you commit. On an idle autocommit connection the common calls run as statements
prepared once per connection, without psycopg's cursors (see _fast(); docs/cache.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import select
import struct
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Optional, Union

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

Ttl = Union[int, float, datetime.timedelta, None]

# JSON comes as text and is decoded with json.loads on both paths (psycopg's loader may have
# been replaced with set_json_loads; the prepared calls do not use it).
_GET = "SELECT value::text, value_bytes, value_type FROM monitoring.cache_get_entry(%s, %s)"
# Arrays go in binary (%b): psycopg's text format quotes every element in Python, ~40 times slower.
# One row: the JSON entries as one JSON object (one json.loads, not one per entry), the others as arrays.
_GET_MANY = ("SELECT json_values::text, other_keys, other_values, other_types"
             " FROM monitoring.cache_get_many_packed(%b::text[], %s)")
_SET_JSON = "SELECT monitoring.cache_set(%s, %s::jsonb, %s::interval, %s)"
_SET_BYTES = "SELECT monitoring.cache_set_bytes(%s, %s::bytea, %s::interval, %s, %s)"
# JSON values only (the common case): the batch as one JSON object, encoded and parsed once.
_SET_MANY_JSON = "SELECT monitoring.cache_set_many(%s::jsonb, %s::interval, %s)"
_SET_MANY = ("SELECT monitoring.cache_set_many_arrays(%b::text[], %b::text[]::jsonb[], %s::interval, %s,"
             " %b::bytea[], %b::text[])")
_SET_IF_ABSENT = "SELECT monitoring.cache_set_if_absent(%s, %s::jsonb, %s::interval, %s)"
_DELETE = "SELECT monitoring.cache_delete(%s, %s)"
_DELETE_MANY = "SELECT monitoring.cache_delete_many(%b::text[], %s)"
_DELETE_PATTERN = "SELECT monitoring.cache_delete_pattern(%s, %s)"
_KEYS = "SELECT k FROM monitoring.cache_keys(%s, %s, %s::integer) k"
_INCR = "SELECT monitoring.cache_incr(%s, %s::bigint, %s::interval, %s)"
_TTL = "SELECT monitoring.cache_ttl(%s, %s)"
_EXPIRE = "SELECT monitoring.cache_expire(%s, %s::interval, %s)"

_Encoded = tuple[Optional[str], Optional[bytes], str]

# The common calls skip psycopg's cursors on an idle autocommit connection: a cursor costs
# the client about as much CPU per call as the cache function costs the server, and more with
# several clients per core. Each call is a statement prepared once per connection, sent with
# libpq's PQsendQueryPrepared, its results read in binary, the wait in poll() (Ctrl-C
# interrupts it) or in the event loop. What psycopg would do is done here too: errors raise
# psycopg's exceptions, an interrupted call is cancelled on the server, notifications reach
# the connection's handlers. Elsewhere (a transaction, pipeline mode, a client encoding other
# than UTF8, prepare_threshold None for PgBouncer, Windows) the calls use cursors.
_TEXT_ARRAY_OID = 1009
_BINARY = psycopg.pq.Format.BINARY
_TEXT = psycopg.pq.Format.TEXT
# name: (SQL, parameter types, parameter formats); the key arrays go in binary
_FAST_STATEMENTS: dict[bytes, tuple[bytes, list[int] | None, list[psycopg.pq.Format] | None]] = {
    b"pg_observe_cache_get": (b"SELECT value, value_bytes, value_type FROM monitoring.cache_get_entry($1, $2)",
                              None, None),
    b"pg_observe_cache_set": (b"SELECT monitoring.cache_set($1, $2::jsonb, $3::interval, $4)", None, None),
    b"pg_observe_cache_delete": (b"SELECT monitoring.cache_delete($1, $2)", None, None),
    b"pg_observe_cache_get_many": (b"SELECT json_values, other_keys, other_values, other_types"
                                   b" FROM monitoring.cache_get_many_packed($1, $2)",
                                   [_TEXT_ARRAY_OID, 0], [_BINARY, _TEXT]),
    b"pg_observe_cache_set_many": (b"SELECT monitoring.cache_set_many($1::jsonb, $2::interval, $3)", None, None),
    b"pg_observe_cache_delete_many": (b"SELECT monitoring.cache_delete_many($1, $2)",
                                      [_TEXT_ARRAY_OID, 0], [_BINARY, _TEXT]),
}
_PREPARED_TEXT = b"SELECT statement FROM pg_catalog.pg_prepared_statements WHERE name = $1"
# per connection: the statements prepared on it, or None where a statement of the user's has
# one of the names (that connection uses cursors)
_prepared: weakref.WeakKeyDictionary[psycopg.Connection | psycopg.AsyncConnection, set[bytes] | None] = (
    weakref.WeakKeyDictionary())
_ExecStatus = psycopg.pq.ExecStatus
_IDLE = psycopg.pq.TransactionStatus.IDLE
_PIPELINE_OFF = psycopg.pq.PipelineStatus.OFF
_SQLSTATE = psycopg.pq.DiagnosticField.SQLSTATE
_STATEMENT_GONE = b"26000"        # DEALLOCATE, DISCARD ALL: prepare it again and run it (it did not run)
_PLAN_OUTDATED = b"0A000"         # "cached plan must not change result type" after an upgrade: likewise
_NAME_TAKEN = b"42P05"
_ARRAY_HEADER = struct.Struct("!iiI")
_ARRAY_DIMENSION = struct.Struct("!ii")
_INT4 = struct.Struct("!i")
_POLL = getattr(select, "poll", None)   # not on Windows: cursors there
_CANCEL_TIMEOUT = 5.0                   # as psycopg's own cancellation


def _registry(conn: psycopg.Connection | psycopg.AsyncConnection) -> set[bytes] | None:
    """The connection's prepared statements when a call may skip the cursor now (under its
    lock), else None."""
    pgconn = conn.pgconn
    if not (conn.autocommit and conn.prepare_threshold is not None
            and pgconn.transaction_status == _IDLE and pgconn.pipeline_status == _PIPELINE_OFF
            and pgconn.parameter_status(b"client_encoding") == b"UTF8"):
        return None
    prepared = _prepared.get(conn, _prepared)   # (the dictionary itself: not seen yet)
    if prepared is _prepared:
        prepared = _prepared[conn] = set()
    return prepared


def _may_run_again(conn: psycopg.Connection | psycopg.AsyncConnection, failed: psycopg.pq.abc.PGresult,
                   attempt: int) -> bool:
    """True when a failed call did not run (its statement dropped, or its plan outdated: then
    DEALLOCATE it first) and may be prepared and run once more; raises the error otherwise."""
    state = failed.error_field(_SQLSTATE)
    if attempt == 1 and state in (_STATEMENT_GONE, _PLAN_OUTDATED):
        return True
    _raise(conn, failed)
    return False   # not reached


def _raise_unless_name_taken(conn: psycopg.Connection | psycopg.AsyncConnection,
                             failed: psycopg.pq.abc.PGresult) -> None:
    """After a failed PREPARE: raises its error unless the name is taken (42P05)."""
    if failed.error_field(_SQLSTATE) != _NAME_TAKEN:
        _raise(conn, failed)


def _ours(results: list[psycopg.pq.abc.PGresult], sql: bytes) -> bool:
    """Whether pg_prepared_statements says the statement of the name is ours (same text)."""
    return _failure(results) is None and bool(results[0].ntuples) and results[0].get_value(0, 0) == sql


def _failure(results: list[psycopg.pq.abc.PGresult]) -> psycopg.pq.abc.PGresult | None:
    """The first error among a call's results: a commit that fails comes after the row."""
    for result in results:
        if result.status == _ExecStatus.FATAL_ERROR:
            return result
    return None


def _raise(conn: psycopg.Connection | psycopg.AsyncConnection, failed: psycopg.pq.abc.PGresult) -> None:
    raise psycopg.errors.error_from_result(failed, encoding=conn.info.encoding)


def _deliver_notifies(pgconn: psycopg.pq.abc.PGconn) -> None:
    """Notifications that arrived with the results, to the connection's handlers (as psycopg)."""
    while (notify := pgconn.notifies()) is not None:
        if pgconn.notify_handler:
            pgconn.notify_handler(notify)


def _fast(conn: psycopg.Connection, name: bytes, params: list[bytes | None]) -> psycopg.pq.abc.PGresult | None:
    """The result of a prepared call, or None: then this connection uses a cursor."""
    if not conn.autocommit or _POLL is None:
        return None
    with conn.lock:
        prepared = _registry(conn)
        if prepared is None:
            return None
        sql, types, formats = _FAST_STATEMENTS[name]
        pgconn = conn.pgconn
        for attempt in (1, 2):
            if name not in prepared and not _prepare(conn, name, sql, types, prepared):
                return None
            results = _exchange(conn, pgconn.send_query_prepared, name, params, formats, _BINARY)
            failed = _failure(results)
            if failed is None:
                return results[0]
            if _may_run_again(conn, failed, attempt):
                prepared.discard(name)
                if failed.error_field(_SQLSTATE) == _PLAN_OUTDATED:
                    _exchange(conn, pgconn.send_query, b"DEALLOCATE " + name)
        return None   # not reached


def _prepare(conn: psycopg.Connection, name: bytes, sql: bytes, types: list[int] | None, prepared: set[bytes]) -> bool:
    """Prepares a statement; False when a statement of the user's has the name."""
    prepared.add(name)   # before the answer: should Ctrl-C come now, a missing statement is found at its run
    failed = _failure(_exchange(conn, conn.pgconn.send_prepare, name, sql, types))
    if failed is None:
        return True
    prepared.discard(name)
    _raise_unless_name_taken(conn, failed)
    if _ours(_exchange(conn, conn.pgconn.send_query_params, _PREPARED_TEXT, [name]), sql):
        prepared.add(name)   # prepared by a call that was interrupted before it knew
        return True
    _prepared[conn] = None
    return False


def _exchange(conn: psycopg.Connection, send: Callable[..., None], *args: Any) -> list[psycopg.pq.abc.PGresult]:
    """Sends with send(*args) and reads every result; Ctrl-C cancels the call on the server."""
    pgconn = conn.pgconn
    send(*args)
    try:
        results = _results(pgconn)
    except psycopg.OperationalError:
        raise
    except BaseException:
        _abandon(conn)
        raise
    _deliver_notifies(pgconn)
    return results


def _abandon(conn: psycopg.Connection) -> None:
    """After an interruption: cancel the call and read its answer within 5 s, else close the
    connection (it could not be used again)."""
    try:
        conn.cancel_safe(timeout=_CANCEL_TIMEOUT)
        _results(conn.pgconn, deadline=time.monotonic() + _CANCEL_TIMEOUT)
    except BaseException:
        conn.pgconn.finish()


def _results(pgconn: psycopg.pq.abc.PGconn, deadline: float | None = None) -> list[psycopg.pq.abc.PGresult]:
    """Every result of the query sent, waiting in poll() (a Python call: Ctrl-C interrupts it);
    with a deadline, TimeoutError when it passes."""
    poller = _POLL()
    fd = pgconn.socket
    poller.register(fd, select.POLLIN)
    if pgconn.flush():   # a large value: send the rest as the server reads
        poller.modify(fd, select.POLLIN | select.POLLOUT)
        while pgconn.flush():
            _wait(poller, deadline)
            pgconn.consume_input()
        poller.modify(fd, select.POLLIN)
    # Read first: with several clients per core the answer is often there already, and a read
    # is cheaper than a poll(). Afterwards read only while libpq needs more.
    pgconn.consume_input()
    results = []
    while True:
        while pgconn.is_busy():
            _wait(poller, deadline)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


def _wait(poller: Any, deadline: float | None) -> None:
    if deadline is None:
        poller.poll()
    elif not poller.poll(max(deadline - time.monotonic(), 0) * 1000):
        raise TimeoutError("no answer from the server")


async def _afast(conn: psycopg.AsyncConnection, name: bytes,
                 params: list[bytes | None]) -> psycopg.pq.abc.PGresult | None:
    """_fast() for asyncio: the waits are the event loop's."""
    if not conn.autocommit or _POLL is None:
        return None
    async with conn.lock:
        prepared = _registry(conn)
        if prepared is None:
            return None
        sql, types, formats = _FAST_STATEMENTS[name]
        pgconn = conn.pgconn
        for attempt in (1, 2):
            if name not in prepared and not await _aprepare(conn, name, sql, types, prepared):
                return None
            results = await _aexchange(conn, pgconn.send_query_prepared, name, params, formats, _BINARY)
            failed = _failure(results)
            if failed is None:
                return results[0]
            if _may_run_again(conn, failed, attempt):
                prepared.discard(name)
                if failed.error_field(_SQLSTATE) == _PLAN_OUTDATED:
                    await _aexchange(conn, pgconn.send_query, b"DEALLOCATE " + name)
        return None   # not reached


async def _aprepare(conn: psycopg.AsyncConnection, name: bytes, sql: bytes, types: list[int] | None,
                    prepared: set[bytes]) -> bool:
    """_prepare() for asyncio."""
    prepared.add(name)
    failed = _failure(await _aexchange(conn, conn.pgconn.send_prepare, name, sql, types))
    if failed is None:
        return True
    prepared.discard(name)
    _raise_unless_name_taken(conn, failed)
    if _ours(await _aexchange(conn, conn.pgconn.send_query_params, _PREPARED_TEXT, [name]), sql):
        prepared.add(name)
        return True
    _prepared[conn] = None
    return False


async def _aexchange(conn: psycopg.AsyncConnection, send: Callable[..., None],
                     *args: Any) -> list[psycopg.pq.abc.PGresult]:
    """_exchange() for asyncio: a cancelled task cancels the call on the server."""
    pgconn = conn.pgconn
    send(*args)
    try:
        results = await _aresults(pgconn)
    except psycopg.OperationalError:
        raise
    except BaseException:
        await _aabandon(conn)
        raise
    _deliver_notifies(pgconn)
    return results


async def _aabandon(conn: psycopg.AsyncConnection) -> None:
    try:
        await conn.cancel_safe(timeout=_CANCEL_TIMEOUT)
        await asyncio.wait_for(_aresults(conn.pgconn), _CANCEL_TIMEOUT)
    except BaseException:
        conn.pgconn.finish()


async def _aresults(pgconn: psycopg.pq.abc.PGconn) -> list[psycopg.pq.abc.PGresult]:
    """Every result of the query sent, read when the event loop says the socket is ready."""
    loop = asyncio.get_running_loop()
    fd = pgconn.socket
    while pgconn.flush():
        await _ready(loop, fd, write=True)
        pgconn.consume_input()
    pgconn.consume_input()   # as _results()
    results = []
    while True:
        while pgconn.is_busy():
            await _ready(loop, fd, write=False)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    """Until the socket is readable (or, with write, either readable or writable)."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    if write:
        loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
        if write:
            loop.remove_writer(fd)


def _interval(delta: datetime.timedelta | None) -> bytes | None:
    if delta is None:
        return None
    return b"%d days %d seconds %d microseconds" % (delta.days, delta.seconds, delta.microseconds)


def _text_array(values: list[str]) -> bytes:
    """A text[] in PostgreSQL's binary format (psycopg's text format quotes every element)."""
    encoded = [v.encode() for v in values]
    parts = [_ARRAY_HEADER.pack(1, 0, 25), _ARRAY_DIMENSION.pack(len(encoded), 1)]
    for e in encoded:
        parts.append(_INT4.pack(len(e)))
        parts.append(e)
    return b"".join(parts)


def _binary_array(data: bytes) -> list[bytes | None]:
    """The elements of a one-dimensional array in binary (text and bytea alike)."""
    ndim = _INT4.unpack_from(data, 0)[0]
    if ndim == 0:
        return []
    count = _INT4.unpack_from(data, 12)[0]
    offset, elements = 20, []
    for _ in range(count):
        size = _INT4.unpack_from(data, offset)[0]
        if size < 0:   # NULL
            elements.append(None)
            offset += 4
            continue
        elements.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return elements


def _entry(result: psycopg.pq.abc.PGresult, default: Any) -> Any:
    """get()'s value from a binary row of cache_get_entry (value, value_bytes, value_type)."""
    if not result.ntuples:
        return default
    value_type = result.get_value(0, 2)
    if value_type == b"json":
        value = result.get_value(0, 0)   # binary jsonb: a version byte (1), then the text
        return json.loads(value[1:]) if value else None
    return _decode(None, result.get_value(0, 1), value_type.decode())


def _packed_row(result: psycopg.pq.abc.PGresult) -> tuple[Any, ...]:
    """cache_get_many_packed's binary row as the cursor gives it."""
    return (result.get_value(0, 0),
            [(k or b"").decode() for k in _binary_array(result.get_value(0, 1))],
            _binary_array(result.get_value(0, 2)),
            [(t or b"").decode() for t in _binary_array(result.get_value(0, 3))])


def _count(out: psycopg.pq.abc.PGresult | list[tuple[Any, ...]]) -> int:
    """The integer a batch call returns, from a cursor's rows or a binary int4."""
    if isinstance(out, list):
        return int(out[0][0])
    return int(_INT4.unpack(out.get_value(0, 0))[0])


def _value(out: psycopg.pq.abc.PGresult | list[tuple[Any, ...]], default: Any) -> Any:
    """get()'s value from a cursor's rows or a prepared call's binary row."""
    if isinstance(out, list):
        return _decode(*out[0]) if out else default
    return _entry(out, default)


def _was_live(out: psycopg.pq.abc.PGresult | list[tuple[Any, ...]]) -> bool:
    """delete()'s answer from a cursor's rows or a binary boolean."""
    return bool(out[0][0]) if isinstance(out, list) else out.get_value(0, 0) == b"\x01"


def _found_in(keys: list[str], out: psycopg.pq.abc.PGresult | list[tuple[Any, ...]]) -> dict[str, Any]:
    """get_many()'s answer from a cursor's rows or a prepared call's binary row."""
    return _found(keys, out[0] if isinstance(out, list) else _packed_row(out))


def _fast_set_params(params: tuple[Any, ...]) -> list[bytes | None]:
    key, text, delta, namespace = params
    return [key.encode(), text.encode(), _interval(delta), namespace.encode()]


def _fast_set_many_params(params: tuple[Any, ...]) -> list[bytes | None]:
    text, delta, namespace = params
    return [text.encode(), _interval(delta), namespace.encode()]


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"cache keys are str, not {type(key).__name__}")
    if "\x00" in key:
        raise ValueError("cache keys cannot contain NUL characters (PostgreSQL text cannot hold them)")
    return key


def _keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, (str, bytes)):
        raise TypeError("pass a list of keys, not a single key")
    return [_key(k) for k in keys]


def _ttl(ttl: Ttl) -> datetime.timedelta | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float, datetime.timedelta)):
        raise TypeError(f"ttl is seconds (int or float), a timedelta or None, not {type(ttl).__name__}")
    delta = ttl if isinstance(ttl, datetime.timedelta) else datetime.timedelta(seconds=ttl)
    if delta <= datetime.timedelta(0):
        raise ValueError(f"ttl must be positive, got {ttl!r} (None: the entry never expires)")
    return delta


# NaN and infinities are not JSON: PostgreSQL would refuse them anyway. One encoder: json.dumps
# with arguments builds a new one at every call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def _encode(value: Any) -> _Encoded:
    """(JSON text, bytes, value type): the storage of a value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None, bytes(value), "bytes"
    if isinstance(value, str) and "\x00" in value:
        return None, value.encode("utf-8"), "text"
    return _json(value), None, "json"


def _decode(value: str | bytes | None, value_bytes: bytes | None, value_type: str) -> Any:
    if value_type == "json":
        return json.loads(value) if value is not None else None
    if value_type == "bytes":
        return bytes(value_bytes) if value_bytes is not None else b""
    return bytes(value_bytes or b"").decode("utf-8")   # text


def _set_params(key: str, value: Any, ttl: Ttl, namespace: str) -> tuple[str, tuple[Any, ...]]:
    key, delta = _key(key), _ttl(ttl)
    text, raw, value_type = _encode(value)
    if value_type == "json":
        return _SET_JSON, (key, text, delta, namespace)
    return _SET_BYTES, (key, raw, delta, namespace, value_type)


def _set_many_params(entries: Mapping[str, Any], ttl: Ttl, namespace: str) -> tuple[str, tuple[Any, ...]] | None:
    """The query and parameters of set_many: one JSON object when every value is JSON, else
    arrays; None for an empty mapping (nothing to call)."""
    if not isinstance(entries, Mapping):
        raise TypeError(f"set_many takes a mapping of key: value, not {type(entries).__name__}")
    delta = _ttl(ttl)
    if not entries:
        return None
    if not any(isinstance(v, (bytes, bytearray, memoryview)) or (isinstance(v, str) and "\x00" in v)
               for v in entries.values()):
        checked = {_key(key): value for key, value in entries.items()}
        return _SET_MANY_JSON, (_json(checked), delta, namespace)
    keys: list[str] = []
    texts: list[str | None] = []
    raws: list[bytes | None] = []
    types: list[str] = []
    for key, value in entries.items():
        text, raw, value_type = _encode(value)
        keys.append(_key(key))
        texts.append(text)
        raws.append(raw)
        types.append(value_type)
    return _SET_MANY, (keys, texts, delta, namespace, raws, types)


def _set_if_absent_params(key: str, value: Any, ttl: Ttl, namespace: str) -> tuple[Any, ...]:
    text, _, value_type = _encode(value)
    if value_type != "json":
        raise TypeError("set_if_absent stores JSON values (a lock token: a str without NUL characters, a number)")
    return (_key(key), text, _ttl(ttl), namespace)


def _check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise TypeError(f"the namespace is a str, not {type(namespace).__name__}")
    return _key(namespace)


def _found(keys: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    json_values, other_keys, other_values, other_types = row
    found = json.loads(json_values)
    for key, raw, value_type in zip(other_keys, other_values, other_types):
        found[key] = _decode(None, raw, value_type)
    return {k: found[k] for k in keys if k in found}   # in the order asked


def _incr_amount(amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"the increment is an int, not {type(amount).__name__}")
    return amount


class PostgresCache:
    """The asyncio cache client (seed 001): ``cache = PostgresCache(db_pool)``, then
    ``await cache.set("key", "value", ttl=3600)`` and ``value = await cache.get("key")``.

    ``pool``: a ``psycopg_pool.AsyncConnectionPool``, a ``psycopg.AsyncConnection`` or a DSN
    (then the cache opens a pool of its own, closed by :meth:`close`). ``namespace`` keeps the
    keys of applications sharing the database apart.
    """

    def __init__(self, pool: AsyncConnectionPool | psycopg.AsyncConnection | str, namespace: str = "default",
                 *, max_connections: int = 4) -> None:
        self.namespace = _check_namespace(namespace)
        self._pool: AsyncConnectionPool | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self._owned = False
        self._open_lock: asyncio.Lock | None = None
        if isinstance(pool, AsyncConnectionPool):
            self._pool = pool
        elif isinstance(pool, psycopg.AsyncConnection):
            self._conn = pool
        elif isinstance(pool, str):
            self._pool = AsyncConnectionPool(pool, min_size=1, max_size=max_connections, open=False,
                                             kwargs={"autocommit": True})
            self._owned = True
        elif isinstance(pool, (ConnectionPool, psycopg.Connection)):
            raise TypeError("PostgresCache is the asyncio client: use SyncPostgresCache with a "
                            f"{type(pool).__name__}, or pass an AsyncConnectionPool")
        else:
            raise TypeError(f"PostgresCache needs an AsyncConnectionPool, an AsyncConnection or a DSN, "
                            f"not {type(pool).__name__}")

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        if self._conn is not None:
            yield self._conn
            return
        assert self._pool is not None
        if self._owned and self._pool.closed:
            if self._open_lock is None:
                self._open_lock = asyncio.Lock()
            async with self._open_lock:
                if self._pool.closed:
                    await self._pool.open()
        async with self._pool.connection() as conn:
            if conn.autocommit:
                yield conn
                return
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                if conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    await conn.set_autocommit(False)

    async def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(query, params)
            return await cur.fetchall()

    async def _scalar(self, query: str, params: tuple[Any, ...]) -> Any:
        rows = await self._rows(query, params)
        return rows[0][0]

    async def _call(self, name: bytes, fast_params: list[bytes | None], query: str,
                    params: tuple[Any, ...]) -> psycopg.pq.abc.PGresult | list[tuple[Any, ...]]:
        """A prepared call's result, or the rows of the cursor where the connection needs one
        (one connection of the pool either way)."""
        async with self._connection() as conn:
            result = await _afast(conn, name, fast_params)
            if result is not None:
                return result
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(query, params)
            return await cur.fetchall()

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of a live key; ``default`` when it is absent or expired."""
        key = _key(key)
        return _value(await self._call(b"pg_observe_cache_get", [key.encode(), self.namespace.encode()], _GET,
                                       (key, self.namespace)), default)

    async def set(self, key: str, value: Any, ttl: Ttl = None) -> None:
        """Stores the value (replacing any); ``ttl`` seconds or a timedelta, None: never expires."""
        query, params = _set_params(key, value, ttl, self.namespace)
        if query is _SET_JSON:
            await self._call(b"pg_observe_cache_set", _fast_set_params(params), query, params)
        else:
            await self._rows(query, params)

    async def delete(self, key: str) -> bool:
        """Deletes a key; True when it was there (and not expired)."""
        key = _key(key)
        return _was_live(await self._call(b"pg_observe_cache_delete", [key.encode(), self.namespace.encode()],
                                          _DELETE, (key, self.namespace)))

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Deletes keys in one call; how many were there."""
        wanted = _keys(keys)
        out = await self._call(b"pg_observe_cache_delete_many", [_text_array(wanted), self.namespace.encode()],
                               _DELETE_MANY, (wanted, self.namespace))
        return _count(out)

    async def delete_pattern(self, pattern: str) -> int:
        """Deletes the keys matching a Redis glob (``user:*``, ``?``, ``[abc]``, ``\\*``); how many."""
        return int(await self._scalar(_DELETE_PATTERN, (_key(pattern), self.namespace)))

    async def keys(self, pattern: str = "*", limit: int | None = None) -> list[str]:
        """Live keys matching a Redis glob, in byte order (Redis's KEYS)."""
        return [row[0] for row in await self._rows(_KEYS, (_key(pattern), self.namespace, limit))]

    async def clear(self) -> int:
        """Deletes every key of the namespace (Redis's FLUSHDB for this namespace only)."""
        return await self.delete_pattern("*")

    async def set_many(self, entries: Mapping[str, Any], ttl: Ttl = None) -> int:
        """Stores every key: value of the mapping in one call, with one TTL; how many."""
        call = _set_many_params(entries, ttl, self.namespace)
        if call is None:
            return 0
        query, params = call
        if query is _SET_MANY_JSON:
            return _count(await self._call(b"pg_observe_cache_set_many", _fast_set_many_params(params), query, params))
        return int(await self._scalar(query, params))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The live keys among ``keys`` and their values, in one call (absent keys are left out)."""
        wanted = _keys(keys)
        if not wanted:
            return {}
        return _found_in(wanted, await self._call(b"pg_observe_cache_get_many",
                                                  [_text_array(wanted), self.namespace.encode()],
                                                  _GET_MANY, (wanted, self.namespace)))

    async def incr(self, key: str, amount: int = 1, ttl: Ttl = None) -> int:
        """Adds ``amount`` atomically and returns the result; a missing key starts at 0 and gets ``ttl``."""
        return int(await self._scalar(_INCR, (_key(key), _incr_amount(amount), _ttl(ttl), self.namespace)))

    async def set_if_absent(self, key: str, value: Any, ttl: Ttl = None) -> bool:
        """Stores the value only if the key is absent or expired (a lock); True when it did."""
        return bool(await self._scalar(_SET_IF_ABSENT, _set_if_absent_params(key, value, ttl, self.namespace)))

    async def ttl(self, key: str) -> float:
        """Seconds the key still lives; -1.0 when it never expires, -2.0 when absent (Redis's TTL)."""
        return float(await self._scalar(_TTL, (_key(key), self.namespace)))

    async def expire(self, key: str, ttl: Ttl) -> bool:
        """A new TTL for a live key (None: never expires); False when the key is absent."""
        return bool(await self._scalar(_EXPIRE, (_key(key), _ttl(ttl), self.namespace)))

    async def exists(self, key: str) -> bool:
        """Whether the key is live."""
        return await self.ttl(key) != -2.0

    async def close(self) -> None:
        """Closes the pool the cache opened for a DSN (a pool or connection you passed stays open)."""
        if self._owned and self._pool is not None and not self._pool.closed:
            await self._pool.close()

    async def __aenter__(self) -> PostgresCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SyncPostgresCache:
    """The synchronous twin of :class:`PostgresCache`: the same methods, without ``await``.

    ``pool``: a ``psycopg_pool.ConnectionPool``, a ``psycopg.Connection`` or a DSN (then the cache
    opens a pool of its own, closed by :meth:`close`).
    """

    def __init__(self, pool: ConnectionPool | psycopg.Connection | str, namespace: str = "default",
                 *, max_connections: int = 4) -> None:
        self.namespace = _check_namespace(namespace)
        self._pool: ConnectionPool | None = None
        self._conn: psycopg.Connection | None = None
        self._owned = False
        if isinstance(pool, ConnectionPool):
            self._pool = pool
        elif isinstance(pool, psycopg.Connection):
            self._conn = pool
        elif isinstance(pool, str):
            self._pool = ConnectionPool(pool, min_size=1, max_size=max_connections, open=True,
                                        kwargs={"autocommit": True})
            self._owned = True
        elif isinstance(pool, (AsyncConnectionPool, psycopg.AsyncConnection)):
            raise TypeError("SyncPostgresCache is the synchronous client: use PostgresCache with a "
                            f"{type(pool).__name__}")
        else:
            raise TypeError("SyncPostgresCache needs a ConnectionPool, a Connection or a DSN, "
                            f"not {type(pool).__name__}")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self._conn is not None:
            yield self._conn
            return
        assert self._pool is not None
        with self._pool.connection() as conn:
            if conn.autocommit:
                yield conn
                return
            conn.autocommit = True
            try:
                yield conn
            finally:
                if conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    conn.autocommit = False

    def _rows(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(query, params)
            return cur.fetchall()

    def _scalar(self, query: str, params: tuple[Any, ...]) -> Any:
        return self._rows(query, params)[0][0]

    def _call(self, name: bytes, fast_params: list[bytes | None], query: str,
              params: tuple[Any, ...]) -> psycopg.pq.abc.PGresult | list[tuple[Any, ...]]:
        """A prepared call's result, or the rows of the cursor where the connection needs one
        (one connection of the pool either way)."""
        if self._conn is not None:   # the common case without a context manager's cost
            result = _fast(self._conn, name, fast_params)
            if result is not None:
                return result
            return self._rows(query, params)
        with self._connection() as conn:
            result = _fast(conn, name, fast_params)
            if result is not None:
                return result
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(query, params)
            return cur.fetchall()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of a live key; ``default`` when it is absent or expired."""
        key = _key(key)
        return _value(self._call(b"pg_observe_cache_get", [key.encode(), self.namespace.encode()], _GET,
                                 (key, self.namespace)), default)

    def set(self, key: str, value: Any, ttl: Ttl = None) -> None:
        """Stores the value (replacing any); ``ttl`` seconds or a timedelta, None: never expires."""
        query, params = _set_params(key, value, ttl, self.namespace)
        if query is _SET_JSON:
            self._call(b"pg_observe_cache_set", _fast_set_params(params), query, params)
        else:
            self._rows(query, params)

    def delete(self, key: str) -> bool:
        """Deletes a key; True when it was there (and not expired)."""
        key = _key(key)
        return _was_live(self._call(b"pg_observe_cache_delete", [key.encode(), self.namespace.encode()], _DELETE,
                                    (key, self.namespace)))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Deletes keys in one call; how many were there."""
        wanted = _keys(keys)
        return _count(self._call(b"pg_observe_cache_delete_many", [_text_array(wanted), self.namespace.encode()],
                                  _DELETE_MANY, (wanted, self.namespace)))

    def delete_pattern(self, pattern: str) -> int:
        """Deletes the keys matching a Redis glob (``user:*``, ``?``, ``[abc]``, ``\\*``); how many."""
        return int(self._scalar(_DELETE_PATTERN, (_key(pattern), self.namespace)))

    def keys(self, pattern: str = "*", limit: int | None = None) -> list[str]:
        """Live keys matching a Redis glob, in byte order (Redis's KEYS)."""
        return [row[0] for row in self._rows(_KEYS, (_key(pattern), self.namespace, limit))]

    def clear(self) -> int:
        """Deletes every key of the namespace (Redis's FLUSHDB for this namespace only)."""
        return self.delete_pattern("*")

    def set_many(self, entries: Mapping[str, Any], ttl: Ttl = None) -> int:
        """Stores every key: value of the mapping in one call, with one TTL; how many."""
        call = _set_many_params(entries, ttl, self.namespace)
        if call is None:
            return 0
        query, params = call
        if query is _SET_MANY_JSON:
            return _count(self._call(b"pg_observe_cache_set_many", _fast_set_many_params(params), query, params))
        return int(self._scalar(query, params))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The live keys among ``keys`` and their values, in one call (absent keys are left out)."""
        wanted = _keys(keys)
        if not wanted:
            return {}
        return _found_in(wanted, self._call(b"pg_observe_cache_get_many",
                                            [_text_array(wanted), self.namespace.encode()],
                                            _GET_MANY, (wanted, self.namespace)))

    def incr(self, key: str, amount: int = 1, ttl: Ttl = None) -> int:
        """Adds ``amount`` atomically and returns the result; a missing key starts at 0 and gets ``ttl``."""
        return int(self._scalar(_INCR, (_key(key), _incr_amount(amount), _ttl(ttl), self.namespace)))

    def set_if_absent(self, key: str, value: Any, ttl: Ttl = None) -> bool:
        """Stores the value only if the key is absent or expired (a lock); True when it did."""
        return bool(self._scalar(_SET_IF_ABSENT, _set_if_absent_params(key, value, ttl, self.namespace)))

    def ttl(self, key: str) -> float:
        """Seconds the key still lives; -1.0 when it never expires, -2.0 when absent (Redis's TTL)."""
        return float(self._scalar(_TTL, (_key(key), self.namespace)))

    def expire(self, key: str, ttl: Ttl) -> bool:
        """A new TTL for a live key (None: never expires); False when the key is absent."""
        return bool(self._scalar(_EXPIRE, (_key(key), _ttl(ttl), self.namespace)))

    def exists(self, key: str) -> bool:
        """Whether the key is live."""
        return self.ttl(key) != -2.0

    def close(self) -> None:
        """Closes the pool the cache opened for a DSN (a pool or connection you passed stays open)."""
        if self._owned and self._pool is not None and not self._pool.closed:
            self._pool.close()

    def __enter__(self) -> SyncPostgresCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
