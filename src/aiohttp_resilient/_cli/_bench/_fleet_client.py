"""One client process of the ``fleet`` scenario (``_fleet.py``), run by file path
(``python _fleet_client.py URL STORE_URL WORKERS REQUESTS SECONDS TIMEOUT``, ``STORE_URL``
``-`` for none) so that it imports the library only, not the rest of the bench; prints one
JSON line: ``ok``, ``failed``, ``p50`` (seconds), ``fallbacks`` (the store's)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aiohttp_resilient import FleetLimiter, RedisStore, resilient_session, session_health

__all__ = ["client_main"]

#: ``limit_per_host`` of every client process (the fleet scenario's host capacity too).
CAP = 8


async def client_main(
    url: str, store_url: str, workers: int, requests: int, seconds: float, timeout: float
) -> dict[str, Any]:
    """One process's run: its tasks fetch ``url`` until ``requests`` are done or ``seconds``
    are up; ``store_url`` ``"-"`` means no store."""
    store = None if store_url == "-" else RedisStore(store_url, lease_ttl=10, timeout=timeout)
    latencies: list[float] = []
    failed = fallbacks = 0
    left, end = requests, time.monotonic() + seconds
    async with resilient_session(limit_per_host=CAP, store=store) as session:

        async def worker() -> None:
            nonlocal left, failed
            while left > 0 and time.monotonic() < end:
                left -= 1
                started = time.monotonic()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        resp.raise_for_status()
                    latencies.append(time.monotonic() - started)
                except Exception:
                    failed += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
        limiter = session_health(session).limiter  # type: ignore[union-attr]
        if isinstance(limiter, FleetLimiter):
            fallbacks = limiter.guard.fallbacks
    if store is not None:
        await store.close()
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else 0.0
    return {"ok": len(latencies), "failed": failed, "p50": p50, "fallbacks": fallbacks}


if __name__ == "__main__":
    url, store_url, workers, requests, seconds, timeout = sys.argv[1:7]
    result = asyncio.run(
        client_main(url, store_url, int(workers), int(requests), float(seconds), float(timeout))
    )
    print(json.dumps(result), flush=True)
