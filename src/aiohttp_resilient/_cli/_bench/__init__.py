"""``aiohttp-resilient bench``: throughput under injected faults, beside the alternatives.

Private: the command line is the interface. The server (a :class:`FaultServer` on loopback) runs in
one process pinned to CPU 0, each client run in a fresh process pinned to CPU 1; the parent runs
the clients interleaved in a shuffled order per round, repeats runs that lost CPU to steal, and
writes ``results.json`` (every figure), ``summary.md``, ``plot.png`` and ``timeline.png`` to
``--out``.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import _cost, _fleet
from ._clients import CLIENTS, OPT_IN_CLIENTS, TAIL_CLIENTS
from ._report import (
    FULL_RUN_ONLY,
    evaluate_targets,
    full_run_command,
    markdown,
    plot_available,
    terminal_tables,
    write_json,
    write_plot,
    write_timeline_plot,
)
from ._runner import BenchConfig, Cell, aggregate, available_clients, run_suite
from ._scenarios import (
    FAULT_CELLS,
    HEALTH_KINDS,
    QUICK_FAULT_CELLS,
    SCENARIOS,
    Scenario,
    scenarios,
)

__all__ = ["add_parser", "run"]

#: (rounds, requests per run, time cap per run in seconds) of each mode, for the per-request
#: fault scenarios; the host-health scenarios carry their own sizes (see ``_scenarios``).
QUICK = (3, 1000, 1.0)
FULL = (3, 3000, 4.0)
#: ``--quick`` runs each host-health cell once, with these clients only: a timed run costs
#: seconds, not milliseconds. Ours, the naive loop that retries at once, and the two backing-off
#: alternatives whose waits differ most (backoff draws full jitter as ours does; stamina adds
#: its jitter to the exponential wait).
QUICK_HEALTH_RUNS = 1
QUICK_HEALTH_CLIENTS = ("raw", "resilient", "hand-loop", "stamina-tuned", "backoff-tuned")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _names(choices: list[str], what: str) -> Callable[[str], list[str]]:
    def convert(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(choices)}"
            )
        return names

    return convert


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``bench`` subcommand to the ``aiohttp-resilient`` parser."""
    bench = commands.add_parser(
        "bench",
        help="benchmark aiohttp clients under injected faults and sick hosts, against the "
        "alternatives",
        description=(
            "Run raw aiohttp, aiohttp-resilient and the alternatives (aiohttp-retry, backoff, "
            "tenacity, stamina, a hand-written loop) against the project's fault server on "
            "loopback, interleaved, and write results.json, summary.md, plot.png and "
            "timeline.png to --out. Server pinned to CPU 0, clients to CPU 1."
        ),
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help=f"FIN 0%% and 20%% at concurrency 16, {QUICK[1]} requests x {QUICK[0]} rounds; "
        f"small versions of the host-health scenarios, 1 round, clients "
        f"{', '.join(QUICK_HEALTH_CLIENTS)} (unless --clients)",
    )
    bench.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="output folder (bench-results)"
    )
    bench.add_argument(
        "--scenarios",
        type=_names(list(SCENARIOS), "scenario"),
        metavar="A,B",
        # argparse expands %-formats in help: the names' percent signs must be doubled.
        help=f"scenarios to run, comma-separated: {', '.join(SCENARIOS).replace('%', '%%')}",
    )
    bench.add_argument(
        "--concurrency",
        type=lambda t: [_positive_int(x) for x in t.split(",")],
        metavar="N,M",
        help="concurrencies: with --scenarios, of every one named (default: a host-health "
        "scenario's own, else 16,64,256); without, of the per-request fault cells",
    )
    bench.add_argument(
        "--clients",
        type=_names([c.name for c in CLIENTS], "client"),
        metavar="A,B",
        help="clients, comma-separated (all but the hedging ones, which the tail scenario "
        f"runs): {', '.join(c.name for c in CLIENTS)}",
    )
    bench.add_argument(
        "--runs", type=_positive_int, help="rounds per cell (3; 1 for --quick's host-health cells)"
    )
    bench.add_argument(
        "--requests",
        type=_positive_int,
        help="logical requests per run (count-based scenarios; brownout and restart are timed)",
    )
    bench.add_argument(
        "--time-cap",
        type=_positive_float,
        metavar="SECONDS",
        help="cancel a count-based run after this long",
    )
    bench.add_argument("--seed", type=int, default=1, help="seed of faults and client order (1)")
    bench.add_argument(
        "--cost",
        action="store_true",
        help="instead of the fault runs: instructions per sequential GET of each --configs "
        "configuration, counted with callgrind (needs valgrind), as ratios to raw aiohttp, "
        f"with the issue's targets; --requests sets N2-N1 ({_cost.COST_REQUESTS}); "
        "writes cost.json and cost.md",
    )
    bench.add_argument(
        "--configs",
        type=_names(list(_cost.CONFIG_NAMES), "configuration"),
        metavar="A,B",
        help=f"--cost configurations (all): {', '.join(_cost.CONFIG_NAMES)}",
    )
    bench.add_argument(
        "--no-plot", action="store_true", help="do not write plot.png and timeline.png"
    )
    bench.set_defaults(parser=bench)


