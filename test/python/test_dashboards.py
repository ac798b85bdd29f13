"""The Grafana dashboards: every panel's SQL, rendered as Grafana renders it (template variables
in the browser, then the PostgreSQL data source's macros in the backend), runs as observe_reader
against a database with data in it and returns what its panel type needs; export writes valid,
deterministic JSON and YAML."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from pg_observe import dashboards as grafana

HOST = os.environ.get("PG_OBSERVE_TEST_HOST", "")
PORT = os.environ.get("PG_OBSERVE_TEST_PORT", "54329")
ALL = "$__all"   # Grafana's value of a variable set to "All"
HOSTILE = "it's \"x\" \\ $__timeFrom() %41 ${service} ' OR true --"

# ---------------------------------------------------------------------------------------
# Grafana's substitution, for the formats the dashboards use (and the SQL data source's
# default): the browser replaces variables (public/app/features/templating/template_srv.ts,
# formatRegistry.ts), then the backend expands macros
# (pkg/tsdb/grafana-postgresql-datasource/macros.go).

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\s*[\w.]+\s*)(?::(\w+))?\s*\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def _format(value: str, fmt: str | None, variable: dict[str, Any]) -> str:
    if fmt == "percentencode":   # encodeURIComponent, then !'()* too
        return urllib.parse.quote(value, safe="")
    if fmt == "sqlstring":
        return "'" + value.replace("'", "''").replace('"', '\\"') + "'"
    if fmt in ("raw", "text"):
        return value
    if fmt is None:   # the PostgreSQL data source's interpolateVariable
        if variable.get("multi") or variable.get("includeAll"):
            return "'" + value.replace("'", "''") + "'"
        return value.replace("'", "''")
    raise AssertionError(f"the dashboards use a format the renderer does not know: {fmt}")


def interpolate(sql: str, templating: list[dict[str, Any]], values: dict[str, str], interval: str) -> str:
    variables = {v["name"]: v for v in templating}
    globals_ = {"__interval": interval, "__interval_ms": str(int(_seconds(interval) * 1000))}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or (match.group(2) or "").strip() or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in globals_:
            return globals_[name]
        variable = variables.get(name)
        if variable is None:
            return match.group(0)   # not a variable: a macro such as $__timeFrom
        value = values[name]
        if value == ALL:
            value = variable["allValue"]
            # a custom all value is not formatted, unless the format is text or percentencode
            if fmt not in ("text", "percentencode"):
                return value
        return _format(value, fmt, variable)

    return _VARIABLE.sub(replace, sql)


def _seconds(interval: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", interval.strip("'")).groups()
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[unit]


def _rfc3339(t: dt.datetime) -> str:   # Go's RFC3339Nano in UTC: no trailing zeros
    t = t.astimezone(dt.timezone.utc)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def expand_macros(sql: str, time_from: dt.datetime, time_to: dt.datetime) -> str:
    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip(" ") for a in match.group(2).split(",")]
        if name == "__timeGroup" and sql[match.end():match.end() + 1] == ",":
            name = "__timeGroupAlias"   # pre-5.3 use, as macros.go reads it
        if name == "__timeFrom":
            return f"'{_rfc3339(time_from)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(time_to)}'"
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(time_from)}' AND '{_rfc3339(time_to)}'"
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name in ("__timeGroup", "__timeGroupAlias"):
            seconds = _seconds(args[1])
            step = f"{seconds:g}"
            group = f"floor(extract(epoch from {args[0]})/{step})*{step}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        raise AssertionError(f"unknown macro {name!r}")   # Grafana answers: unknown macro

    return _MACRO.sub(macro, sql)


def render(sql: str, templating: list[dict[str, Any]], values: dict[str, str], time_from: dt.datetime,
           time_to: dt.datetime, interval: str = "1m") -> str:
    return expand_macros(interpolate(sql, templating, values, interval), time_from, time_to)


def test_renderer_matches_grafanas_documented_substitutions() -> None:
    variable = {"name": "v", "includeAll": True, "allValue": "__all"}
    # formatRegistry.test.ts
    assert _format("test'value", "sqlstring", variable) == "'test''value'"
    assert _format('test"value', "sqlstring", variable) == "'test\\\"value'"
    assert _format("foo()bar BAZ", "percentencode", variable) == "foo%28%29bar%20BAZ"
    assert _format("a!'*~_.-b", "percentencode", variable) == "a%21%27%2A~_.-b"
    t0 = dt.datetime(2020, 7, 13, 20, 19, 9, 254000, tzinfo=dt.timezone.utc)
    t1 = dt.datetime(2020, 7, 13, 21, 19, 9, tzinfo=dt.timezone.utc)
    assert expand_macros("WHERE $__timeFilter(t)", t0, t1) == \
        "WHERE t BETWEEN '2020-07-13T20:19:09.254Z' AND '2020-07-13T21:19:09Z'"
    assert expand_macros("SELECT $__timeGroupAlias(t, '5m'), v", t0, t1) == \
        "SELECT floor(extract(epoch from t)/300)*300 AS \"time\", v"
    with pytest.raises(AssertionError, match="unknown macro"):
        expand_macros("$__nope(x)", t0, t1)
    templating = [variable]
    assert interpolate("f('${v:percentencode}')", templating, {"v": ALL}, "1m") == "f('__all')"
    assert interpolate("f(${v:sqlstring})", templating, {"v": ALL}, "1m") == "f(__all)"   # custom all: raw
    assert interpolate("f('${v:percentencode}', '$__interval')", templating, {"v": "a b"}, "5m") == \
        "f('a%20b', '5m')"


# ---------------------------------------------------------------------------------------
# A database with errors, spans, metric rollups, entity changes and workflow actions.

def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _build_data(conn: psycopg.Connection) -> dt.datetime:
    now = conn.execute("SELECT now()").fetchone()[0]
    ago = lambda minutes: now - dt.timedelta(minutes=minutes)   # noqa: E731
    events = []
    for i in range(40):
        env = "production" if i % 4 else "staging"
        service = "api" if i % 3 else "worker"
        events.append({
            "event_id": uuid.uuid4().hex, "timestamp": _iso(ago(55 - i)), "level": ["error", "warning", "fatal"][i % 3],
            "environment": env, "release": "shop@1.4.2", "transaction": f"/orders/{{id}}/{['pay', 'ship'][i % 2]}",
            "server_name": "web-1", "tags": {"service": service, "tenant.id": ["acme", "globex"][i % 2]},
            "user": {"id": f"user-{i % 5}", "email": f"user{i % 5}@example.com"},
            "request": {"url": "https://shop.example.com/orders/42/pay?x=1", "method": "POST"},
            "exception": {"values": [{"type": ["ValueError", "KeyError"][i % 2], "value": f"order {i % 2} is broken",
                                      "stacktrace": {"frames": [{"filename": "shop/orders.py", "function": "pay",
                                                                 "lineno": 10 + i % 2, "in_app": True}]}}]},
        })
    # refused access: a PostgreSQL permission error, an HTTP 403, a PermissionError
    events.append({"timestamp": _iso(ago(20)), "environment": "production", "service": "api",
                   "exception_type": "psycopg.errors.InsufficientPrivilege",
                   "message": "permission denied for table payroll", "user": {"id": "mallory"},
                   "tags": {"tenant": "acme", "sqlstate": "42501"}})
    events.append({"event_id": uuid.uuid4().hex, "timestamp": _iso(ago(10)), "environment": "production",
                   "tags": {"service": "api"}, "user": {"id": "mallory"},
                   "contexts": {"response": {"status_code": 403}},
                   "exception": {"values": [{"type": "Forbidden", "value": "not yours"}]}})
    events.append({"timestamp": _iso(ago(5)), "environment": "production", "service": "worker",
                   "exception_type": "PermissionError", "message": "[Errno 13] Permission denied: '/etc/shadow'"})
    # an issue first seen before the dashboards' hour
    events.append({"timestamp": _iso(ago(120)), "environment": "production", "service": "api",
                   "exception_type": "TimeoutError", "message": "upstream timed out"})
    events.append({"timestamp": _iso(ago(30)), "environment": "production", "service": "api",
                   "exception_type": "TimeoutError", "message": "upstream timed out"})
    assert conn.execute("SELECT monitoring.capture_errors(%s::jsonb)", (json.dumps(events),)).fetchone()[0] == 45

    fingerprints = [r[0] for r in conn.execute(
        "SELECT error_fingerprint FROM monitoring.tb_error_log ORDER BY occurrence_count DESC, error_type")]
    conn.execute("SELECT monitoring.assign_error(%s, 'dana', 'lead@example.com')", (fingerprints[0],))
    conn.execute("SELECT monitoring.resolve_error(%s, 'shop@1.4.3', 'dana')", (fingerprints[1],))
    conn.execute("SELECT monitoring.ignore_error(%s, now() + interval '1 day', NULL, 'erin')", (fingerprints[2],))

    spans = []
    for i in range(60):
        trace = uuid.uuid4().hex
        root = uuid.uuid4().hex[:16]
        start = ago(58 - i)
        duration = [8, 40, 90, 200, 450, 900, 2000, 4000, 7000][i % 9]
        attributes = {"http.method": "POST", "graphql.operation.type": ["query", "mutation"][i % 2],
                      "tenant.id": ["acme", "globex", "initech"][i % 3]}
        if i % 6:
            attributes["enduser.id"] = f"user-{i % 7}"
        spans.append({"trace_id": trace, "span_id": root, "name": ["getOrders", "payOrder", "shipOrder"][i % 3],
                      "kind": "server", "start_time": _iso(start),
                      "end_time": _iso(start + dt.timedelta(milliseconds=duration)),
                      "status_code": "error" if i % 5 == 0 else "ok", "attributes": attributes,
                      "resource": {"service.name": "api" if i % 4 else "worker",
                                   "deployment.environment": "production" if i % 3 else "staging"}})
        spans.append({"trace_id": trace, "span_id": uuid.uuid4().hex[:16], "parent_span_id": root,
                      "name": "SELECT orders", "kind": "client", "start_time": _iso(start),
                      "end_time": _iso(start + dt.timedelta(milliseconds=duration / 3)),
                      "status_code": "error" if i % 10 == 0 else "unset",
                      "attributes": {"db.system": "postgresql", "db.statement": "SELECT * FROM orders WHERE id = $1"},
                      "resource": {"service.name": "api" if i % 4 else "worker",
                                   "deployment.environment": "production" if i % 3 else "staging"}})
    # user-1 came back after a day away; the others are new in the range
    spans.append({"trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16], "name": "getOrders",
                  "kind": "server", "start_time": _iso(now - dt.timedelta(days=1)),
                  "end_time": _iso(now - dt.timedelta(days=1) + dt.timedelta(milliseconds=5)),
                  "attributes": {"enduser.id": "user-1"}, "resource": {"service.name": "api"}})
    accepted, _, rejected = conn.execute(
        "SELECT * FROM monitoring.ingest_spans(%s::jsonb)", (json.dumps(spans),)).fetchone()
    assert (accepted, rejected) == (len(spans), 0)

    points = []
    for minute in range(0, 60, 2):
        t = _iso(ago(59 - minute))
        for service in ("api", "worker"):
            common = {"timestamp": t, "environment": "production", "service": service}
            points += [
                {"metric_name": "graphql.requests.total", "metric_type": "counter", "metric_value": 30 + minute,
                 "labels": {"operation": "getUser", "status": "success"}, **common},
                {"name": "db.pool.connections.active", "type": "gauge", "value": 3 + minute % 5,
                 "labels": {"pool": "primary"}, **common},
                {"name": "db.pool.connections.idle", "type": "gauge", "value": 7 - minute % 5,
                 "labels": {"pool": "primary"}, **common},
                {"name": "graphql.request.duration_ms", "type": "histogram", "values": [12.5, 30, 40.2, 250 + minute],
                 "labels": {"operation": "getOrders"}, **common},
            ]
    assert conn.execute("SELECT rejected FROM monitoring.record_metrics(%s::jsonb)",
                        (json.dumps(points),)).fetchone()[0] == 0

    conn.execute("CREATE TABLE public.user_roles (user_id text, role text, PRIMARY KEY (user_id, role))")
    conn.execute("CREATE TABLE public.orders (id int PRIMARY KEY, status text, total numeric)")
    conn.execute("SELECT monitoring.track_changes('public.user_roles', 'user_role')")
    conn.execute("SELECT monitoring.track_changes('public.orders', 'order')")
    conn.execute("SELECT set_config('pg_observe.user_id', 'alice@example.com', true)")
    conn.execute("INSERT INTO public.orders SELECT g, 'new', g * 10 FROM generate_series(1, 20) g")
    conn.execute("UPDATE public.orders SET status = 'paid' WHERE id <= 8")
    conn.execute("DELETE FROM public.orders WHERE id > 18")
    conn.execute("INSERT INTO public.user_roles VALUES ('bob', 'admin'), ('carol', 'viewer')")
    conn.execute("DELETE FROM public.user_roles WHERE user_id = 'carol'")
    return now


def _cache_activity(conn: psycopg.Connection, round_: int) -> None:
    """Cache calls through the real functions, as an application (observe_writer) makes them."""
    conn.execute("SET ROLE observe_writer")
    if round_ == 1:   # sessions: 10 sets, 10 hits, 5 misses; rates: 3 sets
        conn.execute("SELECT monitoring.cache_set('k' || g, to_jsonb(g), '1 hour', 'sessions')"
                     " FROM generate_series(1, 10) g")
        conn.execute("SELECT monitoring.cache_get('k' || g, 'sessions') FROM generate_series(1, 15) g")
        conn.execute("SELECT monitoring.cache_set('r' || g, to_jsonb(g), NULL, 'rates') FROM generate_series(1, 3) g")
    else:   # sessions: 10 hits, 10 misses, 5 sets that expire at once; rates: 3 hits
        conn.execute("SELECT monitoring.cache_get('k' || g, 'sessions') FROM generate_series(1, 20) g")
        conn.execute("SELECT monitoring.cache_set('gone' || g, 'true', '1 millisecond', 'sessions')"
                     " FROM generate_series(1, 5) g")
        conn.execute("SELECT monitoring.cache_get('r' || g, 'rates') FROM generate_series(1, 3) g")
        conn.execute("SELECT pg_sleep(0.01)")
    conn.execute("SELECT monitoring.cache_flush_stats()")
    conn.execute("RESET ROLE")


@pytest.fixture(scope="module")
def data_dsn() -> Iterator[tuple[str, dt.datetime]]:
    """One database for the module: building the data takes a few seconds."""
    name = f"pg_observe_dashboards_{os.getpid()}"
    admin = f"host={HOST} port={PORT} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = f"host={HOST} port={PORT} user=postgres dbname={name}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_observe CASCADE")
        with psycopg.connect(dsn) as conn:
            now = _build_data(conn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            # rollups read points received over a minute ago: age them as if the job ran later
            conn.execute("UPDATE monitoring.metrics SET received_at = received_at - interval '5 minutes'")
            assert "series-minutes rolled up" in conn.execute("SELECT monitoring.rollup_metrics()").fetchone()[0]
            # the cache dashboard reads the differences between maintenance runs' samples
            _cache_activity(conn, 1)
            conn.execute("SELECT monitoring.run_maintenance()")
            _cache_activity(conn, 2)
            conn.execute("SELECT monitoring.run_maintenance()")
            samples = conn.execute("SELECT count(DISTINCT sampled_at) FROM monitoring.cache_stats_history").fetchone()
            assert samples == (2,)
            conn.execute("ANALYZE")
        yield dsn, now
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def slow_query(data_dsn: tuple[str, dt.datetime]) -> Iterator[None]:
    """A statement running for a while, for the slow-query panels."""
    conn = psycopg.connect(data_dsn[0], autocommit=True, application_name="dashboards-test-sleeper")

    def sleep() -> None:
        try:
            conn.execute("SELECT pg_sleep(60)")
        except psycopg.errors.QueryCanceled:
            pass   # the fixture's teardown

    thread = threading.Thread(target=sleep, daemon=True)
    thread.start()
    with psycopg.connect(data_dsn[0], autocommit=True) as probe:
        for _ in range(100):
            if probe.execute("SELECT count(*) FROM monitoring.slow_queries").fetchone()[0]:
                break
            threading.Event().wait(0.1)
    yield
    conn.cancel_safe()
    thread.join(10)
    conn.close()


# ---------------------------------------------------------------------------------------
# Every panel of every dashboard.

SERIES = {"timeseries", "heatmap"}
SINGLE_ROW = {"stat", "gauge", "bargauge"}
TABLES = {"table", "piechart", "barchart"}
NUMBER = (int, float, Decimal)


def _panels() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(board["uid"], board, panel) for board in grafana.dashboards() for panel in board["panels"]]


def _declared_columns(panel: dict[str, Any]) -> list[str]:
    (organize,) = [t for t in panel["transformations"] if t["id"] == "organize"]
    index = organize["options"]["indexByName"]
    return sorted(index, key=index.get)


def _run(conn: psycopg.Connection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL ROLE observe_reader")
        cur = conn.execute(sql)
        return [c.name for c in cur.description], cur.fetchall()


def _has_data(kind: str, rows: list[tuple[Any, ...]], expected: bool) -> bool:
    if kind in SERIES:
        return any(v for r in rows for v in r[1:])   # some bucket with a count or value
    if kind in SINGLE_ROW:   # a 0 is a reading (no deadlocks), but not a match of a filter
        return any(v is not None for v in rows[0]) if expected else any(v for v in rows[0])
    return bool(rows)


def _check_shape(panel: dict[str, Any], columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    kind = panel["type"]
    where = f"{panel['title']!r} ({kind})"
    if kind in SERIES:
        assert columns[0] == "time", f"{where}: the first column is {columns[0]}, not time"
        assert rows, f"{where}: a time series has a row per bucket"
        assert all(isinstance(r[0], dt.datetime) and r[0].tzinfo for r in rows), where
        assert [r[0] for r in rows] == sorted({r[0] for r in rows}), f"{where}: times not in strict order"
        assert all(v is None or isinstance(v, NUMBER) for r in rows for v in r[1:]), f"{where}: non-numeric value"
    elif kind in SINGLE_ROW:
        assert len(rows) == 1, f"{where}: {len(rows)} rows, not one"
        assert all(v is None or isinstance(v, NUMBER) for v in rows[0]), f"{where}: non-numeric {rows[0]}"
    elif kind in TABLES:
        assert columns == _declared_columns(panel), f"{where}: columns {columns}"
        if kind != "table":
            assert all(isinstance(v, NUMBER) for r in rows for v in r[1:]), f"{where}: a chart needs numbers"
    else:
        raise AssertionError(f"{where}: a panel type the test does not know")


@pytest.mark.parametrize(("uid", "board", "panel"), _panels(),
                         ids=[f"{uid}:{panel['title']}" for uid, _, panel in _panels()])
def test_every_panel_returns_rows_of_its_shape(data_dsn: tuple[str, dt.datetime], slow_query: None, uid: str,
                                               board: dict[str, Any], panel: dict[str, Any]) -> None:
    dsn, now = data_dsn
    templating = board["templating"]["list"]
    hour = (now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for target in panel["targets"]:
            assert target["format"] == ("time_series" if panel["type"] in SERIES else "table")
            filtered = "monitoring.dashboard_variable(" in target["rawSql"]
            # (variables, Grafana's $__interval, whether the panel must show data)
            cases = [
                ({"environment": ALL, "service": ALL, "namespace": ALL}, "1m", True),
                ({"environment": "production", "service": ALL, "namespace": "sessions"}, "5m", True),
                ({"environment": "production", "service": "api", "namespace": "rates"}, "1h", None),
                ({"environment": HOSTILE, "service": "it's", "namespace": HOSTILE}, "1m",
                 None if not filtered else False),
                ({"environment": ALL, "service": "¿ü€ \\'\"", "namespace": "¿ü€ \\'\""}, "30s",
                 None if not filtered else False),
            ]
            for values, interval, data in cases:
                sql = render(target["rawSql"], templating, values, *hour, interval=interval)
                assert "$" not in sql, f"unsubstituted: {sql}"
                columns, rows = _run(conn, sql)
                _check_shape(panel, columns, rows)
                if data is not None:
                    assert _has_data(panel["type"], rows, data) == data, f"{panel['title']} with {values}: {rows[:3]}"


def test_variable_values_reach_the_functions_unchanged(data_dsn: tuple[str, dt.datetime]) -> None:
    templating = grafana.variables()
    sql = "SELECT monitoring.dashboard_variable('${environment:percentencode}')"
    with psycopg.connect(data_dsn[0], autocommit=True) as conn:
        for value in [HOSTILE, "production", "a%41b", "__all_", "ü€𝄞", "$x(y)", " ", "x" * 2000, "'", "\\"]:
            rendered = render(sql, templating, {"environment": value}, *(2 * (data_dsn[1],)))
            assert re.fullmatch(r"SELECT monitoring\.dashboard_variable\('[A-Za-z0-9._~%-]*'\)", rendered)
            assert _run(conn, rendered)[1] == [(value,)]
        assert _run(conn, render(sql, templating, {"environment": ALL}, *(2 * (data_dsn[1],))))[1] == [(None,)]


def test_filters_narrow_the_panels(data_dsn: tuple[str, dt.datetime]) -> None:
    dsn, now = data_dsn
    board = grafana.dashboards()[0]
    (top,) = [p for p in board["panels"] if p["title"] == "Error distribution by environment"]
    templating = board["templating"]["list"]
    hour = (now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1))
    with psycopg.connect(dsn, autocommit=True) as conn:
        _, everything = _run(conn, render(top["targets"][0]["rawSql"], templating,
                                          {"environment": ALL, "service": ALL}, *hour))
        _, staging = _run(conn, render(top["targets"][0]["rawSql"], templating,
                                       {"environment": "staging", "service": ALL}, *hour))
    assert {r[0] for r in everything} == {"production", "staging"}
    assert [r[0] for r in staging] == ["staging"]
    assert staging[0][1] == dict((r[0], r[1]) for r in everything)["staging"] == 10


def test_variables_list_environments_and_services(data_dsn: tuple[str, dt.datetime]) -> None:
    dsn, _ = data_dsn
    values = {"environment": {"production", "staging"}, "service": {"api", "worker"},
              "namespace": {"sessions", "rates"}}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for board in grafana.dashboards():
            by_name = {v["name"]: v for v in board["templating"]["list"]}
            # the cache has namespaces, not environments or services
            assert set(by_name) == ({"namespace"} if board["uid"] == "pg-observe-cache-performance"
                                    else {"environment", "service"}), board["uid"]
            for name in by_name:
                expected = values[name]
                variable = by_name[name]
                assert variable["includeAll"] and variable["allValue"] == "__all" and not variable["multi"]
                _, rows = _run(conn, variable["query"])
                assert {r[0] for r in rows} == expected


def _panel_rows(data_dsn: tuple[str, dt.datetime], uid: str, title: str,
                namespace: str = ALL) -> list[tuple[Any, ...]]:
    dsn, now = data_dsn
    (board,) = [b for b in grafana.dashboards() if b["uid"] == uid]
    (panel,) = [p for p in board["panels"] if p["title"] == title]
    sql = render(panel["targets"][0]["rawSql"], board["templating"]["list"], {"namespace": namespace},
                 now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1), interval="1h")
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _run(conn, sql)[1]


def test_cache_dashboard_counts_what_happened_between_samples(data_dsn: tuple[str, dt.datetime]) -> None:
    """Only the second round of cache calls lies between two samples: the panels show it, not the
    counters' totals (the first sample has nothing before it)."""
    uid = "pg-observe-cache-performance"
    hit_ratio = 100 * 13 / 23
    assert _panel_rows(data_dsn, uid, "Reads") == [(13, 10)]
    assert _panel_rows(data_dsn, uid, "Overall hit rate") == [(pytest.approx(hit_ratio),)]
    assert _panel_rows(data_dsn, uid, "Reads", "sessions") == [(10, 10)]
    assert _panel_rows(data_dsn, uid, "Entries") == [(13, 0)]   # 10 + 3 live; the 5 expired ones evicted
    table = _panel_rows(data_dsn, uid, "Hit rate by namespace")
    assert [r[:6] for r in table] == [("sessions", 10, 10, pytest.approx(50.0), 5, 5),
                                      ("rates", 3, 0, pytest.approx(100.0), 0, 0)]
    # one bucket holds the second between the samples (two, if an hour began in it)
    ratios = [r[1] for r in _panel_rows(data_dsn, uid, "Hit rate over time") if r[1] is not None]
    assert 1 <= len(ratios) <= 2 and ratios == [pytest.approx(hit_ratio)] * len(ratios)
    operations = [r for r in _panel_rows(data_dsn, uid, "Cache operations") if r[1] is not None]
    assert 1 <= len(operations) <= 2 and all(v > 0 for r in operations for v in r[1:])


