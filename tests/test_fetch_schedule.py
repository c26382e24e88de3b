"""``fetch``'s per-host scheduler, Ctrl-C and attempts: subprocesses against loopback hosts
that count what reaches them (a FaultServer, or a listener that resets every connection)."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from _helpers import closed_port, start_cli, wait_until
from aiohttp_resilient import (
    BreakerPolicy,
    HealthPolicy,
    HostHealth,
    HostLimiter,
    resilient_session,
)
from aiohttp_resilient._cli._fetch._schedule import Scheduler, estimate_eta
from aiohttp_resilient._retry._classify import Signal
from aiohttp_resilient.testing import Fault, FaultServer


class ResettingHost:
    """A host that is down behind its port: every connection is accepted and reset at once
    (nothing is ever answered); each accept's time is kept."""

    def __init__(self) -> None:
        self.accepts: list[float] = []
        self.port = 0

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(time.monotonic())
        writer.transport.abort()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ResettingHost]:
        server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


def records(path: Path) -> dict[str, dict[str, object]]:
    return {r["url"]: r for r in map(json.loads, path.read_text().splitlines())}


async def test_a_slow_host_holds_no_worker(tmp_path: Path) -> None:
    """-c 3 --per-host 2, URLs interleaved over a slow host (5 s per answer: ample for 40 fast
    requests on one worker, even on a loaded machine) and a fast one: the fast host's 40 URLs
    are all served while the slow host is on its first two (a worker that held a slow-host URL
    while waiting for its slot would stall the fast host until the slow host's URLs ran out).
    Four slow URLs: two rounds, 10 s."""
    async with FaultServer(service_time=5.0) as slow, FaultServer(host="127.0.0.2") as fast:
        urls = []
        for i in range(40):
            if i < 4:
                urls.append(str(slow.url_for(f"/s{i}")))
            urls.append(str(fast.url_for(f"/f{i}")))
        args = ("fetch", "--jsonl", str(tmp_path / "r.jsonl"), "-c", "3", "--per-host", "2")
        proc = await start_cli(*args, "--progress-interval", "0.2", *urls)
        await wait_until(lambda: fast.count() >= 40, timeout=20)
        slow_then = slow.count()  # requests read, held ones included
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert slow_then <= 2
    assert slow.count() == 4
    # The progress lines say the slow host waits for its slots while its first two are out.
    assert "1 host waiting (1 slots)" in stderr.decode()


def test_eta_counts_the_slowest_host_at_its_pace() -> None:
    """The ETA is the slowest host's: 10 URLs left on a host paced at 2/s take 5 s, however
    fast the other host went (40 URLs done in 1 s would say 0.25 s)."""
    scheduler = Scheduler(
        [f"http://127.0.0.1:1/{i}" for i in range(10)]
        + [f"http://127.0.0.2:1/{i}" for i in range(40)],
        cap=4,
        rate=2.0,
    )
    fast = scheduler.hosts[("http", "127.0.0.2", 1)]
    fast.urls.clear()
    fast.finished = 40
    eta = estimate_eta(scheduler, None, finished=40, started=time.monotonic() - 1.0)
    assert eta is not None
    assert 5.0 <= eta < 5.1


async def test_first_interrupt_sends_nothing_more_with_a_dead_host(tmp_path: Path) -> None:
    """A host that resets every connection, 200 URLs to it: after the first SIGINT no
    connection reaches it (no new URL, no retry, no breaker probe), the run ends within 2 s
    with exit 130, and the report and manifest are written."""
    out = tmp_path / "out"
    async with ResettingHost().running() as dead:
        urls = [f"http://127.0.0.1:{dead.port}/{i}" for i in range(200)]
        proc = await start_cli("fetch", "--out", str(out), *urls)
        await wait_until(lambda: len(dead.accepts) >= 8, timeout=20)
        await asyncio.sleep(0.4)  # breaker open, retries and probes under way
        before = len(dead.accepts)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        await asyncio.wait_for(proc.communicate(), 2.0)
        ended = time.monotonic() - sent
        await asyncio.sleep(0.2)
    late = [t for t in dead.accepts if t > sent + 0.05]  # slack for the signal's delivery
    assert proc.returncode == 130
    assert ended < 2.0
    assert late == [], f"{len(late)} connections after SIGINT ({before} before)"
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    assert (out / "manifest.jsonl").exists()


