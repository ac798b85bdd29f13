"""Prometheus: monitoring.prometheus_metrics() read by prometheus_client's parser and by
promtool's (the real Go one), hostile label values round-tripping, the exporter over real
HTTP (and 503 while the database is away, then back), the real postgres_exporter with
prometheus/queries.yaml, and the alert rules, their unit tests and the Alertmanager example
checked by promtool and amtool."""

from __future__ import annotations

import gzip
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from pg_observe.exporter import CONTENT_TYPE, MetricsExporter
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "prometheus"
DOCS = ROOT / "docs" / "prometheus.md"
POSTGRES_EXPORTER = "/usr/bin/prometheus-postgres-exporter"

HOSTILE = ['quo"te', "back\\slash", "new\nline", "ünï€😀 日本", 'a,b=c{d}"}', "trailing\\", "\\n literally",
           "tab\there"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse(text: str) -> dict[str, object]:
    """Families by name; fails on a name seen twice (samples of a family not contiguous)."""
    families: dict[str, object] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"family {family.name} appears twice"
        families[family.name] = family
    return families


def samples(families: dict[str, object], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    family = families[name]
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}  # type: ignore[attr-defined]


def scrape(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT monitoring.prometheus_metrics()").fetchone()[0]


def registry(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT family, metric_type FROM monitoring._prometheus_families()").fetchall())


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def served(dsn: str) -> Iterator[tuple[MetricsExporter, str]]:
    exporter = MetricsExporter(dsn, port=0)
    thread = threading.Thread(target=exporter.serve_forever, daemon=True)
    thread.start()
    host, port = exporter.server_address
    try:
        yield exporter, f"http://{host}:{port}"
    finally:
        exporter.shutdown()
        thread.join(10)


# ---------------------------------------------------------------- the exposition


def test_exposition_parses_and_says_what_the_data_says(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        events = [{"exception_type": "PaymentError", "message": "declined", "environment": "production"}] * 3
        events += [{"exception_type": "Slow", "message": "slow", "level": "warning", "environment": "staging"}]
        conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", (json.dumps(events),))
        conn.execute("SELECT monitoring.resolve_error(error_fingerprint) FROM monitoring.tb_error_log"
                     " WHERE error_type = 'Slow'")
        text = scrape(conn)
        families = parse(text)
        types = registry(conn)

    # every registered family, with its type, and nothing else; counters are *_total
    names = {(n[: -len("_total")] if t == "counter" else n): t for n, t in types.items()}
    assert {name: f.type for name, f in families.items()} == names  # type: ignore[attr-defined]
    assert text.count("# TYPE ") == len(types) and text.count("# HELP ") == len(types)

    occurrences = samples(families, "pg_observe_error_occurrences")
    assert occurrences[(("level", "error"),)] == 3
    assert occurrences[(("level", "warning"),)] == 1
    assert occurrences[(("level", "fatal"),)] == 0
    groups = samples(families, "pg_observe_error_groups")
    assert groups == {(("environment", "production"), ("level", "error"), ("status", "unresolved")): 1,
                      (("environment", "staging"), ("level", "warning"), ("status", "resolved")): 1}
    info = samples(families, "pg_observe_info")
    assert list(info.values()) == [1] and next(iter(info))[0][0] == "version"
    assert samples(families, "pg_observe_connections_max")[()] > 0
    assert 0 < samples(families, "pg_observe_scrape_duration_seconds")[()] < 10


def _flush_statistics(conn: psycopg.Connection) -> None:
    """This backend's table and function statistics, visible to every session at once."""
    conn.execute("SELECT pg_stat_force_next_flush()")  # flushed when the backend goes idle, next
    conn.execute("SELECT 1")


def _seed_every_section(conn: psycopg.Connection) -> None:
    """Data for every family that has samples only with data: errors, a queue message, sent
    and failed deliveries of the last hour, a dispatcher, entry spans of the last complete
    minute (with HTTP codes), a rolled-up minute of an application metric, dead rows,
    function statistics, and cache activity with a cache_stats_history sample."""
    conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", (json.dumps(
        [{"exception_type": "E", "message": "m", "environment": env} for env in HOSTILE]),))
    error_id, = conn.execute("SELECT error_id FROM monitoring.tb_error_log LIMIT 1").fetchone()
    config_id, = conn.execute(
        "INSERT INTO monitoring.tb_error_notification_config (channel_type, channel_config, description, enabled)"
        " VALUES ('webhook', '{\"url\": \"http://127.0.0.1:9/hook\"}', 'promtool test', false)"
        " RETURNING config_id").fetchone()
    conn.execute("INSERT INTO monitoring.notification_queue (idempotency_key, config_id, error_id,"
                 " notification_trigger, payload, status, queued_at)"
                 " VALUES (gen_random_uuid(), %s, %s, 'test', '{}', 'pending', now() - interval '2 minutes')",
                 (config_id, error_id))
    conn.execute("INSERT INTO monitoring.tb_error_notification_log"
                 " (config_id, error_id, sent_at, channel_type, status, duration_ms, dispatcher)"
                 " SELECT %s, %s, now() - d.age, 'webhook', d.status, d.ms, 'worker-1'"
                 " FROM (VALUES (interval '5 minutes', 'sent', 120::float8), (interval '9 minutes', 'failed', 5000))"
                 " AS d(age, status, ms)", (config_id, error_id))
    conn.execute("INSERT INTO monitoring.dispatcher_heartbeat (dispatcher, last_seen_at, calls)"
                 " VALUES ('worker-1', now() - interval '20 seconds', 42)")
    conn.execute("INSERT INTO monitoring.metric_rollup_state (rolled_up_to, last_run_at)"
                 " VALUES (date_trunc('minute', now()), now())"
                 " ON CONFLICT (singleton) DO UPDATE SET rolled_up_to = EXCLUDED.rolled_up_to,"
                 " last_run_at = EXCLUDED.last_run_at")
    conn.execute("INSERT INTO monitoring.metric_rollups_1m (bucket, series_key, metric_name, metric_type, labels,"
                 " environment, service, sample_count, value_sum, value_min, value_max, value_last, p99)"
                 " VALUES (date_trunc('minute', now()) - interval '1 minute', gen_random_uuid(),"
                 " 'graphql.query.complexity', 'histogram', '{}', 'production', 'api', 10, 1000, 5, 600, 7, 580)")
    conn.execute("CREATE TABLE public.bloated AS SELECT g AS id FROM generate_series(1, 1000) g")
    conn.execute("DELETE FROM public.bloated WHERE id <= 500")
    conn.execute("SET track_functions = 'pl'")
    conn.execute("CREATE FUNCTION public.tracked() RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN 1; END'")
    conn.execute("SELECT public.tracked() FROM generate_series(1, 3)")
    conn.execute("SELECT monitoring.cache_set('k', '1'), monitoring.cache_get('k'), monitoring.cache_get('absent')")
    conn.execute("SELECT monitoring.cache_flush_stats()")
    conn.execute("SELECT monitoring._sample_cache_stats()")
    _flush_statistics(conn)


def _seed_spans(conn: psycopg.Connection) -> None:
    """Entry spans of the last complete minute (as of now), with HTTP codes, arriving late."""
    start, = conn.execute("SELECT date_trunc('minute', now()) - interval '30 seconds'").fetchone()
    ns = int(start.timestamp() * 1e9)
    spans = [{"trace_id": uuid.uuid4().hex, "span_id": f"{i + 1:016x}", "name": "GET /", "kind": "server",
              "start_time_unix_nano": ns, "end_time_unix_nano": ns + (i + 1) * 40_000_000,
              "status": {"code": 2 if i == 0 else 1},
              "attributes": {"http.response.status_code": 500 if i == 0 else 200},
              "resource": {"service.name": "shop", "deployment.environment": "production"}} for i in range(5)]
    accepted, _dup, rejected = conn.execute("SELECT * FROM monitoring.ingest_spans(%s::jsonb)",
                                            (json.dumps(spans),)).fetchone()
    assert (accepted, rejected) == (len(spans), 0)


# Families that stay empty in a test database whatever it holds: none so far.
ALWAYS_EMPTY: set[str] = set()


def test_promtool_accepts_the_exposition(dsn: str) -> None:
    """promtool check metrics: the real Prometheus parser, and its lint (names, units, HELP,
    no "quantile" label outside summaries), with data in every family, so that no family's
    samples escape the lint."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _seed_every_section(conn)
        for _attempt in range(3):  # the spans must still be of the last complete minute at the scrape
            _seed_spans(conn)
            text = scrape(conn)
            if "pg_observe_trace_ingest_delay_seconds_last_minute{" in text:
                break
        types = registry(conn)
    families = parse(text)
    empty = {name for name, family in families.items() if not family.samples}  # type: ignore[attr-defined]
    assert empty == ALWAYS_EMPTY, f"families without samples: {sorted(empty)}"
    assert len(families) == len(types)
    result = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == "" and result.stderr.decode().strip() == ""


def test_promtool_lint_rejects_a_quantile_label_on_a_gauge(dsn: str) -> None:
    """The lint above can fail: the same exposition with the old "quantile" label does."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _seed_every_section(conn)
        text = scrape(conn)
    bad = text.replace('percentile="50"', 'quantile="0.5"')
    assert bad != text
    result = subprocess.run(["promtool", "check", "metrics"], input=bad.encode(), capture_output=True, timeout=60)
    assert result.returncode != 0 and "quantile" in result.stdout.decode() + result.stderr.decode()


def test_counters_do_not_fall_when_a_table_is_dropped(dsn: str) -> None:
    """Retention drops partitions daily: no counter may fall then (Prometheus would read a reset
    and rate() would spike). Sequential scans are per table; the dropped table's series ends."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name in ("scan_kept", "scan_dropped"):
            conn.execute(f"CREATE TABLE public.{name} AS SELECT g AS id FROM generate_series(1, 10) g")
            conn.execute(f"DO $$ BEGIN FOR i IN 1..300 LOOP PERFORM count(*) FROM public.{name}; END LOOP; END $$")
        _flush_statistics(conn)
        before = parse(scrape(conn))
        conn.execute("DROP TABLE public.scan_dropped")
        _flush_statistics(conn)
        after = parse(scrape(conn))
        types = registry(conn)
    scans_before = samples(before, "pg_observe_table_seq_scans")
    scans_after = samples(after, "pg_observe_table_seq_scans")
    kept = (("schema", "public"), ("table", "scan_kept"))
    dropped = (("schema", "public"), ("table", "scan_dropped"))
    assert scans_before[kept] >= 300 and scans_before[dropped] >= 300
    assert dropped not in scans_after and scans_after[kept] >= scans_before[kept]
    for name, metric_type in types.items():
        if metric_type != "counter":
            continue
        family = name[: -len("_total")]
        old, new = samples(before, family), samples(after, family)
        fallen = {labels: (old[labels], new[labels]) for labels in old.keys() & new.keys() if new[labels] < old[labels]}
        assert not fallen, f"{name} fell: {fallen}"


def test_hostile_label_values_round_trip(dsn: str) -> None:
    """Environments and services are users' data: quotes, backslashes, newlines and any unicode
    come back from the parser exactly as stored."""
    spans = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", (json.dumps(
            [{"exception_type": "E", "message": "m", "environment": env} for env in HOSTILE]),))
        start, = conn.execute("SELECT date_trunc('minute', now()) - interval '30 seconds'").fetchone()
        for i, value in enumerate(HOSTILE):
            ns = int(start.timestamp() * 1e9)
            spans.append({"trace_id": uuid.uuid4().hex, "span_id": f"{i + 1:016x}", "name": "GET /", "kind": "server",
                          "start_time_unix_nano": ns, "end_time_unix_nano": ns + 5_000_000,
                          "resource": {"service.name": value, "deployment.environment": value}})
        accepted, _dup, rejected = conn.execute("SELECT * FROM monitoring.ingest_spans(%s::jsonb)",
                                                (json.dumps(spans),)).fetchone()
        assert (accepted, rejected) == (len(HOSTILE), 0)
        stored_envs = {r[0] for r in conn.execute("SELECT DISTINCT e FROM monitoring.tb_error_log,"
                                                   " unnest(environments) e").fetchall()}
        families = parse(scrape(conn))
    assert stored_envs == set(HOSTILE)  # stored as sent: the test is about the exposition
    environments = {dict(labels)["environment"] for labels in samples(families, "pg_observe_error_groups")}
    assert environments == set(HOSTILE)
    requests = samples(families, "pg_observe_trace_requests_last_minute")
    assert {(dict(k)["environment"], dict(k)["service"]) for k in requests} == {(v, v) for v in HOSTILE}
    assert set(requests.values()) == {1}


def test_label_cardinality_is_bounded(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", (json.dumps(
            [{"exception_type": f"E{i}", "message": "m", "environment": f"env-{i:03d}"} for i in range(200)]),))
        families = parse(scrape(conn))
    environments = [dict(k)["environment"] for k in samples(families, "pg_observe_error_groups")]
    assert len(set(environments)) == 21 and "(other)" in environments
    assert samples(families, "pg_observe_error_groups")[
        (("environment", "(other)"), ("level", "error"), ("status", "unresolved"))] == 180


# ---------------------------------------------------------------- the cache


CACHE_NAMESPACE = 'bil"ling\\ünï\n'


def test_cache_counts_are_exact(dsn: str) -> None:
    """Real cache calls by the application's role (SQL and the Python client), read back by
    observe_reader through prometheus_client's parser: exact hits, misses, sets, evictions per
    namespace; the same after the backend ended and its counter row was folded; entries and
    bytes once maintenance sampled cache_stats."""
    from pg_observe import SyncPostgresCache

    with psycopg.connect(dsn, autocommit=True) as app:
        app.execute("SET ROLE observe_writer")
        # 150 sets and 157 reads: past the 100 events after which a backend adds its counts
        for i in range(150):
            app.execute("SELECT monitoring.cache_set(%s, %s::jsonb, NULL, %s)", (f"k{i}", str(i), CACHE_NAMESPACE))
        for i in range(120):
            app.execute("SELECT monitoring.cache_get(%s, %s)", (f"k{i}", CACHE_NAMESPACE))
        for i in range(37):
            app.execute("SELECT monitoring.cache_get(%s, %s)", (f"absent{i}", CACHE_NAMESPACE))
        app.execute("SELECT monitoring.cache_set('short', '1', interval '1 millisecond', %s)", (CACHE_NAMESPACE,))
        client = SyncPostgresCache(app, namespace="default")
        client.set("user:1", {"name": "Ada"}, ttl=3600)
        assert client.get("user:1") == {"name": "Ada"} and client.get("user:2") is None
        app.execute("SELECT monitoring.cache_flush_stats()")
        time.sleep(0.01)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SET ROLE observe_admin")
            admin.execute("SELECT monitoring.expire_cache()")
        with psycopg.connect(dsn, autocommit=True) as reader:
            reader.execute("SET ROLE observe_reader")
            live = parse(scrape(reader))
    expected = {"hits": {CACHE_NAMESPACE: 120, "default": 1}, "misses": {CACHE_NAMESPACE: 37, "default": 1},
                "sets": {CACHE_NAMESPACE: 151, "default": 1}, "evictions": {CACHE_NAMESPACE: 1, "default": 0}}

    def counters(families: dict[str, object]) -> dict[str, dict[str, float]]:
        return {kind: {dict(labels)["namespace"]: value
                       for labels, value in samples(families, f"pg_observe_cache_{kind}").items()}
                for kind in expected}

    assert counters(live) == expected
    assert samples(live, "pg_observe_cache_up") == {(): 1}
    assert samples(live, "pg_observe_cache_entries") == {}  # no cache_stats_history sample yet

    with psycopg.connect(dsn, autocommit=True) as admin:  # the app's backend has ended
        admin.execute("SET ROLE observe_admin")
        unfolded = -1
        for _attempt in range(50):  # until the ended backends have left pg_stat_activity
            admin.execute("SELECT monitoring._fold_cache_counters()")
            unfolded = admin.execute("SELECT count(*) FROM monitoring.cache_counters"
                                     " WHERE backend_pid <> 0").fetchone()[0]
            if unfolded == 0:
                break
            time.sleep(0.1)
        assert unfolded == 0
        admin.execute("SELECT monitoring._sample_cache_stats()")
        admin.execute("SET ROLE observe_reader")
        folded = parse(scrape(admin))
    assert counters(folded) == expected
    entries = {dict(k)["namespace"]: v for k, v in samples(folded, "pg_observe_cache_entries").items()}
    assert entries == {CACHE_NAMESPACE: 150, "default": 1}
    assert samples(folded, "pg_observe_cache_bytes")[(("namespace", CACHE_NAMESPACE),)] > 150 * 2
    assert abs(samples(folded, "pg_observe_cache_sampled_timestamp_seconds")[()] - time.time()) < 60


def test_cache_down_while_its_table_is_locked(dsn: str) -> None:
    """A lock that makes every cache call wait (TRUNCATE, VACUUM FULL, ALTER TABLE) shows as
    pg_observe_cache_up 0 within a second, and the rest of the scrape is intact; 1 again once
    it is released."""
    with psycopg.connect(dsn, autocommit=True) as reader, psycopg.connect(dsn) as locker, \
            psycopg.connect(dsn, autocommit=True) as app:
        reader.execute("SET ROLE observe_reader")
        app.execute("SET ROLE observe_writer")
        app.execute("SET statement_timeout = '300ms'")
        assert samples(parse(scrape(reader)), "pg_observe_cache_up") == {(): 1}
        locker.execute("LOCK TABLE monitoring.cache_entries IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.QueryCanceled):  # the cache is really unusable
            app.execute("SELECT monitoring.cache_get('k')")
        started = time.monotonic()
        text = scrape(reader)
        elapsed = time.monotonic() - started
        down = parse(text)
        locker.rollback()
        up = parse(scrape(reader))
    assert elapsed < 3
    assert samples(down, "pg_observe_cache_up") == {(): 0}
    cache_samples = [n for n, f in down.items() if n.startswith("pg_observe_cache_") and f.samples]  # type: ignore[attr-defined]
    assert cache_samples == ["pg_observe_cache_up"]
    assert samples(down, "pg_observe_connections_max")[()] > 0 and samples(down, "pg_observe_info")
    assert samples(up, "pg_observe_cache_up") == {(): 1}


def test_cache_namespaces_are_bounded(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(30):
            conn.execute("SELECT monitoring.cache_get('k', %s) FROM generate_series(0, %s)", (f"ns-{i:02d}", i))
        conn.execute("SELECT monitoring.cache_flush_stats()")
        misses = samples(parse(scrape(conn)), "pg_observe_cache_misses")
    names = {dict(k)["namespace"]: v for k, v in misses.items()}
    assert len(names) == 21
    assert names["(other)"] == sum(i + 1 for i in range(10))  # the 10 least active
    assert names["ns-29"] == 30 and "ns-09" not in names


# ---------------------------------------------------------------- the exporter over HTTP


def test_exporter_serves_metrics_over_http(served: tuple[MetricsExporter, str], dsn: str) -> None:
    _exporter, base = served
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT monitoring.capture_error(%s::jsonb)",
                     (json.dumps({"exception_type": "E", "message": "m", "level": "fatal"}),))
    status, headers, body = get(base + "/metrics")
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPE
    families = parse(body.decode("utf-8"))
    assert samples(families, "pg_observe_error_occurrences")[(("level", "fatal"),)] == 1

    status, headers, zipped = get(base + "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert parse(gzip.decompress(zipped).decode()).keys() == families.keys()

    assert get(base + "/other")[0] == 404
    assert get(base + "/metrics", method="POST")[0] == 405
    assert get(base + "/")[0] == 200

    # the kept connection is killed: the next scrape reconnects at once
    with psycopg.connect(dsn, autocommit=True) as conn:
        killed = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                              " WHERE application_name = 'pg_observe exporter' AND datname = current_database()"
                              ).fetchone()[0]
    assert killed == 1
    assert get(base + "/metrics")[0] == 200


def _read_response(sock: socket.socket, buffer: bytes = b"") -> tuple[int, dict[str, str], bytes, bytes]:
    """One HTTP/1.1 response read off a raw socket: status, headers, body, and what follows."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a whole response: {buffer!r}"
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed within a body"
        rest += chunk
    return int(status_line.split()[1]), headers, rest[:length], rest[length:]


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server has closed the connection (EOF or reset), False when it stays open."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_exporter_closes_idle_keep_alive_connections(dsn: str) -> None:
    """A kept-alive connection serves several scrapes, then is closed after idle_timeout
    seconds without a request: an idle client does not hold a thread for ever."""
    exporter = MetricsExporter(dsn, port=0, idle_timeout=0.5)
    thread = threading.Thread(target=exporter.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(exporter.server_address, timeout=10) as sock:
            request = b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n"
            for _ in range(2):  # keep-alive: the same connection twice
                sock.sendall(request)
                status, headers, body, rest = _read_response(sock)
                assert status == 200 and b"pg_observe_info{" in body and rest == b""
                assert headers.get("connection", "").lower() != "close"
            started = time.monotonic()
            assert _closed_by_server(sock)
            waited = time.monotonic() - started
        assert 0.3 < waited < 5, waited
        with socket.create_connection(exporter.server_address, timeout=10) as sock:
            sock.sendall(b"GET /metr")  # a request never finished is cut off too
            assert _closed_by_server(sock)
    finally:
        exporter.shutdown()
        thread.join(10)


def test_exporter_closes_the_connection_after_a_request_it_refuses(served: tuple[MetricsExporter, str]) -> None:
    """A POST's body is never parsed as the next request: the server answers 405 with
    Connection: close and closes, so the smuggled request and the GET after it get no answer."""
    exporter, _base = served
    smuggled = b"GET /other HTTP/1.1\r\nHost: exporter\r\n\r\n"
    with socket.create_connection(exporter.server_address, timeout=10) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: exporter\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(smuggled), smuggled))
        status, headers, body, rest = _read_response(sock)
        assert status == 405 and headers["allow"] == "GET" and headers["connection"] == "close"
        assert body.startswith(b"method not allowed")
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: exporter\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert rest == b"" and _closed_by_server(sock)  # no 404 for /other, no 200 for /metrics
    with socket.create_connection(exporter.server_address, timeout=10) as sock:
        sock.sendall(b"GET /nothing HTTP/1.1\r\nHost: exporter\r\n\r\n")
        status, headers, _body, rest = _read_response(sock)
        assert status == 404 and headers["connection"] == "close" and rest == b"" and _closed_by_server(sock)
    with socket.create_connection(exporter.server_address, timeout=10) as sock:
        # a body too large to read away, announced but never sent: closed at once all the same
        sock.sendall(b"PUT /metrics HTTP/1.1\r\nHost: exporter\r\nContent-Length: 99999999\r\n\r\n")
        status, headers, _body, _rest = _read_response(sock)
        assert status == 405 and headers["connection"] == "close" and _closed_by_server(sock)


