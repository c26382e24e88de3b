"""The shared store: leases on the in-memory store and on a real redis-server (the same tests),
the fleet-wide cap across real client processes counted on the HTTP server's side, recovery
from a SIGKILLed holder, and failing open when Redis stops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path

import prometheus_client
import pytest

from _helpers import closed_port, start_cli
from _redis import CountingServer, needs_redis, redis_server
from aiohttp_resilient import (
    AdaptiveRatePolicy,
    BreakerPolicy,
    HealthPolicy,
    HealthStore,
    HedgePolicy,
    HostHealth,
    HostLimiter,
    MemoryStore,
    PrometheusCollector,
    RedisStore,
    RetriesExhaustedError,
    RetryPolicy,
    resilient_session,
    session_health,
    stats,
)
from aiohttp_resilient._store._breaker import Outcome, Report
from aiohttp_resilient._store._fleet import FleetLimiter
from aiohttp_resilient.testing import Fault, FaultServer

pytestmark = pytest.mark.timeout(60)
CLIENT = Path(__file__).with_name("_fleet_client.py")


def two_limiters(store: HealthStore, cap: int) -> tuple[FleetLimiter, FleetLimiter]:
    """Two limiters on one store, as two processes would have (the store's close closes
    them)."""
    return FleetLimiter(cap, store, timeout=1.0), FleetLimiter(cap, store, timeout=1.0)


# -- the store's operations, the same on both -------------------------------------------------


async def test_leases_stop_at_the_limit_and_come_back_on_release(store: HealthStore) -> None:
    grant = await store.acquire("h", "p1", ["a", "b", "c"], 2)
    granted, wait, paused, waiting, delays, broken = grant
    assert broken is None  # no breaker asked for
    assert delays == ()  # no rate asked for
    assert not paused
    assert waiting == 1  # this holder was refused one
    assert granted == 2
    assert wait is not None
    assert 0 < wait <= 0.3
    assert await store.held("h") == 2
    assert (await store.acquire("h", "p1", ["d"], 2))[0] == 0
    await store.release("h", ["a"])
    assert (await store.acquire("h", "p1", ["d"], 2))[0] == 1
    assert await store.held("other") == 0  # hosts are separate


async def test_leases_expire_unless_renewed(store: HealthStore) -> None:
    await store.acquire("h", "p1", ["a", "b"], 2)
    for _ in range(4):  # renew "a" past its first expiry
        await asyncio.sleep(0.1)
        await store.renew("h", ["a"])
    assert await store.held("h") == 1  # "b" expired, "a" was renewed
    assert (await store.acquire("h", "p1", ["c"], 2))[0] == 1


async def test_fleet_limiters_on_one_store_share_the_cap(store: HealthStore) -> None:
    a, b = two_limiters(store, 3)
    key = ("http", "example.test", 80)
    for _ in range(3):
        await a.acquire(key)
    waiting = asyncio.ensure_future(b.acquire(key))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # b's local cap is free, the fleet's is not
    a.release(key)
    await asyncio.wait_for(waiting, 2)
    assert a.fleet_held(key) == 2
    assert b.fleet_held(key) == 1
    assert await store.held("http://example.test:80") == 3
    for _ in range(2):
        a.release(key)
    b.release(key)


async def test_a_slot_held_longer_than_the_ttl_keeps_its_lease(store: HealthStore) -> None:
    # A long download keeps its slot: the limiter renews the lease while it is held.
    holder, other = two_limiters(store, 1)
    key = ("http", "example.test", 80)
    await holder.acquire(key)
    await asyncio.sleep(1.0)  # over three TTLs
    assert await store.held("http://example.test:80") == 1
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(other.acquire(key), 0.3)
    holder.release(key)
    await asyncio.wait_for(other.acquire(key), 1)
    other.release(key)


async def test_a_pause_holds_every_limiter_until_it_ends(store: HealthStore) -> None:
    a, b = two_limiters(store, 4)
    key = ("http", "example.test", 80)
    a.refused(key, False, 0.5)  # a 503 with Retry-After
    await asyncio.sleep(0.05)  # the pause is written by a task
    started = time.monotonic()
    await asyncio.wait_for(b.acquire(key), 2)
    assert time.monotonic() - started >= 0.4
    b.release(key)


@needs_redis
async def test_a_retry_after_seen_by_one_session_holds_the_others(redis_port: int) -> None:
    # Two sessions with their own limiters (as two processes would be) on one Redis: the 429's
    # Retry-After: 2 that the first gets keeps the second's request off the host until it ends.
    url = f"redis://127.0.0.1:{redis_port}/0"
    stores = [RedisStore(url, timeout=0.5), RedisStore(url, timeout=0.5)]
    async with CountingServer(delay=0) as server:
        server.throttle_next, server.retry_after = 1, 2
        async with (
            resilient_session(limit_per_host=4, store=stores[0]) as first,
            resilient_session(limit_per_host=4, store=stores[1]) as second,
        ):
            throttled = asyncio.ensure_future(first.get(server.url))
            await wait_for_arrivals(server, 1)
            await asyncio.sleep(0.1)  # the pause is written
            async with second.get(server.url) as resp:
                assert resp.status == 200
            (await throttled).release()
    for store in stores:
        await store.close()
    first_at, *later = server.arrivals
    assert len(later) == 2  # the retry and the second session's request
    assert min(later) - first_at >= 1.9  # nobody sent before Retry-After ended


async def wait_for_arrivals(server: CountingServer, count: int) -> None:
    for _ in range(500):
        if len(server.arrivals) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no request arrived")


async def test_a_throttle_paces_every_limiter_on_the_store(store: HealthStore) -> None:
    # The adaptive rate runs in the store: sends are counted as slots are leased, a 429 cuts
    # the rate, and from then on the leases of every limiter come spaced on one schedule.
    policy = AdaptiveRatePolicy(burst=0.0)
    host = "http://example.test:80"
    for i in range(20):  # 20 sends in a burst: what the host "accepted"
        await store.acquire(host, "p1", [f"m{i}"], 100, policy)
    new_rate = await store.throttle(host, policy)
    assert new_rate is not None
    assert new_rate > 0.5
    assert await store.throttle(host, policy) is None  # within the cooldown
    first = await store.acquire(host, "p1", ["x1", "x2"], 100, policy)
    second = await store.acquire(host, "p2", ["y1"], 100, policy)
    spacing = 1 / new_rate
    assert first.delays[1] - first.delays[0] == pytest.approx(spacing, rel=0.1, abs=0.002)
    assert second.delays[0] >= first.delays[1] + spacing * 0.8  # another holder, same schedule
    assert (await store.acquire(host, "p1", ["z"], 100)).delays == ()  # no rate asked for


async def test_with_a_store_the_adaptive_rate_runs_in_the_store() -> None:
    # HostHealth hands its rate policy to the fleet limiter (one rate for the fleet) and paces
    # nothing of its own; without a store it keeps it.
    store = MemoryStore()
    health = HostHealth(limiter=HostLimiter(2), store=store)
    assert isinstance(health.limiter, FleetLimiter)
    assert health.limiter.rate_policy == AdaptiveRatePolicy()
    assert health.policy.adaptive_rate is None
    assert HostHealth(limiter=HostLimiter(2)).policy.adaptive_rate == AdaptiveRatePolicy()
    await store.close()


# -- input --------------------------------------------------------------------------------------


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ValueError, match="lease_ttl"):
        MemoryStore(lease_ttl=0)
    with pytest.raises(ValueError, match="url"):
        RedisStore("http://u:hunter2@x/")
    with pytest.raises(ValueError, match="prefix"):
        RedisStore("redis://127.0.0.1:1/0", prefix="")
    with pytest.raises(ValueError, match="timeout"):
        RedisStore("redis://127.0.0.1:1/0", timeout=0)
    with pytest.raises(ValueError, match="store"):
        HostHealth(HealthPolicy(budget=None), store=MemoryStore())  # no limiter nor budget
    with pytest.raises(ValueError, match="store"):
        HostHealth(limiter=HostLimiter(2), store="redis://x")  # type: ignore[arg-type]


async def test_bad_store_argument_of_the_session_hides_the_password() -> None:
    with pytest.raises(ValueError, match="store") as caught:
        resilient_session(store="redis:/u:hunter2@x")
    assert "hunter2" not in str(caught.value)


async def test_a_bad_keyword_of_the_session_makes_no_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The session's keywords and headers are checked before the store a URL names is made: a
    # typo does not make a Redis client for nothing (the stores made are counted).
    made: list[RedisStore] = []

    class Counted(RedisStore):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            made.append(self)

    monkeypatch.setattr("aiohttp_resilient._store._open.RedisStore", Counted)
    with pytest.raises(TypeError, match="bogus"):
        resilient_session(limit_per_host=2, store="redis://127.0.0.1:1/0", bogus=1)
    with pytest.raises(ValueError, match="headers"):
        resilient_session(limit_per_host=2, store="redis://127.0.0.1:1/0", headers=5)
    assert made == []
    async with resilient_session(limit_per_host=2, store="redis://127.0.0.1:1/0"):
        assert len(made) == 1  # the count works


@needs_redis
async def test_a_session_given_a_url_owns_its_store_and_closes_it(redis_port: int) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0"
    async with CountingServer(delay=0.3) as server:
        session = resilient_session(limit_per_host=2, store=url)
        limiter = session_limiter(session)
        host = f"http://127.0.0.1:{server.port}"
        checker = RedisStore(url, timeout=0.5)
        pending = asyncio.ensure_future(session.get(server.url))
        await wait_for_arrivals(server, 1)
        assert await checker.held(host) == 1
        pending.cancel()  # a lease still held when the session closes
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await session.close()
        assert await checker.held(host) == 0
        assert isinstance(limiter.store, RedisStore)
        pool = limiter.store._client.connection_pool
        assert pool._available_connections  # it was used...
        assert not any(c.is_connected for c in pool._available_connections)  # ...and closed
        await checker.close()


# -- failing open -------------------------------------------------------------------------------


async def test_unreachable_redis_fails_open_fast_logs_once_and_hides_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://user:hunter2@127.0.0.1:{closed_port()}/0"
    store = RedisStore(url)
    assert "hunter2" not in repr(store)
    caplog.set_level(logging.INFO, "aiohttp_resilient")
    async with (
        CountingServer(delay=0) as server,
        resilient_session(limit_per_host=2, store=store) as session,
    ):
        started = time.monotonic()
        for _ in range(5):
            async with session.get(server.url) as resp:
                assert resp.status == 200
        assert time.monotonic() - started < 1.0
        limiter = session_limiter(session)
        shown = stats(session).store
        registry = prometheus_client.CollectorRegistry()
        registry.register(PrometheusCollector(session))
        metrics = prometheus_client.generate_latest(registry).decode()
    assert shown is not None
    assert not shown.up
    assert shown.fallbacks == 1
    assert "hunter2" not in shown.store
    assert re.search(r'aiohttp_resilient_store_up\{store="[^"]+"\} 0\.0', metrics)
    assert "hunter2" not in metrics
    assert limiter.guard.fallbacks == 1
    assert limiter.guard.failures >= 1
    down = [r for r in caplog.records if getattr(r, "event", None) == "store_down"]
    assert len(down) == 1
    assert "hunter2" not in caplog.text
    await store.close()


def session_limiter(session: object) -> FleetLimiter:
    from aiohttp_resilient import session_health

    health = session_health(session)  # type: ignore[arg-type]
    assert health is not None
    assert isinstance(health.limiter, FleetLimiter)
    return health.limiter


@needs_redis
async def test_redis_stopped_three_seconds_every_request_succeeds_fast_then_rejoins() -> None:
    with redis_server() as (port, proc):
        store = RedisStore(f"redis://127.0.0.1:{port}/0", lease_ttl=2.0)
        slowest = 0.0
        failed = 0
        async with (
            CountingServer(delay=0.01) as server,
            resilient_session(limit_per_host=4, store=store) as session,
        ):
            limiter = session_limiter(session)
            key = ("http", "127.0.0.1", server.port)

            async def worker(until: float) -> None:
                nonlocal slowest, failed
                while time.monotonic() < until:
                    started = time.monotonic()
                    try:
                        async with session.get(server.url) as resp:
                            await resp.read()
                    except Exception:
                        failed += 1
                    slowest = max(slowest, time.monotonic() - started)

            end = time.monotonic() + 6
            workers = [asyncio.ensure_future(worker(end)) for _ in range(8)]
            await asyncio.sleep(1)
            assert limiter.guard.up
            os.kill(proc.pid, signal.SIGSTOP)
            await asyncio.sleep(3)
            assert not limiter.guard.up
            os.kill(proc.pid, signal.SIGCONT)
            await asyncio.gather(*workers)
            rejoined = limiter.guard.rejoins
            held_after = await store.held(f"http://127.0.0.1:{server.port}")
            del key
        await store.close()
    assert failed == 0
    assert slowest < 1.5
    assert limiter.guard.fallbacks >= 1
    assert rejoined >= 1
    assert held_after == 0  # every lease taken after the rejoin was given back
    assert server.served > 100


# -- the fleet: real client processes -----------------------------------------------------------


async def _run_fleet(
    url: str, store_url: str, procs: int, workers: int, requests: int
) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(CLIENT.parent.parent)}
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT),
            url,
            store_url,
            str(workers),
            str(requests),
            "8",
            "10",  # the default lease TTL, and a store timeout no loop lag of a loaded
            "2.0",  # machine reaches: these processes must never go on alone
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(procs)
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in started)), 50)
    return [out.decode().split("\n")[1] for out, _ in outputs]


@needs_redis
@pytest.mark.parametrize("shared", [True, False], ids=["store", "no-store"])
async def test_four_processes_hold_eight_in_flight_fleet_wide(
    redis_port: int, shared: bool
) -> None:
    store_url = f"redis://127.0.0.1:{redis_port}/0" if shared else "-"
    async with CountingServer(delay=0.02) as server:
        results = await _run_fleet(server.url, store_url, procs=4, workers=32, requests=200)
    oks = [int(line.split()[0]) for line in results]
    fails = [int(line.split()[1]) for line in results]
    assert oks == [200] * 4
    assert fails == [0] * 4
    if shared:
        assert [line.split()[3] for line in results] == ["0"] * 4  # none went on alone
        assert server.peak <= 8
        assert server.peak >= 6  # the cap is used, not starved
    else:
        assert server.peak > 8  # each process alone: up to 4 x 8


@needs_redis
async def test_a_killed_holders_slots_come_back_within_the_lease_ttl(redis_port: int) -> None:
    store_url = f"redis://127.0.0.1:{redis_port}/0"
    env = {**os.environ, "PYTHONPATH": str(CLIENT.parent.parent)}
    async with CountingServer(delay=30) as server:  # every request hangs: slots stay held
        holder = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT),
            server.url,
            store_url,
            "8",
            "8",
            "8",
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert holder.stdout is not None
        await holder.stdout.readline()  # ready
        store = RedisStore(store_url, lease_ttl=2.0, timeout=0.5)
        host = f"http://127.0.0.1:{server.port}"
        for _ in range(200):
            if await store.held(host) == 8:
                break
            await asyncio.sleep(0.02)
        assert await store.held(host) == 8
        holder.kill()  # SIGKILL: nothing given back
        await holder.wait()
        killed_at = time.monotonic()
        done_early = await store.held(host) < 8  # the dead holder's leases outlive it a while
        limiter = FleetLimiter(8, store, timeout=0.5)
        await asyncio.wait_for(limiter.acquire(("http", "127.0.0.1", server.port)), 5)
        waited = time.monotonic() - killed_at
        limiter.release(("http", "127.0.0.1", server.port))
        await limiter.close()
        await store.close()
    assert 0.5 <= waited <= 2.0 + 0.5  # by the lease TTL (2 s), not at once
    assert not done_early


# -- fetch --store --------------------------------------------------------------------------------


@needs_redis
async def test_two_fetch_runs_share_per_host_through_the_store(
    redis_port: int, tmp_path: Path
) -> None:
    # Two fetch processes, --per-host 2 each, one store: the host never sees more than 2.
    store_url = f"redis://127.0.0.1:{redis_port}/0"
    async with CountingServer(delay=0.05) as server:
        runs = [
            await start_cli(
                "fetch",
                "--out",
                str(tmp_path / f"out{n}"),
                "-c",
                "8",
                "--per-host",
                "2",
                "--store",
                store_url,
                *[f"{server.url}{n}/{i}" for i in range(30)],
            )
            for n in range(2)
        ]
        for run in runs:
            await asyncio.wait_for(run.communicate(), 40)
            assert run.returncode == 0
    assert server.served == 60
    assert server.peak <= 2


async def test_fetch_refuses_a_store_that_is_not_redis_without_echoing_its_password() -> None:
    proc = await start_cli("fetch", "--store", "http://u:hunter2@127.0.0.1:1/", "http://x/")
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"--store" in stderr
    assert b"hunter2" not in stderr


# -- leases nobody holds, after an outage (review of issue 19) ----------------------------------


@needs_redis
@pytest.mark.parametrize("when", ["acquire", "release"])
async def test_leases_lost_in_an_outage_do_not_hold_the_fleet_off_after_it(
    when: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An acquire that timed out here still runs in Redis when it wakes, and a release sent
    while it slept is lost: either way Redis holds leases no request holds. They are given back
    once Redis answers, so another process gets every slot at once, not after the 10 s TTL."""
    key = ("http", "example.test", 80)
    host = "http://example.test:80"
    with redis_server() as (port, proc):
        store = RedisStore(f"redis://127.0.0.1:{port}/0")  # the default 10 s lease TTL
        a, b = FleetLimiter(4, store, timeout=0.1), FleetLimiter(4, store, timeout=0.1)
        try:
            await a.acquire(key)
            a.release(key)
            await asyncio.sleep(0.05)
            if when == "release":
                await asyncio.gather(*(a.acquire(key) for _ in range(4)))
                assert await store.held(host) == 4
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                if when == "acquire":  # they time out here, and go under the local cap
                    await asyncio.gather(*(a.acquire(key) for _ in range(4)))
                    assert not a.guard.up
                a.release(key)
                a.release(key)
                await asyncio.sleep(0.3)  # this release times out: the store is down
                a.release(key)
                a.release(key)  # these are not sent (the guard waits for its retry)
                await asyncio.sleep(0.1)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            await asyncio.sleep(0.8)  # the guard's retry comes due, the orphans go back
            assert await store.held(host) == 0
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*(b.acquire(key) for _ in range(4))), 5)
            assert time.monotonic() - started < 1.0
        finally:
            await store.close()


