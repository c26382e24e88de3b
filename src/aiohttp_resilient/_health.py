"""HostHealth: what the library knows about each host, and each attempt's claim on its host.

One record per (scheme, host, port) holds the host's retry budget, circuit breaker, adaptive
concurrency limit, adaptive rate and counters; a :class:`HostLimiter` holds its slots. An attempt
takes a :class:`HostClaim` before it is sent (breaker admission, rate, slot) and says how it
ended; the claim turns that into the host's bookkeeping and gives everything back on every way
out, cancellation included. The request path only reads the advice (:meth:`HostHealth.advise`).

Every piece of a record is a few numbers changed by one operation at a time (deposit, admit,
record, withdraw, sample, reserve), so a shared store can hold the same state and run each
operation as one atomic script; only the futures that wake waiting calls live in the process.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from ._aimd import AdaptiveLimitPolicy, LimitState
from ._breaker import Admission, BreakerPolicy, BreakerState, CircuitState
from ._budget import BudgetPolicy, BudgetState, Tier
from ._classify import Signal
from ._engine import Clock, RetryRun, Sleep, logger
from ._events import Attempt
from ._exceptions import CircuitOpenError
from ._limiter import IDLE_HOSTS_KEPT, HostKey, HostLimiter
from ._rate import AdaptiveRatePolicy, RateState

__all__ = [
    "Advice",
    "CircuitEvent",
    "CircuitHook",
    "HealthPolicy",
    "HostClaim",
    "HostHealth",
    "WaitExpiredError",
    "format_host",
]

#: A failure on a reused connection counts as the stale keep-alive race only if it came before
#: the server could have been working on the request: within this many seconds, or twice the
#: host's fastest answer, whichever is longer.
STALE_RACE_WINDOW: Final = 0.05


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthPolicy:
    """Which host-health mechanisms run, and how; ``None`` turns one off.

    Usage::

        HealthPolicy(breaker=BreakerPolicy(patience=0), adaptive_rate=None)

    Attributes:
        budget: The retry budget (:class:`BudgetPolicy`). Off: every retry the policy allows
            goes, disconnects at once.
        breaker: The circuit breaker (:class:`BreakerPolicy`).
        adaptive_limit: The live concurrency limit under the per-host cap
            (:class:`AdaptiveLimitPolicy`); needs a per-host cap to work under.
        adaptive_rate: The send rate of hosts that throttle (:class:`AdaptiveRatePolicy`).
    """

    budget: BudgetPolicy | None = field(default_factory=BudgetPolicy)
    breaker: BreakerPolicy | None = field(default_factory=BreakerPolicy)
    adaptive_limit: AdaptiveLimitPolicy | None = field(default_factory=AdaptiveLimitPolicy)
    adaptive_rate: AdaptiveRatePolicy | None = field(default_factory=AdaptiveRatePolicy)

    def __post_init__(self) -> None:
        for name, kind in (
            ("budget", BudgetPolicy),
            ("breaker", BreakerPolicy),
            ("adaptive_limit", AdaptiveLimitPolicy),
            ("adaptive_rate", AdaptiveRatePolicy),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")


class Advice(enum.Enum):
    """How the host says the next retry should go."""

    NOW = "at once"
    BACKOFF = "backoff"
    REFUSED = "budget spent"
    WAIT_FOR_PROBE = "wait for the probe"


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitEvent:
    """A breaker changed state: what ``on_circuit_change`` hooks receive (logged at WARNING).

    Attributes:
        host: ``scheme://host:port``.
        old: The state before.
        new: The state now.
        failures: Consecutive failures when it changed.
        retry_in: Seconds until the next probe when it opened, else ``None``.
    """

    host: str
    old: CircuitState
    new: CircuitState
    failures: int
    retry_in: float | None


CircuitHook = Callable[[CircuitEvent], Awaitable[None] | None]


class WaitExpiredError(Exception):
    """A claim's wait (for a slot, the rate or the probe) would pass the caller's deadline.

    Private to the request path, which turns it into a give-up naming what it waited for.
    """

    def __init__(self, waited_for: str) -> None:
        super().__init__(waited_for)
        self.waited_for = waited_for


def format_host(key: HostKey) -> str:
    scheme, host, port = key
    return f"{scheme}://{host}:{port}" if port is not None else f"{scheme}://{host}"


class _Record:
    """One host's state."""

    __slots__ = (
        "breaker",
        "budget",
        "changed",
        "fastest",
        "limit",
        "probe_out",
        "rate",
        "refused",
        "requests",
        "retries",
    )

    def __init__(self, health: HostHealth, now: float) -> None:
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
        self.probe_out = False
        #: The fastest answer seen, in seconds (for the stale-race window).
        self.fastest = float("inf")
        self.requests = 0
        self.retries = 0
        self.refused = 0


