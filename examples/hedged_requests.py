"""Hedged requests: a second copy of a slow GET, the first answer wins.

Starts its own FaultServer on 127.0.0.1 whose answers are slow at random: 2% of them, rolled per
request, wait 0.5 s. 1000 GETs from 8 workers, with and without ``HedgePolicy()``; prints the
p99 and what the server counted. Run it: ``python examples/hedged_requests.py``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from aiohttp_resilient import HedgePolicy, resilient_session, stats
from aiohttp_resilient.testing import FaultServer, SlowAnswers

CALLS = 1000
WORKERS = 8


async def run(hedge: HedgePolicy | None) -> tuple[float, int, int]:
    """p99 in seconds, requests the server saw, hedges that won."""
    async with FaultServer() as server:
        server.serve("/", SlowAnswers(share=0.02, seconds=0.5, seed=20))
        latencies: list[float] = []
        left = CALLS
        async with resilient_session(hedge=hedge) as session:

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    started = time.perf_counter()
                    async with session.get(server.url_for("/")) as resp:
                        await resp.read()
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(worker() for _ in range(WORKERS)))
            seen = stats(session)
            won = 0 if seen is None else seen.total.hedges_won
        latencies.sort()
        return latencies[int(0.99 * CALLS)], server.count("/"), won


async def main() -> int:
    """Run both; exit status 0 when hedging kept the slow answers out of the p99."""
    plain_p99, plain_requests, _ = await run(None)
    hedged_p99, hedged_requests, won = await run(HedgePolicy())
    print(f"without hedging: p99 {plain_p99 * 1e3:.0f} ms, the server saw {plain_requests}")
    print(f"with HedgePolicy(): p99 {hedged_p99 * 1e3:.0f} ms, the server saw {hedged_requests}")
    print(f"hedges that won: {won}; extra requests: {hedged_requests / CALLS - 1:.1%}")
    ok = hedged_p99 < 0.5 <= plain_p99
    print(f"slow answers kept out of the p99: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
