"""The retry loop: one for :class:`RetryMiddleware` and :func:`retry_on_disconnect`.

A call's first attempt, when it needs no wait and has no deadline, is sent by its caller's own
fast path (the middleware's ``__call__``, the decorator's wrapper); everything after a failure,
and every attempt of a call that waits or has a deadline, goes through :func:`retry_loop`:
claim the host (``_health/``), send, judge the outcome, decide (``_decision.py``), tell and
wait (``_run.py``), again. What differs between an aiohttp request and a decorated function
is behind :class:`Attempts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from .._exceptions import CircuitOpenError, RetriesExhaustedError
from .._health._claim import HostClaim
from .._health._hosts import HostHealth
from .._health._limiter import HostKey, format_host
from .._health._policy import WaitExpiredError
from .._observe._stats import StatsRecorder
from .._util._timing import Clock, deadline_timer, timer_expired
from ._classify import Signal, signal_of_status
from ._decision import Step, Why, next_step, next_step_after_error
from ._events import Attempt
from ._policy import RetryPolicy
from ._run import RetryRun

__all__ = ["Attempts", "Judged", "Refusal", "retry_loop"]

T = TypeVar("T")

#: Answers that say "too many": under a congested host's lowered limit, they come back after a
#: backoff (never at once), under the limit.
_CONGESTION_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Refusal:
    """An answer that says "later": a retryable status, and its ``Retry-After`` in seconds."""

    status: int
    retry_after: float | None

    def told(self, policy: RetryPolicy) -> float | None:
        """The ``Retry-After`` the host's state is told of: no longer than the caller would
        wait (a fleet sharing a store holds the host for it, and a bogus "Retry-After: 3600"
        must not stop the others)."""
        retry_after = self.retry_after
        return None if retry_after is None else min(retry_after, policy.retry_after_max)


@dataclass(frozen=True, slots=True)
class Judged:
    """What an attempt's error means: may it be retried, what it says of the host, whether it
    was the stale keep-alive race, and whether it ran on a reused connection."""

    retryable: bool
    signal: Signal
    stale: bool = False
    reused: bool | None = None


class Attempts(Protocol[T]):
    """How one kind of call sends an attempt and reads its outcome."""

    @property
    def policy(self) -> RetryPolicy:
        """The call's policy."""
        ...

    def send(self) -> Awaitable[T]:
        """Start one attempt: an awaitable of its result (raises on failure)."""
        ...

    def watch(self) -> None:
        """An attempt is about to go (the idle watchdog follows it)."""
        ...

    def unwatch(self) -> None:
        """The attempt ended without a result."""
        ...

    def answered(
        self, result: T, claim: HostClaim, run: RetryRun | None, started: float
    ) -> Refusal | None:
        """Book a result handed back to the caller (``None``), or say it is a refusal."""
        ...

    def judge(self, error: Exception, claim: HostClaim, run: RetryRun | None, now: float) -> Judged:
        """What ``error`` means (see :class:`Judged`)."""
        ...

    def reused(self) -> bool | None:
        """Whether the attempt that just ended ran on a reused connection."""
        ...

    def not_retried(
        self, error: Exception, judged: Judged, number: int, run: RetryRun | None
    ) -> Exception:
        """The error to raise for a failure that is not retried."""
        ...

    def hand_back(self, result: T, claim: HostClaim) -> None:
        """A refused answer goes to the caller after all (the policy's ``raise_on_status``)."""
        ...

    def discard(self, result: T, claim: HostClaim) -> None:
        """A refused answer is thrown away: free it and its slot."""
        ...

    async def before_resend(self, run: RetryRun, attempt: Attempt, cause: Exception | None) -> None:
        """Get ready to send again (or raise why it cannot be)."""
        ...

    def new_run(self, started: float) -> RetryRun:
        """The run of a call that needs one (its first failure, or a wait)."""
        ...


class _DeadlinePassedError(Exception):
    """The policy's deadline passed before an attempt, or during one (raised from the
    timer's error)."""


