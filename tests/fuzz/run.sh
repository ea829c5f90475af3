#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time on the corpus kept in tests/fuzz/corpus.
# Usage: bash tests/fuzz/run.sh [SECONDS per target, default 30] [TARGET...]
# New inputs and any crash go to a scratch directory (printed), never into the repo.
# The mutation seed is fixed (FUZZ_SEED, default 1) and each target stops after a set
# number of runs (FUZZ_RUNS overrides it for all), so a CI run explores the same inputs
# every time: what passed once passes again. Explore further with another seed, or with
# FUZZ_RUNS=-1 (no cap) and more seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config_yaml header_map host_calls)

main_target="${CARGO_TARGET_DIR:-$PWD/target}"
# libFuzzer's instrumented build lives apart from the normal one.
fuzz_target="${LATEEN_FUZZ_TARGET_DIR:-$main_target/fuzz}"

command -v rustup >/dev/null 2>&1 && rustup target add wasm32-wasip1 >/dev/null
# libFuzzer itself is C++, built by libfuzzer-sys.
command -v c++ >/dev/null 2>&1 || {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null
}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2

# The guest of the host-call target.
CARGO_TARGET_DIR="$main_target" cargo build -q --profile wasm --target wasm32-wasip1 -p test-plugin-hostcalls
export LATEEN_FUZZ_GUEST="$main_target/wasm32-wasip1/wasm/test_plugin_hostcalls.wasm"

# No sanitizer: the stable toolchain has none, and the code under test is safe Rust; what
# the targets look for is panics, failed assertions and runaway memory or time.
export CARGO_TARGET_DIR="$fuzz_target"
cargo fuzz build -s none --fuzz-dir tests/fuzz

scratch="$(mktemp -d "${TMPDIR:-/tmp}/lateen-fuzz.XXXXXX")"
echo "fuzz: new inputs and crashes go to $scratch"
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "$scratch/artifacts/$t"
  echo "fuzz: $t for ${seconds}s"
  case "$t" in
    config_yaml) runs=20000 ;;
    header_map) runs=2000000 ;;
    *) runs=60000 ;;
  esac
  runs="${FUZZ_RUNS:-$runs}"
  status=0
  cargo fuzz run -s none --fuzz-dir tests/fuzz "$t" "$scratch/$t" "tests/fuzz/corpus/$t" -- \
    -seed="${FUZZ_SEED:-1}" -runs="$runs" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=8192 \
    -artifact_prefix="$scratch/artifacts/$t/" -print_final_stats=1 >"$scratch/$t.log" 2>&1 || status=$?
  grep -E "^stat::(number_of_executed_units|peak_rss_mb|new_units_added)" "$scratch/$t.log" | tr '\n' ' '
  echo
  if [ "$status" != 0 ] || [ -n "$(ls -A "$scratch/artifacts/$t")" ]; then
    tail -40 "$scratch/$t.log" >&2
    echo "fuzz: $t failed (exit $status); inputs: $scratch/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz: no failures"
