#!/usr/bin/env bash
# Installs what pg_observe needs on Debian bookworm (as root), then the Python virtualenv.
# Idempotent and quick on a second run: apt runs only when a package is missing, pip only
# when python-client/ or requirements-dev.txt changed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

PACKAGES=(
  postgresql-15 postgresql-contrib postgresql-server-dev-15 postgresql-plpython3-15
  postgresql-15-cron postgresql-15-partman postgresql-15-pgtap postgresql-15-plpgsql-check
  libtap-parser-sourcehandler-pgtap-perl python3-venv python3-pip make
  # promtool/amtool check the alert rules and Alertmanager example; the exporter is tested for real
  prometheus prometheus-alertmanager prometheus-postgres-exporter
  # the cache benchmark's baseline
  redis-server
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages (run as root to install): ${missing[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV="$ROOT/.venv"
STAMP="$VENV/.pg_observe-stamp"
want=$(cat "$ROOT/requirements-dev.txt" "$ROOT/python-client/pyproject.toml" | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "preparing the Python virtualenv in .venv"
  # Debian's python3: the one PL/Python uses too, and readable by the postgres user.
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements-dev.txt" -e "$ROOT/python-client"
  echo "$want" > "$STAMP"
fi
