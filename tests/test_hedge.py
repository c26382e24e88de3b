"""Hedged requests through real ClientSessions against a loopback FaultServer: who wins, what the
server saw (counted there), when hedging stands down, and that cancellation leaks nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time

import aiohttp
import pytest
from yarl import URL

from aiohttp_resilient import (
    BreakerPolicy,
    BudgetPolicy,
    HealthPolicy,
    HedgePolicy,
    RetriesExhaustedError,
    RetryMiddleware,
    RetryPolicy,
    resilient_session,
    stats,
)
from aiohttp_resilient._retry._middleware import session_middleware
from aiohttp_resilient.testing import Fault, FaultServer, ServerLoad

#: An answer whose headers come at once and whose 2-byte body comes after 1 s: the middleware
#: reads a known-length body inside the attempt, so the attempt takes 1 s.
SLOW = Fault.drip(b"sl", chunk=2, interval=1.0)
#: A fixed short delay and no extra-load bound, so that a single call is hedged.
QUICK = HedgePolicy(delay=0.02, max_extra=1.0)


def key_of(server: FaultServer) -> tuple[str, str, int]:
    return ("http", server.host, server.port)


def host_stats(session: aiohttp.ClientSession, server: FaultServer) -> tuple[int, int]:
    middleware = session_middleware(session)
    assert middleware is not None
    assert middleware.stats_recorder is not None
    counts = middleware.stats_recorder.host_counts(key_of(server))
    return counts.hedges, counts.hedges_won


async def one_get(server: FaultServer, script: list[Fault]) -> tuple[bytes, tuple[int, int]]:
    """One GET through a session hedging at QUICK, the server answering ``script`` in turn:
    the body the caller read, and (hedges, hedges won)."""
    server.script("/", script)
    async with resilient_session(hedge=QUICK) as session:
        async with session.get(server.url_for("/")) as resp:
            body = await resp.read()
        return body, host_stats(session, server)


async def timed_gets(
    session: aiohttp.ClientSession, url: URL, *, calls: int, workers: int
) -> list[float]:
    """GET ``url`` ``calls`` times from ``workers`` tasks; each call's seconds, sorted."""
    left = calls
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            async with session.get(url) as resp:
                assert await resp.read() in (b"ok", b"sl")
            latencies.append(time.perf_counter() - started)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), 30)
    return sorted(latencies)


# The policy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("delay", -1.0),
        ("percentile", 0.2),
        ("percentile", 1.0),
        ("min_delay", -0.1),
        ("max_delay", 0.0),
        ("warmup", 0),
        ("max_hedges", 5),
        ("max_hedges", 1.5),
        ("max_extra", 0.0),
        ("max_extra", 1.5),  # above max_hedges (1)
        ("window", 0.5),
    ],
)
def test_policy_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    """A bad HedgePolicy field raises ValueError naming it."""
    with pytest.raises(ValueError, match=field):
        HedgePolicy(**{field: value})  # type: ignore[arg-type]


def test_middleware_rejects_a_hedge_that_is_not_a_policy() -> None:
    """hedge= takes a HedgePolicy."""
    with pytest.raises(ValueError, match="hedge"):
        RetryMiddleware(hedge=0.05)  # type: ignore[arg-type]


# The tail -----------------------------------------------------------------------------------------


async def test_default_policy_cuts_the_tail_at_bounded_extra_load(
    fault_server: FaultServer,
) -> None:
    """2% of answers take 1 s (rolled per request), concurrency 16: with HedgePolicy() no call
    waits for a slow answer at p99, at <= 1.06 server GETs per call (counted on the server)."""
    fault_server.random("/", {Fault.ok(): 0.98, SLOW: 0.02}, seed=20)
    calls = 800
    async with resilient_session(hedge=HedgePolicy()) as session:
        latencies = await timed_gets(session, fault_server.url_for("/"), calls=calls, workers=16)
        hedges, won = host_stats(session, fault_server)
    gets = fault_server.count("/", method="GET")
    assert gets <= 1.06 * calls, gets
    # Nothing but calls and hedges reached it (a hedge cancelled before it went did not).
    assert calls < gets <= calls + hedges
    slow = sum(r.action == "drip" for r in fault_server.records)
    assert won >= slow // 2 >= 4  # the slow answers lost to their hedges (warm-up aside)
    # Behaviour, not speed: a p99 under 1 s means no slow answer reached the p99 caller.
    p99 = latencies[int(0.99 * calls)]
    assert p99 < 0.5, p99