async def test_a_fleet_pause_lasts_no_longer_than_the_caller_would_wait() -> None:
    """A 503 with "Retry-After: 30" to a call whose policy waits at most 1 s: the call gives up
    at once, and the fleet's pause of the host is 1 s, not 30 (other calls to it go on)."""
    async with FaultServer() as server:
        server.script("/maint", [Fault.status(503, retry_after=30)])
        async with resilient_session(
            limit_per_host=2,
            policy=RetryPolicy(attempts=2, retry_after_max=1),
            store=MemoryStore(),
        ) as session:
            with pytest.raises(RetriesExhaustedError):
                async with session.get(server.url_for("/maint")):
                    pass
            started = time.monotonic()

            async def other() -> int:
                async with session.get(server.url_for("/other")) as resp:
                    return resp.status

            assert await asyncio.wait_for(other(), 5) == 200
            assert time.monotonic() - started < 1.5
    assert server.count("/maint") == 1


async def test_a_host_the_fleet_paces_is_strained_for_hedges() -> None:
    """With a store the adaptive rate runs in the store: a throttled host still says "rate" to
    a hedge, which then stands down (as it does without a store)."""
    async with FaultServer() as server:
        server.script("/r", [Fault.status(429, retry_after=1)] * 3 + [Fault.ok()])
        async with resilient_session(
            limit_per_host=4, hedge=HedgePolicy(delay=0.05), store=MemoryStore()
        ) as session:
            health = session_health(session)
            key = ("http", "127.0.0.1", server.url.port)
            assert health.strain(key, time.monotonic()) is None
            async with session.get(server.url_for("/r")) as resp:
                await resp.read()
            assert health.strain(key, time.monotonic()) == "rate"
    assert server.count("/r") == 4


