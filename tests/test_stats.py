"""stats(): counts per host checked against what the FaultServer saw, latency, the table, logs."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from _helpers import has_ipv6_loopback
from aiohttp_resilient import (
    LATENCY_BOUNDS,
    BodyNotReplayableError,
    BreakerPolicy,
    CircuitOpenError,
    CircuitState,
    HealthPolicy,
    Latency,
    RetriesExhaustedError,
    RetryPolicy,
    StatsRecorder,
    resilient_session,
    retry_on_disconnect,
    stats,
)
from aiohttp_resilient._observe._histogram import Histogram
from aiohttp_resilient._observe._snapshot import take_snapshot
from aiohttp_resilient.testing import Fault, FaultServer

FAST = RetryPolicy(attempts=4, backoff_base=0.001, backoff_max=0.002, jitter=None)


def host_of(server: FaultServer) -> str:
    return f"http://127.0.0.1:{server.url.port}"


async def test_counts_match_what_the_server_saw(fault_server: FaultServer) -> None:
    """Attempts, retries by cause, successes and give-ups equal the server's own counts."""
    fault_server.script("/a", [Fault.fin(), Fault.rst(), Fault.status(503), Fault.ok()])
    fault_server.set_default("/dead", Fault.status(503))
    async with resilient_session(policy=FAST) as session:
        async with session.get(fault_server.url_for("/a")) as resp:
            assert resp.status == 200
        with pytest.raises(RetriesExhaustedError):
            await session.get(fault_server.url_for("/dead"))
        snapshot = stats(session)
    assert snapshot is not None
    row = snapshot.hosts[host_of(fault_server)]
    assert row.requests == 2
    assert row.successes == 1
    assert row.answered == {"2xx": 1}  # the 503s given up on are a give-up, not an answer
    assert row.responses == {"2xx": 1, "5xx": 1 + 4}
    assert row.give_ups == {"attempts": 1}
    assert row.attempts == fault_server.count() == 8
    assert fault_server.count("/dead") == 4
    assert row.retries == {"disconnect": 1, "reset": 1, "status_503": 4}
    assert row.retries_total == row.attempts - row.requests
    assert row.attempt_latency.count == row.attempts
    assert row.call_latency.count == row.requests
    assert snapshot.total.attempts == 8
    assert row.circuit_state is CircuitState.CLOSED
    assert row.in_flight == 0


async def test_answers_are_counted_by_status_class_as_the_server_answered(
    fault_server: FaultServer,
) -> None:
    """120 x 200 and 30 x 404 are 120 successes and 30 4xx answers, not 150 successes; a POST
    answered 503 (never retried on a status) is a 5xx answer; responses agree with the
    server's count."""
    fault_server.set_default("/missing", Fault.status(404))
    fault_server.set_default("/busy", Fault.status(503))
    async with resilient_session(policy=FAST) as session:
        for path, n in (("/ok", 120), ("/missing", 30), ("/busy", 1)):
            for _ in range(n):
                method = "POST" if path == "/busy" else "GET"
                async with session.request(method, fault_server.url_for(path)) as resp:
                    await resp.read()
        snapshot = stats(session)
    assert snapshot is not None
    row = snapshot.hosts[host_of(fault_server)]
    assert [fault_server.count(p) for p in ("/ok", "/missing", "/busy")] == [120, 30, 1]
    assert row.successes == 120
    assert row.answered == {"2xx": 120, "4xx": 30, "5xx": 1}
    assert (row.client_errors, row.server_errors) == (30, 1)
    assert row.responses == row.answered
    assert row.requests == row.successes + row.client_errors + row.server_errors
    assert snapshot.total.answered == row.answered
    assert snapshot.total.responses == row.responses


