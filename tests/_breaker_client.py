"""One client process of the fleet breaker tests: WORKERS tasks share one session (a breaker
that fails calls at once while open, an optional store) and fetch URL for SECONDS; prints
"ok circuit other first_ok" (first_ok: time.monotonic() of the first success, or -1)."""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp_resilient import (
    BreakerPolicy,
    CircuitOpenError,
    HealthPolicy,
    RedisStore,
    RetryPolicy,
    resilient_session,
)

#: A break of 0.3 s that does not grow, and calls that never wait for the probe.
BREAKER = BreakerPolicy(break_duration=0.3, break_multiplier=1.0, break_jitter=0.1, patience=0)


async def main(url: str, store_url: str, workers: int, seconds: float) -> None:
    store = RedisStore(store_url, timeout=0.5, lease_ttl=2.0) if store_url != "-" else None
    ok = circuit = other = 0
    first_ok = -1.0
    async with resilient_session(
        limit_per_host=64,  # above the fleet's workers: the breaker is tested, not the cap
        store=store,
        policy=RetryPolicy(attempts=2, backoff_base=0.01, backoff_max=0.02),
        health=HealthPolicy(breaker=BREAKER, adaptive_limit=None),
    ) as session:
        print("ready", flush=True)
        end = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal ok, circuit, other, first_ok
            while time.monotonic() < end:
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                    ok += 1
                    if first_ok < 0:
                        first_ok = time.monotonic()
                except CircuitOpenError:  # noqa: PERF203 - a loop of calls, each may fail
                    circuit += 1
                    await asyncio.sleep(0.02)
                except Exception:
                    other += 1
                    await asyncio.sleep(0.02)

        await asyncio.gather(*(worker() for _ in range(workers)))
    if store is not None:
        await store.close()
    print(ok, circuit, other, f"{first_ok:.6f}", flush=True)


if __name__ == "__main__":
    url, store_url, workers, seconds = sys.argv[1:5]
    asyncio.run(main(url, store_url, int(workers), float(seconds)))
