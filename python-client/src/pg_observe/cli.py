"""pg-observe: command-line entry point."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

import psycopg


def _dsn(args: argparse.Namespace) -> str:
    return args.dsn or os.environ.get("PG_OBSERVE_DSN", "")


def _cmd_install(args: argparse.Namespace) -> int:
    with psycopg.connect(_dsn(args), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_observe CASCADE")
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_observe'").fetchone()
    print(f"pg_observe {version[0] if version else '?'} installed")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    with psycopg.connect(_dsn(args), autocommit=True) as conn:
        conn.execute("ALTER EXTENSION pg_observe UPDATE")
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_observe'").fetchone()
    print(f"pg_observe is at version {version[0] if version else '?'}")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from pg_observe.worker import NotificationWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = NotificationWorker(_dsn(args), interval=args.interval, max_messages=args.max_messages, name=args.name)
    if args.once:
        with psycopg.connect(_dsn(args), autocommit=True) as conn:
            worker.dispatch_once(conn)
        totals = worker.totals
        print(f"{totals.sent} sent, {totals.failed} failed, {totals.dead} dead")
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
    parser = argparse.ArgumentParser(prog="pg-observe", description="pg_observe command-line tool")
    parser.add_argument("--dsn", help="libpq connection string (default: $PG_OBSERVE_DSN, then libpq's PG* variables)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="CREATE EXTENSION pg_observe CASCADE").set_defaults(func=_cmd_install)
    sub.add_parser("migrate", help="ALTER EXTENSION pg_observe UPDATE to the installed version").set_defaults(
        func=_cmd_migrate
    )
    worker = sub.add_parser(
        "worker", help="deliver notifications: LISTEN and call monitoring.dispatch_notifications() on each wake-up"
    )
    worker.add_argument(
        "--interval", type=float, default=1.0, help="seconds between dispatcher calls without a wake-up (default 1)"
    )
    worker.add_argument("--max-messages", type=int, default=1000, help="messages per dispatcher call (default 1000)")
    worker.add_argument("--name", help="dispatcher label in the delivery log (default worker@host/pid)")
    worker.add_argument("--once", action="store_true", help="call the dispatcher once and exit")
    worker.set_defaults(func=_cmd_worker)
    receiver = sub.add_parser(
        "otlp-receiver", help="receive OTLP/HTTP traces (POST /v1/traces) and store them with ingest_otlp_traces()"
    )
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    receiver.add_argument("--port", type=int, default=4318, help="port to listen on (default 4318, OTLP/HTTP's)")
    receiver.add_argument(
        "--max-body-bytes", type=int, default=16 * 1024 * 1024,
        help="largest request body, compressed or not (default 16 MiB); larger ones get 413",
    )
    receiver.set_defaults(func=_cmd_otlp_receiver)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
