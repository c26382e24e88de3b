"""A fleet of client processes sharing one host's politeness through a Redis store, against the
same fleet without one; and what the store costs per request.

Scenarios (4 client processes, each one `resilient_session(limit_per_host=8)`, 32 tasks each):

- capacity: a host that serves 8 requests at once (10 ms each) and answers 503 past that;
  600 GETs per process. Figures: the most in service at once, 503s, wall time, failures.
- rate: a host that admits 50 requests/s (429 + Retry-After past it), 8 tasks per process for
  8 s. Figures: the fleet's rate after the first second, the share refused.
- cost: one process, one task, 2000 sequential GETs to a host that answers at once, with and
  without the store: p50 latency, and the Redis calls per request (Redis's commandstats).
- ops: 4 processes x 2 tasks (under the cap: every request asks Redis), GETs answered at once,
  with the store for 5 s: requests/s, script calls per request, and the redis-server's CPU
  seconds per second (what one Redis can serve).

    python benchmarks/fleet.py                  # every scenario
    python benchmarks/fleet.py --scenarios cost

Needs redis-server (Debian's package) and the [redis] extra. Loopback only; runs are bounded.
The client processes and the capacity scenario are the package's (``aiohttp-resilient bench
--scenarios fleet`` runs the latter with its targets).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import redis.asyncio

from aiohttp_resilient._cli._bench._fleet import PROCS, capacity_run, spawn_fleet
from aiohttp_resilient.testing import FaultServer
from aiohttp_resilient.testing._redis import redis_server


async def redis_info(port: int) -> tuple[float, int]:
    """The redis-server's CPU seconds so far (user and system), and the scripts it ran."""
    client = redis.asyncio.Redis(port=port)
    try:
        cpu, stats = await client.info("cpu"), await client.info("commandstats")
    finally:
        await client.aclose()
    calls = sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls


async def fleet(
    url: str, store_url: str | None, procs: int, workers: int, requests: int, seconds: float
) -> list[dict[str, Any]]:
    timeout = float(os.environ.get("FLEET_STORE_TIMEOUT", "0.1"))
    return await spawn_fleet(url, store_url, procs, workers, requests, seconds, timeout=timeout)


async def capacity(store_url: str) -> None:
    for label, url_of_store in (("no store", None), ("store", store_url)):
        r = await capacity_run(url_of_store, 600)
        print(
            f"capacity, {label}: {r['ok']} ok, {r['failed']} failed, most in service "
            f"{r['peak']}, {r['refused_503']} answered 503, {r['wall_seconds']:.2f} s, store "
            f"fell over {r['fallbacks']} times"
        )


async def rate(store_url: str) -> None:
    for label, url_of_store in (("no store", None), ("store", store_url)):
        async with FaultServer(record=False, rate_limit=50, compute_retry_after=True) as server:
            samples: list[tuple[float, int, int]] = []

            async def watch(
                server: FaultServer = server, samples: list[tuple[float, int, int]] = samples
            ) -> None:
                while True:
                    answered = sum(server.action_counts.values())
                    samples.append((time.monotonic(), answered, server.shed_counts.get("rate", 0)))
                    await asyncio.sleep(0.25)

            watcher = asyncio.ensure_future(watch())
            await fleet(str(server.url), url_of_store, PROCS, 8, 10**6, 8)
            watcher.cancel()
        # The fleet's steady state: from 1 s after the first answer, for 6 s.
        start = next(t for t, answered, _ in samples if answered) + 1.0
        window = [x for x in samples if start <= x[0] <= start + 6.0]
        (t0, a0, r0), (t1, a1, r1) = window[0], window[-1]
        served = (a1 - a0) - (r1 - r0)
        print(
            f"rate 50/s, {label}: after the first second, {served / (t1 - t0):.1f} served/s "
            f"({served / (t1 - t0) / 50:.2f}x the limit), {r1 - r0} of {a1 - a0} answers "
            f"refused ({(r1 - r0) / max(a1 - a0, 1):.1%})"
        )


async def cost(store_url: str, redis_port: int) -> None:
    async with FaultServer(record=False) as server:
        for label, url_of_store in (("no store", None), ("store", store_url)):
            _, before = await redis_info(redis_port)
            results = await fleet(str(server.url), url_of_store, 1, 1, 2000, 60)
            calls = (await redis_info(redis_port))[1] - before
            r = results[0]
            print(
                f"cost, {label}: p50 {r['p50'] * 1000:.3f} ms, "
                f"{calls / max(r['ok'], 1):.2f} Redis calls per request"
            )


async def ops(store_url: str, redis_port: int) -> None:
    async with FaultServer(record=False) as server:
        (cpu0, calls0), t0 = await redis_info(redis_port), time.monotonic()
        # 2 tasks per process: under the cap, so that every request asks Redis (a saturated
        # host's freed slots go to the process's own waiters without a call).
        results = await fleet(str(server.url), store_url, PROCS, 2, 10**7, 5)
        wall = time.monotonic() - t0
        cpu1, calls1 = await redis_info(redis_port)
        cpu, calls = cpu1 - cpu0, calls1 - calls0
    ok = sum(int(r["ok"]) for r in results)
    print(
        f"ops: {ok / wall:.0f} requests/s, {calls / wall:.0f} script calls/s "
        f"({calls / max(ok, 1):.2f} per request) through one Redis, which used {cpu / wall:.1%} "
        f"of a core: {ok / max(cpu, 1e-9):.0f} requests and {calls / max(cpu, 1e-9):.0f} "
        "script calls per Redis CPU-second"
    )


async def main(names: list[str]) -> None:
    with redis_server() as (port, _):
        store_url = f"redis://127.0.0.1:{port}/0"
        for name in names:
            if name == "capacity":
                await capacity(store_url)
            elif name == "rate":
                await rate(store_url)
            elif name == "cost":
                await cost(store_url, port)
            elif name == "ops":
                await ops(store_url, port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="capacity,rate,cost,ops")
    args = parser.parse_args()
    asyncio.run(main(args.scenarios.split(",")))
