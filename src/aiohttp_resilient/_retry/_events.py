"""The facts about a retry or a give-up, for logs, hooks and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._util._redact import redact_text

__all__ = ["Attempt", "RetryEvent", "RetryHook", "check_hooks", "describe_error"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One attempt of a request, as it ended.

    Attributes:
        number: 1 for the first attempt.
        status: The response status, if a response arrived.
        error: The exception the attempt failed with, if any.
        reused_connection: Whether it ran on a pooled keep-alive connection (``None``: unknown,
            the session's connector does not tell).
        elapsed: Seconds from its start to its end.
    """

    number: int
    status: int | None = None
    error: BaseException | None = None
    reused_connection: bool | None = None
    elapsed: float = 0.0

    @property
    def outcome(self) -> str:
        """``"HTTP 503"``, or the error's class and message."""
        if self.error is not None:
            return describe_error(self.error)
        return f"HTTP {self.status}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryEvent:
    """What :attr:`on_retry` and :attr:`on_giveup` hooks receive, and what is logged.

    Attributes:
        method: The HTTP method (``None`` for :func:`retry_on_disconnect`, which sees no request).
        url: The URL with user info and credential-like query values redacted (or the decorated
            function's qualified name).
        attempt: The number of the attempt that just failed (1-based).
        cause: What it failed with: ``"HTTP 503"`` or the error's class and redacted message.
        error: The exception, if it failed with one.
        status: The response status, if it got one.
        delay: Seconds until the next attempt; ``None`` on a give-up.
        reason: Why this retry or give-up: ``"stale keep-alive connection"``, ``"backoff"``,
            ``"Retry-After"``, or the reason for giving up.
    """

    method: str | None
    url: str
    attempt: int
    cause: str
    error: BaseException | None
    status: int | None
    delay: float | None
    reason: str


#: A hook takes the event; it may be a plain function or a coroutine function.
RetryHook = Callable[[RetryEvent], Awaitable[None] | None]


def check_hooks(**hooks: object) -> None:
    """Raise ``ValueError`` naming the first hook that is neither ``None`` nor callable."""
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise ValueError(f"{name} must be callable, got {hook!r}")


def describe_error(error: BaseException) -> str:
    """``"ServerDisconnectedError: Server disconnected"``, with secrets redacted."""
    message = str(error)
    name = type(error).__name__
    return f"{name}: {redact_text(message)}" if message else name
