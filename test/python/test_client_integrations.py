"""The logging handler, the ASGI middleware and the sentry-sdk transport, each with the real thing."""

from __future__ import annotations

import asyncio
import logging

import pg_observe
import pg_observe.sentry
import psycopg
import pytest
import sentry_sdk
from pg_observe.asgi import ErrorTrackingMiddleware
from psycopg.rows import dict_row
from sentry_sdk.integrations.logging import LoggingIntegration


def _rows(dsn: str, where: str = "true", params: tuple = ()) -> list[dict]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(f"SELECT * FROM monitoring.tb_error_occurrence WHERE {where} ORDER BY occurred_at",
                            params).fetchall()


# --- logging ---------------------------------------------------------------------------------------

def test_logging_handler(dsn: str) -> None:
    logger = logging.getLogger("test_client.orders")
    logger.setLevel(logging.DEBUG)
    with pg_observe.init_error_tracker(dsn, environment="test") as tracker:
        handler = pg_observe.ErrorTrackingHandler(tracker)
        logger.addHandler(handler)
        try:
            logger.warning("below the handler's level")
            logger.error("order %s could not be shipped", 42, extra={"order_id": 42, "tags": {"area": "shipping"},
                                                                  "user": {"id": "u-42"}})
            try:
                {}["missing"]
            except KeyError:
                logger.exception("lookup failed for %s", "order 43", extra={"order_id": 43})
            logger.critical("database on fire")
            logging.getLogger("pg_observe").error("the client's own records are not captured")
        finally:
            logger.removeHandler(handler)
        assert tracker.flush(10)
    rows = _rows(dsn)
    assert len(rows) == 3
    message, exception, critical = rows
    assert (message["message"], message["level"], message["logger"]) == \
        ("order 42 could not be shipped", "error", "test_client.orders")
    assert message["context"] == {"order_id": 42}
    assert message["tags"] == {"area": "shipping"} and message["user_info"] == {"id": "u-42"}
    assert (exception["exception_type"], exception["message"], exception["logger"]) == \
        ("KeyError", "'missing'", "test_client.orders")
    assert exception["context"] == {"order_id": 43, "log_message": "lookup failed for order 43"}
    assert exception["frames"][-1]["function"] == "test_logging_handler"
    assert (critical["message"], critical["level"]) == ("database on fire", "fatal")


def test_logging_handler_with_the_async_tracker(dsn: str) -> None:
    async def main() -> None:
        tracker = pg_observe.init_async_error_tracker(dsn)
        logger = logging.getLogger("test_client.async")
        handler = pg_observe.ErrorTrackingHandler(tracker, level=logging.WARNING)
        logger.addHandler(handler)
        try:
            logger.warning("slow query: %.1f s", 3.5)
        finally:
            logger.removeHandler(handler)
        assert await tracker.flush(10)
        await tracker.close()

    asyncio.run(main())
    [row] = _rows(dsn)
    assert (row["message"], row["level"], row["logger"]) == ("slow query: 3.5 s", "warning", "test_client.async")


# --- ASGI ------------------------------------------------------------------------------------------

class _User:
    def __init__(self, pk: int) -> None:
        self.pk = pk


async def _app(scope: dict, receive, send) -> None:
    """A tiny ASGI application: /ok answers, anything else fails after reading the body."""
    if scope["type"] == "lifespan":
        return
    await receive()
    if scope["path"] == "/ok":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    raise RuntimeError(f"handler failed on {scope['path']}")


def _http_scope(path: str, **extra: object) -> dict:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "https",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"page=2&sort=asc",
        "headers": [(b"host", b"shop.example.com"), (b"authorization", b"Bearer s3cr3t-token"),
                    (b"cookie", b"session=abcdef"), (b"x-request-id", b"req-77"), (b"user-agent", b"pytest"),
                    (b"accept", b"text/html"), (b"accept", b"application/json")],
        "client": ("10.1.2.3", 50000), "server": ("shop.example.com", 443),
    }
    scope.update(extra)
    return scope


async def _call(app, scope: dict) -> list[dict]:
    sent: list[dict] = []
    body = [{"type": "http.request", "body": b'{"card": "4111"}', "more_body": False}]

    async def receive() -> dict:
        return body.pop(0) if body else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_asgi_middleware(dsn: str, kind: str) -> None:
    async def main() -> None:
        tracker = (pg_observe.init_error_tracker(dsn, service="shop") if kind == "sync"
                   else pg_observe.init_async_error_tracker(dsn, service="shop"))
        app = ErrorTrackingMiddleware(_app, tracker)
        sent = await _call(app, _http_scope("/ok"))
        assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"
        with pytest.raises(RuntimeError, match="handler failed on /orders/42"):
            await _call(app, _http_scope("/orders/42", state={"user_id": 501}))
        with pytest.raises(RuntimeError, match="handler failed on /cart"):
            await _call(app, _http_scope("/cart", user=_User(pk=9)))
        await app({"type": "lifespan"}, None, None)  # passed through
        flushed = tracker.flush(10)
        assert (await flushed) if kind == "async" else flushed
        assert tracker.stats.sent == 2
        if kind == "async":
            await tracker.close()
        else:
            tracker.close()

    asyncio.run(main())
    orders, cart = _rows(dsn)
    assert (orders["exception_type"], orders["message"]) == ("RuntimeError", "handler failed on /orders/42")
    request = orders["request"]
    assert (request["method"], request["url"], request["query_string"]) == \
        ("POST", "https://shop.example.com/orders/42", "page=2&sort=asc")
    headers = request["headers"]
    assert headers["authorization"] == "[Filtered]" and headers["cookie"] == "[Filtered]"
    assert headers["user-agent"] == "pytest" and headers["accept"] == "text/html, application/json"
    assert "s3cr3t" not in str(orders) and "abcdef" not in str(orders)
    assert orders["user_info"] == {"id": "501"} and orders["context"] == {"request_id": "req-77"}
    assert (orders["transaction_name"], orders["service"]) == ("POST /orders/42", "shop")
    assert orders["frames"][-1]["function"] == "_app"
    assert cart["user_info"] == {"id": "9"}