# ---------------------------------------------------------------------------------------
# The template module and export.

def test_panels_are_thin_calls() -> None:
    for board in grafana.dashboards():
        ids = [p["id"] for p in board["panels"]]
        assert ids == list(range(1, len(ids) + 1)), board["uid"]
        cells = set()
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
            area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}
            assert not area & cells, f"{board['uid']}: {panel['title']} overlaps another panel"
            cells |= area
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                sql = target["rawSql"]
                assert len(sql) < 300, f"{panel['title']}: {len(sql)} characters of SQL"
                assert re.match(r"SELECT .+ FROM monitoring\.\w+", sql), sql
                assert target["rawQuery"] is True and target["datasource"] == panel["datasource"]
                for name in ("environment", "service", "namespace"):   # only ever through the decoder
                    decoded = f"monitoring.dashboard_variable('${{{name}:percentencode}}')"
                    assert sql.count("${" + name) == sql.count(decoded), sql


def test_dashboards_cover_the_seeds() -> None:
    boards = {b["uid"]: b for b in grafana.dashboards()}
    assert sorted(boards) == sorted([
        "pg-observe-error-monitoring", "pg-observe-trace-performance", "pg-observe-system-metrics",
        "pg-observe-operations-overview", "pg-observe-database-health", "pg-observe-error-analysis",
        "pg-observe-user-activity", "pg-observe-compliance-audit", "pg-observe-cache-performance"])
    titles = {uid: {p["title"] for p in b["panels"]} for uid, b in boards.items()}
    assert {"Error rate over time", "Top 10 error fingerprints", "Error distribution by environment",
            "Recent errors", "Error resolution status"} <= titles["pg-observe-error-monitoring"]
    assert {"Request rate", "Slowest operations", "Trace status distribution",
            "Database query duration"} <= titles["pg-observe-trace-performance"]
    assert {"Recent audit events", "Events by type", "Admin actions", "Permission changes", "Data access patterns",
            "Failed access attempts", "Compliance status", "Audit event lag"} == titles["pg-observe-compliance-audit"]
    assert {"Overall hit rate", "Hit rate over time", "Hit rate by namespace", "Cache size trends",
            "Memory usage"} <= titles["pg-observe-cache-performance"]


