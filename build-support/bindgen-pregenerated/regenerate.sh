#!/usr/bin/env bash
# Regenerates src/pg_query_bindings.rs with the real bindgen (needs libclang) for the
# pg_query version in the workspace's Cargo.lock, and prints the header digests for src/lib.rs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
version=$(awk '/^name = "pg_query"$/ { getline; gsub(/"/, "", $3); print $3 }' "$root/Cargo.lock")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/src"
cat >"$scratch/Cargo.toml" <<TOML
[package]
name = "pg-query-bindings-scratch"
version = "0.0.0"
edition = "2021"
[dependencies]
pg_query = "=$version"
TOML
echo 'fn main() {}' >"$scratch/src/main.rs"
cargo build --manifest-path "$scratch/Cargo.toml" --quiet
out=$(dirname "$(find "$scratch/target/debug/build" -path '*pg_query-*/out/bindings.rs' | head -1)")
cp "$out/bindings.rs" "$here/src/pg_query_bindings.rs"
echo "pg_query $version: bindings copied; digests for GENERATED_FROM in src/lib.rs:"
for header in pg_query.h postgres_deparse.h pg_query_scan_tokens.h; do
  printf '    ("%s", "%s"),\n' "$header" "$(sha256sum "$out/$header" | cut -d' ' -f1)"
done
