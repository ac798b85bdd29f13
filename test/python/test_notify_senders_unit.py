"""Unit tests of plpython/notify_send.py (the notification senders), run as plain Python: no
database. The module is loaded from its path, as the build wraps that same file. Every sender
talks to a real server on 127.0.0.1: aiosmtpd for email, http.server for the HTTP channels."""

from __future__ import annotations

import ast
import base64
import email
import email.policy
import hashlib
import hmac
import importlib.util
import json
import pathlib
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "plpython" / "notify_send.py"
_spec = importlib.util.spec_from_file_location("pg_observe_notify_send", SOURCE)
ns = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ns)

HEADER = (
    "# pg_observe:function monitoring._send_notifications(p_messages jsonb, p_max_parallel integer) RETURNS jsonb "
    "LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp  # noqa: E501\n"
    "# pg_observe:entry send_all(p_messages, p_max_parallel)\n"
)
RESULT_KEYS = ["id", "ok", "error", "recipient", "status_code", "duration_ms", "attempted"]
SMTP_USER, SMTP_PASSWORD = "mailer", "s3cret-Pa55word"

NOTIFICATION = {
    "idempotency_key": "6f1c2a9e-4b7d-4c1e-9a55-0d3e2b1f7a10",
    "notification_trigger": "new",
    "threshold": None,
    "config_id": "0b5c6f3e-1111-4222-8333-944455556666",
    "error_id": "9d8c7b6a-aaaa-4bbb-8ccc-dddddddddddd",
    "error_fingerprint": "c0ffee0123456789",
    "error_type": "ValueError",
    "error_message": "order 42 not found",
    "title": "ValueError: order <int> not found",
    "culprit": "orders.py in charge",
    "severity": "error",
    "occurrence_count": 3,
    "affected_users": 2,
    "first_seen": "2024-05-01T10:00:00+00:00",
    "last_seen": "2024-05-01T10:05:00+00:00",
    "environment": "prod",
    "release_version": "1.4.2",
    "service": "shop",
    "server_name": "web-1",
    "occurrence_id": "11111111-2222-4333-8444-555555555555",
    "trace_id": "abc123",
    "stack_trace": 'Traceback (most recent call last):\n  File "orders.py", line 42, in charge\nValueError: order 42',
    "queued_at": "2024-05-01T10:05:01+00:00",
}


def notification(**changes: object) -> dict:
    return {**NOTIFICATION, **changes}


def send(messages: list, parallel: int = 4) -> list:
    results = json.loads(ns.send_all(json.dumps(messages), parallel))
    for result in results:
        assert list(result) == RESULT_KEYS
        assert isinstance(result["duration_ms"], float)
    return results


def send_one(message: dict) -> dict:
    return send([{"id": 1, "timeout": 2, **message}])[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------- receivers


class Receiver:
    """An HTTP server on 127.0.0.1 recording every request; answers with `status` (or the next
    of `statuses`) after `delay` seconds."""

    def __init__(self, status: int = 200, body: bytes = b"ok", delay: float = 0.0, extra: dict | None = None):
        self.status, self.body, self.delay, self.extra = status, body, delay, extra or {}
        self.statuses: list = []
        self.requests: list = []
        self.stop = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                receiver.requests.append(
                    {"method": self.command, "path": self.path, "headers": self.headers, "body": data}
                )
                if receiver.delay:
                    receiver.stop.wait(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else receiver.status
                try:
                    self.send_response(status)
                    for name, value in receiver.extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(receiver.body)))
                    self.end_headers()
                    self.wfile.write(receiver.body)
                except OSError:  # the client gave up (timeout tests)
                    pass

            do_POST = do_PUT = do_PATCH = do_GET = handle_one

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list = []

    def make(**kwargs: object) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


class Collector:
    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "content": envelope.original_content or envelope.content,
                "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
                "authenticated": session.authenticated,
            }
        )
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=ok)  # not handled: aiosmtpd answers 535 itself


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> tuple:
    """A self-signed certificate for 127.0.0.1 made with the openssl command."""
    d = tmp_path_factory.mktemp("tls")
    certfile, keyfile = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(keyfile), "-out", str(certfile), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(certfile), str(keyfile)


def _server_tls(cert: tuple) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


def _smtp(collector: Collector, **kwargs: object):
    controller = Controller(
        collector, hostname="127.0.0.1", port=free_port(), server_hostname="smtp.test", ready_timeout=5, **kwargs
    )
    controller.start()
    return controller


@pytest.fixture(scope="module")
def smtp_plain():
    collector = Collector()
    controller = _smtp(collector)
    yield controller, collector
    controller.stop()


