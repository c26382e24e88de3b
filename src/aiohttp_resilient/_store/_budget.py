"""The retry budget fleet-wide: one host's requests and retry charges counted across every
process sharing a store, in time slots (the local budget's, ``BudgetPolicy.ttl / SLOTS`` wide,
on the store's clock), so that a retry storm is refused across the fleet as one process's
budget refuses it alone.

The decision stays in the process and synchronous (the retry loop asks it with no wait): a
:class:`SharedBudget` decides on the fleet's totals from its last exchange with the store plus
what this process did since. Deposits (one per request) are sent in a batch every
:data:`FLUSH_EVERY` seconds per busy host, never on a request's way; a charge (a retry) or a
refund is sent at once, so the others see it on their next exchange. With the store down, or
totals older than :data:`FRESH_FOR`, each process decides on its own counts (fail open).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Final

from .._health._budget import SLOTS, BudgetPolicy, BudgetState, Tier
from .._health._limiter import HostKey, format_host
from ._failover import StoreDownError, StoreGuard

if TYPE_CHECKING:
    from ._base import HealthStore

__all__ = ["FLUSH_EVERY", "FRESH_FOR", "FleetBudgets", "SharedBudget"]

#: Seconds between batches of a busy host's deposits.
FLUSH_EVERY: Final = 0.5
#: Fleet totals older than this (seconds) are not used: the process goes on its own counts.
FRESH_FOR: Final = 2.0


class SharedBudget(BudgetState):
    """A host's :class:`BudgetState` that decides on the fleet's counts while they are fresh
    (its own slots still count this process's part, for when they are not)."""

    __slots__ = (
        "__weakref__",
        "_fleet",
        "fleet_requests",
        "fleet_spent",
        "host",
        "pending_refunds",
        "pending_requests",
        "pending_spent",
        "sent",
        "synced",
        "synced_at",
        "transit",
    )

    def __init__(self, policy: BudgetPolicy, now: float, host: str, fleet: FleetBudgets) -> None:
        super().__init__(policy, now)
        self.host = host
        self._fleet = fleet
        #: What this process did since its last exchange with the store.
        self.pending_requests = 0
        self.pending_spent = 0
        self.pending_refunds: list[int] = []  # each a refund of a charge made that many slots ago
        #: Sent to the store, its answer not back yet: requests, charges, refunds (the
        #: fleet's totals do not hold them yet, and this process must not forget them).
        self.transit = [0, 0, 0]
        #: The fleet's counts over the window at the last exchange, and when it was.
        self.fleet_requests = 0.0
        self.fleet_spent = 0.0
        self.synced_at = -math.inf
        #: Exchanges sent, and the last whose answer was taken (an older one coming back
        #: later is not: its totals are older).
        self.sent = self.synced = 0

    def _fresh(self) -> bool:
        return self._fleet.guard.up and self._fleet.clock() - self.synced_at < FRESH_FOR

    def deposit(self, now: float, count: int = 1) -> None:
        super().deposit(now, count)
        self.pending_requests += count
        self._fleet.dirty(self, at_once=False)

    def allowance(self, now: float) -> float:
        if not self._fresh():
            return super().allowance(now)
        policy = self._policy
        requests = self.fleet_requests + self.pending_requests + self.transit[0]
        return policy.min_per_second * policy.ttl + policy.ratio * requests

    def spent(self, now: float) -> float:
        if not self._fresh():
            return super().spent(now)
        transit = self.transit
        own = self.pending_spent + transit[1] - len(self.pending_refunds) - transit[2]
        return max(0.0, self.fleet_spent + own)

    def withdraw(self, now: float) -> Tier:
        allowance = self.allowance(now)
        spent = self.spent(now)
        if spent + 1.0 > allowance:
            return Tier.REFUSED
        self._advance(now)
        self._spent[self._slot] += 1.0
        self.pending_spent += 1
        self._fleet.dirty(self, at_once=True)  # the others see it on their next exchange
        return Tier.IMMEDIATE if spent < self._policy.immediate_share * allowance else Tier.BACKOFF

    def refund(self, now: float, charged_at: float) -> None:
        super().refund(now, charged_at)
        width = self._policy.ttl / SLOTS
        age = math.ceil((self._slot_end - charged_at) / width) - 1
        if 0 <= age < SLOTS:
            self.pending_refunds.append(age)
            self._fleet.dirty(self, at_once=True)


class FleetBudgets:
    """The shared budgets of one :class:`HostHealth`, and the task that exchanges their counts
    with the store (closed with the store, like a fleet limiter)."""

    __slots__ = (
        "__weakref__",
        "_budgets",
        "_dirty",
        "_flusher",
        "_owns_guard",
        "_tasks",
        "guard",
        "store",
    )

    def __init__(self, store: HealthStore, guard: StoreGuard, *, owns_guard: bool) -> None:
        self.store = store
        self.guard = guard
        # A guard shared with a fleet limiter is the limiter's to retry while the store is
        # down: a budget exchange taking its one try would leave the limiter's leases that
        # timed out unreturned (they keep the fleet off the host until their TTL).
        self._owns_guard = owns_guard
        self._budgets: weakref.WeakValueDictionary[HostKey, SharedBudget] = (
            weakref.WeakValueDictionary()
        )
        self._dirty: dict[str, SharedBudget] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        store._attach(self)

    def clock(self) -> float:
        return time.monotonic()

    def budget(self, key: HostKey, policy: BudgetPolicy, now: float) -> SharedBudget:
        """``key``'s budget, shared with the fleet."""
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = SharedBudget(policy, now, format_host(key), self)
        return budget

    def dirty(self, budget: SharedBudget, *, at_once: bool) -> None:
        """``budget`` has counts to send: with the next batch, or ``at_once``."""
        if at_once and self._may_call():
            self._spawn(self._send(budget))
            return
        self._dirty[budget.host] = budget
        if self._flusher is None:
            self._flusher = self._spawn(self._flush_loop())

    async def _flush_loop(self) -> None:
        try:
            while self._dirty:
                await asyncio.sleep(FLUSH_EVERY)
                batch, self._dirty = self._dirty, {}
                await asyncio.gather(*(self._send(b) for b in batch.values()))
        finally:
            self._flusher = None

    def _may_call(self) -> bool:
        return self.guard.up or (self._owns_guard and self.guard.due())

    async def _send(self, budget: SharedBudget) -> None:
        # One exchange: this process's counts go in, the fleet's totals come back. Store down:
        # they are dropped (this process's own slots count them).
        requests, spent = budget.pending_requests, budget.pending_spent
        refunds = list(budget.pending_refunds)
        budget.pending_requests = budget.pending_spent = 0
        budget.pending_refunds.clear()
        if not self._may_call():
            return
        policy = budget._policy
        transit = budget.transit
        transit[0] += requests
        transit[1] += spent
        transit[2] += len(refunds)
        budget.sent += 1
        sent = budget.sent
        try:
            totals = await self.guard.run(
                self.store.budget_sync,
                budget.host,
                policy.ttl / SLOTS,
                requests,
                spent,
                refunds,
            )
        except StoreDownError:
            return  # they count in this process's own slots; the fleet may have taken them
        finally:
            transit[0] -= requests
            transit[1] -= spent
            transit[2] -= len(refunds)
        if sent < budget.synced:
            return  # a later exchange's totals were taken already
        budget.synced = sent
        budget.fleet_requests, budget.fleet_spent = totals
        budget.synced_at = self.clock()

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Send what is pending (within the store's timeout), then stop."""
        if self._flusher is not None:
            self._flusher.cancel()
        batch, self._dirty = self._dirty, {}
        pending = [*self._tasks, *(asyncio.ensure_future(self._send(b)) for b in batch.values())]
        if pending:
            with contextlib.suppress(Exception):
                await asyncio.wait(pending, timeout=self.guard.timeout * 2)


def budget_totals(
    slots: dict[int, list[int]], current: int, requests: int, spent: int, refunds: Sequence[int]
) -> tuple[int, int]:
    """The in-memory store's exchange (``slots``: index -> [requests, spent], changed in
    place): add the counts to slot ``current`` and the refunds to their slots, drop the slots
    out of the window, return the window's (requests, spent)."""
    cell = slots.setdefault(current, [0, 0])
    cell[0] += requests
    cell[1] += spent
    for age in refunds:
        slots.setdefault(current - age, [0, 0])[1] -= 1
    for index in [i for i in slots if i <= current - SLOTS]:
        del slots[index]
    return sum(c[0] for c in slots.values()), sum(c[1] for c in slots.values())
