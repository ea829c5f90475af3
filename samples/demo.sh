#!/usr/bin/env bash
# Runs the demo: sample backends v1/v2/v3 and Lateen on the embedded 90/7/3 sample config.
# Usage: bash samples/demo.sh        (installs the wasm target if missing, builds, runs)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip1 >/dev/null
fi
bash filters/build.sh lateen-router lateen-fault lateen-ratelimit lateen-metrics
cargo build --release -p lateen
exec "$CARGO_TARGET_DIR/release/lateen" demo --filters-dir "$CARGO_TARGET_DIR/wasm32-wasip1/wasm" "$@"