async def retry_loop(
    health: HostHealth,
    attempts: Attempts[T],
    key: HostKey,
    policy: RetryPolicy,
    started: float,
    clock: Clock,
    stats: StatsRecorder | None,
    *,
    number: int = 0,
    claim: HostClaim | None = None,
    error: Exception | None = None,
    result: T | None = None,
    refusal: Refusal | None = None,
) -> T:
    """Go on with a call until it succeeds or gives up.

    ``number`` is the attempt that just ended: with an ``error``, or a ``refusal`` of its
    ``result``, that failure is decided first; ``0`` starts with attempt 1 (on ``claim`` when
    the caller took it already).
    """
    deadline = policy.deadline
    run: RetryRun | None = None
    charged_at: float | None = None
    while True:
        if number:
            assert claim is not None
            run = run or attempts.new_run(started)
            if refusal is None:
                assert error is not None
                step, attempt = await _after_error(
                    health, attempts, run, key, claim, number, error, (clock, stats, started)
                )
            else:
                answer = cast(T, result)
                decided = await _after_refusal(
                    health, attempts, run, key, claim, number, answer, refusal, clock
                )
                if decided is None:
                    return answer  # handed back to the caller
                step, attempt = decided
            claim = await _resend(health, attempts, run, key, number, attempt, step, error)
            charged_at = step.charged_at
        number += 1
        if claim is None:
            claim = health.try_claim(key, clock(), number == 1, charged_at) or await _claim(
                health, attempts, run, key, number, started, charged_at, clock
            )
        attempts.watch()
        try:
            if deadline is None:
                result = await attempts.send()
            else:
                result = await _send_within(attempts, started + deadline - clock())
        except _DeadlinePassedError as passed:
            attempts.unwatch()
            claim.abandon(clock())
            raise await _deadline_passed(
                attempts, run, number, started, passed, clock() - claim.started
            ) from passed.__cause__ or _last_error(run)
        except Exception as exc:
            error, refusal = exc, None
            continue
        except BaseException:  # cancelled: free the claim, never retry or swallow
            attempts.unwatch()
            claim.abandon(clock())
            raise
        refusal = attempts.answered(result, claim, run, started)
        if refusal is None:
            return result
        error = None


async def _resend(
    health: HostHealth,
    attempts: Attempts[T],
    run: RetryRun,
    key: HostKey,
    number: int,
    attempt: Attempt,
    step: Step,
    error: Exception | None,
) -> HostClaim | None:
    # Get ready to send again, tell the retry, wait. A retry that waits for an open breaker's
    # probe claims the host first (it may fail the call: then no retry is told); the claim for
    # any other goes after its wait (None). A retry charged to the budget but never sent (the
    # body was spent, the breaker failed the call, a cancellation) gives its charge back.
    claim = None
    try:
        await attempts.before_resend(run, attempt, error)
        if step.why is Why.PROBE:
            claim = await _claim(
                health, attempts, run, key, number + 1, run.started, step.charged_at, run.clock
            )
        await run.retry(attempt, step)
    except BaseException:
        if step.charged_at is not None:
            health.refund(key, run.clock(), step.charged_at)
        if claim is not None:
            claim.abandon(run.clock())
        raise
    return claim


def _last_error(run: RetryRun | None) -> BaseException | None:
    return run.history[-1].error if run is not None and run.history else None


async def _deadline_passed(
    attempts: Attempts[T],
    run: RetryRun | None,
    number: int,
    started: float,
    passed: _DeadlinePassedError,
    elapsed: float,
) -> RetriesExhaustedError:
    run = run or attempts.new_run(started)
    deadline = run.policy.deadline
    if passed.__cause__ is None:
        detail = f"the deadline of {deadline:g}s passed before attempt {number}"
    else:
        run.record(Attempt(number=number, error=passed.__cause__, elapsed=elapsed))
        detail = f"the deadline of {deadline:g}s passed during attempt {number}"
    return await run.give_up(None, Step(Why.DEADLINE, detail=detail))


async def _send_within(attempts: Attempts[T], remaining: float) -> T:
    if remaining <= 0:
        raise _DeadlinePassedError
    timer = deadline_timer(remaining)
    try:
        async with timer:
            return await attempts.send()
    except asyncio.TimeoutError as exc:  # not the builtin TimeoutError on Python 3.10
        if not timer_expired(timer):  # an aiohttp timeout inside, not ours
            raise
        raise _DeadlinePassedError from exc


