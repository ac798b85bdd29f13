#!/usr/bin/env bash
# Runs every check of make test against the local cluster (started by make cluster):
#   pgTAP (pg_prove) on a fresh install, pgTAP again on a database upgraded from every
#   released version, plpgsql_check over every PL/pgSQL function, pytest, ruff.
# Exits non-zero if any part fails or runs no test.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SOCK=$(scripts/cluster.sh sock)
PORT=$(scripts/cluster.sh port)
export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
VERSION=$(sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" extension/pg_observe.control)
failed=()
summary=()

fresh_db() {  # fresh_db NAME [VERSION]: a new database with pg_observe (and pgTAP) installed
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" || return 1
  local create="CREATE EXTENSION pg_observe CASCADE"
  [ -n "${2:-}" ] && create="CREATE EXTENSION pg_observe VERSION '$2' CASCADE"
  "${PSQL[@]}" -d "$1" -c "$create" -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION plpgsql_check" 2>&1 \
    | grep -v 'installing required extension' || true
}

run_pgtap() {  # run_pgtap DB LABEL
  local out
  out=$(pg_prove -d "$1" --ext .sql -r test/sql 2>&1); local rc=$?
  echo "$out" | tail -n 25
  local tests
  tests=$(echo "$out" | sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\).*/\1/p')
  if [ $rc -ne 0 ] || ! echo "$out" | grep -q '^Result: PASS' || [ "${tests:-0}" -eq 0 ]; then
    failed+=("pgTAP ($2)"); summary+=("pgTAP ($2): FAILED")
  else
    summary+=("pgTAP ($2): $tests tests passed")
  fi
}

# Catalogue of what the extension is made of, to compare an upgraded database with a fresh one.
signature() {
  "${PSQL[@]}" -At -d "$1" <<'SQL'
SELECT pg_catalog.pg_describe_object(d.classid, d.objid, 0)
       || CASE WHEN d.classid = 'pg_proc'::regclass THEN ' ' || md5(pg_get_functiondef(d.objid)) ELSE '' END
FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
WHERE e.extname = 'pg_observe' AND d.deptype = 'e'
UNION ALL
SELECT format('%s.%s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
              pg_get_expr(ad.adbin, ad.adrelid))
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE n.nspname = 'monitoring' AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
  AND c.relispartition = false
UNION ALL
SELECT format('%s %s', conrelid::regclass, pg_get_constraintdef(oid)) FROM pg_constraint
WHERE connamespace = 'monitoring'::regnamespace AND conrelid IN (
  SELECT oid FROM pg_class WHERE relnamespace = 'monitoring'::regnamespace AND NOT relispartition)
UNION ALL
SELECT format('%s %s %s %s', c.relname, c.relpersistence, array_to_string(c.reloptions, ','),
              array_to_string(c.relacl, ',')) FROM pg_class c
WHERE c.relnamespace = 'monitoring'::regnamespace AND NOT c.relispartition
UNION ALL
SELECT format('%s %s', p.oid::regprocedure, array_to_string(p.proacl, ',')) FROM pg_proc p
WHERE p.pronamespace = 'monitoring'::regnamespace
ORDER BY 1
SQL
}

echo "== pgTAP on a fresh install of pg_observe $VERSION"
if fresh_db pg_observe_test; then run_pgtap pg_observe_test "fresh $VERSION"; else failed+=("install"); fi

for release in sql/releases/pg_observe--*.sql; do
  old=${release#sql/releases/pg_observe--}; old=${old%.sql}
  case $old in *--*) continue ;; esac   # a frozen upgrade script, not an install script
  [ "$old" = "$VERSION" ] && continue
  echo "== upgrade $old -> $VERSION"
  if fresh_db pg_observe_upgrade "$old" && "${PSQL[@]}" -d pg_observe_upgrade -c "ALTER EXTENSION pg_observe UPDATE"; then
    if diff <(signature pg_observe_test) <(signature pg_observe_upgrade) > /tmp/pg_observe_upgrade.diff; then
      summary+=("upgrade $old -> $VERSION: catalogue identical to a fresh install")
    else
      head -40 /tmp/pg_observe_upgrade.diff
      failed+=("upgrade $old -> $VERSION differs from a fresh install"); summary+=("upgrade $old: FAILED")
    fi
    run_pgtap pg_observe_upgrade "upgraded from $old"
  else
    failed+=("upgrade $old -> $VERSION"); summary+=("upgrade $old: FAILED")
  fi
done

echo "== plpgsql_check"
checked=$("${PSQL[@]}" -At -d pg_observe_test -f test/plpgsql_check.sql 2>&1); rc=$?
echo "$checked" | grep -v '^checked ' | head -40
n=$(echo "$checked" | sed -n 's/^checked \([0-9]*\) functions, \([0-9]*\) errors.*/\1/p')
errs=$(echo "$checked" | sed -n 's/^checked [0-9]* functions, \([0-9]*\) errors.*/\1/p')
if [ $rc -ne 0 ] || [ "${n:-0}" -eq 0 ] || [ "${errs:-1}" -ne 0 ]; then
  failed+=("plpgsql_check"); summary+=("plpgsql_check: FAILED (${n:-0} functions, ${errs:-?} errors)")
else
  summary+=("plpgsql_check: $n functions, 0 errors")
fi

echo "== pytest"
PG_OBSERVE_TEST_HOST=$SOCK PG_OBSERVE_TEST_PORT=$PORT .venv/bin/pytest -q -p no:cacheprovider test/python; rc=$?
if [ $rc -ne 0 ]; then failed+=("pytest (exit $rc)"); summary+=("pytest: FAILED (exit $rc; 5 means no test ran)"); else summary+=("pytest: passed"); fi

echo "== ruff"
if .venv/bin/ruff check plpython python-client test scripts examples; then summary+=("ruff: clean"); else failed+=("ruff"); summary+=("ruff: FAILED"); fi

echo
echo "== summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all checks passed"
