"""What follows a failed attempt: the call's policy and its host's health, decided together.

Shared by :class:`RetryMiddleware` and :func:`retry_on_disconnect`, so that both retry at once,
back off, wait for a probe, queue again or give up by the same rules (the README's "What is
retried" and "Host health" say them in words).
"""

from __future__ import annotations

from ._breaker import CircuitState
from ._classify import Signal
from ._engine import REASON_STALE, RetryRun
from ._events import Attempt
from ._health import Advice, HostClaim, HostHealth, format_host
from ._limiter import HostKey

__all__ = ["next_step", "next_step_after_error"]


async def next_step_after_error(
    health: HostHealth,
    run: RetryRun,
    claim: HostClaim,
    attempt: Attempt,
    now: float,
    signal: Signal,
    *,
    stale: bool = False,
) -> tuple[float | None, str, float | None]:
    """:func:`next_step` for an attempt that raised, with what its ``signal`` implies:
    disconnects go again at once within the budget, refused connections back off without
    charging the budget, drops under a cut limit back off under it. ``stale``: the failure
    was the stale keep-alive race (see :meth:`HostClaim.is_stale_race`)."""
    dropped = signal is Signal.DROPPED
    return await next_step(
        health,
        run,
        claim.key,
        attempt,
        now,
        at_once=dropped or signal is Signal.CUT,
        unreachable=signal is Signal.UNREACHABLE,
        congestion=dropped,
        requeue=dropped and claim.congested(),
        stale=stale,
    )


async def next_step(
    health: HostHealth,
    run: RetryRun,
    key: HostKey,
    attempt: Attempt,
    now: float,
    *,
    at_once: bool,
    unreachable: bool = False,
    congestion: bool = False,
    requeue: bool = False,
    stale: bool = False,
    retry_after: float | None = None,
) -> tuple[float | None, str, float | None]:
    """Record the failed ``attempt`` of a call to ``key`` and say what follows: (seconds to
    wait, or ``None`` to give up; the reason; when the retry was charged to the host's budget,
    or ``None``).

    Every attempt counts against the policy's ``attempts``, whatever became of it: a refused
    connection, a refusal under a cut limit, the stale keep-alive race. Waiting for an open
    breaker's probe is not an attempt (:meth:`HostHealth.claim` waits, or fails the call).

    Args:
        at_once: A disconnect, which may go again at once within the host's budget; never
            the call's last attempt, which always backs off first (the last chance is not
            spent in the same millisecond as the failure).
        unreachable: The connection was refused: nothing was sent, so the retry backs off
            without charging the host's budget (the breaker judges the host).
        congestion: A refusal (429, 503, a reset or disconnect): with a spent budget and an
            adaptive limit, the retry backs off under the limit instead of being refused.
        requeue: A refusal by a host whose adaptive limit congestion has cut: the client sent
            too much, so the retry waits its backoff (never at once) under the limit.
        stale: The stale keep-alive race: the host is not to blame, so the retry goes at once
            (``RetryPolicy.retry_stale_immediately``) and charges nothing.
        retry_after: The host's ``Retry-After``, in seconds.

    Raises:
        RetryBudgetExhaustedError: The host's budget refused the retry (raised from the
            attempt's error).
    """
    if not run.attempts_left(attempt.number):
        delay, reason = run.decide(attempt)  # records it and says the attempts are used
        return delay, reason, None
    if health.circuit_state(key) is not CircuitState.CLOSED:
        advice, charged_at = Advice.WAIT_FOR_PROBE, None
    elif stale:
        if run.policy.retry_stale_immediately:
            delay, reason = run.decide(attempt, at_once=True, reason_at_once=REASON_STALE)
            return delay, reason, None
        advice, charged_at = Advice.BACKOFF, None
    elif unreachable:
        advice, charged_at = Advice.BACKOFF, None
    else:
        last = attempt.number + 1 >= run.policy.attempts
        advice, charged_at = health.advise(
            key, now, may_go_at_once=at_once and not requeue and not last, congestion=congestion
        )
    if advice is Advice.REFUSED:
        run.record(attempt)
        allowance, spent = health.budget_figures(key)
        error = await run.give_up(attempt, "", budget=(format_host(key), allowance, spent))
        raise error from attempt.error
    delay, reason = run.decide(
        attempt,
        at_once=advice is Advice.NOW,
        wait_for_probe=advice is Advice.WAIT_FOR_PROBE,
        retry_after=retry_after,
    )
    if delay is None and charged_at is not None:
        health.refund(key, now, charged_at)  # the retry it paid for is not made
        charged_at = None
    return delay, reason, charged_at
