#!/usr/bin/env bash
# PostgreSQL benchmark: pgbench -S (select-only) at 1 and 8 clients, in one run, against
#   direct        the server itself;
#   pgbouncer     Debian's pgbouncer in session mode, a plain pass-through for reference;
#   gateway       Portcullis with the guardrails (every statement parsed and decided), a
#                 masking profile on the result columns and the audit log (strict: each
#                 statement's event fsynced before its ReadyForQuery; batched: 2 ms groups).
# The current build is also measured with session recording on (statements, bind values,
# columns, rows and tags recorded beside the events: `record_results`) and on + encrypted to
# an age recipient (`age-keygen`, apt install age), in strict durability: RECORDING=0 skips.
# Each configuration runs in simple (-M simple, a new text every statement) and prepared
# (-M prepared) protocol. Prints a Markdown table with TPS, mean latency and ratio to direct.
#
# Usage: bench/pg.sh [SECONDS]   (default 10 s per run). Needs PostgreSQL on 127.0.0.1:5432
# (trust, user postgres), pgbench, and pgbouncer (apt install pgbouncer) for the reference.
# BASELINE=PATH also measures an earlier portcullis build in the same run (as "baseline-*"),
# so a change is compared against the build before it on the same machine state.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
db=portcullis_bench
gw_port=16501
bouncer_port=16502
work="$(mktemp -d)"
# pgbouncer runs as postgres when we are root, and writes its log here.
chmod 1777 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p portcullis
bin="$PWD/target/release/portcullis"

export PGHOST=127.0.0.1 PGUSER=postgres
psql -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
pgbench -q -i -s 1 "$db" >/dev/null 2>&1

# The gateway's identity for pgbench: an API key, stored hashed.
keyout=$("$bin" keys new --name bench)
key=$(grep -o 'pcx_[A-Za-z0-9_-]*' <<<"$keyout" | head -1)
sha=$(sed -n 's/^sha256 = "\(.*\)"/\1/p' <<<"$keyout")

start_gateway() { # durability [binary] [recording: off|on|encrypted]
  local dir="$work/gw-$1-$(basename "$(dirname "${2:-$bin}")")-$RANDOM"
  local binary="${2:-$bin}"
  local recording="${3:-off}" record_results=false section=""
  mkdir -p "$dir"
  case "$recording" in
    on) section=$'[recording]\nmode = "strict"'; record_results=true ;;
    encrypted)
      local recipient
      recipient=$(age-keygen 2>&1 >/dev/null | grep -o 'age1[0-9a-z]*')
      section=$'[recording]\nmode = "strict"\nrecipients = ["'"$recipient"'"]'
      record_results=true ;;
  esac
  cat >"$dir/portcullis.toml" <<EOF
[gateway]
listen = "127.0.0.1:16500"
data_dir = "data"

[audit]
durability = "$1"

[[identity.api_keys]]
name = "bench"
kind = "agent"
sha256 = "$sha"
groups = ["agents"]

[targets.bench]
kind = "postgres"
listen = "127.0.0.1:$gw_port"
upstream = "postgres://127.0.0.1:5432/$db"
user = "postgres"
$( [ "$record_results" = true ] && echo "record_results = true" )

# pgbench reads its tables and, at start, the catalog (partition check).
[[rules]]
name = "bench reads"
who.groups = ["agents"]
target = "bench"
allow.statements = ["select", "transaction", "set"]
allow.tables = ["pgbench_*", "pg_catalog.*"]
mask = "pii"

[[rules]]
name = "no deletes"
target = "bench"
deny.statements = ["delete", "truncate", "ddl"]

[masks.pii]
detectors = ["pii"]
columns = ["account_number"]

$section
EOF
  (cd "$dir" && exec "$binary" serve --config portcullis.toml) 2>"$dir/stderr" &
  pids+=($!)
  for _ in $(seq 100); do
    if PGPASSWORD="$key" psql -q -h 127.0.0.1 -p "$gw_port" -U bench -d bench -c 'select 1' >/dev/null 2>&1; then
      return
    fi
    sleep 0.1
  done
  cat "$dir/stderr" >&2
  echo "the gateway did not start" >&2
  exit 1
}

