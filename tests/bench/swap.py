"""Swap latency: how long after a config write the first response comes from the new version.

Usage: python3 swap.py LATEEN_BINARY WASM_DIR [ROUNDS]

Two ways an operator changes a plugin's configuration, each ROUNDS times (default 15):
  file edit:  config.yaml rewritten in place, as `kubectl cp` or an editor's save does;
  ConfigMap:  the layout kubelet makes (config.yaml -> ..data/config.yaml, ..data -> ..<ts>),
              a new version directory, then the `..data` symlink swapped by rename.
The plugin (header-echo) adds `x-plugin-added: <value>` to each request; the upstream here
echoes it back, so a poller on a kept-alive connection sees the first new answer. Prints the
median and the worst, in ms. A bench, not a test: the figures are not asserted.
"""

import http.client
import http.server
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without TCP_NODELAY the second waits for the
    # proxy's delayed ACK, 40 ms a request, and the poll would measure that.
    disable_nagle_algorithm = True

    def do_GET(self):
        value = (self.headers.get("x-plugin-added") or "").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(value)))
        self.end_headers()
        self.wfile.write(value)

    def log_message(self, *args):
        pass


def config(port, up, wasm, value):
    return f"""apiVersion: networking.istio.io/v1
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
metadata: {{name: up, namespace: bench}}
spec:
  hosts: [up.bench]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {up}}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: bench}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: up.bench}}}}]
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: echo, namespace: istio-system}}
spec:
  url: file://{wasm}/test_plugin_header_echo.wasm
  pluginConfig: {{value: "{value}"}}
"""


def get(conn):
    conn.request("GET", "/")
    r = conn.getresponse()
    return r.read().decode()


def wait_for(port, value, limit=5.0):
    """Polls on one kept-alive connection until the answer is `value`; the time it took."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            if get(conn) == value:
                return time.monotonic()
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        time.sleep(0.0005)
    raise SystemExit(f"swap: {value} never answered within {limit} s")


def measure(name, write, port, rounds):
    times = []
    for i in range(rounds):
        value = f"{name}-{i}"
        # Settle, so that one round's reload is not still running when the next write lands.
        time.sleep(0.3)
        done = {}
        # The poller runs before the write so that its first request follows it at once.
        t = threading.Thread(target=lambda: done.setdefault("at", wait_for(port, value)))
        t.start()
        written = time.monotonic()
        write(value)
        t.join()
        times.append((done["at"] - written) * 1000)
    times.sort()
    print(
        f"  {name:<34} median {statistics.median(times):7.1f} ms   worst {times[-1]:7.1f} ms"
        f"   ({rounds} swaps)"
    )
    return statistics.median(times)


def main():
    lateen, wasm = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    up = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=up.serve_forever, daemon=True).start()
    up_port = up.server_address[1]
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "config.yaml")
        with open(path, "w") as f:
            f.write(config(port, up_port, wasm, "start"))
        proc = subprocess.Popen(
            [lateen, "run", "--config", d, "--concurrency", "1", "--stats-address", "off",
             "--health-address", "off", "--admin-address", f"127.0.0.1:{admin}",
             "--filters-dir", wasm, "--log-level", "warn"]
        )
        try:
            wait_for(port, "start", limit=30)

            def edit(value):
                with open(path, "w") as f:
                    f.write(config(port, up_port, wasm, value))

            file_ms = measure("file edit", edit, port, rounds)

            # Lay the directory out as a ConfigMap volume, then swap versions as kubelet does.
            def swap(value):
                vdir = os.path.join(d, f"..{value}")
                os.mkdir(vdir)
                with open(os.path.join(vdir, "config.yaml"), "w") as f:
                    f.write(config(port, up_port, wasm, value))
                tmp = os.path.join(d, "..data_tmp")
                os.symlink(f"..{value}", tmp)
                os.rename(tmp, os.path.join(d, "..data"))

            swap("cm-start")
            os.remove(path)
            os.symlink("..data/config.yaml", path)
            wait_for(port, "cm-start")
            cm_ms = measure("ConfigMap ..data symlink swap", swap, port, rounds)
            print(f"swap medians: file edit {file_ms:.1f} ms, ConfigMap {cm_ms:.1f} ms (target <= 50)")
        finally:
            proc.terminate()
            proc.wait()
            up.shutdown()


if __name__ == "__main__":
    main()