@pytest.fixture(scope="module")
def smtp_starttls(cert):
    collector = Collector()
    controller = _smtp(
        collector,
        tls_context=_server_tls(cert),
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    yield controller, collector
    controller.stop()


@pytest.fixture(scope="module")
def smtp_implicit_tls(cert):
    collector = Collector()
    controller = _smtp(collector, ssl_context=_server_tls(cert))
    yield controller, collector
    controller.stop()


@pytest.fixture
def mailbox(smtp_plain):
    controller, collector = smtp_plain
    collector.envelopes.clear()
    return controller, collector


def email_message(controller, **config: object) -> dict:
    return {
        "channel_type": "email",
        "config": {"smtp_host": "127.0.0.1", "smtp_port": controller.port, "to": "ops@example.com", **config},
        "notification": notification(),
    }


def received(collector: Collector, index: int = -1) -> email.message.EmailMessage:
    return email.message_from_bytes(collector.envelopes[index]["content"], policy=email.policy.default)


# -------------------------------------------------------------------------------- module shape


def test_header_lines_are_verbatim():
    assert SOURCE.read_text().startswith(HEADER)
    assert "$pyfn$" not in SOURCE.read_text()


def test_standard_library_only_and_no_plpy():
    tree = ast.parse(SOURCE.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not names & {"plpy", "SD", "GD"}


def test_runs_as_a_plpython_body(receiver):
    """PL/Python compiles the file as the body of a function (each line indented by a tab, no
    __future__ import) and the build appends the return statement: definitions are closures."""
    text = re.sub(r"^from __future__ import .*\n", "", SOURCE.read_text(), flags=re.M)
    lines = [*text.rstrip().splitlines(), "return send_all(p_messages, p_max_parallel)"]
    body = "def __plpython_procedure(p_messages, p_max_parallel):\n" + "".join(f"\t{line}\n" for line in lines)
    namespace: dict = {}
    exec(compile(body, "notify_send.py", "exec"), namespace)
    good, bad = receiver(), receiver(status=500)
    messages = [
        {"id": 1, "channel_type": "webhook", "config": {"url": good.url()}, "notification": notification()},
        {"id": 2, "channel_type": "webhook", "config": {"url": bad.url()}, "notification": notification()},
        {"id": 3, "channel_type": "nope"},
    ]
    out = json.loads(namespace["__plpython_procedure"](json.dumps(messages), 2))
    assert [(r["id"], r["ok"], r["status_code"]) for r in out] == [(1, True, 200), (2, False, 500), (3, False, None)]


def test_empty_and_null_input():
    assert json.loads(ns.send_all("[]", 4)) == []
    assert json.loads(ns.send_all(None, 4)) == []
    with pytest.raises(ValueError):
        ns.send_all('{"id": 1}', 4)


def test_clamps():
    assert [ns._parallel(v) for v in (None, 0, -3, 1, 8, 32, 33, 10**6, "x", True)] == [4, 1, 1, 1, 8, 32, 32, 32, 4, 4]
    assert [ns._timeout(v) for v in (None, 0, 0.5, "2", 61, float("inf"), "x", float("nan"))] == [
        10.0, 0.1, 0.5, 2.0, 60.0, 60.0, 10.0, 10.0]  # fmt: skip


# ------------------------------------------------------------------------------------ webhook


def test_webhook_body_headers_and_signature(receiver):
    r = receiver()
    n = notification(error_message="naïve ünïcode ✓ 日本")
    result = send_one(
        {
            "channel_type": "webhook",
            "config": {"url": r.url("/in?x=1"), "secret": "hush-hush", "headers": {"X-Team": "core"}},
            "notification": n,
        }
    )
    assert result["ok"] is True and result["status_code"] == 200 and result["error"] is None
    assert result["attempted"] is True
    assert result["recipient"] == r.url("/in")  # no query string
    (req,) = r.requests
    assert req["method"] == "POST" and req["path"] == "/in?x=1"
    body = req["body"]
    assert body == json.dumps(n, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    assert json.loads(body) == n
    h = req["headers"]
    assert h["Content-Type"] == "application/json"
    assert h["User-Agent"] == "pg_observe"
    assert h["Idempotency-Key"] == h["X-PgObserve-Idempotency-Key"] == n["idempotency_key"]
    assert h["X-PgObserve-Trigger"] == "new"
    assert h["X-Team"] == "core"
    expected = hmac.new(b"hush-hush", body, hashlib.sha256).hexdigest()
    assert h["X-PgObserve-Signature"] == f"sha256={expected}"


def test_webhook_without_secret_has_no_signature(receiver):
    r = receiver()
    assert send_one({"channel_type": "webhook", "config": {"webhook_url": r.url()}, "notification": notification()})[
        "ok"
    ]
    assert "X-PgObserve-Signature" not in r.requests[0]["headers"]


def test_webhook_put_and_patch(receiver):
    r = receiver()
    for method in ("PUT", "patch"):
        result = send_one(
            {"channel_type": "webhook", "config": {"url": r.url(), "method": method}, "notification": notification()}
        )
        assert result["ok"]
    assert [q["method"] for q in r.requests] == ["PUT", "PATCH"]


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST\r\nX: y", 7])
def test_webhook_disallowed_method(receiver, method):
    r = receiver()
    result = send_one(
        {"channel_type": "webhook", "config": {"url": r.url(), "method": method}, "notification": notification()}
    )
    assert result["ok"] is False and result["attempted"] is True
    assert "not allowed" in result["error"]
    assert "\n" not in result["error"]
    assert r.requests == []


def test_webhook_header_with_crlf_is_rejected(receiver):
    r = receiver()
    for headers in ({"X-Evil": "a\r\nInjected: yes"}, {"X-Evil": "a\nb"}, {"Bad Name": "v"}, {"X-Num": 5}):
        result = send_one(
            {"channel_type": "webhook", "config": {"url": r.url(), "headers": headers}, "notification": notification()}
        )
        assert result["ok"] is False and result["attempted"] is True, headers
        assert "config headers" in result["error"]
        assert "Injected" not in result["error"]
    assert r.requests == []


def test_webhook_configured_headers_cannot_replace_protected_ones(receiver):
    r = receiver()
    headers = {
        "user-agent": "custom-agent",
        "Idempotency-Key": "forged",
        "X-PgObserve-Signature": "sha256=forged",
        "Authorization": "Bearer tkn-123456",
    }
    result = send_one(
        {
            "channel_type": "webhook",
            "config": {"url": r.url(), "headers": headers, "secret": "k3y-k3y"},
            "notification": notification(),
        }
    )
    assert result["ok"]
    h = r.requests[0]["headers"]
    assert h["User-Agent"] == "custom-agent" and h.get_all("User-Agent") == ["custom-agent"]
    assert h["Idempotency-Key"] == NOTIFICATION["idempotency_key"]
    assert h["X-PgObserve-Signature"] != "sha256=forged"
    assert h["Authorization"] == "Bearer tkn-123456"


def test_http_500_fails_without_skipping_the_next_message(receiver):
    r = receiver(body=b"internal\x00 error\r\nwith\ttrace " + b"x" * 500)
    r.statuses = [500, 200]
    messages = [
        {"id": i, "channel_type": "webhook", "config": {"url": r.url()}, "notification": notification(), "timeout": 2}
        for i in (1, 2)
    ]
    first, second = send(messages)
    assert first["ok"] is False and first["status_code"] == 500 and first["attempted"] is True
    assert first["error"].startswith("HTTP 500: internal error with trace xxx")
    assert len(first["error"]) <= len("HTTP 500: ") + 200
    assert not re.search(r"[\x00-\x1f]", first["error"])
    assert second["ok"] is True and second["status_code"] == 200
    assert len(r.requests) == 2


def test_redirect_is_a_failure_and_not_followed(receiver):
    target = receiver()
    r = receiver(status=302, body=b"", extra={"Location": target.url()})
    result = send_one({"channel_type": "webhook", "config": {"url": r.url()}, "notification": notification()})
    assert result["ok"] is False and result["status_code"] == 302
    assert "HTTP 302" in result["error"]
    assert target.requests == []


def test_timeout_skips_the_rest_of_that_destination_only(receiver):
    slow, healthy = receiver(delay=3.0), receiver()

    def msg(i: int, r: Receiver) -> dict:
        return {"id": i, "channel_type": "webhook", "config": {"url": r.url()}, "notification": notification(),
                "timeout": 0.5}  # fmt: skip

    started = time.monotonic()
    results = send([msg(1, slow), msg(2, slow), msg(3, healthy), msg(4, slow), msg(5, healthy)], parallel=4)
    elapsed = time.monotonic() - started
    assert [r["id"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["ok"] is False and results[0]["attempted"] is True
    assert results[0]["error"] == "timed out after 0.5s"
    assert results[0]["duration_ms"] >= 450
    for skipped in (results[1], results[3]):
        assert skipped["ok"] is False and skipped["attempted"] is False
        assert skipped["error"] == f"not attempted: http://127.0.0.1:{slow.port} failed earlier in this batch"
        assert skipped["recipient"] == slow.url()
    assert results[2]["ok"] and results[4]["ok"]
    assert len(slow.requests) == 1 and len(healthy.requests) == 2
    assert 0.45 <= elapsed < 0.95  # one timeout, not two


def test_refused_connection():
    port = free_port()  # bound then closed: nothing listens there
    url = f"http://127.0.0.1:{port}/hook"
    results = send(
        [
            {"id": 1, "channel_type": "webhook", "config": {"url": url}, "notification": notification()},
            {"id": 2, "channel_type": "slack", "config": {"webhook_url": url}, "notification": notification()},
        ]
    )
    assert results[0]["ok"] is False and results[0]["attempted"] is True
    assert results[0]["error"].startswith("connection failed:") and "refused" in results[0]["error"].lower()
    assert results[1]["attempted"] is False  # same host and port: skipped


def test_https_with_ca_file_and_verification_failure(receiver, cert):
    r = receiver()
    r.server.socket = _server_tls(cert).wrap_socket(r.server.socket, server_side=True)
    url = f"https://127.0.0.1:{r.port}/hook"
    ok = send_one({"channel_type": "webhook", "config": {"url": url, "tls_ca_file": cert[0]}, "notification": {}})
    assert ok["ok"] is True, ok
    bad = send_one({"channel_type": "webhook", "config": {"url": url}, "notification": {}})
    assert bad["ok"] is False and "certificate" in bad["error"]
    missing = send_one({"channel_type": "webhook", "config": {"url": url, "tls_ca_file": "/nonexistent.pem"}})
    assert missing["ok"] is False and "tls_ca_file" in missing["error"]


# -------------------------------------------------------------------------------------- slack


def test_slack_blocks(receiver):
    r = receiver()
    stack = "Traceback:\n" + "```inner fence```\n" + "y" * 2000
    n = notification(severity="fatal", error_message="a <b> & c " + "m" * 5000, stack_trace=stack)
    config = {"webhook_url": r.url("/services/T000/B000/XXXXSECRETXXXX"), "channel": "#alerts", "username": "obs",
              "icon_emoji": ":fire:"}  # fmt: skip
    result = send_one({"channel_type": "slack", "config": config, "notification": n})
    assert result["ok"] is True
    assert result["recipient"] == f"slack:127.0.0.1:{r.port} #alerts"
    payload = json.loads(r.requests[0]["body"])
    assert payload["channel"] == "#alerts" and payload["username"] == "obs" and payload["icon_emoji"] == ":fire:"
    assert payload["text"].startswith("🔴 [prod] ValueError: a &lt;b&gt; &amp; c")
    header, message, fields, code, footer = payload["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "🔴 ValueError"}}
    assert message["text"]["type"] == "mrkdwn"
    assert message["text"]["text"].startswith("a &lt;b&gt; &amp; c mmm")
    assert len(message["text"]["text"]) <= 2900
    labels = [f["text"].split("\n")[0] for f in fields["fields"]]
    assert labels == ["*Environment*", "*Severity*", "*Occurrences*", "*First seen*", "*Last seen*", "*Release*"]
    assert fields["fields"][0]["text"] == "*Environment*\nprod"
    assert fields["fields"][2]["text"] == "*Occurrences*\n3"
    text = code["text"]["text"]
    assert text.startswith("```\n") and text.endswith("\n```")
    inner = text[4:-4]
    assert "```" not in inner
    assert inner.replace("\u200b", "") == stack[:500]
    footer_text = " ".join(e["text"] for e in footer["elements"])
    assert footer["type"] == "context"
    for key in ("error_id", "error_fingerprint", "idempotency_key"):
        assert NOTIFICATION[key] in footer_text


@pytest.mark.parametrize(
    ("severity", "emoji"),
    [("fatal", "🔴"), ("error", "🔴"), ("warning", "🟡"), ("info", "🔵"), ("debug", "🔵"), (None, "🔴")],
)
def test_slack_severity_emoji_and_header_limit(receiver, severity, emoji):
    r = receiver()
    n = notification(severity=severity, error_type="E" * 400, stack_trace=None)
    assert send_one({"channel_type": "slack", "config": {"url": r.url()}, "notification": n})["ok"]
    blocks = json.loads(r.requests[0]["body"])["blocks"]
    assert blocks[0]["text"]["text"].startswith(emoji + " EEE")
    assert len(blocks[0]["text"]["text"]) <= 150
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context"]  # no stack: no code block


def test_slack_error_hides_the_webhook_path(receiver):
    r = receiver(status=404, body=b"no_service /services/T000/B000/XXXXSECRETXXXX")
    result = send_one({"channel_type": "slack", "config": {"webhook_url": r.url("/services/T000/B000/XXXXSECRETXXXX")}})
    assert result["ok"] is False and result["status_code"] == 404
    assert "XXXXSECRETXXXX" not in result["error"] + result["recipient"]
    assert result["error"].startswith("HTTP 404: no_service")


# ---------------------------------------------------------------------------------- pagerduty


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("fatal", "critical"), ("error", "error"), ("warning", "warning"), ("info", "info"), ("debug", "info")],
)
def test_pagerduty_event(receiver, severity, expected):
    r = receiver(status=202, body=b'{"status":"success","dedup_key":"x"}')
    n = notification(severity=severity, stack_trace="s" * 3000)
    config = {"routing_key": "R0UTING-KEY-123456", "events_url": r.url("/v2/enqueue")}
    result = send_one({"channel_type": "pagerduty", "config": config, "notification": n})
    assert result["ok"] is True and result["status_code"] == 202
    assert result["recipient"] == f"pagerduty:127.0.0.1:{r.port}"
    req = r.requests[0]
    assert req["path"] == "/v2/enqueue"
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["Idempotency-Key"] == NOTIFICATION["idempotency_key"]
    event = json.loads(req["body"])
    assert event["routing_key"] == "R0UTING-KEY-123456"
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "pg_observe-c0ffee0123456789"
    assert event["client"] == "pg_observe"
    p = event["payload"]
    assert p["summary"] == "[prod] ValueError: order 42 not found"
    assert p["severity"] == expected
    assert p["source"] == "web-1"
    assert p["timestamp"] == NOTIFICATION["last_seen"]
    assert (p["component"], p["group"], p["class"]) == ("shop", "prod", "ValueError")
    details = p["custom_details"]
    assert "stack_trace" not in details and details["stack_preview"] == "s" * 1000
    assert details["error_id"] == NOTIFICATION["error_id"]


def test_pagerduty_fallbacks_and_options(receiver):
    r = receiver(status=202)
    n = {"error_id": "e-1", "severity": "warning", "error_message": "x" * 5000, "environment": None}
    config = {"integration_key": "INTEG-KEY-99", "events_url": r.url("/v2/enqueue"), "source": "db-main",
              "severity_map": {"warning": "critical"}}  # fmt: skip
    assert send_one({"channel_type": "pagerduty", "config": config, "notification": n})["ok"]
    event = json.loads(r.requests[0]["body"])
    assert event["routing_key"] == "INTEG-KEY-99"
    assert event["dedup_key"] == "pg_observe-e-1"
    assert event["payload"]["source"] == "db-main"
    assert event["payload"]["severity"] == "critical"
    assert len(event["payload"]["summary"]) == 1024
    assert event["payload"]["summary"].startswith("Error: xxx")
    assert "timestamp" not in event["payload"]


def test_pagerduty_error_hides_the_routing_key(receiver):
    r = receiver(status=400, body=b'{"status":"invalid event","errors":["routing_key R0UTING-KEY-123456 unknown"]}')
    config = {"routing_key": "R0UTING-KEY-123456", "events_url": r.url("/v2/enqueue")}
    result = send_one({"channel_type": "pagerduty", "config": config, "notification": notification()})
    assert result["ok"] is False and result["status_code"] == 400
    assert "invalid event" in result["error"] and "R0UTING-KEY-123456" not in result["error"]
    assert "[redacted]" in result["error"]


# -------------------------------------------------------------------------------------- email


def test_email_multipart_subject_and_headers(mailbox):
    controller, collector = mailbox
    message = email_message(
        controller,
        to=["ops@example.com", "Dev Team <dev@example.com>"],
        cc="lead@example.com",
        from_address="Observer <alerts@example.com>",
        subject="[{environment}] {count}x {error_type} {nope} ({severity})",
        reply_to="noreply@example.com",
    )
    result = send_one(message)
    assert result["ok"] is True, result
    assert result["recipient"] == "ops@example.com, dev@example.com, lead@example.com"
    (envelope,) = collector.envelopes
    assert envelope["mail_from"] == "alerts@example.com"
    assert envelope["rcpt_tos"] == ["ops@example.com", "dev@example.com", "lead@example.com"]
    msg = received(collector)
    assert msg["Subject"] == "[prod] 3x ValueError {nope} (error)"
    assert msg["Message-ID"] == f"<{NOTIFICATION['idempotency_key']}@pg-observe>"
    assert msg["X-PgObserve-Idempotency-Key"] == NOTIFICATION["idempotency_key"]
    assert msg["X-PgObserve-Error-Id"] == NOTIFICATION["error_id"]
    assert msg["Date"] is not None and msg["Reply-To"] == "noreply@example.com"
    assert msg["Cc"] == "lead@example.com"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(preferencelist=("plain",)).get_content()
    rich = msg.get_body(preferencelist=("html",)).get_content()
    assert "order 42 not found" in plain and "Stack trace:" in plain and "c0ffee0123456789" in plain
    assert "#d32f2f" in rich and "<pre" in rich and "orders.py" in rich
    for label in ("Environment", "Severity", "Occurrences", "First seen", "Last seen", "Release", "Service",
                  "Error id", "Fingerprint"):  # fmt: skip
        assert label in rich
    assert "ValueError: order &lt;int&gt; not found" not in rich  # title not used when a message exists


def test_email_default_subject_html_escaping_and_long_stack(mailbox):
    controller, collector = mailbox
    n = notification(error_message="<script>alert(1)</script> & co", severity="fatal", stack_trace="z" * 30000)
    message = email_message(controller)
    message["notification"] = n
    assert send_one(message)["ok"]
    msg = received(collector)
    assert msg["Subject"] == "[prod] ValueError: <script>alert(1)</script> & co"
    assert msg["From"] == "pg_observe@localhost"
    rich = msg.get_body(preferencelist=("html",)).get_content()
    plain = msg.get_body(preferencelist=("plain",)).get_content()
    assert "<script>" not in rich and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in rich
    assert "#7b1fa2" in rich
    assert "z" * 20000 in plain and "z" * 20001 not in plain
    assert "stack trace truncated: 10000 more characters" in plain


def test_email_subject_template_edge_cases():
    n = notification(error_message="line one\r\nline\ttwo\x00three")
    assert ns._subject("{error_message}", n) == "line one line two three"
    assert ns._subject("{nope} {count}", n) == "{nope} 3"
    assert ns._subject("broken {error_type", n) == "broken {error_type"
    assert ns._subject("{0} {error_type.__x__}", n) == "{0} {error_type.__x__}"
    assert ns._subject("{error_message}", notification(error_message="w " * 500)).endswith("…")
    assert len(ns._subject("{error_message}", notification(error_message="w " * 500))) == 200
    assert ns._subject("[{environment}] {error_type}", {}) == "[]"  # known fields render empty


def test_email_header_injection_is_neutralised(mailbox):
    controller, collector = mailbox
    message = email_message(controller)
    message["notification"] = notification(error_message="x\r\nBcc: evil@example.com\r\n\r\nbody", error_type="E\nX")
    assert send_one(message)["ok"]
    envelope = collector.envelopes[-1]
    assert envelope["rcpt_tos"] == ["ops@example.com"]
    head = envelope["content"].split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"(?im)^bcc:", head)
    msg = received(collector)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "[prod] E X: x Bcc: evil@example.com body"
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"to": "ops@example.com\r\nBcc: evil@example.com"}, "control characters"),
        ({"to": "a@example.com, b@example.com"}, "not one email address"),
        ({"to": ["ok@example.com", "not-an-address"]}, "not one email address"),
        ({"to": None}, "config to is required"),
        ({"to": 5}, "must be a string or an array"),
        ({"cc": ["x@example.com\n"]}, "control characters"),
        ({"from_address": "a@x\r\nSubject: hi"}, "control characters"),
        ({"smtp_port": "abc"}, "smtp_port"),
        ({"use_tls": "maybe"}, "use_tls"),
        ({"subject": ["x"]}, "subject"),
        ({"tls_ca_file": "/nonexistent.pem", "use_tls": True}, "tls_ca_file"),
    ],
)
def test_email_bad_config(mailbox, config, fragment):
    controller, collector = mailbox
    result = send_one(email_message(controller, **config))
    assert result["ok"] is False and result["attempted"] is True
    assert fragment in result["error"], result["error"]
    assert collector.envelopes == []


