#!/usr/bin/env bash
# The benchmark suite: Lateen against nginx (and haproxy), side by side in one run, with the
# same upstream and one worker each. Not a test and not run in CI.
# Usage: bash tests/bench/bench.sh [seconds-per-measurement]     (default 10)
#        LATEEN_BASELINE=<commit> bash tests/bench/bench.sh   (also builds and runs that commit,
#        router only and full chain, beside this tree's: a before/after from one run)
#
# Layout on a 2-core machine: every proxy under test is pinned to CPU 0 (only the one being
# measured gets traffic); the upstream (nginx, one worker, a fixed 2-byte answer) and the
# load generators share CPU 1. Scenarios:
#   1. plain forwarding: max rps at c = 16, 64, 256 (wrk, closed loop); p50/p99 at a fixed
#      rate, half the slowest proxy's knee, open loop (oha -q with latency correction);
#      CPU-ms per 1000 requests (from /proc) and RSS;
#   2. the full standard wasm chain (router, fault 0 %, ratelimit not limiting, metrics),
#      measured the same way;
#   3. cost per filter: N = 0, 1, 2, 4, 8 no-op proxy-wasm filters, and one header-setting
#      filter, at the fixed rate: added p50/p99 and CPU per request against N = 0;
#   4. memory: RSS at 0, 1k and 10k idle keep-alive connections, KiB per connection; RSS at
#      start with the standard chain;
#   5. plugin cold path: cranelift compile, load from the cache, instantiate, first request;
#   6. p99 and errors while a plugin's configuration is swapped every second;
#   7. swap latency: a plugin config change, written as a file edit and as a Kubernetes
#      ConfigMap `..data` symlink swap, until the first response from the new version.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR="${1:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/lateen-target}"
TOOLS="${LATEEN_TOOLS:-/var/tmp/lateen-tools}"
export PATH="$TOOLS/bin:$PATH"

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
need nginx || missing+=(nginx)
need wrk || missing+=(wrk)
need haproxy || missing+=(haproxy)
need taskset || missing+=(util-linux)
need python3 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# oha: the open-loop (fixed-rate) load, with coordinated-omission correction.
# Built in a directory of its own, not in the shared target directory.
need oha || env -u CARGO_TARGET_DIR cargo install -q --locked --root "$TOOLS" oha
if need rustup; then rustup target add wasm32-wasip1 >/dev/null; fi
bash filters/build.sh lateen-router lateen-fault lateen-ratelimit lateen-metrics
cargo build -q --profile wasm --target wasm32-wasip1 -p test-plugin-header-echo -p test-plugin-noop
cargo build -q --release -p lateen
LATEEN="$CARGO_TARGET_DIR/release/lateen"
WASM="$CARGO_TARGET_DIR/wasm32-wasip1/wasm"
# The baseline: another commit, in a worktree of its own with its own target directory (its
# filters speak its own host's config), rebuilt only when the commit changes.
BASE=""
if [ -n "${LATEEN_BASELINE:-}" ]; then
  rev=$(git rev-parse --short "$LATEEN_BASELINE")
  BASE_TREE="$TOOLS/baseline-$rev"; BASE_TARGET="$TOOLS/baseline-target"
  [ -d "$BASE_TREE" ] || git worktree add -q --detach "$BASE_TREE" "$rev"
  ( cd "$BASE_TREE" && export CARGO_TARGET_DIR="$BASE_TARGET" &&
    bash filters/build.sh lateen-router lateen-fault lateen-ratelimit lateen-metrics &&
    cargo build -q --release -p lateen )
  BASE="$rev"; BASE_LATEEN="$BASE_TARGET/release/lateen"; BASE_WASM="$BASE_TARGET/wasm32-wasip1/wasm"
