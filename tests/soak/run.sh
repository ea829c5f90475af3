#!/usr/bin/env bash
# The fault soak (tests/soak/soak.py): builds what it needs, then runs it.
# Usage: bash tests/soak/run.sh [SECONDS, default 180] [RATE per h2load client, default 150]
# SOAK_PROFILE=dev runs the debug build (tests/run.sh does, in a short form).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
seconds="${1:-180}"
rate="${2:-150}"
profile="${SOAK_PROFILE:-release}"

missing=()
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "tests/soak/run.sh: needs ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

bash filters/build.sh lateen-router lateen-fault lateen-ratelimit lateen-metrics
cargo build -q --profile wasm --target wasm32-wasip1 -p test-plugin-trap -p test-plugin-header-echo
if [ "$profile" = release ]; then
  cargo build -q --release -p lateen
  bin="$CARGO_TARGET_DIR/release/lateen"
else
  cargo build -q -p lateen
  bin="$CARGO_TARGET_DIR/debug/lateen"
fi
exec python3 tests/soak/soak.py --bin "$bin" --wasm "$CARGO_TARGET_DIR/wasm32-wasip1/wasm" \
  --seconds "$seconds" --rate "$rate"
