"""The parent process: starts the server, runs the clients interleaved, checks steal, aggregates."""

from __future__ import annotations

import bisect
import contextlib
import datetime
import importlib.metadata
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ._clients import CLIENTS, ClientSpec, missing_module
from ._procs import CLIENT_CPU, SERVER_CPU, RunSpec, client_main, pin, read_steal, server_main
from ._scenarios import Scenario

__all__ = ["BenchConfig", "Cell", "aggregate", "recovery_figures", "run_suite", "series"]

Progress = Callable[[str], None]

#: Width of the buckets of a timed run's success series, in seconds.
BUCKET = 0.1
#: "Full goodput" after an outage: a bucket with this share of the pre-outage success rate.
FULL_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class Cell:
    """One scenario at one concurrency, at its size, and the clients that run it.

    Attributes:
        scenario: The scenario, at the size of the mode (``--quick`` or full).
        concurrency: Workers of each client run.
        clients: Client names, ``raw`` first (the baseline of every ratio).
        runs: Rounds: every client runs once per round, in a new shuffled order.
        requests: Logical requests per run (count-based scenarios; 0 for timed ones).
        time_cap: Seconds after which a run's unfinished requests are cancelled.
    """

    scenario: Scenario
    concurrency: int
    clients: tuple[str, ...]
    runs: int
    requests: int
    time_cap: float


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to run.

    Attributes:
        cells: The cells, in the order they run.
        max_steal: A run during which more than this fraction of CPU time was stolen is repeated.
        max_repeats: Repeats per run at most, after which the last one is kept (and flagged).
        seed: Seed of the fault draws and the client order.
        quick: Whether this is ``--quick`` (recorded in the results).
    """

    cells: tuple[Cell, ...]
    max_steal: float = 0.05
    max_repeats: int = 2
    seed: int = 1
    quick: bool = False

    @property
    def clients(self) -> tuple[str, ...]:
        """Every client of any cell, in first-seen order."""
        return tuple(dict.fromkeys(name for cell in self.cells for name in cell.clients))


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    dists = ("aiohttp-resilient", "aiohttp", "aiohttp-retry", "backoff", "tenacity", "stamina")
    for dist in dists:
        out[dist] = _version(dist)
    return out


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def available_clients(names: Sequence[str]) -> tuple[list[ClientSpec], dict[str, str]]:
    """The clients of ``names`` that can run, and the skipped ones with the module they lack."""
    by_name = {c.name: c for c in CLIENTS}
    ready: list[ClientSpec] = []
    skipped: dict[str, str] = {}
    for name in names:
        spec = by_name[name]
        missing = missing_module(spec)
        if missing is None:
            ready.append(spec)
        else:
            skipped[name] = missing
    return ready, skipped


def _context() -> Any:
    # fork: a client process starts in milliseconds with aiohttp already imported (the parent
    # runs no event loop and no threads); spawn where fork does not exist.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class _ServerProcess:
    def __init__(self, ctx: Any) -> None:
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=server_main, args=(child,), daemon=True)
        self._proc.start()
        child.close()

    def _ask(self, message: tuple[Any, ...], timeout: float = 30.0) -> Any:
        self._conn.send(message)
        if not self._conn.poll(timeout):
            raise RuntimeError(f"the server process did not answer {message[0]!r}")
        return self._conn.recv()[1]

    def start(self, scenario: Scenario, seed: int, requests: int) -> str:
        url: str = self._ask(("start", scenario, seed, requests))
        return url

    def go(self, t0: float) -> None:
        """Start the scenario's timeline at ``t0`` (no answer comes back)."""
        self._conn.send(("go", t0))

    def stop(self) -> dict[str, Any]:
        counts: dict[str, Any] = self._ask(("stop",))
        return counts

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("quit",))
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


def _client_run(ctx: Any, spec: RunSpec, started: Callable[[float], None]) -> dict[str, Any]:
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=client_main, args=(child, spec), daemon=True)
    proc.start()
    child.close()
    try:
        # Bounded: the run cancels itself at time_cap; start-up and close get 30 s more.
        deadline = time.monotonic() + spec.time_cap + 30
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not conn.poll(left):
                raise RuntimeError(
                    f"client {spec.client} did not report within {spec.time_cap + 30}s"
                )
            message = conn.recv()
            if message[0] != "started":
                break
            started(message[1])
        status, payload = message
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    if status != "ok":
        raise RuntimeError(f"client {spec.client} failed: {payload}")
    result: dict[str, Any] = payload
    return result