def test_email_starttls_and_auth(smtp_starttls, cert):
    controller, collector = smtp_starttls
    collector.envelopes.clear()
    config = {"use_tls": True, "smtp_user": SMTP_USER, "smtp_password": SMTP_PASSWORD, "tls_ca_file": cert[0]}
    result = send_one(email_message(controller, **config))
    assert result["ok"] is True, result
    assert collector.envelopes[-1]["tls"] is True and collector.envelopes[-1]["authenticated"] is True

    wrong = send_one(email_message(controller, **{**config, "smtp_password": "wrong-Pa55word"}))
    assert wrong["ok"] is False and wrong["attempted"] is True and wrong["status_code"] == 535, wrong
    assert wrong["error"].startswith("SMTP authentication failed: 535")
    dumped = json.dumps(wrong)
    for secret in ("wrong-Pa55word", base64.b64encode(b"wrong-Pa55word").decode(), SMTP_PASSWORD):
        assert secret not in dumped

    unverified = send_one(email_message(controller, **{**config, "tls_ca_file": None}))
    assert unverified["ok"] is False and "certificate" in unverified["error"]
    insecure = send_one(email_message(controller, **{**config, "tls_ca_file": None, "tls_verify": False}))
    assert insecure["ok"] is True
    no_tls = send_one(email_message(controller, smtp_user=SMTP_USER, smtp_password=SMTP_PASSWORD))
    assert no_tls["ok"] is False and SMTP_PASSWORD not in json.dumps(no_tls)
    assert len(collector.envelopes) == 2


