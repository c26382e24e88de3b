"""A real redis-server (Debian's package) on a free loopback port, for the shared-store tests
(their fixtures ``redis_port`` and ``store`` are in ``conftest.py``), and an HTTP server that
counts the requests in flight on its side."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiohttp import web

from aiohttp_resilient.testing._redis import REDIS_SERVER, redis_server

__all__ = ["CountingServer", "have_redis", "needs_redis", "redis_server"]


def have_redis() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


needs_redis = pytest.mark.skipif(
    not have_redis(), reason="redis-server is not installed (Debian package redis-server)"
)


class CountingServer:
    """An aiohttp.web server on loopback whose handler sleeps ``delay`` and counts the requests
    in flight: ``peak`` is the most at once."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.in_flight = self.peak = self.served = 0
        #: Answer the next this many requests 429 with ``Retry-After: <retry_after>``.
        self.throttle_next = 0
        self.retry_after = 1
        #: When each request arrived (monotonic seconds).
        self.arrivals: list[float] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return web.Response(status=429, headers={"Retry-After": str(self.retry_after)})
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(float(request.query.get("delay", self.delay)))
        finally:
            self.in_flight -= 1
        self.served += 1
        return web.Response(text="ok")

    async def __aenter__(self) -> CountingServer:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"
