"""Smoke tests of ``aiohttp-resilient bench``: it runs and reports; nothing here is timed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiohttp_resilient._bench._report import write_plot
from aiohttp_resilient._cli import main

HAS_AIOHTTP_RETRY = importlib.util.find_spec("aiohttp_retry") is not None
HAS_STAMINA = importlib.util.find_spec("stamina") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """One tiny quick-mode run in a subprocess: one scenario, four clients, 200 requests."""
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aiohttp_resilient._cli",
            "bench",
            "--quick",
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
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
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
    assert "fin-20%" in out
    assert "middleware-only" in out
    assert "stamina-tuned" in out


def test_unknown_client_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt client name fails before anything runs, naming the choices."""
    assert main(["bench", "--clients", "raw,requests"]) == 2
    assert "unknown client requests" in capsys.readouterr().err
