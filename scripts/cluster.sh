#!/usr/bin/env bash
# Start, stop or describe the project's local PostgreSQL 15 cluster.
# PostgreSQL refuses to run as root, so initdb and pg_ctl run as the postgres OS user.
# The data lives in .cluster/ of the checkout; where the postgres user cannot reach the
# checkout (for example a clone under /root, mode 700), .cluster is a symlink to a
# directory under /var/lib/postgresql named after the checkout path.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PG_OBSERVE_PORT:-54329}
DB=${PG_OBSERVE_DB:-obs}
LINK="$ROOT/.cluster"

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cluster_dir() {
  if [ -L "$LINK" ]; then readlink -f "$LINK"; return; fi
  if [ -d "$LINK" ]; then echo "$LINK"; return; fi
  if [ "$(id -u)" != 0 ] || runuser -u postgres -- test -x "$ROOT"; then
    echo "$LINK"
  else
    echo "/var/lib/postgresql/pg_observe-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
  fi
}

DIR=$(cluster_dir)
SOCK="$DIR/sock"

start() {
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    install -d -o postgres -g postgres -m 700 "$DIR" "$DIR/sock"
    [ "$DIR" = "$LINK" ] || ln -sfn "$DIR" "$LINK"
    as_postgres "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$DIR/data/postgresql.conf" <<CONF
# pg_observe development cluster
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK'
shared_preload_libraries = 'pg_cron,pg_stat_statements'
cron.database_name = '$DB'
cron.host = '$SOCK'
cron.use_background_workers = on
max_worker_processes = 32
CONF
  fi
  if ! as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    # A cache write commits asynchronously (UNLOGGED): by default nearly every such commit wakes
    # the WAL writer, a signal and a context switch per write (docs/cache.md, "UNLOGGED: what
    # is true"). Given at every start, so that clusters created before this line get it too.
    as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -o "-c wal_writer_flush_after=0" -w -t 60 start >/dev/null
  fi
  if ! "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -Atqc "select 1 from pg_database where datname = '$DB'" postgres | grep -q 1; then
    "$PGBIN/createdb" -h "$SOCK" -p "$PORT" -U postgres "$DB"
  fi
  # pg_cron's scheduler connects to $DB at server start and stops if it is missing then
  # (or dropped later): restart once so that it runs.
  if ! "$PGBIN/psql" -h "$SOCK" -p "$PORT" -U postgres -Atqc \
       "select 1 from pg_stat_activity where backend_type = 'pg_cron launcher'" postgres | grep -q 1; then
    as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w -t 60 restart >/dev/null
  fi
}

stop() {
  if [ -f "$DIR/data/PG_VERSION" ] && as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  dsn) echo "postgresql://postgres@localhost:$PORT/$DB?host=$SOCK" ;;
  sock) echo "$SOCK" ;;
  port) echo "$PORT" ;;
  *) echo "usage: $0 start|stop|restart|dsn|sock|port" >&2; exit 2 ;;
esac
