"""What `BreakerPolicy.patience` buys and costs: GETs lost to a server restart of D seconds
under load, against the time a dead host holds a crawl's workers.

Restart: `aiohttp-resilient serve` (pinned to CPU 0) is killed 1 s into a run and started again
on the same port D seconds later (it listens some 0.3-0.8 s after that: a process's start-up is
part of a real restart, and the downtime printed includes it), while 32 tasks of one client
process (pinned to CPU 1) send GETs through `resilient_session()` for 1 + D + 3 s. Lost = GETs
that raised (``--show-lost`` prints the first two).

Dead host: 16 workers each fetch 10 URLs of a port where nothing listens, one after another, as a
crawl whose input holds 160 dead URLs; the figure is the wall time until all have failed.

    python benchmarks/restart_patience.py            # patience 1, 2.5, 3 (default), 5, 10 s

Loopback only; every run is bounded (60 s of client time at most).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from aiohttp_resilient import BreakerPolicy, HealthPolicy, resilient_session

CLIENT_CPU = 1
SERVER_CPU = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    command = [
        str(Path(sys.executable).with_name("aiohttp-resilient")),
        "serve",
        "--port",
        str(port),
        "--service-time-ms",
        "5",
        "--capacity",
        "1000",
        "--stats-interval",
        "3600",
        "--duration",
        "60",
    ]
    if hasattr(os, "sched_setaffinity"):
        command = ["taskset", "-c", str(SERVER_CPU), *command]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line.startswith(b"serving on"):
        raise RuntimeError(f"the server did not start: {line!r}")
    return server


async def get(session: aiohttp.ClientSession, url: str) -> Exception | None:
    """One GET, its body read: the error it raised, or ``None``."""
    try:
        async with session.get(url) as resp:
            await resp.read()
            resp.raise_for_status()
    except aiohttp.ClientError as exc:
        return exc
    return None


async def restart_run(
    patience: float, down: float, show_lost: bool = False
) -> tuple[int, int, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/r"
    server = start_server(port)
    ok = lost = 0
    downtime = 0.0
    health = HealthPolicy(breaker=BreakerPolicy(patience=patience))
    stop_at = time.monotonic() + 1.0 + down + 3.0
    try:
        async with resilient_session(health=health) as session:

            async def worker() -> None:
                nonlocal ok, lost
                while time.monotonic() < stop_at:
                    error = await get(session, url)
                    if error is None:
                        ok += 1
                        continue
                    lost += 1
                    if lost <= 2 and show_lost:
                        print(f"lost: {error!r}"[:600], file=sys.stderr)

            async def restart() -> None:
                nonlocal server, downtime
                await asyncio.sleep(1.0)
                killed = time.monotonic()
                server.send_signal(signal.SIGKILL)
                server.wait()
                await asyncio.sleep(down)
                server = await asyncio.to_thread(start_server, port)
                downtime = time.monotonic() - killed  # the new process's start-up included

            await asyncio.wait_for(
                asyncio.gather(restart(), *(worker() for _ in range(32))), timeout=60
            )
    finally:
        server.kill()
        server.wait()
    return ok, lost, downtime


async def dead_host_run(patience: float) -> float:
    url = f"http://127.0.0.1:{free_port()}/x"
    health = HealthPolicy(breaker=BreakerPolicy(patience=patience))
    started = time.monotonic()
    async with resilient_session(health=health) as session:

        async def worker() -> None:
            for _ in range(10):
                await get(session, url)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(16))), timeout=60)
    return time.monotonic() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patience", default="1,2.5,3,5,10")
    parser.add_argument("--down", default="0.5,1.2,2,3")
    parser.add_argument("--show-lost", action="store_true", help="print the first lost GETs")
    args = parser.parse_args()
    logging.getLogger("aiohttp_resilient").setLevel(logging.ERROR)  # each give-up says WARNING
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {CLIENT_CPU})
    patiences = [float(p) for p in args.patience.split(",")]
    downs = [float(d) for d in args.down.split(",")]
    print("GETs lost of sent (the server's downtime, start-up included) per restart; the time 160")
    print("dead URLs took 16 workers")
    print("| patience | " + " | ".join(f"{d:g} s + start-up" for d in downs) + " | dead URLs |")
    print("|---|" + "---|" * (len(downs) + 1))
    for patience in patiences:
        cells = []
        for down in downs:
            ok, lost, downtime = await restart_run(patience, down, args.show_lost)
            cells.append(f"{lost} of {ok + lost} ({downtime:.1f} s)")
        dead = await dead_host_run(patience)
        print(f"| {patience:g} s | " + " | ".join(cells) + f" | {dead:.1f} s |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
