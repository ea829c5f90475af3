#!/usr/bin/env bash
# Lateen vs nginx, side by side in one run: same upstream, one worker each, wrk as the load.
# Not a test and not run in CI. Usage: bash tests/bench/bench.sh [duration-seconds]
#
# Layout on a 2-core machine: the proxy under test is pinned to CPU 0; the upstream (nginx,
# one worker, a fixed 2-byte answer) and wrk share CPU 1. Each scenario runs at 16 and 64
# connections; rps is wrk's, latency percentiles are wrk's --latency output.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need taskset; then
  apt-get update -qq && apt-get install -y -qq nginx wrk util-linux >/dev/null
fi
if need rustup; then rustup target add wasm32-wasip1 >/dev/null; fi
cargo build -q --profile wasm --target wasm32-wasip1 -p lateen-router -p lateen-fault -p lateen-ratelimit -p lateen-metrics \
  -p test-plugin-header-echo
cargo build -q --release -p lateen
LATEEN="$CARGO_TARGET_DIR/release/lateen"
WASM="$CARGO_TARGET_DIR/wasm32-wasip1/wasm"

WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); NGX=$(free_port); LAT=$(free_port); LAT2=$(free_port); LAT3=$(free_port)
ADM=$(free_port); ADM2=$(free_port); ADM3=$(free_port); LAT4=$(free_port); ADM4=$(free_port)
LAT5=$(free_port); ADM5=$(free_port)

mkdir -p "$WORK/up" "$WORK/px"
cat > "$WORK/up/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $WORK/up/pid; error_log $WORK/up/err.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$UP; keepalive_requests 1000000;
  location / { return 200 "ok"; } } }
NGINX
cat > "$WORK/px/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $WORK/px/pid; error_log $WORK/px/err.log;
events { worker_connections 4096; }
http { access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 256; }
  server { listen 127.0.0.1:$NGX; keepalive_requests 1000000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX

mesh() { # $1 = listener port, $2 = "metrics" to keep the metrics filter (on by default)
cat <<YAML
apiVersion: lateen.io/v1alpha1
kind: Bootstrap
metadata: {name: lateen, namespace: istio-system}
spec:
  telemetry: {metrics: $([ "${2:-}" = metrics ] && echo true || echo false)}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: $1, name: http, protocol: HTTP}
    hosts: ["*"]
    bind: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: up, namespace: bench}
spec:
  hosts: [up.bench]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1, ports: {http: $UP}, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: up, namespace: bench}
spec:
  host: up.bench
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v1}}, {name: v3, labels: {version: v1}}]
YAML
}
one_route() { cat <<YAML
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{destination: {host: up.bench}}]
YAML
}
# Scenario A: one route, one destination (the router filter still runs: routing is wasm).
mkdir -p "$WORK/a" "$WORK/b"
{ mesh "$LAT"; one_route; } > "$WORK/a/config.yaml"
# Scenario B: a realistic table: 12 rules of every match kind before the 90/7/3 split.
{ mesh "$LAT2"; cat <<YAML
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - match: [{uri: {exact: /admin}}]
    route: [{destination: {host: up.bench, subset: v3}}]
  - match: [{uri: {regex: "/api/v[0-9]+/users/[0-9]+"}}]
    route: [{destination: {host: up.bench, subset: v2}}]
  - match: [{headers: {x-env: {exact: dev}}}]
    route: [{destination: {host: up.bench, subset: v2}}]
  - match: [{headers: {x-tenant: {regex: "gold-.*"}}}]
    route: [{destination: {host: up.bench, subset: v3}}]
  - match: [{queryParams: {beta: {exact: "1"}}}]
    route: [{destination: {host: up.bench, subset: v3}}]
  - match: [{method: {exact: DELETE}}]
    route: [{destination: {host: up.bench, subset: v2}}]
  - match: [{cookies: {user: {exact: tester}}}]
    route: [{destination: {host: up.bench, subset: v3}}]
  - match: [{cookies: {session: {regex: "[a-f0-9]{32}"}}}]
    route: [{destination: {host: up.bench, subset: v2}}]
  - match: [{authority: {exact: internal.example.com}}]
    route: [{destination: {host: up.bench, subset: v2}}]
  - match: [{withoutHeaders: {x-canary: {}}, uri: {prefix: /static}}]
    route: [{destination: {host: up.bench, subset: v1}}]
  - match: [{headers: {user-agent: {regex: ".*Googlebot.*"}}}]
    route: [{destination: {host: up.bench, subset: v2}}]
  - match: [{userAgent: {device: mobile}}]
    route: [{destination: {host: up.bench, subset: v2}}]
  - route:
    - {destination: {host: up.bench, subset: v1}, weight: 90}
    - {destination: {host: up.bench, subset: v2}, weight: 7}
    - {destination: {host: up.bench, subset: v3}, weight: 3}
YAML
} > "$WORK/b/config.yaml"

# Scenario C: router + fault (0 %) + rate limit (never limiting); E adds the metrics
# filter: the full standard chain.
mkdir -p "$WORK/c" "$WORK/e"
chain() { cat <<YAML
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: main
    fault: {abort: {httpStatus: 503, percentage: {value: 0}}}
    route: [{destination: {host: up.bench}}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ratelimit, namespace: istio-system}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: http_local_rate_limiter
          token_bucket: {max_tokens: 100000000, tokens_per_fill: 100000000, fill_interval: 1s}
          filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
          filter_enforced: {default_value: {numerator: 100, denominator: HUNDRED}}
YAML
}
{ mesh "$LAT3"; chain; } > "$WORK/c/config.yaml"
{ mesh "$LAT5" metrics; chain; } > "$WORK/e/config.yaml"

