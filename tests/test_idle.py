"""The idle watchdog: a response that stops arriving is abandoned (and retried) without aiohttp's
per-read sock_read timer; a slow but steady one is not."""

from __future__ import annotations

import asyncio
import gzip
import time

import aiohttp
import pytest

from _helpers import fast_policy, raw_http_server, retry_session
from aiohttp_resilient import RetryMiddleware, resilient_session, use_policy
from aiohttp_resilient._transport._idle import CHECKS_PER_IDLE, IdleWatchdog
from aiohttp_resilient.testing import Fault, FaultServer

IDLE = 0.4
#: The latest a silence may be noticed (one look after the idle time), plus room for a loaded
#: machine; far below the faults' own silences (30 s), so passing means the watchdog acted.
NOTICED_BY = IDLE * (1 + 1 / CHECKS_PER_IDLE) + 2.0


def _watchdog(session: aiohttp.ClientSession) -> IdleWatchdog:
    middleware = session._middlewares[0]
    assert isinstance(middleware, RetryMiddleware)
    watchdog = middleware._idle
    assert watchdog is not None
    return watchdog


async def test_hung_response_is_retried_within_the_idle_time(fault_server: FaultServer) -> None:
    """No status line for IDLE seconds: the attempt is abandoned and the GET sent again."""
    fault_server.script("/hang", [Fault.hang(30.0), Fault.ok(body=b"second")])
    async with retry_session(idle_timeout=IDLE) as session:
        started = time.monotonic()
        async with session.get(fault_server.url_for("/hang")) as resp:
            assert await resp.read() == b"second"
        elapsed = time.monotonic() - started
        assert not _watchdog(session).watched
    assert fault_server.count("/hang") == 2  # the server saw the retry
    assert IDLE <= elapsed < NOTICED_BY


async def test_body_that_stops_is_retried_within_the_idle_time(fault_server: FaultServer) -> None:
    """Headers, then a body that stalls (the first chunk would come after 30 s): retried while
    the middleware reads the body inside the retry."""
    stalled = Fault.drip(b"x" * 100, chunk=10, interval=30.0)
    fault_server.script("/stall", [stalled, Fault.ok(body=b"whole")])
    async with retry_session(idle_timeout=IDLE) as session:
        started = time.monotonic()
        async with session.get(fault_server.url_for("/stall")) as resp:
            assert await resp.read() == b"whole"
        elapsed = time.monotonic() - started
    assert fault_server.count("/stall") == 2
    assert IDLE <= elapsed < NOTICED_BY


async def test_slow_steady_stream_is_not_cut(fault_server: FaultServer) -> None:
    """One chunk every sixth of the idle time, for several idle periods: delivered whole."""
    idle = 1.0  # generous: a loaded machine may delay a chunk by a good part of a second
    body = b"y" * 12
    fault_server.script("/steady", [Fault.drip(body, chunk=1, interval=idle / 6)])
    async with retry_session(idle_timeout=idle) as session:
        started = time.monotonic()
        async with session.get(fault_server.url_for("/steady")) as resp:
            assert await resp.read() == body
        assert time.monotonic() - started > 2 * idle  # it did outlast the idle time
    assert fault_server.count("/steady") == 1  # never cut, never retried


async def test_a_stalled_event_loop_is_not_taken_for_a_silent_server(
    fault_server: FaultServer,
) -> None:
    """The loop blocked longer than the idle time while a steady body flows: the late look
    judges nothing (the bytes are not read yet), and the body arrives whole."""
    body = b"s" * 24
    # Bytes out of step with the looks (every IDLE / 4), so that some stall has none in flight.
    fault_server.script("/blocked", [Fault.drip(body, chunk=1, interval=IDLE / 3)])

    async with retry_session(idle_timeout=IDLE) as session:

        async def block_the_loop() -> None:
            for _ in range(4):  # a stall may catch a byte in flight: several make it certain
                await asyncio.sleep(IDLE / 2)  # the stream is under way
                # Right after a look, before a byte is read: the next look comes late and may
                # find nothing new since the last one.
                handle = _watchdog(session)._handle
                assert handle is not None
                when = handle.when() + 1e-6
                asyncio.get_running_loop().call_at(when, time.sleep, 1.5 * IDLE)
                await asyncio.sleep(max(0.0, when - asyncio.get_running_loop().time()) + 0.01)

        blocker = asyncio.create_task(block_the_loop())
        async with session.get(fault_server.url_for("/blocked")) as resp:
            assert await resp.read() == body
        await blocker
    assert fault_server.count("/blocked") == 1


async def test_stream_read_after_hand_over_still_times_out(fault_server: FaultServer) -> None:
    """A body the caller streams after the middleware returned (not buffered) is watched too:
    a stall ends the caller's read with SocketTimeoutError within the idle time."""
    fault_server.script("/stream", [Fault.drip(b"z" * 100, chunk=10, interval=30.0)])
    unbuffered = fast_policy(buffer_body=False)  # the middleware hands the body over unread
    async with retry_session(unbuffered, idle_timeout=IDLE) as session:
        async with session.get(fault_server.url_for("/stream")) as resp:
            assert resp.status == 200
            assert _watchdog(session).watched  # handed over unread: still watched
            started = time.monotonic()
            with pytest.raises(aiohttp.SocketTimeoutError, match="idle_timeout"):
                await resp.read()
            elapsed = time.monotonic() - started
        assert not _watchdog(session).watched
    assert fault_server.count("/stream") == 1  # after the hand-over it is the caller's to retry
    assert IDLE <= elapsed < NOTICED_BY