def run_suite(config: BenchConfig, progress: Progress) -> dict[str, Any]:
    """Run every cell, client and round; returns the raw figures (see :func:`aggregate`)."""
    ctx = _context()
    ready, skipped = available_clients(config.clients)
    ready_names = {c.name for c in ready}
    parent_pin = pin(SERVER_CPU)  # the parent only waits: it shares the server's core
    rng = random.Random(config.seed)
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    total = sum(len(ready_names.intersection(cell.clients)) * cell.runs for cell in config.cells)
    done = 0
    began = time.monotonic()
    server = _ServerProcess(ctx)
    try:
        for cell in config.cells:
            scenario, concurrency = cell.scenario.name, cell.concurrency
            for round_ in range(cell.runs):
                order = [c for c in ready if c.name in cell.clients]
                rng.shuffle(order)
                for client in order:
                    done += 1
                    try:
                        record = _one_run(server, ctx, config, cell, client, rng)
                    except RuntimeError as exc:  # one client's failure does not end the suite
                        failures.append(
                            {
                                "scenario": scenario,
                                "concurrency": concurrency,
                                "client": client.name,
                                "error": str(exc),
                            }
                        )
                        progress(f"[{done}/{total}] {scenario} c={concurrency} FAILED: {exc}")
                        continue
                    record["round"] = round_
                    runs.append(record)
                    progress(
                        f"[{done}/{total} {time.monotonic() - began:5.1f}s] {scenario} "
                        f"c={concurrency} round {round_ + 1}/{cell.runs} {client.name}: "
                        f"{record['goodput']:,.0f} req/s, {record['success_rate']:.1%} ok, "
                        f"{record['cpu_us_per_request']:.0f} us CPU/req, "
                        f"steal {record['steal']:.1%}"
                        + (f" (repeated {record['repeats']}x)" if record["repeats"] else "")
                    )
    finally:
        server.close()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "start_method": ctx.get_start_method(),
        },
        "pinning": {
            "server": pin_description(SERVER_CPU),
            "client": pin_description(CLIENT_CPU),
            "parent": parent_pin,
        },
        "versions": _versions(),
        "config": {
            "quick": config.quick,
            "cells": [[cell.scenario.name, cell.concurrency] for cell in config.cells],
            "cell_sizes": [
                {
                    "scenario": cell.scenario.name,
                    "concurrency": cell.concurrency,
                    "clients": [name for name in cell.clients if name in ready_names],
                    "runs": cell.runs,
                    "requests": None if cell.scenario.timed else cell.requests,
                    "run_seconds": cell.scenario.run_seconds,
                    "time_cap": cell.time_cap,
                }
                for cell in config.cells
            ],
            "clients": [c.name for c in ready],
            "max_steal": config.max_steal,
            "seed": config.seed,
        },
        "client_configs": {c.name: c.config for c in CLIENTS if c.name in config.clients},
        "skipped": skipped,
        "scenarios": {cell.scenario.name: cell.scenario.description for cell in config.cells},
        "scenario_params": {cell.scenario.name: cell.scenario.params() for cell in config.cells},
        "wall_seconds": time.monotonic() - began,
        "failures": failures,
        "runs": runs,
    }


def pin_description(cpu: int) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    if cpu >= (os.cpu_count() or 1):
        return f"not pinned (no CPU {cpu})"
    return f"CPU {cpu}"


def series(successes: Sequence[float], t0: float, seconds: float) -> list[int]:
    """Successes per :data:`BUCKET` from ``t0`` for ``seconds`` (``successes`` sorted)."""
    out: list[int] = []
    low = bisect.bisect_left(successes, t0)
    for k in range(round(seconds / BUCKET)):
        high = bisect.bisect_left(successes, t0 + (k + 1) * BUCKET)
        out.append(high - low)
        low = high
    return out


