"""Clocks, sleeps and deadline timers, as the library injects and uses them."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

if sys.version_info >= (3, 11):
    from asyncio import timeout as deadline_timer
else:  # pragma: no cover - aiohttp depends on async-timeout below 3.11
    from async_timeout import timeout as deadline_timer

__all__ = ["Clock", "Sleep", "deadline_timer", "timer_expired"]

#: Waits ``seconds`` (``asyncio.sleep``; tests inject a fake one).
Sleep = Callable[[float], Awaitable[object]]
#: A monotonic clock in seconds (``time.monotonic``; tests inject a fake one).
Clock = Callable[[], float]


def timer_expired(timer: Any) -> bool:
    """Whether a :func:`deadline_timer` fired (asyncio's has ``expired()``, async-timeout's
    an ``expired`` property)."""
    expired = timer.expired
    return bool(expired() if callable(expired) else expired)
