"""Which failures may be retried, judged by whether the request can have reached the server."""

from __future__ import annotations

import asyncio
import enum
import re
from typing import Final

import aiohttp

from .._exceptions import (
    BodyNotReplayableError,
    CircuitOpenError,
    DownloadError,
    ResilientError,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
)

__all__ = [
    "HANDLED_ATTR",
    "VERDICTS",
    "Signal",
    "Verdict",
    "bad_host_name",
    "classify",
    "malformed_host",
    "signal_of_error",
    "signal_of_status",
]


#: Set on an exception a RetryMiddleware let through as not retryable, so that an enclosing
#: ``@retry_on_disconnect`` does not retry what was judged unsafe.
HANDLED_ATTR: Final = "_aiohttp_resilient_handled"


class Verdict(enum.Enum):
    """What a failure says about retrying the request that met it."""

    #: The request never left: retry it whatever its method (connect phase, DNS, pool wait).
    NOT_SENT = "not sent"
    #: The request may have reached the server: retry only an idempotent request.
    MAYBE_SENT = "maybe sent"
    #: Retrying cannot help (bad URL, TLS verification, redirects) or is not ours to judge.
    NEVER = "never"


class Signal(enum.Enum):
    """What an attempt's end says about its host's health (see :class:`HostHealth`)."""

    #: An answer below 400: the host is up and serving.
    SERVED = "served"
    #: An answer that says nothing about load: a 4xx other than 429, or a 5xx other than 503.
    #: 4xx means the host is up; 5xx counts as a failure for the breaker.
    ANSWERED = "answered"
    #: 429: the host limits this client; a congestion signal, not a failure.
    THROTTLED = "throttled"
    #: 503: the host is overloaded or down; a congestion signal and a failure.
    UNAVAILABLE = "unavailable"
    #: A 5xx other than 503: a failure for the breaker.
    SERVER_ERROR = "server error"
    #: Reset, disconnect or read timeout before any response: a failure and a congestion signal.
    DROPPED = "dropped"
    #: The body was cut after the response started: a failure.
    CUT = "cut"
    #: The connection could not be made (DNS, a proxy, an unreachable network): a failure.
    UNREACHABLE = "unreachable"
    #: The connection was refused (ECONNREFUSED: nothing listens): a failure that needs no
    #: failure span to open the breaker (a loaded host resets or answers 503; it does not refuse).
    REFUSED = "refused"
    #: The client's own doing or no news of the host (TLS verification, pool wait, the
    #: stale keep-alive race, a deadline, cancellation): counts for nothing.
    LOCAL = "local"


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
    RetryBudgetExhaustedError: _NEVER,
    CircuitOpenError: _NEVER,
    DownloadError: _NEVER,  # the server's answer does not fit the file: the same again
    # Not aiohttp's, but met under it: a raw socket error, or an expired timer of our own.
    ConnectionError: _MAYBE_SENT,  # reset, aborted, broken pipe
    ConnectionRefusedError: _NOT_SENT,
    asyncio.TimeoutError: _NEVER,  # aiohttp's total timeout, or the caller's: the budget is spent
    TimeoutError: _NEVER,  # the same class since Python 3.11, a different one on 3.10
}

_cache: dict[type[BaseException], Verdict] = {}

#: A DNS name as resolvers take it: labels of letters, digits, '-' and '_' (seen in the wild),
#: 1-63 characters each, 253 in all, an optional final dot.
_HOST_NAME: Final = re.compile(r"(?=.{1,253}\.?$)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?")


def malformed_host(host: str | None) -> bool:
    """Whether ``host`` cannot be a DNS name (a space, an empty label, a label over 63
    characters): resolving it fails the same way every time. IP literals never get here (they
    are not resolved). Runs on DNS failures only."""
    if not host:
        return True
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return True
    return _HOST_NAME.fullmatch(ascii_host) is None


def bad_host_name(exc: BaseException) -> bool:
    """Whether ``exc`` is a DNS failure for a host name that cannot exist (the URL is wrong)."""
    return isinstance(exc, aiohttp.ClientConnectorDNSError) and malformed_host(exc.host)


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
    if verdict is _NOT_SENT and bad_host_name(exc):
        return _NEVER  # a malformed host name: retrying cannot help
    return verdict


#: The host signal of each exception class, nearest ancestor first; anything else is LOCAL.
_SIGNALS: dict[type[BaseException], Signal] = {
    aiohttp.ClientPayloadError: Signal.CUT,
    aiohttp.ClientSSLError: Signal.LOCAL,  # before ClientConnectorError in every MRO it shares
    aiohttp.ServerFingerprintMismatch: Signal.LOCAL,
    # Pool wait + DNS + TCP + TLS: aiohttp does not say which, and a queue of the client's own
    # must not look like a dead host (Envoy keeps local-origin errors apart likewise).
    aiohttp.ConnectionTimeoutError: Signal.LOCAL,
    aiohttp.ClientConnectorError: Signal.UNREACHABLE,
    aiohttp.ServerDisconnectedError: Signal.DROPPED,
    aiohttp.ServerTimeoutError: Signal.DROPPED,
    aiohttp.ClientOSError: Signal.DROPPED,
    aiohttp.ClientConnectionResetError: Signal.DROPPED,
    aiohttp.ServerConnectionError: Signal.DROPPED,
    ConnectionRefusedError: Signal.REFUSED,
    ConnectionError: Signal.DROPPED,
}
_signal_cache: dict[type[BaseException], Signal] = {}


def signal_of_error(exc: BaseException) -> Signal:
    """What an attempt that raised ``exc`` says about its host."""
    cls = type(exc)
    signal = _signal_cache.get(cls)
    if signal is None:
        signal = next((_SIGNALS[base] for base in cls.__mro__ if base in _SIGNALS), Signal.LOCAL)
        _signal_cache[cls] = signal
    if signal is Signal.UNREACHABLE:
        if bad_host_name(exc):
            return Signal.LOCAL  # the URL's mistake says nothing about any host
        if isinstance(getattr(exc, "os_error", None), ConnectionRefusedError):
            return Signal.REFUSED
    return signal


def signal_of_status(status: int) -> Signal:
    """What an answer with ``status`` says about its host."""
    if status < 400:
        return Signal.SERVED
    if status == 429:
        return Signal.THROTTLED
    if status == 503:
        return Signal.UNAVAILABLE
    if status >= 500:
        return Signal.SERVER_ERROR
    return Signal.ANSWERED
