"""The two kinds of child process: the fault server (CPU 0) and one client run (CPU 1).

The server process lives for the whole suite and starts a fresh :class:`FaultServer` per run, so
its counts are that run's alone. Each run gets a fresh client process, so that its peak memory
is its own. Both talk to the parent over a :func:`multiprocessing.Pipe`.

Timed scenarios (an outage, restarts) follow a timeline that starts when the client's measured
run does: the client sends ``("started", t0)`` after its warm-up, the parent passes it on to the
server as ``("go", t0)``, and the server schedules the events at ``t0 + offset``. ``t0`` is a
:func:`time.monotonic` value, the same clock in every process on Linux.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

from ...testing import Fault, FaultServer, SlowAnswers
from ._clients import CLIENTS
from ._scenarios import Scenario

__all__ = [
    "CLIENT_CPU",
    "SERVER_CPU",
    "RunSpec",
    "client_main",
    "pin",
    "read_steal",
    "server_main",
]

SERVER_CPU: Final = 0
CLIENT_CPU: Final = 1
#: Requests to this path are never faulted: the warm-up opens the connections through it.
WARM_PATH: Final = "/w"
#: Requests (at least one per worker) of the warm-up before a run's clock starts.
WARMUP_REQUESTS: Final = 200
#: The measured path.
BENCH_PATH: Final = "/b"
#: The header that carries each POST's unique id, counted by the server to find repeats.
REQUEST_ID_HEADER: Final = "X-Request-Id"
#: Clients whose ``on_retry`` hook counts retries only.
_HOOK_COUNTED: Final = frozenset({"resilient", "middleware-only", "decorator"})


def pin(cpu: int) -> str:
    """Pin this process to ``cpu`` if the platform allows; says what was done."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    if cpu >= (os.cpu_count() or 1):
        return f"not pinned (no CPU {cpu})"
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        return f"not pinned ({exc})"
    return f"CPU {cpu}"


