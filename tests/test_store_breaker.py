"""The circuit breaker fleet-wide (issue 19): one breaker state per host in the shared store,
the same on the in-memory store and a real redis-server; sessions and real client processes
sharing a store against a dead host that counts its connections: one probe per break for the
whole fleet, and the probe's success closes the breaker for all."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from _helpers import raw_http_server
from _redis import needs_redis, redis_server
from aiohttp_resilient import (
    BreakerPolicy,
    CircuitOpenError,
    HealthPolicy,
    HealthStore,
    MemoryStore,
    RedisStore,
    RetryPolicy,
    resilient_session,
)
from aiohttp_resilient._store._breaker import Outcome, Report, Verdict

pytestmark = pytest.mark.timeout(60)
CLIENT = Path(__file__).with_name("_breaker_client.py")
HOST = "http://example.test:80"
#: A break of 0.3 s that does not grow, and calls that never wait for the probe.
BREAKER = BreakerPolicy(break_duration=0.3, break_multiplier=1.0, break_jitter=0.1, patience=0)


# -- the store's breaker, the same on both ------------------------------------------------------


async def test_the_fleet_breaker_opens_probes_once_and_closes(store: HealthStore) -> None:
    policy = BreakerPolicy(break_duration=0.2, break_multiplier=2.0, break_jitter=0, patience=None)
    assert (await store.acquire(HOST, "p1", ["a"], 8, None, True)).granted == 1
    await store.release(HOST, ["a"])
    await store.breaker_report(HOST, Report("", Outcome.OPENED, 0.5, None, "5 failures"), policy)
    refused = await store.acquire(HOST, "p1", ["b"], 8, None, True)
    assert refused.granted == 0
    assert refused.broken is not None
    assert refused.broken.reason == "5 failures"
    assert 0.1 < refused.broken.wait <= 0.2
    assert (await store.acquire(HOST, "p1", ["c"], 8)).granted == 1  # not asked of breakers
    await store.release(HOST, ["c"])
    assert (await store.breaker_probe(HOST, "m0", 8, 0.2)).verdict is Verdict.OPEN  # too early
    await asyncio.sleep(0.25)
    assert (await store.breaker_probe(HOST, "m1", 8, 0.2)).verdict is Verdict.PROBE
    assert await store.held(HOST) == 1  # the probe holds a slot
    out = await store.breaker_probe(HOST, "m2", 8, 0.2)
    assert out.verdict is Verdict.OPEN  # one probe in flight across the fleet
    assert 0 < out.wait <= 0.2
    assert out.down_for >= 0.25
    # Only the probe's own word moves the breaker: another's failure report does nothing.
    await store.breaker_report(HOST, Report("m2", Outcome.PROBE_FAILED, 0.5, None, "x"), policy)
    assert (await store.breaker_probe(HOST, "m3", 8, 0.2)).verdict is Verdict.OPEN
    await store.release(HOST, ["m1"])
    await store.breaker_report(HOST, Report("m1", Outcome.PROBE_FAILED, 0.5, None, "probe"), policy)
    again = (await store.acquire(HOST, "p1", ["d"], 8, None, True)).broken
    assert again is not None
    assert 0.3 < again.wait <= 0.4  # the second break is longer (multiplier 2)
    assert again.reason == "probe"
    await asyncio.sleep(0.45)
    assert (await store.breaker_probe(HOST, "m4", 8, 0.2)).verdict is Verdict.PROBE
    await store.breaker_report(HOST, Report("m4", Outcome.PROBE_ABANDONED, 0.5, None, ""), policy)
    await store.release(HOST, ["m4"])
    assert (await store.breaker_probe(HOST, "m5", 8, 0.2)).verdict is Verdict.PROBE  # at once
    await store.release(HOST, ["m5"])
    await store.breaker_report(HOST, Report("m5", Outcome.PROBE_SUCCEEDED, 0.5, None, ""), policy)
    assert (await store.acquire(HOST, "p1", ["e"], 8, None, True)).granted == 1
    assert (await store.breaker_probe(HOST, "m6", 8, 0.2)).verdict is Verdict.CLOSED


async def open_and_probe(store: HealthStore, member: str) -> None:
    """The fleet's breaker opens for a break of 0.1 s; once it is over, ``member`` probes."""
    policy = BreakerPolicy(break_duration=0.1, break_jitter=0)
    await store.breaker_report(HOST, Report("", Outcome.OPENED, 0.0, None, "down"), policy)
    await asyncio.sleep(0.15)
    assert (await store.breaker_probe(HOST, member, 8, 0.1)).verdict is Verdict.PROBE


