"""The progress of one retried call: its attempts so far, its schedule and deadline, and the
telling (log, hooks, stats) of its retries and its give-up. Shared by the middleware and the
decorator (through the retry loop, ``_loop.py``) so that both follow one schedule and report
alike."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .._exceptions import RetriesExhaustedError, RetryBudgetExhaustedError
from .._observe._stats import StatsRecorder
from .._util._log import log_fields, logger
from .._util._timing import Clock, Sleep
from ._decision import Step, Why
from ._events import Attempt, RetryEvent, RetryHook
from ._policy import RetryPolicy, apply_jitter, jitter_retry_after

if TYPE_CHECKING:
    from .._health._limiter import HostKey

__all__ = ["RetryRun"]


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
    def clock(self) -> Clock:
        """The call's monotonic clock."""
        return self._clock

    @property
    def started(self) -> float:
        """When the call started, by its clock."""
        return self._started

    @property
    def policy(self) -> RetryPolicy:
        """The policy this call follows."""
        return self._policy

    def backoff_wait(self) -> float:
        """The next wait of the policy's backoff schedule, jitter applied."""
        return apply_jitter(self._policy, next(self._waits))

    def retry_after_wait(self, seconds: float) -> float:
        """The wait for a ``Retry-After`` of ``seconds``, spread by the policy's jitter."""
        return jitter_retry_after(self._policy, seconds)

    def timed(self, step: Step) -> Step:
        """``step``, or the deadline's give-up when its wait would end past the deadline."""
        remaining = self.remaining()
        delay = step.delay
        if remaining is None or delay is None or delay < remaining:
            return step
        return Step(
            Why.DEADLINE,
            detail=f"waiting {delay:.3g}s ({step.why.value}) would pass the deadline of "
            f"{self._policy.deadline:g}s ({max(remaining, 0.0):.3g}s left)",
        )

    async def retry(self, attempt: Attempt, step: Step) -> None:
        """Tell the retry (log, ``on_retry``, stats), then wait its delay."""
        delay = step.delay
        assert delay is not None
        if self._stats is not None:
            self._stats.retried(self._key, attempt, delay, step.why)
        if self._on_retry is not None or logger.isEnabledFor(logging.INFO):
            await self._tell_retry(attempt, delay, step.reason)
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
        step: Step,
        *,
        retry_after: float | None = None,
        budget: tuple[str, float, float] | None = None,
    ) -> RetriesExhaustedError:
        """Tell the give-up (log, ``on_giveup``, stats) and return the error to raise.

        ``attempt`` is the attempt that just failed, or ``None`` when the call ends before a new
        attempt could start (its deadline passed while it waited for a per-host slot).
        ``budget``: (host, allowance, spent) when the host's retry budget refused the retry.
        """
        last = attempt or (self._history[-1] if self._history else None)
        attempts = len(self._history)
        error: RetriesExhaustedError
        reason = step.reason
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
        kind = step.why.value
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
