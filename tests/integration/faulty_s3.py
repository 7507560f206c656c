"""A small HTTP proxy between workers and S3 that injects faults on a fixed schedule.

Every `every`-th request gets the next fault of `faults` instead of (or on top of) the real answer:

    throttle   503 SlowDown, as S3 answers when asked too fast
    error      500 InternalError
    reset      the connection closed before any answer
    slow       the answer held back longer than the client's read timeout
    truncate   the real status and headers, then half the body and a closed connection

`deny` holds key fragments that always get 403 AccessDenied (a permanent fault); `hold(fragment)`
keeps reads (GET) of matching keys waiting until `release(fragment)`, so a test can stop a chunk at
a known point instead of racing it. Every request is recorded in `seen` (method, path).
"""

from __future__ import annotations

import http.client
import itertools
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOLD_AT_MOST = 45  # seconds; below the workers' S3 read timeout (60 s by default)
_ERRORS = {
    "throttle": (503, "SlowDown", "Please reduce your request rate."),
    "error": (500, "InternalError", "We encountered an internal error. Please try again."),
    "deny": (403, "AccessDenied", "Access Denied"),
}


class FaultySchedule:
    def __init__(self, every: int, faults: list[str], slow_seconds: float = 3.0):
        self.every, self.slow_seconds = every, slow_seconds
        self.faults = itertools.cycle(faults)
        self.deny: list[str] = []
        self.held: dict[str, threading.Event] = {}
        self.seen: list[tuple[str, str]] = []
        self.owed: str | None = None
        self.lock = threading.Lock()
        self.requests = 0
        self.injected: dict[str, int] = {}

    def inject(self, every: int, faults: list[str] | None = None) -> None:
        """From now on every `every`-th request gets the next of `faults` (0: none)."""
        with self.lock:
            if faults is not None:
                self.faults = itertools.cycle(faults)
            self.every = every

    def hold(self, fragment: str) -> None:
        self.held[fragment] = threading.Event()

    def release(self, fragment: str) -> None:
        self.held.pop(fragment).set()

    def waiting(self, method: str, path: str) -> threading.Event | None:
        if method != "GET":
            return None
        return next((gate for fragment, gate in list(self.held.items()) if fragment in path), None)

    def requests_for(self, fragment: str) -> int:
        with self.lock:
            return sum(fragment in path for _, path in self.seen)

    def next_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            self.requests += 1
            self.seen.append((method, path))
            if any(fragment in path for fragment in self.deny):
                fault = "deny"
            elif self.owed and method == "GET":
                fault, self.owed = self.owed, None
            elif self.every and self.requests % self.every == 0:
                fault = next(self.faults)
                if fault == "truncate" and method != "GET":
                    self.owed = fault  # only an object's bytes can be cut short: the next GET's
                    return None
            else:
                return None
            self.injected[fault] = self.injected.get(fault, 0) + 1
            return fault


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return bytes(data)
                data += chunk
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _error(self, fault: str) -> None:
        status, code, message = _ERRORS[fault]
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                f"<Message>{message}</Message><Resource>{self.path}</Resource></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _relay(self, body: bytes, truncate: bool) -> None:
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            headers["Content-Length"] = str(len(body))
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        # A HEAD answer has no body but tells the object's length.
        length = answer.getheader("Content-Length", "0") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if truncate and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._reset()
            return
        self.wfile.write(data)

    def _handle(self) -> None:
        body = self._body()
        gate = self.server.schedule.waiting(self.command, self.path)
        if gate is not None:
            gate.wait(HOLD_AT_MOST)
        fault = self.server.schedule.next_fault(self.command, self.path)
        if fault in _ERRORS:
            return self._error(fault)
        if fault == "reset":
            return self._reset()
        if fault == "slow":
            time.sleep(self.server.schedule.slow_seconds)
        self._relay(body, truncate=fault == "truncate")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up on a slow answer closed its end: expected here

    def __init__(self, upstream: str, schedule: FaultySchedule):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream, self.schedule = urlsplit(upstream).netloc, schedule


def start_proxy(upstream: str, schedule: FaultySchedule) -> tuple[str, _ProxyServer]:
    """Serve in a thread; returns the proxy's endpoint URL and the server (shutdown() stops it)."""
    server = _ProxyServer(upstream, schedule)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server