def test_email_implicit_tls(smtp_implicit_tls, cert):
    controller, collector = smtp_implicit_tls
    result = send_one(email_message(controller, use_ssl=True, tls_ca_file=cert[0]))
    assert result["ok"] is True, result
    assert collector.envelopes[-1]["tls"] is True
    # Without TLS both sides wait for the other to speak first: a timeout, reported as such.
    plain = send_one({**email_message(controller), "timeout": 0.3})
    assert plain["ok"] is False and plain["error"] == "timed out after 0.3s"


def test_email_refused_connection():
    result = send_one(
        {"channel_type": "email", "config": {"smtp_host": "127.0.0.1", "smtp_port": free_port(), "to": "a@b.example"}}
    )
    assert result["ok"] is False and result["error"].startswith("connection failed:")
    assert result["recipient"] == "a@b.example"


# ------------------------------------------------------------------------- robustness, secrets


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ({"channel_type": "sms", "config": {}}, "unknown channel_type 'sms'"),
        ({"config": {}}, "unknown channel_type"),
        ({"channel_type": "webhook", "config": {}}, "config url is required"),
        ({"channel_type": "webhook", "config": {"url": "ftp://example.com/x"}}, "http or https"),
        ({"channel_type": "webhook", "config": {"url": "http://"}}, "no host"),
        ({"channel_type": "webhook", "config": {"url": "http://h:99999/"}}, "not a valid URL"),
        ({"channel_type": "webhook", "config": {"url": "http://h/a b"}}, "spaces or control"),
        ({"channel_type": "webhook", "config": {"url": 42}}, "config url must be a string"),
        ({"channel_type": "webhook", "config": {"url": "http://h/", "headers": []}}, "config headers must be"),
        ({"channel_type": "webhook", "config": []}, "config must be a JSON object"),
        ({"channel_type": "webhook", "config": {"url": "http://h/"}, "notification": [1]}, "notification must be"),
        ({"channel_type": "slack", "config": {}}, "config webhook_url is required"),
        ({"channel_type": "pagerduty", "config": {}}, "config routing_key is required"),
        ({"channel_type": "pagerduty", "config": {"routing_key": "k", "severity_map": {"error": "x"}}}, "severity_map"),
        ({"channel_type": "email", "config": {}}, "config to is required"),
    ],
)
def test_malformed_messages(message, fragment):
    (result,) = send([{"id": 9, **message}])
    assert result["id"] == 9 and result["ok"] is False and result["attempted"] is True
    assert fragment in result["error"], result["error"]
    assert len(result["error"]) <= 500