# --- sentry-sdk ------------------------------------------------------------------------------------

class InvoiceError(Exception):
    pass


def _render_invoice(invoice_id: int) -> None:
    api_key = "-".join(["do", "not", "store"])  # a local variable: not stored  # noqa: F841
    raise InvoiceError(f"invoice {invoice_id} has no lines")


def _fail_invoice(capture) -> str:
    try:
        _render_invoice(5)
    except InvoiceError as error:
        return capture(error)
    raise AssertionError("unreachable")


def _sentry_calls() -> tuple[str, str]:
    """What an application instrumented with sentry-sdk does."""
    sentry_sdk.set_tag("tenant", "acme")
    sentry_sdk.set_user({"id": "s-1", "email": "s1@example.com"})
    exception_id = _fail_invoice(sentry_sdk.capture_exception)
    message_id = sentry_sdk.capture_message("quota almost used", level="warning")
    logging.getLogger("test_client.sentry").error("nightly export failed for %s", "acme")
    with sentry_sdk.start_transaction(name="checkout"):  # a transaction envelope: ignored
        pass
    return exception_id, message_id


def test_sentry_transport(dsn: str) -> None:
    tracker = pg_observe.init_error_tracker(dsn, service="legacy-app")
    sentry_sdk.init(transport=pg_observe.sentry.Transport(tracker), environment="sentry-env", release="9.9.9",
                    traces_sample_rate=1.0, default_integrations=False, auto_enabling_integrations=False,
                    integrations=[LoggingIntegration(level=None, event_level=logging.ERROR)])
    try:
        with sentry_sdk.isolation_scope():
            exception_id, message_id = _sentry_calls()
        direct_id = _fail_invoice(tracker.capture_exception)  # the same error, not through Sentry
        sentry_sdk.flush(5)
        assert tracker.flush(10)
        assert tracker.stats.sent == 4 and tracker.stats.rejected == 0
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init(default_integrations=False)  # back to a client that sends nothing
        tracker.close()

    rows = {r["event_id"].hex: r for r in _rows(dsn)}
    assert len(rows) == 4
    assert rows.pop(direct_id)["error_id"] == rows[exception_id]["error_id"]  # one group by either path
    exc = rows[exception_id]
    assert exc["exception_type"] == f"{__name__}.InvoiceError"  # qualified, as the tracker does
    assert exc["message"] == "invoice 5 has no lines"
    assert (exc["environment"], exc["release_version"], exc["service"]) == ("sentry-env", "9.9.9", "legacy-app")
    assert exc["tags"] == {"tenant": "acme"}
    assert exc["user_info"] == {"id": "s-1", "email": "s1@example.com"}
    assert exc["frames"][-1]["function"] == "_render_invoice" and "vars" not in exc["frames"][-1]
    assert "do-not-store" not in str(exc)
    assert len(exc["trace_id"]) == 32  # Sentry's propagation context
    msg = rows[message_id]
    assert (msg["message"], msg["level"], msg["tags"]) == ("quota almost used", "warning", {"tenant": "acme"})
    [log_row] = [r for k, r in rows.items() if k not in (exception_id, message_id)]
    assert (log_row["message"], log_row["logger"], log_row["level"]) == \
        ("nightly export failed for acme", "test_client.sentry", "error")
    assert log_row["release_version"] == "9.9.9"


def test_sentry_transport_owning_its_tracker(dsn: str) -> None:
    transport = pg_observe.sentry.Transport(dsn, service="from-dsn", environment="ignored-when-sentry-sets-it")
    sentry_sdk.init(transport=transport, environment="prod-like", default_integrations=False)
    try:
        event_id = sentry_sdk.capture_message("through a DSN")
        sentry_sdk.flush(5)
    finally:
        sentry_sdk.get_client().close()  # flushes, then kill() closes the tracker the transport made
        sentry_sdk.init(default_integrations=False)
    assert transport.tracker.stats.sent == 1
    [row] = _rows(dsn)
    assert (row["event_id"].hex, row["service"], row["environment"]) == (event_id, "from-dsn", "prod-like")
