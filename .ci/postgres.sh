#!/usr/bin/env bash
# Start this machine's PostgreSQL (Debian's package, installed when missing; a cluster created when there is none)
# and make the database the search test runs two workers against; prints the URL to put in
# EDGESHRINK_TEST_POSTGRES. Idempotent. PostgreSQL refuses to run as root, so its commands run as `postgres`.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi
if [ -z "$(pg_lsclusters -h)" ]; then
  major="$(ls /usr/lib/postgresql | sort -n | tail -1)"
  $SUDO pg_createcluster "$major" main >&2
fi
read -r version cluster port _ < <(pg_lsclusters -h | head -1)
$SUDO pg_ctlcluster "$version" "$cluster" start >&2 2>/dev/null || true   # already running is fine
as_postgres() { $SUDO runuser -u postgres -- "$@"; }
for _ in $(seq 1 30); do as_postgres psql -p "$port" -Atqc "select 1" >/dev/null 2>&1 && break; sleep 1; done
as_postgres psql -p "$port" -Atqc "select 1 from pg_roles where rolname = 'edgeshrink'" | grep -q 1 \
  || as_postgres psql -p "$port" -qc "create role edgeshrink login password 'edgeshrink'" >&2
as_postgres psql -p "$port" -Atqc "select 1 from pg_database where datname = 'edgeshrink_test'" | grep -q 1 \
  || as_postgres createdb -p "$port" -O edgeshrink edgeshrink_test >&2
echo "postgresql://edgeshrink:edgeshrink@127.0.0.1:${port}/edgeshrink_test"
