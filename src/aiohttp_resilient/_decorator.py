"""@retry_on_disconnect: re-run a coroutine function when the connection fails under it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from ._classify import Signal, Verdict, classify, signal_of_error
from ._decision import next_step_after_error
from ._engine import Clock, RetryRun, Sleep, deadline_timer, timer_expired
from ._events import Attempt, RetryHook, check_hooks
from ._exceptions import CircuitOpenError
from ._health import HealthPolicy, HostClaim, HostHealth, WaitExpiredError
from ._limiter import HostKey
from ._middleware import HANDLED_ATTR
from ._policy import RetryPolicy
from ._stats import GIVEUP_CIRCUIT, GIVEUP_DEADLINE, STATS_ATTR, StatsRecorder

__all__ = ["retry_on_disconnect"]

#: The decorator's default host health: the retry budget alone (see ``health=``).
DECORATOR_HEALTH = HealthPolicy(breaker=None, adaptive_limit=None, adaptive_rate=None)

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
    health: HostHealth | HealthPolicy | None = None,
    stats: StatsRecorder | bool = True,
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
    health: HostHealth | HealthPolicy | None = None,
    stats: StatsRecorder | bool = True,
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
        health: The host-health state the calls share (:class:`HostHealth`), or the
            :class:`HealthPolicy` of a new one per decorated function. The decorated function
            counts as one host, keyed ``("call", qualified name, None)``. By default it has a
            retry budget only (:data:`DECORATOR_HEALTH`): disconnects go again at once while
            retries mostly succeed, and retries that keep failing are refused. No breaker by
            default: one function may call many hosts, and one dead host must not stop its
            calls to the others; pass ``HealthPolicy(...)`` with a breaker for a function
            that calls one host.
        stats: Count calls, attempts, retries, give-ups and latency (read them with
            ``stats(decorated_function)``): ``True`` (a new :class:`StatsRecorder` per decorated
            function), a recorder to share, or ``False`` for none.
        sleep: The wait function (inject a fake one in tests).
        clock: A monotonic clock in seconds (inject a fake one in tests).

    Raises:
        TypeError: ``func`` is not a coroutine function.
        ValueError: An argument or a policy field is invalid (named in the message).
    """
    if policy is not None and not isinstance(policy, RetryPolicy):
        raise ValueError(f"policy must be a RetryPolicy, got {type(policy).__name__}")
    check_hooks(on_retry=on_retry, on_giveup=on_giveup)
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

    if isinstance(health, HostHealth):
        shared: HostHealth | None = health
    elif health is None or isinstance(health, HealthPolicy):
        shared = None
    else:
        raise ValueError(
            f"health must be a HostHealth or HealthPolicy, got {type(health).__name__}"
        )
    if not isinstance(stats, (bool, StatsRecorder)):
        raise ValueError(f"stats must be a bool or a StatsRecorder, got {type(stats).__name__}")

    def decorate(function: Callable[P, Awaitable[T]]) -> _Decorated[P, T]:
        if not _is_coroutine_function(function):
            raise TypeError(
                f"retry_on_disconnect decorates async def functions; {function!r} is not one"
            )
        name = getattr(function, "__qualname__", repr(function))
        state = shared or HostHealth(
            health if isinstance(health, HealthPolicy) else DECORATOR_HEALTH,
            clock=clock,
            sleep=sleep,
        )

        key: HostKey = ("call", name, None)
        recorder = StatsRecorder() if stats is True else (stats or None)

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            started = clock()
            wait_until = None if resolved.deadline is None else started + resolved.deadline
            run: RetryRun | None = None
            number = 0
            charged_at: float | None = None
            while True:
                number += 1
                claim = state.try_claim(key, clock(), number == 1, charged_at)
                if claim is None:
                    claim = await _claim(run, number, charged_at, wait_until)
                timer = None
                try:
                    if resolved.deadline is None:
                        result = await function(*args, **kwargs)
                    else:
                        timer = deadline_timer(started + resolved.deadline - clock())
                        async with timer:
                            result = await function(*args, **kwargs)
                except Exception as exc:
                    now = clock()
                    expired = timer is not None and timer_expired(timer)
                    signal = Signal.LOCAL if expired else signal_of_error(exc)
                    claim.end(signal, now)
                    if not expired and not _retryable(exc):
                        if recorder is not None:
                            recorder.not_retried(
                                key,
                                () if run is None else run.history,
                                now - claim.started,
                                now - started,
                            )
                        raise
                    attempt = Attempt(number=number, error=exc, elapsed=now - claim.started)
                    if run is None:
                        run = _new_run(started)
                    if expired:
                        run.record(attempt)
                        reason = (
                            f"the deadline of {resolved.deadline:g}s passed during attempt {number}"
                        )
                        raise await run.give_up(attempt, reason, kind=GIVEUP_DEADLINE) from exc
                    delay, reason, charged_at = await next_step_after_error(
                        state, run, claim, attempt, now, signal
                    )
                    if delay is None:
                        raise await run.give_up(attempt, reason) from exc
                    await run.retry(attempt, delay, reason)
                except BaseException:  # cancelled: free the claim, never retry or swallow
                    claim.abandon(clock())
                    raise
                else:
                    now = clock()
                    claim.end(Signal.SERVED, now)
                    if recorder is not None:
                        recorder.served(key, now - started, now - claim.started, run)
                    return result

        def _new_run(started: float) -> RetryRun:
            return RetryRun(
                resolved,
                method=None,
                url=name,
                started=started,
                clock=clock,
                sleep=sleep,
                on_retry=on_retry,
                on_giveup=on_giveup,
                stats=recorder,
                key=key,
            )

        async def _claim(
            run: RetryRun | None, number: int, charged_at: float | None, wait_until: float | None
        ) -> HostClaim:
            # The slow path: the breaker is open, or the rate paces the calls.
            last = run.history[-1].error if run is not None and run.history else None
            try:
                return await state.claim(
                    key,
                    first=number == 1,
                    charged_at=charged_at,
                    wait_until=wait_until,
                    last_error=last,
                )
            except WaitExpiredError as expired:
                if run is None:
                    run = _new_run(clock())
                reason = (
                    f"the deadline of {resolved.deadline:g}s passed while attempt {number} "
                    f"waited for {expired.waited_for}"
                )
                raise await run.give_up(None, reason, kind=GIVEUP_DEADLINE) from last
            except CircuitOpenError as exc:
                # Told like any give-up.
                await (run or _new_run(clock())).give_up(None, str(exc), kind=GIVEUP_CIRCUIT)
                raise

        setattr(wrapper, STATS_ATTR, (recorder, state))  # what stats(wrapper) reads
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
