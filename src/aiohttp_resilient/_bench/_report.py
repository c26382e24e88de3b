"""What the benchmark writes: the terminal and Markdown tables, the targets, the JSON, the plot."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._clients import ATTEMPTS

__all__ = ["evaluate_targets", "markdown", "terminal_tables", "write_json", "write_plot"]

OURS = ("resilient", "middleware-only", "decorator")
ALTERNATIVES_TUNED = ("aiohttp-retry-tuned", "backoff-tuned", "tenacity-tuned", "hand-loop")
#: The tuned alternatives that wait as ours does (the hand loop retries at once).
SAME_SCHEDULE = ("aiohttp-retry-tuned", "backoff-tuned", "tenacity-tuned")
ALTERNATIVES = (
    "aiohttp-retry-defaults",
    "aiohttp-retry-tuned",
    "backoff-defaults",
    "backoff-tuned",
    "tenacity-defaults",
    "tenacity-tuned",
    "hand-loop",
)
#: Below this goodput ratio between two clients the difference is within this machine's noise.
NOISE = 0.20


def _med(summary: dict[str, Any] | None, figure: str) -> float | None:
    if summary is None or summary.get(figure) is None:
        return None
    value: float = summary[figure]["median"]
    return value


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _range(stat: dict[str, float] | None, spec: str, scale: float = 1.0) -> str:
    if stat is None:
        return "-"
    med = format(stat["median"] * scale, spec)
    low, high = format(stat["min"] * scale, spec), format(stat["max"] * scale, spec)
    return med if low == high else f"{med} ({low}-{high})"


COLUMNS = (
    "client",
    "goodput req/s",
    "x raw",
    "success",
    "srv att/req",
    "lib att/req",
    "p50 ms",
    "p99 ms",
    "max ms",
    "CPU us/req",
    "CPU x raw",
    "peak MiB",
)


def _row(s: dict[str, Any]) -> list[str]:
    return [
        s["client"] + (" *" if s["capped_runs"] else ""),
        _range(s["goodput"], ",.0f"),
        _range(s["goodput_ratio"], ".2f"),
        _fmt(_med(s, "success_rate"), ".2%"),
        _fmt(_med(s, "server_attempts_per_request"), ".3f"),
        _fmt(_med(s, "library_attempts_per_request"), ".3f"),
        _fmt(_med(s, "p50"), ".1f", 1e3),
        _range(s["p99"], ".1f", 1e3),
        _fmt(_med(s, "max"), ".0f", 1e3),
        _range(s["cpu_us_per_request"], ".0f"),
        _range(s["cpu_ratio"], ".3f"),
        _fmt(_med(s, "peak_rss_mib"), ".1f"),
    ]


def _cells(summaries: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for s in summaries:
        key = (s["scenario"], s["concurrency"])
        if key not in seen:
            seen.append(key)
    return seen


def terminal_tables(raw: dict[str, Any], summaries: Sequence[dict[str, Any]]) -> str:
    """Fixed-width tables, one per (scenario, concurrency)."""
    out: list[str] = []
    for scenario, concurrency in _cells(summaries):
        rows = [
            _row(s)
            for s in summaries
            if s["scenario"] == scenario and s["concurrency"] == concurrency
        ]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
        out.append(
            f"\n{scenario} at concurrency {concurrency}: {raw['scenarios'].get(scenario, '')}"
        )
        out.append("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
        out.append("  ".join("-" * w for w in widths))
        out.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(out)


def _markdown_table(rows: list[list[str]], header: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    return lines


# -- targets -----------------------------------------------------------------------------------


def _find(
    summaries: Sequence[dict[str, Any]], scenario: str, concurrency: int, client: str
) -> dict[str, Any] | None:
    for s in summaries:
        if (s["scenario"], s["concurrency"], s["client"]) == (scenario, concurrency, client):
            return s
    return None


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else "held" if ok else "NOT held"


def evaluate_targets(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the figures and whether it held in this run."""
    targets: list[dict[str, Any]] = []
    cells = _cells(summaries)
    for scenario, c in cells:
        ours = _find(summaries, scenario, c, "resilient")
        if ours is None:
            continue
        where = f"{scenario} c={c}"
        if scenario == "fin-0%":
            ratio = _med(ours, "cpu_ratio")
            targets.append(
                {
                    "target": f"{where}: resilient CPU/request <= 1.03 x raw",
                    "measured": _fmt(ratio, ".3f") + " x",
                    "verdict": _verdict(None if ratio is None else ratio <= 1.03),
                }
            )
        kind, _, rate_text = scenario.partition("-")
        if kind not in ("fin", "rst") or rate_text not in ("5%", "20%"):
            continue
        p = float(rate_text.rstrip("%")) / 100
        success = ours["pooled_success_rate"]
        failures = ours["failures"]
        targets.append(
            {
                "target": f"{where}: resilient success 100%",
                "measured": _fmt(success, ".3%")
                + f" ({failures} of {ours['requests']} failed; chance alone: "
                f"p^{ATTEMPTS} = {p**ATTEMPTS:.1e} per request)",
                "verdict": _verdict(None if success is None else success >= 1.0),
            }
        )
        attempts = ours["pooled_server_attempts_per_request"]
        limit = 1 / (1 - p) + 0.02
        targets.append(
            {
                "target": f"{where}: server attempts/request <= 1/(1-p)+0.02 = {limit:.3f}",
                "measured": _fmt(attempts, ".3f") + " (all rounds pooled)",
                "verdict": _verdict(None if attempts is None else attempts <= limit),
            }
        )
        goodput = _med(ours, "goodput")
        for label, names in (
            ("best tuned alternative", ALTERNATIVES_TUNED),
            ("best alternative with the same backoff schedule", SAME_SCHEDULE),
        ):
            targets.append(_goodput_target(summaries, where, scenario, c, goodput, label, names))
        if c == 16:
            for name in ("aiohttp-retry-defaults", "backoff-defaults"):
                theirs = _med(_find(summaries, scenario, c, name), "goodput")
                ratio = goodput / theirs if goodput is not None and theirs else None
                targets.append(
                    {
                        "target": f"{where}: goodput >= 3 x {name}",
                        "measured": _fmt(ratio, ".2f") + " x",
                        "verdict": _verdict(None if ratio is None else ratio >= 3.0),
                    }
                )
        p99 = _med(ours, "p99")
        alt = [
            (name, _med(_find(summaries, scenario, c, name), "p99"))
            for name in ALTERNATIVES
            if (s := _find(summaries, scenario, c, name)) is not None
            and s["success_rate"] is not None
            and s["success_rate"]["median"] >= 0.999
        ]
        alt_known = [(n, v) for n, v in alt if v is not None]
        if alt_known and p99 is not None:
            best_name, best = min(alt_known, key=lambda t: t[1])
            targets.append(
                {
                    "target": f"{where}: p99 <= 1.2 x best alternative (100% success ones)",
                    "measured": f"{p99 * 1e3:.1f} ms vs {best_name} {best * 1e3:.1f} ms "
                    f"({p99 / best:.2f} x)",
                    "verdict": _verdict(p99 <= 1.2 * best),
                }
            )
    return targets


