"""HealthStore: what a shared store of per-host state offers.

Every operation is one atomic step on one host's state, timed by the store's own clock (so
clients' clock skew cannot stretch a lease). A slot is a *lease*: a member name held until its
expiry unless renewed, so the slots of a process that died come back by themselves.
"""

from __future__ import annotations

import abc
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

__all__ = ["DEFAULT_LEASE_TTL", "DEFAULT_STORE_TIMEOUT", "Grant", "HealthStore"]

#: Seconds a slot's lease lasts unless renewed (a process renews its leases every third of it).
DEFAULT_LEASE_TTL: Final = 10.0
#: Seconds a store call may take before the process goes on with its own state (Envoy's rate
#: limit call waits 20 ms; redis-py's defaults take seconds, and retry ten times). 50 ms fell
#: over a few times a run on a loaded 2-core machine, whose event loops lag (benchmarks/fleet.py).
DEFAULT_STORE_TIMEOUT: Final = 0.1

if TYPE_CHECKING:
    from .._health._breaker import BreakerPolicy
    from .._health._rate import AdaptiveRatePolicy
    from ._breaker import BreakerNews, Report


class _Closable(Protocol):
    async def close(self) -> None: ...


class Grant(NamedTuple):
    """What :meth:`HealthStore.acquire` gave."""

    #: The first ``granted`` members asked for now hold a lease.
    granted: int
    #: When some were refused: seconds until the oldest lease expires, or the pause ends.
    wait: float | None
    #: Refused because the host is paused (its ``Retry-After``), not for want of a slot.
    paused: bool
    #: Holders (processes) refused a slot of the host within the last second, this one too
    #: if it was: a holder keeps its slots for its own waiters only up to its fair share.
    waiting: int
    #: While the host's adaptive rate is on: per granted member, seconds before it may send.
    delays: tuple[float, ...] = ()
    #: Refused because the fleet's breaker holds the host open (asked with ``breaker=True``).
    broken: BreakerNews | None = None


class HealthStore(abc.ABC):
    """A store of per-host state shared by processes: :class:`MemoryStore` (one process) or
    :class:`RedisStore` (a fleet). Pass one as ``resilient_session(store=...)`` or
    ``HostHealth(store=...)``.

    Args:
        lease_ttl: Seconds a slot's lease lasts unless renewed (its holder renews it every
            third of that while its request runs); the slots of a killed process come back
            after at most this long.

    Raises:
        ValueError: ``lease_ttl`` is not a positive number.
    """

    def __init__(self, *, lease_ttl: float = DEFAULT_LEASE_TTL) -> None:
        if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, (int, float)):
            raise ValueError(f"lease_ttl must be a number of seconds, got {lease_ttl!r}")
        if not 0.1 <= lease_ttl <= 3600:
            raise ValueError(f"lease_ttl must be between 0.1 and 3600 seconds, got {lease_ttl!r}")
        self.lease_ttl = float(lease_ttl)
        #: Seconds a call may take before the process goes on alone.
        self.timeout = DEFAULT_STORE_TIMEOUT
        # The limiters on this store: closing it first gives back their leases.
        self._limiters: weakref.WeakSet[_Closable] = weakref.WeakSet()

    @abc.abstractmethod
    async def acquire(
        self,
        host: str,
        holder: str,
        members: Sequence[str],
        limit: int,
        rate: AdaptiveRatePolicy | None = None,
        breaker: bool = False,
    ) -> Grant:
        """Lease slots of ``host`` to ``members`` (of ``holder``, a process) in order while
        fewer than ``limit`` are held and the host is not paused (:meth:`pause`); with
        ``rate``, count the sends and, once the host throttled, schedule them; with
        ``breaker``, lease nothing while the fleet's breaker holds the host open."""

    @abc.abstractmethod
    async def breaker_probe(self, host: str, member: str, limit: int, poll: float) -> BreakerNews:
        """``member`` asks to go as the fleet's one probe of ``host``: granted (the probe
        lease and a slot lease, both for the lease TTL) once the break is over and no probe is
        out; else the breaker's news (open: wait, at most ``poll`` s while a probe is out)."""

    @abc.abstractmethod
    async def breaker_report(self, host: str, report: Report, policy: BreakerPolicy) -> None:
        """Tell the fleet's breaker of ``host`` what a process saw: its own breaker opened
        (the fleet's opens if closed), or how its probe ended (only the probe's own word moves
        an open breaker); a new break follows ``policy``'s rules."""

    @abc.abstractmethod
    async def budget_sync(
        self, host: str, width: float, requests: int, spent: int, refunds: Sequence[int]
    ) -> tuple[int, int]:
        """Add a process's retry-budget counts of ``host`` to the fleet's, in slots ``width``
        seconds wide (the current one; each refund in the slot that many before it), and return
        the fleet's (requests, net retries charged) over the last ``SLOTS`` slots."""

    @abc.abstractmethod
    async def throttle(self, host: str, rate: AdaptiveRatePolicy) -> float | None:
        """``host`` answered 429: cut its fleet-wide rate. Returns the new rate (requests per
        second), or ``None`` within the cooldown of the last cut."""

    @abc.abstractmethod
    async def pause(self, host: str, seconds: float) -> None:
        """No slot of ``host`` is leased for ``seconds`` from now (its ``Retry-After``), or
        until a later pause already set ends."""

    @abc.abstractmethod
    async def release(self, host: str, members: Sequence[str]) -> None:
        """Give back the leases of ``members``."""

    @abc.abstractmethod
    async def renew(self, host: str, members: Sequence[str]) -> None:
        """Extend the leases of ``members`` by the lease TTL from now (a lease lost while the
        store was unreachable is taken again: its request is still running)."""

    @abc.abstractmethod
    async def held(self, host: str) -> int:
        """How many unexpired leases ``host`` has now (for stats and tests)."""

    def _attach(self, limiter: _Closable) -> None:
        self._limiters.add(limiter)

    async def close(self) -> None:
        """Give back the leases of every limiter on this store, then let go of its connections
        (a store given as a URL is closed with its session)."""
        for limiter in list(self._limiters):
            await limiter.close()
        await self._disconnect()

    async def _disconnect(self) -> None:  # noqa: B027 - optional: nothing to close
        """Let go of connections."""

    def describe(self) -> str:
        """The store as named in logs and stats, with no secret in it."""
        return type(self).__name__
