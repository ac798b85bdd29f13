"""Notifications end to end against real receivers: rules evaluated by the capture, the
outbox, the dispatcher (monitoring.dispatch_notifications), the PL/Python senders talking to
an HTTP server and an SMTP server (aiosmtpd) on 127.0.0.1, the worker process, crashes and
races. The receivers run in this process; the senders run inside PostgreSQL."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from aiosmtpd.controller import Controller
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "pg_observe.cli"]


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records every request; its answer can be changed."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict] = []
        self.status = 200
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.requests.append(
                        {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body,
                         "at": time.monotonic()})
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_PUT = do_PATCH = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]

    def keys(self) -> list[str]:
        with self.lock:
            return [r["headers"].get("Idempotency-Key") for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SmtpHandler:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.original_content or envelope.content))
        return "250 OK"


@pytest.fixture
def smtp():
    handler = SmtpHandler()
    handler.port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    yield handler
    controller.stop()


@pytest.fixture
def conn(dsn: str):
    """Autocommit: captures commit at once, and the dispatcher (a procedure) may commit."""
    with psycopg.connect(dsn, autocommit=True) as c:
        # quick retries for the tests; the defaults are 30 s and 8 attempts
        c.execute("INSERT INTO monitoring.notification_settings (retry_base, retry_max, max_attempts, send_timeout,"
                  " claim_timeout) VALUES ('100 ms', '1 s', 5, '2 s', '10 s')")
        yield c


def rule(conn: psycopg.Connection, **columns: object) -> str:
    columns = {k: (Jsonb(v) if isinstance(v, dict) else v) for k, v in columns.items()}
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    return conn.execute(f"INSERT INTO monitoring.tb_error_notification_config ({names}) VALUES ({marks})"
                        " RETURNING config_id", list(columns.values())).fetchone()[0]


def capture(conn: psycopg.Connection, fingerprint: str = "checkout-timeout", times: int = 1, **fields: object) -> None:
    event = {"exception_type": "PaymentError", "message": "gateway timeout", "environment": "production",
             "fingerprint": [fingerprint], "stack_trace": "Traceback (most recent call last):\n  File \"pay.py\"",
             **fields}
    conn.execute("SELECT monitoring.capture_errors(%s)", (Jsonb([event] * times),))


def dispatch(conn: psycopg.Connection, name: str = "pytest") -> tuple[int, int, int]:
    return conn.execute("CALL monitoring.dispatch_notifications(1000, %s)", (name,)).fetchone()


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def queue_status(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM monitoring.notification_queue GROUP BY status").fetchall())


# --- the seed's rate-limiting strategies --------------------------------------------------


def test_first_occurrence_only(conn, receiver) -> None:
    """Strategy 1: rate_limit_minutes 0, min_occurrence_count 1: one message per new group."""
    rule(conn, error_type="PaymentError", channel_type="webhook", channel_config={"url": receiver.url},
         rate_limit_minutes=0, min_occurrence_count=1)
    capture(conn, times=5)
    capture(conn)
    capture(conn, fingerprint="another-group")
    assert dispatch(conn) == (2, 0, 0)
    bodies = receiver.bodies()
    assert sorted(b["error_fingerprint"] for b in bodies) == ["another-group", "checkout-timeout"]
    first = next(b for b in bodies if b["error_fingerprint"] == "checkout-timeout")
    # the seed's webhook payload
    for key in ("error_id", "error_type", "error_message", "severity", "occurrence_count", "first_seen",
                "last_seen", "environment", "release_version", "stack_trace"):
        assert key in first
    assert first["error_type"] == "PaymentError" and first["notification_trigger"] == "new"
    assert first["occurrence_count"] == 5   # the batch that made the group
    assert all(k for k in receiver.keys())


def test_threshold_then_hourly(conn, receiver) -> None:
    """Strategy 2: after 10 occurrences, then at most hourly while it keeps occurring."""
    rule(conn, channel_config={"url": receiver.url}, rate_limit_minutes=60, min_occurrence_count=10)
    capture(conn, times=9)
    assert dispatch(conn) == (0, 0, 0)
    capture(conn)
    capture(conn, times=20)
    assert dispatch(conn)[0] == 1
    assert [b["notification_trigger"] for b in receiver.bodies()] == ["threshold"]
    assert receiver.bodies()[0]["threshold"] == 10
    # an hour later (the throttle ran out) the next occurrence notifies again, once
    conn.execute("UPDATE monitoring.notification_state SET throttled_until = now() - interval '1 second'")
    capture(conn)
    capture(conn)
    assert dispatch(conn)[0] == 1
    assert [b["notification_trigger"] for b in receiver.bodies()] == ["threshold", "repeat"]


def test_multiple_thresholds(conn, receiver) -> None:
    """Strategy 3: three rules on one fingerprint at 1, 10 and 100 occurrences."""
    for count, rate in ((1, 0), (10, 0), (100, 60)):
        rule(conn, error_fingerprint="critical_bug_fingerprint", min_occurrence_count=count, rate_limit_minutes=rate,
             channel_config={"webhook_url": receiver.url})
    capture(conn, fingerprint="critical_bug_fingerprint")
    dispatch(conn)
    capture(conn, fingerprint="critical_bug_fingerprint", times=9)
    dispatch(conn)
    capture(conn, fingerprint="critical_bug_fingerprint", times=95)
    dispatch(conn)
    capture(conn, fingerprint="critical_bug_fingerprint", times=5)
    dispatch(conn)
    got = [(b["notification_trigger"], b["threshold"], b["occurrence_count"]) for b in receiver.bodies()]
    assert got == [("new", 1, 1), ("threshold", 10, 10), ("threshold", 100, 105)]


def test_notify_on_occurrence_list(conn, receiver) -> None:
    rule(conn, channel_config={"url": receiver.url}, notify_on_occurrence=[1, 10, 100, 1000])
    for _ in range(3):
        capture(conn, times=4)     # 4, 8, 12
    capture(conn, times=100)       # 112
    dispatch(conn)
    assert [b["threshold"] for b in receiver.bodies()] == [1, 10, 100]


def test_environment_specific(conn, receiver, smtp) -> None:
    """Strategy 4: production to a webhook at once, staging by e-mail at most daily."""
    rule(conn, environment=["production"], rate_limit_minutes=0, channel_type="slack",
         channel_config={"webhook_url": receiver.url})
    conn.execute("INSERT INTO monitoring.notification_channel (channel_type, sender, settings) VALUES"
                 " ('email', 'email', %s)",
                 (Jsonb({"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "from_address": "alerts@example.com"}),))
    rule(conn, environment=["staging"], rate_limit_minutes=1440, channel_type="email",
         channel_config={"to": ["oncall@example.com"], "subject": "[{environment}] {error_type}: {error_message}"})
    capture(conn, fingerprint="prod-bug", environment="production")
    capture(conn, fingerprint="stage-bug", environment="staging", message="stage\r\nBcc: evil@example.com")
    capture(conn, fingerprint="stage-bug", environment="staging")   # throttled for a day
    assert dispatch(conn) == (2, 0, 0)
    slack = receiver.bodies()
    assert len(slack) == 1 and slack[0]["blocks"][0]["type"] == "header"
    assert len(smtp.messages) == 1
    recipients, raw = smtp.messages[0]
    assert recipients == ["oncall@example.com"]
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Subject"].startswith("[staging] PaymentError: stage")
    assert message["Bcc"] is None
    assert message.is_multipart()
    assert {p.get_content_type() for p in message.walk()} >= {"text/plain", "text/html"}
    key = conn.execute("SELECT idempotency_key FROM monitoring.notification_queue q"
                       " JOIN monitoring.tb_error_log g USING (error_id) WHERE g.error_fingerprint = 'stage-bug'"
                       ).fetchone()[0]
    assert str(key) in message["Message-ID"]


# --- delivery guarantees --------------------------------------------------------------------


def test_rollback_takes_the_notification_back_and_commit_wakes_listeners(conn, dsn, receiver) -> None:
    rule(conn, channel_config={"url": receiver.url})
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pg_observe_notification")
        with conn.transaction(force_rollback=True):
            capture(conn)
        assert queue_status(conn) == {}
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        capture(conn)
        woken = list(listener.notifies(timeout=5, stop_after=1))
        assert [n.channel for n in woken] == ["pg_observe_notification"]
    assert queue_status(conn) == {"pending": 1}


def test_webhook_signature_and_headers(conn, receiver) -> None:
    secret = "s3cr3t-signing-key"
    rule(conn, channel_config={"url": receiver.url, "method": "PUT", "secret": secret,
                               "headers": {"Authorization": "Bearer token-123", "X-Custom-Header": "value"}})
    capture(conn)
    dispatch(conn)
    (request,) = receiver.requests
    assert request["method"] == "PUT"
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-PgObserve-Signature"] == expected
    assert request["headers"]["Authorization"] == "Bearer token-123"
    assert request["headers"]["X-Custom-Header"] == "value"
    queued_key = conn.execute("SELECT idempotency_key::text FROM monitoring.notification_queue").fetchone()[0]
    assert request["headers"]["Idempotency-Key"] == queued_key
    # the secret never reaches the log
    log = conn.execute("SELECT recipient, status FROM monitoring.tb_error_notification_log").fetchall()
    assert log == [(receiver.url, "sent")]


def test_receiver_down_then_recovers(conn) -> None:
    """Connection refused: retried with backoff, logged, then delivered once when it is back."""
    port = free_port()
    rule(conn, channel_config={"url": f"http://127.0.0.1:{port}/hook"})
    capture(conn)
    assert dispatch(conn) == (0, 1, 0)
    assert wait_for(lambda: dispatch(conn)[1] == 1, timeout=5)      # second attempt, after the backoff
    row = conn.execute("SELECT status, attempts, last_error FROM monitoring.notification_queue").fetchone()
    assert row[0] == "pending" and row[1] == 2 and "connection" in row[2]
    receiver = Receiver(port)
    try:
        assert wait_for(lambda: dispatch(conn)[0] == 1, timeout=5)
        assert len(receiver.requests) == 1
    finally:
        receiver.close()
    log = conn.execute("SELECT status, attempt FROM monitoring.tb_error_notification_log ORDER BY sent_at").fetchall()
    assert log == [("failed", 1), ("failed", 2), ("sent", 3)]
    assert queue_status(conn) == {"sent": 1}


def test_timeout_delays_only_its_own_messages(conn, receiver) -> None:
    slow = Receiver()
    slow.delay = 3.0
    try:
        conn.execute("UPDATE monitoring.notification_settings SET send_timeout = '500 ms'")
        rule(conn, error_type="SlowError", channel_config={"url": slow.url})
        rule(conn, error_type="PaymentError", channel_config={"url": receiver.url})
        for i in range(3):
            capture(conn, fingerprint=f"slow-{i}", exception_type="SlowError")
            capture(conn, fingerprint=f"fast-{i}")
        started = time.monotonic()
        sent, failed, _ = dispatch(conn)
        elapsed = time.monotonic() - started
        assert (sent, failed) == (3, 1)          # the two other slow ones were not attempted
        assert len(receiver.requests) == 3
        assert elapsed < 2.5, elapsed            # one timeout, not three
        errors = conn.execute("SELECT last_error FROM monitoring.notification_queue WHERE status = 'pending'"
                              " ORDER BY attempts DESC").fetchall()
        assert "timed out" in errors[0][0] and "not attempted" in errors[1][0]
        assert conn.execute("SELECT sum(attempts) FROM monitoring.notification_queue"
                            " WHERE status = 'pending'").fetchone()[0] == 1
    finally:
        slow.close()


def test_max_attempts_then_dead_then_retry(conn, receiver) -> None:
    receiver.status = 503
    conn.execute("UPDATE monitoring.notification_settings SET max_attempts = 3")
    rule(conn, channel_config={"url": receiver.url})
    capture(conn)
    assert wait_for(lambda: dispatch(conn)[2] == 1, timeout=10)
    assert queue_status(conn) == {"dead": 1}
    assert len(receiver.requests) == 3
    failed = conn.execute("SELECT count(*), min(error_message) FROM monitoring.tb_error_notification_log"
                          " WHERE status = 'failed'").fetchone()
    assert failed[0] == 3 and failed[1].startswith("HTTP 503")
    # the seed's troubleshooting query sees it
    rows = conn.execute("SELECT error_message, COUNT(*) as count FROM monitoring.tb_error_notification_log"
                        " WHERE status = 'failed' AND sent_at > NOW() - INTERVAL '24 hours'"
                        " GROUP BY error_message ORDER BY count DESC").fetchall()
    assert rows[0][1] == 3
    receiver.status = 200
    assert conn.execute("SELECT monitoring.retry_notifications()").fetchone()[0] == 1
    assert dispatch(conn)[0] == 1
    assert queue_status(conn) == {"sent": 1}
    assert len(set(receiver.keys())) == 1      # every attempt carried the same key


def test_pagerduty_and_custom_channels(conn, receiver) -> None:
    rule(conn, channel_type="pagerduty",
         channel_config={"routing_key": "R0UT1NGKEY", "events_url": receiver.url})
    conn.execute("""
        CREATE FUNCTION public.sms_sender(notification jsonb, config jsonb, OUT success boolean, OUT error text)
        LANGUAGE plpython3u AS $$
