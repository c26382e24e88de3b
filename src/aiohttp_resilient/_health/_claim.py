"""An attempt's claim on its host (:class:`HostClaim`), and the host's record it books into.

A claim holds the attempt's slot (if there is a cap), whether it is the breaker's probe, when
it went and when its budget charge was made; it is ended exactly once, and gives everything
back on every way out. It talks to the host's state through :class:`Host` (what
:class:`HostHealth` offers a claim), so that this module does not import that one.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Final, Protocol

from .._retry._classify import Signal
from .._util._timing import Clock
from ._aimd import LimitState
from ._breaker import BreakerState, CircuitState
from ._budget import BudgetState
from ._limiter import HostKey, HostLimiter
from ._rate import RateState

if TYPE_CHECKING:
    import asyncio

    from ._policy import HealthPolicy

__all__ = ["STALE_RACE_WINDOW", "Host", "HostClaim"]

#: A failure on a reused connection counts as the stale keep-alive race only if it came before
#: the server could have been working on the request: within this many seconds, or twice the
#: host's fastest answer, whichever is longer.
STALE_RACE_WINDOW: Final = 0.05


class Host(Protocol):
    """What a :class:`HostClaim` needs of the host-health state that made it."""

    policy: HealthPolicy
    limiter: HostLimiter | None
    _rng: random.Random
    _clock: Clock

    def _record_outcome(
        self, claim: HostClaim, signal: Signal, now: float, retry_after: float | None
    ) -> None: ...

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
    ) -> None: ...

    def _limit_changed(self, key: HostKey, limit: LimitState) -> None: ...

    def _probe_abandoned(self, key: HostKey, record: _Record, now: float) -> None: ...


class _Record:
    """One host's state."""

    __slots__ = (
        "asked",
        "asked_at",
        "breaker",
        "budget",
        "changed",
        "fastest",
        "limit",
        "ok",
        "ok_at",
        "ok_stale",
        "rate",
        "settle_at",
        "touched",
        "trips",
    )

    def __init__(self, health: Host, now: float) -> None:
        policy = health.policy
        self.budget = None if policy.budget is None else BudgetState(policy.budget, now)
        self.breaker = (
            None if policy.breaker is None else BreakerState(policy.breaker, now, health._rng)
        )
        limiter = health.limiter
        self.limit = (
            None
            if policy.adaptive_limit is None or limiter is None
            else LimitState(policy.adaptive_limit, limiter.limit_per_host)
        )
        self.rate = None if policy.adaptive_rate is None else RateState(policy.adaptive_rate, now)
        #: Woken when the breaker changes state (process-local: the futures of waiting calls).
        self.changed: asyncio.Future[None] | None = None
        #: The fastest answer seen, in seconds (for the stale-race window).
        self.fastest = float("inf")
        #: When an attempt last claimed the host (idle hosts are forgotten).
        self.touched = now
        #: Times the breaker went from closed to open (for stats).
        self.trips = 0
        # The fast path's counts, not yet told to the mechanisms (HostBooks.settle): calls
        # that went at once and answers below 400, each with when the last came (all of them
        # came within SETTLE_EVERY of it), those of the answers sent under an adaptive limit
        # that has changed since, and when to tell them.
        self.asked = self.ok = self.ok_stale = 0
        self.asked_at = self.ok_at = self.settle_at = now


class HostClaim:
    """An attempt's hold on its host: its slot (if there is a cap), whether it is the breaker's
    probe, when it went, and when its budget charge was made. End it exactly once with
    :meth:`served`, :meth:`end` or :meth:`abandon`."""

    __slots__ = (
        "_health",
        "_record",
        "charged_at",
        "cuts",
        "epoch",
        "in_flight",
        "key",
        "probe",
        "slot",
        "started",
    )

    def __init__(
        self,
        health: Host,
        record: _Record,
        key: HostKey,
        started: float,
        probe: bool,
        slot: bool,
        charged_at: float | None,
    ) -> None:
        # Positional: one is made per attempt.
        self._health = health
        self._record = record
        self.key = key
        self.started = started
        self.probe = probe
        self.slot = slot
        #: When this retry was charged to the budget (its charge is given back if it succeeds).
        self.charged_at = charged_at
        limit = record.limit
        if limit is None:
            self.in_flight = self.epoch = self.cuts = 0
        else:  # the adaptive limit's sample needs them (and it exists only with a limiter)
            self.in_flight = health.limiter.in_flight(key)  # type: ignore[union-attr]
            self.epoch = limit.epoch
            self.cuts = limit.cuts

    def congested(self) -> bool:
        """Whether the host's adaptive limit holds it below its cap (it was cut for
        congestion), or was cut since this attempt went: a refusal then says the client sent
        too much, and the attempt belongs back in the host's queue."""
        limit = self._record.limit
        return limit is not None and (limit.cuts != self.cuts or limit.limit < limit.ceiling)

    def is_stale_race(self, now: float) -> bool:
        """Whether a failure now, on a reused connection, came too early for the server to
        have been working on the request."""
        return now - self.started <= max(STALE_RACE_WINDOW, 2 * self._record.fastest)

    def served(self, now: float, *, keep_slot: bool = False) -> None:
        """The attempt got an answer below 400 (the hot path); the slot is freed unless
        ``keep_slot`` (the caller streams the body: :meth:`release_slot` frees it)."""
        record = self._record
        try:
            elapsed = now - self.started
            if elapsed < record.fastest:
                record.fastest = elapsed
            if self.charged_at is not None and record.budget is not None:
                record.budget.refund(now, self.charged_at)
            breaker = record.breaker
            if breaker is not None:
                if self.probe:
                    self._health._breaker_outcome(self.key, record, now, False, None, True)
                else:
                    breaker.succeeded(now)
            limit = record.limit
            if (
                limit is not None
                and self.slot
                and limit.sample(False, False, self.in_flight, self.epoch)
            ):
                self._health._limit_changed(self.key, limit)
            rate = record.rate
            if rate is not None:
                rate.success(now)
        finally:
            if self.probe or (self.slot and not keep_slot):  # else _finish() has nothing to do
                self._finish(keep_slot)

    def end(
        self,
        signal: Signal,
        now: float,
        *,
        retry_after: float | None = None,
        keep_slot: bool = False,
    ) -> None:
        """Record how the attempt ended (see :meth:`served` for ``keep_slot``)."""
        if signal is Signal.SERVED:
            self.served(now, keep_slot=keep_slot)
            return
        try:
            self._health._record_outcome(self, signal, now, retry_after)
        finally:
            self._finish(keep_slot)

    def abandon(self, now: float) -> None:
        """The attempt ended with no news of the host (cancelled, the deadline): free all, and
        let the next call probe at once if this was the probe."""
        try:
            if self.probe:
                self._health._probe_abandoned(self.key, self._record, now)
        finally:
            self._finish(False)

    def release_slot(self) -> None:
        """Free the slot kept by ``keep_slot=True``."""
        if self.slot:
            self.slot = False
            self._health.limiter.release(self.key)  # type: ignore[union-attr]

    def _finish(self, keep_slot: bool) -> None:
        # On every way out: a probe that left no outcome (an error while recording) must not
        # leave the breaker half-open for good; a slot is given back unless kept.
        if self.probe:
            self.probe = False
            breaker = self._record.breaker
            if breaker is not None and breaker.state is CircuitState.HALF_OPEN:
                self._health._probe_abandoned(self.key, self._record, self._health._clock())
        if self.slot and not keep_slot:
            self.slot = False
            self._health.limiter.release(self.key)  # type: ignore[union-attr]
