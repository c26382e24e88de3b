"""Crawl two flaky hosts, serve Prometheus metrics while crawling, and say which host failed how.

Starts two FaultServers on 127.0.0.1: one drops connections (FIN 5%, RST 3%, cut bodies 2%), the
other is overloaded (503 with ``Retry-After: 0`` 10%) and has 10 dead links (404, as a crawl's
input has: answered, never retried, and counted as 4xx, not as pages). It crawls both with
``resilient_session(preset="crawler")``, serves ``/metrics`` from an aiohttp server on 127.0.0.1
(with the ``[prometheus]`` extra; without it, it says so and goes on), scrapes it once, and prints
``stats(session)``: a table of calls, retries, give-ups, latency and pool use per host, then each
host's retries by cause. Run it: ``python examples/observed_crawler.py``. No outside network.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from aiohttp_resilient import RetriesExhaustedError, RetryPolicy, resilient_session, stats
from aiohttp_resilient.testing import Fault, FaultServer

PAGES_PER_HOST = 150
DEAD_LINKS = 10  # of the busy host's pages, answered 404
CONCURRENCY = 16


async def serve_metrics(
    session: aiohttp.ClientSession,
) -> tuple[str, Callable[[], Awaitable[None]]] | None:
    """Serve the session's metrics at ``/metrics`` on 127.0.0.1; ``None`` without the extra."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        from aiohttp_resilient import PrometheusCollector
    except ImportError:
        print("prometheus_client is not installed: skipping /metrics")
        print('  (pip install ".[prometheus]" in the aiohttp-resilient checkout to serve them)')
        return None
    registry = CollectorRegistry()
    registry.register(PrometheusCollector(session, max_hosts=20))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}/metrics", runner.cleanup


async def main() -> int:
    """Crawl, scrape the metrics once, print the summary; exit 0 when every page arrived but
    the dead links."""
    async with FaultServer() as flaky, FaultServer() as busy:
        flaky.random(
            None,
            {Fault.fin(): 0.05, Fault.rst(): 0.03, Fault.cut_body(size=2000, sent=200): 0.02},
            seed=3,
        )
        busy.random(None, {Fault.status(503, retry_after=0): 0.10}, seed=4)
        for n in range(DEAD_LINKS):
            busy.set_default(f"/page/{n}", Fault.status(404))
        policy = RetryPolicy(attempts=6, backoff_base=0.01, backoff_max=0.2)
        async with resilient_session(preset="crawler", policy=policy) as session:
            served = await serve_metrics(session)
            queue = [
                server.url_for(f"/page/{n}")
                for n in range(PAGES_PER_HOST)
                for server in (flaky, busy)
            ]
            fetched = 0
            not_found: list[str] = []
            failures: list[str] = []

            async def worker() -> None:
                nonlocal fetched
                while queue:
                    url = queue.pop()
                    try:
                        async with session.get(url) as resp:
                            await resp.read()
                    except (RetriesExhaustedError, aiohttp.ClientError) as exc:
                        failures.append(f"{url}: {exc}")
                        continue
                    # An answer is a page only if its status says so.
                    if resp.status < 400:
                        fetched += 1
                    elif resp.status == 404:
                        not_found.append(str(url))
                    else:
                        failures.append(f"{url}: HTTP {resp.status}")

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 120)

            if served is not None:
                url, stop = served
                async with aiohttp.ClientSession() as plain:  # a scraper, as Prometheus would
                    async with plain.get(url) as resp:
                        exposition = await resp.text()
                await stop()
                retries = [
                    line
                    for line in exposition.splitlines()
                    if line.startswith(
                        ("aiohttp_resilient_retries_total", "aiohttp_resilient_answered")
                    )
                ]
                print(f"served {url}; it said, among {len(exposition.splitlines())} lines:")
                for line in retries:
                    print(f"  {line}")
            summary = stats(session)

        pages = 2 * PAGES_PER_HOST
        found = f"pages fetched: {fetched}/{pages}, not found: {len(not_found)}"
        print(f"{found}, failed: {len(failures)}")
        print(f"requests the servers saw: {flaky.count() + busy.count()}")
        print(summary)
        for failure in failures:
            print(f"  {failure}")
        return 0 if not failures and len(not_found) == DEAD_LINKS else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
