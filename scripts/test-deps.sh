#!/usr/bin/env bash
# Installs and starts everything the test suite needs, idempotently, from package
# registries only: the Node and Python peers in tests/interop, Debian's Chromium, and a
# running PostgreSQL with database `test`. Safe to run again; does nothing that is done.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
log() { printf '[test-deps] %s\n' "$*" >&2; }
need_root() { if [ "$(id -u)" != 0 ]; then echo sudo; fi; }

apt_install() {
  log "installing Debian packages: $*"
  $(need_root) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null || {
    $(need_root) apt-get update -q >/dev/null && $(need_root) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

# --- tools ---------------------------------------------------------------------------
command -v openssl >/dev/null || apt_install openssl
command -v node >/dev/null || apt_install nodejs npm
command -v python3 >/dev/null || apt_install python3 python3-venv
[ -x /usr/bin/chromium ] || apt_install chromium

# --- Node peers ----------------------------------------------------------------------
stamp_of() { sha256sum "$@" | sha256sum | cut -c1-16; }
cd "$root/tests/interop"
want=$(stamp_of package.json $( [ -f package-lock.json ] && echo package-lock.json ))
if [ ! -f node_modules/.medicodax-stamp ] || [ "$(cat node_modules/.medicodax-stamp)" != "$want" ]; then
  log "installing Node peers (npm)"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error >&2; else npm install --no-audit --no-fund --loglevel=error >&2; fi
  want=$(stamp_of package.json package-lock.json)
  echo "$want" > node_modules/.medicodax-stamp
fi

# --- Python peers --------------------------------------------------------------------
want=$(stamp_of requirements.txt)
if [ ! -x .venv/bin/python ] || [ ! -f .venv/.medicodax-stamp ] || [ "$(cat .venv/.medicodax-stamp)" != "$want" ]; then
  log "installing Python peers (pip)"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt >&2
  echo "$want" > .venv/.medicodax-stamp
fi
cd "$root"

# --- PostgreSQL ----------------------------------------------------------------------
pg_url=${MEDICODAX_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql; fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  for v in $(ls /etc/postgresql); do
    pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 || true
  done
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! psql "$pg_url" -qtAc 'select 1' >/dev/null 2>&1; then
  log "creating database test"
  su postgres -c "createdb test" >/dev/null 2>&1 || true
  if ! psql "$pg_url" -qtAc 'select 1' >/dev/null 2>&1; then
    log "cannot connect to $pg_url: allow local trust authentication for 127.0.0.1 in pg_hba.conf, or set MEDICODAX_TEST_PG_URL"
    exit 1
  fi
fi
log "ready"