async def test_without_hedging_the_slow_answers_set_the_p99(fault_server: FaultServer) -> None:
    """The same traffic without a HedgePolicy: the 1 s answers are the p99 (the control)."""
    fault_server.random("/", {Fault.ok(): 0.98, SLOW: 0.02}, seed=20)
    async with resilient_session() as session:
        latencies = await timed_gets(session, fault_server.url_for("/"), calls=800, workers=16)
    assert fault_server.count("/") == 800
    assert latencies[int(0.99 * 800)] >= 1.0


# What is hedged -----------------------------------------------------------------------------------


async def test_the_winners_body_is_what_the_caller_reads(fault_server: FaultServer) -> None:
    """The original is slow, the hedge fast: the caller reads the hedge's body, once."""
    assert await one_get(fault_server, [SLOW, Fault.ok(body=b"fast")]) == (b"fast", (1, 1))
    assert fault_server.count("/") == 2


async def test_max_hedges_sends_one_copy_per_delay(fault_server: FaultServer) -> None:
    """max_hedges=2: the original and the first copy are slow, the second copy answers; three
    requests reach the server, one per delay."""
    fault_server.script("/", [SLOW, SLOW, Fault.ok(body=b"fast")])
    policy = HedgePolicy(delay=0.05, max_extra=2.0, max_hedges=2)
    async with resilient_session(hedge=policy) as session:
        async with session.get(fault_server.url_for("/")) as resp:
            assert await resp.read() == b"fast"
        assert host_stats(session, fault_server) == (2, 1)
    assert fault_server.count("/") == 3


async def test_post_is_never_hedged(fault_server: FaultServer) -> None:
    """A POST whose answer comes after 0.2 s (ten hedge delays) goes once (counted on the
    server). A POST's body is not read inside the attempt, so the wait is for the headers."""
    fault_server.load = ServerLoad(service_time=0.2)
    async with resilient_session(hedge=QUICK) as session:
        for _ in range(3):
            async with session.post(fault_server.url_for("/"), data=b"x") as resp:
                assert await resp.read() == b"ok"
        assert host_stats(session, fault_server) == (0, 0)
    assert fault_server.count("/", method="POST") == 3


async def test_post_with_an_idempotency_key_is_hedged(fault_server: FaultServer) -> None:
    """A POST with an Idempotency-Key is hedged like a GET; both copies carry the key and body."""
    fault_server.script("/", [SLOW, Fault.ok(body=b"fast")])
    async with resilient_session(hedge=QUICK) as session:
        async with session.post(
            fault_server.url_for("/"), data=b"payload", headers={"Idempotency-Key": "k1"}
        ) as resp:
            assert await resp.read() == b"fast"
        assert host_stats(session, fault_server) == (1, 1)
    records = [r for r in fault_server.records if r.path == "/"]
    assert [r.method for r in records] == ["POST", "POST"]
    assert all(r.headers.get("Idempotency-Key") == "k1" for r in records)
    assert all(r.body == b"payload" for r in records)


async def test_a_failed_hedge_does_not_fail_the_call(fault_server: FaultServer) -> None:
    """The hedge is reset; the slow original still answers the caller."""
    assert await one_get(fault_server, [SLOW, Fault.rst()]) == (b"sl", (1, 0))
    assert fault_server.count("/") == 2


