"""The ``fleet`` scenario (issue 19): client processes sharing one host's politeness through a
Redis store, against the same processes without one.

Each client process is ``_fleet_client.py`` (run by file path): one
``resilient_session(limit_per_host=8)`` (with ``store=`` a Redis URL, or none), its tasks
fetching one URL until their requests are done or their time is up; it prints one JSON line.
The scenario starts its own redis-server on a free loopback port (stopped by its PID) and a
:class:`FaultServer` that serves 8 requests at once and answers 503 past that, and counts the
most in service at once on the server's side. ``benchmarks/fleet.py`` runs its other
scenarios (rate, cost, ops) with the same client processes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from ...testing import FaultServer
from ...testing._redis import REDIS_SERVER, redis_server
from . import _fleet_client

__all__ = [
    "CAP",
    "PROCS",
    "WORKERS",
    "capacity_run",
    "fleet_markdown",
    "fleet_targets",
    "fleet_terminal",
    "run_fleet",
    "spawn_fleet",
    "unavailable",
]

#: Client processes, tasks per process, and ``limit_per_host`` (the host's capacity too).
PROCS: Final = 4
WORKERS: Final = 32
CAP: Final = _fleet_client.CAP
#: Seconds the host holds each request.
SERVICE_TIME: Final = 0.01
#: GETs per process: full run, ``--quick``.
REQUESTS: Final = 600
QUICK_REQUESTS: Final = 150
#: Seconds a store call may take in the client processes (the default's 100 ms).
STORE_TIMEOUT: Final = 0.1
#: Seconds a fleet of client processes may take in all before it is given up.
FLEET_CAP: Final = 120.0
_CLIENT: Final = Path(__file__).with_name("_fleet_client.py")

DESCRIPTION: Final = (
    f"{PROCS} client processes x {WORKERS} tasks, each process a "
    f"resilient_session(limit_per_host={CAP}), against a host serving {CAP} requests at once "
    f"({SERVICE_TIME * 1e3:g} ms each) that answers 503 past that; without a store and with "
    'store="redis://..." (its own redis-server on loopback); processes not pinned'
)


def unavailable() -> str | None:
    """Why the scenario cannot run here (redis-server or redis-py missing), or None."""
    if not os.access(REDIS_SERVER, os.X_OK):
        return "redis-server is not installed (Debian package redis-server)"
    if importlib.util.find_spec("redis") is None:
        return 'redis-py is not installed (pip install "aiohttp-resilient[redis]")'
    return None


# -- the client processes ----------------------------------------------------------------------


async def spawn_fleet(
    url: str,
    store_url: str | None,
    procs: int,
    workers: int,
    requests: int,
    seconds: float,
    *,
    timeout: float = STORE_TIMEOUT,
) -> list[dict[str, Any]]:
    """Run ``procs`` client processes at once; each one's result (``_fleet_client.py``)."""
    args = [url, store_url or "-", str(workers), str(requests), str(seconds), str(timeout)]
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(_CLIENT), *args, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(procs)
    ]
    try:
        outs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in started)), FLEET_CAP
        )
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outs]


# -- the scenario ------------------------------------------------------------------------------


async def capacity_run(store_url: str | None, requests: int) -> dict[str, Any]:
    """The fleet against a host of capacity :data:`CAP`: the most in service at once and the
    503s (counted by the server), successes and failures (by the clients), wall time."""
    async with FaultServer(record=False, capacity=CAP, service_time=SERVICE_TIME) as server:
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, server.in_service)
                await asyncio.sleep(0.001)

        watcher = asyncio.ensure_future(watch())
        t0 = time.monotonic()
        try:
            results = await spawn_fleet(str(server.url), store_url, PROCS, WORKERS, requests, 60)
        finally:
            watcher.cancel()
        wall = time.monotonic() - t0
        refused = server.shed_counts.get("capacity", 0)
    ok = sum(int(r["ok"]) for r in results)
    return {
        "store": store_url is not None,
        "requests": PROCS * requests,
        "ok": ok,
        "failed": sum(int(r["failed"]) for r in results),
        "peak": peak,
        "refused_503": refused,
        "wall_seconds": wall,
        "goodput": ok / wall if wall > 0 else 0.0,
        "fallbacks": sum(int(r["fallbacks"]) for r in results),
    }