def _goodput_target(
    summaries: Sequence[dict[str, Any]],
    where: str,
    scenario: str,
    c: int,
    goodput: float | None,
    label: str,
    names: Sequence[str],
) -> dict[str, Any]:
    known = [
        (name, g)
        for name in names
        if (g := _med(_find(summaries, scenario, c, name), "goodput")) is not None
    ]
    target = f"{where}: goodput >= {label}"
    if not known or goodput is None:
        return {"target": target, "measured": "-", "verdict": "not measured"}
    best_name, best = max(known, key=lambda t: t[1])
    ratio = goodput / best if best else float("inf")
    verdict = "held" if ratio >= 1.0 else "within noise" if ratio >= 1 - NOISE else "NOT held"
    return {
        "target": target,
        "measured": f"{goodput:,.0f} vs {best_name} {best:,.0f} ({ratio:.2f} x)",
        "verdict": verdict,
    }


# -- files -------------------------------------------------------------------------------------


def write_json(path: Path, raw: dict[str, Any], summaries: Any, targets: Any) -> None:
    document = {**raw, "summaries": summaries, "targets": targets}
    path.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def markdown(raw: dict[str, Any], summaries: Sequence[dict[str, Any]], targets: Any) -> str:
    """The Markdown summary: setup, one table per cell, the targets."""
    v = raw["versions"]
    cfg = raw["config"]
    steals = [r["steal"] for r in raw["runs"]]
    repeated = sum(1 for r in raw["runs"] if r["repeats"])
    lines = [
        f"# aiohttp-resilient benchmark, {raw['date']}",
        "",
        f"- Machine: {raw['machine']['platform']}, {raw['machine']['cpus']} CPUs, "
        f"Python {raw['machine']['python']}",
        "- Versions: "
        + ", ".join(f"{name} {ver}" for name, ver in v.items() if ver and name != "python"),
        f"- Pinning: server process {raw['pinning']['server']}, each client process "
        f"{raw['pinning']['client']} (parent: {raw['pinning']['parent']}); "
        f"processes started by {raw['machine']['start_method']}",
        f"- {cfg['runs']} rounds x {cfg['requests']} requests per run, client order shuffled per "
        f"round, runs capped at {cfg['time_cap']:g}s (* marks a client with capped runs)",
        f"- CPU steal per run: median {_pct(steals, 0.5)}, max {max(steals, default=0):.1%}; "
        f"{repeated} run(s) repeated for steal > {cfg['max_steal']:.0%}",
        f"- Wall time: {raw['wall_seconds']:.0f}s",
    ]
    if raw["skipped"]:
        lines.append(
            "- Skipped (not installed): "
            + ", ".join(f"{n} (needs {m})" for n, m in raw["skipped"].items())
            + ': `pip install "aiohttp-resilient[bench]"` adds them'
        )
    if raw.get("failures"):
        lines.append(
            f"- {len(raw['failures'])} run(s) failed and are left out: see `failures` in "
            "results.json"
        )
    lines += [
        "",
        "Figures: median over rounds, (min-max) where they differ. `x raw` = ratio to raw aiohttp "
        "in the same round. `srv att/req` = requests the server saw / logical requests; `lib "
        "att/req` = attempts the retry layer counted itself. Latency: successful requests.",
    ]
    for scenario, c in _cells(summaries):
        rows = [_row(s) for s in summaries if s["scenario"] == scenario and s["concurrency"] == c]
        description = raw["scenarios"].get(scenario, "")
        lines += ["", f"### {scenario}, concurrency {c}", "", description, ""]
        lines += _markdown_table(rows, COLUMNS)
    lines += ["", "### Targets", ""]
    lines += _markdown_table(
        [[t["target"], t["measured"], t["verdict"]] for t in targets],
        ("target", "measured", "verdict"),
    )
    lines += ["", "### Client configurations", ""]
    lines += _markdown_table(
        [[name, f"`{conf}`"] for name, conf in raw["client_configs"].items()],
        ("client", "configuration"),
    )
    return "\n".join(lines) + "\n"


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[int(q * (len(ordered) - 1))]:.1%}"