fi
# 10k idle connections need more descriptors than the default soft limit.
ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true # before the configs go, or the proxies' watchers report them gone
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ok() { for _ in $(seq 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "bench: $1 never answered" >&2; exit 1; }
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# ---- upstream and peers ----
UP=$(free_port); NGX=$(free_port); HAP=$(free_port)
mkdir -p "$WORK/up" "$WORK/px" "$WORK/ha"
cat > "$WORK/up/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $WORK/up/pid; error_log $WORK/up/err.log;
events { worker_connections 16384; }
http { access_log off; server { listen 127.0.0.1:$UP backlog=4096; keepalive_requests 1000000;
  location / { return 200 "ok"; } } }
NGINX
cat > "$WORK/px/nginx.conf" <<NGINX
worker_processes 1; daemon off; pid $WORK/px/pid; error_log $WORK/px/err.log;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http { access_log off;
  upstream up { server 127.0.0.1:$UP; keepalive 256; }
  server { listen 127.0.0.1:$NGX backlog=4096; keepalive_requests 1000000; keepalive_timeout 300s;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
cat > "$WORK/ha/haproxy.cfg" <<HAP
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$HAP
  default_backend b
backend b
  server up 127.0.0.1:$UP maxconn 256
HAP
taskset -c 1 nginx -c "$WORK/up/nginx.conf" & PIDS+=($!)
taskset -c 0 nginx -c "$WORK/px/nginx.conf" & NGINX_PID=$!; PIDS+=($NGINX_PID)
taskset -c 0 haproxy -f "$WORK/ha/haproxy.cfg" -db & HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)
wait_ok "http://127.0.0.1:$UP/"

# ---- Lateen configs ----
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
  - name: main
    route: [{destination: {host: up.bench}}]
YAML
}
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
noop() { # $1 = name, $2 = plugin config
cat <<YAML
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: $1, namespace: istio-system}
spec:
  url: file://$WASM/test_plugin_noop.wasm
  pluginConfig: $2
YAML
}

# Starts a Lateen on a config from stdin (not a pipe: the variables must survive); sets
# LPORT, LADM and LPID.
start_lateen() { # $1 = name, [$2 = binary, $3 = its filters]
  local port adm dir="$WORK/lateen-$1" bin="${2:-$LATEEN}" filters="${3:-$WASM}"
  port=$(free_port); adm=$(free_port); mkdir -p "$dir"
  sed "s/{{PORT}}/$port/" > "$dir/config.yaml"
  taskset -c 0 "$bin" run --config "$dir" --concurrency 1 --stats-address off --health-address off \
    --admin-address "127.0.0.1:$adm" --filters-dir "$filters" --log-level warn & LPID=$!; PIDS+=($LPID)
  wait_ok "http://127.0.0.1:$adm/ready"
  [ "$(curl -s "http://127.0.0.1:$port/")" = "ok" ] || { echo "bench: lateen $1 does not answer ok" >&2; exit 1; }
  LPORT=$port; LADM=$adm
}

# Start-up is measured with the module cache warm, as on a restart or with modules compiled
# ahead (`lateen compile`); the cold path is priced apart in section 5.
"$LATEEN" compile "$WASM"/lateen_{router,fault,ratelimit,metrics}.wasm "$WASM"/test_plugin_{noop,header_echo}.wasm >/dev/null
declare -A PORT PID
start_lateen plain < <({ mesh "{{PORT}}"; one_route; }); PORT[plain]=$LPORT; PID[plain]=$LPID
START_RSS_PLAIN=$(rss_kib "$LPID")
start_lateen chain < <({ mesh "{{PORT}}" metrics; chain; }); PORT[chain]=$LPORT; PID[chain]=$LPID
START_RSS_CHAIN=$(rss_kib "$LPID")
# The same chain without the metrics filter, to price that filter alone.
start_lateen nometrics < <({ mesh "{{PORT}}"; chain; }); PORT[nometrics]=$LPORT; PID[nometrics]=$LPID
for n in 1 2 4 8; do
  start_lateen "n$n" < <({ mesh "{{PORT}}"; one_route; for i in $(seq "$n"); do noop "noop-$i" "{}"; done; })
  PORT[n$n]=$LPORT; PID[n$n]=$LPID
done
start_lateen header < <({ mesh "{{PORT}}"; one_route; noop header '{header: x-bench}'; }); PORT[header]=$LPORT; PID[header]=$LPID
BASE_ROWS=()
if [ -n "$BASE" ]; then
  "$BASE_LATEEN" compile "$BASE_WASM"/lateen_{router,fault,ratelimit,metrics}.wasm >/dev/null
  start_lateen bplain "$BASE_LATEEN" "$BASE_WASM" < <({ mesh "{{PORT}}"; one_route; }); PORT[bplain]=$LPORT; PID[bplain]=$LPID
  start_lateen bchain "$BASE_LATEEN" "$BASE_WASM" < <({ mesh "{{PORT}}" metrics; chain; }); PORT[bchain]=$LPORT; PID[bchain]=$LPID
  BASE_ROWS=(bplain bchain)
fi
wait_ok "http://127.0.0.1:$NGX/"; wait_ok "http://127.0.0.1:$HAP/"
# nginx serves from its worker process (the master only supervises): measure the worker.
PORT[nginx]=$NGX; PID[nginx]=$(pgrep -P "$NGINX_PID" | head -1); PORT[haproxy]=$HAP; PID[haproxy]=$HAPROXY_PID

# wrk, closed loop: "rps p50_us p99_us non2xx"
run_wrk() { # url conns
  taskset -c 1 wrk -t1 -c"$2" -d"${DUR}s" --latency "$1" | awk '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; if (v ~ /s$/) return (v+0)*1000000; return v }
    /Requests\/sec/ { rps=$2 } /^ +50%/ { p50=us($2) } /^ +99%/ { p99=us($2) }
    /Non-2xx/ { bad=$NF }
    END { printf "%d %d %d %s\n", rps, p50, p99, (bad==""?0:bad) }'
}
# oha at a fixed rate, open loop, with the target's CPU over the run:
# "p50_us p99_us cpu_ms_per_1000 rss_kib ok_share"
run_fixed() { # name rate
  local pid=${PID[$1]} t0 t1 out
  t0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 oha -z "${DUR}s" -q "$2" -c 64 --latency-correction --no-tui --output-format json \
    "http://127.0.0.1:${PORT[$1]}/" 2>/dev/null)
  t1=$(cpu_ticks "$pid")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1]); s = r["summary"]; lat = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {}); n = sum(codes.values())
