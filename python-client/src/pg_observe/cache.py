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
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, Optional, Union

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

Ttl = Union[int, float, datetime.timedelta, None]

_GET = "SELECT value, value_bytes, value_type FROM monitoring.cache_get_entry(%s, %s)"
# Arrays go in binary (%b): psycopg's text format quotes every element in Python, ~40 times slower.
# One row: the JSON entries as one JSON object (one json.loads, not one per entry), the others as arrays.
_GET_MANY = ("SELECT json_values, other_keys, other_values, other_types"
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

# The synchronous client's calls on an idle autocommit connection skip psycopg's cursor
# machinery, which costs the client about as much CPU as the cache function costs the server
# (more with several clients per core): a statement prepared once per connection, run with
# libpq's exec_prepared, results in binary. Anything else (an error, a lost connection, a
# statement dropped by DEALLOCATE or DISCARD) runs the same call again through a cursor, which
# raises psycopg's own exceptions: the call failed as a whole, so running it again is a retry.
_TEXT_ARRAY_OID = 1009
_FAST_STATEMENTS: dict[bytes, tuple[bytes, list[int] | None]] = {
    b"pg_observe_cache_get": (b"SELECT value, value_bytes, value_type FROM monitoring.cache_get_entry($1, $2)", None),
    b"pg_observe_cache_set": (b"SELECT monitoring.cache_set($1, $2::jsonb, $3::interval, $4)", None),
    b"pg_observe_cache_delete": (b"SELECT monitoring.cache_delete($1, $2)", None),
    b"pg_observe_cache_get_many": (b"SELECT json_values, other_keys, other_values, other_types"
                                   b" FROM monitoring.cache_get_many_packed($1, $2)", [_TEXT_ARRAY_OID, 0]),
    b"pg_observe_cache_set_many": (b"SELECT monitoring.cache_set_many($1::jsonb, $2::interval, $3)", None),
    b"pg_observe_cache_delete_many": (b"SELECT monitoring.cache_delete_many($1, $2)", [_TEXT_ARRAY_OID, 0]),
}
# per connection: the statements prepared on it, or None where the fast path is off
_prepared: weakref.WeakKeyDictionary[psycopg.Connection | psycopg.AsyncConnection, set[bytes] | None] = (
    weakref.WeakKeyDictionary())
_OK = psycopg.pq.ExecStatus.TUPLES_OK
_IDLE = psycopg.pq.TransactionStatus.IDLE
_PIPELINE_OFF = psycopg.pq.PipelineStatus.OFF
_BINARY = psycopg.pq.Format.BINARY
_ARRAY_HEADER = struct.Struct("!iiI")
_ARRAY_DIMENSION = struct.Struct("!ii")
_INT4 = struct.Struct("!i")
_POLL = getattr(select, "poll", None)   # not on Windows: cursors there


def _fast(conn: psycopg.Connection, name: bytes, params: list[bytes | None]) -> psycopg.pq.abc.PGresult | None:
    """The result of a prepared call, or None: then the caller uses a cursor."""
    if not conn.autocommit or _POLL is None:
        return None
    prepared = _prepared.get(conn, ())
    if prepared is None:
        return None
    with conn.lock:
        pgconn = conn.pgconn
        if pgconn.transaction_status != _IDLE or pgconn.pipeline_status != _PIPELINE_OFF:
            return None
        sql, types = _FAST_STATEMENTS[name]
        if name not in prepared:
            if pgconn.prepare(name, sql, types).status != psycopg.pq.ExecStatus.COMMAND_OK:
                _prepared[conn] = None   # a statement of the user's has the name: this connection uses cursors
                return None
            prepared = _prepared.setdefault(conn, set())
            assert prepared is not None
            prepared.add(name)
        formats = [_BINARY if t == _TEXT_ARRAY_OID else 0 for t in types] if types else None
        try:
            pgconn.send_query_prepared(name, params, formats, result_format=_BINARY)
            result = _result(pgconn)
        except psycopg.OperationalError:
            return None   # the connection is lost: the cursor says so
        except BaseException:
            # Ctrl-C while the server works (a lock wait, say): cancel the call, as psycopg does
            with contextlib.suppress(Exception):
                pgconn.get_cancel().cancel()
                while pgconn.get_result() is not None:
                    pass
            raise
        if result.status != _OK:
            # Dropped (DISCARD ALL), or its plan outdated by an upgrade, or a bad argument: prepared
            # anew at the next call. The cursor reports the error, if it is one.
            prepared.discard(name)
            if pgconn.transaction_status == _IDLE:
                pgconn.exec_(b"DEALLOCATE " + name)
            return None
        return result


def _result(pgconn: psycopg.pq.abc.PGconn) -> psycopg.pq.abc.PGresult:
    """The first result of the query sent, waiting in poll() (a Python call: Ctrl-C interrupts it)."""
    poller = _POLL()
    poller.register(pgconn.socket, select.POLLIN)
    if pgconn.flush():   # a large value: send the rest as the server reads
        poller.modify(pgconn.socket, select.POLLIN | select.POLLOUT)
        while pgconn.flush():
            poller.poll()
            pgconn.consume_input()
        poller.modify(pgconn.socket, select.POLLIN)
    first = None
    while True:   # one statement: its result, then libpq's end of results
        pgconn.consume_input()
        while pgconn.is_busy():
            poller.poll()
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        if first is None:
            first = result
    assert first is not None
    return first


async def _afast(conn: psycopg.AsyncConnection, name: bytes,
                 params: list[bytes | None]) -> psycopg.pq.abc.PGresult | None:
    """_fast() for asyncio: the waits are the event loop's."""
    if not conn.autocommit or _POLL is None:
        return None
    prepared = _prepared.get(conn, ())
    if prepared is None:
        return None
    async with conn.lock:
        pgconn = conn.pgconn
        if pgconn.transaction_status != _IDLE or pgconn.pipeline_status != _PIPELINE_OFF:
            return None
        sql, types = _FAST_STATEMENTS[name]
        try:
            if name not in prepared:
                pgconn.send_prepare(name, sql, types)
                if (await _aresult(pgconn)).status != psycopg.pq.ExecStatus.COMMAND_OK:
                    _prepared[conn] = None   # a statement of the user's has the name: this connection uses cursors
                    return None
                prepared = _prepared.setdefault(conn, set())
                assert prepared is not None
                prepared.add(name)
            formats = [_BINARY if t == _TEXT_ARRAY_OID else 0 for t in types] if types else None
            pgconn.send_query_prepared(name, params, formats, result_format=_BINARY)
            result = await _aresult(pgconn)
        except psycopg.OperationalError:
            return None   # the connection is lost: the cursor says so
        except BaseException:
            # the task cancelled (a timeout, say) while the server works: cancel the call too
            with contextlib.suppress(Exception):
                pgconn.get_cancel().cancel()
                await _aresult(pgconn)
            raise
        if result.status != _OK:
            prepared.discard(name)   # see _fast()
            if pgconn.transaction_status == _IDLE:
                pgconn.send_query(b"DEALLOCATE " + name)
                await _aresult(pgconn)
            return None
        return result


async def _aresult(pgconn: psycopg.pq.abc.PGconn) -> psycopg.pq.abc.PGresult:
    """The first result of the query sent, read as the event loop says the socket is ready."""
    loop = asyncio.get_running_loop()
    fd = pgconn.socket
    while pgconn.flush():
        await _ready(loop, fd, write=True)
        pgconn.consume_input()
    first = None
    while True:
        pgconn.consume_input()
        while pgconn.is_busy():
            await _ready(loop, fd, write=False)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        first = first or result
    assert first is not None
    return first


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


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


def _binary_array(data: bytes) -> list[bytes]:
    """The elements of a one-dimensional array without NULLs, in binary (text and bytea alike)."""
    ndim = _INT4.unpack_from(data, 0)[0]
    if ndim == 0:
        return []
    count = _INT4.unpack_from(data, 12)[0]
    offset, elements = 20, []
    for _ in range(count):
        size = _INT4.unpack_from(data, offset)[0]
        elements.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return elements


def _entry(result: psycopg.pq.abc.PGresult, default: Any) -> Any:
    """get()'s value from a binary row of cache_get_entry (value, value_bytes, value_type)."""
    if not result.ntuples:
        return default
    value_type = result.get_value(0, 2)
    if value_type == b"json":
        return json.loads(result.get_value(0, 0)[1:])   # binary jsonb: a version byte, then the text
    return _decode(None, result.get_value(0, 1), value_type.decode())


def _packed_row(result: psycopg.pq.abc.PGresult) -> tuple[Any, ...]:
    """cache_get_many_packed's binary row as the cursor gives it."""
    return (json.loads(result.get_value(0, 0)),
            [k.decode() for k in _binary_array(result.get_value(0, 1))],
            _binary_array(result.get_value(0, 2)),
            [t.decode() for t in _binary_array(result.get_value(0, 3))])


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


def _decode(value: Any, value_bytes: bytes | None, value_type: str) -> Any:
    if value_type == "json":
        return value
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
    found = json_values   # a new dict from json.loads
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

    async def _fast(self, name: bytes, params: list[bytes | None]) -> psycopg.pq.abc.PGresult | None:
        async with self._connection() as conn:
            return await _afast(conn, name, params)

    async def get(self, key: str, default: Any = None) -> Any:
        """The value of a live key; ``default`` when it is absent or expired."""
        key = _key(key)
        result = await self._fast(b"pg_observe_cache_get", [key.encode(), self.namespace.encode()])
        if result is None:
            rows = await self._rows(_GET, (key, self.namespace))
            return _decode(*rows[0]) if rows else default
        return _entry(result, default)

    async def set(self, key: str, value: Any, ttl: Ttl = None) -> None:
        """Stores the value (replacing any); ``ttl`` seconds or a timedelta, None: never expires."""
        query, params = _set_params(key, value, ttl, self.namespace)
        if query is _SET_JSON and await self._fast(b"pg_observe_cache_set", _fast_set_params(params)) is not None:
            return
        await self._rows(query, params)

    async def delete(self, key: str) -> bool:
        """Deletes a key; True when it was there (and not expired)."""
        key = _key(key)
        result = await self._fast(b"pg_observe_cache_delete", [key.encode(), self.namespace.encode()])
        if result is None:
            return bool(await self._scalar(_DELETE, (key, self.namespace)))
        return result.get_value(0, 0) == b"\x01"

    async def delete_many(self, keys: Iterable[str]) -> int:
        """Deletes keys in one call; how many were there."""
        wanted = _keys(keys)
        result = await self._fast(b"pg_observe_cache_delete_many", [_text_array(wanted), self.namespace.encode()])
        if result is None:
            return int(await self._scalar(_DELETE_MANY, (wanted, self.namespace)))
        return int(_INT4.unpack(result.get_value(0, 0))[0])

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
            result = await self._fast(b"pg_observe_cache_set_many", _fast_set_many_params(params))
            if result is not None:
                return int(_INT4.unpack(result.get_value(0, 0))[0])
        return int(await self._scalar(query, params))

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The live keys among ``keys`` and their values, in one call (absent keys are left out)."""
        wanted = _keys(keys)
        if not wanted:
            return {}
        result = await self._fast(b"pg_observe_cache_get_many", [_text_array(wanted), self.namespace.encode()])
        if result is None:
            return _found(wanted, (await self._rows(_GET_MANY, (wanted, self.namespace)))[0])
        return _found(wanted, _packed_row(result))

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

    def _fast(self, name: bytes, params: list[bytes | None]) -> psycopg.pq.abc.PGresult | None:
        if self._conn is not None:
            return _fast(self._conn, name, params)
        assert self._pool is not None
        with self._connection() as conn:
            return _fast(conn, name, params)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of a live key; ``default`` when it is absent or expired."""
        key = _key(key)
        result = self._fast(b"pg_observe_cache_get", [key.encode(), self.namespace.encode()])
        if result is None:
            rows = self._rows(_GET, (key, self.namespace))
            return _decode(*rows[0]) if rows else default
        return _entry(result, default)

    def set(self, key: str, value: Any, ttl: Ttl = None) -> None:
        """Stores the value (replacing any); ``ttl`` seconds or a timedelta, None: never expires."""
        query, params = _set_params(key, value, ttl, self.namespace)
        if query is _SET_JSON and self._fast(b"pg_observe_cache_set", _fast_set_params(params)) is not None:
            return
        self._rows(query, params)

    def delete(self, key: str) -> bool:
        """Deletes a key; True when it was there (and not expired)."""
        key = _key(key)
        result = self._fast(b"pg_observe_cache_delete", [key.encode(), self.namespace.encode()])
        if result is None:
            return bool(self._scalar(_DELETE, (key, self.namespace)))
        return result.get_value(0, 0) == b"\x01"

    def delete_many(self, keys: Iterable[str]) -> int:
        """Deletes keys in one call; how many were there."""
        wanted = _keys(keys)
        result = self._fast(b"pg_observe_cache_delete_many", [_text_array(wanted), self.namespace.encode()])
        if result is None:
            return int(self._scalar(_DELETE_MANY, (wanted, self.namespace)))
        return int(_INT4.unpack(result.get_value(0, 0))[0])

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
            result = self._fast(b"pg_observe_cache_set_many", _fast_set_many_params(params))
            if result is not None:
                return int(_INT4.unpack(result.get_value(0, 0))[0])
        return int(self._scalar(query, params))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The live keys among ``keys`` and their values, in one call (absent keys are left out)."""
        wanted = _keys(keys)
        if not wanted:
            return {}
        result = self._fast(b"pg_observe_cache_get_many", [_text_array(wanted), self.namespace.encode()])
        if result is None:
            return _found(wanted, self._rows(_GET_MANY, (wanted, self.namespace))[0])
        return _found(wanted, _packed_row(result))

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
