#!/usr/bin/env bash
# Builds the filters and the proxy, then runs every test (unit, doc and end-to-end).
# Usage: bash tests/run.sh            (from anywhere; installs the wasm target if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null
fi
# Real peers the tests start: Redis (global rate limits), an OCI registry (plugin pulls),
# Prometheus with promtool (metrics) and Chromium (the service graph page); Python for
# the OTLP receiver.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# Headless Chromium loads the admin UI's service graph; DejaVu gives it a font to draw with.
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
# The TLS tests drive the proxy with the real curl.
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
# The JWT tests make their RSA keys with the real openssl.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The sidecar test makes network namespaces and applies iptables rules in them.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables-restore >/dev/null 2>&1 || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "tests/run.sh: needs ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# The tracing test's OTLP receiver runs on the opentelemetry-proto package from PyPI, the
# Kubernetes test validates manifests with kubernetes-validate, and the HTTP/2 abuse tests
# build raw frames with h2's hyperframe and hpack, in a venv beside the build output.
if [ ! -x "$CARGO_TARGET_DIR/py/bin/python" ] || ! "$CARGO_TARGET_DIR/py/bin/python" -c 'import opentelemetry.proto, kubernetes_validate, h2' 2>/dev/null; then
  if ! python3 -m venv "$CARGO_TARGET_DIR/py" 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    python3 -m venv "$CARGO_TARGET_DIR/py"
  fi
  "$CARGO_TARGET_DIR/py/bin/pip" install -q opentelemetry-proto kubernetes-validate h2
fi
export LATEEN_TEST_PYTHON="$CARGO_TARGET_DIR/py/bin/python"

# Filters and test plugins are wasm32-wasip1 modules (the sample component filter a
# wasm32-wasip2 component); the e2e tests load them from $CARGO_TARGET_DIR/wasm32-wasip*/wasm/.
bash filters/build.sh
cargo build --profile wasm --target wasm32-wasip1 \
  -p test-plugin-header-echo -p test-plugin-trap -p test-plugin-ticker -p test-plugin-hostile
# The e2e tests start the real binary.
cargo build -p lateen
cargo test --workspace
# The built-in filters' checked-in config schemas match their config types and accept
# their configs (regenerate with LATEEN_UPDATE_SCHEMAS=1).
cargo test -p lateen-router -p lateen-fault -p lateen-ratelimit -p lateen-metrics -p lateen-authz -p lateen-jwt \
  --features lateen-router/schema,lateen-fault/schema,lateen-ratelimit/schema,lateen-metrics/schema,lateen-authz/schema,lateen-jwt/schema \
  --test schema
# The fault soak, in a short form on the debug build (the full one by hand:
# bash tests/soak/run.sh): upstreams, Redis and plugins failing under load, nothing lost.
SOAK_PROFILE=dev bash tests/soak/run.sh 30 20
