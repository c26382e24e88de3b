"""@retry_on_disconnect: re-run a coroutine function when the connection fails under it."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .._health._claim import HostClaim
from .._health._hosts import HostHealth
from .._health._limiter import HostKey
from .._health._policy import HealthPolicy
from .._observe._stats import STATS_ATTR, StatsRecorder
from .._store._base import HealthStore
from .._util._timing import Clock, Sleep
from ._classify import HANDLED_ATTR, Signal, Verdict, classify, signal_of_error
from ._events import Attempt, RetryHook, check_hooks
from ._loop import Judged, Refusal, retry_loop
from ._policy import RetryPolicy
from ._run import RetryRun

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
    store: HealthStore | None = None,
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
    store: HealthStore | None = None,
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
        store: A :class:`HealthStore` shared with other processes, as on
            ``HostHealth(store=...)``: the retry budget of the decorated function (its
            "host") is then the fleet's (a breaker in ``health``'s policy stays this
            process's: its news rides on per-host slots, which a decorated function has not).
            Not with a ``HostHealth`` (give the store to it).
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
    if store is not None and (shared is not None or not isinstance(store, HealthStore)):
        raise ValueError(
            "store must be a HealthStore, and not with a HostHealth (give the store to it)"
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
            store=store,
        )

        key: HostKey = ("call", name, None)
        recorder = StatsRecorder() if stats is True else (stats or None)
        hooks = (on_retry, on_giveup)

        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            attempts = _FunctionAttempts(
                function, args, kwargs, resolved, name, key, clock, sleep, hooks, recorder
            )
            started = clock()
            claim = None if resolved.deadline is not None else state.try_claim(key, started, True)
            if claim is None:  # a wait, or a deadline: the loop sends every attempt
                return await retry_loop(state, attempts, key, resolved, started, clock, recorder)
            try:
                result = await function(*args, **kwargs)
            except Exception as exc:
                return await retry_loop(
                    state,
                    attempts,
                    key,
                    resolved,
                    started,
                    clock,
                    recorder,
                    number=1,
                    claim=claim,
                    error=exc,
                )
            except BaseException:  # cancelled: free the claim, never retry or swallow
                claim.abandon(clock())
                raise
            attempts.answered(result, claim, None, started)
            return result

        setattr(wrapper, STATS_ATTR, (recorder, state))  # what stats(wrapper) reads
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def _retryable(exc: Exception) -> bool:
    if getattr(exc, HANDLED_ATTR, False):
        return False  # a RetryMiddleware below judged it unsafe to repeat
    return classify(exc) is not Verdict.NEVER


class _FunctionAttempts(Generic[T]):
    """One call of a decorated function, as the retry loop sends and judges its attempts."""

    __slots__ = (
        "_args",
        "_clock",
        "_function",
        "_hooks",
        "_key",
        "_kwargs",
        "_name",
        "_sleep",
        "_stats",
        "policy",
    )

    def __init__(
        self,
        function: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        policy: RetryPolicy,
        name: str,
        key: HostKey,
        clock: Clock,
        sleep: Sleep,
        hooks: tuple[RetryHook | None, RetryHook | None],
        stats: StatsRecorder | None,
    ) -> None:
        self._function = function
        self._args = args
        self._kwargs = kwargs
        self.policy = policy
        self._name = name
        self._key = key
        self._clock = clock
        self._sleep = sleep
        self._hooks = hooks
        self._stats = stats

    def send(self) -> Awaitable[T]:
        return self._function(*self._args, **self._kwargs)

    def watch(self) -> None:
        pass

    def unwatch(self) -> None:
        pass

    def answered(
        self, result: T, claim: HostClaim, run: RetryRun | None, started: float
    ) -> Refusal | None:
        now = self._clock()
        claim.end(Signal.SERVED, now)
        if self._stats is not None:
            self._stats.served(self._key, now - started, now - claim.started, run)
        return None

    def judge(self, error: Exception, claim: HostClaim, run: RetryRun | None, now: float) -> Judged:
        return Judged(retryable=_retryable(error), signal=signal_of_error(error))

    def reused(self) -> bool | None:
        return None

    def not_retried(
        self, error: Exception, judged: Judged, number: int, run: RetryRun | None
    ) -> Exception:
        return error  # raised as it came: the function's own error

    def hand_back(self, result: T, claim: HostClaim) -> None:  # pragma: no cover - no refusals
        pass

    def discard(self, result: T, claim: HostClaim) -> None:  # pragma: no cover - no refusals
        pass

    async def before_resend(
        self, run: RetryRun, attempt: Attempt, cause: BaseException | None
    ) -> None:
        pass

    def new_run(self, started: float) -> RetryRun:
        on_retry, on_giveup = self._hooks
        return RetryRun(
            self.policy,
            method=None,
            url=self._name,
            started=started,
            clock=self._clock,
            sleep=self._sleep,
            on_retry=on_retry,
            on_giveup=on_giveup,
            stats=self._stats,
            key=self._key,
        )


def _is_coroutine_function(function: object) -> bool:
    # inspect's check, not asyncio's (deprecated in 3.14); also an object with async __call__.
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - we want the async __call__ itself
    )