ok = codes.get("200", 0) / n if n else 0
cpu_ms = (int(sys.argv[3]) - int(sys.argv[2])) * 1000 / int(sys.argv[4])
print("%d %d %.1f %s %.4f" % (lat["p50"] * 1e6, lat["p99"] * 1e6, cpu_ms * 1000 / max(n, 1), sys.argv[5], ok))
' "$out" "$t0" "$t1" "$TICK" "$(rss_kib "$pid")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

name_of() {
  case $1 in plain) echo "lateen, router only";; chain) echo "lateen, full standard chain";;
    nometrics) echo "lateen, full chain but metrics";;
    bplain) echo "$BASE, router only";; bchain) echo "$BASE, full standard chain";; *) echo "$1";; esac
}
echo "## 1-2. Forwarding: max rps (wrk, closed loop), $DUR s each"
printf "%-34s %10s %10s %10s %9s\n" proxy c16 c64 c256 "vs nginx"
declare -A KNEE
for p in nginx haproxy plain chain "${BASE_ROWS[@]}"; do
  line=""; best=0
  for c in 16 64 256; do
    read -r rps _ _ bad < <(run_wrk "http://127.0.0.1:${PORT[$p]}/" "$c")
    [ "$bad" = "0" ] || echo "  ($p c$c: $bad non-2xx)"
    line="$line $(printf "%10d" "$rps")"; [ "$rps" -gt "$best" ] && best=$rps
  done
  KNEE[$p]=$best
  printf "%-34s%s %9s\n" "$(name_of "$p")" "$line" "$(ratio "$best" "${KNEE[nginx]}")"
