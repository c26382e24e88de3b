"""An API client: JSON in and out, rate limits honoured, POSTs made safe with Idempotency-Key.

Starts its own FaultServer on 127.0.0.1 that plays a short, scripted bad day: a 429 with
``Retry-After``, a body cut mid-way, a POST whose connection drops, and a POST without an
idempotency key that drops too. Run it: ``python examples/api_client.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import aiohttp

from aiohttp_resilient import RetryEvent, resilient_session
from aiohttp_resilient.testing import Fault, FaultServer

ORDER = Fault.ok(
    body=b'{"id": 42, "status": "created"}', headers={"Content-Type": "application/json"}
)
ITEMS = Fault.ok(
    body=json.dumps({"items": list(range(50))}).encode(),
    headers={"Content-Type": "application/json"},
)


def explain(event: RetryEvent) -> None:
    """Print each retry as the library logs it."""
    print(
        f"  retry: {event.method} {event.url} attempt {event.attempt} -> {event.cause}; "
        f"waiting {event.delay:.2f}s ({event.reason})"
    )


async def main() -> int:
    """Run the scripted bad day; exit status 0 when every outcome is the expected one."""
    async with FaultServer() as server:
        server.script(
            "/items", [Fault.status(429, retry_after=1), Fault.cut_body(2000, 100), ITEMS]
        )
        server.script("/orders", [Fault.fin(), ORDER])
        server.script("/unsafe", [Fault.fin(), ORDER])
        async with resilient_session(preset="api", on_retry=explain) as api:
            print("GET /items (rate limited, then a cut body):")
            async with api.get(server.url_for("/items")) as resp:
                items = (await resp.json())["items"]
            print(f"  got {len(items)} items after {server.count('/items')} attempts")

            print("POST /orders with an Idempotency-Key (safe to repeat):")
            key = str(uuid.uuid4())
            async with api.post(
                server.url_for("/orders"), json={"sku": "A1"}, headers={"Idempotency-Key": key}
            ) as resp:
                order = await resp.json()
            print(f"  created order {order['id']} after {server.count('/orders')} attempts")

            print("POST /unsafe without a key (may have reached the server: never repeated):")
            try:
                await api.post(server.url_for("/unsafe"), json={"sku": "A1"})
            except aiohttp.ServerDisconnectedError as exc:
                print(
                    f"  raised {type(exc).__name__}; the server saw {server.count('/unsafe')} POST"
                )
                for note in getattr(exc, "__notes__", []):
                    print(f"  note: {note}")
        ok = (len(items), order["id"], server.count("/unsafe")) == (50, 42, 1)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