async def test_a_refused_hedge_loses_and_is_released(fault_server: FaultServer) -> None:
    """The hedge gets a 503 whose body drips: it loses (not retried), its response is
    released (its connection closed, not held), and the slow original answers."""
    busy = dataclasses.replace(Fault.drip(b"busy", chunk=1, interval=1.0), code=503)
    fault_server.script("/", [SLOW, busy])  # the 503's body would take 4 s
    async with resilient_session(hedge=QUICK) as session:
        async with session.get(fault_server.url_for("/")) as resp:
            assert await resp.read() == b"sl"
        assert host_stats(session, fault_server) == (1, 0)
        assert stats(session).total.pool.acquired == 0
    assert fault_server.count("/") == 2


async def test_a_failed_original_waits_for_its_hedge(fault_server: FaultServer) -> None:
    """The original fails without a retry (attempts=1) while the hedge runs: the hedge answers."""
    fault_server.script("/", [Fault.hang(0.3), Fault.drip(b"ok", chunk=2, interval=0.5)])
    async with resilient_session(hedge=QUICK, policy=RetryPolicy(attempts=1)) as session:
        async with session.get(fault_server.url_for("/")) as resp:
            assert await resp.read() == b"ok"
        assert host_stats(session, fault_server) == (1, 1)
    assert fault_server.count("/") == 2


async def test_the_deadline_covers_the_hedge_too(fault_server: FaultServer) -> None:
    """The policy's deadline passes while the original and its hedge both wait on 1 s answers:
    the call gives up at the deadline rather than waiting for the hedge's answer."""
    fault_server.set_default("/", SLOW)
    policy = RetryPolicy(deadline=0.3)
    async with resilient_session(hedge=QUICK, policy=policy) as session:
        with pytest.raises(RetriesExhaustedError, match="deadline"):
            await session.get(fault_server.url_for("/"))
        assert host_stats(session, fault_server) == (1, 0)
    assert fault_server.count("/") == 2


# Standing down ------------------------------------------------------------------------------------


async def test_no_hedge_while_the_budget_is_past_half_spent(fault_server: FaultServer) -> None:
    """A failed retry spent half of the host's two-retry budget: a slow GET is not hedged,
    though the budget would still take the hedge's charge."""
    fault_server.set_default("/fail", Fault.status(500))
    fault_server.set_default("/", SLOW)
    health = HealthPolicy(budget=BudgetPolicy(ratio=0.0, min_per_second=0.2, ttl=10.0))
    policy = RetryPolicy(attempts=2, backoff_base=0.0)
    async with resilient_session(hedge=QUICK, health=health, policy=policy) as session:
        with pytest.raises(RetriesExhaustedError):
            await session.get(fault_server.url_for("/fail"))
        async with session.get(fault_server.url_for("/")) as resp:
            assert await resp.read() == b"sl"
        assert host_stats(session, fault_server) == (0, 0)
    assert fault_server.count("/fail") == 2
    assert fault_server.count("/") == 1


async def test_no_hedge_while_the_breaker_is_not_closed(fault_server: FaultServer) -> None:
    """Two resets opened the host's breaker: the next call goes as its probe, slow to answer,
    and is not hedged (the host is half-open)."""
    fault_server.set_default("/", Fault.rst())
    breaker = BreakerPolicy(
        consecutive_failures=2, min_failure_span=0.0, break_duration=0.1, break_jitter=0.0
    )
    policy = RetryPolicy(attempts=2, backoff_base=0.0)
    health = HealthPolicy(breaker=breaker)
    async with resilient_session(hedge=QUICK, health=health, policy=policy) as session:
        with pytest.raises(aiohttp.ClientError):
            await session.get(fault_server.url_for("/"))
        fault_server.set_default("/", SLOW)
        async with session.get(fault_server.url_for("/")) as resp:
            assert await resp.read() == b"sl"
        assert host_stats(session, fault_server) == (0, 0)
    assert fault_server.count("/") == 3


