"""Fault soak: Lateen with the standard chain under steady load while everything around it
fails, and what was lost.

Usage: python3 soak.py --bin LATEEN --wasm WASM_DIR [--seconds 180] [--rate 150]

Loopback only; every process it starts is stopped when it ends (or after --seconds plus a
fixed margin). The load, for the whole run:
  HTTP/2, kept alive      h2load, 8 clients, --rate requests/s each
  HTTP/1.1, kept alive    h2load --h1, 8 clients, --rate requests/s each
  HTTP/1.1, new conns     a Python loop, one connection per request, ~40 requests/s
  mid-response resets     a Python loop, ~10 requests/s to /reset, whose upstream sends the
                          headers and part of the body, then resets (expected failures)
Meanwhile: an upstream endpoint (of three) is killed every 4 s and restarted 1.5 s later;
Redis, the global rate limit's store, is killed every 20 s and restarted 4 s later (the
filter fails open, as Envoy's does); a plugin module is swapped every second (two builds of
one plugin, told apart by a custom section, and a new plugin config each time); the whole
config is reloaded with a route change every 5 s; and a plugin that traps on every 100th
request it serves runs with FAIL_OPEN.

Prints requests sent, answered 2xx, failures by Envoy response flag (from the access log),
expected failures, RSS and open descriptors at start and end. Exits 1 when a target is
missed: any unexpected failure, RSS more than 20 % over its start, descriptor growth.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

# The trap plugin's module, the header-echo module (swapped) and the global rate limit.
CHAIN_PLUGINS = """---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: trap, namespace: istio-system}}
spec:
  url: file://{wasm}/test_plugin_trap.wasm
  failStrategy: FAIL_OPEN
  pluginConfig: {{trapEvery: 100}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: swapped, namespace: istio-system}}
spec:
  url: file://{swapped}
  pluginConfig: {{value: "{value}"}}
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: global-limit, namespace: istio-system}}
spec:
  url: file://{wasm}/lateen_ratelimit.wasm
  pluginConfig:
    rules:
    - name: shared
      mode: global
      tokenBucket: {{maxTokens: 1000000000, tokensPerFill: 1000000000, fillIntervalMs: 1000}}
"""

CONFIG = """apiVersion: lateen.io/v1alpha1
kind: Bootstrap
metadata: {{name: lateen, namespace: istio-system}}
spec:
  workload: {{namespace: istio-system, labels: {{istio: ingressgateway}}}}
  redis: {{address: "127.0.0.1:{redis}"}}
  telemetry:
    metrics: true
    accessLog:
      file: {log}
      encoding: JSON
      labels: {{code: "%RESPONSE_CODE%", flags: "%RESPONSE_FLAGS%", path: "%REQ(:PATH)%", proto: "%PROTOCOL%",
               details: "%RESPONSE_CODE_DETAILS%", upstream: "%UPSTREAM_HOST%", start: "%START_TIME%", ms: "%DURATION%"}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["*"]
    bind: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: up, namespace: soak}}
spec:
  hosts: [up.soak]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
{endpoints}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reset, namespace: soak}}
spec:
  hosts: [reset.soak]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {reset}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: up, namespace: soak}}
spec:
  host: up.soak
  trafficPolicy:
    # Idle upstream connections close after 1 s, so descriptors at rest compare.
    connectionPool: {{http: {{idleTimeout: 1s}}}}
    # One host of three at most: ejection times grow with each ejection, and with two hosts
    # out the third (killed in its turn) would be the only one left to retry on.
    outlierDetection: {{consecutiveGatewayErrors: 1, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 34}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: soak}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - name: reset
    match: [{{uri: {{prefix: /reset}}}}]
    route: [{{destination: {{host: reset.soak}}}}]
  - name: main
    fault: {{abort: {{httpStatus: 503, percentage: {{value: 0}}}}}}
    headers: {{request: {{set: {{x-soak-generation: "{generation}"}}}}}}
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: "connect-failure,reset,gateway-error,refused-stream"}}
    route: [{{destination: {{host: up.soak}}}}]
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, limit=30.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"soak: nothing listens on {port} after {limit} s")


def with_custom_section(wasm: bytes, name: str) -> bytes:
    """The same module with a custom section appended: other bytes, other digest."""
    payload = bytes([len(name)]) + name.encode()
    size, leb = len(payload), b""
    while True:
        b = size & 0x7F
        size >>= 7
        leb += bytes([b | (0x80 if size else 0)])
        if not size:
            break
    return wasm + b"\x00" + leb + payload