async def test_the_table_counts_4xx_and_5xx_answers_apart_from_ok(
    fault_server: FaultServer,
) -> None:
    """A run that got 404s and a 503 does not print them as ok: the 4xx and 5xx columns hold
    them, and a responses line gives every attempt's class."""
    fault_server.set_default("/missing", Fault.status(404))
    fault_server.script("/busy", [Fault.status(503), Fault.status(503)])
    async with resilient_session(policy=FAST) as session:
        for path in ("/ok", "/ok", "/ok", "/missing", "/missing"):
            async with session.get(fault_server.url_for(path)) as resp:
                await resp.read()
        async with session.post(fault_server.url_for("/busy"), data=b"x") as resp:
            assert resp.status == 503
        text = str(stats(session))
    lines = text.splitlines()
    header = lines[0].split()
    assert header[:5] == ["host", "calls", "ok", "4xx", "5xx"]
    row = dict(zip(header[:8], lines[1].split()[:8], strict=True))
    assert (row["calls"], row["ok"], row["4xx"], row["5xx"]) == ("6", "3", "2", "1")
    assert f"{host_of(fault_server)} responses to attempts: 2xx 3, 4xx 2, 5xx 1" in text


def test_a_status_outside_the_classes_is_counted_and_not_a_success() -> None:
    """A 1xx is a success (a 101 upgrade), a 999 is not; a decorated function's return is."""
    recorder = StatsRecorder()
    key = ("http", "127.0.0.1", 8080)
    for status in (101, 204, 302, 404, 503, 999):
        recorder.served(key, 0.01, 0.01, None, status)
    recorder.served(key, 0.01, 0.01, None)
    counts = take_snapshot(recorder, None).total
    assert counts.answered == {"1xx": 1, "2xx": 1, "3xx": 1, "4xx": 1, "5xx": 1, "9xx": 1}
    assert counts.successes == 4
    assert counts.requests == 7


