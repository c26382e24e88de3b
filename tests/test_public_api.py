"""The public namespace: complete, sorted, documented, typed."""

from __future__ import annotations

import importlib.resources
import inspect
import types

import pytest

import aiohttp_resilient
import aiohttp_resilient.testing


@pytest.mark.parametrize("module", [aiohttp_resilient, aiohttp_resilient.testing])
def test_all_is_sorted_and_complete(module: object) -> None:
    """__all__ lists every public name the module defines, sorted, and each one exists.

    Sorted as ruff's RUF022 sorts (isort style): CONSTANTS, then Classes, then functions.
    """
    exported = list(module.__all__)  # type: ignore[attr-defined]
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert all(hasattr(module, name) for name in exported)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(exported)


def test_public_objects_have_docstrings() -> None:
    """Every public class and function says what it is for."""
    undocumented = [
        name
        for name in aiohttp_resilient.__all__
        if (inspect.isclass(obj := getattr(aiohttp_resilient, name)) or inspect.isfunction(obj))
        and not isinstance(obj, types.GenericAlias)  # a type alias (a class on Python 3.10)
        and not inspect.getdoc(obj)
    ]
    assert undocumented == []


def test_package_is_typed() -> None:
    """py.typed ships with the package."""
    assert importlib.resources.files("aiohttp_resilient").joinpath("py.typed").is_file()


def test_the_library_works_without_its_optional_extras() -> None:
    """With prometheus_client and opentelemetry unimportable, the library imports, retries and
    counts; the integrations say which extra they need."""
    import subprocess
    import sys

    script = """
import asyncio, sys
sys.modules["prometheus_client"] = None  # an ImportError on import, as if not installed
sys.modules["opentelemetry"] = None
import aiohttp_resilient
from aiohttp_resilient import resilient_session, stats
from aiohttp_resilient.testing import Fault, FaultServer

async def main():
    async with FaultServer() as server:
        server.script("/", [Fault.fin(), Fault.ok()])
        async with resilient_session() as session:
            async with session.get(server.url_for("/")) as resp:
                await resp.read()
            print("attempts", stats(session).total.attempts, server.count())
    for name in ("PrometheusCollector", "instrument_session"):
        try:
            getattr(aiohttp_resilient, name)(None)
        except ImportError as exc:
            print(exc)
    print("hasattr", hasattr(aiohttp_resilient, "PrometheusCollector"))
    names = {}
    exec("from aiohttp_resilient import *", names)
    print("import *", "stats" in names, "instrument_session" in names)

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "attempts 2 2"
    assert "needs the [prometheus] extra" in lines[1]
    assert "needs the [otel] extra" in lines[2]
    assert lines[3:] == ["hasattr True", "import * True True"]
