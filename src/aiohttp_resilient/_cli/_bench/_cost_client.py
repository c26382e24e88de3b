"""The client process of ``aiohttp-resilient bench --cost``: N sequential GETs through one
configuration, run by file path (``python _cost_client.py CONFIG URL N``) so that it imports
aiohttp and the library only, not the rest of the bench: under valgrind every import is slow.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import aiohttp

__all__ = ["CONFIGS", "CONFIG_NAMES", "CostConfig", "client_main"]


@dataclass(frozen=True, slots=True)
class CostConfig:
    """One measured client: ``make`` builds its session inside the client process."""

    name: str
    description: str
    make: Callable[[], aiohttp.ClientSession] | None
    #: Why it cannot run yet (``make`` is None).
    missing: str = ""


def _raw() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def _raw_timeout() -> aiohttp.ClientSession:
    from aiohttp_resilient._session import PRESETS

    return aiohttp.ClientSession(timeout=PRESETS["default"].timeout)


def _raw_sock_read() -> aiohttp.ClientSession:
    # The preset's ClientTimeout before the idle watchdog replaced its sock_read: aiohttp re-arms
    # a timer on every read (what it costs is why the watchdog exists).
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=120, connect=15, sock_connect=10, sock_read=30)
    )


async def _noop(
    req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    return await handler(req)


def _noop_middleware() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(middlewares=[_noop])


def _connector(*, tracking: bool) -> Callable[[], aiohttp.ClientSession]:
    def make() -> aiohttp.ClientSession:
        from aiohttp_resilient._session import PRESETS
        from aiohttp_resilient._transport._connector import TrackingConnector

        tuning = PRESETS["default"]
        kind = TrackingConnector if tracking else aiohttp.TCPConnector
        connector = kind(
            limit=tuning.limit,
            limit_per_host=tuning.limit_per_host,
            ttl_dns_cache=tuning.ttl_dns_cache,
            keepalive_timeout=tuning.keepalive_timeout,
        )
        return aiohttp.ClientSession(connector=connector)

    return make


def _middleware(*, health: bool) -> Callable[[], aiohttp.ClientSession]:
    def make() -> aiohttp.ClientSession:
        from aiohttp_resilient._health._policy import HealthPolicy
        from aiohttp_resilient._retry._middleware import RetryMiddleware

        policy = (
            HealthPolicy()
            if health
            else HealthPolicy(budget=None, breaker=None, adaptive_limit=None, adaptive_rate=None)
        )
        return aiohttp.ClientSession(middlewares=[RetryMiddleware(health=policy)])

    return make


def _resilient(preset: str, *, stats: bool = True) -> Callable[[], aiohttp.ClientSession]:
    def make() -> aiohttp.ClientSession:
        from aiohttp_resilient._session import resilient_session

        return resilient_session(preset=preset, stats=stats)  # type: ignore[arg-type]

    return make


#: Every configuration, in report order. The first is the baseline of every ratio.
CONFIGS: Final[tuple[CostConfig, ...]] = (
    CostConfig("raw", "aiohttp.ClientSession() with its defaults", _raw),
    CostConfig(
        "raw-timeout",
        "ClientSession(timeout=<resilient_session()'s ClientTimeout>)",
        _raw_timeout,
    ),
    CostConfig(
        "raw-sock-read",
        "ClientSession(timeout=ClientTimeout(total=120, connect=15, sock_connect=10, "
        "sock_read=30)): the preset's former timeout",
        _raw_sock_read,
    ),
    # Where the time goes: aiohttp's own middleware plumbing, and the preset's connector alone.
    CostConfig(
        "noop-middleware",
        "ClientSession(middlewares=[<a middleware that only awaits the handler>])",
        _noop_middleware,
    ),
    CostConfig(
        "connector",
        "ClientSession(connector=TCPConnector(<the default preset's limit, limit_per_host=16, "
        "ttl_dns_cache, keepalive_timeout>))",
        _connector(tracking=False),
    ),
    CostConfig(
        "tracking-connector",
        "the same with TrackingConnector (reuse tracking, keep-alive learning)",
        _connector(tracking=True),
    ),
    CostConfig(
        "middleware-nohealth",
        "ClientSession(middlewares=[RetryMiddleware(health=HealthPolicy(<every mechanism None>))])",
        _middleware(health=False),
    ),
    CostConfig(
        "middleware",
        "ClientSession(middlewares=[RetryMiddleware(health=HealthPolicy())]) (its defaults)",
        _middleware(health=True),
    ),
    CostConfig(
        "resilient",
        'resilient_session() (preset "default"): host health, stats and the idle watchdog on',
        _resilient("default"),
    ),
    CostConfig("resilient-crawler", 'resilient_session(preset="crawler")', _resilient("crawler")),
    CostConfig("resilient-api", 'resilient_session(preset="api")', _resilient("api")),
    CostConfig(
        "resilient-nostats",
        "resilient_session(stats=False): without the per-host stats (metrics) of issue 10",
        _resilient("default", stats=False),
    ),
)

CONFIG_NAMES: Final = tuple(c.name for c in CONFIGS)


async def _get_many(config: CostConfig, url: str, requests: int) -> float:
    """``requests`` sequential GETs, each body read; the CPU seconds they took."""
    assert config.make is not None
    async with config.make() as session:
        started = time.process_time()
        for _ in range(requests):
            async with session.get(url) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{config.name}: HTTP {resp.status}")
        return time.process_time() - started


def client_main(argv: Sequence[str]) -> int:
    """``python _cost_client.py CONFIG URL REQUESTS``: prints CPU seconds."""
    name, url, requests = argv
    config = next(c for c in CONFIGS if c.name == name)
    cpu = asyncio.run(_get_many(config, url, int(requests)))
    print(f"cpu {cpu!r}")
    return 0


if __name__ == "__main__":
    sys.exit(client_main(sys.argv[1:]))
