"""A fault-injecting HTTPS proxy in front of the test cluster's real API server.

The operator under test talks to the proxy (its kubeconfig points there); everything it sends
reaches the real kube-apiserver, and every answer is the real server's. The test can:

- `partition()`: cut every open watch stream and hold new requests until `heal()`, as a network
  partition would; `heal(expire=True)` then resumes each watch from resourceVersion "1", which
  the real server refuses as too old (410 Gone) — the answer a watch gets after a long outage,
  here without waiting for etcd compaction;
- `freeze_watches(resource)`: stop delivering watch events of one resource (they are held, and
  delivered on `thaw()`), so the operator decides from a stale cache while its writes still go through.

Runs its own event loop in a thread; TLS with the API server's own serving certificate (valid
for 127.0.0.1), upstream with the admin client certificate.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import socket
import ssl
import threading
from typing import Any

import aiohttp
from aiohttp import web

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "content-encoding"}


class ApiProxy:
    def __init__(self, *, upstream: str, pki: pathlib.Path) -> None:
        self._upstream = upstream.rstrip("/")
        self._pki = pki
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._open = asyncio.Event()
        self._streams: set[asyncio.Task[Any]] = set()
        self._frozen: dict[str, asyncio.Event] = {}  # resource -> set when thawed
        self._expire: set[str] | None = None  # watch paths already sent back to "1" since heal(expire=True)
        self.port = 0
        self.watch_requests: list[str] = []

    # Lifecycle, from the test's thread
    def start(self) -> ApiProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def kubeconfig(self, admin_kubeconfig: pathlib.Path, dest: pathlib.Path) -> pathlib.Path:
        """The admin kubeconfig, pointed at the proxy."""
        config = json.loads(admin_kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        dest.write_text(json.dumps(config))
        return dest

    # Faults, from the test's thread
    def partition(self) -> None:
        self._call(self._partition)

    def heal(self, *, expire: bool = False) -> None:
        def heal() -> None:
            self._expire = set() if expire else None
            self._open.set()

        self._loop.call_soon_threadsafe(heal)

    def freeze_watches(self, resource: str) -> None:
        self._loop.call_soon_threadsafe(lambda: self._frozen.setdefault(resource, asyncio.Event()))

    def thaw(self) -> None:
        def thaw() -> None:
            for released in self._frozen.values():
                released.set()
            self._frozen.clear()

        self._loop.call_soon_threadsafe(thaw)

    def _call(self, fn: Any) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def _partition(self) -> None:
        self._open.clear()
        for task in list(self._streams):
            task.cancel()

    # The proxy itself, on its own loop
    async def _start(self) -> None:
        self._open.set()
        upstream_ssl = ssl.create_default_context(cafile=str(self._pki / "ca.crt"))
        upstream_ssl.load_cert_chain(self._pki / "admin.crt", self._pki / "admin.key")
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=upstream_ssl), auto_decompress=False)
        serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving.load_cert_chain(self._pki / "apiserver.crt", self._pki / "apiserver.key")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=serving).start()

    async def _stop(self) -> None:
        for task in list(self._streams):
            task.cancel()
        await self._runner.cleanup()
        await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await self._open.wait()
        path_qs = request.path_qs
        watching = request.query.get("watch") in ("1", "true")
        if watching:
            if self._expire is not None and request.path not in self._expire:
                self._expire.add(request.path)
                path_qs = re.sub(r"resourceVersion=[^&]*", "resourceVersion=1", path_qs)
            self.watch_requests.append(path_qs)  # as sent upstream
        task = asyncio.current_task()
        assert task is not None
        if watching:
            self._streams.add(task)
        try:
            return await self._forward(request, path_qs, watching)
        finally:
            self._streams.discard(task)

    async def _forward(self, request: web.Request, path_qs: str, watching: bool) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP | {"authorization"}}
        async with self._session.request(
            request.method,
            self._upstream + path_qs,
            headers=headers,
            data=await request.read() if request.can_read_body else None,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    response.headers[key] = value
            await response.prepare(request)
            resource = request.path.rstrip("/").rsplit("/", 1)[-1]
            async for chunk in upstream.content.iter_any():
                if watching and resource in self._frozen:
                    await self._frozen[resource].wait()
                await response.write(chunk)
            await response.write_eof()
            return response
