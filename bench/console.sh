#!/usr/bin/env bash
# Web console benchmark: the inbox page and its live fragment vs the admin API's JSON with held
# calls pending, the audit search over a large log, and a held call decided in the console vs
# through the admin API, against one gateway in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p portcullis -p portcullis-bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/portcullis-bench" console --gateway "$target_dir/release/portcullis" "$@"
