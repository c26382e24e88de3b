"""Host health through real ClientSessions against a loopback FaultServer: the retry budget,
the circuit breaker, the adaptive limit and rate, counted on the server side."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from yarl import URL

from _helpers import SleepRecorder, fast_policy, retry_session, wait_until
from aiohttp_resilient import (
    AdaptiveLimitPolicy,
    BreakerPolicy,
    BudgetPolicy,
    CircuitEvent,
    CircuitOpenError,
    CircuitState,
    HealthPolicy,
    HostHealth,
    HostLimiter,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
    RetryMiddleware,
    resilient_session,
)
from aiohttp_resilient._retry._classify import Signal
from aiohttp_resilient.testing import Fault, FaultServer

#: A budget of exactly one retry in its window (no traffic-based share).
ONE_RETRY = BudgetPolicy(ratio=0.0, min_per_second=0.1, ttl=10.0)


async def get_many(session: aiohttp.ClientSession, url: URL, *, requests: int, workers: int) -> int:
    """GET ``url`` ``requests`` times from ``workers`` concurrent tasks, reading each body;
    returns how many answered 200 (bounded: 30 s)."""
    left = requests

    async def worker() -> int:
        nonlocal left
        done = 0
        while left > 0:
            left -= 1
            async with session.get(url) as resp:
                await resp.read()
                done += resp.status == 200
        return done

    served = await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), 30)
    return sum(served)


def key_of(server: FaultServer) -> tuple[str, str, int]:
    return ("http", server.host, server.port)


# Retry budget -------------------------------------------------------------------------------------


async def test_spent_budget_refuses_the_retry(fault_server: FaultServer) -> None:
    """Once the host's budget is spent the call ends at once, naming the host and the knob."""
    fault_server.set_default("/down", Fault.rst())
    health = HealthPolicy(budget=ONE_RETRY, breaker=None)
    async with retry_session(fast_policy(attempts=5), health=health) as session:
        with pytest.raises(RetryBudgetExhaustedError) as info:
            await session.get(fault_server.url_for("/down"))
    assert fault_server.count("/down") == 2  # the first attempt and the one retry it allowed
    error = info.value
    assert error.attempts == 2
    assert error.host == f"http://127.0.0.1:{fault_server.port}"
    assert "BudgetPolicy.ratio" in str(error)
    assert isinstance(error.__cause__, aiohttp.ClientOSError)


async def test_successful_retries_give_their_charge_back(fault_server: FaultServer) -> None:
    """Isolated faults, whose retries succeed, never spend the budget: 20 of them in a row
    go through a budget of one retry."""
    fault_server.script("/flaky", [Fault.fin(), Fault.ok()] * 20)
    health = HealthPolicy(budget=ONE_RETRY, breaker=None)
    sleeps = SleepRecorder()
    # A plain connector: no FIN passes for the stale keep-alive race, which charges nothing.
    async with retry_session(fast_policy(), health=health, sleep=sleeps, tracking=False) as s:
        for _ in range(20):
            async with s.get(fault_server.url_for("/flaky")) as resp:
                assert resp.status == 200
    assert fault_server.count("/flaky") == 40
    assert sleeps.delays == []  # every retry went at once


# Circuit breaker ----------------------------------------------------------------------------------


async def test_breaker_opens_and_fails_fast_without_patience(fault_server: FaultServer) -> None:
    """After the failures that open it, nothing more is sent; calls fail with CircuitOpenError."""
    fault_server.set_default("/down", Fault.rst())
    events: list[CircuitEvent] = []
    breaker = BreakerPolicy(consecutive_failures=3, min_failure_span=0.0, patience=0.0)
    health = HostHealth(HealthPolicy(breaker=breaker), on_circuit_change=events.append)
    async with retry_session(fast_policy(attempts=10), health=health) as session:
        with pytest.raises(CircuitOpenError) as info:
            await session.get(fault_server.url_for("/down"))
        assert fault_server.count("/down") == 3
        with pytest.raises(CircuitOpenError):
            await session.get(fault_server.url_for("/down"))
    assert fault_server.count("/down") == 3
    assert info.value.host == f"http://127.0.0.1:{fault_server.port}"
    assert info.value.retry_in > 0
    assert [(e.old, e.new) for e in events] == [(CircuitState.CLOSED, CircuitState.OPEN)]