async def test_attempts_are_what_went_on_the_wire(tmp_path: Path) -> None:
    """40 URLs to a host that resets every connection: the attempts the manifest records add
    up to the connections the host accepted, and the URLs the open breaker refused made
    none (0 attempts)."""
    jsonl = tmp_path / "r.jsonl"
    async with ResettingHost().running() as dead:
        urls = [f"http://127.0.0.1:{dead.port}/{i}" for i in range(40)]
        proc = await start_cli("fetch", "--jsonl", str(jsonl), *urls)
        await asyncio.wait_for(proc.communicate(), 30)
        accepted = len(dead.accepts)
    found = records(jsonl)
    attempts = [int(r["attempts"]) for r in found.values()]  # type: ignore[call-overload]
    assert proc.returncode == 1
    assert len(found) == 40
    assert sum(attempts) == accepted
    assert 0 in attempts
    assert max(attempts) <= 4  # the crawler preset's 3 retries


async def test_per_host_cap_counts_the_kept_observation_connection() -> None:
    """limit_per_host=2, a host announcing a 1 s keep-alive timeout: after a pause past the
    reuse limit, two requests at once find the pooled connections too old; the one kept as
    an observation is closed rather than left beside two new ones (the server never sees more
    than 2 connections open)."""
    async with FaultServer(keep_alive_header="timeout=1", service_time=0.3) as server:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.connections_open)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        async with resilient_session(limit_per_host=2) as session:

            async def get(path: str) -> None:
                async with session.get(server.url_for(path)) as resp:
                    await resp.read()

            await asyncio.gather(get("/a"), get("/b"))
            await asyncio.sleep(1.0)  # both pooled connections idle past the reuse limit
            await asyncio.gather(get("/c"), get("/d"))
        watcher.cancel()
    assert server.count() == 4
    assert server.connections_opened >= 3  # the pause did make new connections
    assert peak <= 2


async def test_a_large_body_goes_through_download(tmp_path: Path) -> None:
    """A body over LARGE_BODY (9 MiB) is saved whole through download(): its first response is
    closed unread and download() asks again (2 requests on the server, 2 attempts recorded)."""
    body = bytes(range(256)) * (9 * 4096)
    out = tmp_path / "out"
    async with FaultServer() as server:
        server.set_default("/big.bin", Fault.ok(body=body))
        proc = await start_cli("fetch", "--out", str(out), str(server.url_for("/big.bin")))
        await asyncio.wait_for(proc.communicate(), 30)
    (record,) = records(out / "manifest.jsonl").values()
    assert proc.returncode == 0
    assert (out / str(record["file"])).read_bytes() == body
    assert (record["size"], record["attempts"]) == (len(body), 2)
    assert server.count("/big.bin") == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_availability_says_when_and_why_without_changing_anything() -> None:
    """HostHealth.availability(): a slot taken by each of 2 claims fills the cap ("slots");
    5 unreachable answers open the breaker (wait for the probe); past the patience calls fail
    at once; reading it claims nothing (the probe is still due afterwards)."""
    clock = FakeClock()
    breaker = BreakerPolicy(patience=2.5, break_jitter=0.0)
    health = HostHealth(HealthPolicy(breaker=breaker), limiter=HostLimiter(2), clock=clock)
    key = ("http", "127.0.0.1", 80)
    assert health.availability(key, clock.now) == (0.0, None, False)
    claims = [health.try_claim(key, clock.now, True) for _ in range(2)]
    assert health.availability(key, clock.now) == (math.inf, "slots", False)
    for claim in claims:
        assert claim is not None
        claim.end(Signal.UNREACHABLE, clock.now)
    for _ in range(3):
        clock.now += 0.05
        claim = health.try_claim(key, clock.now, True)
        assert claim is not None
        claim.end(Signal.UNREACHABLE, clock.now)
    wait, reason, fails_fast = health.availability(key, clock.now)
    assert (reason, fails_fast) == ("breaker", False)
    assert 0 < wait <= breaker.break_duration
    clock.now += wait
    assert health.availability(key, clock.now) == (0.0, "breaker", False)  # the probe is due
    assert health.availability(key, clock.now) == (0.0, "breaker", False)  # nothing taken
    clock.now += breaker.patience
    assert health.availability(key, clock.now) == (0.0, "breaker", True)