class HostClaim:
    """An attempt's hold on its host: its slot (if there is a cap), whether it is the breaker's
    probe, when it went. End it exactly once with :meth:`end` (then, for a response handed to
    the caller, :meth:`hand_over`) or :meth:`abandon`."""

    __slots__ = (
        "_health",
        "_record",
        "charged",
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
        health: HostHealth,
        record: _Record,
        key: HostKey,
        started: float,
        probe: bool,
        slot: bool,
        charged: bool,
    ) -> None:
        # Positional: one is made per attempt.
        self._health = health
        self._record = record
        self.key = key
        self.started = started
        self.probe = probe
        self.slot = slot
        #: A retry charged to the budget: given back if it succeeds.
        self.charged = charged
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

    def end(
        self,
        signal: Signal,
        now: float,
        *,
        retry_after: float | None = None,
        keep_slot: bool = False,
    ) -> None:
        """Record how the attempt ended; free the slot unless ``keep_slot`` (the caller streams
        the body: :meth:`hand_over` frees it with the connection)."""
        health = self._health
        record = self._record
        try:
            health._record_outcome(self, record, signal, now, retry_after)
        finally:
            if self.slot and not keep_slot:
                self.slot = False
                assert health.limiter is not None
                health.limiter.release(self.key)

    def served(self, now: float, *, keep_slot: bool = False) -> None:
        """:meth:`end` for an answer below 400 (the hot path: the host is fine, nothing to
        decide unless this was the probe or a charged retry)."""
        record = self._record
        if self.probe or self.charged:
            self.end(Signal.SERVED, now, keep_slot=keep_slot)
            return
        elapsed = now - self.started
        if elapsed < record.fastest:
            record.fastest = elapsed
        breaker = record.breaker
        if breaker is not None:
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
        if self.slot and not keep_slot:
            self.slot = False
            self._health.limiter.release(self.key)  # type: ignore[union-attr]

    def release_slot(self) -> None:
        """Free the slot kept by ``end(keep_slot=True)``."""
        if self.slot:
            self.slot = False
            assert self._health.limiter is not None
            self._health.limiter.release(self.key)

    def abandon(self, now: float) -> None:
        """The attempt ended with no news of the host (cancelled, the deadline): free all."""
        self.end(Signal.LOCAL, now)


