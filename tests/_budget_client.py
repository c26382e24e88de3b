"""One client process of the fleet budget tests: 2 tasks share one session (a retry budget, no
breaker, an optional store) and make REQUESTS calls to URL, each up to 4 attempts; prints
"ok failed"."""

from __future__ import annotations

import asyncio
import sys

from aiohttp_resilient import (
    BudgetPolicy,
    HealthPolicy,
    RedisStore,
    RetryPolicy,
    resilient_session,
)

#: 20 retries per 10 s whatever the traffic, plus 5% of the requests.
BUDGET = BudgetPolicy(ratio=0.05, min_per_second=2.0, ttl=10.0)


async def main(url: str, store_url: str, requests: int) -> None:
    store = RedisStore(store_url, timeout=0.5) if store_url != "-" else None
    ok = failed = 0
    left = requests
    async with resilient_session(
        limit_per_host=64,
        store=store,
        policy=RetryPolicy(attempts=4, backoff_base=0.001, backoff_max=0.002),
        health=HealthPolicy(breaker=None, adaptive_limit=None, adaptive_rate=None, budget=BUDGET),
    ) as session:
        print("ready", flush=True)

        async def worker() -> None:
            nonlocal ok, failed, left
            while left > 0:
                left -= 1
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                    ok += 1
                except Exception:
                    failed += 1
                await asyncio.sleep(0.01)

        await asyncio.gather(worker(), worker())
    if store is not None:
        await store.close()
    print(ok, failed, flush=True)


if __name__ == "__main__":
    url, store_url, requests = sys.argv[1:4]
    asyncio.run(main(url, store_url, int(requests)))
