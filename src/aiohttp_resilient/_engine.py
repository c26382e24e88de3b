"""The progress of one retried call: decide, tell (log and hooks), wait. Shared by the middleware
and the decorator so that both follow one schedule and report alike."""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from ._events import Attempt, RetryEvent, RetryHook
from ._exceptions import RetriesExhaustedError, RetryBudgetExhaustedError
from ._limiter import format_host
from ._policy import RetryPolicy, apply_jitter, jitter_retry_after
from ._stats import (
    GIVEUP_ATTEMPTS,
    GIVEUP_BUDGET,
    GIVEUP_DEADLINE,
    GIVEUP_RETRY_AFTER,
    StatsRecorder,
)

if TYPE_CHECKING:
    from ._limiter import HostKey

if sys.version_info >= (3, 11):
    from asyncio import timeout as deadline_timer
else:  # pragma: no cover - aiohttp depends on async-timeout below 3.11
    from async_timeout import timeout as deadline_timer

__all__ = ["Clock", "RetryRun", "Sleep", "deadline_timer", "logger", "timer_expired"]

#: Every retry (INFO) and give-up (WARNING) is logged here, secrets redacted.
logger: Final = logging.getLogger("aiohttp_resilient")

Sleep = Callable[[float], Awaitable[object]]
Clock = Callable[[], float]

REASON_STALE: Final = "stale keep-alive connection"
REASON_BACKOFF: Final = "backoff"
REASON_RETRY_AFTER: Final = "Retry-After"
REASON_AT_ONCE: Final = "disconnect, retried at once within the host's retry budget"
REASON_PROBE: Final = "the host's circuit is open: waiting for its probe"


def timer_expired(timer: Any) -> bool:
    """Whether a :func:`deadline_timer` fired (asyncio's has ``expired()``, async-timeout's
    an ``expired`` property)."""
    expired = timer.expired
    return bool(expired() if callable(expired) else expired)


