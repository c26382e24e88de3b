"""RetryMiddleware against a real loopback FaultServer, through real ClientSessions.

Every test counts attempts on the server side (FaultServer records), not only in the client.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from _helpers import (
    BACKOFF_ONLY,
    EventLog,
    SleepRecorder,
    fast_policy,
    retry_session,
    wait_until,
)
from aiohttp_resilient import (
    BodyNotReplayableError,
    HostHealth,
    HostLimiter,
    RetriesExhaustedError,
    RetryEvent,
    RetryMiddleware,
    RetryPolicy,
    TrackingConnector,
    resilient_session,
    session_health,
    stats,
    use_policy,
)
from aiohttp_resilient._transport._keepalive import MIN_IDLE_EVIDENCE
from aiohttp_resilient.testing import Fault, FaultServer

OK_JSON = Fault.ok(body=b'{"ok": true}', headers={"Content-Type": "application/json"})


# 1. Classification by whether the request can have reached the server ---------------------------


async def test_post_disconnect_is_not_retried(fault_server: FaultServer) -> None:
    """A POST that may have reached the server is sent once, and the error says why."""
    fault_server.script("/p", [Fault.fin(), Fault.ok()])
    sleeps = SleepRecorder()
    async with retry_session(sleep=sleeps) as session:
        with pytest.raises(aiohttp.ServerDisconnectedError) as info:
            await session.post(fault_server.url_for("/p"), data=b"payload")
    assert fault_server.count("/p", method="POST") == 1
    assert sleeps.delays == []
    assert any("not idempotent" in note for note in info.value.__notes__)


async def test_post_with_idempotency_key_is_retried(fault_server: FaultServer) -> None:
    """A POST carrying an Idempotency-Key header counts as idempotent."""
    fault_server.script("/p", [Fault.fin(), Fault.ok(body=b"done")])
    async with retry_session() as session:
        resp = await session.post(
            fault_server.url_for("/p"), data=b"payload", headers={"Idempotency-Key": "k-1"}
        )
        assert await resp.read() == b"done"
    bodies = [r.body for r in fault_server.records]
    assert bodies == [b"payload", b"payload"]


async def test_refused_connection_is_retried_for_post(fault_server: FaultServer) -> None:
    """A refused connection sent nothing, so even a POST is retried, and arrives once."""
    await fault_server.stop_listening()

    async def reopen(event: RetryEvent) -> None:
        await fault_server.start_listening()

    async with retry_session(on_retry=reopen) as session:
        resp = await session.post(fault_server.url_for("/p"), data=b"x")
        assert resp.status == 200
        resp.release()
    assert fault_server.count("/p", method="POST") == 1


async def test_pool_wait_timeout_is_retried_for_post(fault_server: FaultServer) -> None:
    """Waiting too long for a pooled connection sent nothing: a POST is retried, arrives once."""
    fault_server.set_default("/slow", Fault.drip(body=b"x" * 10, chunk=1, interval=0.05))
    events = EventLog()
    policy = fast_policy(backoff_base=0.2)
    middleware = RetryMiddleware(policy, on_retry=events)  # real sleeps: the pool must drain
    timeout = aiohttp.ClientTimeout(connect=0.1)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1), middlewares=[middleware], timeout=timeout
    ) as session:

        async def hold_the_only_connection() -> bytes:
            async with session.get(fault_server.url_for("/slow")) as resp:
                return await resp.read()

        holder = asyncio.create_task(hold_the_only_connection())
        await wait_until(lambda: fault_server.count("/slow") > 0)
        async with session.post(fault_server.url_for("/p"), data=b"x") as resp:
            assert resp.status == 200
        assert await holder == b"x" * 10
    assert isinstance(events.events[0].error, aiohttp.ConnectionTimeoutError)
    assert fault_server.count("/p", method="POST") == 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.fin(), aiohttp.ServerDisconnectedError),
        (Fault.rst(), aiohttp.ClientOSError),
        (Fault.partial_status(), aiohttp.ClientError),
        (Fault.cut_body(size=1000, sent=10), aiohttp.ClientPayloadError),
    ],
    ids=["fin", "rst", "partial-status", "cut-body"],
)
async def test_get_faults_are_retried(
    fault_server: FaultServer, fault: Fault, error: type[Exception]
) -> None:
    """Disconnects, resets, partial status lines and cut bodies are retried for a GET."""
    fault_server.script("/g", [fault, fault, Fault.ok(body=b"fine")])
    events = EventLog()
    async with retry_session(on_retry=events) as session:
        async with session.get(fault_server.url_for("/g")) as resp:
            assert await resp.read() == b"fine"
    assert fault_server.count("/g") == 3
    assert [e.attempt for e in events.events] == [1, 2]
    assert all(isinstance(e.error, error) for e in events.events)


async def test_read_timeout_is_retried_for_get(fault_server: FaultServer) -> None:
    """A read timeout (the request was sent) is retried for a GET."""
    fault_server.script("/slow", [Fault.hang(5.0), Fault.ok(body=b"late")])
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with retry_session(timeout=timeout) as session:
        async with session.get(fault_server.url_for("/slow")) as resp:
            assert await resp.read() == b"late"
    assert fault_server.count("/slow") == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_client_errors_are_not_retried(fault_server: FaultServer, status: int) -> None:
    """4xx other than 408/429 are answers, not failures: returned after one attempt."""
    fault_server.script("/x", [Fault.status(status)])
    async with retry_session() as session:
        async with session.get(fault_server.url_for("/x")) as resp:
            assert resp.status == status
    assert fault_server.count("/x") == 1


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried(fault_server: FaultServer, status: int) -> None:
    """The default retryable statuses are retried for a GET; for a POST only 429, which says
    the request was refused, not processed (as the AWS, OpenAI and Anthropic SDKs do)."""
    fault_server.script("/s", [Fault.status(status), Fault.ok()])
    fault_server.script("/post", [Fault.status(status), Fault.ok()])
    async with retry_session() as session:
        async with session.get(fault_server.url_for("/s")) as resp:
            assert resp.status == 200
        async with session.post(fault_server.url_for("/post"), data=b"x") as resp:
            assert resp.status == (200 if status == 429 else status)
    assert fault_server.count("/s") == 2
    assert fault_server.count("/post") == (2 if status == 429 else 1)


# 2. The stale keep-alive race ------------------------------------------------------------------


async def test_disconnect_on_reused_connection_retries_at_once(fault_server: FaultServer) -> None:
    """A FIN on a pooled connection that sat idle long enough for the server to have closed it
    (here past MIN_IDLE_EVIDENCE, the floor while the host's timeout is unknown) is the stale
    keep-alive race: retried without a backoff wait, and charged to nothing."""
    fault_server.script("/k", [Fault.ok(), Fault.fin(), Fault.ok(body=b"again")])
    sleeps, events = SleepRecorder(), EventLog()
    policy = fast_policy(backoff_base=1.0)
    async with retry_session(policy, sleep=sleeps, on_retry=events) as session:
        async with session.get(fault_server.url_for("/k")) as resp:
            await resp.read()
        await asyncio.sleep(MIN_IDLE_EVIDENCE + 0.05)
        async with session.get(fault_server.url_for("/k")) as resp:
            assert await resp.read() == b"again"
        retried = stats(session).total.retries
    records = fault_server.records
    assert [(r.conn_id, r.seq_on_conn, r.action) for r in records] == [
        (1, 1, "ok"),
        (1, 2, "fin"),
        (2, 1, "ok"),
    ]
    assert events.reasons == ["stale keep-alive connection"]
    assert sleeps.delays == []
    assert retried == {"stale_connection": 1}


@pytest.mark.parametrize("fault", [Fault.fin, Fault.rst])
async def test_a_failure_on_a_connection_reused_at_once_is_not_the_race(
    fault_server: FaultServer, fault: Callable[[], Fault]
) -> None:
    """A connection reused a moment after its last response cannot have been closed idle by
    the server: a FIN or RST there is a real fault, booked and retried as one (on loopback every
    failure comes within the old 50 ms window, and resets were hidden as the race)."""
    fault_server.script("/k", [Fault.ok(), fault(), Fault.ok()])
    events = EventLog()
    async with retry_session(fast_policy(), on_retry=events) as session:
        for _ in range(2):
            async with session.get(fault_server.url_for("/k")) as resp:
                await resp.read()
        retried = stats(session).total.retries
    assert [(r.conn_id, r.seq_on_conn) for r in fault_server.records][:2] == [(1, 1), (1, 2)]
    assert events.reasons == ["disconnect, retried at once within the host's retry budget"]
    assert "stale_connection" not in retried
    assert sum(retried.values()) == 1


@pytest.mark.parametrize("idle", [0.0, MIN_IDLE_EVIDENCE + 0.05], ids=["at-once", "idle"])
async def test_a_post_that_loses_the_race_is_told_so_and_not_resent(
    fault_server: FaultServer, idle: float
) -> None:
    """A POST whose pooled connection the server closes as it goes is not re-sent (it may have
    arrived); when the connection had sat idle long enough, its note says it lost the stale
    keep-alive race, and when it was reused at once, that it is a plain disconnect."""
    fault_server.script("/p", [Fault.ok(), Fault.fin()])
    async with retry_session(fast_policy()) as session:
        async with session.post(fault_server.url_for("/p"), data=b"1") as resp:
            await resp.read()
        await asyncio.sleep(idle)
        with pytest.raises(aiohttp.ServerDisconnectedError) as info:
            await session.post(fault_server.url_for("/p"), data=b"2")
    assert fault_server.count("/p") == 2
    assert [(r.conn_id, r.seq_on_conn) for r in fault_server.records] == [(1, 1), (1, 2)]
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert ("lost the stale keep-alive race" in notes) is (idle > 0)
    assert "not idempotent" in notes


async def test_disconnect_on_fresh_connection_is_retried_at_once(fault_server: FaultServer) -> None:
    """A FIN on a new connection is retried at once while the host's budget has room: one
    dropped connection on a healthy host says nothing about the next."""
    fault_server.script("/k", [Fault.fin(), Fault.ok()])
    sleeps, events = SleepRecorder(), EventLog()
    async with retry_session(fast_policy(backoff_base=0.25), sleep=sleeps, on_retry=events) as s:
        async with s.get(fault_server.url_for("/k")) as resp:
            assert resp.status == 200
    assert fault_server.count("/k") == 2
    assert sleeps.delays == []
    assert events.reasons == ["disconnect, retried at once within the host's retry budget"]
    assert events.events[0].error is not None


async def test_disconnect_backs_off_once_the_budget_is_half_spent(
    fault_server: FaultServer,
) -> None:
    """Past the budget's immediate share, a disconnect waits on the backoff schedule."""
    fault_server.script("/k", [Fault.fin(), Fault.ok()])
    sleeps, events = SleepRecorder(), EventLog()
    async with retry_session(
        fast_policy(backoff_base=0.25), sleep=sleeps, on_retry=events, health=BACKOFF_ONLY
    ) as s:
        async with s.get(fault_server.url_for("/k")) as resp:
            assert resp.status == 200
    assert fault_server.count("/k") == 2
    assert sleeps.delays == [0.25]
    assert events.reasons == ["backoff"]


async def test_without_tracking_connector_disconnects_still_retry_at_once(
    fault_server: FaultServer,
) -> None:
    """With a plain TCPConnector reuse is unknown; the budget still allows an immediate retry."""
    fault_server.script("/k", [Fault.ok(), Fault.fin(), Fault.ok()])
    sleeps = SleepRecorder()
    async with retry_session(fast_policy(backoff_base=0.5), sleep=sleeps, tracking=False) as s:
        for _ in range(2):
            async with s.get(fault_server.url_for("/k")) as resp:
                assert resp.status == 200
    assert fault_server.count("/k") == 3
    assert sleeps.delays == []


# 3. Attempts are exactly what the policy says --------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 2, 3, 5])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_attempts_are_exact_when_giving_up(
    fault_server: FaultServer, attempts: int, method: str
) -> None:
    """The server sees exactly `attempts` requests, aiohttp's hidden retry notwithstanding."""
    fault_server.set_default("/down", Fault.fin())
    async with retry_session(fast_policy(attempts=attempts, backoff_base=0.0)) as session:
        with pytest.raises(RetriesExhaustedError) as info:
            await session.request(method, fault_server.url_for("/down"))
    assert fault_server.count("/down") == attempts
    error = info.value
    assert error.attempts == attempts
    assert len(error.history) == attempts
    assert isinstance(error.__cause__, aiohttp.ServerDisconnectedError)
    assert not isinstance(error, (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError))
    assert isinstance(error, aiohttp.ClientError)


