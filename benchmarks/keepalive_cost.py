"""What the keep-alive rule costs, and what it saves: connections opened and requests lost.

Sequential requests with idle gaps between them, against two servers (each ``aiohttp-resilient
serve`` in its own process pinned to CPU 0; the clients in this process, pinned to CPU 1): one
that keeps idle connections (as nginx does for 75 s) and one that closes them after 2 s without
warning (as gunicorn does). For each gap, method and client it counts the connections the client
opened (aiohttp's trace hook) and the requests that failed. Raw aiohttp (its defaults: 15 s pool
time) and ``resilient_session()`` (4 s pool time, keep-alive learning) run side by side, each
client on its own connector. No faults are injected: every failure is the stale keep-alive race.

Usage::

    python benchmarks/keepalive_cost.py [--rounds 6]

About ``rounds * sum(GAPS)`` seconds (33 s by default); every loop is bounded by ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp

from aiohttp_resilient import resilient_session

SERVER_CPU = 0
CLIENT_CPU = 1
#: Idle gaps between requests, in seconds: under the unknown-host POST limit (1 s), between it and
#: the 2 s server's timeout, at that timeout, and past the pool time of resilient_session (4 s).
GAPS = (0.5, 1.5, 2.0, 4.5)
SERVERS = {"keeps idle connections": None, "closes idle at 2 s": 2000}


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def _server(idle_close_ms: int | None, seconds: float) -> Iterator[str]:
    command = ["aiohttp-resilient", "serve", "--port", "0"]
    command += ["--duration", str(seconds), "--stats-interval", "3600"]
    if idle_close_ms is not None:
        command += ["--idle-close-ms", str(idle_close_ms)]
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > SERVER_CPU:
        command = ["taskset", "-c", str(SERVER_CPU), *command]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "serving on URL"
        if not line.startswith("serving on "):
            raise RuntimeError(f"the server did not start: {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Cell:
    opened: int = 0
    failed: int = 0
    sent: int = 0
    errors: list[str] = field(default_factory=list)


def _counting_trace(cell: Cell) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def created(*_: object) -> None:
        cell.opened += 1

    trace.on_connection_create_end.append(created)
    return trace


async def _run_client(name: str, url: str, method: str, gap: float, rounds: int) -> Cell:
    cell = Cell()
    traces = [_counting_trace(cell)]
    if name == "aiohttp":
        session = aiohttp.ClientSession(trace_configs=traces)
    else:
        session = resilient_session(trace_configs=traces)
    async with session:
        for _ in range(rounds):
            cell.sent += 1
            try:
                async with session.request(method, url, data=b"x") as resp:
                    await resp.read()
            except aiohttp.ClientError as exc:
                cell.failed += 1
                cell.errors.append(type(exc).__name__)
            await asyncio.sleep(gap)
    return cell


async def _main(rounds: int) -> None:
    _pin(CLIENT_CPU)
    seconds = rounds * sum(GAPS) + 30
    with contextlib.ExitStack() as stack:
        urls = {label: stack.enter_context(_server(ms, seconds)) for label, ms in SERVERS.items()}
        jobs = {
            (label, method, gap, client): _run_client(client, url, method, gap, rounds)
            for label, url in urls.items()
            for method in ("GET", "POST")
            for gap in GAPS
            for client in ("aiohttp", "resilient_session")
        }
        # Every cell at once: they sleep most of the time, so they do not slow each other.
        cells = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))
    print(f"{rounds} sequential requests per cell; connections opened / requests failed\n")
    print("| server | method | gap (s) | aiohttp | resilient_session |")
    print("|---|---|---|---|---|")
    for label in SERVERS:
        for method in ("GET", "POST"):
            for gap in GAPS:
                row = [cells[(label, method, gap, c)] for c in ("aiohttp", "resilient_session")]
                shown = " | ".join(f"{c.opened} / {c.failed}" for c in row)
                print(f"| {label} | {method} | {gap:g} | {shown} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="requests per cell (6)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 100:
        parser.error("--rounds must be between 1 and 100")
    asyncio.run(_main(args.rounds))


if __name__ == "__main__":
    main()