class RetryRun:
    """One logical call's attempts so far and what comes next (urllib3's ``Retry`` state).

    Created on the first failure only, so a call that succeeds at once pays nothing for it.
    """

    __slots__ = (
        "_clock",
        "_history",
        "_key",
        "_method",
        "_on_giveup",
        "_on_retry",
        "_policy",
        "_sleep",
        "_started",
        "_stats",
        "_url_source",
        "_verdict",
        "_waits",
        "stale_used",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        method: str | None,
        url: str | Callable[[], str],
        started: float,
        clock: Clock,
        sleep: Sleep,
        on_retry: RetryHook | None,
        on_giveup: RetryHook | None,
        stats: StatsRecorder | None = None,
        key: HostKey = ("", None, None),
    ) -> None:
        self._policy = policy
        self._stats = stats
        self._key = key
        #: Why decide() last said to give up (a GIVEUP_* name).
        self._verdict = GIVEUP_ATTEMPTS
        self._method = method
        self._url_source = url
        self._started = started
        self._clock = clock
        self._sleep = sleep
        self._on_retry = on_retry
        self._on_giveup = on_giveup
        self._history: list[Attempt] = []
        self._waits = policy.schedule()
        #: Whether a failure already passed for the stale keep-alive race.
        self.stale_used = False

    @property
    def history(self) -> tuple[Attempt, ...]:
        """The attempts that failed, oldest first."""
        return tuple(self._history)

    def record(self, attempt: Attempt) -> None:
        """Add a failed ``attempt`` to the history without deciding anything."""
        self._history.append(attempt)

    def remaining(self) -> float | None:
        """Seconds left before the policy's deadline, or ``None`` when it has none."""
        if self._policy.deadline is None:
            return None
        return self._started + self._policy.deadline - self._clock()

    @property
    def started(self) -> float:
        """When the call started, by its clock."""
        return self._started

    @property
    def policy(self) -> RetryPolicy:
        """The policy this call follows."""
        return self._policy

    def attempts_left(self, number: int) -> bool:
        """Whether the policy allows an attempt after attempt ``number`` (every attempt
        counts: the policy's ``attempts`` caps what one call sends)."""
        return number < self._policy.attempts

    def decide(
        self,
        attempt: Attempt,
        *,
        at_once: bool = False,
        wait_for_probe: bool = False,
        retry_after: float | None = None,
        reason_at_once: str = REASON_AT_ONCE,
    ) -> tuple[float | None, str]:
        """Record a failed ``attempt`` and say what follows: ``(delay, reason)`` to retry after
        ``delay`` seconds, or ``(None, reason)`` to give up.

        ``at_once``: the host allows an immediate retry (a disconnect within its budget, or
        the stale keep-alive race). ``wait_for_probe``: the host's circuit is open, so the next
        attempt waits for the breaker's probe (the claim does the waiting, or fails the call).
        """
        self.record(attempt)
        policy = self._policy
        if not self.attempts_left(attempt.number):
            self._verdict = GIVEUP_ATTEMPTS
            plural = "" if policy.attempts == 1 else "s"
            return None, f"all {policy.attempts} attempt{plural} the policy allows were used"
        if wait_for_probe:
            return 0.0, REASON_PROBE
        if retry_after is not None:
            if retry_after > policy.retry_after_max:
                self._verdict = GIVEUP_RETRY_AFTER
                return None, (
                    f"the server asked to wait {retry_after:g}s (Retry-After), more than "
                    f"retry_after_max={policy.retry_after_max:g}s"
                )
            delay, reason = jitter_retry_after(policy, retry_after), REASON_RETRY_AFTER
        elif at_once:
            delay, reason = 0.0, reason_at_once
        else:
            delay, reason = apply_jitter(policy, next(self._waits)), REASON_BACKOFF
        remaining = self.remaining()
        if remaining is not None and delay >= remaining:
            self._verdict = GIVEUP_DEADLINE
            return None, (
                f"waiting {delay:.3g}s ({reason}) would pass the deadline of "
                f"{policy.deadline:g}s ({max(remaining, 0.0):.3g}s left)"
            )
        return delay, reason

    async def retry(self, attempt: Attempt, delay: float, reason: str) -> None:
        """Tell the retry (log, ``on_retry``, stats), then wait ``delay`` seconds."""
        if self._stats is not None:
            self._stats.retried(self._key, attempt, delay, reason)
        if self._on_retry is not None or logger.isEnabledFor(logging.INFO):
            await self._tell_retry(attempt, delay, reason)
        if delay > 0:
            await self._sleep(delay)

    async def _tell_retry(self, attempt: Attempt, delay: float, reason: str) -> None:
        # Only when someone listens: building the event redacts the URL and the error message.
        event = self._event(attempt, delay, reason)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "retrying %s after attempt %d failed with %s: waiting %.3fs (%s)",
                self._target(),
                attempt.number,
                event.cause,
                delay,
                reason,
                extra=self._fields(
                    "retry", attempt.number, cause=event.cause, delay=delay, reason=reason
                ),
            )
        await _call_hook("on_retry", self._on_retry, event)

    async def give_up(
        self,
        attempt: Attempt | None,
        reason: str,
        *,
        retry_after: float | None = None,
        budget: tuple[str, float, float] | None = None,
        kind: str | None = None,
    ) -> RetriesExhaustedError:
        """Tell the give-up (log, ``on_giveup``) and return the error to raise.

        ``attempt`` is the attempt that just failed, or ``None`` when the call ends before a new
        attempt could start (its deadline passed while it waited for a per-host slot).
        ``budget``: (host, allowance, spent) when the host's retry budget refused the retry.
        ``kind``: why, for stats (a ``GIVEUP_*`` name), when :meth:`decide` did not say it.
        """
        last = attempt or (self._history[-1] if self._history else None)
        attempts = len(self._history)
        error: RetriesExhaustedError
        if budget is not None:
            host, allowance, spent = budget
            error = RetryBudgetExhaustedError(
                method=self._method,
                url=self._url,
                attempts=attempts,
                history=self.history,
                host=host,
                allowance=allowance,
                spent=spent,
                status=last.status if last is not None else None,
            )
            reason = error.reason
        event = self._event(last, None, reason, number=attempts)
        if kind is None:
            kind = GIVEUP_BUDGET if budget is not None else self._verdict
        if self._stats is not None:
            self._stats.gave_up(self._key, kind, self._history, self._clock() - self._started)
        logger.warning(
            "giving up on %s after %d attempt%s: %s; last failure: %s",
            self._target(),
            attempts,
            "" if attempts == 1 else "s",
            reason,
            event.cause,
            extra=self._fields("give_up", attempts, cause=event.cause, reason=reason, kind=kind),
        )
        await _call_hook("on_giveup", self._on_giveup, event)
        if budget is not None:
            return error
        return RetriesExhaustedError(
            method=self._method,
            url=self._url,
            attempts=attempts,
            history=self.history,
            reason=reason,
            status=event.status,
            retry_after=retry_after,
        )

    @property
    def _url(self) -> str:
        # Redacted on first use only: a retry nobody logs or hooks never needs the URL as text.
        source = self._url_source
        if not isinstance(source, str):
            source = self._url_source = source()
        return source

    def _fields(self, event: str, attempt: int, **facts: object) -> dict[str, object]:
        # The log record's extra= fields (JSON handlers and structlog read them as they are).
        return log_fields(event, self._method, self._url, self._key, attempt=attempt, **facts)

    def _target(self) -> str:
        return self._url if self._method is None else f"{self._method} {self._url}"

    def _event(
        self,
        attempt: Attempt | None,
        delay: float | None,
        reason: str,
        *,
        number: int | None = None,
    ) -> RetryEvent:
        # attempt: the failure to report (None if none was made); number: the attempt count to
        # report when it is not that attempt's own number.
        return RetryEvent(
            method=self._method,
            url=self._url,
            attempt=number if number is not None else attempt.number if attempt else 0,
            cause=attempt.outcome if attempt is not None else "no attempt was made",
            error=attempt.error if attempt is not None else None,
            status=attempt.status if attempt is not None else None,
            delay=delay,
            reason=reason,
        )


def log_fields(
    event: str, method: str | None, url: str | None, key: HostKey | None, **facts: object
) -> dict[str, object]:
    """The ``extra=`` fields of a log record: ``event``, ``method``, ``url`` (redacted),
    ``host`` and the facts given (none of these names is a :class:`logging.LogRecord`
    attribute, so they cannot clash)."""
    return {
        "event": event,
        "method": method,
        "url": url,
        "host": None if key is None else format_host(key),
        **facts,
    }


async def _call_hook(name: str, hook: RetryHook | None, event: RetryEvent) -> None:
    # A hook's bug must not change what happens to the request (nor raise a disconnect error that
    # aiohttp would answer by re-sending it): log it and go on. Cancellation still propagates.
    if hook is None:
        return
    try:
        result = hook(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception(
            "the %s hook raised; the retry goes on as decided",
            name,
            extra=log_fields("hook_error", event.method, event.url, None, hook=name),
        )
