"""A fault-injecting HTTP proxy in front of the emulated API server, for the fault suite.

The operator's kubeconfig points at the proxy (:func:`harness.cluster.write_kubeconfig` with
:attr:`ApiFaultProxy.url`); the tests and the Job runner keep talking to the emulator in-process.

- **Errors:** for a ``fraction`` of the non-watch calls (decided by a seeded generator) it answers,
  without forwarding, one of ``kinds``: ``429`` (``TooManyRequests`` with ``Retry-After``, as an
  API server's priority-and-fairness throttling does), ``500`` (``InternalError``), or
  ``forwarded-500`` (forwarded, then answered ``500``: the call took effect but the client sees an
  error). ``fraction`` may be changed while it runs.
- **Watch outage:** :meth:`outage` cuts every open watch stream (its connection is closed mid-stream)
  and, for the given seconds, refuses every new watch (``503 ServiceUnavailable``), as an API server
  that restarts or a load balancer that drops long connections would. Other calls pass meanwhile.

``counts`` counts per kind: ``calls`` and ``watches`` seen, each fault kind injected, ``watch-cut``
and ``watch-refused``::

    with ApiFaultProxy(api.api_url, fraction=0.2, seed=1) as proxy:
        write_kubeconfig(tmp / "kubeconfig", proxy.url)
        ...
        proxy.outage(10)
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from types import TracebackType

import aiohttp
import aiohttp.web

KINDS = ("429", "500", "forwarded-500")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
               "host", "content-length", "content-encoding"}
_ANSWERS = {"429": (429, "TooManyRequests", "Too many requests, please try again later."),
            "500": (500, "InternalError", "Internal error occurred: injected by the fault proxy."),
            "forwarded-500": (500, "InternalError", "Internal error occurred: injected by the fault proxy."),
            "watch-refused": (503, "ServiceUnavailable", "The watch is refused: an API server outage.")}


def _status(kind: str, retry_after: int) -> aiohttp.web.Response:
    code, reason, message = _ANSWERS[kind]
    body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": code,
            "reason": reason, "message": message}
    headers = {}
    if code == 429:
        body["details"] = {"retryAfterSeconds": retry_after}
        headers["Retry-After"] = str(retry_after)
    return aiohttp.web.Response(status=code, text=json.dumps(body), content_type="application/json", headers=headers)


class ApiFaultProxy:
    """The proxy (see the module docstring); a context manager whose ``url`` is its endpoint."""

    def __init__(self, upstream: str, *, fraction: float = 0.0, seed: int = 0, kinds: tuple[str, ...] = ("429", "500"),
                 retry_after_seconds: int = 1) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"fault kinds must be some of {KINDS}, not {sorted(unknown) or 'none'}")
        self.upstream = upstream.rstrip("/")
        self.fraction, self.kinds, self.retry_after = fraction, kinds, retry_after_seconds
        self.counts: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._outage_until = 0.0
        self._watchers: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ---- control (any thread) ----------------------------------------------------------------

    def outage(self, seconds: float) -> None:
        """Cut every open watch now and refuse new ones for ``seconds``."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cut_watches)

    def _cut_watches(self) -> None:
        for cut in list(self._watchers):
            cut.set()

    @property
    def in_outage(self) -> bool:
        return time.monotonic() < self._outage_until

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _decide(self) -> str | None:
        with self._lock:
            self.counts["calls"] += 1
            if self._random.random() >= self.fraction:
                return None
            kind = self._random.choice(self.kinds)
            self.counts[kind] += 1
            return kind

    # ---- serving -----------------------------------------------------------------------------

    def __enter__(self) -> ApiFaultProxy:
        ready = threading.Event()

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._session = aiohttp.ClientSession(auto_decompress=False,
                                                  timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
            server = aiohttp.web.Server(self._handle)
            runner = aiohttp.web.ServerRunner(server, handle_signals=False)
            await runner.setup()
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            await self._stop.wait()
            self._cut_watches()
            await runner.cleanup()
            await self._session.close()

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True, name="api-fault-proxy")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("The API fault proxy did not start.")
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _handle(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if request.query.get("watch") in ("true", "1"):
            return await self._watch(request)
        body = await request.read()
        kind = self._decide()
        if kind in ("429", "500"):
            return _status(kind, self.retry_after)
        status, headers, data = await self._forward(request, body)
        if kind == "forwarded-500":
            return _status(kind, self.retry_after)
        return aiohttp.web.Response(status=status, body=data, headers=headers)

    def _headers(self, request: aiohttp.web.BaseRequest) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}

    async def _forward(self, request: aiohttp.web.BaseRequest, body: bytes) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + request.path_qs, data=body or None,
                                         headers=self._headers(request)) as answer:
            data = await answer.read()
            headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return answer.status, headers, data

    async def _watch(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        assert self._session is not None
        self._count("watches")
        if self.in_outage:
            self._count("watch-refused")
            return _status("watch-refused", self.retry_after)
        cut = asyncio.Event()
        self._watchers.add(cut)
        response = aiohttp.web.StreamResponse()
        try:
            async with self._session.get(self.upstream + request.path_qs, headers=self._headers(request)) as answer:
                response.set_status(answer.status)
                for name, value in answer.headers.items():
                    if name.lower() not in _HOP_BY_HOP:
                        response.headers[name] = value
                await response.prepare(request)
                chunks = answer.content.iter_any().__aiter__()
                waiting_cut = asyncio.ensure_future(cut.wait())
                while True:
                    next_chunk = asyncio.ensure_future(chunks.__anext__())
                    await asyncio.wait({next_chunk, waiting_cut}, return_when=asyncio.FIRST_COMPLETED)
                    if cut.is_set():
                        next_chunk.cancel()
                        self._count("watch-cut")
                        if request.transport is not None:
                            request.transport.close()  # mid-stream: the client sees the connection drop
                        return response
                    try:
                        chunk = next_chunk.result()
                    except (StopAsyncIteration, aiohttp.ClientError):
                        break
                    try:
                        await response.write(chunk)
                    except (ConnectionResetError, RuntimeError):
                        break
                waiting_cut.cancel()
        finally:
            self._watchers.discard(cut)
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response