@needs_redis
async def test_sessions_sharing_a_store_hold_a_rate_limit_with_few_refusals(
    redis_port: int,
) -> None:
    # 4 sessions (own limiters, as 4 processes) x 8 tasks on one Redis against a host admitting
    # 40 requests/s (429 + Retry-After past it): once the first 429 taught the fleet its rate,
    # the shared schedule spaces every send, the refusals are a probe's few, and the host is
    # kept busy. A lease handed from one task to the next in a process past that schedule (a
    # refused ask un-pacing the host) sent bursts: 6-10% refused (benchmarks/fleet.py).
    url = f"redis://127.0.0.1:{redis_port}/0"
    prefix = f"t-{secrets.token_hex(4)}:"
    stores = [RedisStore(url, prefix=prefix) for _ in range(4)]
    counts: list[tuple[float, int, int]] = []
    async with FaultServer(record=False, rate_limit=40, compute_retry_after=True) as server:
        end = time.monotonic() + 5.0

        async def session_run(store: RedisStore) -> None:
            async with resilient_session(limit_per_host=8, store=store) as session:

                async def worker() -> None:
                    while time.monotonic() < end:
                        async with session.get(server.url) as resp:
                            await resp.read()

                await asyncio.gather(*(worker() for _ in range(8)))

        async def watch() -> None:
            while True:
                answers = sum(server.action_counts.values())
                counts.append((time.monotonic(), answers, server.shed_counts.get("rate", 0)))
                await asyncio.sleep(0.1)

        watcher = asyncio.ensure_future(watch())
        await asyncio.gather(*(session_run(store) for store in stores))
        watcher.cancel()
    for store in stores:
        await store.close()
    first = next(t for t, answers, _ in counts if answers)
    window = [c for c in counts if first + 1.0 <= c[0] <= end]
    (t0, answers0, refused0), (t1, answers1, refused1) = window[0], window[-1]
    answers, refused = answers1 - answers0, refused1 - refused0
    seen = (answers, refused, round(t1 - t0, 2))
    assert answers >= 40 * (t1 - t0) * 0.5, seen  # the host is kept busy, loosely
    # Measured: 3-5 of 150-157 refused (2-3%); with a lease handed past the schedule, 9-14 of
    # 145-153 (6-9%).
    assert refused <= answers * 0.05, seen


