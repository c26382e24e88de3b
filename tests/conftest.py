"""Fixtures shared by the shared-store tests (``test_store*.py``)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from _redis import have_redis, redis_server
from aiohttp_resilient import HealthStore, MemoryStore, RedisStore


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A redis-server for the test module."""
    if not have_redis():
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    with redis_server() as (port, _):
        yield port


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[HealthStore]:
    """Each store in turn, leases of 0.3 s; on Redis, a prefix of its own."""
    made: HealthStore
    if request.param == "memory":
        made = MemoryStore(lease_ttl=0.3)
    else:
        port = request.getfixturevalue("redis_port")
        prefix = f"t-{secrets.token_hex(4)}:"
        made = RedisStore(f"redis://127.0.0.1:{port}/0", prefix=prefix, lease_ttl=0.3, timeout=1)
    yield made
    await made.close()
