"""Every example runs alone against its own embedded server and reports success."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXPECTED = {
    "crawler.py": "pages fetched: 400/400, failed: 0",
    "api_client.py": "the server saw 1 POST",
    "decorator.py": "4 attempts, not 16",
    "transfers.py": "server applied every item exactly once: True",
    "observed_crawler.py": "pages fetched: 290/300, not found: 10, failed: 0",
    "hedged_requests.py": "slow answers kept out of the p99: True",
}


def test_every_example_is_covered() -> None:
    """A new example needs an expected line here."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    """The example exits 0, warning-free, and prints its expected outcome."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert EXPECTED[name] in result.stdout


def test_observed_crawler_runs_without_the_prometheus_extra() -> None:
    """Without prometheus_client it says it skipped /metrics, and still crawls and summarises."""
    block = "import sys; sys.modules['prometheus_client'] = None; import runpy; "
    path = EXAMPLES / "observed_crawler.py"
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            f"{block}runpy.run_path({str(path)!r}, run_name='__main__')",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipping /metrics" in result.stdout
    assert "aiohttp_resilient_retries_total" not in result.stdout
    assert EXPECTED["observed_crawler.py"] in result.stdout
    assert "retries:" in result.stdout  # the summary's which-host-failed-how lines