async def test_a_hedge_waits_for_a_slot_and_never_exceeds_the_limit(
    fault_server: FaultServer,
) -> None:
    """limit_per_host=1: the hedge waits for the original's slot, which is freed only when the
    original has answered, so the hedge never reaches the server."""
    fault_server.set_default("/", SLOW)
    async with resilient_session(hedge=QUICK, limit_per_host=1) as session:
        async with session.get(fault_server.url_for("/")) as resp:
            assert await resp.read() == b"sl"
        assert host_stats(session, fault_server) == (1, 0)
    assert fault_server.count("/") == 1


async def test_hedges_are_bounded_by_max_extra(fault_server: FaultServer) -> None:
    """Every answer is slow: hedges stay within max_extra of the calls (warm-up aside)."""
    fault_server.set_default("/", Fault.drip(b"ok", chunk=2, interval=0.05))
    policy = HedgePolicy(delay=0.01, max_extra=0.1)
    async with resilient_session(hedge=policy) as session:
        await timed_gets(session, fault_server.url_for("/"), calls=60, workers=6)
        hedges, _ = host_stats(session, fault_server)
    assert 1 <= hedges <= 6
    assert fault_server.count("/") == 60 + hedges


# Cancellation -------------------------------------------------------------------------------------


async def test_a_cancelled_caller_cancels_both_and_leaks_nothing(fault_server: FaultServer) -> None:
    """Cancelled after its hedge went: both attempts end, their connections close, every slot
    and pooled connection is free (counted in the limiter, the connector and the server)."""
    fault_server.set_default("/", Fault.drip(b"sl", chunk=2, interval=5.0))
    async with resilient_session(hedge=QUICK, limit_per_host=4) as session:
        call = asyncio.ensure_future(session.get(fault_server.url_for("/")))
        for _ in range(200):
            if fault_server.count("/") == 2:
                break
            await asyncio.sleep(0.01)
        assert fault_server.count("/") == 2  # the original and its hedge are both out
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        middleware = session_middleware(session)
        assert middleware is not None
        assert middleware.limiter is not None
        assert middleware.limiter.in_flight(key_of(fault_server)) == 0
        pool = stats(session).total.pool
        assert (pool.acquired, pool.idle) == (0, 0)  # closed, not pooled mid-body
        for _ in range(200):
            if fault_server.connections_open == 0:
                break
            await asyncio.sleep(0.01)
        assert fault_server.connections_open == 0


# Seen ---------------------------------------------------------------------------------------------


async def test_hedges_are_seen_in_stats_prometheus_otel_and_logs(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One call whose hedge wins: counted in stats and Prometheus, a CLIENT span of its own
    marked as the hedge, a DEBUG record of the hedge and of its win."""
    prometheus_client = pytest.importorskip("prometheus_client")
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from aiohttp_resilient import PrometheusCollector, instrument_session

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    fault_server.script("/", [SLOW, Fault.ok(body=b"fast")])
    caplog.set_level(logging.DEBUG, logger="aiohttp_resilient")
    async with resilient_session(hedge=QUICK) as session:
        instrument_session(session, tracer_provider=tracer_provider)
        async with session.get(fault_server.url_for("/")) as resp:
            assert await resp.read() == b"fast"
        row = stats(session).total
        registry = prometheus_client.CollectorRegistry()
        registry.register(PrometheusCollector(session))
        text = prometheus_client.generate_latest(registry).decode()
    assert (row.hedges, row.hedges_won) == (1, 1)
    assert "aiohttp_resilient_hedges_total{" in text
    assert re.search(r"aiohttp_resilient_hedges_won_total\{[^}]*\} 1\.0", text)
    attempts = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]
    assert len(attempts) == fault_server.count("/") == 2
    assert sorted(bool(s.attributes.get("aiohttp_resilient.hedge")) for s in attempts) == [
        False,
        True,
    ]
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "hedge" in events
    assert "hedge_won" in events