def read_steal() -> tuple[int, int] | None:
    """(steal jiffies, all jiffies) of all CPUs from ``/proc/stat``, or ``None`` off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    values = [int(v) for v in fields[1:9]]
    return values[7], sum(values)


# -- the server process ----------------------------------------------------------------------


def _weights(scenario: Scenario) -> dict[Fault, float]:
    if scenario.rate <= 0 or scenario.kind == "tail":  # tail: slow answers, not faults
        return {}
    fault = {
        "fin": Fault.fin(),
        "rst": Fault.rst(),
        "cut": Fault.cut_body(size=1000, sent=100),
    }[scenario.kind]
    return {fault: scenario.rate}


def _burst_script(scenario: Scenario, requests: int) -> list[Fault]:
    """Every ``burst_every`` requests to the path, ``burst`` consecutive 503s: counted in
    requests, not seconds, so the bursts fall alike on fast and slow clients."""
    ok = Fault.ok()
    busy = Fault.status(503, retry_after=scenario.retry_after)
    cycle = [ok] * (scenario.burst_every - scenario.burst) + [busy] * scenario.burst
    # Retries are requests too: script enough cycles for every attempt a client may make.
    return cycle * (requests * 2 // scenario.burst_every + 1)


def _make_server(scenario: Scenario, seed: int, requests: int) -> FaultServer:
    """A fresh server for one run of ``scenario``; only the warm-up path is never faulted."""
    options: dict[str, Any] = {}
    if scenario.kind == "overload":
        options.update(
            capacity=scenario.capacity,
            service_time=scenario.service_time,
            over_capacity=scenario.refusal,
        )
    elif scenario.kind == "ratelimit":
        options.update(rate_limit=scenario.rate_limit, over_rate=scenario.refusal)
    elif scenario.service_time:
        options.update(service_time=scenario.service_time)
    server = FaultServer(
        record=False,
        max_requests_per_conn=scenario.max_requests_per_conn,
        compute_retry_after=scenario.compute_retry_after,
        exempt_paths=(WARM_PATH,),
        request_id_header=REQUEST_ID_HEADER if scenario.post_every else None,
        **options,
    )
    if scenario.kind == "tail":
        endpoint = SlowAnswers(share=scenario.rate, seconds=scenario.slow_seconds, seed=seed)
        server.serve(BENCH_PATH, endpoint)
    weights = _weights(scenario)
    if weights:
        server.random(BENCH_PATH, weights, seed=seed)
    if scenario.burst:
        server.script(BENCH_PATH, _burst_script(scenario, requests))
    return server


async def _timeline(
    server: FaultServer, scenario: Scenario, t0: float, downs: list[list[float]]
) -> None:
    """The scenario's events, at their offsets from the client's ``t0``."""
    if scenario.outage_seconds:
        assert scenario.refusal is not None
        server.outage(scenario.outage_seconds, scenario.refusal, at=t0 + scenario.outage_at)
    for offset in scenario.restarts:
        await asyncio.sleep(max(0.0, t0 + offset - time.monotonic()))
        went = time.monotonic()
        await server.restart(down=scenario.down_seconds)
        downs.append([went, time.monotonic()])


def _counts(server: FaultServer, downs: list[list[float]]) -> dict[str, Any]:
    ids = server.duplicate_ids
    return {
        "requests": server.count(BENCH_PATH),
        "warmup_requests": server.count(WARM_PATH),
        "post_requests": server.count(BENCH_PATH, method="POST"),
        "connections": server.connections_opened,
        "actions": dict(server.action_counts),
        "shed": dict(server.shed_counts),
        "outages": [
            {"start": o.start, "end": o.end, "requests": o.requests} for o in server.outages
        ],
        "downs": downs,
        # Distinct POSTs that arrived more than once, and the extra arrivals they made.
        "posts_twice": len(ids),
        "post_repeats": sum(n - 1 for n in ids.values()),
    }


async def _serve(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except EOFError:
            inbox.put_nowait(("quit",))

    loop.add_reader(conn.fileno(), readable)
    server: FaultServer | None = None
    scenario: Scenario | None = None
    timeline: asyncio.Task[None] | None = None
    downs: list[list[float]] = []
    try:
        while True:
            command = await inbox.get()
            if command[0] == "start":
                scenario = command[1]
                server = _make_server(command[1], command[2], command[3])
                downs = []
                await server.start_listening()
                conn.send(("url", str(server.url)))
            elif command[0] == "go":
                # No answer: the parent sends it while it waits for the client.
                if server is not None and scenario is not None and timeline is None:
                    timeline = asyncio.create_task(_timeline(server, scenario, command[1], downs))
            elif command[0] == "stop":
                counts: dict[str, Any] = {}
                if timeline is not None:
                    timeline.cancel()  # a no-op when it has ended
                    [outcome] = await asyncio.gather(timeline, return_exceptions=True)
                    if isinstance(outcome, Exception):
                        counts["error"] = f"the server's timeline failed: {outcome!r}"
                    timeline = None
                if server is not None:
                    await server.stop_listening()
                    counts.update(_counts(server, downs))
                    server = None
                conn.send(("counts", counts))
            else:
                return
    finally:
        loop.remove_reader(conn.fileno())
        if timeline is not None:
            timeline.cancel()
        if server is not None:
            await server.stop_listening()


def server_main(conn: Connection) -> None:
    """Entry of the server process."""
    pin(SERVER_CPU)
    asyncio.run(_serve(conn))


# -- a client run ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What one client process does.

    Attributes:
        client: The client's name (see ``CLIENTS``).
        url: The server's base URL.
        concurrency: Workers, each with one logical request in flight at a time.
        requests: Logical requests of a count-based run.
        time_cap: Seconds after which requests still unfinished are cancelled.
        run_seconds: A timed run: workers start requests for this long (``requests`` is not
            used), and the time of each success is kept.
        post_every: Every Nth logical request is a POST with a unique ``X-Request-Id`` (0: none).
    """

    client: str
    url: str
    concurrency: int
    requests: int
    time_cap: float
    run_seconds: float | None = None
    post_every: int = 0


