#!/usr/bin/env bash
# A PostgreSQL server for the store's PostgreSQL tests: Debian's package, its default cluster, a role and a database
# the tests may wipe. Prints the SQLAlchemy URL on stdout.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
cluster=$(pg_lsclusters --no-header | head -n 1)
[ -n "$cluster" ] || { version=$(ls /usr/lib/postgresql | sort -n | tail -n 1); pg_createcluster "$version" main >&2; cluster=$(pg_lsclusters --no-header | head -n 1); }
read -r version name port status _ <<<"$cluster"
[ "$status" = online ] || pg_ctlcluster "$version" "$name" start >&2
as_postgres() { runuser -u postgres -- psql -p "$port" -v ON_ERROR_STOP=1 -qtAc "$1"; }
[ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname = 'rlhf'")" = 1 ] || as_postgres "CREATE ROLE rlhf LOGIN PASSWORD 'rlhf'"
[ "$(as_postgres "SELECT 1 FROM pg_database WHERE datname = 'rlhf_test'")" = 1 ] || as_postgres "CREATE DATABASE rlhf_test OWNER rlhf"
echo "postgresql+psycopg://rlhf:rlhf@127.0.0.1:$port/rlhf_test"