import json, urllib.request
body = json.dumps({"to": json.loads(config)["to"], "text": json.loads(notification)["error_type"]}).encode()
request = urllib.request.Request(json.loads(config)["url"], data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=5) as response:
    return (response.status == 200, None)
$$""")
    conn.execute("CREATE FUNCTION public.broken_sender(notification jsonb, config jsonb) RETURNS boolean"
                 " LANGUAGE sql AS 'SELECT 1 / 0 = 1'")
    conn.execute("INSERT INTO monitoring.notification_channel (channel_type, sender, function_name) VALUES"
                 " ('twilio_sms', 'function', 'public.sms_sender(jsonb, jsonb)'),"
                 " ('broken', 'function', 'public.broken_sender(jsonb, jsonb)')")
    rule(conn, channel_type="twilio_sms", channel_config={"to": "+1234567890", "url": receiver.url})
    rule(conn, channel_type="broken")
    rule(conn, channel_type="not_registered")
    capture(conn, level="fatal")
    assert dispatch(conn) == (2, 2, 0)
    bodies = receiver.bodies()
    pagerduty = next(b for b in bodies if "routing_key" in b)
    assert pagerduty["event_action"] == "trigger" and pagerduty["payload"]["severity"] == "critical"
    assert pagerduty["dedup_key"].endswith("checkout-timeout")
    assert {"to": "+1234567890", "text": "PaymentError"} in bodies
    errors = dict(conn.execute("SELECT channel_type, error_message FROM monitoring.tb_error_notification_log"
                               " WHERE status = 'failed'").fetchall())
    assert "division by zero" in errors["broken"]
    assert "not_registered" in errors["not_registered"]


# --- crashes and races ------------------------------------------------------------------------


def _worker(dsn: str, name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PG_OBSERVE_DSN": dsn}
    return subprocess.Popen([*WORKER, "worker", "--name", name, "--interval", "0.2", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_worker_delivers_within_a_second(conn, dsn, receiver) -> None:
    rule(conn, channel_config={"url": receiver.url})
    worker = _worker(dsn, "latency")
    try:
        time.sleep(1.0)   # connected and listening
        latencies = []
        for i in range(5):
            started = time.monotonic()
            capture(conn, fingerprint=f"latency-{i}")
            assert wait_for(lambda n=i + 1: len(receiver.requests) >= n, timeout=5)
            latencies.append(receiver.requests[-1]["at"] - started)
        assert max(latencies) < 1.0, latencies
    finally:
        worker.terminate()
        assert worker.wait(timeout=10) == 0


def test_worker_as_a_login_role_with_only_observe_dispatcher(conn, dsn, receiver) -> None:
    """The documented set-up: a login role granted observe_dispatcher and nothing else."""
    role = f"notifier_{os.getpid()}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn.execute(f"GRANT observe_dispatcher TO {role}")
        rule(conn, channel_config={"url": receiver.url, "secret": "only-the-owner-reads-this"})
        capture(conn)
        role_dsn = psycopg.conninfo.make_conninfo(dsn, user=role)
        with psycopg.connect(role_dsn, autocommit=True) as worker_conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                worker_conn.execute("SELECT channel_config FROM monitoring.tb_error_notification_config")
        done = subprocess.run([*WORKER, "worker", "--once"], env={**os.environ, "PG_OBSERVE_DSN": role_dsn},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "0 queued errors captured, 1 sent, 0 failed, 0 dead"
        assert len(receiver.requests) == 1
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def test_killed_dispatcher_loses_nothing(conn, dsn, receiver) -> None:
    """SIGKILL the worker and terminate its backend in the middle of a batch: after the claim
    expires another dispatcher sends the rest; duplicates only with the same idempotency key."""
    receiver.delay = 0.05
    rule(conn, channel_config={"url": receiver.url})
    conn.execute("UPDATE monitoring.notification_settings SET max_parallel = 1, batch_size = 40")
    for i in range(40):
        capture(conn, fingerprint=f"crash-{i}")
    worker = _worker(dsn, "doomed")
    try:
        assert wait_for(lambda: len(receiver.requests) >= 5, timeout=15)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pg-observe worker'")
    assert wait_for(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity"
                                         " WHERE application_name = 'pg-observe worker'").fetchone()[0] == 0)
    claimed = conn.execute("SELECT count(*) FROM monitoring.notification_queue WHERE claimed_by = 'doomed'"
                           " AND status = 'sending'").fetchone()[0]
    assert claimed > 0
    # the killed batch stays claimed until its claim expires (claim_timeout: 10 s here)
    assert dispatch(conn, "survivor") == (0, 0, 0)
    assert wait_for(lambda: dispatch(conn, "survivor") and queue_status(conn) == {"sent": 40}, timeout=30, step=0.5)
    keys = receiver.keys()
    assert len(set(keys)) == 40                        # nothing lost
    queued_keys = {r[0] for r in conn.execute("SELECT idempotency_key::text FROM monitoring.notification_queue")}
    assert set(keys) == queued_keys                    # a duplicate carries its message's key
    assert max(keys.count(k) for k in keys) <= 2
    assert len(keys) - 40 <= claimed                   # only the killed batch may arrive twice
    resent = conn.execute("SELECT count(*) FROM monitoring.notification_queue WHERE attempts = 2").fetchone()[0]
    assert resent == claimed


def test_two_dispatchers_never_send_one_message_twice(conn, dsn, receiver) -> None:
    rule(conn, channel_config={"url": receiver.url})
    conn.execute("UPDATE monitoring.notification_settings SET batch_size = 20")
    conn.execute("SELECT monitoring.capture_errors(%s)", (Jsonb([
        {"exception_type": "RaceError", "message": "m", "fingerprint": [f"race-{i}"]} for i in range(300)]),))
    results: dict[str, int] = {}

    def run(name: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            total = 0
            while True:
                sent = c.execute("CALL monitoring.dispatch_notifications(40, %s)", (name,)).fetchone()[0]
                if not sent:
                    break
                total += sent
            results[name] = total

    threads = [threading.Thread(target=run, args=(f"racer-{k}",)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    keys = receiver.keys()
    assert len(keys) == 300 and len(set(keys)) == 300
    assert sum(results.values()) == 300 and all(results.values()), results
    dispatchers = conn.execute("SELECT count(DISTINCT dispatcher) FROM monitoring.tb_error_notification_log")
    assert dispatchers.fetchone()[0] == 2
