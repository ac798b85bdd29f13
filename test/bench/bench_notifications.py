"""Notifications, three figures, each against a baseline measured in the same run:

1. capture-to-receipt latency (p50, p99) at a local webhook receiver, with one webhook rule and
   one NotificationWorker (LISTEN/NOTIFY) running, one event at a time; baseline: the capture
   round trip alone of the same kind of event (a new group) in a database without rules;
2. the capture round trip (p50, p99) with 20 enabled rules evaluated for the event, against the
   same capture in an identical database without rules, interleaved on two connections;
3. the sustained delivery rate of 5,000 queued notifications by 1 and by 4 concurrent dispatchers
   (CALL monitoring.dispatch_notifications) to the local receiver; baseline: plain HTTP POSTs of
   the same payloads from Python (http.client, one thread, a connection per request, as the
   sender does) to the same receiver.

The bench makes two fresh databases next to PG_OBSERVE_BENCH_DSN's (same cluster), one with
rules and one without, so that both start from the same state, and drops them at the end.

PG_OBSERVE_BENCH_NOTIFY_EVENTS sets the latency events (default 1000), PG_OBSERVE_BENCH_NOTIFY_ROUNDS
the rounds of figure 2 (default 2000), PG_OBSERVE_BENCH_NOTIFY_MESSAGES the messages of figure 3
(default 5000)."""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from _harness import DSN, interleaved_latencies, percentile, report
from pg_observe.worker import NotificationWorker
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

LATENCY_EVENTS = int(os.environ.get("PG_OBSERVE_BENCH_NOTIFY_EVENTS", "1000"))
LATENCY_WARMUP = 20
RECEIPT_TIMEOUT = 10.0
WORKER_INTERVAL = 1.0
RULE_ROUNDS = int(os.environ.get("PG_OBSERVE_BENCH_NOTIFY_ROUNDS", "2000"))
RULE_WARMUP = 200
MESSAGES = int(os.environ.get("PG_OBSERVE_BENCH_NOTIFY_MESSAGES", "5000"))
CAPTURE_BATCH = 1000
BATCH_SIZE = 100
MAX_PARALLEL = 8
DISPATCH_DEADLINE = 120.0
DEAD_URL = "http://127.0.0.1:9/hook"  # figure 2 dispatches nothing: no one needs to listen here

CAPTURE = "SELECT monitoring.capture_error(%s)"
STACK = "Traceback (most recent call last):\n" + "".join(
    f'  File "/srv/app/orders.py", line {100 + k}, in handle_{k}\n    result = step(value)\n' for k in range(15)
) + "ValueError: order 1234 not found"


def make_event(fingerprint: str | None = None, n: int = 1234) -> dict:
    event = {
        "exception_type": "ValueError",
        "message": f"order {n} not found",
        "level": "error",
        "stack_trace": STACK,
        "context": {"user_id": 42, "request_id": f"req-{n}", "path": f"/orders/{n}"},
        "environment": "production",
        "release": "2.4.1",
        "service": "api",
    }
    if fingerprint is not None:
        event["fingerprint"] = [fingerprint]
    return event


# ------------------------------------------------------------------------------- receiver


