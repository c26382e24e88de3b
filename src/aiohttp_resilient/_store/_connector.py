"""StoreConnector: the session's connector, which also closes a store the session made from
``resilient_session(store="redis://...")`` when the session closes."""

from __future__ import annotations

from typing import Any

from .._transport._connector import TrackingConnector
from ._base import HealthStore
from ._fleet import FleetLimiter

__all__ = ["StoreConnector"]


class StoreConnector(TrackingConnector):
    """A :class:`TrackingConnector` that, on close, gives back the fleet limiter's leases and
    closes the store it owns."""

    def __init__(self, *, store: HealthStore, limiter: FleetLimiter, **options: Any) -> None:
        super().__init__(**options)
        self._owned_store: HealthStore | None = store
        self._fleet = limiter

    async def close(self, *, abort_ssl: bool = False) -> None:
        await super().close(abort_ssl=abort_ssl)
        store, self._owned_store = self._owned_store, None
        if store is not None:
            await self._fleet.close()
            await store.close()
