#!/usr/bin/env bash
# Runs the end-to-end suite several times while busy loops take CPU from it, to find tests
# that read state the proxy reaches asynchronously without waiting for it (they pass on an
# idle machine and fail on a loaded one). Builds what the suite needs first (tests/run.sh's
# build steps), then stops at the first failing run.
# Usage: bash tests/stress.sh [RUNS, default 3] [BUSY LOOPS, default 1]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
runs="${1:-3}"
busy="${2:-1}"

bash filters/build.sh
cargo build -q --profile wasm --target wasm32-wasip1 \
  -p test-plugin-header-echo -p test-plugin-trap -p test-plugin-ticker -p test-plugin-hostile
cargo build -q -p lateen
# Built once: every run tests the same binary, whatever is edited meanwhile.
bin=$(cargo test -p lateen-e2e --test e2e --no-run 2>&1 | sed -n 's/.*Executable .* (\(.*\))$/\1/p' | tail -1)
[ -x "$bin" ] || { echo "tests/stress.sh: no e2e test binary" >&2; exit 1; }
export LATEEN_TEST_PYTHON="${LATEEN_TEST_PYTHON:-$CARGO_TARGET_DIR/py/bin/python}"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for _ in $(seq "$busy"); do
  # A busy loop that also allocates a little: contention for CPU and for the allocator.
  python3 -c 'import itertools
for i in itertools.count():
    bytearray(4096 * (i % 64))' &
  pids+=($!)
done
for i in $(seq "$runs"); do
  echo "== stress run $i of $runs ($busy busy loop(s))"
  started=$(date +%s)
  # As cargo runs it: from the package's directory.
  (cd tests && "$bin" -q)
  echo "== run $i passed in $(($(date +%s) - started)) s"
done