async def test_a_dead_probers_lease_runs_out_and_another_probes(store: HealthStore) -> None:
    await open_and_probe(store, "m1")
    assert (await store.breaker_probe(HOST, "m2", 8, 0.1)).verdict is Verdict.OPEN
    await asyncio.sleep(0.35)  # the lease TTL (0.3 s): m1's process died with its probe
    assert (await store.breaker_probe(HOST, "m2", 8, 0.1)).verdict is Verdict.PROBE


async def test_a_long_probe_keeps_its_lease_while_its_slot_is_renewed(store: HealthStore) -> None:
    await open_and_probe(store, "m1")
    for _ in range(4):  # past the lease TTL (0.3 s), its slot renewed as a FleetLimiter does
        await asyncio.sleep(0.1)
        await store.renew(HOST, ["m1"])
    assert (await store.breaker_probe(HOST, "m2", 8, 0.1)).verdict is Verdict.OPEN


async def test_the_probe_waits_for_a_free_slot(store: HealthStore) -> None:
    policy = BreakerPolicy(break_duration=0.1, break_jitter=0)
    await store.acquire(HOST, "p1", ["a", "b"], 2)  # hung calls from before the break
    await store.breaker_report(HOST, Report("", Outcome.OPENED, 0.0, None, "down"), policy)
    await asyncio.sleep(0.15)
    out = await store.breaker_probe(HOST, "m1", 2, 0.1)
    assert out.verdict is Verdict.OPEN
    assert 0 < out.wait <= 0.1
    await store.release(HOST, ["a"])
    assert (await store.breaker_probe(HOST, "m1", 2, 0.1)).verdict is Verdict.PROBE


# -- a dead host, counted on its side -----------------------------------------------------------


