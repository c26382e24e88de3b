"""Which failures may be retried, judged by whether the request can have reached the server."""

from __future__ import annotations

import asyncio
import enum

import aiohttp

from ._exceptions import BodyNotReplayableError, ResilientError, RetriesExhaustedError

__all__ = ["VERDICTS", "Verdict", "classify"]


class Verdict(enum.Enum):
    """What a failure says about retrying the request that met it."""

    #: The request never left: retry it whatever its method (connect phase, DNS, pool wait).
    NOT_SENT = "not sent"
    #: The request may have reached the server: retry only an idempotent request.
    MAYBE_SENT = "maybe sent"
    #: Retrying cannot help (bad URL, TLS verification, redirects) or is not ours to judge.
    NEVER = "never"


_NOT_SENT = Verdict.NOT_SENT
_MAYBE_SENT = Verdict.MAYBE_SENT
_NEVER = Verdict.NEVER

#: One explicit verdict per exception class; a subclass without an entry takes its nearest
#: ancestor's. A test walks every ``aiohttp.ClientError`` subclass and asserts it is listed here,
#: so a new aiohttp error class is a failing test, not a silent guess.
VERDICTS: dict[type[BaseException], Verdict] = {
    aiohttp.ClientError: _NEVER,
    # Connection-level failures: was anything written?
    aiohttp.ClientConnectionError: _MAYBE_SENT,
    aiohttp.ClientOSError: _MAYBE_SENT,  # errno 104 reset after the request went out
    aiohttp.ClientConnectionResetError: _MAYBE_SENT,  # write to a closing transport: ambiguous
    aiohttp.ClientConnectorError: _NOT_SENT,  # refused, unreachable: nothing was sent
    aiohttp.ClientConnectorDNSError: _NOT_SENT,
    aiohttp.ClientProxyConnectionError: _NOT_SENT,
    aiohttp.client_exceptions.UnixClientConnectorError: _NOT_SENT,
    aiohttp.ClientSSLError: _NEVER,  # a TLS handshake that failed fails again
    aiohttp.ClientConnectorSSLError: _NEVER,
    aiohttp.ClientConnectorCertificateError: _NEVER,  # verification failure is permanent
    aiohttp.ServerConnectionError: _MAYBE_SENT,
    aiohttp.ServerDisconnectedError: _MAYBE_SENT,  # FIN before the response completed
    aiohttp.ServerFingerprintMismatch: _NEVER,  # a pinned certificate that changed: an attack?
    aiohttp.ServerTimeoutError: _MAYBE_SENT,
    aiohttp.ConnectionTimeoutError: _NOT_SENT,  # pool wait + DNS + TCP + TLS
    aiohttp.SocketTimeoutError: _MAYBE_SENT,  # sock_read expired: the request was sent
    aiohttp.ClientPayloadError: _MAYBE_SENT,  # body cut: the response had started
    # Errors about the response or the request itself: the same request meets them again.
    aiohttp.ClientResponseError: _NEVER,
    aiohttp.ClientHttpProxyError: _NEVER,  # the proxy refused CONNECT
    aiohttp.ContentTypeError: _NEVER,
    aiohttp.TooManyRedirects: _NEVER,
    aiohttp.WSServerHandshakeError: _NEVER,
    aiohttp.InvalidURL: _NEVER,
    aiohttp.InvalidUrlClientError: _NEVER,
    aiohttp.InvalidUrlRedirectClientError: _NEVER,
    aiohttp.NonHttpUrlClientError: _NEVER,
    aiohttp.NonHttpUrlRedirectClientError: _NEVER,
    aiohttp.RedirectClientError: _NEVER,
    aiohttp.client_exceptions.UploadAbortedError: _NEVER,  # the caller aborted the upload
    # Our own: a give-up is final, and so is a body that cannot be sent again.
    ResilientError: _NEVER,
    RetriesExhaustedError: _NEVER,
    BodyNotReplayableError: _NEVER,
    # Not aiohttp's, but met under it: a raw socket error, or an expired timer of our own.
    ConnectionError: _MAYBE_SENT,  # reset, aborted, broken pipe
    ConnectionRefusedError: _NOT_SENT,
    asyncio.TimeoutError: _NEVER,  # aiohttp's total timeout, or the caller's: the budget is spent
    TimeoutError: _NEVER,  # the same class since Python 3.11, a different one on 3.10
}

_cache: dict[type[BaseException], Verdict] = {}


def classify(exc: BaseException) -> Verdict:
    """The verdict on ``exc``: whether the request can have reached the server, or never retry.

    aiohttp's classes are matched before the builtin ones they also derive from (its timeouts are
    ``TimeoutError`` and ``OSError`` too), by walking the class's MRO, nearest first.

    Usage::

        if classify(exc) is Verdict.NOT_SENT: ...
    """
    cls = type(exc)
    verdict = _cache.get(cls)
    if verdict is None:
        verdict = next((VERDICTS[base] for base in cls.__mro__ if base in VERDICTS), _NEVER)
        _cache[cls] = verdict
    return verdict
