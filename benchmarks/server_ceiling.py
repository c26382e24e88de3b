"""How many requests per second can FaultServer answer on one core?

The server runs in its own process pinned to CPU 0; the load runs in another process pinned to
CPU 1, so neither steals the other's core. Two loads:

* ``wrk`` (if installed: ``apt-get install wrk``), a C load generator much faster than the
  server, so its number is the server's ceiling;
* an aiohttp ``ClientSession`` with N concurrent tasks (default 64), the load this project cares
  about. Each process reports its CPU use: whichever sits near 100% is the bottleneck, so when the
  server is below 100% here, the number is the aiohttp client's own ceiling.

Usage::

    python benchmarks/server_ceiling.py [--duration 3] [--concurrency 64]

Every phase is bounded by ``--duration`` (plus start-up) and every loop by a request cap.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time

SERVER_CPU = 0
CLIENT_CPU = 1
#: Upper bound on requests per aiohttp worker, so no loop is unbounded even if the clock stalls.
MAX_REQUESTS_PER_WORKER = 10_000_000


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


# -- child roles ---------------------------------------------------------------------------------


async def _run_server() -> None:
    from aiohttp_resilient.testing import FaultServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with FaultServer(record=False) as server:
        print(server.url, flush=True)
        # CPU from here on: start-up (imports) is not part of serving.
        cpu0 = time.process_time()
        # Bounded: the parent sends SIGTERM well before this.
        await asyncio.wait_for(stop.wait(), 600)
        cpu = time.process_time() - cpu0
        print(f"requests={server.count()} cpu={cpu:.2f}", flush=True)


async def _run_client(url: str, concurrency: int, duration: float) -> None:
    import aiohttp

    count = 0
    deadline = 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal count
        for _ in range(MAX_REQUESTS_PER_WORKER):
            if time.monotonic() >= deadline:
                return
            async with session.get(url) as resp:
                await resp.read()
            count += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm-up: open the connections before the clock starts.
        deadline = time.monotonic() + 0.3
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        count = 0
        cpu0, t0 = time.process_time(), time.monotonic()
        deadline = t0 + duration
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
        cpu = time.process_time() - cpu0
    print(f"rps={count / elapsed:.0f} cpu_util={cpu / elapsed:.2f}", flush=True)


# -- orchestration -------------------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", "server"],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: _pin(SERVER_CPU),
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"server did not start: {self.url!r}")
        self.started = time.monotonic()

    def stop(self) -> tuple[int, float]:
        """(requests answered, server CPU utilisation since it printed its URL)."""
        elapsed = time.monotonic() - self.started
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        m = re.search(r"requests=(\d+) cpu=([\d.]+)", out)
        if not m:
            raise RuntimeError(f"no stats from server: {out!r}")
        return int(m[1]), float(m[2]) / elapsed


def _wrk(duration: float, connections: int) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk: not installed, skipped (apt-get install wrk)")
        return
    server = _Server()
    try:
        out = subprocess.run(
            [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", server.url + "/"],
            capture_output=True,
            text=True,
            timeout=duration + 30,
            preexec_fn=lambda: _pin(CLIENT_CPU),
            check=True,
        ).stdout
    finally:
        requests, util = server.stop()
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    rps = float(m[1]) if m else float("nan")
    print(
        f"FaultServer under wrk -t1 -c{connections}: {rps:,.0f} req/s "
        f"(server answered {requests:,}, server CPU {util:.0%})"
        + (f"  [{errors[0]}]" if errors else "")
    )


def _aiohttp(duration: float, concurrency: int) -> None:
    server = _Server()
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--role",
                "client",
                "--url",
                server.url + "/",
                "--concurrency",
                str(concurrency),
                "--duration",
                str(duration),
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
            preexec_fn=lambda: _pin(CLIENT_CPU),
            check=True,
        ).stdout
    finally:
        requests, util = server.stop()
    m = re.search(r"rps=(\d+) cpu_util=([\d.]+)", out)
    if not m:
        raise RuntimeError(f"no stats from client: {out!r}")
    print(
        f"FaultServer under aiohttp ClientSession, concurrency {concurrency}: "
        f"{int(m[1]):,} req/s (client CPU {float(m[2]):.0%}, server CPU {util:.0%}, "
        f"server answered {requests:,} incl. warm-up)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per phase (3)")
    parser.add_argument("--concurrency", type=int, default=64, help="connections/tasks (64)")
    parser.add_argument("--role", choices=("main", "server", "client"), default="main")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(_run_server())
        return
    if args.role == "client":
        asyncio.run(_run_client(args.url, args.concurrency, args.duration))
        return
    import aiohttp

    print(
        f"python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, "
        f"{os.cpu_count()} CPUs; server on CPU {SERVER_CPU}, load on CPU {CLIENT_CPU}"
    )
    _wrk(args.duration, args.concurrency)
    _aiohttp(args.duration, args.concurrency)


if __name__ == "__main__":
    main()
