"""A small OTLP/HTTP trace receiver that stores spans with ``monitoring.ingest_otlp_traces()``.

Any OpenTelemetry SDK or Collector can then export traces to PostgreSQL without a Python
exporter in the application: point its OTLP/HTTP exporter at ``http://host:4318/v1/traces``.

* ``POST /v1/traces`` with ``Content-Type: application/json`` (OTLP/JSON, passed to the
  database as it is) or ``application/x-protobuf`` (when ``opentelemetry-proto`` is installed,
  the ``otlp`` extra: decoded and turned into OTLP/JSON here); ``Content-Encoding: gzip`` or
  ``deflate`` accepted.
* Answers as OTLP/HTTP requires: 200 with an ExportTraceServiceResponse (with
  ``partialSuccess`` when the database rejected spans), 400 for an undecodable body, 404, 405,
  413 above ``max_body_bytes``, 415 for another content type or encoding, 503 with
  ``Retry-After`` while the database is unreachable (OTLP exporters retry on 503). Error
  bodies are a google.rpc.Status, in the request's encoding.

Standard library HTTP server (one thread per client connection) and a small psycopg pool.
Run it with ``pg-observe otlp-receiver`` or :class:`OTLPReceiver`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from pg_observe._http import send_reply
from pg_observe._sender import _transient
from pg_observe.events import clean_string

try:  # the protobuf path is optional: the `otlp` extra
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    PROTOBUF_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installed extras
    PROTOBUF_AVAILABLE = False

log = logging.getLogger("pg_observe.otlp_receiver")

TRACES_PATH = "/v1/traces"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_INGEST_SQL = "SELECT * FROM monitoring.ingest_otlp_traces(%s::jsonb)"

_JSON_TYPES = ("application/json",)
_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")

# \u0000 and surrogate escapes: jsonb refuses NUL and lone surrogates, Python's json does not
_NEEDS_REPAIR = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")

# HTTP status -> google.rpc.Code, for the Status body of error responses
_RPC_CODES = {400: 3, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 500: 13, 503: 14}


class _Reply(Exception):
    """Ends the request with an error response."""

    def __init__(self, status: int, message: str, *, close: bool = False, headers: dict[str, str] | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message   # for the client
        self.detail = detail or message  # for the log: may name the database server
        self.close = close
        self.headers = headers or {}


# --- conversions ---------------------------------------------------------------------------------------

def _clean(value: Any) -> Any:
    """The decoded JSON with NUL (and lone surrogates) in every string and key replaced by U+FFFD."""
    if isinstance(value, str):
        return value if value.isascii() and "\x00" not in value else clean_string(value, len(value) + 1)
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    return value


def repair_json(text: str) -> str:
    """OTLP/JSON text that jsonb accepts: when it holds ``\\u0000`` or surrogate escapes, it is
    decoded, cleaned and encoded again; otherwise returned as it is. Raises ValueError when it
    is not JSON."""
    if not _NEEDS_REPAIR.search(text):
        return text
    return json.dumps(_clean(json.loads(text)), ensure_ascii=False, separators=(",", ":"))


def _hex_id(value: Any) -> Any:
    # protobuf's JSON mapping gives bytes as base64; OTLP/JSON wants trace and span ids in hex
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True).hex()
    except ValueError:
        return value


def _hex_ids(item: dict[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in item:
            item[key] = _hex_id(item[key])


def protobuf_to_otlp_json(body: bytes) -> dict[str, Any]:
    """An ExportTraceServiceRequest in protobuf as the OTLP/JSON object: camelCase names, ids in
    lower-case hex, enums as integers, 64-bit integers as strings, bytesValue in base64.
    Raises ValueError when the body is not such a message."""
    if not PROTOBUF_AVAILABLE:
        raise RuntimeError("the protobuf path needs the opentelemetry-proto package")
    try:
        message = ExportTraceServiceRequest.FromString(body)
    except DecodeError as error:
        raise ValueError(f"not an ExportTraceServiceRequest: {error}") from error
    request = _clean(json_format.MessageToDict(message, use_integers_for_enums=True))
    for resource_spans in request.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span, ("traceId", "spanId", "parentSpanId"))
                for link in span.get("links", ()):
                    _hex_ids(link, ("traceId", "spanId"))
    return request


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _status_protobuf(code: int, message: str) -> bytes:
    """google.rpc.Status {code = 1, message = 2}, encoded by hand: no googleapis dependency."""
    text = message.encode("utf-8")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return body
    # gzip: 16 + MAX_WBITS; deflate: zlib-wrapped as HTTP says, or raw as some clients send it
    attempts = (16 + zlib.MAX_WBITS,) if encoding in ("gzip", "x-gzip") else (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    for n, wbits in enumerate(attempts):
        decompressor = zlib.decompressobj(wbits)
        try:
            data = decompressor.decompress(body, limit + 1)
            if len(data) > limit:
                raise _Reply(413, f"decompressed body larger than {limit} bytes")
            if not decompressor.eof:
                raise zlib.error("truncated stream")
            return data
        except zlib.error as error:
            if n == len(attempts) - 1:
                raise _Reply(400, f"cannot decompress the {encoding} body: {error}") from error
    raise AssertionError("unreachable")


# --- the HTTP side -------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: exporters reuse their connection
    server_version = "pg_observe-otlp-receiver"
    receiver: OTLPReceiver  # set on the per-receiver subclass
    timeout = 30.0          # idle keep-alive connections do not hold a thread for ever
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK hold every response back by about 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # one line per request is written by _log_line, with the counts

    def handle_expect_100(self) -> bool:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.receiver.max_body_bytes:
            self.close_connection = True
            self._send_error(_Reply(413, f"body larger than {self.receiver.max_body_bytes} bytes", close=True))
            return False
        return super().handle_expect_100()

    # --- methods ---

    def do_POST(self) -> None:
        self._started = time.monotonic()
        self._protobuf_reply = False
        try:
            status, body, content_type, counts = self._ingest()
        except _Reply as reply:
            self._send_error(reply)
            return
        self._send(status, body, content_type)
        self._log_line(status, len(body), counts)

    def _not_allowed(self) -> None:
        self._started = time.monotonic()
        self._protobuf_reply = False
        if urlsplit(self.path).path != TRACES_PATH:
            self._send_error(_Reply(404, f"no such path: {urlsplit(self.path).path}", close=True))
        else:
            self._send_error(_Reply(405, f"{self.command} not allowed: POST only", close=True,
                                    headers={"Allow": "POST"}))

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    # --- the request ---

    def _ingest(self) -> tuple[int, bytes, str, tuple[int, int, int]]:
        path = urlsplit(self.path).path
        if path != TRACES_PATH:
            raise _Reply(404, f"no such path: {path}", close=True)
        media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        is_protobuf = media_type in _PROTOBUF_TYPES
        self._protobuf_reply = is_protobuf and PROTOBUF_AVAILABLE
        if is_protobuf and not PROTOBUF_AVAILABLE:
            raise _Reply(415, "application/x-protobuf needs the opentelemetry-proto package on the receiver;"
                              " send application/json", close=True)
        if not is_protobuf and media_type not in _JSON_TYPES:
            raise _Reply(415, f"unsupported content type {media_type or '(none)'!r}: application/json or"
                              " application/x-protobuf", close=True)
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            raise _Reply(415, f"unsupported content encoding {encoding!r}: gzip, deflate or none", close=True)
        limit = self.receiver.max_body_bytes
        body = _decompress(self._read_body(limit), encoding, limit)
        if is_protobuf:
            try:
                document = json.dumps(protobuf_to_otlp_json(body), ensure_ascii=False, separators=(",", ":"))
            except ValueError as error:
                raise _Reply(400, str(error)) from error
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _Reply(400, f"the body is not UTF-8: {error}") from error
            if "\x00" in text:
                raise _Reply(400, "the body is not JSON: raw NUL character")
            try:
                document = repair_json(text)
            except ValueError as error:
                raise _Reply(400, f"the body is not JSON: {error}") from error
        accepted, duplicates, rejected = self.receiver._store(document)
        counts = (accepted, duplicates, rejected)
        if is_protobuf:
            response = ExportTraceServiceResponse()
            if rejected:
                response.partial_success.CopyFrom(
                    ExportTracePartialSuccess(rejected_spans=rejected, error_message=_rejected_message(rejected)))
            return 200, response.SerializeToString(), "application/x-protobuf", counts
        answer: dict[str, Any] = {}
        if rejected:
            answer["partialSuccess"] = {"rejectedSpans": rejected, "errorMessage": _rejected_message(rejected)}
        return 200, json.dumps(answer).encode("utf-8"), "application/json", counts

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        if not length_header.strip().isdigit():
            raise _Reply(400, f"bad Content-Length {length_header!r}", close=True)
        length = int(length_header)
        if length > limit:
            raise _Reply(413, f"body larger than {limit} bytes", close=True)
        body = self.rfile.read(length)
        if len(body) < length:
            raise _Reply(400, "body shorter than its Content-Length", close=True)
        return body

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1026)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as error:
                raise _Reply(400, "bad chunked encoding", close=True) from error
            if size == 0:
                while self.rfile.readline(65537).strip():
                    pass  # trailers
                return bytes(body)
            if len(body) + size > limit:
                raise _Reply(413, f"body larger than {limit} bytes", close=True)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise _Reply(400, "truncated chunk", close=True)
            body += chunk
            self.rfile.readline(3)

    # --- responses ---

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            send_reply(self, status, body, content_type, headers)
        except OSError:  # the client went away
            self.close_connection = True

    def _send_error(self, reply: _Reply) -> None:
        if reply.close:
            self.close_connection = True
        code = _RPC_CODES.get(reply.status, 2)
        if getattr(self, "_protobuf_reply", False):
            body, content_type = _status_protobuf(code, reply.message), "application/x-protobuf"
        else:
            body = json.dumps({"code": code, "message": reply.message}).encode("utf-8")
            content_type = "application/json"
        self._send(reply.status, body, content_type, reply.headers)
        self._log_line(reply.status, len(body), None, reply.detail)

    def _log_line(self, status: int, size: int, counts: tuple[int, int, int] | None, error: str = "") -> None:
        elapsed_ms = (time.monotonic() - getattr(self, "_started", time.monotonic())) * 1000
        if counts is not None:
            log.info("%s %s %s %d accepted=%d duplicates=%d rejected=%d %.1fms", self.client_address[0],
                     self.command, self.path, status, *counts, elapsed_ms)
        else:
            log.info("%s %s %s %d %s %.1fms", self.client_address[0], self.command, self.path, status, error,
                     elapsed_ms)


def _rejected_message(rejected: int) -> str:
    return (f"{rejected} span(s) rejected (invalid ids, name or times); the reasons are in "
            "monitoring.rejected_telemetry")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("error while handling a request from %s", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class OTLPReceiver:
    """OTLP/HTTP trace receiver storing spans in the database of ``dsn``.

    The socket is bound when the object is made: with ``port=0`` a free port is picked, read
    it from :attr:`port`. ``max_body_bytes`` bounds a body (compressed and decompressed),
    ``pool_size`` the database connections, ``db_timeout`` how long a request waits for one
    before answering 503 (with ``Retry-After: retry_after`` seconds).
    """

    def __init__(
        self,
        dsn: str = "",
        host: str = "127.0.0.1",
        port: int = 4318,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        pool_size: int = 4,
        db_timeout: float = 5.0,
        retry_after: int = 5,
        idle_timeout: float = 30.0,
    ) -> None:
        if max_body_bytes < 1 or pool_size < 1 or db_timeout <= 0:
            raise ValueError("max_body_bytes and pool_size must be positive, db_timeout above 0")
        self.dsn = dsn
        self.max_body_bytes = max_body_bytes
        self.db_timeout = db_timeout
        self.retry_after = retry_after
        try:
            given = conninfo_to_dict(dsn)
        except Exception:
            given = {}
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in given:
            kwargs["connect_timeout"] = max(2, int(db_timeout))
        if "application_name" not in given:
            kwargs["application_name"] = "pg_observe otlp-receiver"
        # reconnect_timeout: after an outage, a failed connection attempt is given up within
        # 30 s, so the next request starts a fresh one instead of waiting on a long backoff
        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, kwargs=kwargs, open=False,
                                    name="pg_observe-otlp-receiver", reconnect_timeout=30.0)
        handler = type("OTLPHandler", (_Handler,), {"receiver": self, "timeout": idle_timeout})
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), handler)
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()
        self._closed = False

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The traces endpoint, as OTLP exporters want it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{TRACES_PATH}"

    def serve_forever(self) -> None:
        """Serves until :meth:`stop` is called (from another thread)."""
        self._pool.open(wait=False)
        self._serving.set()
        try:
            self._server.serve_forever(poll_interval=0.25)
        finally:
            self._serving.clear()

    def start(self) -> OTLPReceiver:
        """Serves in a background (daemon) thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever, name=f"otlp-receiver-{self.port}",
                                            daemon=True)
            self._thread.start()
            self._serving.wait(5.0)
        return self

    def stop(self) -> None:
        """Stops serving, closes the socket and the database connections."""
        if self._closed:
            return
        self._closed = True
        if self._serving.is_set():
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(5.0)
        self._server.server_close()
        self._pool.close(timeout=2.0)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _store(self, document: str) -> tuple[int, int, int]:
        """(accepted, duplicates, rejected) from the database, or an error reply."""
        # Idle pooled connections broken by a server restart each fail once: try again while
        # it is one of those (at most one try per pooled connection); spans sent twice are
        # stored once, so a retry is harmless.
        for attempt in range(self._pool.max_size + 1):
            used: psycopg.Connection | None = None
            try:
                with self._pool.connection(timeout=self.db_timeout) as conn:
                    used = conn
                    row = conn.execute(_INGEST_SQL, (document,)).fetchone()
                return (int(row[0] or 0), int(row[1] or 0), int(row[2] or 0)) if row else (0, 0, 0)
            except Exception as error:
                message = _first_line(error)
                if _transient(error):
                    if used is not None and used.broken and attempt < self._pool.max_size:
                        continue
                    raise _Reply(503, "database unavailable", headers={"Retry-After": str(self.retry_after)},
                                 detail=f"database unavailable: {type(error).__name__}: {message}") from error
                sqlstate = getattr(error, "sqlstate", None) or ""
                if sqlstate.startswith("22") or sqlstate == "P0001":
                    raise _Reply(400, f"the database refused the request: {message}") from error
                log.error("cannot store spans: %s: %s", type(error).__name__, message)
                raise _Reply(500, "internal error", detail=f"{type(error).__name__}: {message}") from error
        raise AssertionError("unreachable")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["DEFAULT_MAX_BODY_BYTES", "PROTOBUF_AVAILABLE", "TRACES_PATH", "OTLPReceiver",
           "protobuf_to_otlp_json", "repair_json"]
