"""StoreConnector: the session's connector, which also closes a store the session made from
``resilient_session(store="redis://...")`` when the session closes."""

from __future__ import annotations

from typing import Any

from .._transport._connector import TrackingConnector
from ._base import HealthStore

__all__ = ["StoreConnector"]


class StoreConnector(TrackingConnector):
    """A :class:`TrackingConnector` that, on close, closes the store it owns (which first
    gives back the leases of the session's limiter)."""

    def __init__(self, *, store: HealthStore, **options: Any) -> None:
        super().__init__(**options)
        self._owned_store: HealthStore | None = store

    async def close(self, *, abort_ssl: bool = False) -> None:
        await super().close(abort_ssl=abort_ssl)
        store, self._owned_store = self._owned_store, None
        if store is not None:
            await store.close()