async def test_breaker_ignores_client_errors(fault_server: FaultServer) -> None:
    """4xx answers say the host is up: they never open the breaker."""
    fault_server.set_default("/missing", Fault.status(404))
    breaker = BreakerPolicy(consecutive_failures=2, min_failure_span=0.0, patience=0.0)
    health = HostHealth(HealthPolicy(breaker=breaker))
    async with retry_session(health=health) as session:
        for _ in range(5):
            async with session.get(fault_server.url_for("/missing")) as resp:
                assert resp.status == 404
    assert health.circuit_state(key_of(fault_server)) is CircuitState.CLOSED
    assert fault_server.count("/missing") == 5


async def test_one_probe_then_waiting_calls_go(fault_server: FaultServer) -> None:
    """While open, calls wait; after the break exactly one probe goes, and only when it
    succeeds do the waiting calls follow."""
    fault_server.set_default("/s", Fault.rst())
    breaker = BreakerPolicy(
        consecutive_failures=2, min_failure_span=0.0, break_duration=0.3, break_jitter=0.0
    )
    events: list[CircuitEvent] = []
    health = HostHealth(HealthPolicy(breaker=breaker), on_circuit_change=events.append)
    async with retry_session(fast_policy(attempts=3), health=health) as session:
        first = asyncio.create_task(session.get(fault_server.url_for("/s")))
        await wait_until(lambda: health.circuit_state(key_of(fault_server)) is CircuitState.OPEN)
        assert fault_server.count("/s") == 2
        # The host recovers, but its first answer (the probe's) is slow.
        fault_server.set_default("/s", Fault.ok())
        fault_server.script("/s", [Fault.drip(body=b"p" * 10, chunk=1, interval=0.03)])
        others = [asyncio.create_task(session.get(fault_server.url_for("/s"))) for _ in range(5)]
        await wait_until(lambda: fault_server.count("/s") == 3)  # the probe is out
        await asyncio.sleep(0.15)
        assert fault_server.count("/s") == 3  # nobody else was sent while it was out
        responses = await asyncio.gather(first, *others)
        assert [r.status for r in responses] == [200] * 6
        for resp in responses:
            resp.release()
    assert fault_server.count("/s") == 8
    assert [e.new for e in events] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,
    ]


async def test_cancelled_probe_frees_the_half_open_breaker(fault_server: FaultServer) -> None:
    """A probe cancelled mid-flight does not leave the breaker stuck half-open (the
    resilience4j lesson): the next call probes, and closes it."""
    fault_server.set_default("/s", Fault.rst())
    breaker = BreakerPolicy(
        consecutive_failures=2, min_failure_span=0.0, break_duration=0.1, patience=0.0
    )
    health = HostHealth(HealthPolicy(breaker=breaker))
    async with retry_session(fast_policy(attempts=2), health=health) as session:
        with pytest.raises(RetriesExhaustedError):  # its two attempts opened the breaker
            await session.get(fault_server.url_for("/s"))
        assert health.circuit_state(key_of(fault_server)) is CircuitState.OPEN
        assert fault_server.count("/s") == 2
        await asyncio.sleep(0.15)  # past the break: the next call is the probe
        fault_server.script("/s", [Fault.hang(5.0)])
        fault_server.set_default("/s", Fault.ok())
        probe = asyncio.create_task(session.get(fault_server.url_for("/s")))
        await wait_until(lambda: fault_server.count("/s") == 3)
        assert health.circuit_state(key_of(fault_server)) is CircuitState.HALF_OPEN
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        async with session.get(fault_server.url_for("/s")) as resp:
            assert resp.status == 200
    assert health.circuit_state(key_of(fault_server)) is CircuitState.CLOSED
    assert fault_server.count("/s") == 4