class DeadHost:
    """Resets every request while ``down`` (counting them: ``arrivals``), answers 200 once
    up."""

    def __init__(self) -> None:
        self.down = True
        self.arrivals: list[float] = []

    def reset(self, head: str) -> bool:
        if self.down:
            self.arrivals.append(time.monotonic())
        return self.down

    async def answer(self, head: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    def probes_after(self, start: float) -> list[float]:
        """The gaps between the requests that came after ``start`` (the breakers all open)."""
        late = [t for t in self.arrivals if t >= start]
        return [b - a for a, b in itertools.pairwise(late)]


async def hammer(session: object, url: str, until: float, seen: dict[str, int]) -> None:
    while time.monotonic() < until:
        try:
            async with session.get(url) as resp:  # type: ignore[attr-defined]
                await resp.read()
            seen["ok"] = seen.get("ok", 0) + 1
        except CircuitOpenError:  # noqa: PERF203 - a loop of calls, each may fail
            seen["circuit"] = seen.get("circuit", 0) + 1
            await asyncio.sleep(0.02)
        except Exception:
            seen["other"] = seen.get("other", 0) + 1
            await asyncio.sleep(0.02)


def breaker_session(store: HealthStore | None) -> object:
    # A cap above the fleet's 12 workers and no adaptive limit: this is about the breaker, not
    # sharing slots (each session's own adaptive limit, cut by the dead host, would starve the
    # sessions whose limit fell below the fleet's count once it is back).
    return resilient_session(
        limit_per_host=16,
        store=store,
        policy=RetryPolicy(attempts=2, backoff_base=0.01, backoff_max=0.02),
        health=HealthPolicy(breaker=BREAKER, adaptive_limit=None),
    )


@pytest.mark.parametrize("shared", [True, False], ids=["store", "no-store"])
async def test_sessions_sharing_a_store_probe_a_dead_host_once_per_break(shared: bool) -> None:
    """Three sessions (as three processes would be) with 4 workers each hammer a dead host for
    2.5 s: once the breakers are open, the host sees one probe per 0.3 s break, not one per
    session; then it comes back, and every session is served within a break or two."""
    host = DeadHost()
    store = MemoryStore() if shared else None
    async with raw_http_server(host.answer, reset=host.reset) as (url, _):
        sessions = [breaker_session(store) for _ in range(3)]
        seen: list[dict[str, int]] = [{} for _ in sessions]
        started = time.monotonic()
        tasks = [
            asyncio.ensure_future(hammer(s, url, started + 3.5, seen[i]))
            for i, s in enumerate(sessions)
            for _ in range(4)
        ]
        await asyncio.sleep(2.5)
        gaps = host.probes_after(started + 0.8)
        host.down = False
        back = time.monotonic()
        served_at: list[float] = []
        for session in sessions:
            for _ in range(100):
                try:
                    async with session.get(url) as resp:  # type: ignore[attr-defined]
                        await resp.read()
                    served_at.append(time.monotonic() - back)
                    break
                except CircuitOpenError:
                    await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
        for session in sessions:
            await session.close()  # type: ignore[attr-defined]
    if store is not None:
        await store.close()
    probes_per_break = (len(gaps) + 1) / (1.7 / 0.3)
    if shared:
        assert len(gaps) >= 3  # the host was probed, break after break
        assert min(gaps) >= 0.2  # never two probes in one break
        assert probes_per_break <= 1.2
    else:
        assert probes_per_break >= 2  # each session probes on its own
    assert len(served_at) == 3
    assert max(served_at) < 1.0
    assert all(s.get("ok", 0) > 0 for s in seen)


# -- real client processes on one Redis -------------------------------------------------------


async def _start_clients(
    url: str, store_url: str, procs: int, seconds: float
) -> list[asyncio.subprocess.Process]:
    # Started, and each said it is ready (Python and aiohttp take a while on a loaded machine).
    env = {**os.environ, "PYTHONPATH": str(CLIENT.parent.parent)}
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(CLIENT),
            url,
            store_url,
            "4",
            str(seconds),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # a warning per call refused
            env=env,
        )
        for _ in range(procs)
    ]
    for proc in started:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    return started


async def _results(procs: list[asyncio.subprocess.Process]) -> list[list[str]]:
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 30)
    return [out.decode().split() for out, _ in outputs]


@needs_redis
@pytest.mark.parametrize("shared", [True, False], ids=["store", "no-store"])
async def test_four_processes_probe_a_dead_host_once_per_break(
    redis_port: int, shared: bool
) -> None:
    """Issue 19's done-when: a dead host costs the whole fleet one probe per break, counted on
    the host's side; its probe's success closes the breaker for every process."""
    host = DeadHost()
    store_url = f"redis://127.0.0.1:{redis_port}/0" if shared else "-"
    async with raw_http_server(host.answer, reset=host.reset) as (url, _):
        procs = await _start_clients(url, store_url, 4, 4.5)
        started = time.monotonic()
        await asyncio.sleep(3.0)
        host.down = False
        back = time.monotonic()
        results = await _results(procs)
    window_start = host.arrivals[0] + 1.0  # every process has seen the host fail by then
    gaps = host.probes_after(window_start)
    probes_per_break = (len(gaps) + 1) / ((back - window_start) / 0.315)
    first_ok = [float(r[3]) - back for r in results]
    assert host.arrivals[0] - started < 0.5
    if shared:
        assert len(gaps) >= 3
        assert min(gaps) >= 0.2  # never two probes in one break, across 4 processes
        assert probes_per_break <= 1.2
    else:
        assert probes_per_break >= 2  # each process probes on its own
    assert all(0 < t < 1.0 for t in first_ok)  # every process is served within a break or two
    assert all(int(r[0]) > 0 for r in results)