def test_non_object_messages_and_odd_values():
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens; no name to resolve
    results = send([None, 3, "x", [], {"id": "q", "channel_type": "webhook", "config": {"url": url},
                                       "timeout": "soon", "notification": {}}])  # fmt: skip
    assert [r["ok"] for r in results] == [False] * 5
    assert [r["id"] for r in results[:4]] == [None] * 4
    assert results[4]["id"] == "q" and results[4]["error"].startswith("connection failed")  # default timeout


def test_secrets_never_in_error_or_recipient(receiver, mailbox):
    controller, _ = mailbox
    echo = b"you sent pw0rd-SECRET and tok-SECRET-1 and Bearer hdr-SECRET-2 and sig-SECRET-3"
    r = receiver(status=401, body=echo)
    secrets = ["pw0rd-SECRET", "tok-SECRET-1", "hdr-SECRET-2", "sig-SECRET-3", "mail-SECRET-4", "RK-SECRET-5"]
    url = f"http://alice:pw0rd-SECRET@127.0.0.1:{r.port}/hook?token=tok-SECRET-1"
    results = send(
        [
            {"id": 1, "channel_type": "webhook", "notification": notification(),
             "config": {"url": url, "headers": {"Authorization": "Bearer hdr-SECRET-2"}, "secret": "sig-SECRET-3"}},
            {"id": 2, "channel_type": "webhook", "config": {"url": url, "method": "GET", "secret": "sig-SECRET-3"}},
            {"id": 3, "channel_type": "email", "notification": notification(),
             "config": {"smtp_host": "127.0.0.1", "smtp_port": controller.port, "to": "ops@example.com",
                        "smtp_user": "u", "smtp_password": "mail-SECRET-4"}},
            {"id": 4, "channel_type": "pagerduty", "config": {"routing_key": "RK-SECRET-5", "events_url": url}},
            {"id": 5, "channel_type": "slack", "config": {"webhook_url": url}},
        ]
    )  # fmt: skip
    assert results[0]["status_code"] == 401 and results[0]["error"].startswith("HTTP 401: you sent [redacted]")
    assert results[0]["recipient"] == f"http://127.0.0.1:{r.port}/hook"
    assert r.requests[0]["headers"]["Authorization"] == "Bearer hdr-SECRET-2"
    assert all(not res["ok"] for res in results)
    own = {1: secrets[:4], 2: secrets[:2] + secrets[3:4], 3: secrets[4:5], 4: secrets[:2] + secrets[5:], 5: secrets[:2]}
    for res in results:
        shown = f"{res['error']} {res['recipient']}"
        for secret in own[res["id"]]:  # a sender can only hide what it was given
            assert secret not in shown, (res, secret)


