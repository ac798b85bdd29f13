"""Grafana dashboards for pg_observe, generated from this one template module.

Each panel is one short call of a ``monitoring.dashboard_*`` function or one of the
database-health views (sql/420_dashboards.sql, sql/400_operations.sql), so that the SQL lives
in the extension, versioned and tested, and the dashboards stay thin. :func:`export` writes
the dashboards as Grafana JSON together with the provisioning files of the data source and
the dashboards; ``docs/grafana.md`` describes what each dashboard shows.

Variables: ``$environment`` and ``$service``, each with "All" (the cache dashboard has
``$namespace`` instead: the cache has namespaces, not environments or services). Panels pass
them as ``monitoring.dashboard_variable('${environment:percentencode}')``: percent-encoding
lets only ``[A-Za-z0-9-_.~%]`` into the SQL text whatever the value and the Grafana version,
and the custom "All" value ``__all`` decodes to NULL (no filter).

To add a dashboard, write a function returning its :func:`dashboard` and append it to
``_DASHBOARDS``.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

DATASOURCE_TYPE = "grafana-postgresql-datasource"
SCHEMA_VERSION = 39
GRID_WIDTH = 24

_ENVIRONMENT = "monitoring.dashboard_variable('${environment:percentencode}')"
_SERVICE = "monitoring.dashboard_variable('${service:percentencode}')"
_NAMESPACE = "monitoring.dashboard_variable('${namespace:percentencode}')"
_ALL_VALUE = "__all"

# Every panel, query and variable names this data source; dashboards() sets the uid asked for.
_DATASOURCE: dict[str, str] = {"type": DATASOURCE_TYPE, "uid": "pg_observe"}


def _literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


def call(function: str, *, columns: str = "*", time_range: bool = True, filters: bool = True,
         namespace: bool = False, bucket: bool | str = False, extra: Sequence[str | int] = ()) -> str:
    """The SQL of a panel: ``SELECT columns FROM monitoring.function(args)``.

    Arguments in the functions' order: the time range ($__timeFrom(), $__timeTo()), the
    variables ($environment and $service; with ``namespace``, $namespace instead), the bucket
    width (True: Grafana's $__interval; a string: that interval), then ``extra`` as SQL literals."""
    args: list[str] = []
    if time_range:
        args += ["$__timeFrom()", "$__timeTo()"]
    if namespace:
        args.append(_NAMESPACE)
    elif filters:
        args += [_ENVIRONMENT, _SERVICE]
    if bucket:
        args.append(_literal("$__interval" if bucket is True else bucket))
    args += [_literal(value) for value in extra]
    return f"SELECT {columns} FROM monitoring.{function}({', '.join(args)})"


def _target(sql: str, fmt: str, ref_id: str = "A") -> dict[str, Any]:
    return {"refId": ref_id, "datasource": dict(_DATASOURCE), "editorMode": "code", "format": fmt,
            "rawQuery": True, "rawSql": sql}


def _panel(kind: str, title: str, description: str, sqls: Sequence[str], fmt: str, width: int, height: int,
           unit: str | None = None, **extra: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if unit:
        defaults["unit"] = unit
    panel: dict[str, Any] = {
        "type": kind, "title": title, "description": description, "datasource": dict(_DATASOURCE),
        "gridPos": {"w": width, "h": height},
        "targets": [_target(sql, fmt, chr(ord("A") + i)) for i, sql in enumerate(sqls)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
    }
    for key, value in extra.items():
        if key == "custom":
            defaults["custom"] = value
        elif key in ("min", "max", "thresholds", "displayName", "decimals"):
            defaults[key] = value
        else:
            panel[key] = value
    return panel


def timeseries_panel(title: str, description: str, *sqls: str, unit: str = "short", width: int = 12,
                     height: int = 8, stacked_bars: bool = False) -> dict[str, Any]:
    """A time series panel: each query returns ``time`` first, then numeric columns."""
    custom: dict[str, Any] = {"drawStyle": "bars" if stacked_bars else "line", "spanNulls": False,
                              "fillOpacity": 80 if stacked_bars else 10, "showPoints": "never"}
    if stacked_bars:
        custom["stacking"] = {"group": "A", "mode": "normal"}
    return _panel("timeseries", title, description, sqls, "time_series", width, height, unit, custom=custom,
                  options={"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                           "tooltip": {"mode": "multi", "sort": "none"}})


def heatmap_panel(title: str, description: str, sql: str, *, unit: str = "ms", width: int = 12,
                  height: int = 8) -> dict[str, Any]:
    """A heatmap of pre-bucketed counts: ``time``, then one column per bucket named by its upper bound."""
    return _panel("heatmap", title, description, [sql], "time_series", width, height,
                  options={"calculate": False, "rowsFrame": {"layout": "le"}, "yAxis": {"unit": unit},
                           "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
                           "tooltip": {"show": True, "yHistogram": True}, "legend": {"show": True}})


def _columns_transform(columns: dict[str, str]) -> list[dict[str, Any]]:
    # The organize transformation declares the query's columns, their order and their headers.
    return [{"id": "organize", "options": {
        "excludeByName": {}, "indexByName": {name: i for i, name in enumerate(columns)},
        "renameByName": dict(columns)}}]


def table_panel(title: str, description: str, sql: str, columns: dict[str, str], *, width: int = 12,
                height: int = 8) -> dict[str, Any]:
    """A table: ``columns`` maps each column the query returns, in order, to its header."""
    return _panel("table", title, description, [sql], "table", width, height,
                  transformations=_columns_transform(columns),
                  options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}})


def chart_panel(kind: str, title: str, description: str, sql: str, columns: dict[str, str], *,
                unit: str = "short", width: int = 8, height: int = 8) -> dict[str, Any]:
    """A pie chart or bar chart of a table: a label column, then numbers."""
    if kind == "piechart":
        options: dict[str, Any] = {"pieType": "pie", "reduceOptions": {"values": True, "calcs": [], "fields": ""},
                                   "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                              "values": ["value"]}}
    elif kind == "barchart":
        options = {"orientation": "horizontal", "xField": next(iter(columns.values())), "showValue": "auto",
                   "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
    else:
        raise ValueError(f"not a chart panel: {kind}")
    return _panel(kind, title, description, [sql], "table", width, height, unit,
                  transformations=_columns_transform(columns), options=options)


def stat_panel(title: str, description: str, sql: str, *, kind: str = "stat", unit: str = "short", width: int = 6,
               height: int = 6, thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
               minimum: float | None = None, maximum: float | None = None) -> dict[str, Any]:
    """A stat, gauge or bar gauge panel: the query returns one row of numbers, one per field shown."""
    if kind not in ("stat", "gauge", "bargauge"):
        raise ValueError(f"not a single-row panel: {kind}")
    extra: dict[str, Any] = {"thresholds": {"mode": "absolute", "steps": [
        {"color": color, "value": value} for value, color in thresholds]}}
    if minimum is not None:
        extra["min"] = minimum
    if maximum is not None:
        extra["max"] = maximum
    reduce = {"values": False, "calcs": ["lastNotNull"], "fields": ""}
    options: dict[str, Any] = {"reduceOptions": reduce, "orientation": "auto", "textMode": "auto",
                               "colorMode": "value", "graphMode": "none"}
    if kind == "gauge":
        options = {"reduceOptions": reduce, "showThresholdLabels": False, "showThresholdMarkers": True}
    elif kind == "bargauge":
        options = {"reduceOptions": reduce, "orientation": "horizontal", "displayMode": "gradient",
                   "showUnfilled": True}
    return _panel(kind, title, description, [sql], "table", width, height, unit, options=options, **extra)


def _variable(name: str, label: str, function: str) -> dict[str, Any]:
    query = f"SELECT {name} FROM monitoring.{function}()"
    return {"name": name, "label": label, "type": "query", "datasource": dict(_DATASOURCE),
            "query": query, "definition": query, "refresh": 1, "sort": 1, "regex": "", "hide": 0,
            "includeAll": True, "allValue": _ALL_VALUE, "multi": False, "options": [],
            "current": {"selected": True, "text": "All", "value": "$__all"}}


def variables() -> list[dict[str, Any]]:
    """The ``$environment`` and ``$service`` variables, each with "All" (the value ``__all``)."""
    return [_variable("environment", "Environment", "dashboard_environments"),
            _variable("service", "Service", "dashboard_services")]


def cache_variables() -> list[dict[str, Any]]:
    """The cache dashboard's ``$namespace`` variable, with "All" (the value ``__all``)."""
    return [_variable("namespace", "Namespace", "dashboard_cache_namespaces")]


def dashboard(uid: str, title: str, description: str, rows: Sequence[Sequence[dict[str, Any]]],
              *, time_from: str = "now-6h", template: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A dashboard: ``rows`` of panels laid out left to right (widths add up to 24 at most);
    ``template``: its variables (default: :func:`variables`)."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in rows:
        x = 0
        height = max(p["gridPos"]["h"] for p in row)
        for p in row:
            if x + p["gridPos"]["w"] > GRID_WIDTH:
                raise ValueError(f"{uid}: row of {[q['title'] for q in row]} is wider than {GRID_WIDTH}")
            p["gridPos"] = {"x": x, "y": y, "w": p["gridPos"]["w"], "h": p["gridPos"]["h"]}
            p["id"] = len(panels) + 1
            panels.append(p)
            x += p["gridPos"]["w"]
        y += height
    return {
        "uid": uid, "title": title, "description": description, "tags": ["pg_observe"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True, "graphTooltip": 1,
        "timezone": "browser", "refresh": "1m", "time": {"from": time_from, "to": "now"},
        "timepicker": {}, "fiscalYearStartMonth": 0, "liveNow": False,
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["pg_observe"], "asDropdown": True, "title": "pg_observe",
                   "includeVars": True, "keepTime": True}],
        "templating": {"list": list(template) if template is not None else variables()},
        "panels": panels,
    }


# ---------------------------------------------------------------------------------------
# The dashboards. Seed 000's three, then seed 004's.

_ERROR_TABLE = {"occurred_at": "Time", "level": "Level", "environment": "Environment", "service": "Service",
                "exception_type": "Type", "message": "Message", "endpoint": "Endpoint", "user_key": "User",
                "fingerprint": "Fingerprint", "status": "Status", "trace_id": "Trace"}
_TOP_ERRORS = {"fingerprint": "Fingerprint", "error_type": "Type", "title": "Title", "status": "Status",
               "occurrences": "Occurrences", "affected_users": "Users", "first_seen": "First in range",
               "last_seen": "Last seen", "assignee": "Assignee"}
_OPERATIONS = {"service": "Service", "operation_name": "Operation", "requests": "Requests", "failed": "Failed",
               "error_rate_pct": "Error %", "p50_ms": "p50 ms", "p95_ms": "p95 ms", "p99_ms": "p99 ms",
               "max_ms": "Max ms"}
_LATENCY = ("Request duration percentiles",
            "p50, p95 and p99 of request duration (server, consumer and root spans) per interval.")


def _error_rate(title: str = "Error rate") -> dict[str, Any]:
    return timeseries_panel(
        title, "Error occurrences per interval, with the distinct issues and users they hit.",
        call("dashboard_error_rate", bucket=True))


def _breakdown(by: str, title: str, kind: str = "piechart", width: int = 8) -> dict[str, Any]:
    # a pie shows one number per slice; bars may stand side by side
    columns = {"key": by.capitalize(), "occurrences": "Occurrences"}
    if kind == "barchart":
        columns["affected_users"] = "Users"
    return chart_panel(kind, title, f"Errors in the time range by {by}" + (": occurrences and users hit."
                                                                          if kind == "barchart" else "."),
                       call("dashboard_error_breakdown", columns=", ".join(columns), extra=(by, 10)), columns,
                       width=width)


def _error_monitoring() -> dict[str, Any]:
    return dashboard("pg-observe-error-monitoring", "pg_observe: Error monitoring",
                     "Seed 000's error monitoring: how many errors, which issues, where, and their status.", [
        [_error_rate("Error rate over time"),
         table_panel("Top 10 error fingerprints", "The issues with the most occurrences in the time range.",
                     call("dashboard_top_errors", extra=(10,)), _TOP_ERRORS)],
        [_breakdown("environment", "Error distribution by environment"),
         chart_panel("piechart", "Error resolution status",
                     "Issues that occurred in the time range by their current status.",
                     call("dashboard_issue_status"), {"status": "Status", "issues": "Issues"}),
         _breakdown("level", "Errors by level")],
        [table_panel("Recent errors", "The latest 50 error occurrences (message cut to 300 characters).",
                     call("dashboard_recent_errors", extra=(50,)), _ERROR_TABLE, width=24, height=10)],
    ])


def _trace_performance() -> dict[str, Any]:
    return dashboard("pg-observe-trace-performance", "pg_observe: Trace performance",
                     "Seed 000's trace performance: request rate, latency, slow operations, span status, "
                     "database calls.", [
        [timeseries_panel("Request rate", "Requests (server, consumer and root spans) per second, and failed ones.",
                          call("dashboard_requests", columns='"time", requests_per_second, failed_per_second',
                               bucket=True), unit="reqps"),
         timeseries_panel(*_LATENCY, call("dashboard_latency", bucket=True), unit="ms")],
        [table_panel("Slowest operations", "Operations by p99 duration of their requests in the time range.",
                     call("dashboard_operations", extra=("p99_ms", 10)), _OPERATIONS, width=16),
         chart_panel("piechart", "Trace status distribution", "Spans of the time range by status.",
                     call("dashboard_span_status"), {"status": "Status", "spans": "Spans"})],
        [timeseries_panel("Database query duration",
                          "p50, p95 and p99 duration of database calls (spans with the db.system attribute).",
                          call("dashboard_db_queries", columns='"time", p50_ms, p95_ms, p99_ms', bucket=True),
                          unit="ms"),
         heatmap_panel("Request duration heatmap", "Requests per interval and duration class (ms).",
                       call("dashboard_request_heatmap", bucket=True))],
    ])


def _gauge_metric(metric: str, alias: str) -> str:
    return call("dashboard_metric_gauge", columns=f'"time", value AS {alias}', bucket=True,
                extra=(metric,))


def _pool_connections(title: str) -> dict[str, Any]:
    return timeseries_panel(
        title, "The application's pool gauges db.pool.connections.active and .idle (seed 000's names), "
        "summed over instances.",
        _gauge_metric("db.pool.connections.active", "active"), _gauge_metric("db.pool.connections.idle", "idle"))


def _buffer_cache_gauge(width: int = 6, height: int = 8) -> dict[str, Any]:
    return stat_panel("PostgreSQL buffer cache hit rate",
                      "Share of this database's block reads served from shared buffers since the statistics reset.",
                      "SELECT hit_ratio_pct FROM monitoring.cache_hit_ratio WHERE scope = 'database'", kind="gauge",
                      unit="percent", minimum=0, maximum=100, width=width, height=height,
                      thresholds=((None, "red"), (90, "orange"), (95, "green")))


def _system_metrics() -> dict[str, Any]:
    return dashboard("pg-observe-system-metrics", "pg_observe: System metrics",
                     "Seed 000's system metrics: pool connections, cache hit rate, GraphQL operation rate, "
                     "execution time (application metrics from the per-minute rollups).", [
        [_pool_connections("Database pool connections (active/idle)"),
         stat_panel("PostgreSQL connections (this database)", "Client connections of this database by state, now.",
                    "SELECT active, idle, idle_in_transaction FROM monitoring.connections"
                    " WHERE database = current_database()", width=6, height=8),
         _buffer_cache_gauge()],
        [timeseries_panel("GraphQL operation rate", "The counter graphql.requests.total per second.",
                          call("dashboard_metric_rate", bucket=True, extra=("graphql.requests.total",)),
                          unit="reqps"),
         timeseries_panel("Query execution time",
                          "p50, p95 and p99 of the histogram graphql.request.duration_ms (weighted over minutes).",
                          call("dashboard_metric_histogram", columns='"time", p50, p95, p99', bucket=True,
                               extra=("graphql.request.duration_ms",)), unit="ms")],
    ])


def _operations_overview() -> dict[str, Any]:
    return dashboard("pg-observe-operations-overview", "pg_observe: Operations overview",
                     "Seed 004's operations overview: traffic, latency, errors, top operations, database load.", [
        [timeseries_panel("Request rate", "Requests (server, consumer and root spans) per second.",
                          call("dashboard_requests", columns='"time", requests_per_second', bucket=True),
                          unit="reqps", width=8),
         timeseries_panel(*_LATENCY, call("dashboard_latency", bucket=True), unit="ms", width=8),
         timeseries_panel("Error rate", "Failed requests (span status error) in % of requests.",
                          call("dashboard_requests", columns='"time", error_rate_pct', bucket=True),
                          unit="percent", width=8)],
        [table_panel("Top 10 operations", "Operations with the most requests in the time range.",
                     call("dashboard_operations", extra=("requests", 10)), _OPERATIONS, width=16),
         chart_panel("piechart", "Operation type breakdown",
                     "Requests by GraphQL operation type (span attribute graphql.operation.type), else span kind.",
                     call("dashboard_operation_types"), {"operation_type": "Type", "requests": "Requests"})],
        [timeseries_panel("Database queries/sec", "Database calls (spans with db.system) per second, and failed ones.",
                          call("dashboard_db_queries", columns='"time", queries_per_second, failed_per_second',
                               bucket=True), unit="ops", width=16),
         stat_panel("Active connections", "Client connections of this database running a statement now.",
                    "SELECT active FROM monitoring.connections WHERE database = current_database()",
                    width=8, height=8)],
    ])


def _database_health() -> dict[str, Any]:
    activity = "monitoring.dashboard_database_activity()"
    return dashboard("pg-observe-database-health", "pg_observe: Database health",
                     "Seed 004's database health from PostgreSQL's statistics (seed 003's views) and pg_observe's "
                     "own checks. Statistics views hold totals since their reset, not history: those panels show "
                     "now.", [
        [stat_panel("Connection utilization", "Client connections of the server in % of max_connections.",
                    "SELECT max(server_usage_pct) AS used_pct FROM monitoring.connections", kind="gauge",
                    unit="percent", minimum=0, maximum=100, thresholds=((None, "green"), (75, "orange"), (90, "red"))),
         stat_panel("Active vs idle connections", "Client connections of this database by state, now.",
                    "SELECT active, idle, idle_in_transaction, waiting_on_locks FROM monitoring.connections"
                    " WHERE database = current_database()", width=8),
         stat_panel("Slow query count", "Statements running for more than a second now.",
                    "SELECT count(*) AS slow_queries FROM monitoring.slow_queries", width=3,
                    thresholds=((None, "green"), (1, "orange"), (5, "red"))),
         stat_panel("Rollback rate", "Rolled back transactions in % of all since the statistics reset.",
                    f"SELECT rollback_pct FROM {activity}", unit="percent", width=3,
                    thresholds=((None, "green"), (5, "orange"), (20, "red"))),
         stat_panel("Database size", "This database's size, and its growth per hour over the last day "
                    "(sampled by run_maintenance()).",
                    "SELECT size_bytes, growth_bytes_per_hour FROM monitoring.database_size", unit="bytes", width=4)],
        [_pool_connections("Application pool: active vs idle connections"),
         timeseries_panel("Query errors", "Failed database calls (spans with db.system and status error) per second.",
                          call("dashboard_db_queries", columns='"time", failed_per_second', bucket=True), unit="ops")],
        [table_panel("Slow queries running now", "Statements running for more than a second, longest first.",
                     "SELECT pid, username, application_name, duration_seconds, severity, wait_event, query"
                     " FROM monitoring.slow_queries ORDER BY duration_seconds DESC LIMIT 10",
                     {"pid": "PID", "username": "User", "application_name": "Application",
                      "duration_seconds": "Running (s)", "severity": "Severity", "wait_event": "Waiting on",
                      "query": "Query"}, width=24, height=7)],
        [table_panel("Top 10 slow queries", "Statements by total execution time (pg_stat_statements; where it is "
                     "missing, one row says how to enable it).",
                     "SELECT query, calls, mean_exec_ms, max_exec_ms, total_exec_ms, note"
                     " FROM monitoring.query_performance ORDER BY total_exec_ms DESC NULLS LAST LIMIT 10",
                     {"query": "Query", "calls": "Calls", "mean_exec_ms": "Mean ms", "max_exec_ms": "Max ms",
                      "total_exec_ms": "Total ms", "note": "Note"}, width=24)],
        [stat_panel("Query execution breakdown", "Rows read and written in this database since the statistics reset.",
                    "SELECT rows_returned, rows_fetched, rows_inserted, rows_updated, rows_deleted"
                    f" FROM {activity}", kind="bargauge", width=8, height=8),
         stat_panel("Connection creation rate", "New sessions per minute, averaged since the statistics reset.",
                    f"SELECT sessions_per_minute FROM {activity}", width=4, height=8),
         stat_panel("Deadlocks and conflicts", "Deadlocks and recovery conflicts since the statistics reset.",
                    f"SELECT deadlocks, conflicts FROM {activity}", width=4, height=8,
                    thresholds=((None, "green"), (1, "orange"))),
         _buffer_cache_gauge(width=8, height=8)],
        [table_panel("Tables by dead tuples", "Tables with the most dead tuples, and when autovacuum last ran.",
                     "SELECT schema_name, table_name, live_tuples, dead_tuples, dead_tuple_ratio, last_autovacuum,"
                     " bloat_status FROM monitoring.table_stats ORDER BY dead_tuples DESC LIMIT 10",
                     {"schema_name": "Schema", "table_name": "Table", "live_tuples": "Live", "dead_tuples": "Dead",
                      "dead_tuple_ratio": "Dead %", "last_autovacuum": "Last autovacuum", "bloat_status": "Bloat"}),
         table_panel("Least used indexes", "Indexes that enforce no constraint, fewest scans first.",
                     "SELECT table_name, index_name, index_scans, index_size, usage_category"
                     " FROM monitoring.index_usage WHERE NOT enforces_constraint"
                     " ORDER BY index_scans, index_size_bytes DESC LIMIT 10",
                     {"table_name": "Table", "index_name": "Index", "index_scans": "Scans", "index_size": "Size",
                      "usage_category": "Usage"})],
        [table_panel("pg_observe health", "pg_observe's own checks: partitions, maintenance, notifications, "
                     "dispatcher, database growth.", "SELECT check_name, status, detail FROM monitoring.health()",
                     {"check_name": "Check", "status": "Status", "detail": "Detail"}),
         table_panel("Partitions", "pg_observe's time-series tables: partitions, made ahead, rows in the default "
                     "partition.", "SELECT parent_table, partitions, partitions_ahead, default_partition_rows,"
                     " status FROM monitoring.partition_health",
                     {"parent_table": "Table", "partitions": "Partitions", "partitions_ahead": "Ahead",
                      "default_partition_rows": "In default", "status": "Status"})],
    ])


def _error_analysis() -> dict[str, Any]:
    return dashboard("pg-observe-error-analysis", "pg_observe: Error analysis",
                     "Seed 004's error analysis: rates, top issues, breakdowns, user impact and resolution.", [
        [_error_rate("Error rate over time"),
         table_panel("Top 10 error fingerprints", "The issues with the most occurrences in the time range.",
                     call("dashboard_top_errors", extra=(10,)), _TOP_ERRORS)],
        [_breakdown("type", "Errors by type", "barchart"), _breakdown("endpoint", "Errors by endpoint", "barchart"),
         _breakdown("level", "Errors by severity")],
        [table_panel("Recent errors", "The latest 50 error occurrences.",
                     call("dashboard_recent_errors", extra=(50,)), _ERROR_TABLE, width=24, height=10)],
        [timeseries_panel("User impact (affected users)", "Distinct users hit by errors per interval.",
                          call("dashboard_error_rate", columns='"time", affected_users', bucket=True), width=9),
         stat_panel("Error resolution time", "Issues resolved in the time range and how long they were open "
                    "(median and 90th percentile, hours).", call("dashboard_resolution_time"), width=6, height=8),
         timeseries_panel("Error trends (hourly)", "Errors and distinct issues per hour.",
                          call("dashboard_error_rate", columns='"time", occurrences, issues', bucket="1 hour"),
                          width=9)],
        [timeseries_panel("First vs repeat errors", "Errors of issues first seen in the time range against "
                          "errors of issues seen before it.", call("dashboard_first_vs_repeat", bucket=True),
                          width=24, stacked_bars=True)],
    ])


def _user_activity() -> dict[str, Any]:
    users = {"user_id": "User", "tenant": "Tenant", "requests": "Requests", "operations": "Operations",
             "failed": "Failed", "error_rate_pct": "Error %", "last_seen": "Last seen"}
    return dashboard("pg-observe-user-activity", "pg_observe: User activity",
                     "Seed 004's user activity: users from span attributes enduser.id / user.id and error user "
                     "info, tenants from tenant.id / tenant.", [
        [chart_panel("barchart", "Active users per tenant",
                     "Distinct users with requests in the time range, per tenant.",
                     call("dashboard_tenants", columns="tenant, active_users", extra=(20,)),
                     {"tenant": "Tenant", "active_users": "Active users"}, width=12),
         timeseries_panel("New users trend", "Users first seen (no request in the 7 days before the time range) "
                          "and active users per interval.", call("dashboard_new_users", bucket=True))],
        [table_panel("Requests per user", "Users by requests in the time range.",
                     call("dashboard_users", extra=(20,)), users, width=16),
         chart_panel("barchart", "Top users by operation count", "Users by distinct operations they called.",
                     call("dashboard_users", columns="user_id, operations", extra=(10,)),
                     {"user_id": "User", "operations": "Operations"})],
        [heatmap_panel("Query patterns (heatmap)", "Requests per interval and duration class (ms).",
                       call("dashboard_request_heatmap", bucket=True)),
         table_panel("User error rates", "Users hit by errors: errors, distinct issues, latest.",
                     call("dashboard_user_errors", extra=(20,)),
                     {"user_key": "User", "tenant": "Tenant", "errors": "Errors", "issues": "Issues",
                      "last_error": "Latest error"})],
        [table_panel("Tenant comparison", "Tenants side by side.", call("dashboard_tenants", extra=(20,)),
                     {"tenant": "Tenant", "active_users": "Users", "requests": "Requests", "failed": "Failed",
                      "error_rate_pct": "Error %", "p95_ms": "p95 ms", "errors": "Errors"}, width=24)],
    ])


def _compliance_audit() -> dict[str, Any]:
    audit = {"changed_at": "Time", "entity_name": "Entity", "entity_id": "Id", "change_type": "Change",
             "changed_columns": "Columns", "changed_by": "Role", "application_user": "User",
             "table_name": "Table", "trace_id": "Trace"}
    return dashboard("pg-observe-compliance-audit", "pg_observe: Compliance & audit",
                     "Seed 004's compliance and audit: the entity change log, workflow actions on issues, refused "
                     "access. The change log has no environment or service: its panels show every change.", [
        [table_panel("Recent audit events", "The latest 100 changes of tracked tables (row data left out).",
                     call("dashboard_audit_events", filters=False, extra=(100,)), audit, width=24, height=9)],
        [timeseries_panel("Events by type", "Changes per interval by type.",
                          call("dashboard_audit_event_types", filters=False, bucket=True), stacked_bars=True),
         timeseries_panel("Failed access attempts", "Errors that record refused access: SQLSTATE 42501/28000/28P01, "
                          "permission or authentication exception types, HTTP 401/403.",
                          call("dashboard_failed_access", bucket=True))],
        [table_panel("Admin actions", "Workflow actions taken on issues (resolve, ignore, assign, ...) and by whom.",
                     call("dashboard_admin_actions", extra=(100,)),
                     {"created_at": "Time", "actor": "Actor", "action": "Action", "fingerprint": "Fingerprint",
                      "title": "Issue", "details": "Details"}),
         table_panel("Permission changes", "Changes to tracked tables whose entity or table name speaks of roles, "
                     "permissions, privileges, grants, ACLs or memberships.",
                     call("dashboard_permission_changes", filters=False, extra=(100,)),
                     {"changed_at": "Time", "entity_name": "Entity", "entity_id": "Id", "change_type": "Change",
                      "changed_columns": "Columns", "changed_by": "Role", "application_user": "User"})],
        [table_panel("Data access patterns", "Changes per actor (application user, else role) and entity: the "
                     "change log records writes, not reads.", call("dashboard_changes_by_actor", filters=False,
                                                                   extra=(20,)),
                     {"actor": "Actor", "database_role": "Role", "entity_name": "Entity", "inserts": "Inserts",
                      "updates": "Updates", "deletes": "Deletes", "last_change": "Last change"}),
         table_panel("Compliance status", "Audit trail checks: tables tracked, change log retention and partitions.",
                     "SELECT * FROM monitoring.dashboard_compliance_status()",
                     {"check_name": "Check", "status": "Status", "detail": "Detail"}, width=8),
         stat_panel("Audit event lag", "Seconds since the newest change, and changes in the last hour.",
                    "SELECT * FROM monitoring.dashboard_audit_lag()", unit="s", width=4, height=8)],
    ])


def _cache_performance() -> dict[str, Any]:
    def cache(function: str, **kwargs: Any) -> str:
        return call(function, filters=False, namespace=True, **kwargs)

    def summary(columns: str) -> str:
        return cache("dashboard_cache_summary", columns=columns)

    return dashboard("pg-observe-cache-performance", "pg_observe: Cache performance",
                     "Seed 004's cache performance, for pg_observe's PostgreSQL cache: hit rate, operations, "
                     "size, from the counters run_maintenance() samples (every 5 minutes with pg_cron). "
                     "Filtered by $namespace; the cache has no environments or services.", [
        [stat_panel("Overall hit rate", "Reads that found a live entry, in % of reads in the time range.",
                    summary("hit_ratio_pct"), kind="gauge", unit="percent", minimum=0, maximum=100,
                    thresholds=((None, "red"), (50, "orange"), (80, "green"))),
         stat_panel("Reads", "Cache hits and misses in the time range.", summary("hits, misses")),
         stat_panel("Entries", "Entries at the last sample, and those expired but not yet deleted by "
                    "expire_cache().", summary("entries, expired_pending")),
         stat_panel("Memory usage", "Keys and values as stored (after compression) at the last sample.",
                    summary("bytes"), unit="bytes", width=3),
         stat_panel("Last sample", "Seconds since the last sample in the time range: maintenance runs?",
                    summary("seconds_since_sample"), unit="s", width=3,
                    thresholds=((None, "green"), (900, "orange"), (3600, "red")))],
        [timeseries_panel("Hit rate over time", "Hits in % of reads per interval.",
                          cache("dashboard_cache_activity", columns='"time", hit_ratio_pct', bucket=True),
                          unit="percent"),
         timeseries_panel("Cache operations", "Hits, misses, sets and evictions (expired entries deleted) per "
                          "second.", cache("dashboard_cache_activity", columns='"time", hits_per_second, '
                                           'misses_per_second, sets_per_second, evictions_per_second', bucket=True),
                          unit="ops")],
        [table_panel("Hit rate by namespace", "Per namespace in the time range: reads, hit rate, sets, evictions; "
                     "entries and bytes at the last sample.",
                     cache("dashboard_cache_namespace_stats", extra=(20,)),
                     {"namespace": "Namespace", "hits": "Hits", "misses": "Misses", "hit_ratio_pct": "Hit %",
                      "sets": "Sets", "evictions": "Evictions", "entries": "Entries", "bytes": "Bytes"}, width=16),
         chart_panel("barchart", "Reads by namespace", "Hits and misses per namespace in the time range.",
                     cache("dashboard_cache_namespace_stats", columns="namespace, hits, misses", extra=(10,)),
                     {"namespace": "Namespace", "hits": "Hits", "misses": "Misses"})],
        [timeseries_panel("Cache size trends", "Entries, and expired entries not yet deleted.",
                          cache("dashboard_cache_size", columns='"time", entries, expired_pending', bucket=True)),
         timeseries_panel("Memory usage over time", "Bytes of keys and values stored.",
                          cache("dashboard_cache_size", columns='"time", bytes', bucket=True), unit="bytes")],
    ], template=cache_variables())


_DASHBOARDS: list[Callable[[], dict[str, Any]]] = [
    _error_monitoring, _trace_performance, _system_metrics,
    _operations_overview, _database_health, _error_analysis, _user_activity, _compliance_audit,
    _cache_performance,
]


def _with_datasource(value: Any, uid: str) -> Any:
    if isinstance(value, dict):
        if value.get("type") == DATASOURCE_TYPE and set(value) == {"type", "uid"}:
            return {"type": DATASOURCE_TYPE, "uid": uid}
        return {key: _with_datasource(item, uid) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_datasource(item, uid) for item in value]
    return value


def dashboards(datasource_uid: str = "pg_observe") -> list[dict[str, Any]]:
    """Every dashboard as Grafana JSON (a dict), its queries on the data source ``datasource_uid``."""
    return [_with_datasource(build(), datasource_uid) for build in _DASHBOARDS]


def _yaml(value: str) -> str:
    # A JSON string is a YAML double-quoted scalar.
    return json.dumps(value, ensure_ascii=False)


def datasource_yaml(datasource_uid: str = "pg_observe", datasource_name: str = "pg_observe PostgreSQL") -> str:
    """Grafana's provisioning file of the PostgreSQL data source; credentials come from the environment."""
    return "\n".join([
        "# Written by pg-observe dashboards export. Grafana reads the connection from its environment:",
        "#   PG_OBSERVE_GRAFANA_HOST (host:port), PG_OBSERVE_GRAFANA_DATABASE, PG_OBSERVE_GRAFANA_USER",
        "#   (a login granted observe_reader), PG_OBSERVE_GRAFANA_PASSWORD, PG_OBSERVE_GRAFANA_SSLMODE.",
        "apiVersion: 1",
        "datasources:",
        f"  - name: {_yaml(datasource_name)}",
        "    type: \"postgres\"",
        f"    uid: {_yaml(datasource_uid)}",
        "    access: \"proxy\"",
        "    url: \"$__env{PG_OBSERVE_GRAFANA_HOST}\"",
        "    user: \"$__env{PG_OBSERVE_GRAFANA_USER}\"",
        "    editable: false",
        "    jsonData:",
        "      database: \"$__env{PG_OBSERVE_GRAFANA_DATABASE}\"",
        "      sslmode: \"$__env{PG_OBSERVE_GRAFANA_SSLMODE}\"",
        "      postgresVersion: 1500",
        "      timescaledb: false",
        "      maxOpenConns: 10",
        "      maxIdleConns: 10",
        "      maxIdleConnsAuto: true",
        "      connMaxLifetime: 14400",
        "      timeInterval: \"1m\"",
        "    secureJsonData:",
        "      password: \"$__env{PG_OBSERVE_GRAFANA_PASSWORD}\"",
        "",
    ])


def dashboards_yaml(dashboards_path: str) -> str:
    """Grafana's provisioning file of a file provider reading the dashboards from ``dashboards_path``."""
    return "\n".join([
        "# Written by pg-observe dashboards export: the pg_observe dashboards, read from the files beside it.",
        "# Where Grafana sees them elsewhere (a container), change options.path.",
        "apiVersion: 1",
        "providers:",
        "  - name: \"pg_observe\"",
        "    orgId: 1",
        "    folder: \"pg_observe\"",
        "    folderUid: \"pg-observe\"",
        "    type: \"file\"",
        "    disableDeletion: false",
        "    allowUiUpdates: false",
        "    updateIntervalSeconds: 60",
        "    options:",
        f"      path: {_yaml(dashboards_path)}",
        "      foldersFromFilesStructure: false",
        "",
    ])


def _write(path: pathlib.Path, text: str, progress: Callable[[str], None] | None) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if progress:
        progress(f"wrote {path}")
    return path


def export(directory: str | os.PathLike[str], datasource_uid: str = "pg_observe",
           datasource_name: str = "pg_observe PostgreSQL",
           progress: Callable[[str], None] | None = None) -> list[pathlib.Path]:
    """Write ``DIR/dashboards/<uid>.json`` for every dashboard, and Grafana's provisioning files
    ``DIR/provisioning/datasources/pg_observe.yaml`` and ``DIR/provisioning/dashboards/pg_observe.yaml``.

    The same arguments give the same bytes (sorted keys, fixed uids). Returns the paths written."""
    root = pathlib.Path(directory).absolute()
    written = []
    for board in dashboards(datasource_uid):
        text = json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        written.append(_write(root / "dashboards" / f"{board['uid']}.json", text, progress))
    written.append(_write(root / "provisioning" / "datasources" / "pg_observe.yaml",
                          datasource_yaml(datasource_uid, datasource_name), progress))
    written.append(_write(root / "provisioning" / "dashboards" / "pg_observe.yaml",
                          dashboards_yaml(str(root / "dashboards")), progress))
    return written
