"""Errors say what failed, and every error let through unretried says why; configuration
mistakes are named where they are made."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from _helpers import closed_port, raw_http_server
from aiohttp_resilient import (
    BodyNotReplayableError,
    HealthPolicy,
    RetriesExhaustedError,
    RetryMiddleware,
    RetryPolicy,
    resilient_session,
    retry_on_disconnect,
    session_health,
)
from aiohttp_resilient.testing import Fault, FaultServer

FAST = RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.002, retry_after_jitter=0.0)
NO_HEALTH = HealthPolicy(budget=None, breaker=None, adaptive_limit=None, adaptive_rate=None)


def _notes(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", ()))


async def test_giving_up_on_refused_connections_names_the_refusal() -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    async with resilient_session(policy=FAST, health=NO_HEALTH) as session:
        with pytest.raises(RetriesExhaustedError) as info:
            await session.get(url)
    message = str(info.value)
    assert "all 3 attempts the policy allows were used" in message
    assert "last failure: ClientConnectorError: Cannot connect to host" in message
    assert "attempts: 3x ClientConnectorError" in message
    assert info.value.last_failure is not None
    assert info.value.last_failure.startswith("ClientConnectorError")


async def test_giving_up_counts_each_kind_of_failure() -> None:
    async with FaultServer() as server:
        server.script("/", [Fault.status(503), Fault.rst(), Fault.status(503)])
        async with resilient_session(policy=FAST, health=NO_HEALTH) as session:
            with pytest.raises(RetriesExhaustedError) as info:
                await session.get(server.url_for("/"))
        assert server.count("/") == 3
    message = str(info.value)
    assert "last failure: HTTP 503" in message
    assert "attempts: 2x HTTP 503, 1x " in message  # the reset's class is aiohttp's to choose


async def test_a_body_that_cannot_be_replayed_after_a_status_carries_it() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with FaultServer() as server:
        server.script("/", [Fault.status(503, retry_after=0)])
        async with resilient_session(policy=FAST, health=NO_HEALTH) as session:
            with pytest.raises(BodyNotReplayableError) as info:
                await session.put(server.url_for("/"), data=body())
        assert server.count("/") == 1
    assert info.value.status == 503
    assert info.value.last_failure == "HTTP 503"
    assert "attempt 1 failed with HTTP 503" in str(info.value)
    assert "AsyncIterablePayload" in str(info.value)


async def _chunked_then_cut(head: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
    """A chunked response cut after its first chunk."""
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await writer.drain()
    return False  # close the connection: the body ends mid-way


async def test_a_chunked_body_cut_while_the_caller_reads_it_says_why_it_was_not_retried() -> None:
    async with raw_http_server(_chunked_then_cut) as (url, arrivals):
        async with resilient_session(policy=FAST, health=NO_HEALTH) as session:
            async with session.get(url) as resp:
                with pytest.raises(aiohttp.ClientPayloadError) as info:
                    await resp.text()
    assert len(arrivals) == 1  # handed over, so not retried
    notes = _notes(info.value)
    assert "did not retry" in notes
    assert "no Content-Length (chunked)" in notes
    assert "@retry_on_disconnect" in notes


async def test_a_long_body_cut_while_the_caller_reads_it_names_max_buffer_size() -> None:
    async with FaultServer() as server:
        server.script("/", [Fault.cut_body(size=5000, sent=100)])
        policy = FAST.replace(max_buffer_size=1000)
        async with resilient_session(policy=policy, health=NO_HEALTH) as session:
            async with session.get(server.url_for("/")) as resp:
                with pytest.raises(aiohttp.ClientPayloadError) as info:
                    await resp.read()
        assert server.count("/") == 1
    assert "max_buffer_size" in _notes(info.value)
    assert "5000 bytes" in _notes(info.value)


async def test_a_cut_the_decorator_retries_is_not_noted_as_given_up() -> None:
    # The note says how to get the cut retried; doing so works, and the server sees the retry.
    async with FaultServer() as server:
        server.script("/", [Fault.cut_body(size=5000, sent=100), Fault.ok(body=b"y" * 5000)])
        policy = FAST.replace(max_buffer_size=1000)
        async with resilient_session(policy=policy, health=NO_HEALTH) as session:

            @retry_on_disconnect(attempts=2, backoff_base=0.001, backoff_max=0.002)
            async def fetch() -> bytes:
                async with session.get(server.url_for("/")) as resp:
                    return await resp.read()

            assert await fetch() == b"y" * 5000
        assert server.count("/") == 2


# --- configuration mistakes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"force_close": "yes"}, "force_close"),
        ({"ttl_dns_cache": "10"}, "ttl_dns_cache"),
        ({"keepalive_timeout": "4"}, "keepalive_timeout"),
        ({"keepalive_timeout": 0}, "keepalive_timeout"),
        ({"limit": 0}, "limit"),
        ({"limit_per_host": 1.5}, "limit_per_host"),
        ({"ca_bundle": 3}, "ca_bundle"),
        ({"ca_bundle": "/no/such/bundle.pem"}, "ca_bundle: no such file"),
        ({"ssl_context": "strict"}, "ssl_context"),
        ({"on_retry": 3}, "on_retry"),
        ({"on_giveup": "log"}, "on_giveup"),
        ({"health": {}}, "health"),
        ({"policy": {"attempts": 3}}, "policy"),
        ({"preset": "fast"}, "preset"),
        ({"headers": 3}, "headers"),
        ({"connector": "tcp"}, "connector"),
    ],
)
async def test_each_bad_session_option_is_named(options: dict[str, object], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        resilient_session(**options)  # type: ignore[arg-type]


async def test_a_bad_header_value_is_not_echoed() -> None:
    with pytest.raises(ValueError, match="headers") as info:
        resilient_session(headers={"Authorization": "Bearer s3cret", "X": None})  # type: ignore[dict-item]
    assert "s3cret" not in str(info.value)


async def test_a_limit_below_the_presets_cap_names_the_preset() -> None:
    with pytest.raises(ValueError, match="limit") as info:
        resilient_session(limit=8)
    assert str(info.value) == (
        "limit_per_host (16, the 'default' preset's) must not exceed limit (8): "
        "pass limit_per_host=8 or less, or limit=16 or more"
    )
    with pytest.raises(ValueError, match=r"limit_per_host \(10\) must not exceed limit \(8\)"):
        resilient_session(limit=8, limit_per_host=10)
    with pytest.raises(ValueError, match="the 'crawler' preset's"):
        resilient_session(preset="crawler", limit_per_host=300)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("respect_retry_after", "no"),
        ("raise_on_status", "false"),
        ("buffer_body", None),
        ("retry_stale_immediately", "yes"),
    ],
)
def test_policy_booleans_must_be_booleans(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{field} must be True or False"):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_hooks_must_be_callable_everywhere() -> None:
    with pytest.raises(ValueError, match="on_retry must be callable"):
        RetryMiddleware(on_retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_giveup must be callable"):
        retry_on_disconnect(on_giveup="print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="policy must be a RetryPolicy"):
        retry_on_disconnect(policy=3)  # type: ignore[arg-type]


def test_outside_a_running_loop_the_error_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"inside a running event loop.*asyncio\.run"):
        resilient_session()


# --- a connector you pass is yours -----------------------------------------------------------


async def _peak_in_service(server: FaultServer, session: aiohttp.ClientSession, n: int) -> int:
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.in_service)
            await asyncio.sleep(0.005)

    async def get() -> None:
        async with session.get(server.url_for("/")) as resp:
            await resp.read()

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(get() for _ in range(n)))
    done.set()
    await watcher
    return peak


async def test_a_connector_you_pass_sets_the_per_host_cap() -> None:
    async with FaultServer(service_time=0.5) as server:
        connector = aiohttp.TCPConnector(limit_per_host=100)
        async with resilient_session(connector=connector) as session:
            health = session_health(session)
            assert health is not None
            assert health.limiter is not None
            assert health.limiter.limit_per_host == 100
            peak = await _peak_in_service(server, session, 24)
    assert peak == 24  # not the preset's 16
    async with FaultServer(service_time=0.5) as server:
        async with resilient_session(connector=aiohttp.TCPConnector()) as session:
            health = session_health(session)
            assert health is not None
            assert health.limiter is None  # aiohttp's default: no per-host cap
    async with FaultServer(service_time=0.5) as server:
        async with resilient_session(connector=aiohttp.TCPConnector(), limit_per_host=4) as session:
            peak = await _peak_in_service(server, session, 12)
    assert peak == 4


async def test_the_presets_cap_holds_without_a_connector() -> None:
    async with FaultServer(service_time=0.5) as server:
        async with resilient_session() as session:
            peak = await _peak_in_service(server, session, 24)
    assert peak == 16
