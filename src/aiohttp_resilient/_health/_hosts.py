"""HostHealth: what the library knows about each host.

One record per (scheme, host, port) holds the host's retry budget, circuit breaker, adaptive
concurrency limit and adaptive rate; a :class:`HostLimiter` holds its slots. An attempt takes a
:class:`HostClaim` (``_claim.py``) before it is sent (breaker admission, rate, slot) and says
how it ended; the claim turns that into the host's bookkeeping (``_books.py``, which this class
inherits) and gives everything back on every way out, cancellation included. A calm host's
first attempts go without a claim (:meth:`HostHealth.try_enter`), counted on its record. What
to do next is decided in ``_retry/_decision.py`` from :meth:`HostHealth.advise`.

Every piece of a record is a few numbers changed by one operation at a time (deposit, admit,
record, withdraw, sample, reserve), so a shared store can hold the same state and run each
operation as one atomic script; only the futures that wake waiting calls live in the process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeAlias

from .._exceptions import CircuitOpenError
from .._store._breaker import FleetOpenError
from .._store._fleet import FleetLimiter
from .._store._open import fleet_health
from .._util._timing import Clock, Sleep, deadline_timer, timer_expired
from ._books import HostBooks
from ._breaker import BreakerState, CircuitState
from ._budget import Tier
from ._claim import HostClaim, _Record
from ._limiter import IDLE_HOSTS_KEPT, HostKey, HostLimiter, format_host
from ._policy import Advice, CircuitHook, HealthPolicy, WaitExpiredError
from ._rate import RateState

if TYPE_CHECKING:
    from .._store._base import HealthStore
    from .._store._budget import FleetBudgets

__all__ = ["Entered", "HostHealth"]

#: What :meth:`HostHealth.try_enter` gives a call's first attempt: the host's record, the
#: attempts in flight to it with this one, and the adaptive limit's epoch when it went.
Entered: TypeAlias = tuple[_Record, int, int]

#: A host not claimed for this many seconds is forgotten at the next sweep (its breaker, limit
#: and rate start afresh): a crawler's dead and throttling hosts do not pile up.
FORGET_AFTER: Final = 600.0


class HostHealth(HostBooks):
    """Every host's health, in this process's memory.

    Shared by every request of a :class:`RetryMiddleware` (and so of a session), and by any
    middleware or decorator given the same instance. Once more than 1024 hosts are known,
    hosts not claimed for 10 minutes are forgotten (a crawler stays small); a forgotten host
    starts afresh.

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
        store: A :class:`HealthStore` shared with other processes (or sessions): the
            limiter's cap then holds across all of them (``health.limiter`` becomes a
            :class:`FleetLimiter` with the given one's cap), and so do the adaptive rate, the
            breaker (both with a limiter) and the retry budget. ``None``: this process alone.

    Raises:
        ValueError: A bad argument (named), an adaptive ``min_limit`` above the limiter's cap,
            or a ``store`` with nothing to share (no ``limiter`` and no budget).
    """

    __slots__ = (
        "_clock",
        "_fleet_budgets",
        "_hook_tasks",
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
        store: HealthStore | None = None,
    ) -> None:
        if policy is not None and not isinstance(policy, HealthPolicy):
            raise ValueError(f"policy must be a HealthPolicy, got {type(policy).__name__}")
        if limiter is not None and not isinstance(limiter, HostLimiter):
            raise ValueError(f"limiter must be a HostLimiter, got {type(limiter).__name__}")
        if on_circuit_change is not None and not callable(on_circuit_change):
            raise ValueError(f"on_circuit_change must be callable, got {on_circuit_change!r}")
        self.policy = HealthPolicy() if policy is None else policy
        adaptive = self.policy.adaptive_limit
        if (
            adaptive is not None
            and limiter is not None
            and adaptive.min_limit > limiter.limit_per_host
        ):
            raise ValueError(
                f"adaptive_limit.min_limit ({adaptive.min_limit}) must not exceed the "
                f"limiter's limit_per_host ({limiter.limit_per_host})"
            )
        #: The retry budgets shared through a store (``None``: this process's own).
        self._fleet_budgets: FleetBudgets | None = None
        if store is not None:  # cap, rate, breaker and budget fleet-wide (the default path is
            # untouched)
            limiter, self.policy, self._fleet_budgets = fleet_health(store, limiter, self.policy)
        self.limiter = limiter
        self._on_change = on_circuit_change
        self._clock = clock
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._hosts: dict[HostKey, _Record] = {}
        self._sweep_at = IDLE_HOSTS_KEPT
        # Tasks of async on_circuit_change hooks, kept until done (the loop holds weak refs).
        self._hook_tasks: set[asyncio.Future[None]] = set()

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

    def known_hosts(self) -> list[HostKey]:
        """The hosts with a record now (forgotten ones are not)."""
        return list(self._hosts)

    def circuit_openings(self, key: HostKey) -> int:
        """How many times ``key``'s breaker went from closed to open since its record was
        made (a forgotten host starts again from 0)."""
        record = self._hosts.get(key)
        return 0 if record is None else record.trips

    def live_limit(self, key: HostKey) -> int | None:
        """``key``'s adaptive concurrency limit (the cap without one), or ``None`` uncapped."""
        record = self._hosts.get(key)
        if record is None or record.limit is None:
            return None if self.limiter is None else self.limiter.limit_per_host
        return record.limit.limit

    def send_rate(self, key: HostKey) -> float | None:
        """``key``'s adaptive send rate in requests per second, or ``None`` while unlimited."""
        record = self._hosts.get(key)
        if record is None or record.rate is None or not record.rate.enabled:
            return None
        now = self._clock()
        self.settle(key, record, now)
        return record.rate.current(now)

    def budget_left(self, key: HostKey) -> float | None:
        """Retries ``key``'s budget still allows now, or ``None`` without a budget."""
        policy = self.policy.budget
        if policy is None:
            return None
        record = self._hosts.get(key)
        if record is None or record.budget is None:
            return policy.min_per_second * policy.ttl
        allowance, spent = self.budget_figures(key)
        return allowance - spent

    def budget_figures(self, key: HostKey) -> tuple[float, float]:
        """(allowance, spent) of ``key``'s budget now, for messages."""
        record = self._hosts.get(key)
        if record is None or record.budget is None:
            return 0.0, 0.0
        now = self._clock()
        self.settle(key, record, now)
        return record.budget.allowance(now), record.budget.spent(now)

    # -- scheduling (read-only) ------------------------------------------------------------------

    def availability(self, key: HostKey, now: float) -> tuple[float, str | None, bool]:
        """Whether ``key`` could take an attempt now without waiting, for a scheduler that
        keeps its own queue per host; reads, never changes or waits.

        Returns ``(wait, reason, fails_fast)``: ``wait`` seconds until it could (0: now; inf:
        only on an event, such as a slot freed or the probe's outcome), ``reason`` what it
        waits for (``"breaker"``, ``"rate"``, ``"slots"``; ``None`` when it need not), and
        ``fails_fast``: its breaker is open and the host has been down longer than the
        breaker's patience, so that a call now ends at once with :class:`CircuitOpenError`
        (sending nothing). When the breaker's probe is due, ``wait`` is 0: one call may go.
        """
        record = self._hosts.get(key)
        if record is None:
            return 0.0, None, False
        breaker = record.breaker
        if breaker is not None and breaker.state is not CircuitState.CLOSED:
            patience = self.policy.breaker.patience if self.policy.breaker else None
            if patience is not None and now >= breaker.opened_at + patience:
                return 0.0, "breaker", True
            if breaker.state is CircuitState.HALF_OPEN:
                return float("inf"), "breaker", False
            return max(0.0, breaker.open_until - now), "breaker", False
        rate = record.rate
        if rate is not None and rate.enabled and (wait := rate.wait(now)) > 0:
            return wait, "rate", False
        limiter = self.limiter
        if limiter is not None and limiter.in_flight(key) >= self._live_limit(key, limiter):
            return float("inf"), "slots", False
        return 0.0, None, False

    def strain(self, key: HostKey, now: float) -> str | None:
        """Why ``key`` should get no extra load now (a hedge stands down), or ``None``: its
        breaker is not closed (``"breaker"``), its adaptive limit is cut (``"limit"``), its
        rate is shaped (``"rate"``) or its retry budget is past half spent (``"budget"``)."""
        record = self._hosts.get(key)
        if record is None:
            return None
        self.settle(key, record, now)
        if record.breaker is not None and record.breaker.state is not CircuitState.CLOSED:
            return "breaker"
        if record.limit is not None and record.limit.limit < record.limit.ceiling:
            return "limit"
        if (record.rate is not None and record.rate.enabled) or (
            self.limiter is not None and self.limiter.paced(key)  # a fleet's shared rate
        ):
            return "rate"
        budget = record.budget
        if budget is not None and budget.spent(now) >= 0.5 * budget.allowance(now):
            return "budget"
        return None

    def charge(self, key: HostKey, now: float) -> bool:
        """Charge one extra attempt (a hedge) to ``key``'s retry budget, never given back;
        ``False`` when the budget refuses it."""
        record = self._hosts.get(key)
        if record is None or record.budget is None:
            return True
        self.settle(key, record, now)
        return record.budget.withdraw(now) is not Tier.REFUSED

    def _live_limit(self, key: HostKey, limiter: HostLimiter) -> int:
        limit = self.live_limit(key)
        return limiter.limit_per_host if limit is None else limit

    # -- claiming --------------------------------------------------------------------------------

    def try_claim(
        self, key: HostKey, now: float, first: bool, charged_at: float | None = None
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
        record.touched = now
        if first and record.budget is not None:
            record.budget.deposit(now)
        return HostClaim(self, record, key, now, False, limiter is not None, charged_at)

    # -- the fast path --------------------------------------------------------------------------
    # A call's first attempt to a calm host (breaker closed, rate not shaped, limit at its
    # ceiling) with a free slot goes without a HostClaim: it is counted on the host's record,
    # and its success is two numbers more there. The mechanisms are told those counts together
    # (settle), each in the time slot it came in, and before anything reads or changes them.
    # A failure gets its claim after the fact (claim_after). The calm checks repeat
    # try_claim's rather than share a helper: a call more per request on the hot path.

    def try_enter(self, key: HostKey, now: float) -> Entered | None:
        """Take a slot of calm ``key`` for a call's first attempt (the hot path): what
        :meth:`answered` and :meth:`claim_after` take (:data:`Entered`); ``None``: the call
        goes through :meth:`try_claim` or :meth:`claim` instead."""
        record = self._hosts.get(key)
        if record is None:
            record = self._new_record(key, now)
        elif now >= record.settle_at:
            self.settle(key, record, now)
        breaker = record.breaker
        if breaker is not None and breaker.state is not CircuitState.CLOSED:
            return None
        rate = record.rate
        if rate is not None and rate.enabled:
            return None
        limit = record.limit
        epoch = 0
        if limit is not None:
            if limit.limit < limit.ceiling:
                return None
            epoch = limit.epoch
        limiter = self.limiter
        in_flight = 0 if limiter is None else limiter.try_acquire(key)
        if not in_flight and limiter is not None:
            return None
        record.touched = record.asked_at = now
        record.asked += 1
        return record, in_flight, epoch

    def answered(self, key: HostKey, entered: Entered, started: float, now: float) -> None:
        """An attempt of :meth:`try_enter` got an answer below 400 (its slot is the caller's
        to give back)."""
        record = entered[0]
        if now >= record.settle_at:
            self.settle(key, record, now)
        record.ok += 1
        record.ok_at = now
        limit = record.limit
        if limit is not None and limit.epoch != entered[2]:
            record.ok_stale += 1  # sent under the limit before: not a sample of this one
        elapsed = now - started
        if elapsed < record.fastest:
            record.fastest = elapsed

    def claim_after(self, key: HostKey, entered: Entered, started: float) -> HostClaim:
        """The claim of an attempt of :meth:`try_enter` that did not end in an answer below
        400, made now to book its outcome as any claim's."""
        record, in_flight, epoch = entered
        claim = HostClaim(self, record, key, started, False, self.limiter is not None, None)
        # As it went: the adaptive limit cuts from what was in use, and an attempt sent under
        # a limit that has changed since says nothing of the new one.
        claim.in_flight, claim.epoch = in_flight, epoch
        return claim

    async def claim(
        self,
        key: HostKey,
        *,
        first: bool,
        charged_at: float | None = None,
        wait_until: float | None = None,
        last_error: BaseException | None = None,
    ) -> HostClaim:
        """Claim ``key`` for an attempt, waiting as its breaker, rate and slots require.

        Raises:
            CircuitOpenError: The breaker is open and its next probe would come after the
                outage's patience (counted from the breaker's opening) or ``wait_until``.
            WaitExpiredError: A slot or the rate would come after ``wait_until``.
        """
        clock = self._clock
        now = clock()
        record = self._hosts.get(key)
        if record is None:
            record = self._new_record(key, now)
        record.touched = now
        if first and record.budget is not None:
            record.budget.deposit(now)
        while True:
            probe = await self._admit(key, record, wait_until, last_error)
            try:
                if record.rate is not None and record.rate.enabled:
                    await self._wait_for_rate(record.rate, wait_until)
                limiter = self.limiter
                if probe and isinstance(limiter, FleetLimiter):  # the fleet's one probe
                    await self._wait_for_slot(limiter.acquire_probe, key, wait_until)
                elif limiter is not None and not limiter.try_acquire(key):
                    await self._wait_for_slot(limiter.acquire, key, wait_until)
                break
            except FleetOpenError as told:  # a store's word on the host's breaker: admit again
                self._fleet_told(key, record, told.news, probe)
            except BaseException:
                if probe:
                    self._probe_abandoned(key, record, clock())
                raise
        return HostClaim(self, record, key, clock(), probe, self.limiter is not None, charged_at)

    async def _admit(
        self,
        key: HostKey,
        record: _Record,
        wait_until: float | None,
        last_error: BaseException | None,
    ) -> bool:
        # Whether the attempt goes as the breaker's probe; waits while the outage is young.
        # Patience counts from the outage (the breaker's opening), not from the call: calls
        # that come while a host restarts wait for the probe that finds it back; once the host
        # has been down longer than the patience, calls fail at once (Envoy's ejection, Finagle's
        # FailFast), except the one whose turn it is to probe.
        breaker = record.breaker
        if breaker is None:
            return False
        patience = self.policy.breaker.patience  # type: ignore[union-attr]
        clock = self._clock
        started = clock()
        while True:
            now = clock()
            state = breaker.state
            if state is CircuitState.CLOSED:
                return False
            if state is CircuitState.OPEN and now >= breaker.open_until:
                breaker.admit(now)  # the probe is due: this attempt is it
                self._notify(key, record, CircuitState.OPEN, CircuitState.HALF_OPEN, None)
                return True
            limit = None if patience is None else breaker.opened_at + patience
            if wait_until is not None and (limit is None or wait_until < limit):
                limit = wait_until
            # Open: the probe goes at open_until; half-open: the probe is out, wait for it.
            probe_at = breaker.open_until if state is CircuitState.OPEN else now
            if limit is not None and (probe_at > limit or now >= limit):
                raise CircuitOpenError(
                    host=format_host(key),
                    retry_in=max(0.0, breaker.open_until - now),
                    reason=breaker.reason,
                    waited=now - started,
                    down_for=now - breaker.opened_at,
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
        if wait_until is not None and now + rate.wait(now) > wait_until:
            raise WaitExpiredError("the host's adaptive rate")  # nothing reserved
        delay, token = rate.reserve(now)
        if delay <= 0:
            return
        try:
            await self._sleep(delay)
        except BaseException:
            rate.unreserve(token)  # a cancelled caller does not keep its send slot
            raise

    async def _wait_for_slot(
        self,
        acquire: Callable[[HostKey], Awaitable[None]],
        key: HostKey,
        wait_until: float | None,
    ) -> None:
        if wait_until is None:
            await acquire(key)
            return
        remaining = wait_until - self._clock()
        if remaining <= 0:
            raise WaitExpiredError("a per-host slot")
        # Not asyncio.wait_for: below Python 3.12 it can swallow a cancellation that arrives
        # as the slot is handed over (gh-86296), and the request would go anyway.
        timer = deadline_timer(remaining)
        try:
            async with timer:
                await acquire(key)
        except asyncio.TimeoutError as exc:  # not the builtin TimeoutError on Python 3.10
            if not timer_expired(timer):
                raise
            raise WaitExpiredError("a per-host slot") from exc

    # -- advice ----------------------------------------------------------------------------------

    def advise(
        self, key: HostKey, now: float, *, may_go_at_once: bool, congestion: bool = False
    ) -> tuple[Advice, float | None]:
        """How the next retry of a call to ``key`` should go by its retry budget, and when the
        budget was charged for it (``None``: not charged). The breaker is the caller's to ask
        first (:func:`next_step`: an open circuit means waiting for the probe, uncharged).

        ``may_go_at_once``: the failure was a disconnect, which goes again at once while the
        budget is under its immediate share. ``congestion``: the failure was a refusal (429,
        503, a reset or disconnect): with a spent budget and an adaptive limit to shape the
        host's load, such a retry backs off and queues under the limit (uncharged) instead of
        being refused, since the limit comes down on exactly these. Other failures (500s, cut
        bodies) are refused.
        """
        record = self._hosts.get(key)
        if record is None or record.budget is None:
            return (Advice.NOW if may_go_at_once else Advice.BACKOFF), None
        self.settle(key, record, now)
        tier = record.budget.withdraw(now)
        if tier is Tier.REFUSED:
            shaped = congestion and record.limit is not None
            return (Advice.BACKOFF if shaped else Advice.REFUSED), None
        if may_go_at_once and tier is Tier.IMMEDIATE:
            return Advice.NOW, now
        return Advice.BACKOFF, now

    def refund(self, key: HostKey, now: float, charged_at: float) -> None:
        """Give back a charge for a retry that was not made after all."""
        record = self._hosts.get(key)
        if record is not None and record.budget is not None:
            record.budget.refund(now, charged_at)

    def _new_record(self, key: HostKey, now: float) -> _Record:
        if len(self._hosts) >= self._sweep_at:
            self._sweep(now)
        record = self._hosts[key] = _Record(self, now)
        if self._fleet_budgets is not None and self.policy.budget is not None:
            record.budget = self._fleet_budgets.budget(key, self.policy.budget, now)
        return record

    def _sweep(self, now: float) -> None:
        # Forget hosts nobody claimed lately (and that hold no slot or waiter); sweep again
        # only once the table has doubled, so a crawler with more busy hosts than
        # IDLE_HOSTS_KEPT does not sweep on every new one (amortised O(1)).
        limiter = self.limiter
        self._hosts = {
            k: r
            for k, r in self._hosts.items()
            if now - r.touched < FORGET_AFTER
            or (limiter is not None and (limiter.in_flight(k) or limiter.waiting(k)))
        }
        self._sweep_at = max(IDLE_HOSTS_KEPT, 2 * len(self._hosts))