def test_exporter_answers_503_while_the_database_is_away_then_recovers(admin_dsn: str) -> None:
    """A database that does not exist yet, then does: 503 with a message, then metrics."""
    name = f"pg_observe_exporter_{uuid.uuid4().hex[:8]}"
    target = make_conninfo(admin_dsn, dbname=name)
    exporter = MetricsExporter(target, port=0, connect_timeout=2)
    thread = threading.Thread(target=exporter.serve_forever, daemon=True)
    thread.start()
    url = "http://%s:%d/metrics" % exporter.server_address
    try:
        status, headers, body = get(url)
        assert status == 503
        assert body.decode().startswith("pg_observe exporter: cannot read pg_observe metrics")
        assert name not in body.decode()  # details (which name the server) go to the log only
        assert headers.get("Retry-After") == "5"
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            with psycopg.connect(target, autocommit=True) as conn:
                assert get(url)[0] == 503  # the database is there, pg_observe is not
                conn.execute("CREATE EXTENSION pg_observe CASCADE")
            status, _headers, body = get(url)
            assert status == 200 and "pg_observe_info{" in body.decode()
        finally:
            exporter.shutdown()
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        thread.join(10)


def test_exporter_answers_503_when_nothing_listens() -> None:
    port = free_port()
    exporter = MetricsExporter(f"host=127.0.0.1 port={port} dbname=x user=x connect_timeout=2", port=0)
    thread = threading.Thread(target=exporter.serve_forever, daemon=True)
    thread.start()
    try:
        status, _headers, body = get("http://%s:%d/metrics" % exporter.server_address)
        assert status == 503 and b"OperationalError" in body
    finally:
        exporter.shutdown()
        thread.join(10)


