"""pg-observe, run as users run it: the installed console script in a subprocess, against a
real database."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psycopg
import pytest

CLI = str(pathlib.Path(sys.executable).with_name("pg-observe"))
SUBCOMMANDS = [["install"], ["migrate"], ["health"], ["issues"], ["exporter"], ["dashboards"],
               ["dashboards", "export"], ["worker"], ["otlp-receiver"]]


def run(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PG_OBSERVE"))}
    environment.update(env or {})
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, env=environment)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help_with_dsn(words: list[str]) -> None:
    result = run(*words, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: pg-observe {' '.join(words)}")
    assert "--dsn" in result.stdout


def test_health_exit_code_is_the_worst_status(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        statuses = [s for (s,) in conn.execute("SELECT status FROM monitoring.health()")]
    expected = 2 if "critical" in statuses else 1 if "warning" in statuses else 0
    result = run("health", "--dsn", dsn)
    assert result.returncode == expected, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == len(statuses)

    quiet = run("health", "-q", "--dsn", dsn)
    assert len(quiet.stdout.splitlines()) == len([s for s in statuses if s != "ok"])

    checks = json.loads(run("health", "--json", "--dsn", dsn).stdout)
    assert sorted(c["status"] for c in checks) == sorted(statuses)
    assert all(set(c) == {"check", "status", "detail"} for c in checks)


def test_health_is_critical_when_a_table_has_no_partition_ahead(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        future = [r[0] for r in conn.execute(
            """SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'monitoring.spans'::regclass AND NOT c.relname LIKE '%default'
                 AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz
                     > now()""")]
        assert future
        for table in future:
            conn.execute(f"DROP TABLE {table}")
    result = run("health", "--dsn", dsn)
    assert result.returncode == 2, result.stdout
    assert any(line.startswith("CRITICAL") and "spans" in line for line in result.stdout.splitlines()), result.stdout


def test_health_of_an_unreachable_database_is_critical() -> None:
    result = run("health", "--timeout", "3", "--dsn", f"host=127.0.0.1 port={free_port()} dbname=nothing")
    assert result.returncode == 2
    assert result.stdout.startswith("CRITICAL database")


@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_health_refuses_a_timeout_that_would_mean_none(timeout: str) -> None:
    result = run("health", "--timeout", timeout, "--dsn", "dbname=nothing")
    assert result.returncode == 2  # argparse's usage error
    assert "must be more than 0 seconds" in result.stderr


def test_issues_lists_groups_on_one_line_each(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(3):
            conn.execute("SELECT monitoring.capture_error(%s::jsonb)", (json.dumps({
                "exception_type": "ValueError", "message": "line one\nline two\twith tab", "environment": "prod",
                "stack_trace": f'File "app.py", line {i}, in handler'}),))
        conn.execute("SELECT monitoring.capture_error('{\"exception_type\": \"KeyError\", \"message\": \"k\"}')")
    result = run("issues", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["STATUS", "EVENTS", "USERS"]
    assert len(lines) == 3  # header, the ValueError group (3 events), the KeyError group
    assert lines[1].split()[:2] == ["unresolved", "3"] and "ValueError: line one" in lines[1]
    only_staging = run("issues", "--environment", "staging", "--dsn", dsn)
    assert only_staging.stdout.strip() == "no issues in the last 24 hours"
    bad = run("issues", "--since", "not an interval", "--dsn", dsn)
    assert bad.returncode == 1 and "invalid input syntax for type interval" in bad.stderr


def test_connection_settings_come_from_dsn_then_env_then_libpq(dsn: str) -> None:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    libpq = {"PGHOST": params["host"], "PGPORT": str(params["port"]), "PGUSER": params["user"],
             "PGDATABASE": params["dbname"]}
    assert run("issues", env=libpq).returncode == 0
    assert run("issues", env={"PG_OBSERVE_DSN": dsn}).returncode == 0
    # --dsn before or after the subcommand wins over both
    wrong = {"PG_OBSERVE_DSN": "host=127.0.0.1 port=1 dbname=nothing"}
    assert run("--dsn", dsn, "issues", env=wrong).returncode == 0
    assert run("issues", "--dsn", dsn, env=wrong).returncode == 0
    unreachable = run("issues", env=wrong)
    assert unreachable.returncode == 1 and "cannot connect" in unreachable.stderr


def test_install_and_migrate(admin_dsn: str) -> None:
    name = "pg_observe_cli_install"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
        releases = [r for (r,) in admin.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'pg_observe'"
            " ORDER BY string_to_array(version, '.')::int[]")]
    target = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    try:
        not_yet = run("migrate", "--dsn", target)
        assert not_yet.returncode == 1 and "not installed" in not_yet.stderr
        first = run("install", "--dsn", target)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == f"pg_observe {releases[-1]} installed"
        assert "creating extension" in first.stderr
        again = run("install", "--dsn", target)
        assert again.returncode == 0 and "already installed" in again.stdout
        assert "nothing to do" in run("migrate", "--dsn", target).stdout
        with psycopg.connect(target, autocommit=True) as conn:
            conn.execute("DROP EXTENSION pg_observe CASCADE")
            conn.execute("CREATE EXTENSION pg_observe VERSION %s" % psycopg.sql.quote(releases[-2]))
        update = run("migrate", "--dsn", target)
        assert update.returncode == 0, update.stderr
        assert f"updating pg_observe {releases[-2]} -> {releases[-1]}" in update.stderr
        assert update.stdout.strip() == f"pg_observe is at version {releases[-1]}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_exporter_serves_metrics_until_terminated(dsn: str) -> None:
    port = free_port()
    process = subprocess.Popen([CLI, "exporter", "--port", str(port), "--dsn", dsn],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    body = response.read().decode()
                    content_type = response.headers["Content-Type"]
                break
            except OSError:
                assert time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "no start"
                time.sleep(0.2)
        assert content_type.startswith("text/plain")
        assert "# TYPE pg_observe_" in body
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_dashboards_export_writes_files_with_progress(tmp_path: pathlib.Path) -> None:
    result = run("dashboards", "export", str(tmp_path / "grafana"))
    assert result.returncode == 0, result.stderr
    written = sorted(p for p in (tmp_path / "grafana").rglob("*") if p.is_file())
    assert result.stdout.strip() == f"{len(written)} files written under {tmp_path / 'grafana'}"
    assert len(result.stderr.splitlines()) >= len(written) - 2  # a line of progress per file, about
    dashboards = [json.loads(p.read_text()) for p in written if p.suffix == ".json"]
    assert len(dashboards) >= 8
    assert all(d["panels"] for d in dashboards)