done
SLOWEST=$(printf "%s\n" "${KNEE[@]}" | sort -n | head -1)
RATE=$((SLOWEST / 2))
echo
echo "## 1-2. At a fixed $RATE rps (half the slowest knee), open loop (oha, latency-corrected)"
printf "%-34s %9s %9s %14s %9s %7s\n" proxy p50_us p99_us "cpu_ms/1000rq" rss_kib ok
declare -A FIXED_CPU
for p in nginx haproxy plain nometrics chain "${BASE_ROWS[@]}"; do
  read -r p50 p99 cpu rss ok < <(run_fixed "$p" "$RATE")
  FIXED_CPU[$p]=$cpu
  printf "%-34s %9d %9d %14s %9d %7s\n" "$(name_of "$p")" "$p50" "$p99" "$cpu" "$rss" "$ok"
done
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | sed -n 2p; }
if [ -n "$BASE" ]; then
  # Before/after: two more interleaved rounds of each pair at the same rate, medians of 3.
  declare -A AB
  for p in plain bplain chain bchain; do AB[$p]="${FIXED_CPU[$p]} "; done
  for round in 1 2; do
    for p in plain bplain chain bchain; do
      read -r _ _ cpu _ _ < <(run_fixed "$p" "$RATE"); AB[$p]+="$cpu "
    done
  done
  echo "this tree against $BASE (CPU-us per request, median of 3 interleaved): router only" \
    "$(median "${AB[plain]}") vs $(median "${AB[bplain]}") ($(ratio "$(median "${AB[plain]}")" "$(median "${AB[bplain]}")")x)," \
    "full chain $(median "${AB[chain]}") vs $(median "${AB[bchain]}") ($(ratio "$(median "${AB[chain]}")" "$(median "${AB[bchain]}")")x);" \
    "max rps $(ratio "${KNEE[plain]}" "${KNEE[bplain]}")x and $(ratio "${KNEE[chain]}" "${KNEE[bchain]}")x"
fi
# The metrics filter's price: three more interleaved rounds of the two chains, medians.
WITH="${FIXED_CPU[chain]} "; WITHOUT="${FIXED_CPU[nometrics]} "
for round in 1 2; do
  read -r _ _ cpu _ _ < <(run_fixed nometrics "$RATE"); WITHOUT+="$cpu "
  read -r _ _ cpu _ _ < <(run_fixed chain "$RATE"); WITH+="$cpu "
done
echo "the metrics filter costs $(awk -v a="$(median "$WITH")" -v b="$(median "$WITHOUT")" 'BEGIN { printf "%.1f", a - b }') CPU-us per request (median of 3: the full chain minus the same chain without it)"

echo
echo "## 3. Cost per filter at $RATE rps: N no-op proxy-wasm filters after the router"
echo "(3 interleaved rounds, medians: the machine's noise moves one run by more than a filter costs)"
printf "%-34s %9s %9s %14s %12s %12s\n" filters p50_us p99_us "cpu_us/rq" "+p50/filter" "+cpu/filter"
declare -A R50 R99 RCPU
CONFIGS=(plain n1 n2 n4 n8 header)
for round in 1 2 3; do
  for cfg in "${CONFIGS[@]}"; do
    read -r p50 p99 cpu _ _ < <(run_fixed "$cfg" "$RATE")
    R50[$cfg]+="$p50 "; R99[$cfg]+="$p99 "; RCPU[$cfg]+="$cpu "
  done
