"""What a user sets is what happens against a host that is down or a URL that is wrong.

Connection attempts are counted outside the library, on the event loop's ``sock_connect`` (every
TCP connect aiohttp makes goes through it), so a retry the library hides from itself is seen.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from _helpers import EventLog, SleepRecorder, closed_port, fast_policy, retry_session
from aiohttp_resilient import (
    BreakerPolicy,
    CircuitOpenError,
    CircuitState,
    HealthPolicy,
    RetriesExhaustedError,
    RetryPolicy,
    TrackingConnector,
    resilient_session,
    session_health,
    stats,
)
from aiohttp_resilient._retry._classify import malformed_host
from aiohttp_resilient.testing import Fault, FaultServer


@pytest.fixture
async def connects() -> AsyncIterator[list[Any]]:
    """The address of every TCP connect the test's loop makes, counted by wrapping the loop's
    ``sock_connect`` (outside the library: nothing it hides from itself escapes)."""
    loop = asyncio.get_running_loop()
    original: Callable[..., Awaitable[None]] = loop.sock_connect
    made: list[Any] = []

    async def counting(sock: Any, address: Any) -> None:
        made.append(address)
        await original(sock, address)

    loop.sock_connect = counting  # type: ignore[method-assign]
    try:
        yield made
    finally:
        del loop.sock_connect  # the instance attribute goes; the method is back


async def get_status(session: aiohttp.ClientSession, url: str) -> str:
    try:
        async with session.get(url) as resp:
            return str(resp.status)
    except aiohttp.ClientError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("attempts", [1, 2, 3])
async def test_attempts_caps_connection_attempts_to_a_closed_port(
    attempts: int, connects: list[Any]
) -> None:
    """``attempts=N`` against a port where nothing listens: at most N connection attempts, and
    the give-up says so (the breaker, which opens after 5, never adds any)."""
    url = f"http://127.0.0.1:{closed_port()}/x"
    async with resilient_session(policy=RetryPolicy(attempts=attempts)) as session:
        with pytest.raises(RetriesExhaustedError) as info:
            await session.get(url)
    assert len(connects) == attempts
    assert info.value.attempts == attempts
    if attempts > 1:
        assert f"{attempts}x ClientConnectorError" in str(info.value)


async def test_a_dead_port_fails_fast_with_the_defaults(connects: list[Any]) -> None:
    """Default settings: one GET to a dead port fails within 1.5 s (5 attempts, backed off);
    100 concurrent GETs all end within 3 s (they wait for the probe only while the outage is
    younger than the breaker's patience); a GET after them fails at once."""
    url = f"http://127.0.0.1:{closed_port()}/x"
    async with resilient_session() as session:
        started = time.monotonic()
        assert await get_status(session, url) == "RetriesExhaustedError"
        one = time.monotonic() - started
        assert len(connects) == 5

        started = time.monotonic()
        results = await asyncio.gather(*(get_status(session, url) for _ in range(100)))
        hundred = time.monotonic() - started
        assert set(results) <= {"CircuitOpenError", "RetriesExhaustedError"}
        # The breaker opened with the first GET's failures: the 100 send only its probes
        # (one per break, about 3 in the 2.5 s patience), not an attempt each.
        assert len(connects) - 5 <= 6

        await asyncio.sleep(0)
        before = len(connects)
        started = time.monotonic()
        with pytest.raises(CircuitOpenError) as info:
            await session.get(url)
        after = time.monotonic() - started
    assert one < 1.5, one
    assert hundred < 3.0, hundred
    assert after < 0.1, after
    assert len(connects) - before <= 1  # at most the probe, if one was due
    assert info.value.down_for is not None
    assert info.value.down_for >= 2.0
    assert info.value.retry_in >= 0.0


async def test_calls_in_a_young_outage_wait_for_the_probe_that_finds_the_host_back() -> None:
    """Patience counts from the outage: a call that comes while the host has been down for
    less than it waits for the probe, and the probe finding the host back serves it."""
    port = closed_port()
    breaker = BreakerPolicy(consecutive_failures=2, min_failure_span=0.0, break_duration=0.3)
    policy = fast_policy(attempts=3, backoff_base=0.01)
    async with retry_session(policy, health=HealthPolicy(breaker=breaker)) as session:
        url = f"http://127.0.0.1:{port}/x"
        assert await get_status(session, url) == "RetriesExhaustedError"  # opens it
        async with FaultServer(port=port) as server:  # back before the probe is due
            started = time.monotonic()
            assert await get_status(session, str(server.url_for("/x"))) == "200"
            waited = time.monotonic() - started
        assert server.count("/x") == 1
    assert 0.1 < waited < 1.0


async def test_patience_past_the_outage_fails_calls_at_once(connects: list[Any]) -> None:
    """Once the host has been down longer than the patience, a call neither waits nor sends,
    until a probe is due; the probe then goes (one connection) and fails the call fast."""
    port = closed_port()
    breaker = BreakerPolicy(
        consecutive_failures=2, min_failure_span=0.0, break_duration=0.5, patience=0.2
    )
    made = connects
    async with retry_session(fast_policy(attempts=2), health=HealthPolicy(breaker=breaker)) as s:
        url = f"http://127.0.0.1:{port}/x"
        assert await get_status(s, url) == "RetriesExhaustedError"
        await asyncio.sleep(0.25)  # past the patience, before the probe
        started = time.monotonic()
        assert await get_status(s, url) == "CircuitOpenError"
        assert time.monotonic() - started < 0.05
        assert len(made) == 2
        await asyncio.sleep(0.4)  # the probe is due: this call is it
        assert await get_status(s, url) in {"CircuitOpenError", "RetriesExhaustedError"}
        assert len(made) == 3


async def test_a_malformed_host_is_never_retried(connects: list[Any]) -> None:
    """A host name that cannot exist fails once, with a note naming the mistake, and leaves no
    mark on host health. (The resolver asks loopback only; c-ares refuses the name before any
    query.)"""
    resolver = aiohttp.AsyncResolver(nameservers=["127.0.0.1"])
    connector = TrackingConnector(resolver=resolver)
    async with resilient_session(connector=connector) as session:
        started = time.monotonic()
        with pytest.raises(aiohttp.ClientConnectorDNSError) as info:
            await session.get("http://exa mple.com/")
        elapsed = time.monotonic() - started
        for _ in range(6):  # more than the breaker's 5 failures in a row, were they counted
            with pytest.raises(aiohttp.ClientConnectorDNSError):
                await session.get("http://exa mple.com/")
        health = session_health(session)
        assert health is not None
        assert health.circuit_state(("http", "exa mple.com", 80)) is CircuitState.CLOSED
        assert stats(session).total.not_retried == 7
    assert elapsed < 0.5
    assert connects == []
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "malformed" in notes
    assert "exa mple.com" in notes


@pytest.mark.parametrize(
    ("host", "malformed"),
    [
        ("example.com", False),
        ("münchen.de", False),
        ("foo_bar.example.", False),
        ("localhost", False),
        ("exa mple.com", True),
        ("a..b", True),
        ("x" * 64 + ".com", True),
        ("", True),
        (None, True),
    ],
)
def test_malformed_host_names(host: str | None, malformed: bool) -> None:
    assert malformed_host(host) is malformed


def test_one_failed_call_prints_one_warning_at_python_defaults() -> None:
    """A GET to a dead port, logging left as Python leaves it: one WARNING line (the give-up),
    not one per probe and breaker change."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from aiohttp_resilient import resilient_session

        async def main():
            async with resilient_session() as session:
                try:
                    await session.get("http://127.0.0.1:{closed_port()}/x")
                except Exception as exc:
                    print("raised", type(exc).__name__)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "raised RetriesExhaustedError"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("giving up on GET http://127.0.0.1:")


async def test_the_last_retry_of_a_disconnect_backs_off(fault_server: FaultServer) -> None:
    """Disconnects retry at once within the host's budget, but the call's last attempt never
    goes in the same instant: it waits its backoff first."""
    fault_server.set_default("/f", Fault.fin())
    sleeps = SleepRecorder()
    async with retry_session(fast_policy(attempts=4, backoff_base=0.2), sleep=sleeps) as session:
        with pytest.raises(RetriesExhaustedError):
            await session.get(fault_server.url_for("/f"))
    assert fault_server.count("/f") == 4
    assert sleeps.delays == [0.2]  # retries 1 and 2 at once; the third after its backoff


async def test_a_retry_that_waits_for_the_probe_is_told_only_once_it_goes(
    connects: list[Any],
) -> None:
    """A failure that opens the breaker leads to a wait for the probe; when the call cannot wait
    (the outage is past its patience), no retry is logged, hooked or counted: every retry told
    is an attempt sent."""
    breaker = BreakerPolicy(
        consecutive_failures=2, min_failure_span=0.0, break_duration=0.5, patience=0.0
    )
    events = EventLog()
    policy = fast_policy(attempts=5, backoff_base=0.01)
    async with retry_session(policy, health=HealthPolicy(breaker=breaker), on_retry=events) as s:
        assert await get_status(s, f"http://127.0.0.1:{closed_port()}/x") == "CircuitOpenError"
        retries = stats(s).total.retries
    assert len(connects) == 2
    assert len(events.events) == 1  # the backed-off retry after the first refusal, not the wait
    assert sum(retries.values()) == 1
