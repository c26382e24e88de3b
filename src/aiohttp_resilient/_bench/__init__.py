"""``aiohttp-resilient bench``: throughput under injected faults, beside the alternatives.

Private: the command line is the interface. The server (a :class:`FaultServer` on loopback) runs in
one process pinned to CPU 0, each client run in a fresh process pinned to CPU 1; the parent runs
the clients interleaved in a shuffled order per round, repeats runs that lost CPU to steal, and
writes ``results.json`` (every figure), ``summary.md`` and ``plot.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ._clients import CLIENTS
from ._report import (
    evaluate_targets,
    markdown,
    plot_available,
    terminal_tables,
    write_json,
    write_plot,
)
from ._runner import BenchConfig, aggregate, available_clients, run_suite
from ._scenarios import FULL_CELLS, QUICK_CELLS, SCENARIOS

__all__ = ["add_parser", "run"]

#: (runs, requests per run, time cap per run in seconds) of each mode.
QUICK = (3, 1000, 1.0)
FULL = (3, 3000, 4.0)


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
        help="benchmark aiohttp clients under injected disconnects, against the alternatives",
        description=(
            "Run raw aiohttp, aiohttp-resilient and the alternatives (aiohttp-retry, backoff, "
            "tenacity, a hand-written loop) against the project's fault server on loopback, "
            "interleaved, and write results.json, summary.md and plot.png to --out. "
            "Server pinned to CPU 0, clients to CPU 1."
        ),
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help=f"FIN 0%% and 20%% at concurrency 16 only, {QUICK[1]} requests x {QUICK[0]} rounds",
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
        help="concurrencies for --scenarios (16,64,256 with --scenarios; else the mode's)",
    )
    bench.add_argument(
        "--clients",
        type=_names([c.name for c in CLIENTS], "client"),
        metavar="A,B",
        help=f"clients, comma-separated (all): {', '.join(c.name for c in CLIENTS)}",
    )
    bench.add_argument("--runs", type=_positive_int, help="rounds per cell (3)")
    bench.add_argument("--requests", type=_positive_int, help="logical requests per run")
    bench.add_argument(
        "--time-cap", type=_positive_float, metavar="SECONDS", help="cancel a run after this long"
    )
    bench.add_argument("--seed", type=int, default=1, help="seed of faults and client order (1)")
    bench.add_argument("--no-plot", action="store_true", help="do not write plot.png")
    bench.set_defaults(parser=bench)


def _config(args: argparse.Namespace) -> BenchConfig:
    runs, requests, cap = QUICK if args.quick else FULL
    if args.scenarios:
        concurrencies = args.concurrency or ([16] if args.quick else [16, 64, 256])
        cells = tuple((s, c) for c in concurrencies for s in args.scenarios)
    else:
        cells = QUICK_CELLS if args.quick else FULL_CELLS
        if args.concurrency:
            cells = tuple(dict.fromkeys((s, c) for s, _ in cells for c in args.concurrency))
    clients = args.clients or [c.name for c in CLIENTS]
    if "raw" not in clients:
        clients = ["raw", *clients]  # the baseline of every ratio
    return BenchConfig(
        cells=cells,
        clients=tuple(clients),
        runs=args.runs or runs,
        requests=args.requests or requests,
        time_cap=args.time_cap or cap,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe; returns the exit status."""
    config = _config(args)
    _, skipped = available_clients(config.clients)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    err = sys.stderr
    print(
        f"aiohttp-resilient bench: {len(config.cells)} cell(s) x {config.runs} round(s) x "
        f"{len(config.clients) - len(skipped)} client(s), {config.requests} requests per run; "
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
    raw = run_suite(config, lambda line: print(line, file=err, flush=True))
    summaries = aggregate(raw)
    targets = evaluate_targets(summaries)
    write_json(out / "results.json", raw, summaries, targets)
    for failure in raw["failures"]:
        print(f"failed run: {failure['scenario']} c={failure['concurrency']}: {failure['error']}")
    (out / "summary.md").write_text(markdown(raw, summaries, targets), encoding="utf-8")
    print(terminal_tables(raw, summaries))
    print("\nTargets:")
    for t in targets:
        print(f"  {t['verdict']:<13} {t['target']}: {t['measured']}")
    written = ["results.json", "summary.md"]
    if args.no_plot:
        pass
    elif not plot_available():
        print(
            "plot.png skipped: matplotlib is not installed "
            '(pip install "aiohttp-resilient[bench]")',
            file=err,
        )
    elif write_plot(out / "plot.png", summaries):
        written.append("plot.png")
    print(f"\nwrote {', '.join(str(out / name) for name in written)}")
    return 1 if raw["failures"] else 0