async def test_bare_aiohttp_sends_twice_where_the_middleware_sends_once(
    fault_server: FaultServer,
) -> None:
    """The control: aiohttp alone re-sends a GET once on a disconnect; with attempts=1, we don't."""
    fault_server.set_default("/down", Fault.fin())
    async with aiohttp.ClientSession() as bare:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await bare.get(fault_server.url_for("/down"))
    assert fault_server.count("/down") == 2
    fault_server.reset()
    fault_server.set_default("/down", Fault.fin())
    async with retry_session(fast_policy(attempts=1)) as session:
        with pytest.raises(RetriesExhaustedError):
            await session.get(fault_server.url_for("/down"))
    assert fault_server.count("/down") == 1


async def test_method_excluded_by_policy_is_sent_once(fault_server: FaultServer) -> None:
    """A PUT the policy does not retry is not re-sent by aiohttp's hidden retry either."""
    fault_server.set_default("/down", Fault.fin())
    policy = fast_policy(methods={"GET"})
    async with retry_session(policy) as session:
        with pytest.raises(RetriesExhaustedError, match="not retried") as info:
            await session.put(fault_server.url_for("/down"), data=b"x")
        # Later ones too: another request may switch aiohttp's retry off after this one started.
        with pytest.raises(RetriesExhaustedError, match="not retried"):
            await session.put(fault_server.url_for("/down"), data=b"x")
    assert fault_server.count("/down") == 2
    assert isinstance(info.value.__cause__, aiohttp.ServerDisconnectedError)


