#!/usr/bin/env bash
# The sample component filter (filters/ua-tagger-component) against the same filter as a
# proxy-wasm module (the crate `lateen new-filter` makes): per-request cost in-process on
# Lateen's runtime. Prints a table; not a test.
# Usage: bash tests/bench/component.sh [requests per round]
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build -q --release -p lateen
"$CARGO_TARGET_DIR/release/lateen" new-filter ua-tagger --dir "$work" >/dev/null
(cd "$work/ua-tagger" && cargo build -q --offline --target wasm32-wasip1 --profile wasm)
cargo build -q --profile wasm --target wasm32-wasip2 -p ua-tagger-component
cfg='{"header":"x-device"}'
cargo run -q --release -p lateen-harness --example filter_cost -- --requests "${1:-20000}" \
  "proxy-wasm=$CARGO_TARGET_DIR/wasm32-wasip1/wasm/ua_tagger.wasm=$cfg" \
  "component=$CARGO_TARGET_DIR/wasm32-wasip2/wasm/ua_tagger_component.wasm=$cfg"