class HostHealth:
    """Every host's health, in this process's memory.

    Shared by every request of a :class:`RetryMiddleware` (and so of a session), and by any
    middleware or decorator given the same instance. Idle hosts are forgotten once more than
    1024 are known (a crawler stays small); a forgotten host starts afresh.

    Usage::

        health = HostHealth(HealthPolicy(), limiter=HostLimiter(16))
        retry = RetryMiddleware(health=health)

    Args:
        policy: Which mechanisms run (:class:`HealthPolicy`); all of them by default.
        limiter: The per-host cap on attempts in flight; the adaptive limit lives under it.
        on_circuit_change: Called with a :class:`CircuitEvent` when a breaker changes state.
        clock: A monotonic clock in seconds (inject a fake one in tests).
        sleep: The wait function (inject a fake one in tests).
        seed: Seeds the breaks' jitter (tests).
    """

    __slots__ = (
        "_clock",
        "_hosts",
        "_on_change",
        "_rng",
        "_sleep",
        "_sweep_at",
        "limiter",
        "policy",
    )

    def __init__(
        self,
        policy: HealthPolicy | None = None,
        *,
        limiter: HostLimiter | None = None,
        on_circuit_change: CircuitHook | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        seed: int | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, HealthPolicy):
            raise ValueError(f"policy must be a HealthPolicy, got {type(policy).__name__}")
        if limiter is not None and not isinstance(limiter, HostLimiter):
            raise ValueError(f"limiter must be a HostLimiter, got {type(limiter).__name__}")
        if on_circuit_change is not None and not callable(on_circuit_change):
            raise ValueError(f"on_circuit_change must be callable, got {on_circuit_change!r}")
        self.policy = HealthPolicy() if policy is None else policy
        self.limiter = limiter
        self._on_change = on_circuit_change
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._hosts: dict[HostKey, _Record] = {}
        self._sweep_at = IDLE_HOSTS_KEPT

    def __repr__(self) -> str:
        open_hosts = sum(
            1
            for r in self._hosts.values()
            if r.breaker is not None and r.breaker.state is not CircuitState.CLOSED
        )
        return f"<HostHealth hosts={len(self._hosts)} open={open_hosts} limiter={self.limiter!r}>"

    # -- reading ---------------------------------------------------------------------------------

    def circuit_state(self, key: HostKey) -> CircuitState:
        """``key``'s breaker state (closed for an unknown host or without a breaker)."""
        record = self._hosts.get(key)
        if record is None or record.breaker is None:
            return CircuitState.CLOSED
        return record.breaker.state

    def live_limit(self, key: HostKey) -> int | None:
        """``key``'s adaptive concurrency limit, or ``None`` without one."""
        record = self._hosts.get(key)
        if record is None or record.limit is None:
            return None if self.limiter is None else self.limiter.limit_per_host
        return record.limit.limit

    def send_rate(self, key: HostKey) -> float | None:
        """``key``'s adaptive send rate in requests per second, or ``None`` while unlimited."""
        record = self._hosts.get(key)
        if record is None or record.rate is None or not record.rate.enabled:
            return None
        return record.rate.rate

    def budget_left(self, key: HostKey) -> float | None:
        """Retries ``key``'s budget still allows now, or ``None`` without a budget."""
        record = self._hosts.get(key)
        if self.policy.budget is None:
            return None
        if record is None or record.budget is None:
            policy = self.policy.budget
            return policy.min_per_second * policy.ttl
        now = self._clock()
        return record.budget.allowance(now) - record.budget.spent(now)

    # -- claiming --------------------------------------------------------------------------------

    def try_claim(
        self, key: HostKey, now: float, first: bool, charged: bool = False
    ) -> HostClaim | None:
        """Claim ``key`` for an attempt if that needs no wait (the hot path); else ``None``,
        and :meth:`claim` waits."""
        record = self._hosts.get(key)
        if record is None:
            record = self._new_record(key, now)
        breaker = record.breaker
        if breaker is not None and breaker.state is not CircuitState.CLOSED:
            return None
        rate = record.rate
        if rate is not None and rate.enabled:
            return None
        limiter = self.limiter
        if limiter is not None and not limiter.try_acquire(key):
            return None
        if first:
            record.requests += 1
            if record.budget is not None:
                record.budget.deposit(now)
        return HostClaim(self, record, key, now, False, limiter is not None, charged)

    async def claim(
        self,
        key: HostKey,
        *,
        first: bool,
        charged: bool = False,
        wait_until: float | None = None,
        patience_from: float | None = None,
        last_error: BaseException | None = None,
    ) -> HostClaim:
        """Claim ``key`` for an attempt, waiting as its breaker, rate and slots require.

        Raises:
            CircuitOpenError: The breaker is open and the probe would come after the call's
                patience or ``wait_until``.
            WaitExpiredError: A slot or the rate would come after ``wait_until``.

        ``patience_from``: when the call first waited for this host's open circuit (its
        patience counts from there), ``None`` for now.
        """
        clock = self._clock
        now = clock()
        record = self._hosts.get(key)
        if record is None:
            record = self._new_record(key, now)
        if first:
            record.requests += 1
            if record.budget is not None:
                record.budget.deposit(now)
        probe = await self._admit(key, record, wait_until, patience_from, last_error)
        try:
            if record.rate is not None and record.rate.enabled:
                await self._wait_for_rate(record.rate, wait_until)
            limiter = self.limiter
            if limiter is not None and not limiter.try_acquire(key):
                await self._wait_for_slot(limiter, key, wait_until)
        except BaseException:
            if probe and record.breaker is not None:
                self._probe_abandoned(key, record)
            raise
        return HostClaim(self, record, key, clock(), probe, self.limiter is not None, charged)

    async def _admit(
        self,
        key: HostKey,
        record: _Record,
        wait_until: float | None,
        patience_from: float | None,
        last_error: BaseException | None,
    ) -> bool:
        breaker = record.breaker
        if breaker is None:
            return False
        policy = self.policy.breaker
        assert policy is not None
        clock = self._clock
        started = clock()
        since = started if patience_from is None else patience_from
        patience_end = None if policy.patience is None else since + policy.patience
        limit = (
            patience_end
            if wait_until is None
            else (wait_until if patience_end is None else min(wait_until, patience_end))
        )
        while True:
            now = clock()
            admission = breaker.admit(now)
            if admission is Admission.GO:
                return False
            if admission is Admission.PROBE:
                record.probe_out = True
                self._notify(key, record, CircuitState.OPEN, CircuitState.HALF_OPEN, None)
                return True
            # Open (the probe goes at open_until) or half-open (the probe is out).
            probe_at = breaker.open_until if breaker.state is CircuitState.OPEN else now
            if limit is not None and (probe_at > limit or now >= limit):
                raise CircuitOpenError(
                    host=format_host(key),
                    retry_in=max(0.0, breaker.open_until - now),
                    failures=breaker.consecutive,
                    waited=now - started,
                ) from last_error
            await self._wait_for_change(record, breaker, now, limit)

    async def _wait_for_change(
        self, record: _Record, breaker: BreakerState, now: float, limit: float | None
    ) -> None:
        if record.changed is None or record.changed.done():
            record.changed = asyncio.get_running_loop().create_future()
        changed = record.changed
        timeout: float | None
        if breaker.state is CircuitState.OPEN:
            timeout = breaker.open_until - now
        else:
            timeout = None if limit is None else limit - now
        if timeout is None:
            await asyncio.shield(changed)
            return
        sleeper: asyncio.Future[object] = asyncio.ensure_future(self._sleep(max(0.0, timeout)))
        try:
            await asyncio.wait((changed, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()

    async def _wait_for_rate(self, rate: RateState, wait_until: float | None) -> None:
        now = self._clock()
        delay = rate.reserve(now)
        if delay <= 0:
            return
        if wait_until is not None and now + delay > wait_until:
            raise WaitExpiredError("the host's adaptive rate")
        await self._sleep(delay)

    async def _wait_for_slot(
        self, limiter: HostLimiter, key: HostKey, wait_until: float | None
    ) -> None:
        if wait_until is None:
            await limiter.acquire(key)
            return
        remaining = wait_until - self._clock()
        if remaining <= 0:
            raise WaitExpiredError("a per-host slot")
        try:
            await asyncio.wait_for(limiter.acquire(key), remaining)
        except asyncio.TimeoutError as exc:
            raise WaitExpiredError("a per-host slot") from exc

    # -- advice ----------------------------------------------------------------------------------

    def advise(self, key: HostKey, now: float, *, may_go_at_once: bool) -> Advice:
        """How the next retry of a call to ``key`` should go; charges the budget when it goes.

        ``may_go_at_once``: the failure was a disconnect, which is retried at once while the
        budget has room (statuses and refused connections always wait).
        """
        record = self._hosts.get(key)
        if record is None:
            return Advice.NOW if may_go_at_once else Advice.BACKOFF
        breaker = record.breaker
        if breaker is not None and breaker.state is not CircuitState.CLOSED:
            return Advice.WAIT_FOR_PROBE
        budget = record.budget
        if budget is None:
            record.retries += 1
            return Advice.NOW if may_go_at_once else Advice.BACKOFF
        tier = budget.withdraw(now)
        if tier is Tier.REFUSED:
            limit = record.limit
            if limit is not None and limit.limit > limit.min_limit:
                # A spent budget with an adaptive limit to shape the host's load: its failing
                # retries mark the host's drops as congestion, the limit comes down, and the
                # retry backs off and queues under it instead of failing the call. Only where
                # nothing is left to shape is the retry refused.
                record.retries += 1
                return Advice.BACKOFF
            record.refused += 1
            return Advice.REFUSED
        record.retries += 1
        return Advice.NOW if may_go_at_once and tier is Tier.IMMEDIATE else Advice.BACKOFF

    async def decide(
        self,
        run: RetryRun,
        key: HostKey,
        attempt: Attempt,
        now: float,
        *,
        at_once: bool,
        unreachable: bool = False,
        requeue: bool = False,
        retry_after: float | None = None,
    ) -> tuple[float | None, str, bool]:
        """What follows a failed attempt of a call to ``key``, as its policy (``run``) and the
        host say: (delay or None to give up, reason, whether the retry is charged to the
        host's budget); raises :class:`RetryBudgetExhaustedError` when the budget refuses.

        ``at_once``: a disconnect, which may go again at once within the budget.
        ``unreachable``: the connection was refused (nothing was sent).

        ``requeue``: the attempt was refused (a drop, 429 or 503) by a host whose adaptive limit
        is cut for congestion: the client sent too much, so the attempt goes back to the host's
        queue after its backoff without counting (at most ``attempts`` times per call). Random
        faults never cut the limit, so they never get here.
        """
        health = self
        forgiven = health.circuit_state(key) is not CircuitState.CLOSED
        requeue = requeue and run.forgiven < run.policy.attempts
        # A refused connection sent nothing; while a breaker watches the host (it opens within
        # a few failures and bounds the wait), a restart must not use up the call's attempts.
        uncounted = requeue or (unreachable and health.policy.breaker is not None)
        if not forgiven and not uncounted and not run.attempts_left(attempt.number):
            delay, reason = run.decide(attempt)  # records it and says the attempts are used
            return delay, reason, False
        # A requeued attempt still waits its backoff (at once, the one attempt over the host's
        # capacity would be refused again as fast as the network goes) and is charged to the
        # budget (failed retries are what tells overload from random faults), never refused.
        advice = (
            Advice.WAIT_FOR_PROBE
            if forgiven
            else health.advise(key, now, may_go_at_once=at_once and not requeue)
        )
        charged = advice is Advice.NOW or advice is Advice.BACKOFF
        if advice is Advice.REFUSED:
            if not requeue:
                run.record(attempt)
                allowance, spent = health.budget_figures(key)
                error = await run.give_up(attempt, "", budget=(format_host(key), allowance, spent))
                raise error from attempt.error
            advice = Advice.BACKOFF
        if advice is Advice.WAIT_FOR_PROBE and run.circuit_since is None:
            run.circuit_since = now
        delay, reason = run.decide(
            attempt,
            at_once=advice is Advice.NOW,
            forgiven=advice is Advice.WAIT_FOR_PROBE,
            uncounted=uncounted,
            retry_after=retry_after,
        )
        return delay, reason, charged

    def budget_figures(self, key: HostKey) -> tuple[float, float]:
        """(allowance, spent) of ``key``'s budget now, for messages."""
        record = self._hosts.get(key)
        if record is None or record.budget is None:
            return 0.0, 0.0
        now = self._clock()
        return record.budget.allowance(now), record.budget.spent(now)

    # -- bookkeeping -----------------------------------------------------------------------------

    def _record_outcome(
        self,
        claim: HostClaim,
        record: _Record,
        signal: Signal,
        now: float,
        retry_after: float | None,
    ) -> None:
        key = claim.key
        if signal is Signal.SERVED:
            elapsed = now - claim.started
            if elapsed < record.fastest:
                record.fastest = elapsed
            if claim.charged and record.budget is not None:
                record.budget.refund(now)
        breaker = record.breaker
        if breaker is not None:
            if signal is Signal.LOCAL or signal is Signal.THROTTLED:
                if claim.probe:
                    self._probe_abandoned(key, record)
            else:
                failed = signal is not Signal.SERVED and signal is not Signal.ANSWERED
                old = breaker.state
                new = breaker.record(now, failed, probe=claim.probe, retry_after=retry_after)
                if claim.probe:
                    record.probe_out = False
                if new is not None and new is not old:
                    retry_in = breaker.open_until - now if new is CircuitState.OPEN else None
                    self._notify(key, record, old, new, retry_in)
                elif new is CircuitState.OPEN:  # a failed probe: the break starts again
                    self._wake(record)
        dropped = signal is Signal.DROPPED
        throttled = signal is Signal.UNAVAILABLE or signal is Signal.THROTTLED
        limit = record.limit
        if (
            limit is not None
            and (dropped or throttled or signal is Signal.SERVED)
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
                    logger.info("adaptive rate of %s is now %.3g/s", format_host(key), rate.rate)
            elif signal is Signal.SERVED or signal is Signal.ANSWERED:
                rate.success(now)

    def _limit_changed(self, key: HostKey, limit: LimitState) -> None:
        assert self.limiter is not None
        self.limiter.set_limit(key, limit.limit)
        if logger.isEnabledFor(logging.INFO):
            logger.info("adaptive limit of %s is now %d", format_host(key), limit.limit)

    def _probe_abandoned(self, key: HostKey, record: _Record) -> None:
        breaker = record.breaker
        assert breaker is not None
        record.probe_out = False
        breaker.probe_abandoned(self._clock())
        self._wake(record)  # the next waiter probes at once

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
            failures=breaker.consecutive,
            retry_in=retry_in,
        )
        if new is CircuitState.OPEN:
            logger.warning(
                "circuit for %s opened after %d consecutive failures: next probe in %.3gs",
                event.host,
                event.failures,
                retry_in or 0.0,
            )
        else:
            logger.warning("circuit for %s is %s", event.host, new.value)
        self._wake(record)
        hook = self._on_change
        if hook is not None:
            try:
                result = hook(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    task.add_done_callback(_log_hook_failure)
            except Exception:
                logger.exception("the on_circuit_change hook raised; nothing changes")

    @staticmethod
    def _wake(record: _Record) -> None:
        changed = record.changed
        if changed is not None and not changed.done():
            changed.set_result(None)
        record.changed = None

    def _new_record(self, key: HostKey, now: float) -> _Record:
        if len(self._hosts) >= self._sweep_at:
            self._sweep()
        record = self._hosts[key] = _Record(self, now)
        return record

    def _sweep(self) -> None:
        limiter = self.limiter
        self._hosts = {
            k: r
            for k, r in self._hosts.items()
            if (r.breaker is not None and r.breaker.state is not CircuitState.CLOSED)
            or (limiter is not None and (limiter.in_flight(k) or limiter.waiting(k)))
            or (r.limit is not None and r.limit.limit < r.limit.ceiling)
            or (r.rate is not None and r.rate.enabled)
        }
        self._sweep_at = max(IDLE_HOSTS_KEPT, 2 * len(self._hosts))


def _log_hook_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "the on_circuit_change hook raised; nothing changes", exc_info=task.exception()
        )