done
b50=$(median "${R50[plain]}"); bcpu=$(median "${RCPU[plain]}")
for cfg in "${CONFIGS[@]}"; do
  case $cfg in plain) name="N = 0 (router only)"; n=0;; header) name="1 header-setting filter"; n=1;; *) n=${cfg#n}; name="N = $n";; esac
  p50=$(median "${R50[$cfg]}"); p99=$(median "${R99[$cfg]}"); cpu=$(median "${RCPU[$cfg]}")
  if [ "$n" = 0 ]; then d50=-; dcpu=-; else
    d50=$(awk -v a="$p50" -v b="$b50" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }')
    dcpu=$(awk -v a="$cpu" -v b="$bcpu" -v n="$n" 'BEGIN { printf "%.2f", (a - b) / n }')
  fi
  printf "%-34s %9d %9d %14s %12s %12s\n" "$name" "$p50" "$p99" "$cpu" "$d50" "$dcpu"
done

echo
echo "## 4. Memory: RSS with idle keep-alive connections (each made one request)"
printf "%-34s %10s %10s %10s %12s\n" proxy "0 conns" "1k conns" "10k conns" "KiB/conn"
for p in nginx plain; do
  pid=${PID[$p]}; r0=$(rss_kib "$pid")
  r=$(taskset -c 1 python3 tests/bench/idle_conns.py "${PORT[$p]}" 1000 10000 "$pid")
  read -r r1k r10k <<<"$r"
  name=$p; [ "$p" = plain ] && name="lateen, router only"
  printf "%-34s %10d %10d %10d %12s\n" "$name" "$r0" "$r1k" "$r10k" \
    "$(awk -v a="$r10k" -v b="$r0" 'BEGIN { printf "%.1f", (a - b) / 10000 }')"
done
echo "RSS at start: router only $START_RSS_PLAIN KiB, full standard chain $START_RSS_CHAIN KiB"

echo
echo "## 5. Plugin cold path (router module)"
CACHE="$WORK/cold-cache"
first=$("$LATEEN" compile --cache-dir "$CACHE" "$WASM/lateen_router.wasm")
second=$("$LATEEN" compile --cache-dir "$CACHE" "$WASM/lateen_router.wasm")
echo "  first run:  ${first#*: }"
echo "  second run: ${second#*: }"
port=$(free_port); adm=$(free_port); mkdir -p "$WORK/cold"
{ mesh "$port"; one_route; } > "$WORK/cold/config.yaml"
taskset -c 0 "$LATEEN" run --config "$WORK/cold" --concurrency 1 --stats-address off --health-address off \
  --admin-address "127.0.0.1:$adm" --filters-dir "$WASM" --cache-dir "$CACHE" --log-level warn & cold=$!; PIDS+=($cold)
wait_ok "http://127.0.0.1:$adm/ready"
echo "  first request after start (instances are made at config load): $(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/" | awk '{ printf "%.2f ms", $1 * 1000 }'), the next: $(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/" | awk '{ printf "%.2f ms", $1 * 1000 }')"
kill "$cold"

echo
echo "## 6. Swap under load: a plugin's configuration swapped every second (wrk, c16)"
mkdir -p "$WORK/swap"; SWP=$(free_port); SWA=$(free_port)
swap_config() { # $1 = plugin config value
  { mesh "$SWP"; cat <<YAML
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: echo, namespace: istio-system}
spec:
  url: file://$WASM/test_plugin_header_echo.wasm
  pluginConfig: {value: "$1"}
YAML
  one_route; } > "$WORK/swap/.config.tmp" && mv "$WORK/swap/.config.tmp" "$WORK/swap/config.yaml"
}
swap_config v0
taskset -c 0 "$LATEEN" run --config "$WORK/swap" --concurrency 1 --stats-address off --health-address off \
  --admin-address "127.0.0.1:$SWA" --filters-dir "$WASM" --log-level warn & PIDS+=($!)
wait_ok "http://127.0.0.1:$SWA/ready"
printf "%-34s %10s %9s %9s %8s\n" "" rps p50_us p99_us non2xx
read -r rps p50 p99 bad < <(run_wrk "http://127.0.0.1:$SWP/" 16)
printf "%-34s %10d %9d %9d %8s\n" "steady" "$rps" "$p50" "$p99" "$bad"
( for i in $(seq 1 "$DUR"); do sleep 1; swap_config "v$i"; done ) & SWAPPER=$!
read -r rps p50 p99 bad < <(run_wrk "http://127.0.0.1:$SWP/" 16)
wait "$SWAPPER" || true
reloads=$(curl -s "http://127.0.0.1:$SWA/stats/prometheus" | awk '/config_reload_total{result="success"}/ {print $2}')
printf "%-34s %10d %9d %9d %8s\n" "one swap per second ($reloads reloads)" "$rps" "$p50" "$p99" "$bad"

echo
echo "## 7. Swap latency: write to first response from the new plugin config (idle proxy)"
python3 tests/bench/swap.py "$LATEEN" "$WASM" 15
