"""Per-host keep-alive learning: POSTs are never sent on a connection the server is closing.

The servers close idle connections on their own timers, without warning (a plain FIN), as
uvicorn, Node.js, gunicorn and nginx do. Bursts of POSTs separated by idle gaps just around the
server's timeout make the stale keep-alive race as likely as it gets: a POST that loses it
cannot be retried (it may have arrived), so it is lost. Counted on the server side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from _helpers import closed_port
from aiohttp_resilient import (
    HealthPolicy,
    RetriesExhaustedError,
    RetryPolicy,
    TrackingConnector,
    resilient_session,
)
from aiohttp_resilient._transport._keepalive import (
    MIN_IDLE_EVIDENCE,
    REUSE_SHARE,
    UNKNOWN_UNSAFE_IDLE,
    KeepAliveTable,
    parse_keep_alive_timeout,
)
from aiohttp_resilient.testing import FaultServer

BURST = 12
# Offsets of each idle gap from the server's timeout, in seconds: the race is likeliest right
# at the timeout, and the server's timer and the client's clock differ by a few milliseconds.
OFFSETS = (-0.03, -0.015, -0.005, 0.0, 0.002, 0.005, 0.01, 0.02, 0.04)


async def _bursts(
    session: aiohttp.ClientSession, url: URL | str, timeout: float, rounds: int
) -> tuple[int, list[BaseException]]:
    """POST bursts with idle gaps around ``timeout``; returns (sent, failures)."""
    sent = 0
    failures: list[BaseException] = []

    async def post() -> None:
        async with session.post(url, data=b"payload") as resp:
            await resp.read()

    for round_number in range(rounds):
        results = await asyncio.gather(*(post() for _ in range(BURST)), return_exceptions=True)
        sent += BURST
        failures += [r for r in results if isinstance(r, BaseException)]
        await asyncio.sleep(timeout + OFFSETS[round_number % len(OFFSETS)])
    return sent, failures


async def _learn(session: aiohttp.ClientSession, url: URL | str, timeout: float) -> None:
    """The first observation: a burst, then an idle gap the server's timer ends."""
    async with session.post(url, data=b"warm-up") as resp:
        await resp.read()
    await asyncio.sleep(timeout + 0.3)


async def _run_against(server: FaultServer, rounds: int) -> None:
    timeout = server.idle_close
    assert timeout is not None
    url = server.url_for("/")
    async with resilient_session() as session:
        await _learn(session, url, timeout)
        connector = session.connector
        assert isinstance(connector, TrackingConnector)
        learned = connector.keep_alive_estimate(url)
        assert learned.closed_after is not None
        # As the client measures it: from its own release of the connection, which comes a little
        # after the server's timer started, to the FIN's arrival (later on a loaded machine).
        assert 0.9 * timeout <= learned.closed_after < timeout + 0.5, learned
        server.reset()
        sent, failures = await _bursts(session, url, timeout, rounds)
    assert failures == [], f"{len(failures)} of {sent} POSTs lost: {failures[:3]}"
    assert server.count("/", method="POST") == sent  # each arrived once


@pytest.mark.slow
async def test_posts_after_idle_gaps_around_the_servers_timeout_are_never_lost() -> None:
    # Both timeouts at once: the test lasts as long as the longer one.
    async with FaultServer(idle_close=1.0) as one, FaultServer(idle_close=2.0) as two:
        await asyncio.gather(_run_against(one, rounds=len(OFFSETS)), _run_against(two, rounds=6))


@pytest.mark.slow
async def test_an_announced_keep_alive_timeout_is_honoured_from_the_first_response() -> None:
    async with FaultServer(idle_close=1.0, keep_alive_header="timeout=1") as server:
        url = server.url_for("/")
        async with resilient_session() as session:
            sent, failures = await _bursts(session, url, 1.0, rounds=len(OFFSETS))
            connector = session.connector
            assert isinstance(connector, TrackingConnector)
            estimate = connector.keep_alive_estimate(url)
    assert estimate.announced == 1.0
    # The announced 1 s, or the server's own closes a little sooner as the client measures them.
    assert estimate.reuse_limit == estimate.unsafe_reuse_limit
    assert 0.9 * REUSE_SHARE <= estimate.reuse_limit <= REUSE_SHARE
    assert failures == [], f"{len(failures)} of {sent} POSTs lost: {failures[:3]}"
    assert server.count("/", method="POST") == sent