async def _after_error(
    health: HostHealth,
    attempts: Attempts[T],
    run: RetryRun,
    key: HostKey,
    claim: HostClaim,
    number: int,
    error: Exception,
    call: tuple[Clock, StatsRecorder | None, float],
) -> tuple[Step, Attempt]:
    # An attempt raised: judge it, book it, decide; raises the give-up or the error itself.
    clock, stats, started = call
    attempts.unwatch()
    now = clock()
    judged = attempts.judge(error, claim, run, now)
    claim.end(judged.signal, now)
    if not judged.retryable:
        if stats is not None:
            stats.not_retried(key, run.history, now - claim.started, now - started)
        raise attempts.not_retried(error, judged, number, run)
    attempt = Attempt(
        number=number, error=error, reused_connection=judged.reused, elapsed=now - claim.started
    )
    run.record(attempt)
    if judged.stale:
        run.stale_used = True
    step = next_step_after_error(health, run, claim, number, now, judged.signal, stale=judged.stale)
    if step.gives_up:
        raise await _give_up(health, run, key, attempt, step) from error
    return step, attempt


async def _after_refusal(
    health: HostHealth,
    attempts: Attempts[T],
    run: RetryRun,
    key: HostKey,
    claim: HostClaim,
    number: int,
    result: T,
    refusal: Refusal,
    clock: Clock,
) -> tuple[Step, Attempt] | None:
    # An answer that says "later". Until it is handed back or thrown away, the response and its
    # slot are freed on any way out (a cancelled hook, say). None: handed back to the caller.
    status, retry_after = refusal.status, refusal.retry_after
    try:
        now = clock()
        # The slot stays until it is known whether the caller gets the response.
        claim.end(
            signal_of_status(status), now, retry_after=refusal.told(run.policy), keep_slot=True
        )
        attempt = Attempt(
            number=number,
            status=status,
            reused_connection=attempts.reused(),
            elapsed=now - claim.started,
        )
        run.record(attempt)
        congestion = status in _CONGESTION_STATUSES
        step = next_step(
            health,
            run,
            key,
            number,
            now,
            at_once=False,
            congestion=congestion,
            requeue=congestion and claim.congested(),
            retry_after=retry_after,
        )
        if step.gives_up:
            gave_up = await _give_up(health, run, key, attempt, step, retry_after)
            if not run.policy.raise_on_status:
                attempts.hand_back(result, claim)
                return None
    except BaseException:
        attempts.discard(result, claim)
        raise
    attempts.discard(result, claim)
    if step.gives_up:
        raise gave_up
    return step, attempt


async def _give_up(
    health: HostHealth,
    run: RetryRun,
    key: HostKey,
    attempt: Attempt,
    step: Step,
    retry_after: float | None = None,
) -> RetriesExhaustedError:
    budget = None
    if step.why is Why.BUDGET:
        allowance, spent = health.budget_figures(key)
        budget = (format_host(key), allowance, spent)
    return await run.give_up(attempt, step, retry_after=retry_after, budget=budget)


async def _claim(
    health: HostHealth,
    attempts: Attempts[T],
    run: RetryRun | None,
    key: HostKey,
    number: int,
    started: float,
    charged_at: float | None,
    clock: Clock,
) -> HostClaim:
    # The slow path of a claim: the breaker, the rate or the slots make the attempt wait.
    last = _last_error(run)
    deadline = attempts.policy.deadline
    try:
        return await health.claim(
            key,
            first=number == 1,
            charged_at=charged_at,
            wait_until=None if deadline is None else started + deadline,
            last_error=last,
        )
    except WaitExpiredError as expired:
        step = Step(
            Why.DEADLINE,
            detail=f"the deadline of {deadline:g}s passed while attempt {number} waited for "
            f"{expired.waited_for}",
        )
        run = run or attempts.new_run(started)
        raise await run.give_up(None, step) from last or expired.__cause__
    except CircuitOpenError as exc:
        run = run or attempts.new_run(started)
        await run.give_up(None, Step(Why.CIRCUIT_OPEN, detail=str(exc)))
        raise