class Receiver:
    """A webhook receiver on 127.0.0.1: records perf_counter(), the Idempotency-Key header and
    (when watching) the body's error_fingerprint of every request; answers 200."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.times: list[float] = []
        self.keys: list[str | None] = []
        self.seen: dict[str, float] = {}  # error_fingerprint -> first receipt, while watching
        self.watch = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                now = time.perf_counter()
                receiver.record(now, self.headers.get("Idempotency-Key"), body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def record(self, now: float, key: str | None, body: bytes) -> None:
        fingerprint = None
        if self.watch:
            try:
                fingerprint = json.loads(body).get("error_fingerprint")
            except ValueError:
                pass
        with self.cond:
            self.times.append(now)
            self.keys.append(key)
            if fingerprint is not None:
                self.seen.setdefault(fingerprint, now)
                self.cond.notify_all()

    def reset(self) -> None:
        with self.cond:
            self.times, self.keys, self.seen = [], [], {}

    def wait_for(self, fingerprint: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: fingerprint in self.seen, timeout)
            return self.seen.get(fingerprint)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------ databases


def create_database(admin: psycopg.Connection, name: str) -> str:
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    dsn = make_conninfo(DSN, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET client_min_messages = warning")
        conn.execute("CREATE EXTENSION pg_observe CASCADE")
        conn.execute("INSERT INTO monitoring.notification_settings (settings_id, batch_size, max_parallel)"
                     " VALUES (true, %s, %s) ON CONFLICT (settings_id) DO UPDATE"
                     " SET batch_size = excluded.batch_size, max_parallel = excluded.max_parallel",
                     (BATCH_SIZE, MAX_PARALLEL))
    return dsn


def webhook_rule(conn: psycopg.Connection, url: str) -> None:
    """Only one rule: every new group fires 'new' once, nothing else ever fires."""
    conn.execute("DELETE FROM monitoring.tb_error_notification_config")
    conn.execute("INSERT INTO monitoring.tb_error_notification_config"
                 " (description, channel_type, channel_config, min_occurrence_count, rate_limit_minutes)"
                 " VALUES ('bench webhook', 'webhook', %s, 1, 0)", (Jsonb({"url": url}),))


# Figure 2: 20 realistic rules, all enabled, about half of them matching the event
# (ValueError, level error, environment production).
# (error_type, severity, environment, min_count, thresholds, rate_limit, frequency, first_seen_only, channel)
RULES = [
    (None, None, None, 1, [1, 10, 100, 1000], 0, None, False, "webhook"),
    ("ValueError", ["error", "critical"], ["production"], 1, [1, 10, 100, 1000], 60, None, False, "webhook"),
    ("ValueError", None, ["production", "staging"], 10, None, 1440, None, False, "slack"),
    ("KeyError", ["error"], ["production"], 1, None, 0, None, False, "webhook"),
    ("TimeoutError", ["warning", "error"], ["production"], 100, [100, 1000], 60, None, False, "email"),
    (None, ["critical"], ["production"], 1, None, 0, None, False, "pagerduty"),
    (None, ["error"], ["staging"], 1, [1, 10, 100, 1000], 0, None, False, "webhook"),
    (None, ["error", "critical"], ["production"], 1, None, 60, (50, 5), False, "slack"),
    ("ValueError", None, None, 1, None, 0, (10, 1), False, "webhook"),
    ("PaymentError", ["error", "critical"], ["production"], 1, [1, 10, 100], 60, None, False, "pagerduty"),
    (None, ["warning"], ["production", "staging"], 1000, None, 1440, None, False, "email"),
    (None, None, ["production"], 1, None, 0, None, True, "webhook"),
    ("IntegrityError", None, ["production"], 1, [1, 10, 100, 1000], 60, None, False, "webhook"),
    (None, ["error"], ["production"], 100, [100, 1000], 1440, None, False, "email"),
    ("ValueError", ["error"], ["staging"], 1, None, 0, (100, 10), False, "slack"),
    (None, ["info", "warning"], None, 10, [10, 100, 1000], 60, None, False, "webhook"),
    ("PermissionError", ["error"], ["production", "staging"], 1, None, 1440, (20, 60), False, "webhook"),
    (None, ["error", "critical"], ["production", "staging"], 1, [1, 10, 100, 1000], 1440, None, False, "slack"),
    ("ValueError", ["critical"], ["production"], 1, None, 0, None, True, "email"),
    (None, None, ["staging"], 10, [10, 100], 0, (1000, 60), False, "webhook"),
]
CHANNEL_CONFIGS = {
    "webhook": {"url": DEAD_URL},
    "slack": {"webhook_url": DEAD_URL, "channel": "#alerts"},
    "email": {"to": "oncall@example.com", "smtp_host": "127.0.0.1", "smtp_port": 9},
    "pagerduty": {"routing_key": "bench", "events_url": DEAD_URL},
}


def twenty_rules(conn: psycopg.Connection) -> None:
    conn.execute("DELETE FROM monitoring.tb_error_notification_config")
    for n, (etype, severity, env, min_count, thresholds, rate, freq, first_only, channel) in enumerate(RULES):
        conn.execute(
            "INSERT INTO monitoring.tb_error_notification_config (description, error_type, severity, environment,"
            " channel_type, channel_config, min_occurrence_count, notify_on_occurrence, first_seen_only,"
            " frequency_count, frequency_window_minutes, rate_limit_minutes)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (f"bench rule {n}", etype, severity, env, channel, Jsonb(CHANNEL_CONFIGS[channel]), min_count,
             thresholds, first_only, freq[0] if freq else None, freq[1] if freq else None, rate))


# -------------------------------------------------------------------------------- figures


def rules_overhead(plain_dsn: str, rules_dsn: str) -> None:
    event = Jsonb(make_event())
    with psycopg.connect(plain_dsn, autocommit=True) as plain, psycopg.connect(rules_dsn, autocommit=True) as ruled:
        twenty_rules(ruled)

        def with_rules() -> None:
            ruled.execute(CAPTURE, (event,))

        def without_rules() -> None:
            plain.execute(CAPTURE, (event,))

        interleaved_latencies(with_rules, without_rules, RULE_WARMUP)
        timed_rules, timed_plain = interleaved_latencies(with_rules, without_rules, RULE_ROUNDS)
        queued = ruled.execute("SELECT count(*) FROM monitoring.notification_queue").fetchone()[0]
    extra = {"rules": len(RULES), "rounds": RULE_ROUNDS, "queued_during_run": queued}
    report("notification_rules_capture_overhead_p50", percentile(timed_rules, 50), "ms",
           percentile(timed_plain, 50), baseline_name="the same capture without rules, p50", **extra)
    report("notification_rules_capture_overhead_p99", percentile(timed_rules, 99), "ms",
           percentile(timed_plain, 99), baseline_name="the same capture without rules, p99", **extra)


def capture_to_receipt(plain_dsn: str, rules_dsn: str, receiver: Receiver) -> None:
    with psycopg.connect(plain_dsn, autocommit=True) as plain, psycopg.connect(rules_dsn, autocommit=True) as ruled:
        webhook_rule(ruled, receiver.url)
        receiver.reset()
        receiver.watch = True
        worker = NotificationWorker(rules_dsn, interval=WORKER_INTERVAL, name="bench-worker")
        thread = threading.Thread(target=worker.run, name="bench-worker", daemon=True)
        thread.start()
        latencies, captures, lost, slow_worker, received = [], [], 0, 0, 0
        try:
            for i in range(LATENCY_WARMUP + LATENCY_EVENTS):
                # baseline: the capture alone, a new group as well, in the database without rules
                start = time.perf_counter()
                plain.execute(CAPTURE, (Jsonb(make_event(f"bench-base-{i}", i)),))
                capture_ms = (time.perf_counter() - start) * 1000

                fingerprint = f"bench-latency-{i}"
                t0 = time.perf_counter()
                ruled.execute(CAPTURE, (Jsonb(make_event(fingerprint, i)),))
                t1 = receiver.wait_for(fingerprint, RECEIPT_TIMEOUT)
                received += t1 is not None
                if i >= LATENCY_WARMUP:
                    captures.append(capture_ms)
                    if t1 is None:
                        lost += 1
                    else:
                        latencies.append((t1 - t0) * 1000)
                # the worker back to waiting (its call has returned) before the next event:
                # latency, not queueing
                deadline = time.monotonic() + RECEIPT_TIMEOUT
                while worker.totals.sent + worker.totals.failed + worker.totals.dead < received:
                    if time.monotonic() > deadline or not thread.is_alive():
                        slow_worker += 1
                        break
                    time.sleep(0.0005)
        finally:
            worker.stop()
            thread.join(timeout=15)
            receiver.watch = False
        with receiver.cond:
            keys = list(receiver.keys)
        duplicates = len(keys) - len(set(keys))
        failed = worker.totals.failed + worker.totals.dead
    if lost or duplicates or failed or slow_worker:
        print(f"bench_notifications: capture-to-receipt: {lost} of {LATENCY_EVENTS} events never reached the"
              f" receiver within {RECEIPT_TIMEOUT:g}s, {duplicates} duplicate deliveries, {failed} failed sends,"
              f" {slow_worker} waits for the worker timed out", file=sys.stderr, flush=True)
    if not latencies:
        print("bench_notifications: capture-to-receipt: nothing received", file=sys.stderr, flush=True)
        return
    extra = {"events": LATENCY_EVENTS, "received": len(latencies), "lost": lost, "duplicates": duplicates,
             "max_ms": round(max(latencies), 3), "workers": 1, "worker_interval_s": WORKER_INTERVAL}
    report("notification_capture_to_receipt_p50", percentile(latencies, 50), "ms", percentile(captures, 50),
           baseline_name="capture round trip of a new group without rules, p50", **extra)
    report("notification_capture_to_receipt_p99", percentile(latencies, 99), "ms", percentile(captures, 99),
           baseline_name="capture round trip of a new group without rules, p99", **extra)


def queue_messages(conn: psycopg.Connection, tag: str) -> list[tuple[str, dict]]:
    """MESSAGES new groups, one notification each; returns their (idempotency key, payload)."""
    events = [make_event(f"bench-rate-{tag}-{i}", i) for i in range(MESSAGES)]
    for i in range(0, MESSAGES, CAPTURE_BATCH):
        conn.execute("SELECT monitoring.capture_errors(%s)", (Jsonb(events[i:i + CAPTURE_BATCH]),))
    rows = conn.execute(
        "SELECT idempotency_key::text, payload || jsonb_build_object('attempt', attempts + 1)"
        " FROM monitoring.notification_queue WHERE status = 'pending' ORDER BY queue_id").fetchall()
    if len(rows) != MESSAGES:
        print(f"bench_notifications: {MESSAGES} new groups queued {len(rows)} notifications, not {MESSAGES}",
              file=sys.stderr, flush=True)
    return rows


def plain_posts(receiver: Receiver, messages: list[tuple[str, dict]]) -> float:
    bodies = [(key, json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode())
              for key, payload in messages]
    receiver.reset()
    start = time.perf_counter()
    for key, body in bodies:
        conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
        try:
            conn.request("POST", "/hook", body=body, headers={
                "Content-Type": "application/json", "User-Agent": "bench", "Idempotency-Key": key})
            conn.getresponse().read()
        finally:
            conn.close()
    with receiver.cond:
        received, last = len(receiver.times), max(receiver.times, default=start)
    return received / (last - start)


def dispatch_all(rules_dsn: str, receiver: Receiver, messages: list[tuple[str, dict]], dispatchers: int) -> float:
    receiver.reset()
    barrier = threading.Barrier(dispatchers + 1)
    totals = [[0, 0, 0] for _ in range(dispatchers)]
    errors: list[BaseException] = []

    def dispatcher(k: int) -> None:
        try:
            with psycopg.connect(rules_dsn, autocommit=True) as conn:
                barrier.wait()
                deadline = time.monotonic() + DISPATCH_DEADLINE
                while time.monotonic() < deadline:
                    row = conn.execute("CALL monitoring.dispatch_notifications(1000, %s)", (f"bench-{k}",)).fetchone()
                    for j in range(3):
                        totals[k][j] += int(row[j] or 0)
                    if any(row):
                        continue
                    due = conn.execute(
                        "SELECT count(*) FROM monitoring.notification_queue"
                        " WHERE status IN ('pending', 'sending') AND next_attempt_at <= now()").fetchone()[0]
                    if due == 0:
                        break
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=dispatcher, args=(k,), name=f"bench-dispatcher-{k}") for k in range(dispatchers)]
    for t in threads:
        t.start()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    for t in threads:
        t.join()
    with receiver.cond:
        times, keys = list(receiver.times), list(receiver.keys)
    expected = {key for key, _ in messages}
    sent, failed, dead = (sum(t[j] for t in totals) for j in range(3))
    with psycopg.connect(rules_dsn, autocommit=True) as conn:
        unsent = conn.execute("SELECT count(*) FROM monitoring.notification_queue WHERE status <> 'sent'").fetchone()[0]
        logged = conn.execute("SELECT count(*) FROM monitoring.tb_error_notification_log"
                              " WHERE status = 'sent' AND idempotency_key = ANY (%s::uuid[])",
                              (list(expected),)).fetchone()[0]
    problems = []
    if errors:
        problems.append(f"dispatcher errors: {errors!r}")
    if len(set(keys)) != len(messages) or set(keys) != expected:
        problems.append(f"{len(set(keys) & expected)} of {len(messages)} messages reached the receiver"
                        f" ({len(set(keys) - expected)} unexpected keys)")
    if len(keys) != len(set(keys)):
        problems.append(f"{len(keys) - len(set(keys))} duplicate deliveries")
    if failed or dead or unsent or sent != len(messages):
        problems.append(f"dispatchers reported {sent} sent, {failed} failed, {dead} dead; {unsent} queue rows not sent")
    if logged != len(messages):
        problems.append(f"the delivery log has {logged} sent attempts for {len(messages)} messages")
    if problems:
        print(f"bench_notifications: {dispatchers} dispatcher(s): " + "; ".join(problems), file=sys.stderr, flush=True)
    return len(set(keys) & expected) / (max(times, default=start + 1) - start)


def delivery_rate(rules_dsn: str, receiver: Receiver) -> None:
    with psycopg.connect(rules_dsn, autocommit=True) as conn:
        webhook_rule(conn, receiver.url)
        conn.execute("TRUNCATE monitoring.notification_queue")
        first = queue_messages(conn, "1")
    baseline = plain_posts(receiver, first)
    extra = {"messages": MESSAGES, "batch_size": BATCH_SIZE, "max_parallel": MAX_PARALLEL,
             "baseline_name": "plain HTTP POSTs of the same payloads from Python (http.client, one thread)"}
    rate = dispatch_all(rules_dsn, receiver, first, 1)
    report("notification_delivery_rate_1_dispatcher", rate, "msg/s", baseline, dispatchers=1, **extra)
    with psycopg.connect(rules_dsn, autocommit=True) as conn:
        second = queue_messages(conn, "4")
    rate = dispatch_all(rules_dsn, receiver, second, 4)
    report("notification_delivery_rate_4_dispatchers", rate, "msg/s", baseline, dispatchers=4, **extra)


def main() -> None:
    params = conninfo_to_dict(DSN)
    base = str(params.get("dbname") or "pg_observe_bench")
    names = [f"{base}_notify_plain"[:63], f"{base}_notify_rules"[:63]]
    admin_dsn = make_conninfo(DSN, dbname="postgres")
    receiver = Receiver()
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        try:
            plain_dsn, rules_dsn = (create_database(admin, name) for name in names)
            rules_overhead(plain_dsn, rules_dsn)
            capture_to_receipt(plain_dsn, rules_dsn, receiver)
            delivery_rate(rules_dsn, receiver)
        finally:
            receiver.close()
            for name in names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
