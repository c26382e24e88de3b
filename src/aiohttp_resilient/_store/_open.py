"""How ``store=`` arguments become a store and a fleet-wide limiter."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from .._health._limiter import HostLimiter
from ._base import HealthStore
from ._budget import FleetBudgets
from ._failover import StoreGuard
from ._fleet import FleetLimiter
from ._memory import MemoryStore
from ._redis import RedisStore

if TYPE_CHECKING:
    from .._health._policy import HealthPolicy

__all__ = ["fleet_health", "fleet_limiter", "open_store"]


def open_store(store: HealthStore | str) -> tuple[HealthStore, bool]:
    """The store ``store`` names, and whether it was made here (then its owner closes it):
    a :class:`HealthStore` as it is, ``"redis://..."``/``"rediss://..."`` a
    :class:`RedisStore`, ``"memory"`` a :class:`MemoryStore`.

    Raises:
        ValueError: Anything else (the message names ``store``, with no password in it).
    """
    if isinstance(store, HealthStore):
        return store, False
    if isinstance(store, str):
        if store == "memory":
            return MemoryStore(), True
        if store.startswith(("redis://", "rediss://")):
            return RedisStore(store), True
    # Not echoed: a malformed URL may still hold a password.
    raise ValueError(
        "store must be a HealthStore, 'memory' or a redis:// or rediss:// URL, "
        f"got a {type(store).__name__}"
    )


def fleet_limiter(limiter: HostLimiter | None, store: HealthStore) -> FleetLimiter:
    """A limiter with ``limiter``'s cap, held fleet-wide through ``store``.

    Raises:
        ValueError: No ``limiter``: a store shares a cap, and there is none.
    """
    if limiter is None:
        raise ValueError("store= shares the per-host cap: give a limiter (limit_per_host) too")
    if not isinstance(store, HealthStore):
        raise ValueError(f"store must be a HealthStore, got {type(store).__name__}")
    if isinstance(limiter, FleetLimiter):
        return limiter
    return FleetLimiter(limiter.limit_per_host, store, timeout=store.timeout)


def fleet_health(
    store: HealthStore, limiter: HostLimiter | None, policy: HealthPolicy
) -> tuple[HostLimiter | None, HealthPolicy, FleetBudgets | None]:
    """What ``HostHealth(store=...)`` shares: with a ``limiter``, its cap (a
    :class:`FleetLimiter`), the adaptive rate (moved from the policy into the store) and the
    breaker (told through the leases); with a budget, the retry budget. Returns the limiter
    and policy the host health runs with, and the shared budgets.

    Raises:
        ValueError: ``store`` is not a HealthStore, or there is nothing to share (no limiter
            and no budget).
    """
    if not isinstance(store, HealthStore):
        raise ValueError(f"store must be a HealthStore, got {type(store).__name__}")
    if limiter is not None:
        fleet = limiter = fleet_limiter(limiter, store)
        fleet.rate_policy = policy.adaptive_rate  # the fleet's rate, instead of this process's
        fleet.breaker_policy = policy.breaker
        policy = dataclasses.replace(policy, adaptive_rate=None)
        guard, owns = fleet.guard, False
    elif policy.budget is None:
        raise ValueError(
            "store= shares the per-host cap and the retry budget: give a limiter "
            "(limit_per_host) or keep the budget"
        )
    else:
        guard, owns = StoreGuard(store, timeout=store.timeout), True
    budgets = None if policy.budget is None else FleetBudgets(store, guard, owns_guard=owns)
    return limiter, policy, budgets
