"""ServerLoad: the fault server's load shaping as one frozen value, and FaultServer(load=...)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from aiohttp_resilient.testing import Fault, FaultServer, ServerLoad

#: Bounds every request of this file, so a server bug fails a test instead of hanging it.
TIMEOUT = aiohttp.ClientTimeout(total=5)

#: A rate limit of one a second with a burst of three, two slots held a second each: four GETs
#: at once give 200, 200, a 503 (the third admitted finds no slot) and a 429 (no token left).
SHAPED: dict[str, Any] = {
    "capacity": 2,
    "service_time": 1.0,
    "over_capacity": Fault.status(503),
    "rate_limit": 1,
    "rate_burst": 3,
    "over_rate": Fault.status(429),
    "compute_retry_after": True,
    "exempt_paths": ["/health"],
}


@contextlib.asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


async def _get(session: aiohttp.ClientSession, url: object) -> tuple[int, str | None]:
    async with session.get(str(url)) as resp:
        await resp.read()
        return resp.status, resp.headers.get("Retry-After")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capacity": -3, "service_time": 1}, "capacity"),
        ({"capacity": True, "service_time": 1}, "capacity"),
        ({"capacity": 1, "service_time": 0}, "service_time"),
        ({"service_time": "0.5"}, "service_time"),
        ({"service_time": float("inf")}, "service_time"),
        ({"rate_limit": -5}, "rate_limit"),
        ({"rate_limit": "10"}, "rate_limit"),
        ({"rate_limit": 100, "rate_burst": 0}, "rate_burst"),
        ({"rate_burst": 1}, "rate_burst"),
        ({"over_rate": None}, "over_rate"),
        ({"over_capacity": 503}, "over_capacity"),
        ({"compute_retry_after": 1}, "compute_retry_after"),
        ({"exempt_paths": "/"}, "exempt_paths"),
    ],
)
def test_bad_fields_raise_value_error_naming_them(kwargs: dict[str, Any], field: str) -> None:
    """Each bad field is a ValueError naming it, from ServerLoad as from FaultServer's keywords."""
    with pytest.raises(ValueError, match=field):
        ServerLoad(**kwargs)
    with pytest.raises(ValueError, match=field):
        FaultServer(**kwargs)


def test_a_frozen_value_with_normalised_fields() -> None:
    """Frozen, equal by value whatever iterable gave the paths; the burst defaults to N/10."""
    load = ServerLoad(rate_limit=500, exempt_paths=["/a", "/a", "/b"])
    assert load == ServerLoad(rate_limit=500, exempt_paths=("/b", "/a"))
    assert load.exempt_paths == frozenset({"/a", "/b"})
    assert (load.rate_burst, load.burst) == (None, 50)
    assert ServerLoad(rate_limit=5).burst == 1
    assert ServerLoad().burst is None
    assert not ServerLoad().shapes
    assert ServerLoad(service_time=0.1).shapes
    with pytest.raises(dataclasses.FrozenInstanceError):
        load.capacity = 3  # type: ignore[misc]


def test_keywords_build_the_same_load() -> None:
    """The keywords build a ServerLoad; the server's attributes read from whichever was given."""
    by_keywords = FaultServer(**SHAPED)
    by_load = FaultServer(load=ServerLoad(**SHAPED))
    assert by_keywords.load == by_load.load == ServerLoad(**SHAPED)
    for server in (by_keywords, by_load):
        assert (server.capacity, server.service_time, server.rate_limit) == (2, 1.0, 1)
        assert (server.rate_burst, server.over_rate) == (3, Fault.status(429))
        assert server.exempt_paths == frozenset({"/health"})
        assert server.compute_retry_after is True


@pytest.mark.parametrize("built_with", ["keywords", "load"])
async def test_load_behaves_as_the_keywords(built_with: str) -> None:
    """Built either way, the server sheds the same requests for the same reasons."""
    if built_with == "keywords":
        server = FaultServer(**SHAPED)
    else:
        server = FaultServer(load=ServerLoad(**SHAPED))
    async with server, client() as session:
        answers = await asyncio.gather(*(_get(session, server.url_for("/a")) for _ in range(4)))
        health = await _get(session, server.url_for("/health"))
    assert sorted(answers) == [(200, None), (200, None), (429, "1"), (503, "1")]
    assert health == (200, None)  # exempt: neither held nor counted against the limits
    assert server.shed_counts == {"rate": 1, "capacity": 1}
    assert server.action_counts == {"ok": 3, "status": 2}
    assert server.count("/a") == 4


@pytest.mark.parametrize(
    "keywords",
    [
        {"capacity": 2, "service_time": 0.5},
        {"rate_limit": 10},
        {"exempt_paths": ["/h"]},
        {"compute_retry_after": True},
    ],
)
def test_load_and_its_keywords_are_exclusive(keywords: dict[str, Any]) -> None:
    """load= with a load keyword that is not at its default: a ValueError naming both."""
    with pytest.raises(ValueError, match=rf"load and .*{next(iter(keywords))}") as err:
        FaultServer(load=ServerLoad(service_time=0.1), **keywords)
    assert "ServerLoad(...)" in str(err.value)
    # Keywords at their defaults say nothing and are allowed beside load=.
    server = FaultServer(load=ServerLoad(service_time=0.1), service_time=0.0, exempt_paths=[])
    assert server.service_time == 0.1


def test_load_must_be_a_server_load() -> None:
    with pytest.raises(ValueError, match="load"):
        FaultServer(load={"capacity": 2})  # type: ignore[arg-type]
    server = FaultServer()
    with pytest.raises(ValueError, match="load"):
        server.load = {"capacity": 2}  # type: ignore[assignment]


async def test_a_new_load_applies_from_the_next_request() -> None:
    """Assigning load (or one of its fields) reshapes a running server, validated as ever."""
    async with FaultServer(rate_limit=1, rate_burst=1) as server, client() as session:
        first = [await _get(session, server.url) for _ in range(2)]
        server.load = dataclasses.replace(server.load, rate_limit=None, rate_burst=None)
        later = [await _get(session, server.url) for _ in range(3)]
        with pytest.raises(ValueError, match="capacity"):
            server.capacity = 0
        server.exempt_paths = ["/x"]  # type: ignore[assignment]
    assert [status for status, _ in first] == [200, 429]
    assert [status for status, _ in later] == [200, 200, 200]
    assert server.shed_counts == {"rate": 1}
    assert server.load == ServerLoad(exempt_paths={"/x"})
