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
