"""diagnose's verdicts and conclusions from findings: pure logic."""

from __future__ import annotations

import pytest
from yarl import URL

from _helpers import closed_port
from aiohttp_resilient._cli._diagnose._keepalive import _verdict, suggested_keepalive
from aiohttp_resilient._cli._diagnose._model import DiagnoseConfig, Step
from aiohttp_resilient._cli._diagnose._report import conclude


@pytest.mark.parametrize(
    ("server", "suggested"), [(2.0, 1.5), (1.99, 1.5), (5.0, 3.8), (0.5, 0.4), (0.1, 0.1)]
)
def test_suggested_keepalive_is_under_the_servers(server: float, suggested: float) -> None:
    """Three quarters of the server's idle timeout, in tenths, never 0."""
    assert suggested_keepalive(server) == pytest.approx(suggested)
    assert suggested_keepalive(server) <= server


#: The default preset: a pool that keeps idle connections 4 s.
POOL_4S = DiagnoseConfig(url=URL("http://127.0.0.1/"))


@pytest.mark.parametrize(
    ("held", "verdict"), [(4.0, "ok"), (8.0, "ok"), (3.9, "info"), (1.0, "info")]
)
def test_a_server_that_never_closed(held: float, verdict: str) -> None:
    """Gaps as long as the pool's idle time with no close: ok; shorter: not enough to tell."""
    facts = {"server_idle_timeout": None, "held": held, "requests": 3}
    assert _verdict(facts, 1.0, POOL_4S).verdict == verdict


@pytest.mark.parametrize(("server", "verdict"), [(2.0, "warn"), (4.0, "warn"), (5.0, "ok")])
def test_a_server_that_closed(server: float, verdict: str) -> None:
    """A server closing before (or as) the pool does is the stale-connection race."""
    facts = {"server_idle_timeout": server, "detected_by": "FIN", "requests": 2}
    assert _verdict(facts, 1.0, POOL_4S).verdict == verdict


def test_tls_conclusions_never_turn_verification_off() -> None:
    """Each TLS cause gets a fix, and none of them disables verification."""
    config = DiagnoseConfig(url=URL("https://example.org/"))
    for cause in ("self-signed", "unknown CA", "expired", "not yet valid", "wrong host", "?"):
        facts = {"verified": False, "cause": cause, "names": ["other.org"]}
        (conclusion,) = conclude(
            [Step(name="tls", verdict="fail", seconds=0, summary="", facts=facts)], config
        )
        assert conclusion.fix
        for bad in ("verify=False", "ssl=False", "CERT_NONE", "check_hostname=False"):
            assert bad not in conclusion.fix


def test_a_close_bracketed_by_a_failed_request_suggests_under_the_lower_bound() -> None:
    """A request that failed after a gap: the timeout lies between the last gap survived and
    that one; the suggestion is under the lower bound, which the server is known to allow."""
    facts = {
        "server_idle_timeout": 2.0,
        "bracket": [1.0, 2.0],
        "detected_by": "failed request",
        "requests": 3,
    }
    step = _verdict(facts, 1.0, POOL_4S)
    assert step.verdict == "warn"
    assert "between 1.00 and 2.00 s" in step.summary
    assert step.facts["suggested_keepalive_timeout"] == pytest.approx(0.8)


async def test_repeat_concludes_on_connections_that_could_not_be_opened() -> None:
    """Repeat GETs to a port nothing listens on fail in the connect phase: nothing was sent,
    and the conclusion says so (it said nothing)."""
    from aiohttp_resilient._cli._diagnose._http import probe_repeat

    port = closed_port()
    config = DiagnoseConfig(url=URL(f"http://127.0.0.1:{port}/"), repeat=3, timeout=5.0)
    step = await probe_repeat(config)
    (found,) = conclude([step], config)
    assert found.step == "repeat"
    assert "3/3 connections could not be opened (ClientConnectorError), every time" in found.cause
    assert "connect step" in found.fix
    assert step.facts["not_sent"] == {"ClientConnectorError": 3}