def test_url_credentials_become_basic_auth(receiver):
    r = receiver()
    url = f"http://alice:pw%40rd@127.0.0.1:{r.port}/hook"
    result = send_one({"channel_type": "webhook", "config": {"url": url}, "notification": {}})
    assert result["ok"] and result["recipient"] == f"http://127.0.0.1:{r.port}/hook"
    assert r.requests[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"alice:pw@rd").decode()


def test_nul_bytes_and_a_megabyte_message(receiver, mailbox):
    controller, collector = mailbox
    r = receiver(status=202)
    n = notification(error_message="\x00nul\x00" + "m" * 1_000_000, stack_trace="\x00" + "s\n" * 500_000,
                     title="t\x00", environment="p\x00rod")  # fmt: skip
    messages = [
        {"id": 1, "channel_type": "webhook", "config": {"url": r.url()}, "notification": n},
        {"id": 2, "channel_type": "slack", "config": {"url": r.url()}, "notification": n},
        {"id": 3, "channel_type": "pagerduty", "config": {"routing_key": "rk", "events_url": r.url()},
         "notification": n},
        {"id": 4, "channel_type": "email", "notification": n,
         "config": {"smtp_host": "127.0.0.1", "smtp_port": controller.port, "to": "ops@example.com",
                    "subject": "{environment} {error_message}"}},
    ]  # fmt: skip
    results = send(messages)
    assert [res["ok"] for res in results] == [True] * 4, results
    assert json.loads(r.requests[0]["body"])["error_message"] == n["error_message"]
    assert len(r.requests[2]["body"]) < 100_000  # PagerDuty refuses events over 512 KB
    msg = received(collector)
    assert msg["Subject"].startswith("p rod nul mmm") and len(msg["Subject"]) == 200
    assert "\x00" not in collector.envelopes[-1]["content"].decode()