async def test_concurrent_first_requests_are_not_resent_by_aiohttp(
    fault_server: FaultServer,
) -> None:
    """Requests that started before the middleware switched aiohttp's retry off are not re-sent
    by it either (an outer middleware that awaits first lets them all start)."""
    fault_server.set_default("/down", Fault.fin())

    async def outer(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        await asyncio.sleep(0)  # a token refresh, say
        return await handler(req)

    async with retry_session(fast_policy(methods={"GET"}), middlewares=()) as session:
        session._middlewares = (outer, *session._middlewares)

        async def put() -> BaseException:
            with pytest.raises(RetriesExhaustedError) as info:
                await session.put(fault_server.url_for("/down"), data=b"x")
            return info.value

        await asyncio.gather(*(put() for _ in range(4)))
    assert fault_server.count("/down") == 4


async def test_status_give_up_raises_or_returns(fault_server: FaultServer) -> None:
    """After the last retryable status: an error by default, the response if asked."""
    fault_server.set_default("/busy", Fault.status(503, body=b"busy"))
    async with retry_session(fast_policy(attempts=3, backoff_base=0.0)) as session:
        with pytest.raises(RetriesExhaustedError) as info:
            await session.get(fault_server.url_for("/busy"))
    assert fault_server.count("/busy") == 3
    assert info.value.status == 503
    assert [a.status for a in info.value.history] == [503, 503, 503]
    fault_server.reset()
    fault_server.set_default("/busy", Fault.status(503, body=b"busy"))
    policy = fast_policy(attempts=2, backoff_base=0.0, raise_on_status=False)
    async with retry_session(policy) as session:
        async with session.get(fault_server.url_for("/busy")) as resp:
            assert resp.status == 503
            assert await resp.read() == b"busy"
    assert fault_server.count("/busy") == 2


async def test_use_policy_overrides_per_request(fault_server: FaultServer) -> None:
    """use_policy() replaces the middleware's policy inside the block only."""
    fault_server.set_default("/down", Fault.fin())
    async with retry_session(fast_policy(attempts=4, backoff_base=0.0)) as session:
        with (
            use_policy(fast_policy(attempts=2, backoff_base=0.0)),
            pytest.raises(RetriesExhaustedError),
        ):
            await session.get(fault_server.url_for("/down"))
        assert fault_server.count("/down") == 2
        with pytest.raises(RetriesExhaustedError):
            await session.get(fault_server.url_for("/down"))
    assert fault_server.count("/down") == 6


# 4. Every response thrown away is released -----------------------------------------------------


async def test_pool_of_one_never_stalls_on_failed_bodies(fault_server: FaultServer) -> None:
    """Large 503 bodies are released: a single-connection pool keeps going."""
    # In debug mode aiohttp warns about a response collected unreleased (refcounting would
    # otherwise return its connection quietly and hide the leak); warnings are errors here.
    asyncio.get_running_loop().set_debug(True)
    big = b"e" * 8 * 1024 * 1024  # larger than the socket buffers: still arriving when thrown away
    fault_server.script("/big", [Fault.status(503, body=big)] * 3 + [Fault.ok(body=b"done")])
    fault_server.set_default("/after", Fault.ok(body=b"after"))
    policy = fast_policy(attempts=4, backoff_base=0.0)
    async with retry_session(policy, limit=1) as session:

        async def both() -> None:
            async with session.get(fault_server.url_for("/big")) as resp:
                assert await resp.read() == b"done"
            async with session.get(fault_server.url_for("/after")) as resp:
                assert await resp.read() == b"after"

        await asyncio.wait_for(both(), timeout=10)
    assert fault_server.count("/big") == 4


async def test_give_up_on_status_releases_the_connection(fault_server: FaultServer) -> None:
    """Giving up on a 503 with a body left unread does not keep the only connection."""
    asyncio.get_running_loop().set_debug(True)  # see test_pool_of_one_never_stalls_on_failed_bodies
    fault_server.set_default("/busy", Fault.status(503, body=b"b" * 8 * 1024 * 1024))
    fault_server.set_default("/next", Fault.ok())
    async with retry_session(fast_policy(attempts=2, backoff_base=0.0), limit=1) as session:

        async def both() -> None:
            with pytest.raises(RetriesExhaustedError):
                await session.get(fault_server.url_for("/busy"))
            async with session.get(fault_server.url_for("/next")) as resp:
                assert resp.status == 200

        await asyncio.wait_for(both(), timeout=10)
    assert fault_server.count("/busy") == 2


async def test_failing_hooks_change_nothing(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises is logged; the request goes on, and no slot or connection leaks."""
    fault_server.set_default("/busy", Fault.status(503))
    fault_server.set_default("/ok", Fault.ok())
    limiter = HostLimiter(limit_per_host=1)

    def broken(event: RetryEvent) -> None:
        raise RuntimeError("hook bug")

    async with retry_session(
        fast_policy(attempts=2, backoff_base=0.0),
        limiter=limiter,
        on_retry=broken,
        on_giveup=broken,
        limit=1,
    ) as session:
        with pytest.raises(RetriesExhaustedError):
            await asyncio.wait_for(session.get(fault_server.url_for("/busy")), 5)
        async with session.get(fault_server.url_for("/ok")) as resp:
            assert resp.status == 200
    assert fault_server.count("/busy") == 2
    assert "the on_retry hook raised" in caplog.text
    assert "the on_giveup hook raised" in caplog.text
    assert repr(limiter).endswith("in_flight=0 waiting=0>")


async def test_cancelled_in_giveup_hook_frees_the_slot(fault_server: FaultServer) -> None:
    """Cancelled while the on_giveup hook runs: the 503 response and its slot are freed."""
    fault_server.set_default("/busy", Fault.status(503))
    limiter = HostLimiter(limit_per_host=1)
    hook_running = asyncio.Event()

    async def slow_hook(event: RetryEvent) -> None:
        hook_running.set()
        await asyncio.sleep(30)

    async with retry_session(
        fast_policy(attempts=1), limiter=limiter, on_giveup=slow_hook
    ) as session:
        task = asyncio.create_task(session.get(fault_server.url_for("/busy")))
        await asyncio.wait_for(hook_running.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert limiter.in_flight(("http", "127.0.0.1", fault_server.url.port)) == 0


# 5. A body that cannot be re-sent is never re-sent empty ---------------------------------------


async def test_consumed_stream_body_is_not_resent(fault_server: FaultServer) -> None:
    """An async-generator body is refused a retry with an error naming it, never sent empty."""
    fault_server.script("/up", [Fault.fin(), Fault.ok()])

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"z" * 1000

    gave_up = EventLog()
    async with retry_session(on_giveup=gave_up) as session:
        with pytest.raises(BodyNotReplayableError, match="AsyncIterablePayload") as info:
            await session.put(fault_server.url_for("/up"), data=chunks())
        health = session_health(session)
        assert health is not None
        budget = health.budget_figures(("http", "127.0.0.1", fault_server.url.port))
    assert fault_server.count("/up") == 1
    assert [r.body_size for r in fault_server.records] == [4000]
    assert isinstance(info.value.__cause__, aiohttp.ServerDisconnectedError)
    # Told like any give-up (the hook too), and the retry it never made gave its charge back.
    assert len(gave_up.events) == 1
    assert budget[1] == 0


@pytest.mark.parametrize(
    "make_body",
    [lambda: b"b" * 5000, lambda: io.BytesIO(b"b" * 5000)],
    ids=["bytes", "bytesio"],
)
async def test_replayable_bodies_are_resent_intact(fault_server: FaultServer, make_body) -> None:  # type: ignore[no-untyped-def]
    """bytes and seekable file bodies arrive whole on every attempt."""
    fault_server.script("/up", [Fault.fin(), Fault.rst(), Fault.ok()])
    async with retry_session() as session:
        async with session.put(fault_server.url_for("/up"), data=make_body()) as resp:
            assert resp.status == 200
    assert [r.body_size for r in fault_server.records] == [5000, 5000, 5000]


async def test_json_body_is_resent_intact(fault_server: FaultServer) -> None:
    """json= bodies are re-sent whole."""
    fault_server.script("/up", [Fault.fin(), Fault.ok()])
    async with retry_session() as session:
        async with session.put(fault_server.url_for("/up"), json={"a": 1}) as resp:
            assert resp.status == 200
    assert [json.loads(r.body) for r in fault_server.records] == [{"a": 1}, {"a": 1}]


# 6. Retry-After, its cap and the deadline ------------------------------------------------------


async def test_retry_after_seconds_is_honoured(fault_server: FaultServer) -> None:
    """The wait is the server's Retry-After, not the backoff."""
    fault_server.script("/r", [Fault.status(429, retry_after=7), Fault.ok()])
    sleeps, events = SleepRecorder(), EventLog()
    async with retry_session(sleep=sleeps, on_retry=events) as session:
        async with session.get(fault_server.url_for("/r")) as resp:
            assert resp.status == 200
    assert sleeps.delays == [7.0]
    assert events.reasons == ["Retry-After"]
    assert fault_server.count("/r") == 2


async def test_retry_after_date_is_honoured(fault_server: FaultServer) -> None:
    """An HTTP-date Retry-After becomes the seconds until that date."""
    fault_server.script(
        "/r", [Fault.status(503, retry_after=20, retry_after_date=True), Fault.ok()]
    )
    sleeps = SleepRecorder()
    async with retry_session(sleep=sleeps) as session:
        async with session.get(fault_server.url_for("/r")) as resp:
            assert resp.status == 200
    assert len(sleeps.delays) == 1
    assert 18.9 <= sleeps.delays[0] <= 21.0  # an HTTP-date has whole seconds


async def test_retry_after_past_cap_gives_up_at_once(fault_server: FaultServer) -> None:
    """A Retry-After above the cap ends the retries instead of being slept on."""
    fault_server.set_default("/r", Fault.status(503, retry_after=3600))
    sleeps = SleepRecorder()
    async with retry_session(fast_policy(retry_after_max=60), sleep=sleeps) as session:
        with pytest.raises(RetriesExhaustedError, match="Retry-After") as info:
            await session.get(fault_server.url_for("/r"))
    assert info.value.retry_after == 3600
    assert info.value.attempts == 1
    assert sleeps.delays == []
    assert fault_server.count("/r") == 1


async def test_retry_after_past_deadline_gives_up_at_once(fault_server: FaultServer) -> None:
    """No wait starts that would end past the deadline."""
    fault_server.set_default("/r", Fault.status(503, retry_after=5))
    sleeps = SleepRecorder()
    async with retry_session(fast_policy(deadline=2.0), sleep=sleeps) as session:
        with pytest.raises(RetriesExhaustedError, match="deadline"):
            await session.get(fault_server.url_for("/r"))
    assert sleeps.delays == []
    assert fault_server.count("/r") == 1


async def test_backoff_past_deadline_gives_up_at_once(fault_server: FaultServer) -> None:
    """A backoff wait longer than the time left is not started."""
    fault_server.set_default("/d", Fault.fin())
    sleeps = SleepRecorder()
    async with retry_session(
        fast_policy(deadline=0.5, backoff_base=1.0), sleep=sleeps, health=BACKOFF_ONLY
    ) as s:
        with pytest.raises(RetriesExhaustedError, match="deadline"):
            await s.get(fault_server.url_for("/d"))
    assert sleeps.delays == []
    assert fault_server.count("/d") == 1


async def test_deadline_bounds_a_hanging_attempt(fault_server: FaultServer) -> None:
    """The deadline cuts an attempt short and gives up, raised from the timeout."""
    fault_server.set_default("/hang", Fault.hang(5.0))
    loop = asyncio.get_running_loop()
    async with retry_session(fast_policy(deadline=0.3)) as session:
        started = loop.time()
        with pytest.raises(RetriesExhaustedError, match="deadline") as info:
            await session.get(fault_server.url_for("/hang"))
        assert loop.time() - started < 3.0
    assert isinstance(info.value.__cause__, asyncio.TimeoutError)
    assert fault_server.count("/hang") == 1


async def test_deadline_covers_the_wait_for_a_slot(fault_server: FaultServer) -> None:
    """A request whose deadline passes while it waits for a per-host slot gives up, unsent."""
    fault_server.set_default("/slow", Fault.drip(body=b"x" * 20, chunk=1, interval=0.05))
    fault_server.set_default("/fast", Fault.ok())
    limiter = HostLimiter(limit_per_host=1)
    async with retry_session(fast_policy(buffer_body=False), limiter=limiter) as holder_session:
        holder = await holder_session.get(fault_server.url_for("/slow"))  # holds the only slot
        middleware = RetryMiddleware(fast_policy(deadline=0.2), limiter=limiter)
        async with aiohttp.ClientSession(middlewares=[middleware]) as session:
            with pytest.raises(RetriesExhaustedError, match="per-host slot") as info:
                await asyncio.wait_for(session.get(fault_server.url_for("/fast")), 5)
        holder.release()
    assert info.value.attempts == 0
    assert info.value.history == ()
    assert fault_server.count("/fast") == 0
    assert isinstance(info.value.__cause__, asyncio.TimeoutError)
    assert repr(limiter).endswith("in_flight=0 waiting=0>")


# 7. A disconnect while the body is read --------------------------------------------------------


async def test_cut_body_is_retried_so_json_sees_the_whole_body(fault_server: FaultServer) -> None:
    """resp.json() outside the middleware sees the retried, whole body."""
    fault_server.script("/j", [Fault.cut_body(size=500, sent=50), OK_JSON])
    async with retry_session() as session:
        async with session.get(fault_server.url_for("/j")) as resp:
            assert await resp.json() == {"ok": True}
    assert fault_server.count("/j") == 2


async def test_streaming_callers_can_turn_buffering_off(fault_server: FaultServer) -> None:
    """With buffer_body=False the body streams to the caller, and a cut reaches it."""
    fault_server.script("/j", [Fault.cut_body(size=500, sent=50), OK_JSON])
    async with retry_session(fast_policy(buffer_body=False)) as session:
        async with session.get(fault_server.url_for("/j")) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert fault_server.count("/j") == 1


async def test_bodies_above_the_cap_are_not_buffered(fault_server: FaultServer) -> None:
    """A body larger than max_buffer_size is handed over unread, and still reads whole."""
    body = b"q" * 10_000
    fault_server.script("/big", [Fault.cut_body(size=10_000, sent=100), Fault.ok(body=body)])
    fault_server.set_default("/big2", Fault.ok(body=body))
    async with retry_session(fast_policy(max_buffer_size=1000)) as session:
        async with session.get(fault_server.url_for("/big")) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        async with session.get(fault_server.url_for("/big2")) as resp:
            assert await resp.read() == body
    assert fault_server.count("/big") == 1


@pytest.mark.parametrize("cap", [100, 1_000_000], ids=["over-cap", "under-cap"])
async def test_compressed_bodies_are_capped_on_their_decoded_size(
    fault_server: FaultServer, cap: int
) -> None:
    """Content-Length counts compressed bytes; the cap applies to what is buffered, and the
    caller reads the whole decoded body either way."""
    plain = b"abc" * 10_000
    fault_server.set_default(
        "/gz", Fault.ok(body=gzip.compress(plain), headers={"Content-Encoding": "gzip"})
    )
    async with retry_session(fast_policy(max_buffer_size=cap)) as session:
        async with session.get(fault_server.url_for("/gz")) as resp:
            assert await resp.read() == plain


# 8. The per-host limiter -----------------------------------------------------------------------


async def test_limiter_caps_attempts_in_flight_per_host(fault_server: FaultServer) -> None:
    """With a cap of 2, eight concurrent slow requests use at most two connections at once."""
    fault_server.set_default("/slow", Fault.drip(body=b"x" * 50, chunk=10, interval=0.01))
    limiter = HostLimiter(limit_per_host=2)
    async with retry_session(limiter=limiter) as session:

        async def fetch() -> bytes:
            async with session.get(fault_server.url_for("/slow")) as resp:
                return await resp.read()

        bodies = await asyncio.gather(*(fetch() for _ in range(8)))
    assert bodies == [b"x" * 50] * 8
    assert fault_server.count("/slow") == 8
    assert fault_server.connections_opened == 2
    assert repr(limiter) == "<HostLimiter limit_per_host=2 hosts=0 in_flight=0 waiting=0>"


async def test_limiter_without_cap_opens_more_connections(fault_server: FaultServer) -> None:
    """The control for the test above: without the limiter the same load opens 8 connections."""
    fault_server.set_default("/slow", Fault.drip(body=b"x" * 50, chunk=10, interval=0.01))
    async with retry_session() as session:

        async def fetch() -> bytes:
            async with session.get(fault_server.url_for("/slow")) as resp:
                return await resp.read()

        await asyncio.gather(*(fetch() for _ in range(8)))
    assert fault_server.connections_opened == 8


async def test_limiter_slot_is_free_while_backing_off(fault_server: FaultServer) -> None:
    """A request sleeping between attempts does not hold its host's slot."""
    fault_server.script("/a", [Fault.fin(), Fault.ok(body=b"a")])
    fault_server.set_default("/b", Fault.ok(body=b"b"))
    limiter = HostLimiter(limit_per_host=1)
    b_done = asyncio.Event()
    in_flight_while_sleeping: list[int] = []

    async def sleep_until_b_done(delay: float) -> None:
        in_flight_while_sleeping.append(
            limiter.in_flight(("http", "127.0.0.1", fault_server.url.port))
        )
        await asyncio.wait_for(b_done.wait(), timeout=5)

    middleware = RetryMiddleware(
        fast_policy(),
        limiter=limiter,
        sleep=sleep_until_b_done,
        health=HostHealth(BACKOFF_ONLY, limiter=limiter, sleep=sleep_until_b_done),
    )
    async with aiohttp.ClientSession(
        connector=TrackingConnector(), middlewares=[middleware]
    ) as session:
        task_a = asyncio.create_task(session.get(fault_server.url_for("/a")))
        await wait_until(lambda: bool(in_flight_while_sleeping))
        async with session.get(fault_server.url_for("/b")) as resp:
            assert await resp.read() == b"b"
        b_done.set()
        resp_a = await task_a
        assert await resp_a.read() == b"a"
    assert in_flight_while_sleeping == [0]
    assert fault_server.count("/a") == 2


async def test_limiter_slot_is_released_on_cancellation(fault_server: FaultServer) -> None:
    """Cancelling a request that holds (or waits for) a slot gives the slot back."""
    fault_server.set_default("/hang", Fault.hang(5.0))
    fault_server.set_default("/ok", Fault.ok())
    limiter = HostLimiter(limit_per_host=1)
    key = ("http", "127.0.0.1", fault_server.url.port)
    async with retry_session(limiter=limiter) as session:
        holder = asyncio.create_task(session.get(fault_server.url_for("/hang")))
        waiter = asyncio.create_task(session.get(fault_server.url_for("/ok")))
        await wait_until(lambda: fault_server.count("/hang") > 0)
        assert limiter.in_flight(key) == 1
        waiter.cancel()
        holder.cancel()
        for task in (holder, waiter):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert limiter.in_flight(key) == 0
        async with session.get(fault_server.url_for("/ok")) as resp:
            assert resp.status == 200
    assert fault_server.count("/ok") == 1


async def test_streamed_response_holds_its_slot_until_released(fault_server: FaultServer) -> None:
    """An unbuffered response keeps its slot while the caller streams, and frees it on release."""
    fault_server.set_default("/s", Fault.drip(body=b"s" * 100, chunk=10, interval=0.05))
    limiter = HostLimiter(limit_per_host=1)
    key = ("http", "127.0.0.1", fault_server.url.port)
    async with retry_session(fast_policy(buffer_body=False), limiter=limiter) as session:
        resp = await session.get(fault_server.url_for("/s"))
        assert limiter.in_flight(key) == 1
        assert len(await resp.content.read(10)) == 10
        resp.release()
        assert limiter.in_flight(key) == 0


# 9. Cancellation is never retried or swallowed -------------------------------------------------


async def test_cancel_during_attempt_propagates(fault_server: FaultServer) -> None:
    """A cancelled request stays cancelled and is not sent again."""
    fault_server.set_default("/hang", Fault.hang(5.0))
    async with retry_session() as session:
        task = asyncio.create_task(session.get(fault_server.url_for("/hang")))
        await wait_until(lambda: fault_server.count("/hang") > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
    assert task.cancelled()
    assert fault_server.count("/hang") == 1


async def test_cancel_during_backoff_propagates(fault_server: FaultServer) -> None:
    """Cancelling a request that is waiting to retry ends it; no further attempt is made."""
    fault_server.set_default("/down", Fault.fin())
    sleeping = asyncio.Event()

    async def long_sleep(delay: float) -> None:
        sleeping.set()
        await asyncio.sleep(30)

    middleware = RetryMiddleware(fast_policy(), sleep=long_sleep, health=BACKOFF_ONLY)
    async with aiohttp.ClientSession(middlewares=[middleware]) as session:
        task = asyncio.create_task(session.get(fault_server.url_for("/down")))
        await asyncio.wait_for(sleeping.wait(), timeout=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fault_server.count("/down") == 1


# 11. Logging and hooks -------------------------------------------------------------------------


async def test_retries_and_give_up_are_logged_with_secrets_redacted(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every retry and the give-up are logged with method, redacted URL, attempt, cause, delay."""
    fault_server.set_default("/down", Fault.fin())
    url = fault_server.url_for("/down").with_user("alice").with_password("hunter2")
    url = url.with_query({"access_token": "s3cr3t", "page": "2"})
    retries, giveups = EventLog(), EventLog()
    caplog.set_level(logging.INFO, logger="aiohttp_resilient")
    async with retry_session(
        fast_policy(attempts=3, backoff_base=0.125),
        on_retry=retries,
        on_giveup=giveups,
        health=BACKOFF_ONLY,
    ) as session:
        with pytest.raises(RetriesExhaustedError) as info:
            await session.get(url)
    assert fault_server.count("/down") == 3
    text = caplog.text
    assert "hunter2" not in text
    assert "s3cr3t" not in text
    assert "alice" not in text
    assert "page=2" in text
    assert "hunter2" not in str(info.value)
    records = [r for r in caplog.records if r.name == "aiohttp_resilient"]
    assert [r.levelname for r in records] == ["INFO", "INFO", "WARNING"]
    assert "GET" in records[0].getMessage()
    assert "ServerDisconnectedError" in records[0].getMessage()
    assert "0.125s" in records[0].getMessage()
    assert [(e.attempt, e.delay) for e in retries.events] == [(1, 0.125), (2, 0.25)]
    assert [(e.attempt, e.delay) for e in giveups.events] == [(3, None)]
    event = giveups.events[0]
    assert event.method == "GET"
    assert "REDACTED" in event.url
    assert "s3cr3t" not in event.url
    assert event.cause.startswith("ServerDisconnectedError")
    with pytest.raises(AttributeError):
        event.attempt = 9  # type: ignore[misc]


async def test_async_hooks_are_awaited(fault_server: FaultServer) -> None:
    """A coroutine-function hook is awaited."""
    fault_server.script("/a", [Fault.status(500), Fault.ok()])
    seen: list[int] = []

    async def hook(event: RetryEvent) -> None:
        await asyncio.sleep(0)
        seen.append(event.status or 0)

    async with retry_session(on_retry=hook) as session:
        async with session.get(fault_server.url_for("/a")) as resp:
            assert resp.status == 200
    assert seen == [500]


def test_middleware_rejects_bad_arguments() -> None:
    """Wrong types are refused where they are passed."""
    with pytest.raises(ValueError, match="policy"):
        RetryMiddleware(policy={"attempts": 3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limiter"):
        RetryMiddleware(limiter=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_retry"):
        RetryMiddleware(on_retry="print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RetryPolicy"):
        with use_policy({"attempts": 1}):  # type: ignore[arg-type]
            pass


def test_repr_names_policy_and_limiter() -> None:
    """The repr says what the middleware will do."""
    text = repr(RetryMiddleware(RetryPolicy(attempts=2), limiter=HostLimiter(3)))
    assert "attempts=2" in text
    assert "limit_per_host=3" in text


# Bodies of unknown length stream through: an event stream or an upgrade must not be buffered.


@pytest.fixture
async def streaming_server() -> AsyncIterator[str]:
    """A real aiohttp.web server on 127.0.0.1: an endless chunked stream and a websocket echo."""
    from aiohttp import web

    release = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await asyncio.wait_for(release.wait(), timeout=5)  # an event stream does not end soon
        return resp

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"echo {message.data}")
        return ws

    app = web.Application()
    app.add_routes([web.get("/events", events), web.get("/ws", echo)])
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        await runner.cleanup()


async def test_endless_stream_is_handed_over_at_once(streaming_server: str) -> None:
    """A chunked body of unknown length is not buffered: the caller reads it as it comes."""
    async with retry_session() as session:
        resp = await asyncio.wait_for(session.get(f"{streaming_server}/events"), timeout=2)
        async with resp:
            line = await asyncio.wait_for(resp.content.readline(), timeout=2)
            assert line == b"data: first\n"


async def test_websocket_through_the_middleware(streaming_server: str) -> None:
    """ws_connect (a GET upgraded to 101) works through a resilient session."""
    async with retry_session() as session:
        ws = await asyncio.wait_for(session.ws_connect(f"{streaming_server}/ws"), timeout=2)
        async with ws:
            await ws.send_str("hi")
            assert await asyncio.wait_for(ws.receive_str(), timeout=2) == "echo hi"


async def test_a_retried_request_that_expects_100_continue_gets_a_fresh_waiter() -> None:
    # aiohttp keeps one "100 Continue" waiter per request. A reset before the server said
    # "100 Continue" cancels it with the first attempt's body writer; on Python 3.12+ a retry
    # that reused it closed its own connection before reading the response (AttributeError).
    async with FaultServer(max_body=10, max_body_action="rst") as server:
        policy = RetryPolicy(attempts=2, backoff_base=0.001, backoff_max=0.002)
        async with resilient_session(policy=policy) as session:
            with pytest.raises(RetriesExhaustedError) as info:
                await session.put(server.url_for("/"), data=b"x" * 100, expect100=True)
        assert server.count("/", method="PUT") == 2
    assert [type(a.error) for a in info.value.history] == [aiohttp.ClientOSError] * 2