async def test_restart_loses_no_get_and_sends_no_post_twice(fault_server: FaultServer) -> None:
    """A server down for a second (refusing connections) under load: with the defaults every
    GET succeeds, waiting for the probe, and no POST arrives twice."""
    fault_server.set_default("/r", Fault.drip(body=b"x" * 4, chunk=1, interval=0.01))
    async with resilient_session() as session:

        async def get() -> int:
            async with session.get(fault_server.url_for("/r")) as resp:
                await resp.read()
                return resp.status

        async def post(n: int) -> int | str:
            try:
                async with session.post(fault_server.url_for("/r"), data=b"%d" % n) as resp:
                    await resp.read()
                    return resp.status
            except aiohttp.ClientError as exc:
                return type(exc).__name__

        gets = [asyncio.create_task(get()) for _ in range(40)]
        posts = [asyncio.create_task(post(n)) for n in range(10)]
        await wait_until(lambda: fault_server.count("/r") >= 20)
        await fault_server.stop_listening()
        await asyncio.sleep(1.0)
        await fault_server.start_listening()
        statuses = await asyncio.wait_for(asyncio.gather(*gets), 20)
        outcomes = await asyncio.wait_for(asyncio.gather(*posts), 20)
    assert statuses == [200] * 40
    bodies = [r.body for r in fault_server.records if r.method == "POST" and r.action == "drip"]
    assert len(bodies) == len(set(bodies))  # no POST body served twice
    assert outcomes.count(200) == len(bodies)


# Adaptive concurrency -----------------------------------------------------------------------------


async def test_adaptive_limit_shrinks_on_503_and_queues_above_it(fault_server: FaultServer) -> None:
    """A window of 503s halves the live limit; requests above it wait in the limiter's queue
    instead of reaching the server; good windows grow it back."""
    fault_server.set_default("/busy", Fault.status(503))
    limiter = HostLimiter(limit_per_host=8)
    adaptive = AdaptiveLimitPolicy(window_samples=4, decrease=0.5)
    health = HostHealth(
        HealthPolicy(adaptive_limit=adaptive, breaker=None, adaptive_rate=None), limiter=limiter
    )
    key = key_of(fault_server)
    policy = fast_policy(attempts=1, raise_on_status=False)
    async with retry_session(policy, health=health) as session:
        for _ in range(3):  # three windows of 503s (a window is at least the limit)
            responses = await asyncio.gather(
                *(session.get(fault_server.url_for("/busy")) for _ in range(8))
            )
            for resp in responses:
                resp.release()
        assert health.live_limit(key) == 1
        # Above the live limit of 1: one request at the server, the others queued.
        fault_server.set_default("/slow", Fault.drip(body=b"x" * 10, chunk=1, interval=0.02))
        tasks = [asyncio.create_task(session.get(fault_server.url_for("/slow"))) for _ in range(4)]
        await wait_until(lambda: fault_server.count("/slow") == 1)
        assert limiter.waiting(key) == 3
        await asyncio.sleep(0.1)
        assert fault_server.count("/slow") == 1
        for resp in await asyncio.gather(*tasks):
            await resp.read()
        # Healthy windows with the limit in use grow it by one each.
        fault_server.set_default("/ok", Fault.ok())
        for _ in range(8):
            responses = await asyncio.gather(
                *(session.get(fault_server.url_for("/ok")) for _ in range(4))
            )
            for resp in responses:
                resp.release()
        assert health.live_limit(key) > 1


async def test_random_faults_do_not_shrink_the_limit(fault_server: FaultServer) -> None:
    """A few random resets per window are not congestion: the limit stays at the cap."""
    fault_server.random("/r", {Fault.rst(): 0.1}, seed=3)
    limiter = HostLimiter(limit_per_host=8)
    health = HostHealth(HealthPolicy(breaker=None), limiter=limiter)
    # A plain connector, so that no reset passes for the stale keep-alive race.
    lowest = 8
    async with retry_session(fast_policy(), health=health, tracking=False) as session:
        for _ in range(25):
            responses = await asyncio.gather(
                *(session.get(fault_server.url_for("/r")) for _ in range(8))
            )
            for resp in responses:
                assert resp.status == 200
                resp.release()
            lowest = min(lowest, health.live_limit(key_of(fault_server)) or 0)
    assert fault_server.action_counts["rst"] > 10
    assert lowest == 8


# Adaptive rate ------------------------------------------------------------------------------------


