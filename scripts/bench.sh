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
export PG_OBSERVE_BENCH_DSN="host=$PGHOST port=$PGPORT user=postgres dbname=pg_observe_bench"
for bench in test/bench/bench_*.py; do
  .venv/bin/python "$bench"
done
