"""How ``store=`` arguments become a store and a fleet-wide limiter."""

from __future__ import annotations

from .._health._limiter import HostLimiter
from ._base import HealthStore
from ._fleet import FleetLimiter
from ._memory import MemoryStore
from ._redis import RedisStore

__all__ = ["fleet_limiter", "open_store"]


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