# ---------------------------------------------------------------- postgres_exporter


def _data_source_name(dsn: str) -> str:
    params = conninfo_to_dict(dsn)
    host = str(params.get("host") or os.environ.get("PGHOST") or "/var/run/postgresql")
    query = "sslmode=disable"
    if host.startswith("/"):
        query += f"&host={host}"
        host = ""
    return f"postgresql://{params.get('user', 'postgres')}@{host}:{params.get('port', 5432)}/{params['dbname']}?{query}"


@pytest.mark.skipif(not os.access(POSTGRES_EXPORTER, os.X_OK), reason="prometheus-postgres-exporter not installed")
def test_postgres_exporter_runs_queries_yaml(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", (json.dumps(
            [{"exception_type": "E", "message": "m", "environment": 'pro"d\\uction'}] * 2),))
        conn.execute("SELECT monitoring.cache_set('a', '1', NULL, 'billing'), monitoring.cache_get('a', 'billing'),"
                     " monitoring.cache_get('a', 'billing'), monitoring.cache_get('b', 'billing')")
        conn.execute("SELECT monitoring.cache_flush_stats()")
        expected = {tuple(sorted(s.labels.items())): s.value
                    for f in text_string_to_metric_families(scrape(conn)) if f.name == "pg_observe_error_occurrences"
                    for s in f.samples}
    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME": _data_source_name(dsn)}
    process = subprocess.Popen(
        [POSTGRES_EXPORTER, f"--extend.query-path={PROM / 'queries.yaml'}", f"--web.listen-address=127.0.0.1:{port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                status, _headers, body = get(f"http://127.0.0.1:{port}/metrics")
                text = body.decode()
                if status == 200 and "pg_observe_error_occurrences_total" in text:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.3)
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "pg_observe_error_occurrences" in families, output[-3000:]

    def values(name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {tuple(sorted((k, v) for k, v in s.labels.items() if k != "server")): s.value
                for s in families[name].samples}

    assert families["pg_up"].samples[0].value == 1
    assert families["pg_exporter_last_scrape_error"].samples[0].value == 0, output[-3000:]
    assert all(s.value == 0 for s in families["pg_exporter_user_queries_load_error"].samples)
    assert values("pg_observe_error_occurrences") == expected
    assert values("pg_observe_error_groups") == {
        (("environment", 'pro"d\\uction'), ("level", "error"), ("status", "unresolved")): 1}
    assert values("pg_observe_notification_queue_messages")[(("status", "dead"),)] == 0
    assert values("pg_observe_cache_up") == {(): 1}
    assert values("pg_observe_cache_hits") == {(("namespace", "billing"),): 2}
    assert values("pg_observe_cache_misses") == {(("namespace", "billing"),): 1}
    # every query of the file produced its metrics, under the names pg-observe exporter uses
    with psycopg.connect(dsn, autocommit=True) as conn:
        registered = registry(conn)
    produced = {s.name for f in families.values() for s in f.samples if s.name.startswith("pg_observe_")}
    for key, query in yaml.safe_load((PROM / "queries.yaml").read_text()).items():
        for column in query["metrics"]:
            (column_name, spec), = column.items()
            if spec["usage"] != "LABEL":
                metric = f"{key}_{column_name}"
                assert metric in registered, f"{metric} is not a pg_observe family"
                if key not in ("pg_observe_dispatcher", "pg_observe_metric_rollup", "pg_observe_trace",
                               "pg_observe_trace_request_duration", "pg_observe_trace_http"):
                    assert metric in produced, f"postgres_exporter did not produce {metric}"


# ---------------------------------------------------------------- alert rules, Alertmanager, Prometheus


def _run(*command: str) -> str:
    result = subprocess.run(command, cwd=PROM, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 37 rules found" in _run("promtool", "check", "rules", "alerts.yml")


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in _run("promtool", "test", "rules", "alerts_test.yml")


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests are not vacuous: with HighErrorRate's threshold raised, its test fails."""
    rules = (PROM / "alerts.yml").read_text().replace("(pg_observe_trace_requests_last_minute) > 0.05",
                                                       "(pg_observe_trace_requests_last_minute) > 0.5", 1)
    (tmp_path / "alerts.yml").write_text(rules)
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())
    tests["tests"] = [t for t in tests["tests"] if t["name"].startswith("HighErrorRate ")]
    assert len(tests["tests"]) == 2
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "HighErrorRate fires" in result.stdout + result.stderr


def test_amtool_checks_the_alertmanager_example() -> None:
    out = _run("amtool", "check-config", "alertmanager.yml")
    assert "SUCCESS" in out and "4 receivers" in out


def test_promtool_checks_the_prometheus_example() -> None:
    assert "SUCCESS" in _run("promtool", "check", "config", "prometheus.yml")


def test_every_rule_has_a_runbook_and_a_firing_and_a_silent_test(dsn: str) -> None:
    rules = [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    anchors = {re.sub(r"[^a-z0-9 -]", "", line[4:].strip().lower()).replace(" ", "-")
               for line in DOCS.read_text().splitlines() if line.startswith("### ")}
    with psycopg.connect(dsn, autocommit=True) as conn:
        families = registry(conn)
    fired: set[str] = set()
    silent: set[str] = set()
    for test in tests:
        for case in test["alert_rule_test"]:
            (fired if case.get("exp_alerts") else silent).add(case["alertname"])
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys(), name
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/prometheus.md#{name.lower()}", name
        assert name.lower() in anchors, f"docs/prometheus.md has no runbook section for {name}"
        assert name in fired, f"no test fires {name}"
        assert name in silent, f"no test keeps {name} silent"
        for metric in re.findall(r"\bpg_observe_[a-z0-9_]+", rule["expr"]):
            assert metric in families, f"{name}: unknown {metric}"
    # seed 004's 15 and seed 003's critical and warning rules are all there
    seed_004 = {"HighErrorRate", "HighLatency", "SlowQueryRate", "LowCacheHitRate", "DatabasePoolExhausted",
                "DatabaseDown", "CacheDown", "HealthCheckFailing", "HighFailedAuthAttempts", "SuspiciousQueryPattern",
                "UnauthorizedDataAccess", "HighMemoryUsage", "HighCPUUsage", "DiskSpaceRunningLow", "AuditLogLag"}
    seed_003 = {"PostgreSQLDown", "PostgreSQLVerySlowQueries", "PostgreSQLVeryLowCacheHitRatio",
                "PostgreSQLVerySlowRPCFunction", "PostgreSQLTooManyConnections", "PostgreSQLIdleInTransaction",
                "PostgreSQLSlowQueries", "PostgreSQLLowCacheHitRatio", "PostgreSQLHighSequentialScans",
                "PostgreSQLSlowRPCFunction", "PostgreSQLHighTableBloat", "PostgreSQLHighQueryLoad"}
    assert seed_004 | seed_003 <= set(names)


def test_docs_describe_every_family(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        families = registry(conn)
    text = DOCS.read_text()
    missing = [name for name in families if f"`{name}`" not in text]
    assert not missing, f"docs/prometheus.md does not describe {missing}"
