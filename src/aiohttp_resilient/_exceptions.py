"""The errors this library raises.

Every one of them is an :class:`aiohttp.ClientError`, so ``except aiohttp.ClientError`` keeps
working in code that did not know about this library::

    aiohttp.ClientError
     └── ResilientError
          ├── RetriesExhaustedError   gave up: attempts used, deadline or Retry-After too long
          │    └── RetryBudgetExhaustedError  the host's retry budget refused the retry
          ├── CircuitOpenError        the host's breaker is open and the call cannot wait
          ├── BodyNotReplayableError  a retry would have to re-send a body that is already spent
          └── DownloadError           download() could not complete or verify the file

Neither is a :class:`aiohttp.ClientOSError` nor a :class:`aiohttp.ServerDisconnectedError`: aiohttp
silently runs the whole middleware chain once more when it sees one of those two, which would
multiply the attempts a policy allows.

Invalid configuration raises :class:`ValueError` (naming the field) at construction, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from ._retry._events import Attempt

__all__ = [
    "BodyNotReplayableError",
    "CircuitOpenError",
    "DownloadError",
    "ResilientError",
    "RetriesExhaustedError",
    "RetryBudgetExhaustedError",
    "cause_name",
]


class ResilientError(aiohttp.ClientError):
    """Base class of every error raised by aiohttp-resilient."""


class RetriesExhaustedError(ResilientError):
    """The request failed and the policy allows no further attempt.

    Raised ``from`` the last failure (``__cause__``), so the traceback shows what went wrong.

    Attributes:
        method: The HTTP method, or ``None`` when raised by :func:`retry_on_disconnect`.
        url: The URL with credentials redacted, or ``None`` for the decorator.
        attempts: How many attempts were made (the server saw at most this many).
        history: One :class:`Attempt` per attempt, oldest first.
        reason: Why no further attempt was made, in words.
        last_failure: What the last attempt failed with (``"HTTP 503"``, or the error's class
            and redacted message), or ``None`` when no attempt was made.
        status: The HTTP status of the last attempt, if it got a response.
        retry_after: The server's ``Retry-After`` in seconds, when that is what ended the retries.
    """

    def __init__(
        self,
        *,
        method: str | None,
        url: str | None,
        attempts: int,
        history: tuple[Attempt, ...],
        reason: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.attempts = attempts
        self.history = history
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.last_failure = history[-1].outcome if history else None
        target = f"{method} {url}: " if method is not None else ""
        plural = "" if attempts == 1 else "s"
        message = f"{target}gave up after {attempts} attempt{plural}: {reason}"
        if self.last_failure is not None:
            message += f"; last failure: {self.last_failure}"
            if len(history) > 1:
                message += f"; attempts: {count_outcomes(history)}"
        super().__init__(message)


class RetryBudgetExhaustedError(RetriesExhaustedError):
    """A retry was due, but the host's retry budget is spent: too many retries to it have
    failed lately, and more would only add load to a host in trouble.

    Final: no enclosing retry layer of this library sends the call again.

    Attributes:
        host: ``scheme://host:port``.
        allowance: Retries the budget allows in its window now.
        spent: Failed retries charged in the window.
    """

    def __init__(
        self,
        *,
        method: str | None,
        url: str | None,
        attempts: int,
        history: tuple[Attempt, ...],
        host: str,
        allowance: float,
        spent: float,
        status: int | None = None,
    ) -> None:
        self.host = host
        self.allowance = allowance
        self.spent = spent
        reason = (
            f"the retry budget of {host} is spent ({spent:.0f} failed retries against an "
            f"allowance of {allowance:.0f} in its window); the host is failing most retries. "
            "Raise BudgetPolicy.ratio or min_per_second to retry more, or pass "
            "HealthPolicy(budget=None) to turn the budget off"
        )
        super().__init__(
            method=method,
            url=url,
            attempts=attempts,
            history=history,
            reason=reason,
            status=status,
        )


class CircuitOpenError(ResilientError):
    """The host's circuit breaker is open: it failed every call for a while, and this call
    could not wait for the probe. Calls wait for the probe only while the outage is younger
    than ``BreakerPolicy.patience`` (and within their deadline); after that they fail at once,
    until a probe finds the host back.

    Attributes:
        host: ``scheme://host:port`` (``call://name`` for a decorated function).
        retry_in: Seconds until the next probe goes (0 when one is out now).
        reason: Why the breaker opened, in words.
        waited: Seconds this call waited for the probe before giving up.
        down_for: Seconds since the breaker opened (the outage so far), when known.
    """

    def __init__(
        self,
        *,
        host: str,
        retry_in: float,
        reason: str,
        waited: float,
        down_for: float | None = None,
    ) -> None:
        self.host = host
        self.retry_in = retry_in
        self.reason = reason
        self.waited = waited
        self.down_for = down_for
        when = f"the next probe goes in {retry_in:.3g}s" if retry_in > 0 else "a probe is out"
        down = "" if down_for is None else f"down for {down_for:.3g}s, "
        super().__init__(
            f"circuit open for {host} ({reason}): {down}{when}; this call waited {waited:.3g}s "
            "(calls wait for the probe while the outage is younger than BreakerPolicy.patience, "
            "and within their deadline)"
        )


class BodyNotReplayableError(ResilientError):
    """A retry was due, but the request body cannot be sent again.

    Streamed bodies (an async generator, a non-seekable file) are consumed by the first attempt;
    aiohttp would re-send them empty. Instead of that, the retry stops here and this error names the
    body. Pass ``bytes``, a seekable file, ``json=`` or ``FormData`` to make a request retryable.

    Attributes:
        method: The HTTP method.
        url: The URL with credentials redacted.
        body_type: The type name of the payload that cannot be replayed.
        attempts: How many attempts were made before this one was refused.
        status: The status the last attempt got, when it got one (the error is then raised
            without a ``__cause__``: the status is what failed).
        last_failure: What the last attempt failed with: ``"HTTP 503"``, or the error's class
            and redacted message.
    """

    def __init__(
        self,
        *,
        method: str,
        url: str,
        body_type: str,
        attempts: int,
        status: int | None = None,
        last_failure: str | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.body_type = body_type
        self.attempts = attempts
        self.status = status
        self.last_failure = last_failure
        failed = f" failed with {last_failure}" if last_failure is not None else ""
        super().__init__(
            f"{method} {url}: attempt {attempts}{failed}, and cannot be retried: the request "
            f"body ({body_type}) was consumed by the first attempt and would be re-sent empty; "
            "use bytes, a seekable file, json= or FormData for a retryable body"
        )


def count_outcomes(history: tuple[Attempt, ...]) -> str:
    """``"3x HTTP 503, 2x ServerDisconnectedError"``: each kind of failure, most frequent first."""
    counts: dict[str, int] = {}
    for attempt in history:
        kind = (
            type(attempt.error).__name__ if attempt.error is not None else f"HTTP {attempt.status}"
        )
        counts[kind] = counts.get(kind, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])  # stable: first seen first on ties
    return ", ".join(f"{count}x {kind}" for kind, count in ranked)


class DownloadError(ResilientError):
    """:func:`download` could not complete or verify a file; the message says what the server did.

    Raised for a ``416``, a ``206`` that does not fit the part file, a size or checksum mismatch,
    or a body cut too often; ``__cause__`` holds the last cut when there was one.

    Attributes:
        url: The URL, credentials redacted.
        path: The file that was being written.
    """

    def __init__(self, message: str, *, url: str, path: Path) -> None:
        super().__init__(f"download of {url} to {path}: {message}")
        self.url = url
        self.path = path


def cause_name(error: BaseException) -> str:
    """What a failure comes down to, as a short name to count by: ``"HTTP 503"`` for a give-up
    on a status, else the class of the error (of its cause, for this library's give-ups)."""
    status = getattr(error, "status", None)
    if isinstance(error, ResilientError) and isinstance(status, int):
        return f"HTTP {status}"
    if isinstance(error, ResilientError) and error.__cause__ is not None:
        error = error.__cause__
    return type(error).__name__
