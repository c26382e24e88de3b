"""One client process of the fleet tests: WORKERS tasks share one session (limit_per_host,
an optional store) and fetch URL until REQUESTS are done; prints "ok failed slowest"."""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp_resilient import RedisStore, resilient_session


async def main(url: str, store_url: str, workers: int, requests: int, limit: int) -> None:
    store = RedisStore(store_url, timeout=0.5, lease_ttl=2.0) if store_url != "-" else None
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
    if store is not None:
        await store.close()
    print(ok, failed, f"{slowest:.3f}", flush=True)


if __name__ == "__main__":
    url, store_url, workers, requests, limit = sys.argv[1:6]
    asyncio.run(main(url, store_url, int(workers), int(requests), int(limit)))