async def test_throttled_host_gets_a_send_rate(fault_server: FaultServer) -> None:
    """After a 429 the host's requests are paced by a token bucket (the waits are recorded)."""
    fault_server.script("/t", [Fault.ok()] * 20 + [Fault.status(429)])
    fault_server.set_default("/t", Fault.ok())
    sleeps = SleepRecorder()
    health = HostHealth(HealthPolicy(breaker=None), sleep=sleeps)
    async with retry_session(fast_policy(), health=health, sleep=sleeps) as session:
        for _ in range(40):
            async with session.get(fault_server.url_for("/t")) as resp:
                assert resp.status == 200
    rate = health.send_rate(key_of(fault_server))
    assert rate is not None
    assert rate > 0
    assert sleeps.delays  # requests after the throttle waited for the bucket
    assert fault_server.count("/t") == 41


# The limiter's queue ------------------------------------------------------------------------------


async def test_limiter_waiters_cancelled_together_raise_cancelled() -> None:
    """Six waiters on a cap of two, all cancelled at once, get CancelledError, not ValueError."""
    limiter = HostLimiter(limit_per_host=2)
    key = ("http", "127.0.0.1", 1)
    assert limiter.try_acquire(key)
    assert limiter.try_acquire(key)
    tasks = [asyncio.create_task(limiter.acquire(key)) for _ in range(6)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    limiter.release(key)  # passes over the cancelled head of the queue
    for task in tasks[1:]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results[2:])
    assert limiter.waiting(key) == 0


