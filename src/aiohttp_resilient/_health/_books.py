"""HostBooks: what an attempt's outcome changes in its host's state.

The bookkeeping half of :class:`HostHealth` (``_hosts.py``, which claims hosts and advises):
the fast path's counts told to the mechanisms (:meth:`HostBooks.settle`), an outcome booked
into the breaker, adaptive limit and rate, the breaker's state changes told (log, hook, the
waiting calls, a fleet's store). :class:`HostClaim` books through these methods.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Final

from .._retry._classify import Signal
from .._store._breaker import BreakerNews, Outcome, Verdict
from .._store._fleet import FleetLimiter
from .._util._log import log_fields, logger
from .._util._timing import Clock
from ._aimd import LimitState
from ._breaker import BreakerState, CircuitState
from ._claim import HostClaim, _Record
from ._limiter import HostKey, HostLimiter, format_host
from ._policy import CircuitEvent, CircuitHook, HealthPolicy

__all__ = ["SETTLE_EVERY", "HostBooks"]

#: The fast path's counts are told to the mechanisms at the first call or answer this many
#: seconds after they were last told, or before anything reads them; each count is told with
#: the time of the last of its kind, so it lands within this of when it happened (the
#: mechanisms' time slots are a second or more wide).
SETTLE_EVERY: Final = 0.1


class HostBooks:
    """The bookkeeping of :class:`HostHealth`, which holds the state it changes."""

    __slots__ = ()

    policy: HealthPolicy
    limiter: HostLimiter | None
    _hosts: dict[HostKey, _Record]
    _clock: Clock
    _rng: random.Random
    _on_change: CircuitHook | None
    _hook_tasks: set[asyncio.Future[None]]

    def settle(self, key: HostKey, record: _Record, now: float) -> None:
        """Tell ``key``'s mechanisms the fast path's counts: the calls to the budget, the
        answers to the breaker, the adaptive limit and the rate."""
        record.settle_at = now + SETTLE_EVERY
        asked, ok = record.asked, record.ok
        if asked:
            record.asked = 0
            if record.budget is not None:
                record.budget.deposit(record.asked_at, asked)
        if ok:
            stale, record.ok, record.ok_stale = record.ok_stale, 0, 0
            at = record.ok_at
            if record.breaker is not None:
                record.breaker.succeeded(at, ok)
            if record.rate is not None:
                record.rate.success(at, ok)
            limit = record.limit
            if (
                limit is not None
                and self.limiter is not None
                and ok > stale
                and limit.answered(ok - stale)
            ):
                self._limit_changed(key, limit)

    def _record_outcome(
        self, claim: HostClaim, signal: Signal, now: float, retry_after: float | None
    ) -> None:
        # Every outcome but SERVED (HostClaim.served).
        record = claim._record
        key = claim.key
        self.settle(key, record, now)
        if record.breaker is not None:
            if signal is Signal.ANSWERED or signal is Signal.THROTTLED:
                # The host answered: up. A 429 is the rate's to handle, not a failure; as the
                # probe's answer it closes the breaker (the host is back, if busy).
                if claim.probe:
                    self._breaker_outcome(key, record, now, False, None, True)
                elif signal is Signal.ANSWERED:
                    record.breaker.succeeded(now)
            elif signal is not Signal.LOCAL or claim.probe:
                # A probe that ended in a local error (a connect timeout to a dead host) is a
                # failed probe: a longer break, not another probe at once.
                self._breaker_outcome(
                    key,
                    record,
                    now,
                    True,
                    retry_after,
                    claim.probe,
                    refused=signal is Signal.REFUSED,
                )
        dropped = signal is Signal.DROPPED
        throttled = signal is Signal.UNAVAILABLE or signal is Signal.THROTTLED
        if throttled and self.limiter is not None:
            self.limiter.refused(key, signal is Signal.THROTTLED, retry_after)  # for a fleet
        limit = record.limit
        if (
            limit is not None
            and (dropped or throttled)
            and claim.slot
            and limit.sample(
                dropped,
                throttled,
                claim.in_flight,
                claim.epoch,
                dropped and record.budget is not None and record.budget.past_immediate(now),
            )
        ):
            self._limit_changed(key, limit)
        rate = record.rate
        if rate is not None:
            # 429 only: a 503 also comes from a host that is down, whose successful rate is
            # then nothing, and a rate cut to that would outlast the outage by minutes.
            if signal is Signal.THROTTLED:
                if rate.throttle(now) and logger.isEnabledFor(logging.INFO):
                    logger.info(
                        "adaptive rate of %s is now %.3g/s",
                        format_host(key),
                        rate.rate,
                        extra=log_fields("adaptive_rate", None, None, key, rate=rate.rate),
                    )
            elif signal is Signal.ANSWERED:
                rate.success(now)

    def _breaker_outcome(
        self,
        key: HostKey,
        record: _Record,
        now: float,
        failed: bool,
        retry_after: float | None,
        probe: bool,
        *,
        refused: bool = False,
    ) -> None:
        breaker = record.breaker
        assert breaker is not None
        old = breaker.state
        new = breaker.record(now, failed, probe=probe, retry_after=retry_after, refused=refused)
        if new is not None and isinstance(self.limiter, FleetLimiter):  # tell the fleet
            self._fleet_report(key, breaker, new, probe, retry_after)
        if new is not None and new is not old:
            retry_in = breaker.open_until - now if new is CircuitState.OPEN else None
            self._notify(key, record, old, new, retry_in)
        elif new is CircuitState.OPEN:  # a failed probe: the break starts again
            self._wake(record)

    # -- the breaker fleet-wide (a store): see _store/_breaker.py -------------------------------

    def _fleet_report(
        self,
        key: HostKey,
        breaker: BreakerState,
        new: CircuitState,
        probe: bool,
        retry_after: float | None,
    ) -> None:
        assert isinstance(self.limiter, FleetLimiter)
        if new is CircuitState.CLOSED:
            outcome = Outcome.PROBE_SUCCEEDED
        else:
            outcome = Outcome.PROBE_FAILED if probe else Outcome.OPENED
        self.limiter.report_breaker(key, outcome, self._rng.random(), retry_after, breaker.reason)

    def _fleet_told(self, key: HostKey, record: _Record, news: BreakerNews, probe: bool) -> None:
        # The store holds the host's breaker open (or, to a call that came to probe, closed):
        # this process's breaker says the same, and the call is admitted again.
        breaker = record.breaker
        assert breaker is not None  # the store is asked of breakers only with one
        now = self._clock()
        if news.verdict is Verdict.CLOSED:
            if breaker.state is not CircuitState.CLOSED:
                old = breaker.state
                breaker.told_closed(now)
                self._notify(key, record, old, CircuitState.CLOSED, None)
            return
        was = breaker.told_open(now, news.wait, news.down_for, news.reason)
        if was is CircuitState.CLOSED:
            self._notify(key, record, was, CircuitState.OPEN, news.wait)
        else:  # a probe the fleet refused: the calls waiting for it wait for the fleet's
            self._wake(record)

    def _limit_changed(self, key: HostKey, limit: LimitState) -> None:
        assert self.limiter is not None
        self.limiter.set_limit(key, limit.limit)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "adaptive limit of %s is now %d",
                format_host(key),
                limit.limit,
                extra=log_fields("adaptive_limit", None, None, key, limit=limit.limit),
            )

    def _probe_abandoned(self, key: HostKey, record: _Record, now: float) -> None:
        # The probe ended with no news of the host (cancelled, the caller's deadline): the
        # next call probes at once.
        breaker = record.breaker
        if breaker is not None and breaker.state is CircuitState.HALF_OPEN:
            breaker.probe_abandoned(now)
            if isinstance(self.limiter, FleetLimiter):
                self.limiter.report_breaker(key, Outcome.PROBE_ABANDONED, 0.0, None, "")
            self._notify(key, record, CircuitState.HALF_OPEN, CircuitState.OPEN, 0.0)

    def _notify(
        self,
        key: HostKey,
        record: _Record,
        old: CircuitState,
        new: CircuitState,
        retry_in: float | None,
    ) -> None:
        breaker = record.breaker
        assert breaker is not None
        event = CircuitEvent(
            host=format_host(key),
            old=old,
            new=new,
            reason=breaker.reason,
            retry_in=retry_in,
        )
        fields = log_fields(
            "circuit", None, None, key, state=new.value, reason=event.reason, delay=retry_in
        )
        # Once per outage at INFO (it opened, it closed again); the probes in between at
        # DEBUG. The calls that fail say so at WARNING, once each: one line per failed call.
        if new is CircuitState.OPEN and old is CircuitState.CLOSED:
            record.trips += 1
            logger.info(
                "circuit for %s is open (%s): next probe in %.3gs",
                event.host,
                event.reason,
                retry_in or 0.0,
                extra=fields,
            )
        elif new is CircuitState.CLOSED:
            logger.info(
                "circuit for %s is closed: the probe succeeded after %.3gs down",
                event.host,
                self._clock() - breaker.opened_at,
                extra=fields,
            )
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "circuit for %s is %s (%s)", event.host, new.value, event.reason, extra=fields
            )
        self._wake(record)
        hook = self._on_change
        if hook is not None:
            try:
                result = hook(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._hook_tasks.add(task)
                    task.add_done_callback(self._hook_done)
            except Exception:
                logger.exception(
                    "the on_circuit_change hook raised; nothing changes",
                    extra=log_fields("hook_error", None, None, key, hook="on_circuit_change"),
                )

    def _hook_done(self, task: asyncio.Future[None]) -> None:
        self._hook_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "the on_circuit_change hook raised; nothing changes",
                exc_info=task.exception(),
                extra=log_fields("hook_error", None, None, None, hook="on_circuit_change"),
            )

    @staticmethod
    def _wake(record: _Record) -> None:
        changed = record.changed
        if changed is not None and not changed.done():
            changed.set_result(None)
        record.changed = None
