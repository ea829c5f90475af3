"""Opens idle keep-alive connections to a proxy and reports its RSS at each step.

Each connection sends one GET and reads the answer, so the proxy has set it up fully, then
stays open and idle. Usage: python3 idle_conns.py PORT STEP1 STEP2 PID
Prints the proxy's VmRSS (KiB) after STEP1 and after STEP2 connections, space-separated.
"""
import socket
import sys
import time

port, steps, pid = int(sys.argv[1]), [int(a) for a in sys.argv[2:4]], sys.argv[4]
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def answered(s):
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"ok"):
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return data


conns, out = [], []
for target in steps:
    while len(conns) < target:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(REQUEST)
        answered(s)
        conns.append(s)
    time.sleep(1)  # let the proxy settle (allocator, pools)
    out.append(str(rss()))
print(" ".join(out))
