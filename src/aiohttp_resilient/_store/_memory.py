"""MemoryStore: the store interface kept in this process (today's state, shareable by the
sessions of one process, and the reference the Redis store is tested against)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Final

from .._health._breaker import BreakerPolicy
from .._health._rate import AdaptiveRatePolicy, RateState
from .._util._timing import Clock
from ._base import DEFAULT_LEASE_TTL, Grant, HealthStore
from ._breaker import BreakerNews, MemoryBreakers, Report, Verdict
from ._budget import budget_totals

__all__ = ["MemoryStore"]

#: Seconds a host's adaptive rate is kept after its last send or throttle (the Redis store's
#: rate key lives as long), and between two sweeps of idle hosts.
RATE_IDLE: Final = 600.0
SWEEP_EVERY: Final = 60.0


class MemoryStore(HealthStore):
    """Per-host leases in this process's memory: several sessions (or ``HostHealth``
    instances) given the same one share their hosts' slots.

    Usage::

        store = MemoryStore()
        a = resilient_session(limit_per_host=8, store=store)
        b = resilient_session(limit_per_host=8, store=store)  # 8 in flight per host in all

    Args:
        lease_ttl: See :class:`HealthStore`.
        clock: A monotonic clock in seconds (tests inject a fake one).
    """

    def __init__(self, *, lease_ttl: float = DEFAULT_LEASE_TTL, clock: Clock = time.monotonic):
        super().__init__(lease_ttl=lease_ttl)
        self._clock = clock
        self._leases: dict[str, dict[str, float]] = {}
        self._paused: dict[str, float] = {}
        self._waiting: dict[str, dict[str, float]] = {}
        self._rates: dict[str, RateState] = {}
        self._breakers = MemoryBreakers()
        self._budgets: dict[str, dict[int, list[int]]] = {}
        self._budget_used: dict[str, float] = {}
        #: When each host's rate was last used; idle hosts are swept from every dict.
        self._rate_used: dict[str, float] = {}
        self._next_sweep = clock() + SWEEP_EVERY

    def _live(self, host: str, now: float) -> dict[str, float]:
        leases = self._leases.get(host)
        if leases is None:
            leases = self._leases[host] = {}
        expired = [m for m, until in leases.items() if until <= now]
        for member in expired:
            del leases[member]
        return leases

    async def acquire(
        self,
        host: str,
        holder: str,
        members: Sequence[str],
        limit: int,
        rate: AdaptiveRatePolicy | None = None,
        breaker: bool = False,
    ) -> Grant:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        if breaker and (news := self._breakers.news(host, now)) is not None:
            return Grant(0, news.wait, False, 0, broken=news)
        waiting = self._waiting.setdefault(host, {})
        for name in [h for h, until in waiting.items() if until <= now]:
            del waiting[name]
        until = self._paused.get(host)
        if until is not None:
            if until > now:
                return Grant(0, until - now, True, len(waiting))
            del self._paused[host]
        leases = self._live(host, now)
        granted = 0
        for member in members:
            if len(leases) >= limit:
                break
            leases[member] = now + self.lease_ttl
            granted += 1
        wait = None
        if granted < len(members) and leases:
            wait = max(0.0, min(leases.values()) - now)
        if granted < len(members):
            waiting[holder] = now + 1.0
        else:
            waiting.pop(holder, None)
        return Grant(granted, wait, False, len(waiting), self._schedule(host, rate, granted, now))

    def _schedule(
        self, host: str, policy: AdaptiveRatePolicy | None, sends: int, now: float
    ) -> tuple[float, ...]:
        # Count the sends; once the host throttled, their delays on the shared schedule.
        if policy is None or not sends:
            return ()
        rate = self._rates.get(host)
        if rate is None:
            rate = self._rates[host] = RateState(policy, now)
        self._rate_used[host] = now
        for _ in range(sends):
            rate.success(now)
        if not rate.enabled:
            return ()
        return tuple(rate.reserve(now)[0] for _ in range(sends))

    async def breaker_probe(self, host: str, member: str, limit: int, poll: float) -> BreakerNews:
        now = self._clock()
        news = self._breakers.news(host, now)
        if news is None:
            return BreakerNews(Verdict.CLOSED)
        leases = self._live(host, now)
        if news.wait <= 0 and len(leases) >= limit:  # the break is over, but no slot is free
            return news._replace(wait=min(min(leases.values()) - now, poll))
        news = self._breakers.probe(host, member, now, self.lease_ttl, poll)
        if news.verdict is Verdict.PROBE:
            leases[member] = now + self.lease_ttl
        return news

    async def breaker_report(self, host: str, report: Report, policy: BreakerPolicy) -> None:
        self._breakers.report(host, report, policy, self._clock())

    async def budget_sync(
        self, host: str, width: float, requests: int, spent: int, refunds: Sequence[int]
    ) -> tuple[int, int]:
        now = self._clock()
        current = math.floor(now / width)
        self._budget_used[host] = now
        return budget_totals(self._budgets.setdefault(host, {}), current, requests, spent, refunds)

    async def throttle(self, host: str, rate: AdaptiveRatePolicy) -> float | None:
        now = self._clock()
        state = self._rates.get(host)
        if state is None:
            state = self._rates[host] = RateState(rate, now)
        self._rate_used[host] = now
        return state.rate if state.throttle(now) else None

    def _sweep(self, now: float) -> None:
        # Hosts idle for long leave nothing behind, as their keys expire in Redis: expired
        # leases, pauses and refusals, rates and budgets unused for RATE_IDLE, and breakers
        # closed or long over.
        self._next_sweep = now + SWEEP_EVERY
        for host in list(self._leases):
            if not self._live(host, now):
                del self._leases[host]
        for host in [h for h, until in self._paused.items() if until <= now]:
            del self._paused[host]
        for host, waiting in list(self._waiting.items()):
            if all(until <= now for until in waiting.values()):
                del self._waiting[host]
        for host in [h for h, used in self._rate_used.items() if now - used >= RATE_IDLE]:
            del self._rates[host], self._rate_used[host]
        for host in [h for h, used in self._budget_used.items() if now - used >= RATE_IDLE]:
            del self._budgets[host], self._budget_used[host]
        self._breakers.sweep(now)

    async def pause(self, host: str, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self._paused.get(host, 0.0):
            self._paused[host] = until

    async def release(self, host: str, members: Sequence[str]) -> None:
        leases = self._leases.get(host)
        if leases is not None:
            for member in members:
                leases.pop(member, None)
            if not leases:
                del self._leases[host]  # an idle host leaves nothing behind
                if not self._waiting.get(host):
                    self._waiting.pop(host, None)

    async def renew(self, host: str, members: Sequence[str]) -> None:
        leases = self._live(host, self._clock())
        until = self._clock() + self.lease_ttl
        for member in members:
            leases[member] = until
        self._breakers.renew(host, members, until)

    async def held(self, host: str) -> int:
        return len(self._live(host, self._clock()))
