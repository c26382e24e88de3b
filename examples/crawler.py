"""Crawl 400 pages from a flaky server and lose none of them.

Starts its own FaultServer on 127.0.0.1 that disconnects (FIN) 5% of requests, resets 2%, answers
503 with ``Retry-After: 0`` 3% and cuts 2% of bodies short, then crawls it with
``resilient_session(preset="crawler")`` at 32 pages at a time. It prints what the client got and
what the server saw. Run it: ``python examples/crawler.py``. No outside network is used.
"""

from __future__ import annotations

import asyncio
import collections
import sys

import aiohttp

from aiohttp_resilient import RetriesExhaustedError, RetryEvent, RetryPolicy, resilient_session
from aiohttp_resilient.testing import Fault, FaultServer

PAGES = 400
CONCURRENCY = 32


async def main() -> int:
    """Crawl, then report; exit status 0 when every page arrived."""
    retries: collections.Counter[str] = collections.Counter()

    def count_retry(event: RetryEvent) -> None:
        retries[event.cause.split(":")[0]] += 1

    async with FaultServer() as server:
        server.random(
            None,
            {
                Fault.fin(): 0.05,
                Fault.rst(): 0.02,
                Fault.status(503, retry_after=0): 0.03,
                Fault.cut_body(size=2000, sent=200): 0.02,
            },
            seed=7,
        )
        # The crawler preset caps each host at 4 requests in flight; a short backoff keeps this
        # demo quick (the preset waits up to 30 s, as a polite crawler should).
        policy = RetryPolicy(attempts=6, backoff_base=0.01, backoff_max=0.2)
        async with resilient_session(
            preset="crawler", policy=policy, on_retry=count_retry
        ) as session:
            queue = [server.url_for(f"/page/{n}") for n in range(PAGES)]
            pages: dict[str, int] = {}
            failures: list[str] = []

            async def worker() -> None:
                while queue:
                    url = queue.pop()
                    try:
                        async with session.get(url) as resp:
                            body = await resp.read()
                    except (RetriesExhaustedError, aiohttp.ClientError) as exc:
                        failures.append(f"{url.path}: {exc}")
                        continue
                    if resp.status < 400:  # an error answer is no page
                        pages[url.path] = len(body)
                    else:
                        failures.append(f"{url.path}: HTTP {resp.status}")

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(CONCURRENCY))), 120)

        print(f"pages fetched: {len(pages)}/{PAGES}, failed: {len(failures)}")
        print(f"requests the server saw: {server.count()} ({server.count() / PAGES:.3f} per page)")
        print(f"what the server did: {dict(sorted(server.action_counts.items()))}")
        print(f"retries by cause: {dict(sorted(retries.items()))}")
        for failure in failures:
            print(f"  {failure}")
        return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