def _config(args: argparse.Namespace) -> BenchConfig:
    quick: bool = args.quick
    runs, requests, cap = QUICK if quick else FULL
    table = scenarios(quick=quick)
    pairs: list[tuple[str, int]]
    if args.scenarios:
        sweep = [16] if quick else [16, 64, 256]
        pairs = []
        for name in args.scenarios:
            if table[name].kind == "fleet":
                continue  # its own processes and Redis: run by _fleet, beside the runner's cells
            own = table[name].concurrency
            chosen = args.concurrency or ([own] if own is not None else sweep)
            pairs.extend((name, c) for c in chosen)
    else:
        pairs = list(QUICK_FAULT_CELLS if quick else FAULT_CELLS)
        if args.concurrency:
            pairs = [(s, c) for s, _ in pairs for c in args.concurrency]
        # Host-health scenarios are defined at their own concurrency: --concurrency leaves them.
        pairs += [(s.name, s.concurrency or 64) for s in table.values() if s.kind in HEALTH_KINDS]
    clients = list(args.clients or [c.name for c in CLIENTS if c.name not in OPT_IN_CLIENTS])
    if "raw" not in clients:
        clients = ["raw", *clients]  # the baseline of every ratio
    cells = [
        _cell(table[name], c, clients, args, quick=quick, mode=(runs, requests, cap))
        for name, c in dict.fromkeys(pairs)
    ]
    return BenchConfig(cells=tuple(cells), seed=args.seed, quick=quick)


def _cell(
    scenario: Scenario,
    concurrency: int,
    clients: list[str],
    args: argparse.Namespace,
    *,
    quick: bool,
    mode: tuple[int, int, float],
) -> Cell:
    runs, requests, cap = mode
    health = scenario.kind in HEALTH_KINDS
    if quick and health:
        runs = QUICK_HEALTH_RUNS
        if not args.clients:
            clients = [name for name in clients if name in QUICK_HEALTH_CLIENTS]
    if scenario.kind == "tail" and not args.clients:
        clients = list(TAIL_CLIENTS)
    if scenario.run_seconds is not None:
        # Timed: the run lasts run_seconds; what is still in flight gets the grace time.
        requests, cap = 0, scenario.run_seconds + scenario.grace
    else:
        requests = args.requests or scenario.requests or requests
        cap = args.time_cap or scenario.time_cap or cap
    return Cell(
        scenario=scenario,
        concurrency=concurrency,
        clients=tuple(clients),
        runs=args.runs or runs,
        requests=requests,
        time_cap=cap,
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; returns the exit status."""
    if args.cost:
        return _run_cost(args)
    config = _config(args)
    _, skipped = available_clients(config.clients)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    err = sys.stderr
    planned = sum(
        cell.runs * sum(1 for name in cell.clients if name not in skipped) for cell in config.cells
    )
    print(
        f"aiohttp-resilient bench: {len(config.cells)} cell(s), {planned} client run(s); "
        f"writing to {out}/",
        file=err,
        flush=True,
    )
    if skipped:
        print(
            "skipped (not installed): "
            + ", ".join(f"{n} (needs {m})" for n, m in skipped.items())
            + '; pip install "aiohttp-resilient[bench]" adds them',
            file=err,
            flush=True,
        )

    def log(line: str) -> None:
        print(line, file=err, flush=True)

    raw = run_suite(config, log)
    summaries = aggregate(raw)
    targets = evaluate_targets(summaries, raw["scenario_params"], quick=config.quick)
    fleet = None
    if "fleet" in (args.scenarios or ()):
        rounds = args.runs or (QUICK_HEALTH_RUNS if config.quick else FULL[0])
        fleet = _fleet.run_fleet(quick=config.quick, runs=rounds, log=log)
        raw["fleet"] = fleet if fleet is not None else {"skipped": _fleet.unavailable()}
        targets += [] if fleet is None else _fleet.fleet_targets(fleet)
    write_json(out / "results.json", raw, summaries, targets)
    for failure in raw["failures"]:
        print(f"failed run: {failure['scenario']} c={failure['concurrency']}: {failure['error']}")
    (out / "summary.md").write_text(markdown(raw, summaries, targets), encoding="utf-8")
    print(terminal_tables(raw, summaries))
    if fleet is not None:
        print(_fleet.fleet_terminal(fleet))
    print("\nTargets:")
    for t in targets:
        why = f" ({t['why']})" if "why" in t else ""
        print(f"  {t['verdict']:<13} {t['target']}: {t['measured']}{why}")
    print(_targets_line(targets))
    written = ["results.json", "summary.md"]
    if args.no_plot:
        pass
    elif not plot_available():
        print(
            "plot.png skipped: matplotlib is not installed "
            '(pip install "aiohttp-resilient[bench]")',
            file=err,
        )
    else:
        if write_plot(out / "plot.png", summaries):
            written.append("plot.png")
        if write_timeline_plot(out / "timeline.png", raw):
            written.append("timeline.png")
    print(f"\nwrote {', '.join(str(out / name) for name in written)}")
    return 1 if raw["failures"] else 0


def _targets_line(targets: list[dict[str, Any]]) -> str:
    """The count of each verdict, and the command that judges what this run could not."""
    counts = collections.Counter(t["verdict"] for t in targets)
    line = "Result: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    command = full_run_command(targets)
    if command is not None:
        line += (
            f".\n{counts[FULL_RUN_ONLY]} target(s) need cells longer than --quick's; "
            f"to judge them (several minutes per scenario): {command}"
        )
    return line


def _run_cost(args: argparse.Namespace) -> int:
    err = sys.stderr
    print(
        f"aiohttp-resilient bench --cost: callgrind, writing to {args.out}/", file=err, flush=True
    )
    result = _cost.run_cost(
        args.out,
        configs=args.configs,
        requests=args.requests or _cost.COST_REQUESTS,
        wall_rounds=args.runs or _cost.WALL_ROUNDS,
        log=lambda line: print(line, file=err, flush=True),
    )
    if result is None:  # valgrind missing: said why
        return 0
    print(_cost.cost_markdown(result))
    print(f"wrote {args.out / 'cost.json'}, {args.out / 'cost.md'}")
    return 0