def recovery_figures(
    successes: Sequence[float], t0: float, outage_start: float, outage_end: float, run_end: float
) -> dict[str, float | None]:
    """How a client came back after an outage, from the times of its successes (sorted).

    Returns:
        ``pre_outage_rate``: successes per second from ``t0`` to the outage's start;
        ``first_success_s``: seconds from the outage's end to the first success after it;
        ``full_goodput_s``: seconds from the outage's end to the end of the first
        :data:`BUCKET`-wide bucket after it (buckets aligned on the end) whose successes reach
        :data:`FULL_SHARE` of the pre-outage rate. Either is None when it did not happen
        before ``run_end``.
    """
    before = bisect.bisect_left(successes, outage_start) - bisect.bisect_left(successes, t0)
    pre_rate = before / (outage_start - t0) if outage_start > t0 else 0.0
    after = bisect.bisect_left(successes, outage_end)
    first = None
    if after < len(successes) and successes[after] <= run_end:
        first = successes[after] - outage_end
    full = None
    need = FULL_SHARE * pre_rate * BUCKET
    low = after
    for k in range(int((run_end - outage_end) / BUCKET)):
        high = bisect.bisect_left(successes, outage_end + (k + 1) * BUCKET)
        if pre_rate > 0 and high - low >= need:
            full = (k + 1) * BUCKET
            break
        low = high
    return {"pre_outage_rate": pre_rate, "first_success_s": first, "full_goodput_s": full}


def _one_run(
    server: _ServerProcess,
    ctx: Any,
    config: BenchConfig,
    cell: Cell,
    client: ClientSpec,
    rng: random.Random,
) -> dict[str, Any]:
    scenario = cell.scenario
    steals: list[float] = []
    repeats = 0
    for attempt in range(config.max_repeats + 1):
        repeats = attempt
        url = server.start(scenario, rng.randrange(2**32), cell.requests)
        before = read_steal()
        try:
            spec = RunSpec(
                client.name,
                url,
                cell.concurrency,
                cell.requests,
                cell.time_cap,
                run_seconds=scenario.run_seconds,
                post_every=scenario.post_every,
            )
            result = _client_run(ctx, spec, server.go)
        finally:
            after = read_steal()
            counts = server.stop()
        if "error" in counts:
            raise RuntimeError(f"{client.name}: {counts['error']}")
        steal = 0.0
        if before is not None and after is not None and after[1] > before[1]:
            steal = (after[0] - before[0]) / (after[1] - before[1])
        steals.append(steal)
        if steal <= config.max_steal:
            break
    successes: list[float] = result.pop("successes", [])
    ok = result["ok"]
    completed = ok + result["failed"]
    issued = max(result["issued"], 1)
    server_requests = counts.get("requests", 0)
    counted_ok = result.get("ok_in_run", ok)
    record: dict[str, Any] = {
        "scenario": scenario.name,
        "concurrency": cell.concurrency,
        "client": client.name,
        **result,
        "goodput": counted_ok / result["elapsed"] if result["elapsed"] > 0 else 0.0,
        "success_rate": ok / completed if completed else 0.0,
        "server_attempts_per_request": server_requests / issued,
        "server_attempts_per_success": server_requests / ok if ok else None,
        "library_attempts_per_request": (
            None
            if result["library_attempts"] is None
            else result["library_attempts"] / max(completed, 1)
        ),
        "cpu_us_per_request": result["cpu"] / max(completed, 1) * 1e6,
        "server": counts,
        "steal": steals[-1],
        "steal_history": steals,
        "repeats": repeats,
        "steal_exceeded": steals[-1] > config.max_steal,
    }
    if scenario.run_seconds is not None:
        t0 = result["t0"]
        run_end = t0 + scenario.run_seconds
        record["series"] = series(successes, t0, scenario.run_seconds)
        windows = [(o["start"], o["end"]) for o in counts.get("outages", [])]
        windows += [(d[0], d[1]) for d in counts.get("downs", [])]
        record["events"] = [[start - t0, end - t0] for start, end in windows]
        outages = counts.get("outages", [])
        if outages:
            outage = outages[0]
            record["outage_attempts"] = outage["requests"]
            record.update(recovery_figures(successes, t0, outage["start"], outage["end"], run_end))
    if scenario.post_every:
        record["posts_twice"] = counts.get("posts_twice", 0)
    return record