stop_gateway() {
  kill "${pids[-1]}"
  wait "${pids[-1]}" 2>/dev/null || true
  unset 'pids[-1]'
}

start_pgbouncer() {
  command -v pgbouncer >/dev/null || return 1
  cat >"$work/pgbouncer.ini" <<EOF
[databases]
$db = host=127.0.0.1 port=5432 dbname=$db user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
auth_type = any
pool_mode = session
max_client_conn = 100
default_pool_size = 20
unix_socket_dir =
logfile = $work/pgbouncer.log
EOF
  local as=()
  # pgbouncer refuses to run as root.
  if [ "$(id -u)" = 0 ]; then as=(-u postgres); fi
  pgbouncer "${as[@]}" "$work/pgbouncer.ini" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do
    psql -q -h 127.0.0.1 -p "$bouncer_port" -d "$db" -c 'select 1' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "pgbouncer did not start" >&2
  return 1
}

declare -A tps lat
run() { # label port user dbname password mode clients
  local label=$1 port=$2 user=$3 dbname=$4 password=$5 mode=$6 clients=$7
  local out
  out=$(PGPASSWORD="$password" pgbench -n -S -M "$mode" -T "$seconds" -c "$clients" -j "$((clients < 2 ? 1 : 2))" \
    -h 127.0.0.1 -p "$port" -U "$user" "$dbname" 2>&1) || { echo "$out" >&2; exit 1; }
  tps["$label/$mode/$clients"]=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -1)
  lat["$label/$mode/$clients"]=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")
  printf '%-18s %-8s c=%s  %8.0f tps  %6.3f ms\n' "$label" "$mode" "$clients" \
    "${tps["$label/$mode/$clients"]}" "${lat["$label/$mode/$clients"]}" >&2
}

labels=(direct)
for mode in simple prepared; do
  for c in 1 8; do run direct 5432 postgres "$db" "" "$mode" "$c"; done
done
if start_pgbouncer; then
  labels+=(pgbouncer)
  for mode in simple prepared; do
    for c in 1 8; do run pgbouncer "$bouncer_port" postgres "$db" "" "$mode" "$c"; done
  done
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'
fi
builds=("gateway=$bin")
if [ -n "${BASELINE:-}" ]; then builds=("baseline=$BASELINE" "${builds[@]}"); fi
for durability in strict batched; do
  for build in "${builds[@]}"; do
    name=${build%%=*}
    start_gateway "$durability" "${build#*=}"
    labels+=("$name-$durability")
    for mode in simple prepared; do
      for c in 1 8; do run "$name-$durability" "$gw_port" bench bench "$key" "$mode" "$c"; done
    done
    stop_gateway
  done
done
if [ "${RECORDING:-1}" != 0 ]; then
  for recording in on encrypted; do
    start_gateway strict "$bin" "$recording"
    labels+=("gateway-strict-rec-$recording")
    for mode in simple prepared; do
      for c in 1 8; do run "gateway-strict-rec-$recording" "$gw_port" bench bench "$key" "$mode" "$c"; done
    done
    stop_gateway
  done
fi

echo
echo "pgbench -S, scale 1, ${seconds} s per run, $(nproc) cores shared by client, proxy and server"
echo
echo "| path | protocol | clients | TPS | mean latency | vs direct |"
echo "| --- | --- | --- | --- | --- | --- |"
for label in "${labels[@]}"; do
  for mode in simple prepared; do
    for c in 1 8; do
      t=${tps["$label/$mode/$c"]}
      d=${tps["direct/$mode/$c"]}
      printf '| %s | %s | %s | %.0f | %.3f ms | %.2f |\n' "$label" "$mode" "$c" "$t" \
        "${lat["$label/$mode/$c"]}" "$(echo "$t / $d" | bc -l)"
    done
  done
done