async def test_a_post_that_may_have_arrived_is_counted_as_not_retried(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An error judged unsafe to repeat ends the call once, counted apart from give-ups, and
    its log record says so in fields."""
    fault_server.script("/pay", [Fault.fin()])
    caplog.set_level(logging.INFO, logger="aiohttp_resilient")
    async with resilient_session(policy=FAST) as session:
        with pytest.raises(aiohttp.ClientError):
            await session.post(fault_server.url_for("/pay"), data=b"x")
        row = stats(session).hosts[host_of(fault_server)]  # type: ignore[union-attr]
    assert fault_server.count("/pay") == 1
    assert (row.requests, row.not_retried, row.attempts, row.give_ups_total) == (1, 1, 1, 0)
    (record,) = [r for r in caplog.records if r.name == "aiohttp_resilient"]
    assert (record.event, record.method, record.attempt) == ("not_retried", "POST", 1)  # type: ignore[attr-defined]
    assert record.cause.startswith("ServerDisconnectedError")  # type: ignore[attr-defined]


async def test_the_breaker_opening_and_circuit_give_ups_are_counted(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A host that keeps failing trips its breaker once; calls refused by it are give-ups; the
    breaker's log record carries the host and the new state."""
    fault_server.set_default("/x", Fault.status(500))
    caplog.set_level(logging.INFO, logger="aiohttp_resilient")  # openings are told at INFO
    breaker = BreakerPolicy(consecutive_failures=3, min_failure_span=0.0, patience=0.0)
    async with resilient_session(
        policy=FAST.replace(attempts=1, raise_on_status=False),
        health=HealthPolicy(breaker=breaker),
    ) as session:

        async def refused() -> bool:
            try:
                async with session.get(fault_server.url_for("/x")) as resp:
                    assert resp.status == 500
            except CircuitOpenError:
                return True
            return False

        refusals = [await refused() for _ in range(8)]
        row = stats(session).hosts[host_of(fault_server)]  # type: ignore[union-attr]
    sent = fault_server.count("/x")
    assert 0 < sent < 8
    assert row.circuit_openings == 1
    assert row.circuit_state is CircuitState.OPEN
    # Every call that sent its one attempt gave up on attempts (the one that opened the breaker
    # too: attempts=1 leaves nothing to wait for); the others were refused by the breaker.
    assert row.give_ups == {"attempts": sent, "circuit_open": sum(refusals)}
    assert row.attempts == sent
    assert row.requests == 8
    circuit = [r for r in caplog.records if getattr(r, "event", None) == "circuit"]
    assert [(r.host, r.state) for r in circuit] == [(host_of(fault_server), "open")]  # type: ignore[attr-defined]


async def test_pool_use_is_read_from_the_connector(fault_server: FaultServer) -> None:
    """A kept-alive connection shows as open and idle; a streamed one as acquired."""
    fault_server.set_default("/drip", Fault.drip(body=b"x" * 20, chunk=10, interval=0.05))
    async with resilient_session(policy=RetryPolicy(buffer_body=False)) as session:
        async with session.get(fault_server.url_for("/drip")) as resp:
            during = stats(session).hosts[host_of(fault_server)]  # type: ignore[union-attr]
            await resp.read()
        after = stats(session).hosts[host_of(fault_server)]  # type: ignore[union-attr]
    assert (during.in_flight, during.pool.acquired) == (1, 1)
    assert after.pool.idle == 1
    assert after.pool.open == 1
    assert after.in_flight == 0


async def test_hosts_past_the_cap_are_counted_as_other() -> None:
    """A recorder capped at one host counts the second host under "other"."""
    recorder = StatsRecorder(max_hosts=1)
    async with FaultServer() as one, FaultServer() as two:
        async with resilient_session(stats=False) as plain:
            assert stats(plain) is None
        from aiohttp_resilient import RetryMiddleware

        retry = RetryMiddleware(FAST, stats=recorder)
        async with aiohttp.ClientSession(middlewares=[retry]) as session:
            for server in (one, two, two):
                async with session.get(server.url_for("/")) as resp:
                    await resp.read()
        snapshot = stats(retry)
    assert snapshot is not None
    assert snapshot.hosts[host_of(one)].requests == 1
    assert snapshot.hosts["other"].requests == 2
    assert snapshot.total.requests == 3


async def test_the_decorator_keeps_stats() -> None:
    """stats(decorated) counts its calls, attempts and retries."""
    calls = 0

    @retry_on_disconnect(attempts=3, backoff_base=0.001)
    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise aiohttp.ServerDisconnectedError()
        return calls

    assert await flaky() == 3
    snapshot = stats(flaky)
    assert snapshot is not None
    assert snapshot.total.attempts == calls == 3
    assert snapshot.total.retries == {"disconnect": 2}
    assert snapshot.total.successes == 1


async def test_summary_says_which_host_failed_how(fault_server: FaultServer) -> None:
    """The table names the host, its counts and its retries by cause."""
    fault_server.script("/", [Fault.status(503), Fault.ok()])
    async with resilient_session(policy=FAST) as session:
        async with session.get(fault_server.url_for("/")) as resp:
            await resp.read()
        text = str(stats(session))
    assert host_of(fault_server) in text
    assert f"{host_of(fault_server)} retries: status_503 1" in text
    assert text.splitlines()[0].split()[:3] == ["host", "calls", "ok"]


async def test_every_log_record_carries_its_fields(
    fault_server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry and give-up records carry event, method, redacted URL, host, attempt, cause."""
    fault_server.set_default("/s", Fault.status(503))
    url = fault_server.url_for("/s").with_query(token="hunter2")
    caplog.set_level(logging.INFO, logger="aiohttp_resilient")
    async with resilient_session(policy=FAST.replace(attempts=2)) as session:
        with pytest.raises(RetriesExhaustedError):
            await session.get(url)
    records = [r for r in caplog.records if r.name == "aiohttp_resilient"]
    assert [r.event for r in records] == ["retry", "give_up"]  # type: ignore[attr-defined]
    retry, give_up = records
    assert retry.method == "GET"  # type: ignore[attr-defined]
    assert retry.host == host_of(fault_server)  # type: ignore[attr-defined]
    assert retry.attempt == 1  # type: ignore[attr-defined]
    assert retry.cause == "HTTP 503"  # type: ignore[attr-defined]
    assert retry.reason == "backoff"  # type: ignore[attr-defined]
    assert retry.delay == pytest.approx(0.001)  # type: ignore[attr-defined]
    assert give_up.kind == "attempts"  # type: ignore[attr-defined]
    assert give_up.attempt == 2  # type: ignore[attr-defined]
    for record in records:
        assert "hunter2" not in str(vars(record))
        assert "token=REDACTED" in record.url  # type: ignore[attr-defined]


def bucket_of(seconds: float) -> int:
    histogram = Histogram()
    histogram.observe(seconds)
    return histogram.counts.index(1)


def test_observations_land_in_the_bucket_that_holds_them() -> None:
    """Every value lands in the bucket whose bounds hold it, bounds in their own bucket."""
    rng = random.Random(1)
    for _ in range(20_000):
        value = 10 ** rng.uniform(-5, 3.5)
        i = bucket_of(value)
        assert i == 0 or LATENCY_BOUNDS[i - 1] < value
        assert i == len(LATENCY_BOUNDS) or value <= LATENCY_BOUNDS[i]
    assert [bucket_of(b) for b in LATENCY_BOUNDS] == list(range(len(LATENCY_BOUNDS)))


def test_quantiles_come_within_a_bucket() -> None:
    """p50/p90/p99 of 1..1000 ms are within a bucket's width (26%) of the true values."""
    histogram = Histogram()
    for ms in range(1, 1001):
        histogram.observe(ms / 1000)
    latency = histogram.freeze()
    assert latency.count == 1000
    assert latency.sum == pytest.approx(500.5)
    for q, true in ((0.5, 0.5), (0.9, 0.9), (0.99, 0.99)):
        assert latency.quantile(q) == pytest.approx(true, rel=0.26)
    assert Latency().p50 is None
    with pytest.raises(ValueError, match="q must be"):
        latency.quantile(1.5)


def test_recorder_rejects_a_bad_cap() -> None:
    """max_hosts is named when it is not a positive int."""
    with pytest.raises(ValueError, match="max_hosts"):
        StatsRecorder(max_hosts=0)


async def test_a_spent_stream_body_is_a_give_up(fault_server: FaultServer) -> None:
    """A retry that cannot re-send its streamed body gives up, counted under its reason."""
    fault_server.script("/up", [Fault.status(503)])

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with resilient_session(policy=FAST) as session:
        with pytest.raises(BodyNotReplayableError):
            await session.put(fault_server.url_for("/up"), data=body())
        row = stats(session).hosts[host_of(fault_server)]  # type: ignore[union-attr]
    assert fault_server.count("/up") == 1
    assert row.give_ups == {"body_not_replayable": 1}
    assert (row.requests, row.attempts) == (1, 1)


async def test_the_decorator_counts_an_error_it_does_not_retry() -> None:
    """An error outside the disconnect family ends the call at once, counted as not retried."""

    @retry_on_disconnect(attempts=3)
    async def broken() -> None:
        raise ValueError("a bug, not the network")

    with pytest.raises(ValueError, match="a bug"):
        await broken()
    snapshot = stats(broken)
    assert snapshot is not None
    assert (snapshot.total.requests, snapshot.total.not_retried) == (1, 1)
    assert snapshot.total.attempts == 1


def test_successes_never_go_backwards_while_calls_end_during_a_read() -> None:
    """A give-up that ends while a scraping thread reads the counts (between the give-ups and
    the calls) must not be read as a success that the next read takes back."""
    recorder = StatsRecorder()
    key = ("http", "127.0.0.1", 8080)
    recorder.served(key, 0.01, 0.01, None)
    counters = recorder._hosts[key]

    class GiveUpDuringRead(Histogram):
        """The calls' histogram, with a call given up on just as it is read, once."""

        __slots__ = ("fired",)

        def freeze(self) -> Latency:
            if not getattr(self, "fired", False):
                self.fired = True
                recorder.gave_up(key, "attempts", [], 0.02)
            return super().freeze()

    calls = GiveUpDuringRead()
    calls.counts[:] = counters.calls.counts
    calls.total = counters.calls.total
    counters.calls = calls
    first = take_snapshot(recorder, None).total
    second = take_snapshot(recorder, None).total
    assert (first.successes, second.successes) == (1, 1)
    assert (first.requests, second.requests) == (2, 2)
    assert second.give_ups == {"attempts": 1}


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_an_ipv6_host_is_named_with_brackets() -> None:
    """A host on ::1 is named as in its URL, http://[::1]:PORT, not the ambiguous
    http://::1:PORT."""
    async with FaultServer(host="::1") as server, resilient_session() as session:
        async with session.get(server.url_for("/")) as resp:
            await resp.read()
        snapshot = stats(session)
    assert snapshot is not None
    assert list(snapshot.hosts) == [f"http://[::1]:{server.url.port}"]