async def test_caller_that_does_not_read_is_not_cut(fault_server: FaultServer) -> None:
    """Bytes wait unread in aiohttp's buffer while the server pauses: the pause is the caller's
    doing, so the stream is not cut however long the caller takes."""
    fault_server.script("/unread", [Fault.drip(b"u" * 20, chunk=10, interval=0.05)])
    unbuffered = fast_policy(buffer_body=False)  # the middleware hands the body over unread
    async with retry_session(unbuffered, idle_timeout=IDLE) as session:
        async with session.get(fault_server.url_for("/unread")) as resp:
            await asyncio.sleep(3 * IDLE)  # the whole body arrived long ago, unread
            assert await resp.read() == b"u" * 20
    assert fault_server.count("/unread") == 1


async def test_resilient_session_uses_the_watchdog_not_sock_read(
    fault_server: FaultServer,
) -> None:
    """The presets set no sock_read; idle_timeout= reaches the middleware, 0 turns it off."""
    fault_server.script("/h", [Fault.hang(30.0), Fault.ok(body=b"ok")])
    async with resilient_session(idle_timeout=IDLE) as session:
        assert session.timeout.sock_read is None
        started = time.monotonic()
        async with session.get(fault_server.url_for("/h")) as resp:
            assert await resp.read() == b"ok"
        assert time.monotonic() - started < NOTICED_BY
    assert fault_server.count("/h") == 2
    async with resilient_session(idle_timeout=0) as session:
        assert session._middlewares[0].idle_timeout is None  # type: ignore[attr-defined]
    async with resilient_session() as session:
        assert session._middlewares[0].idle_timeout == 30.0  # type: ignore[attr-defined]


async def test_nothing_stays_watched(fault_server: FaultServer) -> None:
    """Whole responses, failures and released streams leave the watch at once or at the next
    look, so the watchdog holds no request for long and its timer stops."""
    fault_server.script("/f", [Fault.fin(), Fault.ok()])
    async with retry_session(idle_timeout=IDLE) as session:
        watchdog = _watchdog(session)
        for _ in range(5):
            async with session.get(fault_server.url_for("/")) as resp:
                await resp.read()
        assert not watchdog.watched
        async with session.get(fault_server.url_for("/f")) as resp:
            await resp.read()
        assert not watchdog.watched
        await asyncio.sleep(IDLE)  # looks find nothing to watch: the timer stops
        assert watchdog._handle is None


@pytest.mark.parametrize("bad", [0, -1, float("nan"), True, "30"])
def test_idle_timeout_must_be_positive(bad: object) -> None:
    """A bad idle_timeout is a ValueError naming the field, at construction."""
    with pytest.raises(ValueError, match="idle_timeout"):
        RetryMiddleware(idle_timeout=bad)  # type: ignore[arg-type]


async def test_resilient_session_rejects_a_negative_idle_timeout() -> None:
    """A negative idle_timeout is a ValueError naming it (0 turns the watchdog off)."""
    with pytest.raises(ValueError, match="idle_timeout"):
        resilient_session(idle_timeout=-1)


async def test_a_long_poll_turns_the_watchdog_off_for_its_calls(fault_server: FaultServer) -> None:
    """A server silent on purpose (a long poll answered after 3 idle periods): cut and sent
    again by default; one attempt, answered, under a policy with watch_idle=False."""
    fault_server.script("/poll", [Fault.hang(30.0), Fault.ok(body=b"fresh")])
    fault_server.script("/long", [Fault.drip(b"event", chunk=5, interval=3 * IDLE)])
    async with retry_session(idle_timeout=IDLE) as session:
        async with session.get(fault_server.url_for("/poll")) as resp:
            assert await resp.read() == b"fresh"
        middleware = session._middlewares[0]
        assert isinstance(middleware, RetryMiddleware)
        with use_policy(middleware.policy.replace(watch_idle=False)):
            async with session.get(fault_server.url_for("/long")) as resp:
                assert await resp.read() == b"event"
    assert fault_server.count("/poll") == 2  # watched: the silence was cut and retried
    assert fault_server.count("/long") == 1  # not watched: waited for


async def test_a_compressed_body_is_judged_by_the_bytes_that_arrive() -> None:
    """gzip bytes arrive steadily while the decoder has nothing to give yet: not a silence."""
    body = gzip.compress(b"x" * 4000)
    idle = 1.0
    step = 4
    pause = idle / 4

    async def drip(head: str, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for at in range(0, len(body), step):
            writer.write(body[at : at + step])
            await writer.drain()
            await asyncio.sleep(pause)
        return True

    assert len(body) / step * pause > 2 * idle  # longer than the idle time, in small steps
    async with raw_http_server(drip) as (url, heads):
        async with resilient_session(idle_timeout=idle) as session:
            async with session.get(url) as resp:
                assert await resp.read() == b"x" * 4000
    assert len(heads) == 1  # not cut, not retried
