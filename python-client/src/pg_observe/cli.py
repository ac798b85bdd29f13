"""pg-observe: command-line entry point."""

from __future__ import annotations

import argparse
import os
import sys

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pg-observe", description="pg_observe command-line tool")
    parser.add_argument("--dsn", help="libpq connection string (default: $PG_OBSERVE_DSN, then libpq's PG* variables)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("install", help="CREATE EXTENSION pg_observe CASCADE").set_defaults(func=_cmd_install)
    sub.add_parser("migrate", help="ALTER EXTENSION pg_observe UPDATE to the installed version").set_defaults(
        func=_cmd_migrate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
