#!/usr/bin/env bash
# Shared state benchmark: allowed MCP calls with the control state in SQLite vs PostgreSQL,
# and a hold released across two replicas, in one run. Uses the machine's PostgreSQL
# (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432 as postgres) and a database of its own,
# made afresh for each run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p portcullis -p portcullis-bench
host=${PGHOST:-127.0.0.1} port=${PGPORT:-5432} user=${PGUSER:-postgres}
db=portcullis_bench_state
psql -h "$host" -p "$port" -U "$user" -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql -h "$host" -p "$port" -U "$user" -d postgres -qc "CREATE DATABASE $db"
target/release/portcullis-bench replicas \
  --state-url "host=$host port=$port user=$user dbname=$db sslmode=disable" "$@"
