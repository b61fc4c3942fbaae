"""A fault-injecting HTTP proxy in front of an S3 server (the tests' moto), for retry tests.

For a fraction of the requests it sees (decided by a seeded random generator, so a single-threaded
client meets the same faults on every run) it injects one fault, drawn from ``kinds``:

- ``500``: answers ``500 InternalError`` without forwarding the request;
- ``503``: answers ``503 ServiceUnavailable`` without forwarding;
- ``slowdown``: answers ``503 SlowDown`` without forwarding (S3's throttling answer, which botocore
  backs off from for longer, and after which its adaptive mode lowers the client's request rate);
- ``forwarded-500``: forwards the request, then answers ``500`` instead of the server's answer —
  the write happened but the client sees an error and retries it (the dangerous case for a
  conditional create: its retry meets its own object);
- ``drop``: reads the request and closes the connection without answering (not forwarded).

``kinds`` defaults to :data:`KINDS`, those an independent probe injected (no ``slowdown``).
Every other request is forwarded and its answer returned. ``fraction`` may be changed while the
proxy runs (a test stops the faults by setting it to 0); :meth:`S3FaultProxy.plan` decides the next
requests' fate exactly (a kind, or None to forward) before the random faults resume. ``requests``
counts what the proxy saw, ``faults`` the faults injected per kind::

    with S3FaultProxy(s3_server, fraction=0.3, seed=7) as proxy:
        objects = Objects(endpoint_url=proxy.url)
        ...
        print(proxy.requests, proxy.faults)
"""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
from collections import Counter, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

Answer = tuple[int, str, list[tuple[str, str]], bytes]
"""Status, reason, headers and body of the server's answer."""
KINDS = ("500", "503", "forwarded-500", "drop")
ALL_KINDS = (*KINDS, "slowdown")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "expect", "content-length"}
_ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
               "<RequestId>s3faults</RequestId></Error>")
_ANSWERS = {"500": (500, "InternalError", "We encountered an internal error. Please try again."),
            "forwarded-500": (500, "InternalError", "We encountered an internal error. Please try again."),
            "503": (503, "ServiceUnavailable", "Please reduce your request rate."),
            "slowdown": (503, "SlowDown", "Please reduce your request rate.")}


class S3FaultProxy:
    """The proxy (see the module docstring); a context manager whose ``url`` is its endpoint."""

    def __init__(self, upstream: str, *, fraction: float, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> None:
        unknown = set(kinds) - set(ALL_KINDS)
        if unknown or not kinds:
            raise ValueError(f"fault kinds must be some of {ALL_KINDS}, not {sorted(unknown) or 'none'}")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fraction, self.kinds = fraction, kinds
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()  # the clients' connections being served
        self._closed = threading.Condition(self._lock)
        self._plan: deque[str | None] = deque()
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="s3faults", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def injected(self) -> int:
        return sum(self.faults.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.faults.clear()

    def plan(self, fates: Iterable[str | None]) -> None:
        """The next requests get these fates, in order: a fault kind, or None to forward one."""
        fates = list(fates)
        if set(fates) - {None, *ALL_KINDS}:
            raise ValueError(f"fates must be None or some of {ALL_KINDS}, not {fates}")
        with self._lock:
            self._plan.extend(fates)

    def decide(self) -> str | None:
        """Count one request; the fault to inject into it, or None to forward it untouched."""
        with self._lock:
            self.requests += 1
            if self._plan:
                kind = self._plan.popleft()
            elif self._random.random() < self.fraction:
                kind = self._random.choice(self.kinds)
            else:
                kind = None
            if kind is not None:
                self.faults[kind] += 1
            return kind

    def __enter__(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Stop accepting, end every kept-alive connection (their handlers then close their upstream
        connections) and wait for them, so no socket is left for the garbage collector."""
        self._server.shutdown()
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            self._closed.wait_for(lambda: not self._open, timeout=10)
        self._server.server_close()
        self._thread.join(timeout=10)

    def opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.add(connection)

    def closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._open.discard(connection)
            self._closed.notify_all()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class _Handler(BaseHTTPRequestHandler):
    """One client connection; ``proxy`` is set on the subclass :func:`_handler_for` makes."""

    proxy: S3FaultProxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are written apart: no delayed-ACK stall

    upstream: http.client.HTTPConnection | None = None
    """This client connection's kept-alive connection to the server, closed with it."""

    def setup(self) -> None:
        super().setup()
        self.proxy.opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            if self.upstream is not None:
                self.upstream.close()
            self.proxy.closed(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """Send the request upstream on the kept-alive connection (a new one if it broke)."""
        for fresh in (False, True):
            if self.upstream is None or fresh:
                if self.upstream is not None:
                    self.upstream.close()
                self.upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=30)
            try:
                self.upstream.request(self.command, self.path, headers=dict(headers),
                                      body=body if body or self.command in ("PUT", "POST") else None)
                response = self.upstream.getresponse()
                return response.status, response.reason, response.getheaders(), response.read()
            except (http.client.HTTPException, ConnectionError):
                if fresh:
                    raise
        raise AssertionError("unreachable")

    def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, kind: str) -> None:
        status, code, message = _ANSWERS[kind]
        body = _ERROR_BODY.format(code=code, message=message).encode()
        self._answer(status, code, [("Content-Type", "application/xml")], body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _handle(self) -> None:
        body = _read_body(self)
        kind = self.proxy.decide()
        if kind == "drop":
            self._drop()
            return
        if kind in ("500", "503", "slowdown"):
            self._error(kind)
            return
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        if body:
            headers.append(("Content-Length", str(len(body))))
        status, reason, answer_headers, data = self._forward(headers, body)
        if kind == "forwarded-500":
            self._error(kind)
            return
        self._answer(status, reason, answer_headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def _handler_for(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"proxy": proxy})
