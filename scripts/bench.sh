#!/usr/bin/env bash
# make bench: every test/bench/bench_*.py against a fresh database of the local cluster.
# Each prints one JSON object per figure: name, value, unit, baseline, ratio (value/baseline),
# baseline and value measured in the same run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PGHOST=$(scripts/cluster.sh sock) PGPORT=$(scripts/cluster.sh port) PGUSER=postgres
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS pg_observe_bench WITH (FORCE)" -c "CREATE DATABASE pg_observe_bench"
psql -X -q -d pg_observe_bench -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_observe CASCADE"
# the settings that move write figures most, stated with every run (not a figure: no ratio)
psql -X -q -At -d postgres -c "SELECT json_build_object('name', 'cluster_settings', 'settings',
  json_object_agg(name, setting ORDER BY name)) FROM pg_settings
  WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'server_version',
                 'wal_writer_flush_after')"
export PG_OBSERVE_BENCH_DSN="host=$PGHOST port=$PGPORT user=postgres dbname=pg_observe_bench"
# PG_OBSERVE_BENCH_ONLY=operations runs test/bench/bench_operations.py alone
for bench in test/bench/bench_${PG_OBSERVE_BENCH_ONLY:-*}.py; do
  .venv/bin/python "$bench"
done
