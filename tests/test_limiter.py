"""HostLimiter: caps per host, cleans up, and survives cancellation."""

from __future__ import annotations

import asyncio

import pytest
from yarl import URL

from aiohttp_resilient import HostLimiter
from aiohttp_resilient._health._limiter import IDLE_HOSTS_KEPT, host_key

A = ("http", "a.example", 80)
B = ("http", "b.example", 80)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4"])
def test_bad_limit_is_refused(value: object) -> None:
    """limit_per_host must be a positive int."""
    with pytest.raises(ValueError, match="limit_per_host"):
        HostLimiter(value)  # type: ignore[arg-type]


def test_host_key_fills_default_ports() -> None:
    """The key is (scheme, host, port) with the scheme's default port."""
    assert host_key(URL("https://Example.org/x")) == ("https", "example.org", 443)
    assert host_key(URL("http://127.0.0.1:8080/")) == ("http", "127.0.0.1", 8080)


async def test_cap_is_per_host_and_entries_are_dropped() -> None:
    """Two hosts have separate caps; waiters are served in order."""
    limiter = HostLimiter(1)
    await limiter.acquire(A)
    await limiter.acquire(B)
    blocked = asyncio.create_task(limiter.acquire(A))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    assert repr(limiter) == "<HostLimiter limit_per_host=1 hosts=2 in_flight=2 waiting=1>"
    limiter.release(A)
    await asyncio.wait_for(blocked, 1)
    limiter.release(A)
    limiter.release(B)
    assert repr(limiter) == "<HostLimiter limit_per_host=1 hosts=0 in_flight=0 waiting=0>"


async def test_idle_hosts_are_swept_once_many_are_known() -> None:
    """Idle hosts stay (their next request allocates nothing) until IDLE_HOSTS_KEPT are known."""
    limiter = HostLimiter(1)
    keys = [("http", f"h{n}.example", 80) for n in range(IDLE_HOSTS_KEPT)]
    for key in keys:
        assert limiter.try_acquire(key)
    limiter.release(keys[0])  # one idle host, the rest busy
    assert len(limiter._hosts) == IDLE_HOSTS_KEPT
    assert limiter.try_acquire(("http", "new.example", 80))  # over the bound: a sweep
    assert len(limiter._hosts) == IDLE_HOSTS_KEPT
    assert keys[0] not in limiter._hosts
    assert limiter._sweep_at == 2 * (IDLE_HOSTS_KEPT - 1)  # busy hosts: no sweep per new host
    assert limiter.in_flight(keys[1]) == 1


async def test_cancelled_waiter_gives_its_place_back() -> None:
    """A waiter cancelled before it gets the slot leaves no trace."""
    limiter = HostLimiter(1)
    await limiter.acquire(A)
    waiter = asyncio.create_task(limiter.acquire(A))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release(A)
    assert limiter.in_flight(A) == 0
    assert repr(limiter).endswith("hosts=0 in_flight=0 waiting=0>")
    await asyncio.wait_for(limiter.acquire(A), 1)
    assert limiter.in_flight(A) == 1
    limiter.release(A)
