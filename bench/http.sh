#!/usr/bin/env bash
# HTTP adapter benchmark (issue 19): GET of a small JSON record (one e-mail address in it)
#   direct        an axum upstream inside the benchmark process;
#   nginx         /usr/sbin/nginx as a plain reverse proxy (keep-alive upstream pool), for
#                 reference: what one extra HTTP hop costs on this machine;
#   gateway       Portcullis's front door /http/customers/...: API key, policy (an allow rule
#                 on GET /customers/{id}), the answer masked with the pii detectors, one
#                 audit event per request, durability batched and strict;
# in one run, rounds alternating. p50/p99 with wrk at 1 connection, throughput at 64.
# Needs wrk (apt install wrk); nginx optional.
#
# Usage: bench/http.sh [portcullis-bench http options], e.g. --rounds 5 --seconds 8
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p portcullis -p portcullis-bench
release="${CARGO_TARGET_DIR:-target}/release"
exec "$release/portcullis-bench" http --gateway "$release/portcullis" "$@"