# -- failing open ---------------------------------------------------------------------------------


@needs_redis
async def test_redis_stopped_while_the_fleet_breaker_is_open_the_process_probes_alone() -> None:
    """Redis stops (SIGSTOP) while the fleet's breaker holds a dead host open, and the host
    comes back: the process probes on its own and is served within a break, and no call fails
    after that, neither while Redis sleeps nor once it is back (the store is told of the close
    before the process's next lease, instead of its stale "open" re-opening the breaker)."""
    host = DeadHost()
    with redis_server() as (port, proc):
        store = RedisStore(f"redis://127.0.0.1:{port}/0", lease_ttl=2.0)
        async with raw_http_server(host.answer, reset=host.reset) as (url, _):
            name = url  # the host as the store names it: scheme://host:port
            session = breaker_session(store)
            await hammer(session, url, time.monotonic() + 1.0, {})
            told = await store.acquire(name, "test", ["x"], 16, None, True)
            assert told.broken is not None  # the fleet's breaker is open
            outcomes: list[tuple[float, bool]] = []

            async def calls(until: float) -> None:
                while time.monotonic() < until:
                    try:
                        async with session.get(url) as resp:  # type: ignore[attr-defined]
                            await resp.read()
                        outcomes.append((time.monotonic(), True))
                    except Exception:  # noqa: PERF203 - a loop of calls, each may fail
                        outcomes.append((time.monotonic(), False))
                        await asyncio.sleep(0.02)

            os.kill(proc.pid, signal.SIGSTOP)
            try:
                host.down = False
                back = time.monotonic()
                await asyncio.gather(*(calls(back + 2.0) for _ in range(4)))
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            # Past the store guard's longest retry (2 s): the process rejoins the fleet.
            await asyncio.gather(*(calls(time.monotonic() + 2.5) for _ in range(4)))
            after = await store.acquire(name, "test", ["y"], 16, None, True)
            await session.close()  # type: ignore[attr-defined]
        await store.close()
    first_ok = min(t for t, ok in outcomes if ok)
    assert first_ok - back < 1.0
    failed_after = [t for t, ok in outcomes if not ok and t > first_ok]
    assert failed_after == []
    assert after.broken is None  # the fleet was told: closed
    assert after.granted == 1


async def test_a_close_made_alone_does_not_close_a_newer_fleet_break(store: HealthStore) -> None:
    """A process whose breaker closed while the store was down tells the store once it is
    back: that closes a break older than its close, not one the fleet opened after it."""
    policy = BreakerPolicy(break_duration=5.0, break_jitter=0, patience=None)
    opened = Report("", Outcome.OPENED, 0.5, None, "5 failures")
    await store.breaker_report(HOST, opened, policy)
    await asyncio.sleep(0.05)
    # Closed alone 1 s ago, before this break opened: the break stays.
    late = Report("", Outcome.PROBE_SUCCEEDED, 0.0, None, "", closed_ago=1.0)
    await store.breaker_report(HOST, late, policy)
    assert (await store.acquire(HOST, "p1", ["a"], 8, None, True)).broken is not None
    # Closed alone 10 ms ago, after it opened: the host is back for all.
    fresh = Report("", Outcome.PROBE_SUCCEEDED, 0.0, None, "", closed_ago=0.01)
    await store.breaker_report(HOST, fresh, policy)
    assert (await store.acquire(HOST, "p1", ["b"], 8, None, True)).granted == 1