def test_datasource_uid_is_used_everywhere() -> None:
    text = json.dumps(grafana.dashboards("my-pg"))
    assert '"uid": "pg_observe"' not in text
    refs = re.findall(r'\{"type": "grafana-postgresql-datasource", "uid": "([^"]*)"\}', text)
    assert refs and set(refs) == {"my-pg"}


def _parse_yaml(text: str) -> Any:
    """The YAML subset export writes: block mappings and lists, scalars quoted as JSON, numbers, booleans."""
    lines = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]

    def scalar(token: str) -> Any:
        if token.startswith('"'):
            return json.loads(token)
        if token in ("true", "false"):
            return token == "true"
        return int(token)

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                lines[i] = (indent + 2, lines[i][1][2:])
                item, i = block(i, indent + 2)
                items.append(item)
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent and not lines[i][1].startswith("- "):
            key, _, rest = lines[i][1].partition(":")
            assert re.fullmatch(r"[A-Za-z_]+", key), key
            if rest.strip():
                mapping[key], i = scalar(rest.strip()), i + 1
            else:
                mapping[key], i = block(i + 1, lines[i + 1][0])
        return mapping, i

    parsed, end = block(0, 0)
    assert end == len(lines), f"unparsed YAML from line {end}"
    return parsed


def test_export_writes_grafana_files_deterministically(tmp_path: Any) -> None:
    messages: list[str] = []
    written = grafana.export(tmp_path, progress=messages.append)
    assert len(written) == 11 and len(messages) == 11
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names[-2:] == ["provisioning/dashboards/pg_observe.yaml", "provisioning/datasources/pg_observe.yaml"]
    first = {p: p.read_bytes() for p in written}
    for path in written:
        if path.suffix == ".json":
            board = json.loads(path.read_text())
            assert path.name == f"{board['uid']}.json" and board["schemaVersion"] == 39
            assert path.read_text() == json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert grafana.export(tmp_path) == written
    assert {p: p.read_bytes() for p in written} == first, "a second export changed a file"

    datasource = _parse_yaml((tmp_path / "provisioning/datasources/pg_observe.yaml").read_text())
    (source,) = datasource["datasources"]
    assert datasource["apiVersion"] == 1
    assert source["type"] == "postgres" and source["uid"] == "pg_observe" and source["name"] == "pg_observe PostgreSQL"
    assert source["user"] == "$__env{PG_OBSERVE_GRAFANA_USER}"
    assert source["secureJsonData"]["password"] == "$__env{PG_OBSERVE_GRAFANA_PASSWORD}"
    assert source["jsonData"]["database"] == "$__env{PG_OBSERVE_GRAFANA_DATABASE}"
    provider = _parse_yaml((tmp_path / "provisioning/dashboards/pg_observe.yaml").read_text())
    (files,) = provider["providers"]
    assert files["type"] == "file" and files["options"]["path"] == str(tmp_path / "dashboards")
    try:
        import yaml  # PyYAML, where installed, agrees with the small parser
    except ImportError:
        pass
    else:
        assert yaml.safe_load((tmp_path / "provisioning/datasources/pg_observe.yaml").read_text()) == datasource
        assert yaml.safe_load((tmp_path / "provisioning/dashboards/pg_observe.yaml").read_text()) == provider


def test_export_quotes_names_in_yaml(tmp_path: Any) -> None:
    name = 'pg "observe": #1 \\ ü'
    grafana.export(tmp_path, datasource_uid="uid-1", datasource_name=name)
    source = _parse_yaml((tmp_path / "provisioning/datasources/pg_observe.yaml").read_text())["datasources"][0]
    assert source["name"] == name and source["uid"] == "uid-1"
    board = json.loads((tmp_path / "dashboards/pg-observe-error-monitoring.json").read_text())
    assert board["panels"][0]["datasource"] == {"type": "grafana-postgresql-datasource", "uid": "uid-1"}