def plot_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def write_plot(path: Path, summaries: Sequence[dict[str, Any]]) -> bool:
    """Goodput and p99 against the FIN rate, one line per client, one row per concurrency.

    Returns False when there is nothing to plot (fewer than one FIN cell).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fin = [s for s in summaries if s["scenario"].startswith("fin-")]
    concurrencies = sorted({s["concurrency"] for s in fin})
    if not concurrencies:
        return False
    fig, axes = plt.subplots(
        len(concurrencies), 2, figsize=(12, 4 * len(concurrencies)), squeeze=False
    )
    for row, c in enumerate(concurrencies):
        mine = [s for s in fin if s["concurrency"] == c]
        clients = list(dict.fromkeys(s["client"] for s in mine))
        colours = plt.get_cmap("tab20")
        for index, client in enumerate(clients):
            points = sorted(
                (
                    (float(s["scenario"][4:].rstrip("%")), s)
                    for s in mine
                    if s["client"] == client and s["goodput"] is not None
                ),
                key=lambda point: point[0],
            )
            x = [p for p, _ in points]
            style = "-" if client in OURS or client == "raw" else "--"
            width = 2.5 if client in OURS else 1.2
            axes[row][0].plot(
                x,
                [s["goodput"]["median"] for _, s in points],
                style,
                marker="o",
                linewidth=width,
                label=client,
                color=colours(index),
            )
            axes[row][1].plot(
                x,
                [s["p99"]["median"] * 1e3 if s["p99"] else float("nan") for _, s in points],
                style,
                marker="o",
                linewidth=width,
                label=client,
                color=colours(index),
            )
        axes[row][0].set_title(f"goodput, concurrency {c}")
        axes[row][0].set_ylabel("successful responses / s")
        axes[row][1].set_title(f"p99 latency, concurrency {c}")
        axes[row][1].set_ylabel("ms")
        axes[row][1].set_yscale("log")
        for ax in axes[row]:
            ax.set_xlabel("FIN before response, % of requests")
            ax.grid(True, alpha=0.3)
    axes[0][1].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
