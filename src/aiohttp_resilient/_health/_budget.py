"""The per-host retry budget: how many retries a host can take, as a share of its requests."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

from .._retry._policy import _check_number
from ._window import rotate

__all__ = ["BudgetPolicy", "BudgetState", "Tier"]

#: The window is kept as this many slots that expire one at a time (tower's TpsBudget: 10).
SLOTS: Final = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetPolicy:
    """How many retries a host may get: ``ratio`` per request plus ``min_per_second``, over the
    last ``ttl`` seconds (Finagle's and tower's ``RetryBudget``, Envoy's 20%).

    A retry that succeeds gives its charge back (the AWS SDK's retry quota does this), so a
    budget is spent by retries that fail again: isolated faults, whose retries succeed, cost it
    nothing, while a host where retries keep failing drains it. While less than
    ``immediate_share`` of it is spent, a disconnect is retried at once; past that, retries wait
    on the backoff schedule; when it is spent, a retry is refused and the call ends with
    :class:`RetryBudgetExhaustedError`.

    Usage::

        HealthPolicy(budget=BudgetPolicy(ratio=0.1))

    Attributes:
        ratio: Failed retries allowed per request in the window. Finagle, tower and Envoy use
            0.2. Because successful retries are given back, 0.2 covers independent faults up to
            about 35% of requests (a retry fails again with the fault's own odds).
        min_per_second: Retries allowed per second whatever the traffic, so that a quiet client
            can still retry (Finagle and tower: 10).
        ttl: Seconds a request or a retry counts for (Finagle and tower: 10; 1 to 60).
        immediate_share: Below this share of the budget spent, disconnects retry at once; above
            it they back off (gRPC throttles retries once half its tokens are gone).
    """

    ratio: float = 0.2
    min_per_second: float = 10.0
    ttl: float = 10.0
    immediate_share: float = 0.5

    def __post_init__(self) -> None:
        _check_number("ratio", self.ratio, minimum=0.0)
        _check_number("min_per_second", self.min_per_second, minimum=0.0)
        _check_number("ttl", self.ttl, minimum=1.0, maximum=60.0)
        _check_number("immediate_share", self.immediate_share, minimum=0.0, maximum=1.0)
        if self.ratio == 0 and self.min_per_second == 0:
            raise ValueError("ratio and min_per_second are both 0: no retry could ever go")


class Tier(enum.Enum):
    """What the budget allows for the next retry."""

    #: Less than ``immediate_share`` spent: a disconnect may retry at once.
    IMMEDIATE = "immediate"
    #: Retries wait on the backoff schedule.
    BACKOFF = "backoff"
    #: Spent: no retry.
    REFUSED = "refused"


class BudgetState:
    """One host's budget: requests and net retry charges in :data:`SLOTS` slots of
    ``ttl / SLOTS`` seconds, expired lazily when touched.

    Every operation reads and writes a fixed set of numbers, so a shared store can do each one
    atomically (one script per operation). O(:data:`SLOTS`) per retry, O(1) per request.
    """

    __slots__ = ("_policy", "_requests", "_slot", "_slot_end", "_spent")

    def __init__(self, policy: BudgetPolicy, now: float) -> None:
        self._policy = policy
        self._requests = [0.0] * SLOTS
        self._spent = [0.0] * SLOTS
        self._slot = 0
        self._slot_end = now + policy.ttl / SLOTS

    def _advance(self, now: float) -> None:
        if now < self._slot_end:
            return
        self._slot, self._slot_end = rotate(
            (self._requests, self._spent), self._slot, self._slot_end, self._policy.ttl / SLOTS, now
        )

    def deposit(self, now: float, count: int = 1) -> None:
        """``count`` new logical requests to the host."""
        if now >= self._slot_end:
            self._advance(now)
        self._requests[self._slot] += count

    def allowance(self, now: float) -> float:
        """Retries the window allows in all."""
        self._advance(now)
        policy = self._policy
        return policy.min_per_second * policy.ttl + policy.ratio * sum(self._requests)

    def spent(self, now: float) -> float:
        """Net retries charged in the window (failed ones; successful ones were given back)."""
        self._advance(now)
        return max(0.0, sum(self._spent))

    def past_immediate(self, now: float) -> bool:
        """Whether retries no longer go at once: failed retries have spent the immediate
        share (the host's failures are not independent)."""
        return self.spent(now) >= self._policy.immediate_share * self.allowance(now)

    def withdraw(self, now: float) -> Tier:
        """Charge a retry if the budget allows one, and say at which tier."""
        allowance = self.allowance(now)
        spent = max(0.0, sum(self._spent))
        if spent + 1.0 > allowance:
            return Tier.REFUSED
        self._spent[self._slot] += 1.0
        if spent < self._policy.immediate_share * allowance:
            return Tier.IMMEDIATE
        return Tier.BACKOFF

    def refund(self, now: float, charged_at: float) -> None:
        """Give back the charge made at ``charged_at`` (its retry succeeded, or was not made),
        in the slot it was made in; a charge that has expired is gone already."""
        self._advance(now)
        width = self._policy.ttl / SLOTS
        age = math.ceil((self._slot_end - charged_at) / width) - 1  # 0: the current slot
        if 0 <= age < SLOTS:
            self._spent[(self._slot - age) % SLOTS] -= 1.0