async def test_the_memory_store_forgets_idle_hosts() -> None:
    # As a host's keys expire in Redis: a host throttled, paused or refused a slot, then left
    # idle, leaves nothing in the memory store after its rate's idle time (600 s).
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    policy = AdaptiveRatePolicy()
    await store.acquire("a", "p1", ["a1"], 4, policy)
    await store.throttle("a", policy)
    await store.pause("b", 5)
    await store.acquire("c", "p1", ["c1", "c2"], 1)  # one refused: "c" has a waiting holder
    await store.release("a", ["a1"])
    await store.budget_sync("e", 1.0, 3, 1, ())  # a fleet budget's counts
    opened = Report("", Outcome.OPENED, 0.5, None, "5 failures")
    await store.breaker_report("f", opened, BreakerPolicy())  # a fleet breaker's break
    now[0] += 10
    await store.acquire("d", "p1", ["d1"], 4, policy)
    assert {"a", "c"} <= set(store._rates) | set(store._waiting) | set(store._leases)
    assert "e" in store._budgets
    assert "f" in store._breakers._breakers
    now[0] += 700
    await store.acquire("z", "p1", ["z1"], 4, policy)
    per_host = (store._leases, store._paused, store._waiting, store._rates, store._rate_used)
    assert [sorted(found) for found in per_host] == [["z"], [], ["z"], ["z"], ["z"]]
    assert not store._budgets
    assert not store._breakers._breakers
    await store.close()


async def test_a_limiter_forgets_a_paced_host_once_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    # A host the fleet paced stays marked after its last request here only for PACED_IDLE:
    # a crawler's many hosts throttled once do not pile up in the limiter.
    monkeypatch.setattr("aiohttp_resilient._store._fleet.PACED_IDLE", 0.05)
    store = MemoryStore()
    limiter = FleetLimiter(2, store, timeout=1.0)
    limiter.rate_policy = AdaptiveRatePolicy()
    throttled, other = ("http", "a.test", 80), ("http", "b.test", 80)
    await limiter.acquire(throttled)
    limiter.refused(throttled, True, None)  # a 429: the fleet's rate is cut, the host paced
    limiter.release(throttled)
    assert limiter.paced(throttled)
    await asyncio.sleep(0.1)
    await limiter.acquire(other)  # another host going idle sweeps the idle ones
    limiter.release(other)
    assert not limiter.paced(throttled)
    assert limiter._paced_idle == {}
    await store.close()
