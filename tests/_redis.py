"""A real redis-server (Debian's package) on a free loopback port, for the shared-store tests,
and an HTTP server that counts the requests in flight on its side."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from _helpers import closed_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def have_redis() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


@contextmanager
def redis_server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """redis-server on a free loopback port, no persistence; stopped by its PID."""
    port = closed_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        import socket

        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        yield port, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a test may leave it stopped
            proc.terminate()
        proc.wait(timeout=10)


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