async def test_a_url_whose_host_was_down_gets_a_second_pass(tmp_path: Path) -> None:
    """--retries 1 against a host that refuses connections for its first 1.5 s: the URLs whose
    attempts were refused (or that the open breaker refused) go again once the host is back,
    and every URL is fetched, each served once (its last attempt); the attempts recorded add up
    to those 20 plus the refused ones (refusals reach no server to count them: the test checks
    there were some, and at most 2 passes of 2 attempts per URL)."""
    jsonl = tmp_path / "r.jsonl"
    async with FaultServer() as server:
        urls = [str(server.url_for(f"/{i}")) for i in range(20)]
        await server.stop_listening()
        proc = await start_cli("fetch", "--jsonl", str(jsonl), "--retries", "1", *urls)
        await asyncio.sleep(1.5)
        await server.start_listening()
        await asyncio.wait_for(proc.communicate(), 30)
    found = records(jsonl)
    assert proc.returncode == 0
    assert all(r["error"] is None for r in found.values())
    assert [server.count(f"/{i}") for i in range(20)] == [1] * 20
    attempts = [int(r["attempts"]) for r in found.values()]  # type: ignore[call-overload]
    refused = sum(attempts) - server.count()
    assert refused > 0
    assert max(attempts) <= 4


async def test_retries_0_gives_an_unreached_host_no_second_pass(tmp_path: Path) -> None:
    """--retries 0 with a port that refuses connections: each URL is tried once (no second
    pass: the user asked for no retries); the report and the progress say 0 retries."""
    jsonl = tmp_path / "r.jsonl"
    port = closed_port()
    urls = [f"http://127.0.0.1:{port}/{i}" for i in range(3)]
    proc = await start_cli("fetch", "--jsonl", str(jsonl), "--retries", "0", *urls)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    found = records(jsonl)
    report = json.loads((tmp_path / "r.jsonl.report.json").read_text())
    assert proc.returncode == 1
    assert [found[url]["attempts"] for url in urls] == [1, 1, 1]
    assert {str(r["error"]) for r in found.values()} == {"ClientConnectorError"}
    assert report["retries"] == 0
    assert stderr.decode().splitlines()[-1].endswith(" 0 retries")


async def test_the_report_and_the_progress_count_the_same_retries(tmp_path: Path) -> None:
    """--retries 1: a URL retried once after a FIN (2 requests on the server), and one whose
    host refuses connections (2 attempts, then its second pass: 2 more). The report's retries
    and the last progress line's are the same figure: 1 + 3."""
    jsonl = tmp_path / "r.jsonl"
    async with FaultServer() as server:
        server.script("/flaky", [Fault.fin(), Fault.ok()])
        urls = [str(server.url_for("/flaky")), f"http://127.0.0.1:{closed_port()}/x"]
        proc = await start_cli("fetch", "--jsonl", str(jsonl), "--retries", "1", *urls)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    found = records(jsonl)
    report = json.loads((tmp_path / "r.jsonl.report.json").read_text())
    assert server.count("/flaky") == 2
    assert [found[url]["attempts"] for url in urls] == [2, 4]
    assert report["retries"] == 4
    assert stderr.decode().splitlines()[-1].endswith(" 4 retries")
