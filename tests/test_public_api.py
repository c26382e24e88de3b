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
