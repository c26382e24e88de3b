"""Smoke tests of ``aiohttp-resilient bench``: it runs and reports; nothing here is timed."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiohttp_resilient._cli._bench import QUICK_HEALTH_CLIENTS, _config, _cost
from aiohttp_resilient._cli._bench._report import evaluate_targets, write_plot, write_timeline_plot
from aiohttp_resilient._cli._bench._runner import recovery_figures, series
from aiohttp_resilient._cli._main import build_parser, main

HAS_AIOHTTP_RETRY = importlib.util.find_spec("aiohttp_retry") is not None
HAS_STAMINA = importlib.util.find_spec("stamina") is not None


def _bench(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``aiohttp-resilient bench --quick ARGS --out OUT`` in a subprocess, bounded in time."""
    command = [sys.executable, "-m", "aiohttp_resilient._cli._main", "bench", "--quick", *args]
    return subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One tiny quick-mode run in a subprocess: one scenario, four clients, 200 requests."""
    out = tmp_path_factory.mktemp("bench")
    proc = _bench(
        out,
        "--scenarios",
        "fin-5%",
        "--concurrency",
        "8",
        "--clients",
        "raw,resilient,aiohttp-retry-defaults,stamina-tuned",
        "--requests",
        "200",
        "--runs",
        "1",
        "--no-plot",
        timeout=50,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout, proc.stderr


def _results(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return data


def test_quick_writes_json_and_markdown(quick_run: tuple[Path, str, str]) -> None:
    """The JSON holds every run, the summaries and the targets; the Markdown has the tables."""
    out, stdout, _ = quick_run
    data = _results(out)
    for key in ("date", "machine", "pinning", "versions", "config", "runs", "summaries", "targets"):
        assert key in data
    clients = {r["client"] for r in data["runs"]}
    assert {"raw", "resilient"} <= clients
    figures = ("goodput", "success_rate", "p99", "cpu_us_per_request", "peak_rss_mib", "steal")
    for run in data["runs"]:
        for key in figures:
            assert key in run
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "### fin-5%, concurrency 8" in summary
    assert "| resilient" in summary
    assert "fin-5% at concurrency 8" in stdout
    assert "Targets:" in stdout


def test_server_counted_attempts_are_sane(quick_run: tuple[Path, str, str]) -> None:
    """Every logical request reached the server at least once; ours retried every fault."""
    data = _results(quick_run[0])
    for run in data["runs"]:
        assert run["issued"] == 200
        assert 1.0 <= run["server_attempts_per_request"] <= 5.0
    ours = next(r for r in data["runs"] if r["client"] == "resilient")
    assert ours["success_rate"] == 1.0
    # Our hook-counted attempts and the server's count agree: no hidden extra attempts.
    assert ours["library_attempts"] == ours["server"]["requests"]


def test_skipped_clients_are_named(quick_run: tuple[Path, str, str]) -> None:
    """A client whose library is not installed is skipped, and the extra that adds it named."""
    _, _, stderr = quick_run
    data = _results(quick_run[0])
    ran = {r["client"] for r in data["runs"]}
    expected = {
        name: module
        for name, module, present in (
            ("aiohttp-retry-defaults", "aiohttp_retry", HAS_AIOHTTP_RETRY),
            ("stamina-tuned", "stamina", HAS_STAMINA),
        )
        if not present
    }
    assert data["skipped"] == expected
    assert ran == {"raw", "resilient", "aiohttp-retry-defaults", "stamina-tuned"} - set(expected)
    if expected:
        assert 'pip install "aiohttp-resilient[bench]"' in stderr


@pytest.mark.skipif(not HAS_STAMINA, reason="stamina is in the bench extra")
def test_stamina_retries_every_fault(quick_run: tuple[Path, str, str]) -> None:
    """stamina-tuned retries the family: every request succeeds at 5% FIN, counted attempts
    match what the server saw (its session keeps aiohttp's hidden retry)."""
    data = _results(quick_run[0])
    run = next(r for r in data["runs"] if r["client"] == "stamina-tuned")
    assert run["success_rate"] == 1.0
    assert run["library_attempts"] <= run["server"]["requests"]


def test_plot(quick_run: tuple[Path, str, str], tmp_path: Path) -> None:
    """The PNG plot is written from the summaries (needs the bench extra's matplotlib)."""
    pytest.importorskip("matplotlib")
    data = _results(quick_run[0])
    assert write_plot(tmp_path / "plot.png", data["summaries"])
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help_lists_scenarios_and_clients(capsys: pytest.CaptureFixture[str]) -> None:
    """``bench --help`` works and names every scenario (percent signs and all) and client."""
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fin-20%", "overload-503-ra", "ratelimit-429", "brownout-rst", "restart"):
        assert name in out
    assert "middleware-only" in out
    assert "stamina-tuned" in out


# -- host-health scenarios ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def health_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """overload-503 (200 requests) and the quick restart (timed, 2 s), three clients, 1 round."""
    out = tmp_path_factory.mktemp("bench-health")
    proc = _bench(
        out,
        "--scenarios",
        "overload-503,restart",
        "--clients",
        "resilient,hand-loop",
        "--requests",
        "200",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_health_scenarios_run_at_their_own_concurrency(health_run: tuple[Path, str]) -> None:
    """Each host-health cell runs once per client at the scenario's concurrency (64)."""
    data = _results(health_run[0])
    cells = {(r["scenario"], r["concurrency"], r["client"]) for r in data["runs"]}
    assert cells == {
        (scenario, 64, client)
        for scenario in ("overload-503", "restart")
        for client in ("raw", "resilient", "hand-loop")
    }
    assert data["scenario_params"]["overload-503"]["capacity"] == 16


def test_overload_figures_come_from_the_server(health_run: tuple[Path, str]) -> None:
    """Overload: the server shed requests over its capacity; attempts per success are its count
    over the client's successes."""
    data = _results(health_run[0])
    for run in (r for r in data["runs"] if r["scenario"] == "overload-503"):
        assert run["issued"] == 200
        assert run["server"]["shed"].get("capacity", 0) > 0
        assert run["server_attempts_per_success"] == pytest.approx(
            run["server"]["requests"] / run["ok"]
        )
    raw = next(r for r in data["runs"] if r["scenario"] == "overload-503" and r["client"] == "raw")
    assert raw["success_rate"] < 1.0  # no retries: every 503 is a failure


def test_restart_counts_posts_and_lost_requests(health_run: tuple[Path, str]) -> None:
    """Restart: the server went away twice; POSTs are counted per method and, server side, by
    X-Request-Id; ours never sent a POST twice."""
    data = _results(health_run[0])
    restart = [r for r in data["runs"] if r["scenario"] == "restart"]
    for run in restart:
        assert len(run["server"]["downs"]) == 2
        assert run["posts"] > 0
        assert run["server"]["post_requests"] > 0
        assert run["gets_failed"] + run["posts_failed"] == run["failed"]
        assert len(run["series"]) == 20  # 2 s in 100 ms buckets
        assert [round(end - start, 1) for start, end in run["events"]] == [0.5, 0.5]
    ours = next(r for r in restart if r["client"] == "resilient")
    assert ours["posts_twice"] == 0
    raw = next(r for r in restart if r["client"] == "raw")
    assert raw["gets_failed"] > 0  # refused connections while the server was away


def test_health_tables_and_targets_name_the_new_figures(health_run: tuple[Path, str]) -> None:
    """The tables carry the amplification and restart columns; the targets name each scenario."""
    out, stdout = health_run
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "### overload-503, concurrency 64" in summary
    assert "| client | goodput req/s | x raw | success | srv att/ok |" in summary
    assert "GETs failed | POSTs failed | POSTs twice |" in summary
    assert "1 round x 200 requests per run" in summary
    assert "1 round, timed: 2 s per run" in summary
    targets = {t["target"]: t for t in _results(out)["targets"]}
    twice = "restart c=64: resilient sends 0 POSTs twice (server-side, all rounds)"
    for name in (
        "overload-503 c=64: resilient success >= 99.90%",
        "overload-503 c=64: resilient server attempts per success <= 1.3",
        "overload-503 c=64: resilient goodput >= 0.9 x the server's capacity (1,600 req/s)",
        "overload-503 c=64: resilient goodput >= every alternative",
        "restart c=64: resilient loses 0 idempotent requests (GETs failed, all rounds)",
        twice,
    ):
        assert targets[name]["verdict"] in ("held", "NOT held", "full run only"), name
        assert f"| {name} |" in summary
        assert name in stdout
    assert targets[twice]["verdict"] == "held"


def test_timeline_plot(health_run: tuple[Path, str], tmp_path: Path) -> None:
    """timeline.png shows the timed runs (needs the bench extra's matplotlib)."""
    pytest.importorskip("matplotlib")
    assert (health_run[0] / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not write_timeline_plot(tmp_path / "none.png", {"runs": [], "config": {}})


def test_quick_runs_small_health_cells_with_few_clients() -> None:
    """--quick: every host-health scenario once, at its concurrency, with the quick clients;
    the full mode runs them with every client, three rounds."""
    quick = _config(build_parser().parse_args(["bench", "--quick"]))
    full = _config(build_parser().parse_args(["bench"]))
    health = [c for c in quick.cells if c.scenario.kind != "fin"]
    assert {c.scenario.name for c in health} == {
        "overload-503",
        "overload-503-ra",
        "overload-rst",
        "ratelimit-429-ra",
        "ratelimit-429",
        "ratelimit-503",
        "brownout-rst",
        "brownout-503",
        "restart",
    }
    for cell in health:
        assert cell.runs == 1
        assert set(cell.clients) == set(QUICK_HEALTH_CLIENTS)
        assert cell.concurrency == (16 if cell.scenario.kind == "ratelimit" else 64)
    by_name = {c.scenario.name: c for c in full.cells}
    assert by_name["brownout-rst"].scenario.outage_seconds == 3.0
    assert by_name["restart"].scenario.down_seconds == 1.5
    assert by_name["overload-503"].runs == 3
    assert "stamina-tuned" in by_name["overload-503"].clients


# -- figures computed from timestamps, and targets from summaries ----------------------------


def test_recovery_figures() -> None:
    """Pre-outage rate, first success after recovery, first 100 ms bucket at 90% of that rate."""
    healthy = [i / 100 for i in range(100)]  # 100/s for 1 s
    back = [3.05, 3.15, *[3.2 + i / 100 for i in range(100)]]  # a trickle, then 100/s again
    got = recovery_figures(healthy + back, t0=0.0, outage_start=1.0, outage_end=3.0, run_end=5.0)
    assert got["pre_outage_rate"] == pytest.approx(100)
    assert got["first_success_s"] == pytest.approx(0.05)
    assert got["full_goodput_s"] == pytest.approx(0.3)  # the bucket [3.2, 3.3) has 10
    never = recovery_figures(healthy, t0=0.0, outage_start=1.0, outage_end=3.0, run_end=5.0)
    assert never["first_success_s"] is None
    assert never["full_goodput_s"] is None


def test_series_counts_per_bucket() -> None:
    """Successes per 100 ms from t0."""
    assert series([10.01, 10.05, 10.15, 10.35], t0=10.0, seconds=0.4) == [2, 1, 0, 1]


def _summary(client: str, **figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"scenario": "brownout-rst", "concurrency": 64, "client": client}
    base.update(figures)
    return base


def test_brownout_targets_from_summaries() -> None:
    """Outage attempts are judged against the hand loop's; a client that never came back within
    the run fails the recovery target with that said."""
    stat = {"median": 0.02, "min": 0.01, "max": 0.03}
    ours = _summary(
        "resilient",
        outage_attempts_vs_hand_loop=stat,
        first_success_s=None,
        no_first_success_runs=1,
    )
    params = {"brownout-rst": {"kind": "brownout"}}
    targets = evaluate_targets([ours], params)
    assert [(t["verdict"], t["measured"]) for t in targets] == [
        ("held", "0.020 (0.010-0.030) x"),
        ("NOT held", "none within the run (1 round(s))"),
    ]


def test_unknown_client_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt client name fails before anything runs, naming the choices."""
    assert main(["bench", "--clients", "raw,requests"]) == 2
    assert "unknown client requests" in capsys.readouterr().err


def test_ratelimit_target_counts_requests_the_cap_cut_off() -> None:
    """A rate-limited run cut by its time cap did not make every request succeed, even with no
    failure: the requests it never finished count against it."""
    ours = {
        "scenario": "ratelimit-429-ra",
        "concurrency": 16,
        "client": "resilient",
        "planned": 300,
        "requests": 120,
        "successes": 104,
        "failures": 0,
        "goodput": {"median": 69.0, "min": 69.0, "max": 69.0},
    }
    params = {"ratelimit-429-ra": {"kind": "ratelimit", "rate_limit": 500}}
    targets = evaluate_targets([ours], params)
    assert [(t["verdict"], t["measured"]) for t in targets] == [
        ("NOT held", "0 failed, 196 not finished when the time cap cut the run, of 300"),
        ("NOT held", "69 req/s"),
    ]


HAS_VALGRIND = shutil.which("valgrind") is not None


def _run_cost(
    out: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``aiohttp-resilient bench --cost ARGS --out OUT`` in a subprocess, bounded in time."""
    command = [sys.executable, "-m", "aiohttp_resilient._cli._main", "bench", "--cost", *args]
    return subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.mark.skipif(
    not HAS_VALGRIND,
    reason="valgrind is not installed (Debian package valgrind): bench --cost counts "
    "instructions with callgrind",
)
@pytest.mark.timeout(180)  # callgrind runs the client ~50x slower: 40-70 s on a busy 2-core box
def test_cost_counts_instructions_per_request(tmp_path: Path) -> None:
    """At a tiny size (10 and 20 GETs under callgrind): a plausible count, the targets stated."""
    proc = _run_cost(tmp_path, "--configs", "raw", "--requests", "10", "--runs", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "cost.json").read_text(encoding="utf-8"))
    raw = result["configs"]["raw"]
    # A GET through aiohttp is a few hundred thousand instructions, not a handful nor millions.
    assert 50_000 < raw["instructions"] < 5_000_000
    assert raw["ratio"] == 1.0
    assert result["method"]["n2"] - result["method"]["n1"] == 10
    markdown = (tmp_path / "cost.md").read_text(encoding="utf-8")
    assert "| `raw` |" in markdown
    assert "instructions/request" in proc.stdout


def test_cost_without_valgrind_says_why(tmp_path: Path) -> None:
    """Where valgrind is missing, --cost names the package to install and counts nothing."""
    env = {**os.environ, "PATH": str(tmp_path)}  # no valgrind on this PATH
    proc = _run_cost(tmp_path / "out", "--configs", "raw", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "valgrind is not installed" in proc.stderr
    assert "apt-get install valgrind" in proc.stderr
    assert not (tmp_path / "out" / "cost.json").exists()


def test_cost_targets_are_judged() -> None:
    """Each target's verdict follows the ratio; a configuration that did not run is not measured."""
    rows = {"raw": {"instructions": 100.0}, "middleware": {"instructions": 103.5}}
    by_config = {t.config: t for t in _cost.TARGETS}
    assert _cost._judge(by_config["middleware"], rows, list(_cost.CONFIGS))["verdict"] == "NOT held"
    rows["middleware"]["instructions"] = 102.5
    assert _cost._judge(by_config["middleware"], rows, list(_cost.CONFIGS))["verdict"] == "held"
    skipped = _cost._judge(by_config["resilient"], rows, list(_cost.CONFIGS))
    assert skipped["verdict"] == "not measured"
    assert skipped["measured"] == "not run"


async def test_every_client_counts_an_error_status_as_a_failure() -> None:
    """A 404 (never retried) or a 503 to a POST handed back raises in every client's fetch, so
    the bench counts it as a failure, not as a success; a 200 returns. Counted on the server."""
    from aiohttp_resilient._cli._bench._clients import CLIENTS, missing_module
    from aiohttp_resilient.testing import Fault, FaultServer

    async with FaultServer() as server:
        server.set_default("/missing", Fault.status(404))
        server.set_default("/busy", Fault.status(503))
        tried = []
        for spec in CLIENTS:
            if missing_module(spec) is not None:
                continue
            client = await spec.build(4)
            try:
                for path, method, status in (("/missing", "GET", 404), ("/busy", "POST", 503)):
                    before = server.count(path)
                    with pytest.raises(Exception) as raised:  # noqa: PT011 - types differ
                        await client.fetch(str(server.url_for(path)), method, None)
                    assert server.count(path) > before, spec.name  # the server answered it
                    # Some *-defaults clients retry every error, a 404 included: still a failure.
                    assert getattr(raised.value, "status", None) == status, spec.name
                before = server.count("/ok")
                await client.fetch(str(server.url_for("/ok")), "GET", None)
                assert server.count("/ok") == before + 1
            finally:
                await client.close()
            tried.append(spec.name)
        assert "resilient" in tried


def _quick_health_summaries() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """An overload cell whose goodput and amplification miss, and a rate-limit cell cut by the
    cap with no failure, as a --quick run makes them."""
    overload = {
        "scenario": "overload-503",
        "concurrency": 64,
        "client": "resilient",
        "pooled_success_rate": 1.0,
        "successes": 600,
        "failures": 0,
        "planned": 600,
        "pooled_server_attempts_per_success": 1.33,
        "goodput": {"median": 661.0, "min": 661.0, "max": 661.0},
    }
    ratelimit = {
        "scenario": "ratelimit-429-ra",
        "concurrency": 16,
        "client": "resilient",
        "planned": 300,
        "requests": 300,
        "successes": 190,
        "failures": 0,
        "goodput": {"median": 127.0, "min": 127.0, "max": 127.0},
    }
    params = {
        "overload-503": {"kind": "overload", "capacity": 16, "service_time": 0.01},
        "ratelimit-429-ra": {"kind": "ratelimit", "rate_limit": 500},
    }
    return [overload, ratelimit], params


def test_quick_leaves_what_its_cells_cannot_show_to_the_full_run() -> None:
    """--quick: goodput, amplification and a cap-cut run that missed are "full run only", with
    why; success is still judged; the full run judges the same figures as before."""
    summaries, params = _quick_health_summaries()
    quick = evaluate_targets(summaries, params, quick=True)
    verdicts = {t["target"].split(": ", 1)[1]: t["verdict"] for t in quick}
    assert verdicts == {
        "resilient success >= 99.90%": "held",
        "resilient server attempts per success <= 1.3": "full run only",
        "resilient goodput >= 0.9 x the server's capacity (1,600 req/s)": "full run only",
        "resilient goodput >= every alternative": "not measured",
        "resilient: every idempotent request succeeds": "full run only",
        "resilient goodput >= 0.7 x the rate limit (350 req/s)": "full run only",
    }
    assert all(t.get("why") for t in quick if t["verdict"] == "full run only")
    full = evaluate_targets(summaries, params)
    assert [t["verdict"] for t in full].count("NOT held") == 4
    # A failure is a failure, quick or not.
    summaries[1]["failures"] = 3
    (failed,) = [
        t
        for t in evaluate_targets(summaries, params, quick=True)
        if "every idempotent" in t["target"]
    ]
    assert failed["verdict"] == "NOT held"


def test_full_run_hint_runs_the_scenarios_left_at_full_size() -> None:
    """The printed command parses as printed and runs exactly the scenarios left to the full
    run, at their full size (its whole run takes minutes: the test stops at its plan)."""
    from aiohttp_resilient._cli._bench import _config
    from aiohttp_resilient._cli._bench._report import full_run_command
    from aiohttp_resilient._cli._main import build_parser

    summaries, params = _quick_health_summaries()
    command = full_run_command(evaluate_targets(summaries, params, quick=True))
    assert command == "aiohttp-resilient bench --scenarios overload-503,ratelimit-429-ra"
    words = shlex.split(command)
    config = _config(build_parser().parse_args(words[1:]))
    assert not config.quick
    assert {cell.scenario.name for cell in config.cells} == {"overload-503", "ratelimit-429-ra"}
    assert {cell.scenario.requests for cell in config.cells} == {4000, 2000}


def test_tail_runs_only_when_named_with_the_hedging_clients() -> None:
    """The tail scenario and the hedging clients are opt-in: the default run has neither;
    --scenarios tail runs raw, resilient, resilient-hedge and hedge-python at concurrency 16."""
    from aiohttp_resilient._cli._bench._clients import OPT_IN_CLIENTS, TAIL_CLIENTS

    full = _config(build_parser().parse_args(["bench"]))
    assert all(c.scenario.kind != "tail" for c in full.cells)
    assert not any(set(c.clients) & OPT_IN_CLIENTS for c in full.cells)
    (tail,) = _config(build_parser().parse_args(["bench", "--scenarios", "tail"])).cells
    assert tail.clients == TAIL_CLIENTS
    assert tail.concurrency == 16
    assert (tail.scenario.rate, tail.scenario.slow_seconds) == (0.02, 1.0)


def test_tail_targets_from_summaries() -> None:
    """Issue 20's tail targets: hedged p99 <= 0.25 x unhedged, <= 1.06 server requests per
    call, and p99 at least as low as hedge-python's at no more requests per call."""

    def tail(client: str, p99: float, load: float) -> dict[str, Any]:
        return {
            "scenario": "tail",
            "concurrency": 16,
            "client": client,
            "p99": {"median": p99, "min": p99, "max": p99},
            "pooled_server_attempts_per_request": load,
        }

    summaries = [
        tail("resilient", 1.0, 1.0),
        tail("resilient-hedge", 0.02, 1.02),
        tail("hedge-python", 0.03, 1.01),
    ]
    targets = evaluate_targets(summaries, {"tail": {"kind": "tail"}})
    assert [t["verdict"] for t in targets] == ["held", "held", "NOT held"]  # more requests
    assert targets[0]["measured"] == "20.0 vs 1000.0 ms (0.020 x)"
    assert "1.0200 vs 1.0100 requests per call" in targets[2]["measured"]


def test_fleet_runs_only_when_named() -> None:
    """The fleet scenario (client processes and a Redis of its own) is not a runner cell: the
    default run leaves it out, and naming it makes no cell of the runner."""
    full = _config(build_parser().parse_args(["bench"]))
    assert all(c.scenario.kind != "fleet" for c in full.cells)
    assert _config(build_parser().parse_args(["bench", "--scenarios", "fleet"])).cells == ()


def test_fleet_without_redis_server_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp_resilient._cli._bench import _fleet

    monkeypatch.setattr(_fleet, "REDIS_SERVER", "/nonexistent/redis-server")
    said: list[str] = []
    assert _fleet.run_fleet(quick=True, runs=1, log=said.append) is None
    assert said == ["fleet skipped: redis-server is not installed (Debian package redis-server)"]


@pytest.mark.skipif(
    not os.access(shutil.which("redis-server") or "/usr/bin/redis-server", os.X_OK),
    reason="redis-server is not installed (Debian package redis-server)",
)
def test_fleet_scenario_reports_the_fleet_wide_cap(tmp_path: Path) -> None:
    """bench --quick --scenarios fleet: 4 processes without and with a store against a host of
    capacity 8; the store's run keeps the host at 8 at once with no 503 and every request ok,
    and the tables and targets say so."""
    proc = _bench(tmp_path, "--scenarios", "fleet", "--no-plot", timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    runs = result["fleet"]["runs"]
    assert [r["store"] for r in runs] == [False, True]
    with_store = runs[1]
    assert with_store["peak"] <= 8
    assert with_store["refused_503"] == 0
    assert with_store["ok"] == with_store["requests"] == 4 * 150
    assert runs[0]["refused_503"] > 0  # alone, the processes overrun the host
    verdicts = {t["target"]: t["verdict"] for t in result["targets"]}
    assert verdicts == {
        "fleet: never more than 8 asked at once with the store (0 answered 503)": "held",
        "fleet: 100% success with the store": "held",
    }
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "### fleet" in summary
    assert "| store | 100.0% |" in summary
    assert "fleet: never more than 8 asked at once" in proc.stdout


def test_fleet_targets_from_runs() -> None:
    """The fleet's targets hold only when no run with the store asked the host for more than 8
    at once (the host answers a 9th at once 503: its "most in service" stays at 8) and every
    request succeeded."""
    from aiohttp_resilient._cli._bench._fleet import fleet_markdown, fleet_targets

    def run(store: bool, peak: int, ok: int, refused: int | None = None) -> dict[str, Any]:
        return {
            "store": store,
            "requests": 600,
            "ok": ok,
            "failed": 600 - ok,
            "peak": peak,
            "refused_503": (0 if store else 280) if refused is None else refused,
            "wall_seconds": 6.0,
            "goodput": ok / 6.0,
            "fallbacks": 0,
            "round": 0,
        }

    held = {"description": "d", "requests_per_process": 150, "runs": [run(False, 8, 600)]}
    held["runs"].append(run(True, 8, 600))
    assert [t["verdict"] for t in fleet_targets(held)] == ["held", "held"]
    over = {**held, "runs": [run(False, 8, 600), run(True, 8, 599, refused=3)]}
    assert [t["verdict"] for t in fleet_targets(over)] == ["NOT held", "NOT held"]
    assert fleet_targets({**held, "runs": [run(False, 8, 600)]}) == []
    assert "| store | 99.8% | 8 | 3 |" in "\n".join(fleet_markdown(over))