@pytest.mark.slow
async def test_a_host_that_keeps_connections_long_is_still_reused_after_gaps() -> None:
    # Learning must not cost a server with a long timeout its keep-alive: a GET after 1.5 s of
    # idleness reuses the connection, and a POST does once a connection outlived the pool's time.
    async with FaultServer() as server:
        url = server.url_for("/")
        async with resilient_session(keepalive_timeout=2.0) as session:
            for _ in range(2):
                async with session.get(url) as resp:
                    await resp.read()
                await asyncio.sleep(1.2)
            assert server.connections_opened == 1  # GETs reuse past 1 s of idleness
            async with session.post(url, data=b"x") as resp:
                await resp.read()
            assert server.connections_opened == 2  # a POST does not, to an unknown host
            # The first connection outlives the pool's 2 s in the pool: the host keeps them long.
            await asyncio.sleep(2.0 * 2 + 0.3)  # aiohttp's cleanup runs every keepalive_timeout
            connector = session.connector
            assert isinstance(connector, TrackingConnector)
            estimate = connector.keep_alive_estimate(url)
            assert estimate.survived is not None
            assert estimate.survived >= 2.0
            assert estimate.unsafe_reuse_limit > UNKNOWN_UNSAFE_IDLE
            async with session.post(url, data=b"x") as resp:
                await resp.read()
            async with session.get(url) as resp:  # warm one connection
                await resp.read()
            await asyncio.sleep(1.2)
            opened = server.connections_opened
            async with session.post(url, data=b"x") as resp:
                await resp.read()
            assert server.connections_opened == opened  # now a POST reuses after 1.2 s too


async def test_connections_idle_past_the_limit_do_not_pile_up() -> None:
    # A POST after each gap opens a new connection (the host's timeout is unknown); the old ones
    # must not stay open beside it: one stays as an observation, the others are closed.
    async with FaultServer() as server:
        url = server.url_for("/")
        async with resilient_session(keepalive_timeout=30.0) as session:
            for _ in range(4):
                await asyncio.gather(*(session.post(url, data=b"x") for _ in range(2)))
                await asyncio.sleep(UNKNOWN_UNSAFE_IDLE + 0.15)
                assert server.connections_open <= 3  # 2 in the last burst + 1 observation
            assert server.connections_opened >= 6  # they were not reused: past the limit


async def test_a_post_with_an_idempotency_key_may_reuse_like_a_get() -> None:
    # The middleware re-sends it after the race, so it needs no stricter limit than a GET.
    async with FaultServer() as server:
        url = server.url_for("/")
        async with resilient_session() as session:
            async with session.post(url, data=b"x") as resp:
                await resp.read()
            await asyncio.sleep(UNKNOWN_UNSAFE_IDLE + 0.2)
            async with session.post(url, data=b"x", headers={"Idempotency-Key": "k1"}) as resp:
                await resp.read()
            assert server.connections_opened == 1


def test_a_server_closing_sooner_than_it_announces_is_believed_by_what_it_does() -> None:
    table = KeepAliveTable(4.0)
    key = ("example.org", 443, True)
    table.announced(key, 5.0)
    assert table.limits(key) == (3.75, 3.75)
    table.closed_idle(key, 2.0, now=0.0)  # a load balancer in front closes at 2 s
    assert table.limits(key) == (1.5, 1.5)


def test_one_odd_close_is_forgotten_when_a_connection_outlives_it() -> None:
    table = KeepAliveTable(4.0)
    key = ("example.org", 443, True)
    table.closed_idle(key, 0.6, now=0.0)  # a restart closed an idle connection
    assert table.limits(key) == (0.6 * REUSE_SHARE, 0.6 * REUSE_SHARE)
    table.closed_idle(key, 0.1, now=1.0)  # a close right after a response: not an idle timeout
    assert table.estimate(key).closed_after == 0.6
    table.survived_idle(key, 4.0)  # yet a pooled connection outlived 4 s
    estimate = table.estimate(key)
    assert estimate.closed_after is None
    assert table.limits(key) == (4.0, 3.0)
    assert MIN_IDLE_EVIDENCE > 0.1


def test_the_keep_alive_header_is_parsed() -> None:
    assert parse_keep_alive_timeout("timeout=5, max=100") == 5.0
    assert parse_keep_alive_timeout("max=100, timeout=2.5") == 2.5
    assert parse_keep_alive_timeout("Timeout = 3") == 3.0
    assert parse_keep_alive_timeout("max=100") is None
    assert parse_keep_alive_timeout("timeout=0") is None
    assert parse_keep_alive_timeout("xtimeout=5") is None