async def test_health_state_changes_are_logged(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The breaker's opening and closing are logged once each at INFO with the host; the
    probes in between only at DEBUG; the failed call itself at WARNING, once."""
    fault_server.script("/down", [Fault.rst(), Fault.rst(), Fault.rst()])
    fault_server.set_default("/down", Fault.ok())
    caplog.set_level(logging.DEBUG, logger="aiohttp_resilient")
    breaker = BreakerPolicy(
        consecutive_failures=2, min_failure_span=0.0, break_duration=0.05, patience=0.0
    )
    middleware = RetryMiddleware(fast_policy(), health=HealthPolicy(breaker=breaker))
    async with aiohttp.ClientSession(middlewares=[middleware]) as session:
        with pytest.raises(CircuitOpenError):
            await session.get(fault_server.url_for("/down"))
        await asyncio.sleep(0.06)
        with pytest.raises(CircuitOpenError):  # its probe fails; no patience to wait again
            await session.get(fault_server.url_for("/down"))
        await asyncio.sleep(0.1)
        async with session.get(fault_server.url_for("/down")) as resp:
            assert resp.status == 200  # the probe that closes it
    circuit = [r for r in caplog.records if r.getMessage().startswith("circuit for ")]
    told = [r for r in circuit if r.levelno >= logging.INFO]
    assert [r.levelname for r in told] == ["INFO", "INFO"]
    assert "is open (2 failures in a row" in told[0].getMessage()
    assert "is closed" in told[1].getMessage()
    assert len(circuit) > 2  # the probes, at DEBUG
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2  # one per failed call


@pytest.mark.parametrize("refusal", [Fault.status(503), Fault.rst()], ids=["503", "rst"])
async def test_overloaded_host_gets_its_capacity_and_loses_nothing(refusal: Fault) -> None:
    """A host that serves 4 at a time and refuses the rest at once (503 or RST): the live limit
    comes down to its capacity, the rest wait in the client's queue, and no request is lost
    though every attempt counts; the server sees few refusals (counted there: 1.06-1.08
    attempts per success measured)."""
    async with FaultServer(
        record=False, capacity=4, service_time=0.01, over_capacity=refusal
    ) as server:
        limiter = HostLimiter(limit_per_host=16)
        # Scaled to this test's 400 requests: windows of 20 attempts, and a budget reserve of
        # 10 retries instead of 100. Failed retries past half the budget are what tells resets
        # that come with load from random ones; with the default reserve, 400 requests never
        # fail enough retries to say so (the 4000-request bench scenario does, and loses none).
        health = HostHealth(
            HealthPolicy(
                adaptive_limit=AdaptiveLimitPolicy(window_samples=20),
                budget=BudgetPolicy(min_per_second=1.0),
            ),
            limiter=limiter,
        )
        middleware = RetryMiddleware(health=health)  # real waits: the backoff spreads retries
        async with aiohttp.ClientSession(middlewares=[middleware]) as session:
            served = await get_many(session, server.url_for("/b"), requests=400, workers=16)
        assert served == 400
        limit = health.live_limit(key_of(server))
        assert limit is not None
        assert limit <= 5  # the capacity, or one over it while a probe is out
        assert server.count("/b") <= 1.3 * 400  # at most 0.3 refusals per success


async def test_rate_limited_host_with_retry_after_is_paced_not_slept_on() -> None:
    """A host admitting 200 requests/s answers the rest 429 with Retry-After: the client soon
    sends at about the host's rate, so few requests are refused (counted by the server) and
    all succeed."""
    async with FaultServer(
        record=False, rate_limit=200, over_rate=Fault.status(429), compute_retry_after=True
    ) as server:
        limiter = HostLimiter(limit_per_host=16)
        health = HostHealth(limiter=limiter)
        async with aiohttp.ClientSession(middlewares=[RetryMiddleware(health=health)]) as session:
            served = await get_many(session, server.url_for("/b"), requests=400, workers=16)
        assert served == 400
        rate = health.send_rate(key_of(server))
        assert rate is not None
        assert 100 < rate < 400
        assert server.count("/b") <= 1.1 * 400


async def test_throttled_rate_recovers_after_sparse_sending() -> None:
    """A host admitting 20 requests/s (429 with Retry-After beyond), sent 1 request a second,
    then a burst of 30: every request succeeds, and 5 s after the server's last 429 the host's
    send rate is back past 15/s (botocore's rules held it near 0.5/s for minutes). Real clock;
    the 429s are counted on the server."""
    async with FaultServer(record=False, rate_limit=20, compute_retry_after=True) as server:
        url = server.url_for("/r")
        last_429 = asyncio.get_running_loop().time()
        seen = 0

        async def watch() -> None:  # when the server last refused, on its own count
            nonlocal last_429, seen
            while True:
                if server.shed_counts.get("rate", 0) != seen:
                    seen = server.shed_counts["rate"]
                    last_429 = asyncio.get_running_loop().time()
                await asyncio.sleep(0.005)

        health = HostHealth(HealthPolicy(breaker=None))
        watcher = asyncio.create_task(watch())
        try:
            async with aiohttp.ClientSession(
                middlewares=[RetryMiddleware(health=health)]
            ) as session:
                for _ in range(3):  # sparse: 1 request a second
                    async with session.get(url) as resp:
                        assert resp.status == 200
                    await asyncio.sleep(1.0)
                served = await asyncio.wait_for(get_many(session, url, requests=30, workers=30), 15)
        finally:
            watcher.cancel()
        assert served == 30
        assert seen > 0  # the burst was throttled
        assert server.count("/r") == 33 + seen
        await asyncio.sleep(max(0.0, last_429 + 5.0 - asyncio.get_running_loop().time()))
        rate = health.send_rate(key_of(server))
        assert rate is not None
        assert rate >= 15.0


async def test_an_outage_of_503s_leaves_the_send_rate_alone(fault_server: FaultServer) -> None:
    """503s from a host that is down say nothing about a rate: no pacing after it recovers."""
    fault_server.script("/d", [Fault.status(503)] * 30)
    fault_server.set_default("/d", Fault.ok())
    health = HostHealth(HealthPolicy(breaker=None))
    policy = fast_policy(attempts=1, raise_on_status=False)
    async with retry_session(policy, health=health) as session:
        for _ in range(40):
            async with session.get(fault_server.url_for("/d")) as resp:
                await resp.read()
    assert health.send_rate(key_of(fault_server)) is None


def test_min_limit_above_the_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="min_limit"):
        HostHealth(
            HealthPolicy(adaptive_limit=AdaptiveLimitPolicy(min_limit=8)),
            limiter=HostLimiter(limit_per_host=4),
        )


def test_hosts_not_claimed_for_ten_minutes_are_forgotten() -> None:
    """A crawler's dead hosts do not pile up: idle ones go in the sweep past 1024 hosts."""
    now = [0.0]
    health = HostHealth(clock=lambda: now[0])
    for n in range(1024):
        assert health.try_claim(("http", f"h{n}", 80), now[0], True) is not None
    now[0] = 601.0
    health.try_claim(("http", "new", 80), now[0], True)
    assert repr(health).startswith("<HostHealth hosts=1 ")


async def test_probe_answered_429_closes_the_breaker(fault_server: FaultServer) -> None:
    """A host that answers its probe with 429 is up (busy): the circuit closes instead of
    probing again at once."""
    fault_server.script("/s", [Fault.rst(), Fault.rst(), Fault.status(429), Fault.ok()])
    breaker = BreakerPolicy(
        consecutive_failures=2, min_failure_span=0.0, break_duration=0.05, break_jitter=0.0
    )
    events: list[CircuitEvent] = []
    health = HostHealth(HealthPolicy(breaker=breaker, budget=None), on_circuit_change=events.append)
    async with retry_session(fast_policy(), health=health) as session:
        async with session.get(fault_server.url_for("/s")) as resp:
            assert resp.status == 200
    assert fault_server.count("/s") == 4
    assert [e.new for e in events] == [
        CircuitState.OPEN,
        CircuitState.HALF_OPEN,
        CircuitState.CLOSED,  # on the 429: no second probe
    ]


async def test_returned_retryable_answer_keeps_its_slot(fault_server: FaultServer) -> None:
    """raise_on_status=False hands the last 503 over: its slot stays taken until it is
    released, as for any streamed response."""
    # A body that is still arriving: its connection is not back in the pool yet.
    fault_server.set_default(
        "/busy", Fault("drip", code=503, body=b"x" * 20, chunk=1, interval=0.01)
    )
    limiter = HostLimiter(limit_per_host=4)
    health = HostHealth(HealthPolicy(breaker=None, budget=None), limiter=limiter)
    policy = fast_policy(attempts=1, raise_on_status=False, buffer_body=False)
    async with retry_session(policy, health=health) as session:
        resp = await session.get(fault_server.url_for("/busy"))
        assert resp.status == 503
        assert limiter.in_flight(key_of(fault_server)) == 1
        await resp.read()
        resp.release()
        assert limiter.in_flight(key_of(fault_server)) == 0


# The fast path: answers counted on the host's record, told to the mechanisms together ---------


async def test_answers_of_the_fast_path_earn_retry_budget(fault_server: FaultServer) -> None:
    """Calls answered at once are counted in the budget: 50 of them earn 10 retries
    (``ratio=0.2``) for the host's next outage, counted on the server."""
    fault_server.set_default("/ok", Fault.ok())
    fault_server.set_default("/down", Fault.rst())
    budget = BudgetPolicy(ratio=0.2, min_per_second=0.1, ttl=10.0)  # 1 retry without traffic
    health = HealthPolicy(budget=budget, breaker=None, adaptive_limit=None)
    async with retry_session(fast_policy(attempts=50), health=health, tracking=False) as session:
        for _ in range(50):
            async with session.get(fault_server.url_for("/ok")) as resp:
                assert resp.status == 200
        with pytest.raises(RetryBudgetExhaustedError):
            await session.get(fault_server.url_for("/down"))
    # 1 + 0.2 x 51 calls = 11.2 retries allowed: the first attempt and 11 retries.
    assert fault_server.count("/down") == 12


async def test_answers_of_the_fast_path_reset_the_breakers_count(
    fault_server: FaultServer,
) -> None:
    """Failures apart from each other by answers are not failures in a row: two resets then
    an answer, nine times over, never open a breaker of three in a row."""
    fault_server.script("/f", [Fault.rst(), Fault.rst(), Fault.ok()] * 9)
    breaker = BreakerPolicy(consecutive_failures=3, min_failure_span=0.0, failure_ratio=None)
    health = HostHealth(HealthPolicy(breaker=breaker, budget=None, adaptive_limit=None))
    async with retry_session(fast_policy(attempts=1), health=health, tracking=False) as session:
        for n in range(27):
            if n % 3 == 2:
                async with session.get(fault_server.url_for("/f")) as resp:
                    assert resp.status == 200
            else:
                with pytest.raises(aiohttp.ClientError):
                    await session.get(fault_server.url_for("/f"))
    assert fault_server.count("/f") == 27
    assert health.circuit_openings(key_of(fault_server)) == 0


async def test_answers_of_the_fast_path_fill_the_limits_windows(
    fault_server: FaultServer,
) -> None:
    """One reset in five is a random fault, not congestion, when the answers between count in
    the adaptive limit's windows: the limit stays at the cap over 20 windows."""
    fault_server.script("/r", [Fault.ok(), Fault.ok(), Fault.ok(), Fault.ok(), Fault.rst()] * 40)
    limiter = HostLimiter(limit_per_host=4)
    adaptive = AdaptiveLimitPolicy(window_samples=10)
    health = HostHealth(HealthPolicy(breaker=None, adaptive_limit=adaptive), limiter=limiter)
    async with retry_session(fast_policy(attempts=1), health=health, tracking=False) as session:
        for n in range(200):
            if n % 5 == 4:
                with pytest.raises(aiohttp.ClientError):
                    await session.get(fault_server.url_for("/r"))
            else:
                async with session.get(fault_server.url_for("/r")) as resp:
                    assert resp.status == 200
    assert fault_server.count("/r") == 200
    assert health.live_limit(key_of(fault_server)) == 4


async def test_drops_of_a_burst_sent_before_a_cut_do_not_cut_again(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Eight attempts in flight dropped together cut the limit once: the drops that come
    after the cut were sent under the old limit and say nothing of the new one."""
    fault_server.set_default("/h", Fault.hang(0.2))
    limiter = HostLimiter(limit_per_host=8)
    adaptive = AdaptiveLimitPolicy(window_samples=4)
    health = HostHealth(
        HealthPolicy(breaker=None, budget=None, adaptive_limit=adaptive), limiter=limiter
    )
    caplog.set_level(logging.INFO, logger="aiohttp_resilient")
    async with retry_session(fast_policy(attempts=1), health=health, tracking=False) as session:
        results = await asyncio.gather(
            *(session.get(fault_server.url_for("/h")) for _ in range(8)), return_exceptions=True
        )
    assert all(isinstance(r, RetriesExhaustedError) for r in results), results
    assert fault_server.count("/h") == 8
    cuts = [r for r in caplog.records if getattr(r, "event", None) == "adaptive_limit"]
    assert len(cuts) == 1  # the first four drops cut it; the other four are not counted
    assert health.live_limit(key_of(fault_server)) == cuts[0].limit  # type: ignore[attr-defined]


def test_fast_path_counts_land_when_they_happened() -> None:
    """Calls and answers counted on a host's record reach the budget in the time slot they
    came in: a burst, a quiet minute, then one call: only that call's share is left."""
    now = [1000.0]
    health = HostHealth(HealthPolicy(), limiter=HostLimiter(8), clock=lambda: now[0])
    assert health.limiter is not None
    key = ("http", "quiet.test", 80)
    floor = health.budget_left(key)
    assert floor is not None
    for _ in range(8):
        entered = health.try_enter(key, now[0])
        assert entered is not None
        now[0] += 0.005
        health.answered(key, entered, now[0] - 0.005, now[0])
        health.limiter.release(key)
    now[0] += 60  # the 10 s window has passed: the burst's share has expired
    assert health.try_enter(key, now[0]) is not None
    assert health.budget_left(key) == pytest.approx(floor + BudgetPolicy().ratio)


def test_fast_path_answers_sent_under_an_old_limit_are_not_its_samples() -> None:
    """Answers of attempts sent before the adaptive limit changed do not count in the new
    limit's window, as a claimed attempt's would not."""
    now = [1000.0]
    health = HostHealth(HealthPolicy(), limiter=HostLimiter(64), clock=lambda: now[0])
    key = ("http", "busy.test", 80)
    sent = []
    for _ in range(64):
        entered = health.try_enter(key, now[0])
        assert entered is not None
        sent.append((entered, now[0]))
        now[0] += 0.001
    limit = health._hosts[key].limit
    assert limit is not None
    for entered, started in sent[:13]:  # a fifth of the window throttled: the limit is cut
        now[0] += 0.001
        health.claim_after(key, entered, started).end(Signal.THROTTLED, now[0])
    assert limit.epoch == 1
    for entered, started in sent[13:53]:  # the others answer, sent under the old limit
        now[0] += 0.001
        health.answered(key, entered, started, now[0])
    now[0] += 0.2
    health.strain(key, now[0])  # reads the host: the answers are told to the mechanisms
    assert limit._samples == 0