# -- aggregation -------------------------------------------------------------------------------

#: The figures summarised per client and cell: median, min, max over the rounds.
FIGURES = (
    "goodput",
    "goodput_ratio",
    "goodput_vs_hand_loop",
    "success_rate",
    "server_attempts_per_request",
    "server_attempts_per_success",
    "library_attempts_per_request",
    "p50",
    "p99",
    "p999",
    "p99_vs_hand_loop",
    "max",
    "cpu_us_per_request",
    "cpu_ratio",
    "peak_rss_mib",
    "steal",
    "outage_attempts",
    "outage_attempts_vs_hand_loop",
    "pre_outage_rate",
    "first_success_s",
    "full_goodput_s",
)

#: Counts summed over the rounds.
SUMS = ("planned", "unfinished", "posts", "posts_failed", "gets_failed", "posts_twice")


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _ratio(mine: float | None, theirs: float | None) -> float | None:
    return mine / theirs if mine is not None and theirs else None


def aggregate(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary per (scenario, concurrency, client): each figure's median, min and max, and
    the ratios to ``raw`` and to ``hand-loop`` taken within the same round."""
    runs: list[dict[str, Any]] = raw["runs"]

    def by_round(client: str) -> dict[tuple[str, int, int], dict[str, Any]]:
        return {
            (r["scenario"], r["concurrency"], r["round"]): r for r in runs if r["client"] == client
        }

    baseline, hand_loop = by_round("raw"), by_round("hand-loop")
    for r in runs:
        key = (r["scenario"], r["concurrency"], r["round"])
        base, loop = baseline.get(key, {}), hand_loop.get(key, {})
        r["goodput_ratio"] = _ratio(r["goodput"], base.get("goodput"))
        r["cpu_ratio"] = _ratio(r["cpu_us_per_request"], base.get("cpu_us_per_request"))
        r["goodput_vs_hand_loop"] = _ratio(r["goodput"], loop.get("goodput"))
        r["p99_vs_hand_loop"] = _ratio(r["p99"], loop.get("p99"))
        r["outage_attempts_vs_hand_loop"] = _ratio(
            r.get("outage_attempts"), loop.get("outage_attempts")
        )
    summaries: list[dict[str, Any]] = []
    order = {name: i for i, name in enumerate(raw["config"]["clients"])}
    for scenario, concurrency in raw["config"]["cells"]:
        cell = [r for r in runs if r["scenario"] == scenario and r["concurrency"] == concurrency]
        for client in sorted({r["client"] for r in cell}, key=lambda n: order.get(n, 99)):
            mine = [r for r in cell if r["client"] == client]
            summary: dict[str, Any] = {
                "scenario": scenario,
                "concurrency": concurrency,
                "client": client,
                "runs": len(mine),
                "capped_runs": sum(1 for r in mine if r["capped"]),
                "steal_exceeded_runs": sum(1 for r in mine if r["steal_exceeded"]),
            }
            # Pooled over the rounds: rare events (a give-up at p**attempts) need every request.
            issued = sum(r["issued"] for r in mine)
            ok = sum(r["ok"] for r in mine)
            completed = sum(r["ok"] + r["failed"] for r in mine)
            server_requests = sum(r["server"].get("requests", 0) for r in mine)
            summary["requests"] = issued
            summary["successes"] = ok
            summary["failures"] = sum(r["failed"] for r in mine)
            summary["pooled_success_rate"] = ok / completed if completed else None
            summary["pooled_server_attempts_per_request"] = (
                server_requests / issued if issued else None
            )
            summary["pooled_server_attempts_per_success"] = server_requests / ok if ok else None
            for name in SUMS:
                values = [r[name] for r in mine if r.get(name) is not None]
                summary[name] = sum(values) if values else None
            if any("outage_attempts" in r for r in mine):
                # Rounds in which the client never (fully) came back before the run ended.
                summary["no_first_success_runs"] = sum(
                    1 for r in mine if r.get("first_success_s") is None
                )
                summary["no_full_goodput_runs"] = sum(
                    1 for r in mine if r.get("full_goodput_s") is None
                )
            for figure in FIGURES:
                summary[figure] = _stats([r[figure] for r in mine if r.get(figure) is not None])
            summaries.append(summary)
    return summaries