taskset -c 1 nginx -c "$WORK/up/nginx.conf" & PIDS+=($!)
taskset -c 0 nginx -c "$WORK/px/nginx.conf" & PIDS+=($!)
taskset -c 0 "$LATEEN" run --config "$WORK/a" --concurrency 1 --stats-address off --health-address off --admin-address "127.0.0.1:$ADM" \
  --filters-dir "$WASM" --log-level warn & PIDS+=($!)
taskset -c 0 "$LATEEN" run --config "$WORK/b" --concurrency 1 --stats-address off --health-address off --admin-address "127.0.0.1:$ADM2" \
  --filters-dir "$WASM" --log-level warn & PIDS+=($!)
taskset -c 0 "$LATEEN" run --config "$WORK/c" --concurrency 1 --stats-address off --health-address off --admin-address "127.0.0.1:$ADM3" \
  --filters-dir "$WASM" --log-level warn & PIDS+=($!)
taskset -c 0 "$LATEEN" run --config "$WORK/e" --concurrency 1 --stats-address off --health-address off --admin-address "127.0.0.1:$ADM5" \
  --filters-dir "$WASM" --log-level warn & PIDS+=($!)
for url in "http://127.0.0.1:$UP/" "http://127.0.0.1:$NGX/" "http://127.0.0.1:$ADM/ready" "http://127.0.0.1:$ADM2/ready" "http://127.0.0.1:$ADM3/ready" "http://127.0.0.1:$ADM5/ready"; do
  for _ in $(seq 200); do curl -sf -o /dev/null "$url" && break; sleep 0.05; done
done
for url in "http://127.0.0.1:$NGX/" "http://127.0.0.1:$LAT/" "http://127.0.0.1:$LAT2/" "http://127.0.0.1:$LAT3/" "http://127.0.0.1:$LAT5/"; do
  [ "$(curl -s "$url")" = "ok" ] || { echo "bench: $url does not answer ok" >&2; exit 1; }
done

run_wrk() { # url conns -> "rps p50_us p99_us"
  taskset -c 1 wrk -t1 -c"$2" -d"${DUR}s" --latency "$1" | awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=us($2) } /^ +99%/ { p99=us($2) }
    /Non-2xx/ { bad=$NF } /Socket errors/ { err=1 }
    END { printf "%d %d %d %s\n", rps, p50, p99, (bad==""?0:bad) }'
}

printf "%-46s %5s %10s %9s %9s %8s\n" scenario conns rps p50_us p99_us vs_nginx
for c in 16 64; do
  read -r n_rps n_p50 n_p99 n_bad < <(run_wrk "http://127.0.0.1:$NGX/" "$c")
  printf "%-46s %5d %10d %9d %9d %8s\n" "nginx proxy_pass (1 worker)" "$c" "$n_rps" "$n_p50" "$n_p99" "1.00"
  for s in "lateen, router (1 route)|$LAT" "lateen, router (13 rules, 90/7/3)|$LAT2" \
           "lateen, router+fault 0%+ratelimit|$LAT3" \
           "lateen, router+fault+ratelimit+metrics|$LAT5"; do
    name="${s%%|*}"; port="${s##*|}"
    read -r rps p50 p99 bad < <(run_wrk "http://127.0.0.1:$port/" "$c")
    [ "$bad" = "0" ] || echo "  ($name: $bad non-2xx responses)"
    printf "%-46s %5d %10d %9d %9d %8s\n" "$name (1 worker)" "$c" "$rps" "$p50" "$p99" \
      "$(awk -v a="$rps" -v b="$n_rps" 'BEGIN { printf "%.2f", a/b }')"
  done
done

# Scenario: p99 and errors while a plugin's configuration is swapped every second
# (each swap builds a new snapshot and new plugin instances), against the same proxy steady.
mkdir -p "$WORK/d"
swap_config() { # $1 = plugin config value
  { mesh "$LAT4"; cat <<YAML
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: echo, namespace: istio-system}
spec:
  url: file://$WASM/test_plugin_header_echo.wasm
  pluginConfig: {value: "$1"}
YAML
  one_route; } > "$WORK/d/.config.tmp" && mv "$WORK/d/.config.tmp" "$WORK/d/config.yaml"
}
swap_config v0
taskset -c 0 "$LATEEN" run --config "$WORK/d" --concurrency 1 --stats-address off --health-address off --admin-address "127.0.0.1:$ADM4" \
  --filters-dir "$WASM" --log-level warn & PIDS+=($!)
for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$ADM4/ready" && break; sleep 0.05; done
echo
printf "%-46s %5s %10s %9s %9s %8s\n" "plugin swaps (header-echo plugin + router)" conns rps p50_us p99_us non2xx
read -r rps p50 p99 bad < <(run_wrk "http://127.0.0.1:$LAT4/" 16)
printf "%-46s %5d %10d %9d %9d %8s\n" "steady" 16 "$rps" "$p50" "$p99" "$bad"
( for i in $(seq 1 "$DUR"); do sleep 1; swap_config "v$i"; done ) & SWAPPER=$!
read -r rps p50 p99 bad < <(run_wrk "http://127.0.0.1:$LAT4/" 16)
wait "$SWAPPER" || true
reloads=$(curl -s "http://127.0.0.1:$ADM4/stats/prometheus" | awk '/config_reload_total{result="success"}/ {print $2}')
printf "%-46s %5d %10d %9d %9d %8s\n" "one swap per second ($reloads reloads)" 16 "$rps" "$p50" "$p99" "$bad"
