"""One client process of the fleet tests: WORKERS tasks share one session (limit_per_host,
an optional store) and fetch URL until REQUESTS are done; prints "ok failed slowest fallbacks"
(fallbacks: the times the store failed and the process went on alone)."""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp_resilient import RedisStore, resilient_session, stats


async def main(
    url: str, store_url: str, workers: int, requests: int, limit: int, ttl: float, timeout: float
) -> None:
    store = RedisStore(store_url, timeout=timeout, lease_ttl=ttl) if store_url != "-" else None
    fallbacks = 0
    left = requests
    ok = failed = 0
    slowest = 0.0
    async with resilient_session(limit_per_host=limit, store=store) as session:

        async def worker() -> None:
            nonlocal left, ok, failed, slowest
            while left > 0:
                left -= 1
                started = time.monotonic()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        ok += resp.status == 200
                except Exception:
                    failed += 1
                slowest = max(slowest, time.monotonic() - started)

        print("ready", flush=True)
        await asyncio.gather(*(worker() for _ in range(workers)))
        store_stats = stats(session).store
        fallbacks = 0 if store_stats is None else store_stats.fallbacks
    if store is not None:
        await store.close()
    print(ok, failed, f"{slowest:.3f}", fallbacks, flush=True)


if __name__ == "__main__":
    url, store_url, workers, requests, limit = sys.argv[1:6]
    # The lease TTL and the store timeout (a short TTL for the SIGKILL test).
    ttl, timeout = (float(a) for a in (sys.argv[6:8] or ("2.0", "0.5")))
    asyncio.run(main(url, store_url, int(workers), int(requests), int(limit), ttl, timeout))