# --- uvicorn, a server nobody on the project wrote ---------------------------------------------

_ASGI_APP = textwrap.dedent(
    """
    import os

    COUNT_FILE = os.environ["COUNT_FILE"]

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            with open(COUNT_FILE, "a") as f:
                f.write("p")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})
    """
)


@contextlib.asynccontextmanager
async def _uvicorn(tmp_path: Path, keep_alive: int) -> AsyncIterator[tuple[URL, Path]]:
    (tmp_path / "asgi_app.py").write_text(_ASGI_APP)
    counts = tmp_path / "posts"
    counts.write_text("")
    port = closed_port()
    env = {**os.environ, "COUNT_FILE": str(counts), "PYTHONPATH": str(tmp_path)}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1"),
        *("--port", str(port), "--timeout-keep-alive", str(keep_alive)),
        *("--log-level", "warning", "--http", "h11"),
        env=env,
    )
    url = URL(f"http://127.0.0.1:{port}/")
    try:
        for _ in range(100):  # up to 10 s for it to listen
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("uvicorn did not start listening within 10 s")
        yield url, counts
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=10)


@pytest.mark.slow
async def test_uvicorn_with_a_one_second_keep_alive_loses_no_post(tmp_path: Path) -> None:
    pytest.importorskip("uvicorn", reason="uvicorn is a test dependency (the test extra)")
    async with _uvicorn(tmp_path, keep_alive=1) as (url, counts):
        async with resilient_session() as session:
            await _learn(session, url, 1.0)
            connector = session.connector
            assert isinstance(connector, TrackingConnector)
            learned = connector.keep_alive_estimate(url).closed_after
            assert learned is not None
            assert 0.9 <= learned < 1.5, learned
            before = len(counts.read_text())
            sent, failures = await _bursts(session, url, 1.0, rounds=len(OFFSETS))
        assert failures == [], f"{len(failures)} of {sent} POSTs lost: {failures[:3]}"
        assert len(counts.read_text()) - before == sent


async def test_a_post_sent_around_the_middleware_keeps_the_strict_limit() -> None:
    # The connector judges each request itself: a POST with middlewares=() (a token refresh
    # inside a middleware, say) after a GET in the same task must not inherit the GET's limit.
    async with FaultServer() as server:
        url = server.url_for("/")
        async with resilient_session() as session:
            async with session.get(url) as resp:
                await resp.read()
            await asyncio.sleep(UNKNOWN_UNSAFE_IDLE + 0.2)
            async with session.post(url, data=b"x", middlewares=()) as resp:
                await resp.read()
            assert server.connections_opened == 2


@pytest.mark.parametrize(
    ("policy", "new_connection"),
    [
        (RetryPolicy(), False),  # a PUT is idempotent by default: it may reuse after the gap
        (RetryPolicy(methods={"GET"}), True),  # not by this policy: the strict limit
        (RetryPolicy(methods={"GET"}, idempotency_header="X-Once"), True),
    ],
    ids=["default", "put-not-idempotent", "own-header"],
)
async def test_the_connector_judges_by_the_requests_policy(
    policy: RetryPolicy, new_connection: bool
) -> None:
    """A request its policy does not retry (here a PUT, by a policy that retries GETs only)
    keeps the strict reuse limit, as a POST does: the race would lose it."""
    async with FaultServer() as server:
        url = server.url_for("/")
        async with resilient_session(policy=policy) as session:
            async with session.get(url) as resp:
                await resp.read()
            await asyncio.sleep(UNKNOWN_UNSAFE_IDLE + 0.2)
            async with session.put(url, data=b"x") as resp:
                await resp.read()
            assert server.connections_opened == (2 if new_connection else 1)


async def test_a_failed_connect_after_a_reused_one_is_not_taken_for_the_race() -> None:
    # After requests on a reused connection, an attempt that never got a pooled connection
    # must not be reported as having run on one (nor retried as the stale race).
    async with FaultServer() as server:
        policy = RetryPolicy(attempts=1)
        # No breaker: it would hold refused connections for its probe instead of giving up.
        async with resilient_session(policy=policy, health=HealthPolicy(breaker=None)) as session:
            for _ in range(2):
                async with session.get(server.url_for("/")) as resp:
                    await resp.read()
            with pytest.raises(RetriesExhaustedError) as info:
                await session.get(f"http://127.0.0.1:{closed_port()}/")
    assert [a.reused_connection for a in info.value.history] == [False]
