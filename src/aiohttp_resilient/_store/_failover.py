"""StoreGuard: the fail-open guard around a shared store.

A store call that takes longer than the timeout or fails marks the store down: the process
goes on with its own state at once (no request fails or waits because the store did), says so
once, and tries the store again after a backoff (one call at a time: a dead store costs one
timeout per backoff, not one per request); the first call that succeeds rejoins the fleet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from .._util._log import log_fields, logger
from .._util._redact import redact_text
from .._util._timing import Clock, deadline_timer
from ._base import HealthStore

__all__ = ["StoreDownError", "StoreGuard"]

T = TypeVar("T")

#: Seconds before the first call to a store found down, doubled per failure up to the cap.
FIRST_RETRY: Final = 0.25
MAX_RETRY: Final = 2.0


class StoreDownError(Exception):
    """The store is down or the call failed: go on with the process's own state."""


class StoreGuard:
    """Runs store calls with a timeout; counts, logs once and backs off when they fail.

    Attributes:
        failures: Store calls that failed or timed out.
        fallbacks: Times the process went on alone (the store went down).
        rejoins: Times the store came back.
    """

    __slots__ = (
        "_backoff",
        "_clock",
        "_retry_at",
        "down_since",
        "failures",
        "fallbacks",
        "rejoins",
        "store",
        "timeout",
    )

    def __init__(self, store: HealthStore, *, timeout: float, clock: Clock = time.monotonic):
        self.store = store
        self.timeout = timeout
        self._clock = clock
        #: When the store went down (``None``: up).
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = FIRST_RETRY
        self.failures = self.fallbacks = self.rejoins = 0

    @property
    def up(self) -> bool:
        """Whether the last call succeeded (a store never called is up)."""
        return self.down_since is None

    def due(self) -> bool:
        """Whether a call would go to the store now (up, or down and its retry is due)."""
        return self.down_since is None or self._clock() >= self._retry_at

    async def run(self, call: Callable[..., Awaitable[T]], *args: object) -> T:
        """``call(*args)``'s result within the timeout.

        Raises:
            StoreDownError: The store is down and not yet due, or the call failed.
        """
        if self.down_since is not None:
            now = self._clock()
            if now < self._retry_at:
                raise StoreDownError("the store is down")
            self._retry_at = now + self._backoff  # one call at a time tries it again
        try:
            async with deadline_timer(self.timeout):
                result = await call(*args)
        except Exception as exc:  # a timeout, a refused or reset connection, a Redis error
            self._failed(exc)
            raise StoreDownError(type(exc).__name__) from exc
        if self.down_since is not None:
            self._rejoined()
        return result

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        now = self._clock()
        if self.down_since is None:
            self.down_since = now
            self.fallbacks += 1
            self._backoff = FIRST_RETRY
            logger.warning(
                "shared store %s failed (%s: %s): this process goes on with its own host "
                "state until the store answers again",
                self.store.describe(),
                type(exc).__name__,
                redact_text(str(exc)) or "timed out",
                extra=log_fields("store_down", None, None, None, store=self.store.describe()),
            )
        else:
            self._backoff = min(MAX_RETRY, self._backoff * 2)
        self._retry_at = now + self._backoff

    def _rejoined(self) -> None:
        down_for = self._clock() - (self.down_since or 0.0)
        self.down_since = None
        self.rejoins += 1
        self._backoff = FIRST_RETRY
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "shared store %s answers again after %.3gs: the fleet shares host state again",
                self.store.describe(),
                down_for,
                extra=log_fields("store_up", None, None, None, store=self.store.describe()),
            )
