"""Every aiohttp.ClientError subclass has an explicit verdict."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

import aiohttp_resilient
from aiohttp_resilient import VERDICTS, Verdict, classify


def _all_subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    stack = [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                stack.append(sub)
    return found


def test_every_client_error_subclass_has_an_explicit_verdict() -> None:
    """A new aiohttp error class fails this test until someone decides its verdict."""
    classes = {aiohttp.ClientError} | {
        cls
        for cls in _all_subclasses(aiohttp.ClientError)
        if cls.__module__.startswith(("aiohttp.", "aiohttp_resilient."))
    }
    missing = sorted(c.__qualname__ for c in classes if c not in VERDICTS)
    assert missing == []


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (aiohttp.ServerDisconnectedError(), Verdict.MAYBE_SENT),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), Verdict.MAYBE_SENT),
        (aiohttp.ClientPayloadError("cut"), Verdict.MAYBE_SENT),
        (aiohttp.SocketTimeoutError(), Verdict.MAYBE_SENT),
        (aiohttp.ConnectionTimeoutError(), Verdict.NOT_SENT),
        (ConnectionResetError(), Verdict.MAYBE_SENT),
        (ConnectionRefusedError(), Verdict.NOT_SENT),
        (asyncio.TimeoutError(), Verdict.NEVER),
        (aiohttp.InvalidURL("x"), Verdict.NEVER),
        (ValueError(), Verdict.NEVER),
        (FileNotFoundError(), Verdict.NEVER),
        (
            aiohttp_resilient.RetriesExhaustedError(
                method="GET", url="u", attempts=1, history=(), reason="r"
            ),
            Verdict.NEVER,
        ),
    ],
)
def test_verdicts(error: BaseException, verdict: Verdict) -> None:
    """aiohttp's classes are matched before the builtins they also derive from."""
    assert classify(error) is verdict


@pytest.mark.parametrize(
    "cls",
    [
        aiohttp.ClientConnectorCertificateError,
        aiohttp.ClientConnectorSSLError,
        aiohttp.ClientSSLError,
        aiohttp.ServerFingerprintMismatch,
    ],
)
def test_tls_failures_are_never_retried(cls: type) -> None:
    """TLS verification and handshake failures are permanent."""
    assert VERDICTS[cls] is Verdict.NEVER


@pytest.mark.parametrize(
    "cls",
    [
        aiohttp.ClientConnectorError,
        aiohttp.ClientConnectorDNSError,
        aiohttp.ClientProxyConnectionError,
        aiohttp.ConnectionTimeoutError,
    ],
)
def test_connect_phase_failures_were_not_sent(cls: type) -> None:
    """Refused, DNS, proxy connect and connect timeouts: safe to retry any method."""
    assert VERDICTS[cls] is Verdict.NOT_SENT
