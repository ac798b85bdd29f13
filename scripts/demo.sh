#!/usr/bin/env bash
# The main job of make demo: pg_observe in the local cluster's database, maintenance
# scheduled with pg_cron, a handful of real Python exceptions captured through the client.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DSN=$(scripts/cluster.sh dsn)
psql -X -q -v ON_ERROR_STOP=1 "$DSN" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pg_cron;
CREATE EXTENSION IF NOT EXISTS pg_observe CASCADE;
ALTER EXTENSION pg_observe UPDATE;
SELECT count(*) AS jobs_scheduled FROM monitoring.schedule_maintenance() \gset
SQL
.venv/bin/python examples/demo.py "$DSN"
echo
echo "Connect with:  psql '$DSN'"