def _reset_peak_rss() -> bool:
    # Linux >= 4.0: writing 5 resets VmHWM to the current RSS, so the peak is this run's own.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource  # POSIX only: imported here so that the CLI still loads on Windows
    except ImportError:
        return float("nan")
    # ru_maxrss: KiB on Linux, bytes on macOS.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _drive(spec: RunSpec, started: Callable[[float], None]) -> dict[str, Any]:
    client_spec = next(c for c in CLIENTS if c.name == spec.client)
    client = await client_spec.build(spec.concurrency)
    url = spec.url + BENCH_PATH
    try:
        # Warm-up outside the clock, on the unfaulted path: open one connection per worker and
        # run the code paths until the caches are warm (a fresh process is slower at first).
        warm_url = spec.url + WARM_PATH
        warm_left = max(WARMUP_REQUESTS, spec.concurrency)

        async def warm() -> None:
            nonlocal warm_left
            while warm_left > 0:
                warm_left -= 1
                with contextlib.suppress(Exception):
                    await client.fetch(warm_url, "GET", None)

        await asyncio.gather(*(warm() for _ in range(spec.concurrency)))
        if client.attempts is not None:
            client.attempts = 0
        gc.collect()
        peak_reset = _reset_peak_rss()
        issued = ok = failed = 0
        posts = posts_failed = 0
        errors: dict[str, int] = {}
        latencies: list[float] = []
        # Timed runs keep when each success completed (the recovery figures need them).
        successes: list[float] = []
        timed = spec.run_seconds is not None
        limit = sys.maxsize if timed else spec.requests
        post_every = spec.post_every
        fetch = client.fetch
        # monotonic, not perf_counter: the server's outage times are on this clock.
        clock = time.monotonic
        last = start = clock()
        # `last` is the latest completion: a worker stops starting requests once it passes this.
        stop_at = start + spec.run_seconds if spec.run_seconds is not None else float("inf")
        started(start)

        async def worker() -> None:
            nonlocal issued, ok, failed, last, posts, posts_failed
            while issued < limit and last < stop_at:
                issued += 1
                method = "GET"
                headers = None
                if post_every and issued % post_every == 0:
                    method = "POST"
                    headers = {REQUEST_ID_HEADER: str(issued)}
                    posts += 1
                began = clock()
                try:
                    await fetch(url, method, headers)
                except Exception as exc:
                    failed += 1
                    if method == "POST":
                        posts_failed += 1
                    name = type(exc).__name__
                    errors[name] = errors.get(name, 0) + 1
                    last = clock()
                else:
                    last = clock()
                    ok += 1
                    latencies.append(last - began)
                    if timed:
                        successes.append(last)

        cpu0 = time.process_time()
        tasks = [asyncio.create_task(worker()) for _ in range(spec.concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=spec.time_cap)
        capped = bool(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        cpu = time.process_time() - cpu0
        if spec.run_seconds is not None:
            elapsed = spec.run_seconds
        else:
            elapsed = (start + spec.time_cap if capped else last) - start
        library_attempts = client.attempts
    finally:
        await client.close()
    latencies.sort()
    completed = ok + failed
    if spec.client in _HOOK_COUNTED and library_attempts is not None:
        library_attempts += completed  # their hook counts the retries; add the first attempts
    result: dict[str, Any] = {
        # Count-based runs: the requests the run was to make (a capped run issues fewer).
        "planned": None if timed else spec.requests,
        "issued": issued,
        "ok": ok,
        "failed": failed,
        "unfinished": issued - completed,
        "capped": capped,
        "elapsed": elapsed,
        "cpu": cpu,
        "p50": _quantile(latencies, 0.50),
        "p99": _quantile(latencies, 0.99),
        "p999": _quantile(latencies, 0.999),
        "max": latencies[-1] if latencies else None,
        "library_attempts": library_attempts,
        "errors": errors,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_rss_reset": peak_reset,
        "t0": start,
    }
    if timed:
        # Goodput of a timed run: the successes within it (those in the grace time count for
        # the success rate only).
        result["ok_in_run"] = sum(1 for t in successes if t <= stop_at)
        result["successes"] = successes
    if post_every:
        result["posts"] = posts
        result["posts_failed"] = posts_failed
        result["gets_failed"] = failed - posts_failed
    return result


def client_main(conn: Connection, spec: RunSpec) -> None:
    """Entry of a client process: run ``spec``, send the figures (or the error) back.

    Before the measured run starts it sends ``("started", t0)``, so that the parent can start
    the server's timeline.
    """
    pin(CLIENT_CPU)
    # A forked child inherits the parent's filters (pytest's "error" among them); here a
    # third-party deprecation must not abort a measurement: show it once instead.
    warnings.resetwarnings()
    warnings.simplefilter("default")
    # No client logs: the alternatives run without (backoff's logger=None, stamina's hooks
    # off), and a sick host makes ours log a give-up per failed request to stderr.
    logging.disable(logging.CRITICAL)
    try:
        result: Any = ("ok", asyncio.run(_drive(spec, lambda t0: conn.send(("started", t0)))))
    except Exception as exc:  # reported by the parent, with the client's name
        result = ("error", f"{type(exc).__name__}: {exc}")
    conn.send(result)
    conn.close()


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    """``spec`` as plain data for the JSON report."""
    return asdict(spec)
