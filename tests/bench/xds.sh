#!/usr/bin/env bash
# xDS push benchmark: time from a push to traffic following it for N = 10, 1,000 and 10,000
# routes and endpoints, over ADS (a fake control plane, tests/support/xds.rs) and over the
# file source side by side; and RSS per 1,000 EDS endpoints. Not a test and not run in CI.
# Usage: bash tests/bench/xds.sh [N...]          (default: 10 1000 10000)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/lateen-target}"
if command -v rustup >/dev/null 2>&1; then rustup target add wasm32-wasip1 >/dev/null; fi
bash filters/build.sh lateen-router
cargo build -q --release -p lateen
cargo run -q --release -p lateen-e2e --example xds_push -- "$@"
