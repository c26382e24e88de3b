"""What follows a failed attempt: the call's policy and its host's health, decided together.

Shared by :class:`RetryMiddleware` and :func:`retry_on_disconnect`, so that both retry at once,
back off, wait for a probe, queue again or give up by the same rules (the README's "What is
retried" and "Host health" say them in words).
"""

from __future__ import annotations

from ._breaker import CircuitState
from ._classify import Signal
from ._engine import RetryRun
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
) -> tuple[float | None, str, float | None]:
    """:func:`next_step` for an attempt that raised, with what its ``signal`` implies:
    disconnects go again at once within the budget, refused connections wait and cost
    nothing while a breaker watches, drops under a cut limit queue again."""
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
    retry_after: float | None = None,
) -> tuple[float | None, str, float | None]:
    """Record the failed ``attempt`` of a call to ``key`` and say what follows: (seconds to
    wait, or ``None`` to give up; the reason; when the retry was charged to the host's budget,
    or ``None``).

    Args:
        at_once: A disconnect, which may go again at once within the host's budget.
        unreachable: The connection was refused: nothing was sent. While a breaker watches the
            host (it opens within a few failures, then bounds the wait), the attempt neither
            counts against the policy nor charges the budget: a restart must not use up calls.
        congestion: A refusal (429, 503, a reset or disconnect): with a spent budget and an
            adaptive limit, the retry backs off under the limit instead of being refused.
        requeue: A refusal (429, 503, a reset) by a host whose adaptive limit congestion has
            cut: the client sent too much, so the attempt queues again after its backoff
            without counting (at most ``attempts`` times per call). Random faults never cut the
            limit, so they never get here.
        retry_after: The host's ``Retry-After``, in seconds.

    Raises:
        RetryBudgetExhaustedError: The host's budget refused the retry (raised from the
            attempt's error).
    """
    forgiven = health.circuit_state(key) is not CircuitState.CLOSED
    requeue = requeue and run.forgiven < run.policy.attempts
    free = unreachable and health.policy.breaker is not None
    uncounted = requeue or free
    if not forgiven and not uncounted and not run.attempts_left(attempt.number):
        delay, reason = run.decide(attempt)  # records it and says the attempts are used
        return delay, reason, None
    if forgiven:
        advice, charged_at = Advice.WAIT_FOR_PROBE, None
    elif free:
        advice, charged_at = Advice.BACKOFF, None
    else:
        # A requeued attempt still waits its backoff: at once, the one attempt over a full
        # host's capacity would be refused again as fast as the network goes.
        advice, charged_at = health.advise(
            key, now, may_go_at_once=at_once and not requeue, congestion=congestion
        )
    if advice is Advice.REFUSED:
        run.record(attempt)
        allowance, spent = health.budget_figures(key)
        error = await run.give_up(attempt, "", budget=(format_host(key), allowance, spent))
        raise error from attempt.error
    if advice is Advice.WAIT_FOR_PROBE and run.circuit_since is None:
        run.circuit_since = now
    delay, reason = run.decide(
        attempt,
        at_once=advice is Advice.NOW,
        forgiven=advice is Advice.WAIT_FOR_PROBE,
        uncounted=uncounted,
        retry_after=retry_after,
    )
    if delay is None and charged_at is not None:
        health.refund(key, now, charged_at)  # the retry it paid for is not made
        charged_at = None
    return delay, reason, charged_at
