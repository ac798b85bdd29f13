"""A Prometheus exporter: serves ``monitoring.prometheus_metrics()`` on ``GET /metrics``.

Everything is computed in the database; this is only the HTTP side. One connection, kept
between scrapes and used under a lock (scrapes are rare and each is one statement); when a
scrape fails the connection is dropped, the scrape answers 503 (Prometheus records the target
as down, ``up == 0``) and the next scrape connects again.

* ``GET /metrics``: 200 with ``Content-Type: text/plain; version=0.0.4; charset=utf-8``,
  gzip-compressed when the scraper accepts it (Prometheus does).
* 503 with a short message while the database is unreachable or the call fails (the
  details, which may name the server, go to the log only); 404 for another path, 405 for
  another method.
* Connections are kept alive between scrapes (HTTP/1.1) but closed after ``idle_timeout``
  seconds without a request, so an idle client cannot hold a thread for ever; and closed
  after every 4xx reply and every request that carried a body (which is never read as the
  next request: a small one is read and discarded first).

Run it with ``pg-observe exporter`` or :class:`MetricsExporter`.
"""

from __future__ import annotations

import gzip
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import psycopg

from pg_observe._http import send_reply

log = logging.getLogger("pg_observe.exporter")

METRICS_PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_QUERY = "SELECT monitoring.prometheus_metrics()"
_MAX_DISCARDED_BODY = 1 << 20  # a larger request body is left unread: the connection is closed anyway
_INDEX = (b"<html><head><title>pg_observe exporter</title></head><body><h1>pg_observe exporter</h1>"
          b'<p><a href="/metrics">Metrics</a></p></body></html>\n')


class DatabaseUnavailable(Exception):
    """The metrics could not be read; the message is safe to show to a scraper."""


class MetricsExporter:
    """Serves ``monitoring.prometheus_metrics()`` over HTTP.

    ``conninfo`` is a libpq connection string (a role with ``observe_reader`` suffices);
    ``port=0`` picks a free port (see :attr:`server_address`). ``connect_timeout`` and
    ``statement_timeout`` (seconds) bound a scrape while the database is slow or away;
    ``idle_timeout`` (seconds) bounds every read and write of a client's socket, so a kept-alive
    connection without a request is closed after it.
    """

    def __init__(self, conninfo: str, host: str = "127.0.0.1", port: int = 9464, *,
                 connect_timeout: float = 5.0, statement_timeout: float = 10.0,
                 idle_timeout: float = 30.0) -> None:
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be positive")
        self.conninfo = conninfo
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.idle_timeout = idle_timeout
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True

    @property
    def server_address(self) -> tuple[str, int]:
        """The address the server listens on: (host, port)."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        """Serves until :meth:`shutdown` is called (from another thread or a signal handler)."""
        log.debug("serving %s on http://%s:%d%s", _QUERY, *self.server_address, METRICS_PATH)
        self._httpd.serve_forever()

    def shutdown(self) -> None:
        """Stops :meth:`serve_forever`, closes the socket and the database connection."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            self._drop_connection()

    def scrape(self) -> str:
        """The exposition text, from the database; raises :class:`DatabaseUnavailable`."""
        with self._lock:
            # A kept connection may have died since the last scrape (server restart, idle
            # timeout): then one fresh connection is tried at once before answering 503.
            attempts = 2 if self._conn is not None else 1
            for attempt in range(1, attempts + 1):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = self._connect()
                    row = self._conn.execute(_QUERY).fetchone()
                    break
                except psycopg.Error as exc:
                    self._drop_connection()
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    if attempt < attempts and isinstance(exc, psycopg.OperationalError):
                        log.info("connection lost (%s): reconnecting", first_line)
                        continue
                    log.warning("scrape failed: %s", first_line)
                    raise DatabaseUnavailable(f"cannot read pg_observe metrics ({type(exc).__name__})") from exc
        if row is None or row[0] is None:
            raise DatabaseUnavailable("monitoring.prometheus_metrics() returned nothing")
        return str(row[0])

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=max(1, round(self.connect_timeout)),
                               application_name="pg_observe exporter",
                               options=f"-c statement_timeout={int(self.statement_timeout * 1000)}")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:  # pragma: no cover - closing a broken connection
                pass

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "pg_observe-exporter"
            protocol_version = "HTTP/1.1"
            timeout = exporter.idle_timeout  # the socket's: an idle keep-alive connection ends

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                if path == "/":
                    self._reply(200, _INDEX, "text/html; charset=utf-8")
                    return
                if path != METRICS_PATH:
                    self._reply(404, b"not found: the metrics are on /metrics\n")
                    return
                try:
                    text = exporter.scrape()
                except DatabaseUnavailable as exc:
                    self._reply(503, f"pg_observe exporter: {exc}\n".encode(), extra={"Retry-After": "5"})
                    return
                body = text.encode("utf-8")
                accepts = self.headers.get("Accept-Encoding", "")
                if "gzip" in [part.split(";")[0].strip().lower() for part in accepts.split(",")]:
                    self._reply(200, gzip.compress(body), CONTENT_TYPE, extra={"Content-Encoding": "gzip"})
                else:
                    self._reply(200, body, CONTENT_TYPE)

            def do_HEAD(self) -> None:
                self._reply(405, b"", extra={"Allow": "GET"})

            def do_POST(self) -> None:
                self._reply(405, b"method not allowed: use GET\n", extra={"Allow": "GET"})

            do_PUT = do_DELETE = do_PATCH = do_POST

            def _discard_body(self) -> bool:
                """Reads a small request body away; False when one may be left unread."""
                if self.headers.get("Transfer-Encoding") is not None:
                    return False
                length = (self.headers.get("Content-Length") or "0").strip()
                if not length.isdigit() or int(length) > _MAX_DISCARDED_BODY:
                    return False
                remaining = int(length)
                try:
                    while remaining > 0:
                        chunk = self.rfile.read(min(remaining, 65536))
                        if not chunk:
                            return False
                        remaining -= len(chunk)
                except OSError:  # the idle timeout, or the client went away
                    return False
                return True

            def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                       extra: dict[str, str] | None = None) -> None:
                # No body is ever used: whatever came with the request is not read as the next
                # request. After a client error, or a body, the connection ends here.
                has_body = (self.headers.get("Transfer-Encoding") is not None
                            or (self.headers.get("Content-Length") or "0").strip() != "0")
                if has_body:
                    self._discard_body()
                if status >= 400 or has_body:
                    self.close_connection = True
                send_reply(self, status, body, content_type, extra)

            def log_message(self, format: str, *args: object) -> None:  # http.server's signature
                log.debug("%s %s", self.address_string(), format % args)

        return Handler
