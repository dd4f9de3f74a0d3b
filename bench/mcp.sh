#!/usr/bin/env bash
# MCP tools/call benchmark: direct, through nginx (a plain reverse proxy, for reference, when
# installed), and through the gateway with the audit log strict and batched, in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p portcullis -p portcullis-bench
reference=()
if command -v nginx >/dev/null 2>&1; then
  nginx -c "$PWD/bench/nginx-reference.conf"
  trap 'nginx -c "$PWD/bench/nginx-reference.conf" -s stop' EXIT
  reference=(--reference "nginx (reference proxy)=http://127.0.0.1:18991/mcp")
fi
target/release/portcullis-bench mcp --upstream-listen 127.0.0.1:18990 "${reference[@]}" "$@"
