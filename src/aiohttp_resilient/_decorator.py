"""@retry_on_disconnect: re-run a coroutine function when the connection fails under it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from ._classify import Verdict, classify
from ._engine import Clock, RetryRun, Sleep, deadline_timer, timer_expired
from ._events import Attempt, RetryHook
from ._middleware import HANDLED_ATTR
from ._policy import RetryPolicy

__all__ = ["retry_on_disconnect"]

P = ParamSpec("P")
T = TypeVar("T")

_Decorated = Callable[P, Coroutine[Any, Any, T]]


@overload
def retry_on_disconnect(func: Callable[P, Awaitable[T]], /) -> _Decorated[P, T]: ...


@overload
def retry_on_disconnect(
    func: None = None,
    /,
    *,
    policy: RetryPolicy | None = None,
    attempts: int | None = None,
    backoff_base: float | None = None,
    backoff_max: float | None = None,
    deadline: float | None = None,
    on_retry: RetryHook | None = None,
    on_giveup: RetryHook | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> Callable[[Callable[P, Awaitable[T]]], _Decorated[P, T]]: ...


def retry_on_disconnect(
    func: Callable[P, Awaitable[T]] | None = None,
    /,
    *,
    policy: RetryPolicy | None = None,
    attempts: int | None = None,
    backoff_base: float | None = None,
    backoff_max: float | None = None,
    deadline: float | None = None,
    on_retry: RetryHook | None = None,
    on_giveup: RetryHook | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
) -> _Decorated[P, T] | Callable[[Callable[P, Awaitable[T]]], _Decorated[P, T]]:
    """Re-run an ``async def`` function when a connection fails under it.

    It retries the disconnect family (server disconnects, resets, refused connections, connect
    and read timeouts, bodies cut short), with the policy's backoff schedule and deadline, and
    gives up with :class:`RetriesExhaustedError` raised from the last error. Everything else
    propagates at once, and so does anything a :class:`RetryMiddleware` inside already dealt
    with: its give-up, and the failures it judged unsafe to repeat (a disconnected POST). So a
    decorated function that uses a :func:`resilient_session` never multiplies attempts.

    Decorating says the whole function is safe to run again: make it so (idempotent requests,
    or an ``Idempotency-Key``).

    Usage::

        @retry_on_disconnect
        async def fetch(session, url): ...

        @retry_on_disconnect(attempts=3, deadline=10.0)
        async def fetch(session, url): ...

    Args:
        func: The coroutine function, when used bare.
        policy: The policy (its ``attempts``, backoff fields and ``deadline`` apply).
        attempts: Overrides ``policy.attempts``.
        backoff_base: Overrides ``policy.backoff_base``.
        backoff_max: Overrides ``policy.backoff_max``.
        deadline: Overrides ``policy.deadline``.
        on_retry: Hook called with a :class:`RetryEvent` before each wait.
        on_giveup: Hook called with a :class:`RetryEvent` on giving up.
        sleep: The wait function (inject a fake one in tests).
        clock: A monotonic clock in seconds (inject a fake one in tests).

    Raises:
        TypeError: ``func`` is not a coroutine function.
        ValueError: A policy field is invalid (named in the message).
    """
    if policy is not None and not isinstance(policy, RetryPolicy):
        raise TypeError(f"policy must be a RetryPolicy, got {type(policy).__name__}")
    changes = {
        name: value
        for name, value in (
            ("attempts", attempts),
            ("backoff_base", backoff_base),
            ("backoff_max", backoff_max),
            ("deadline", deadline),
        )
        if value is not None
    }
    base = policy or RetryPolicy()
    resolved = base.replace(**changes) if changes else base

    def decorate(function: Callable[P, Awaitable[T]]) -> _Decorated[P, T]:
        if not _is_coroutine_function(function):
            raise TypeError(
                f"retry_on_disconnect decorates async def functions; {function!r} is not one"
            )
        name = getattr(function, "__qualname__", repr(function))

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            started = clock()
            run: RetryRun | None = None
            number = 0
            while True:
                number += 1
                attempt_started = clock()
                timer = None
                try:
                    if resolved.deadline is None:
                        return await function(*args, **kwargs)
                    timer = deadline_timer(started + resolved.deadline - clock())
                    async with timer:
                        return await function(*args, **kwargs)
                except Exception as exc:
                    expired = timer is not None and timer_expired(timer)
                    if not expired and not _retryable(exc):
                        raise
                    attempt = Attempt(number=number, error=exc, elapsed=clock() - attempt_started)
                    if run is None:
                        run = RetryRun(
                            resolved,
                            method=None,
                            url=name,
                            started=started,
                            clock=clock,
                            sleep=sleep,
                            on_retry=on_retry,
                            on_giveup=on_giveup,
                        )
                    delay, reason = run.decide(attempt)
                    if expired:
                        delay = None
                        reason = (
                            f"the deadline of {resolved.deadline:g}s passed during attempt {number}"
                        )
                    if delay is None:
                        raise await run.give_up(attempt, reason) from exc
                    await run.retry(attempt, delay, reason)

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def _retryable(exc: Exception) -> bool:
    if getattr(exc, HANDLED_ATTR, False):
        return False  # a RetryMiddleware below judged it unsafe to repeat
    return classify(exc) is not Verdict.NEVER


def _is_coroutine_function(function: object) -> bool:
    # inspect's check, not asyncio's (deprecated in 3.14); also an object with async __call__.
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - we want the async __call__ itself
    )
