"""The parent process: starts the server, runs the clients interleaved, checks steal, aggregates."""

from __future__ import annotations

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
from ._scenarios import SCENARIOS

__all__ = ["BenchConfig", "aggregate", "run_suite"]

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to run.

    Attributes:
        cells: (scenario name, concurrency) pairs.
        clients: Client names, ``raw`` first (the baseline of every ratio).
        runs: Rounds: every client runs once per round, in a new shuffled order.
        requests: Logical requests per run.
        time_cap: Seconds after which a run's unfinished requests are cancelled.
        max_steal: A run during which more than this fraction of CPU time was stolen is repeated.
        max_repeats: Repeats per run at most, after which the last one is kept (and flagged).
        seed: Seed of the fault draws and the client order.
    """

    cells: tuple[tuple[str, int], ...]
    clients: tuple[str, ...]
    runs: int
    requests: int
    time_cap: float
    max_steal: float = 0.05
    max_repeats: int = 2
    seed: int = 1


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("aiohttp-resilient", "aiohttp", "aiohttp-retry", "backoff", "tenacity"):
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

    def start(self, scenario: str, seed: int, requests: int) -> str:
        url: str = self._ask(("start", SCENARIOS[scenario], seed, requests))
        return url

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


def _client_run(ctx: Any, spec: RunSpec) -> dict[str, Any]:
    conn, child = ctx.Pipe()
    proc = ctx.Process(target=client_main, args=(child, spec), daemon=True)
    proc.start()
    child.close()
    try:
        # Bounded: the run cancels itself at time_cap; start-up and close get 30 s more.
        if not conn.poll(spec.time_cap + 30):
            raise RuntimeError(f"client {spec.client} did not report within {spec.time_cap + 30}s")
        status, payload = conn.recv()
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
    parent_pin = pin(SERVER_CPU)  # the parent only waits: it shares the server's core
    rng = random.Random(config.seed)
    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    total = len(config.cells) * config.runs * len(ready)
    done = 0
    began = time.monotonic()
    server = _ServerProcess(ctx)
    try:
        for scenario, concurrency in config.cells:
            for round_ in range(config.runs):
                order = list(ready)
                rng.shuffle(order)
                for client in order:
                    done += 1
                    try:
                        record = _one_run(server, ctx, config, scenario, concurrency, client, rng)
                    except RuntimeError as exc:  # one client's failure does not end the suite
                        failures.append(
                            {"scenario": scenario, "concurrency": concurrency, "error": str(exc)}
                        )
                        progress(f"[{done}/{total}] {scenario} c={concurrency} FAILED: {exc}")
                        continue
                    record["round"] = round_
                    runs.append(record)
                    progress(
                        f"[{done}/{total} {time.monotonic() - began:5.1f}s] {scenario} "
                        f"c={concurrency} round {round_ + 1}/{config.runs} {client.name}: "
                        f"{record['goodput']:,.0f} req/s, "
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
            "cells": [list(c) for c in config.cells],
            "clients": [c.name for c in ready],
            "runs": config.runs,
            "requests": config.requests,
            "time_cap": config.time_cap,
            "max_steal": config.max_steal,
            "seed": config.seed,
        },
        "client_configs": {c.name: c.config for c in CLIENTS if c.name in config.clients},
        "skipped": skipped,
        "scenarios": {name: SCENARIOS[name].description for name, _ in config.cells},
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


def _one_run(
    server: _ServerProcess,
    ctx: Any,
    config: BenchConfig,
    scenario: str,
    concurrency: int,
    client: ClientSpec,
    rng: random.Random,
) -> dict[str, Any]:
    steals: list[float] = []
    repeats = 0
    for attempt in range(config.max_repeats + 1):
        repeats = attempt
        url = server.start(scenario, rng.randrange(2**32), config.requests)
        before = read_steal()
        try:
            spec = RunSpec(client.name, url, concurrency, config.requests, config.time_cap)
            result = _client_run(ctx, spec)
        finally:
            after = read_steal()
            counts = server.stop()
        steal = 0.0
        if before is not None and after is not None and after[1] > before[1]:
            steal = (after[0] - before[0]) / (after[1] - before[1])
        steals.append(steal)
        if steal <= config.max_steal:
            break
    completed = result["ok"] + result["failed"]
    issued = max(result["issued"], 1)
    record: dict[str, Any] = {
        "scenario": scenario,
        "concurrency": concurrency,
        "client": client.name,
        **result,
        "goodput": result["ok"] / result["elapsed"] if result["elapsed"] > 0 else 0.0,
        "success_rate": result["ok"] / completed if completed else 0.0,
        "server_attempts_per_request": counts.get("requests", 0) / issued,
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
    return record


# -- aggregation -------------------------------------------------------------------------------

#: The figures summarised per client and cell: median, min, max over the rounds.
FIGURES = (
    "goodput",
    "goodput_ratio",
    "success_rate",
    "server_attempts_per_request",
    "library_attempts_per_request",
    "p50",
    "p99",
    "max",
    "cpu_us_per_request",
    "cpu_ratio",
    "peak_rss_mib",
    "steal",
)


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary per (scenario, concurrency, client): each figure's median, min and max, and
    the ratios to ``raw`` taken within the same round."""
    runs: list[dict[str, Any]] = raw["runs"]
    baseline = {
        (r["scenario"], r["concurrency"], r["round"]): r for r in runs if r["client"] == "raw"
    }
    for r in runs:
        base = baseline.get((r["scenario"], r["concurrency"], r["round"]))
        r["goodput_ratio"] = r["goodput"] / base["goodput"] if base and base["goodput"] else None
        r["cpu_ratio"] = (
            r["cpu_us_per_request"] / base["cpu_us_per_request"]
            if base and base["cpu_us_per_request"]
            else None
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
            completed = sum(r["ok"] + r["failed"] for r in mine)
            summary["requests"] = issued
            summary["failures"] = sum(r["failed"] for r in mine)
            summary["pooled_success_rate"] = (
                sum(r["ok"] for r in mine) / completed if completed else None
            )
            summary["pooled_server_attempts_per_request"] = (
                sum(r["server"].get("requests", 0) for r in mine) / issued if issued else None
            )
            for figure in FIGURES:
                summary[figure] = _stats([r[figure] for r in mine if r.get(figure) is not None])
            summaries.append(summary)
    return summaries
