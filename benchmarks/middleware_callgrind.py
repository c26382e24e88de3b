"""Instructions per call of ``RetryMiddleware.__call__`` alone, with a stand-in handler.

``aiohttp-resilient bench --cost`` counts whole requests; a change of a few hundred instructions
in the middleware drowns there in the run-to-run spread of the event loop. This drives the
middleware with a handler that returns a finished response at once (no socket, no loop turn),
so only the middleware's own work is counted. Run it twice under callgrind and subtract, so that
start-up cancels::

    for n in 1000 6000; do
      valgrind --tool=callgrind --callgrind-out-file=cg.$n \\
        python benchmarks/middleware_callgrind.py full $n
    done
    # (Ir(6000) - Ir(1000)) / 5000 = instructions per call ("totals:" line of each file)

Kinds: ``noop`` (a middleware that only awaits the handler: the baseline), ``nohealth``
(every health mechanism off), ``health`` (the defaults), ``full`` (health, a
``HostLimiter(16)`` and ``idle_timeout=30``: what ``resilient_session()`` installs).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from yarl import URL

from aiohttp_resilient import HealthPolicy, HostHealth, HostLimiter, RetryMiddleware


class _Content:
    def is_eof(self) -> bool:
        return True  # the body arrived with the headers, as a small response's does


class _Response:
    status = 200
    connection = None
    content = _Content()
    headers: dict[str, str] = {}  # noqa: RUF012 - a read-only stand-in


class _Session:
    _retry_connection = False


class _Request:
    method = "GET"
    headers: dict[str, str] = {}  # noqa: RUF012 - a read-only stand-in
    session = _Session()
    response = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.url = URL("http://127.0.0.1:8080/")
        self.url.raw_host  # noqa: B018 - aiohttp computes it while building the request
        self.loop = loop


_RESPONSE = _Response()


async def _handler(req: Any) -> Any:
    return _RESPONSE


async def _noop(req: Any, handler: Any) -> Any:
    return await handler(req)


def _middleware(kind: str) -> Any:
    if kind == "noop":
        return _noop
    if kind == "nohealth":
        off = HealthPolicy(budget=None, breaker=None, adaptive_limit=None, adaptive_rate=None)
        return RetryMiddleware(health=off)
    if kind == "health":
        return RetryMiddleware()
    if kind == "full":
        health = HostHealth(HealthPolicy(), limiter=HostLimiter(16))
        return RetryMiddleware(health=health, idle_timeout=30)
    raise SystemExit(f"unknown kind {kind!r}: noop, nohealth, health or full")


async def _calls(middleware: Any, n: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(n):
        await middleware(_Request(loop), _handler)


def main() -> None:
    kind, n = sys.argv[1], int(sys.argv[2])
    asyncio.run(_calls(_middleware(kind), n))


if __name__ == "__main__":
    main()