class ResetUpstream(threading.Thread):
    """Answers each request with its headers and part of the body, then resets the
    connection (SO_LINGER 0): a response broken mid-way, which no retry may save."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def serve(c):
        try:
            c.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n" + b"p" * 100)
            time.sleep(0.01)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        finally:
            c.close()


class Procs:
    """Child processes, all stopped at exit."""

    def __init__(self):
        self.all = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.all.append(p)
        return p

    def stop_all(self):
        for p in self.all:
            if p.poll() is None:
                p.kill()
        for p in self.all:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def proc_figures(pid):
    status = open(f"/proc/{pid}/status").read()
    kb = lambda key: int(re.search(rf"^{key}:\s+(\d+)", status, re.M).group(1))  # noqa: E731
    return {"rss_kb": kb("VmRSS"), "anon_kb": kb("RssAnon"), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def h2load(args, port, seconds, clients, rate, extra=()):
    """h2load for `seconds` at `rate` requests/s per client; its summary, parsed."""
    cmd = ["h2load", *extra, "-c", str(clients), "--rps", str(rate), "-D", str(seconds),
           "-m", "1", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not m or not codes:
        args.errors.append(f"h2load {' '.join(extra)}: no summary in\n{out}")
        return {"sent": 0, "2xx": 0, "failed": 0}
    # Requests still in flight when the duration ends are not "done": they were cut by
    # h2load, not failed by the proxy.
    _total, _started, done, _ok, failed, errored, tmo = map(int, m.groups())
    r = {"sent": done, "2xx": int(codes.group(1))}
    for k, v in (("failed", failed), ("errored", errored), ("timeout", tmo)):
        if v:
            r[f"h2load {k}"] = v
    return r


def loop(port, path, rate, stop, tally, new_conn=True):
    """One request per 1/rate s, each on a new connection; counts answers."""
    gap = 1.0 / rate
    nxt = time.monotonic()
    while not stop.is_set():
        nxt += gap
        tally["sent"] += 1
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            key = "2xx" if 200 <= r.status < 300 else f"status {r.status}"
            tally[key] = tally.get(key, 0) + 1
        except (OSError, http.client.HTTPException) as e:
            key = f"error {type(e).__name__}"
            tally[key] = tally.get(key, 0) + 1
        time.sleep(max(0.0, nxt - time.monotonic()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--wasm", required=True)
    ap.add_argument("--seconds", type=int, default=180)
    ap.add_argument("--rate", type=int, default=150, help="requests/s per h2load client")
    args = ap.parse_args()
    args.errors = []
    procs = Procs()
    # A hard stop, whatever happens.
    signal.signal(signal.SIGALRM, lambda *_: (procs.stop_all(), os._exit(2)))
    signal.alarm(args.seconds + 240)
    try:
        return run(args, procs)
    finally:
        procs.stop_all()


def run(args, procs):
    work = tempfile.mkdtemp(prefix="lateen-soak-")
    ups = [free_port() for _ in range(3)]
    backends = {}

    def start_backend(i):
        backends[i] = procs.start([args.bin, "sample-backend", "--name", f"e{i}", "--listen", f"127.0.0.1:{ups[i]}"])

    for i in range(3):
        start_backend(i)
    reset = ResetUpstream()
    reset.start()
    redis_port = free_port()

    def start_redis():
        return procs.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])

    redis = start_redis()
    for p in ups + [redis_port]:
        wait_port(p)

    wasm = open(os.path.join(args.wasm, "test_plugin_header_echo.wasm"), "rb").read()
    builds = [os.path.join(work, f"echo-{v}.wasm") for v in ("a", "b")]
    for path, v in zip(builds, ("a", "b")):
        open(path, "wb").write(with_custom_section(wasm, f"soak-{v}"))

    port, admin = free_port(), free_port()
    cfg_dir = os.path.join(work, "config")
    os.mkdir(cfg_dir)
    log = os.path.join(work, "access.log")
    endpoints = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {p}}}}}" for p in ups)
    state = {"swap": 0, "generation": 0}

    def write_config():
        text = CONFIG.format(redis=redis_port, log=log, port=port, endpoints=endpoints, reset=reset.port,
                             generation=state["generation"]) + CHAIN_PLUGINS.format(
            wasm=args.wasm, swapped=builds[state["swap"] % 2], value=f"v{state['swap']}")
        tmp = os.path.join(cfg_dir, ".config.yaml.tmp")
        open(tmp, "w").write(text)
        os.rename(tmp, os.path.join(cfg_dir, "config.yaml"))

    write_config()
    proxy_log = open(os.path.join(work, "lateen.log"), "w")
    proxy = procs.start([args.bin, "run", "--config", cfg_dir, "--concurrency", "1", "--stats-address", "off",
                         "--health-address", "off", "--admin-address", f"127.0.0.1:{admin}",
                         "--filters-dir", args.wasm, "--log-level", "warn"], stderr=proxy_log)
    wait_port(port)
    # Warm up, then the figures at rest.
    h2load(args, port, 3, 4, args.rate)
    time.sleep(2.5)
    start = proc_figures(proxy.pid)

    stop = threading.Event()
    tallies = {"new connections": {"sent": 0, "2xx": 0}, "resets": {"sent": 0, "2xx": 0}}
    threads = [
        threading.Thread(target=loop, args=(port, "/", 40, stop, tallies["new connections"]), daemon=True),
        threading.Thread(target=loop, args=(port, "/reset", 10, stop, tallies["resets"]), daemon=True),
    ]
    results = {}

    def load(name, extra):
        results[name] = h2load(args, port, args.seconds, 8, args.rate, extra)

    threads += [
        threading.Thread(target=load, args=("HTTP/2 kept alive", ()), daemon=True),
        threading.Thread(target=load, args=("HTTP/1.1 kept alive", ("--h1",)), daemon=True),
    ]
    for t in threads:
        t.start()

    events = {"endpoint kills": 0, "redis kills": 0, "plugin swaps": 0, "config reloads": 0}
    t0 = time.monotonic()
    next_kill, next_redis, next_swap, next_reload = 4.0, 20.0, 1.0, 5.0
    down = {}
    while time.monotonic() - t0 < args.seconds:
        now = time.monotonic() - t0
        for i, at in list(down.items()):
            if now >= at:
                start_backend(i)
                del down[i]
        if redis is None and now >= next_redis - 16.0:
            redis = start_redis()
        if now >= next_kill and not down:
            i = events["endpoint kills"] % 3
            backends[i].kill()
            backends[i].wait()
            down[i] = now + 1.5
            events["endpoint kills"] += 1
            next_kill += 4.0
        if now >= next_redis and redis is not None:
            redis.kill()
            redis.wait()
            redis = None
            events["redis kills"] += 1
            next_redis += 20.0
        if now >= next_swap:
            state["swap"] += 1
            write_config()
            events["plugin swaps"] += 1
            next_swap += 1.0
        if now >= next_reload:
            state["generation"] += 1
            write_config()
            events["config reloads"] += 1
            next_reload += 5.0
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=90)
    for i in list(down):
        start_backend(i)
    time.sleep(2.5)
    end = proc_figures(proxy.pid)

    # Failures by flag, from the access log (written at least every second).
    time.sleep(1.5)
    by_flag, reset_lines, samples = {}, 0, []
    for line in open(log):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if str(e.get("path", "")).startswith("/reset"):
            reset_lines += 1
            continue
        code = e.get("code") or 0
        if not 200 <= code < 300:
            key = f"{code} {e.get('flags') or '-'}"
            by_flag[key] = by_flag.get(key, 0) + 1
            if len(samples) < 5:
                samples.append(e)
    stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?format=json", timeout=5))["stats"]
    stat = {s["name"]: s["value"] for s in stats}
    prom = urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats/prometheus", timeout=5).read().decode()
    fail_open = sum(float(l.split()[-1]) for l in prom.splitlines() if l.startswith("ratelimit_failure_mode_allowed"))

    print(f"soak: {args.seconds} s, {args.rate} rps per h2load client (8 HTTP/2 + 8 HTTP/1.1)")
    print("events: " + ", ".join(f"{k} {v}" for k, v in events.items()))
    sent = ok = unexpected = 0
    for name, r in list(results.items()) + [("HTTP/1.1 new connections", tallies["new connections"])]:
        failed = r["sent"] - r["2xx"]
        sent, ok, unexpected = sent + r["sent"], ok + r["2xx"], unexpected + failed
        extra = {k: v for k, v in r.items() if k not in ("sent", "2xx")}
        print(f"  {name:<26} sent {r['sent']:>8}  2xx {r['2xx']:>8}  failed {failed:>5}  {extra or ''}")
    rs = tallies["resets"]
    print(f"  {'mid-response resets':<26} sent {rs['sent']:>8}  (expected failures: all; "
          + ", ".join(f"{k} {v}" for k, v in rs.items() if k != "sent") + ")")
    print(f"requests sent {sent + rs['sent']}, answered 2xx {ok}, unexpected failures {unexpected}, "
          f"expected failures {rs['sent']} (mid-response resets)")
    print("failures by code and flag (access log, /reset excluded): " + (json.dumps(by_flag) if by_flag else "none"))
    for e in samples:
        print(f"  e.g. {json.dumps(e)}")
    traps = sum(v for k, v in stat.items() if k.endswith("trap.traps.trap") or (k.startswith("wasm.istio-system/trap.traps")))
    print(f"trap plugin traps (FAIL_OPEN, requests served anyway): {int(traps)}")
    print(f"global rate limit while Redis was down: fail open, {int(fail_open)} requests allowed without the store")
    print(f"proxy at start: RSS {start['rss_kb']} KiB (anon {start['anon_kb']}), {start['fds']} fds; "
          f"at end: RSS {end['rss_kb']} KiB (anon {end['anon_kb']}), {end['fds']} fds")
    growth = (end["rss_kb"] - start["rss_kb"]) / start["rss_kb"] * 100
    print(f"RSS growth {growth:+.1f} % (target <= 20 %), descriptors {end['fds'] - start['fds']:+d} (target <= 0)")
    missed = list(args.errors)
    if unexpected:
        missed.append(f"{unexpected} unexpected failures")
    if growth > 20:
        missed.append(f"RSS grew {growth:.1f} %")
    if end["fds"] > start["fds"]:
        missed.append(f"descriptors grew from {start['fds']} to {end['fds']}")
    if proxy.poll() is not None:
        missed.append(f"the proxy exited ({proxy.returncode})")
    if events["endpoint kills"] == 0 or traps == 0:
        missed.append("the faults did not happen (run longer)")
    if missed:
        print("soak: MISSED: " + "; ".join(missed))
        print(f"(work dir kept: {work})")
        return 1
    print("soak: all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