def run_fleet(*, quick: bool, runs: int, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The scenario's rounds, each without and with the store; None (said why) when it
    cannot run here."""
    why = unavailable()
    if why is not None:
        log(f"fleet skipped: {why}")
        return None
    requests = QUICK_REQUESTS if quick else REQUESTS
    rounds: list[dict[str, Any]] = []
    with redis_server() as (port, _):
        store_url = f"redis://127.0.0.1:{port}/0"
        for round_ in range(runs):
            for url in (None, store_url):
                run = asyncio.run(capacity_run(url, requests))
                run["round"] = round_
                rounds.append(run)
                log(
                    f"fleet round {round_ + 1}/{runs} {'store' if url else 'no store'}: "
                    f"{run['ok']}/{run['requests']} ok, most in service {run['peak']}, "
                    f"{run['refused_503']} answered 503, {run['wall_seconds']:.2f} s"
                )
    return {"description": DESCRIPTION, "requests_per_process": requests, "runs": rounds}


# -- the report --------------------------------------------------------------------------------

COLUMNS: Final = (
    "client",
    "success",
    "most in service",
    "answered 503",
    "goodput req/s",
    "wall s",
    "store fell over",
)


def _span(values: list[float], spec: str) -> str:
    low, high = min(values), max(values)
    return f"{low:{spec}}" if f"{low:{spec}}" == f"{high:{spec}}" else f"{low:{spec}}-{high:{spec}}"


def _rows(result: dict[str, Any]) -> list[list[str]]:
    rows = []
    for store in (False, True):
        runs = [r for r in result["runs"] if r["store"] is store]
        if not runs:
            continue
        asked = sum(r["requests"] for r in runs)
        rows.append(
            [
                "store" if store else "no store",
                f"{sum(r['ok'] for r in runs) / asked:.1%}",
                _span([r["peak"] for r in runs], "d"),
                _span([r["refused_503"] for r in runs], "d"),
                _span([r["goodput"] for r in runs], ",.0f"),
                _span([r["wall_seconds"] for r in runs], ".2f"),
                _span([r["fallbacks"] for r in runs], "d"),
            ]
        )
    return rows


def fleet_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 19's targets: with the store, the host is never asked more than :data:`CAP` at
    once, and every request succeeds. The host serves at most CAP and answers 503 to one more
    at once, so its 503s are what counts the fleet's overruns (its "most in service" cannot
    pass CAP, store or not)."""
    runs = [r for r in result["runs"] if r["store"]]
    if not runs:
        return []
    refused = sum(r["refused_503"] for r in runs)
    alone = [r["refused_503"] for r in result["runs"] if not r["store"]]
    asked, ok = sum(r["requests"] for r in runs), sum(r["ok"] for r in runs)
    return [
        {
            "target": f"fleet: never more than {CAP} asked at once with the store (0 answered 503)",
            "measured": f"{refused} answered 503, most in service {max(r['peak'] for r in runs)}"
            + (f" (without the store: {_span(alone, 'd')} answered 503)" if alone else ""),
            "verdict": "held" if refused == 0 else "NOT held",
        },
        {
            "target": "fleet: 100% success with the store",
            "measured": f"{ok}/{asked} ({ok / asked:.1%})",
            "verdict": "held" if ok == asked else "NOT held",
        },
    ]


def fleet_terminal(result: dict[str, Any]) -> str:
    """The scenario's fixed-width table."""
    rows = _rows(result)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(COLUMNS)]
    lines = [f"\nfleet: {result['description']}"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def fleet_markdown(result: dict[str, Any]) -> list[str]:
    """The scenario's section of ``summary.md``."""
    rounds = len({r["round"] for r in result["runs"]})
    lines = ["", "### fleet", "", result["description"], ""]
    lines += [
        f"{rounds} round{'s' if rounds != 1 else ''} x {PROCS} processes x "
        f"{result['requests_per_process']} requests; `most in service` and `answered 503` "
        "counted by the server, `success` pooled over the rounds",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(result)]
    return lines
