"""The floor: instructions per call of the least a retry middleware must do, for comparison
with ``RetryMiddleware`` in ``middleware_callgrind.py``'s driver (same stand-in request and
handler).

Level 0 only awaits the handler after reading a ``ContextVar``; each level adds what any retry
layer with per-host state and a latency histogram does per call: 1 checks aiohttp's retry
switch, judges the method and builds the host key; 2 looks the host up and counts a slot in and
out with a clock read; 3 checks the status against the retryable set and counts the answer with
a second clock read; 4 bins the latency. Run it as ``middleware_callgrind.py`` is run::

    for n in 1000 6000; do
      valgrind --tool=callgrind --callgrind-out-file=cg.$n \\
        python benchmarks/middleware_floor.py 4 $n
    done
    # (Ir(6000) - Ir(1000)) / 5000, minus middleware_callgrind.py's "noop" figure

Measured (Python 3.11): level 4 is 9.2k over the no-op middleware.
"""

from __future__ import annotations

import asyncio
import sys
import time
from bisect import bisect_left
from contextvars import ContextVar
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import middleware_callgrind as driver

_override: ContextVar[object | None] = ContextVar("override", default=None)
_BOUNDS = [0.001 * 2**i for i in range(20)]


class _Host:
    __slots__ = ("cap", "counts", "in_flight", "ok", "total")

    def __init__(self) -> None:
        self.in_flight = 0
        self.cap = 16
        self.ok = 0
        self.counts = [0] * (len(_BOUNDS) + 1)
        self.total = 0.0


class Floor:
    """The least per call, up to ``level``."""

    def __init__(self, level: int) -> None:
        self.level = level
        self.policy = object()
        self.hosts: dict[tuple[str, str | None, int | None], _Host] = {}
        self.clock = time.monotonic
        self.statuses = frozenset({429, 500, 502, 503, 504})
        self.methods = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

    async def __call__(self, req: Any, handler: Any) -> Any:
        level = self.level
        policy = _override.get() or self.policy  # noqa: F841 - read as a middleware would
        if level < 1:
            return await handler(req)
        session = req.session
        if session._retry_connection:
            session._retry_connection = False
        idempotent = req.method in self.methods  # noqa: F841 - judged as a middleware would
        url = req.url
        key = (url.scheme, url.host, url.port)
        if level < 2:
            return await handler(req)
        host = self.hosts.get(key)
        if host is None:
            host = self.hosts[key] = _Host()
        if host.in_flight >= host.cap:
            raise RuntimeError("the floor has no queue")
        host.in_flight += 1
        started = self.clock()
        if level < 3:
            try:
                return await handler(req)
            finally:
                host.in_flight -= 1
        try:
            resp = await handler(req)
        finally:
            host.in_flight -= 1
        if resp.status in self.statuses:
            raise RuntimeError("the floor does not retry")
        now = self.clock()
        host.ok += 1
        if level >= 4:
            elapsed = now - started
            host.counts[bisect_left(_BOUNDS, elapsed)] += 1
            host.total += elapsed
        return resp


async def _calls(middleware: Floor, n: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(n):
        await middleware(driver._Request(loop), driver._handler)


if __name__ == "__main__":
    asyncio.run(_calls(Floor(int(sys.argv[1])), int(sys.argv[2])))
