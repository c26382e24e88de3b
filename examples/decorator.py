"""@retry_on_disconnect around a whole function, with or without a resilient session.

Starts its own FaultServer on 127.0.0.1. The first function uses a plain aiohttp session, and the
decorator re-runs it after disconnects. The second uses a resilient session inside the decorator:
the attempts are not multiplied (4, not 4 x 4). Run it: ``python examples/decorator.py``.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from aiohttp_resilient import (
    RetriesExhaustedError,
    RetryPolicy,
    resilient_session,
    retry_on_disconnect,
)
from aiohttp_resilient.testing import Fault, FaultServer

QUICK = RetryPolicy(attempts=4, backoff_base=0.01, backoff_max=0.05)


@retry_on_disconnect(policy=QUICK)
async def fetch_report(session: aiohttp.ClientSession, url: str) -> str:
    """Fetch and decode a report; the whole function is re-run on a disconnect."""
    async with session.get(url) as resp:
        resp.raise_for_status()
        return await resp.text()


async def main() -> int:
    """Run both cases; exit status 0 when the server counts are the expected ones."""
    async with FaultServer() as server:
        server.script("/report", [Fault.fin(), Fault.rst(), Fault.ok(body=b"quarterly: +4%")])
        server.set_default("/down", Fault.fin())

        async with aiohttp.ClientSession() as session:
            report = await fetch_report(session, str(server.url_for("/report")))
        print(f"report: {report!r} (server saw {server.count('/report')} requests)")

        async with resilient_session(policy=QUICK) as session:
            try:
                await fetch_report(session, str(server.url_for("/down")))
            except RetriesExhaustedError as exc:
                print(f"gave up: {exc}")
        print(f"server saw {server.count('/down')} requests for /down (4 attempts, not 16)")
        return 0 if server.count("/down") == 4 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