def test_results_keep_input_order_across_destinations(receiver, mailbox):
    controller, _ = mailbox
    a, b, c = receiver(), receiver(status=503), receiver(delay=0.05)
    kinds = []
    messages = []
    for i in range(12):
        target = (a, b, c)[i % 3]
        kinds.append(target)
        messages.append({"id": 100 + i, "channel_type": "webhook", "config": {"url": target.url(f"/{i}")},
                         "notification": notification(), "timeout": 2})  # fmt: skip
    messages.insert(5, {"id": "bad", "channel_type": "nope"})
    messages.insert(7, {"id": "mail", **email_message(controller)})
    results = send(messages, parallel=2)
    assert [res["id"] for res in results] == [m["id"] for m in messages]
    by_id = {res["id"]: res for res in results}
    assert by_id["bad"]["ok"] is False and by_id["mail"]["ok"] is True
    for i, target in enumerate(kinds):
        assert by_id[100 + i]["ok"] is (target is not b)
        assert by_id[100 + i]["recipient"] == target.url(f"/{i}")
    assert [q["path"] for q in c.requests] == [f"/{i}" for i in range(2, 12, 3)]  # one destination: in order


def test_parallel_one_is_sequential(receiver):
    slow = [receiver(delay=0.15) for _ in range(3)]
    messages = [{"id": i, "channel_type": "webhook", "config": {"url": r.url()}, "notification": {}}
                for i, r in enumerate(slow)]  # fmt: skip
    started = time.monotonic()
    assert all(res["ok"] for res in send(messages, parallel=1))
    sequential = time.monotonic() - started
    started = time.monotonic()
    assert all(res["ok"] for res in send(messages, parallel=3))
    parallel = time.monotonic() - started
    assert sequential >= 0.45 and parallel < 0.35
