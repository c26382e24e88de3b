"""What follows a failed attempt: the call's policy and its host's health, decided together.

The one place where the next step of a call is decided, for :class:`RetryMiddleware` and
:func:`retry_on_disconnect` alike: :func:`next_step` returns a :class:`Step`, a value that says
retry after so many seconds (and why) or give up (and why); the retry loop (``_loop.py``) acts on
it, and stats, logs and hooks read its :class:`Why`. The README's "What is retried" and "Host
health" say the rules in words; ``tests/test_decision.py`` holds them as a table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from .._health._breaker import CircuitState
from .._health._claim import HostClaim
from .._health._hosts import HostHealth
from .._health._limiter import HostKey
from .._health._policy import Advice
from ._classify import Signal
from ._policy import RetryPolicy

__all__ = ["Step", "Why", "next_step", "next_step_after_error"]


class Why(enum.Enum):
    """Why a call retries, or why it gives up; the give-ups' values are the stats' names."""

    # Retries.
    AT_ONCE = "disconnect, retried at once within the host's retry budget"
    BACKOFF = "backoff"
    RETRY_AFTER = "Retry-After"
    STALE = "stale keep-alive connection"
    PROBE = "the host's circuit is open: waiting for its probe"
    # Give-ups.
    ATTEMPTS = "attempts"  # the policy's attempts were used
    DEADLINE = "deadline"  # the policy's deadline passed, or a wait would pass it
    RETRY_AFTER_MAX = "retry_after_max"  # Retry-After asked for more than retry_after_max
    BUDGET = "budget"  # the host's retry budget refused the retry
    CIRCUIT_OPEN = "circuit_open"  # the host's circuit stayed open past the outage's patience
    BODY = "body_not_replayable"  # the request body was a spent stream


_GIVE_UPS = frozenset(
    {Why.ATTEMPTS, Why.DEADLINE, Why.RETRY_AFTER_MAX, Why.BUDGET, Why.CIRCUIT_OPEN, Why.BODY}
)


@dataclass(frozen=True, slots=True)
class Step:
    """What a call does after a failed attempt.

    Attributes:
        why: The reason, as a value to switch on.
        delay: Seconds to wait before the next attempt; ``None``: give up.
        detail: The give-up's reason in words (``""`` for a retry: ``why``'s value says it).
        charged_at: When the retry was charged to the host's retry budget (its charge comes
            back if it succeeds), ``None`` when it was not charged.
    """

    why: Why
    delay: float | None = None
    detail: str = ""
    charged_at: float | None = None

    def __post_init__(self) -> None:
        if (self.delay is None) is not (self.why in _GIVE_UPS):
            raise ValueError(
                f"a {self.why.name} step {'needs' if self.delay is None else 'takes no'} delay"
            )

    @property
    def gives_up(self) -> bool:
        """Whether the call ends here."""
        return self.delay is None

    @property
    def reason(self) -> str:
        """In words, for logs, hooks and errors."""
        return self.detail or self.why.value


def next_step_after_error(
    health: HostHealth,
    run: Deciding,
    claim: HostClaim,
    number: int,
    now: float,
    signal: Signal,
    *,
    stale: bool = False,
) -> Step:
    """:func:`next_step` for an attempt that raised, with what its ``signal`` implies:
    disconnects go again at once within the budget, refused connections back off without
    charging the budget, drops under a cut limit back off under it. ``stale``: the failure
    was the stale keep-alive race (see :meth:`HostClaim.is_stale_race`)."""
    dropped = signal is Signal.DROPPED
    return next_step(
        health,
        run,
        claim.key,
        number,
        now,
        at_once=dropped or signal is Signal.CUT,
        unreachable=signal is Signal.UNREACHABLE or signal is Signal.REFUSED,
        congestion=dropped,
        requeue=dropped and claim.congested(),
        stale=stale,
    )


def next_step(
    health: HostHealth,
    run: Deciding,
    key: HostKey,
    number: int,
    now: float,
    *,
    at_once: bool,
    unreachable: bool = False,
    congestion: bool = False,
    requeue: bool = False,
    stale: bool = False,
    retry_after: float | None = None,
) -> Step:
    """What follows the failed attempt ``number`` of a call to ``key``.

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
    """
    policy = run.policy
    if number >= policy.attempts:
        plural = "" if policy.attempts == 1 else "s"
        return Step(
            Why.ATTEMPTS,
            detail=f"all {policy.attempts} attempt{plural} the policy allows were used",
        )
    charged_at = None
    if health.circuit_state(key) is not CircuitState.CLOSED:
        return run.timed(Step(Why.PROBE, 0.0))
    if stale:
        if policy.retry_stale_immediately:
            return run.timed(Step(Why.STALE, 0.0))
        advice = Advice.BACKOFF
    elif unreachable:
        advice = Advice.BACKOFF
    else:
        last = number + 1 >= policy.attempts
        advice, charged_at = health.advise(
            key, now, may_go_at_once=at_once and not requeue and not last, congestion=congestion
        )
    if advice is Advice.REFUSED:
        return Step(Why.BUDGET)
    if retry_after is not None:
        if retry_after > policy.retry_after_max:
            step = Step(
                Why.RETRY_AFTER_MAX,
                detail=f"the server asked to wait {retry_after:g}s (Retry-After), more than "
                f"retry_after_max={policy.retry_after_max:g}s",
            )
        else:
            step = run.timed(
                Step(Why.RETRY_AFTER, run.retry_after_wait(retry_after), "", charged_at)
            )
    elif advice is Advice.NOW:
        step = run.timed(Step(Why.AT_ONCE, 0.0, "", charged_at))
    else:
        step = run.timed(Step(Why.BACKOFF, run.backoff_wait(), "", charged_at))
    if step.gives_up and charged_at is not None:
        health.refund(key, now, charged_at)  # the retry it paid for is not made
    return step


class Deciding(Protocol):
    """What :func:`next_step` needs of a call: its policy, its backoff schedule and its
    deadline (:class:`RetryRun` is one)."""

    @property
    def policy(self) -> RetryPolicy:
        """The call's policy."""
        ...

    def backoff_wait(self) -> float:
        """The next backoff wait, jitter applied."""
        ...

    def retry_after_wait(self, seconds: float) -> float:
        """A ``Retry-After`` wait, spread by the policy's jitter."""
        ...

    def timed(self, step: Step) -> Step:
        """``step``, or the deadline's give-up when its wait would pass the call's deadline."""
        ...
