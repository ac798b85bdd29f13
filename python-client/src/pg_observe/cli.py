"""pg-observe: command-line entry point."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading

import psycopg
import psycopg.sql

EXIT_OK, EXIT_WARNING, EXIT_CRITICAL = 0, 1, 2
_STATUS_EXIT = {"ok": EXIT_OK, "warning": EXIT_WARNING, "critical": EXIT_CRITICAL}


def _dsn(args: argparse.Namespace) -> str:
    """--dsn, then $PG_OBSERVE_DSN; an empty string lets libpq read PGHOST, PGDATABASE, ..."""
    return getattr(args, "dsn", None) or os.environ.get("PG_OBSERVE_DSN", "")


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # also NaN; libpq and statement_timeout read 0 as "no limit"
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _installed_version(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_observe'").fetchone()
    return row[0] if row else None


def _cmd_install(args: argparse.Namespace) -> int:
    with psycopg.connect(_dsn(args), autocommit=True) as conn:
        before = _installed_version(conn)
        if before:
            print(f"pg_observe {before} is already installed (use 'pg-observe migrate' to update it)")
            return 0
        _progress("creating extension pg_observe and what it requires (pg_partman, plpython3u) ...")
        conn.execute("CREATE EXTENSION pg_observe CASCADE")
        print(f"pg_observe {_installed_version(conn)} installed")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    with psycopg.connect(_dsn(args), autocommit=True) as conn:
        before = _installed_version(conn)
        if before is None:
            print("pg_observe is not installed in this database: run 'pg-observe install'", file=sys.stderr)
            return 1
        target = args.to or conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'pg_observe'").fetchone()[0]
        if target == before:
            print(f"pg_observe is at version {before}, nothing to do")
            return 0
        _progress(f"updating pg_observe {before} -> {target} ...")
        conn.execute(psycopg.sql.SQL("ALTER EXTENSION pg_observe UPDATE TO {}").format(psycopg.sql.Literal(target)))
        print(f"pg_observe is at version {_installed_version(conn)}")
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    """One line per check; the exit code is the worst status (0 ok, 1 warning, 2 critical)."""
    try:
        with psycopg.connect(_dsn(args), autocommit=True, connect_timeout=max(1, round(args.timeout))) as conn:
            conn.execute(psycopg.sql.SQL("SET statement_timeout = {}").format(
                psycopg.sql.Literal(f"{int(args.timeout * 1000)}ms")))
            rows = conn.execute("SELECT check_name, status, detail FROM monitoring.health()").fetchall()
    except psycopg.Error as exc:
        rows = [("database", "critical", f"cannot run monitoring.health(): {str(exc).strip().splitlines()[0]}")]
    if args.json:
        print(json.dumps([{"check": c, "status": s, "detail": d} for c, s, d in rows], indent=2))
    else:
        width = max((len(c) for c, _, _ in rows), default=5)
        for check, status, detail in rows:
            if args.quiet and status == "ok":
                continue
            print(f"{status.upper():<8} {check:<{width}}  {detail or ''}")
    return max((_STATUS_EXIT.get(s, EXIT_CRITICAL) for _, s, _ in rows), default=EXIT_OK)


def _cmd_issues(args: argparse.Namespace) -> int:
    with psycopg.connect(_dsn(args), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, occurrences, affected_users, last_seen, title, fingerprint"
            " FROM monitoring.top_issues(%s::interval, %s, %s, %s)",
            (args.since, args.environment, args.limit, args.all),
        ).fetchall()
    if not rows:
        print(f"no issues in the last {args.since}")
        return 0
    print(f"{'STATUS':<10} {'EVENTS':>8} {'USERS':>6}  {'LAST SEEN (UTC)':<19}  TITLE")
    for status, occurrences, users, last_seen, title, _fingerprint in rows:
        when = last_seen.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        line = " ".join((title or "").split())  # a title may hold newlines or tabs
        print(f"{status:<10} {occurrences:>8} {users:>6}  {when:<19}  {line[:args.width]}")
    return 0


def _cmd_exporter(args: argparse.Namespace) -> int:
    from pg_observe.exporter import MetricsExporter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    exporter = MetricsExporter(_dsn(args), host=args.host, port=args.port)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: threading.Thread(target=exporter.shutdown, daemon=True).start())
    host, port = exporter.server_address[:2]
    logging.getLogger("pg_observe.exporter").info("serving monitoring.prometheus_metrics() on http://%s:%s/metrics",
                                                  host, port)
    exporter.serve_forever()
    return 0


def _cmd_dashboards_export(args: argparse.Namespace) -> int:
    from pg_observe.dashboards import export

    written = export(args.directory, datasource_uid=args.datasource_uid, progress=_progress)
    print(f"{len(written)} files written under {args.directory}")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from pg_observe.worker import NotificationWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = NotificationWorker(_dsn(args), interval=args.interval, max_messages=args.max_messages, name=args.name)
    if args.once:
        with psycopg.connect(_dsn(args), autocommit=True) as conn:
            worker.drain_errors_once(conn)
            worker.dispatch_once(conn)
        totals = worker.totals
        print(f"{totals.queued_errors} queued errors captured, {totals.sent} sent, {totals.failed} failed,"
              f" {totals.dead} dead")
        return 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: worker.stop())
    worker.run()
    return 0


def _cmd_otlp_receiver(args: argparse.Namespace) -> int:
    from pg_observe.otlp_receiver import PROTOBUF_AVAILABLE, OTLPReceiver

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("psycopg.pool").setLevel(logging.WARNING)  # its INFO lines are about pool growth
    receiver = OTLPReceiver(_dsn(args), host=args.host, port=args.port, max_body_bytes=args.max_body_bytes)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    receiver.start()
    logging.getLogger("pg_observe.otlp_receiver").info(
        "receiving OTLP/HTTP traces on %s (JSON%s)", receiver.url,
        ", protobuf" if PROTOBUF_AVAILABLE else "; protobuf needs opentelemetry-proto",
    )
    while not stopping.wait(1.0):
        pass
    receiver.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    # --dsn is accepted before or after the subcommand
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", default=argparse.SUPPRESS,
                        help="libpq connection string (default: $PG_OBSERVE_DSN, then libpq's PG* variables)")
    parser = argparse.ArgumentParser(prog="pg-observe", description="pg_observe command-line tool", parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str, func: object, parent: argparse._SubParsersAction = sub
                ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    command("install", "CREATE EXTENSION pg_observe CASCADE in the database", _cmd_install)
    migrate = command("migrate", "ALTER EXTENSION pg_observe UPDATE (to the installed default version)", _cmd_migrate)
    migrate.add_argument("--to", help="version to update to (default: the installed default version)")

    health = command("health", "run monitoring.health(); exit 0 ok, 1 warning, 2 critical (a probe)", _cmd_health)
    health.add_argument("--json", action="store_true", help="print the checks as JSON")
    health.add_argument("--quiet", "-q", action="store_true", help="print only the checks that are not ok")
    health.add_argument("--timeout", type=_positive_seconds, default=10.0,
                        help="seconds for connecting and for the checks (default 10); past it: critical")

    issues = command("issues", "list the top issues (error groups) by events", _cmd_issues)
    issues.add_argument("--since", default="24 hours", help="window, a PostgreSQL interval (default '24 hours')")
    issues.add_argument("--environment", help="only this environment")
    issues.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    issues.add_argument("--all", action="store_true", help="include resolved and ignored issues")
    issues.add_argument("--width", type=int, default=100, help="cut titles to this many characters (default 100)")

    exporter = command("exporter", "serve monitoring.prometheus_metrics() for Prometheus on /metrics", _cmd_exporter)
    exporter.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    exporter.add_argument("--port", type=int, default=9464, help="port to listen on (default 9464)")

    dashboards = sub.add_parser("dashboards", help="Grafana dashboards", description="Grafana dashboards",
                                parents=[common])
    dashboards_sub = dashboards.add_subparsers(dest="dashboards_command", required=True)
    export = command("export", "write the Grafana dashboards and provisioning files into DIRECTORY",
                     _cmd_dashboards_export, parent=dashboards_sub)
    export.add_argument("directory", help="where to write dashboards/ and provisioning/")
    export.add_argument("--datasource-uid", default="pg_observe",
                        help="uid of the PostgreSQL data source the panels use (default pg_observe)")

    worker = command(
        "worker", "capture queued errors and deliver notifications: LISTEN, then call"
        " monitoring.process_error_queue() and monitoring.dispatch_notifications() on each wake-up",
        _cmd_worker)
    worker.add_argument(
        "--interval", type=float, default=1.0, help="seconds between dispatcher calls without a wake-up (default 1)"
    )
    worker.add_argument("--max-messages", type=int, default=1000, help="messages per dispatcher call (default 1000)")
    worker.add_argument("--name", help="dispatcher label in the delivery log (default worker@host/pid)")
    worker.add_argument("--once", action="store_true",
                        help="drain the error queue and call the dispatcher once, then exit")
    receiver = command(
        "otlp-receiver", "receive OTLP/HTTP traces (POST /v1/traces) and store them with ingest_otlp_traces()",
        _cmd_otlp_receiver)
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    receiver.add_argument("--port", type=int, default=4318, help="port to listen on (default 4318, OTLP/HTTP's)")
    receiver.add_argument(
        "--max-body-bytes", type=int, default=16 * 1024 * 1024,
        help="largest request body, compressed or not (default 16 MiB); larger ones get 413",
    )
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except psycopg.OperationalError as exc:
        print(f"pg-observe {args.command}: cannot connect: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"pg-observe {args.command}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
