"""The crawl's per-host scheduler: URLs wait in a queue per host, and the next URL handed to a
free worker comes from a host that can take a request now (a free slot, the rate allows it,
the breaker is closed or its probe is due). A host that is waiting holds no worker, so the
healthy hosts run at their own pace, not the slowest host's; a host whose breaker refuses calls
at once (down longer than the breaker's patience) is drained at once."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from yarl import URL

from ..._health._hosts import HostHealth
from ..._health._limiter import HostKey, host_key

__all__ = ["HostQueue", "Scheduler", "estimate_eta"]

#: The longest the scheduler sleeps without looking again (a host's wait can shorten: a rate
#: grows back, a breaker closes on another call's answer).
MAX_NAP = 0.25


@dataclass(slots=True)
class HostQueue:
    """One host's URLs not started yet, and its URLs in flight."""

    key: HostKey
    urls: collections.deque[str] = field(default_factory=collections.deque)
    in_flight: int = 0
    finished: int = 0
    #: Why the host waits now (``"breaker"``, ``"rate"``, ``"slots"``), ``None`` if not.
    waiting: str | None = None
    #: The scheduler's own floor on the next start (a rate's spacing the claim has not booked).
    not_before: float = 0.0
    #: When its first URL went (for its pace).
    first_start: float | None = None


class Scheduler:
    """Which URL goes next. ``cap`` is the per-host cap on URLs in flight (the adaptive limit,
    read from ``health``, may hold a host lower); ``rate`` spaces each host's starts (``None``:
    only a host's adaptive rate does)."""

    def __init__(self, urls: Iterable[str], cap: int, rate: float | None = None) -> None:
        self.cap = cap
        self.rate = rate
        self.hosts: dict[HostKey, HostQueue] = {}
        for url in urls:
            key = host_key(URL(url))
            queue = self.hosts.get(key)
            if queue is None:
                queue = self.hosts[key] = HostQueue(key)
            queue.urls.append(url)
        #: URLs not started yet.
        self.pending = sum(len(q.urls) for q in self.hosts.values())
        #: Hosts with URLs left, in round-robin order.
        self._ring = collections.deque(q for q in self.hosts.values() if q.urls)

    def take(
        self, health: HostHealth | None, now: float, budget: int
    ) -> tuple[list[tuple[str, HostQueue]], float]:
        """Up to ``budget`` URLs that can go now (one per call from a paced host, only the probe
        from a host whose breaker is open), and the seconds until another might (``inf``: only
        when a URL ends). Each host that cannot take one notes why in ``waiting``."""
        chosen: list[tuple[str, HostQueue]] = []
        nap = math.inf
        if budget <= 0:  # every worker busy: a URL's end wakes the caller
            return chosen, nap
        emptied = False
        for queue in self._each_host():
            wait, count = self._can_take(queue, health, now)
            if wait > 0 or count <= 0:
                nap = min(nap, wait)
                continue
            for _ in range(min(count, budget - len(chosen), len(queue.urls))):
                chosen.append((queue.urls.popleft(), queue))
                queue.in_flight += 1
            if queue.first_start is None:
                queue.first_start = now
            self._pace(queue, health, now)
            if queue.urls and queue.not_before > now:
                nap = min(nap, queue.not_before - now)
            emptied = emptied or not queue.urls
            if len(chosen) >= budget:
                break
        self.pending -= len(chosen)
        if emptied:
            self._ring = collections.deque(q for q in self._ring if q.urls)
        return chosen, min(nap, MAX_NAP) if self._ring else math.inf

    def done(self, queue: HostQueue) -> None:
        """A URL of ``queue`` ended (recorded, or stopped)."""
        queue.in_flight -= 1
        queue.finished += 1

    def put_back(self, queue: HostQueue, url: str) -> None:
        """``url`` (of ``queue``, ended) goes again, after the host's other URLs."""
        if not queue.urls:
            self._ring.append(queue)
        queue.urls.append(url)
        queue.finished -= 1
        self.pending += 1

    def waiting(self) -> collections.Counter[str]:
        """Hosts with URLs left that wait now, per reason."""
        return collections.Counter(q.waiting for q in self._ring if q.waiting is not None)

    def _each_host(self) -> Iterator[HostQueue]:
        # Each host once, starting after the one served first last time (round robin).
        ring = self._ring
        for _ in range(len(ring)):
            queue = ring[0]
            ring.rotate(-1)
            if queue.urls:
                yield queue

    def _can_take(
        self, queue: HostQueue, health: HostHealth | None, now: float
    ) -> tuple[float, int]:
        # (seconds to wait, how many may go now).
        queue.waiting = None
        limit = self.cap
        if health is not None:
            wait, reason, fails_fast = health.availability(queue.key, now)
            if fails_fast:
                return 0.0, len(queue.urls)  # each call ends at once, sending nothing
            if reason == "breaker":
                if wait > 0 or queue.in_flight:
                    queue.waiting = "breaker"  # the probe is not due yet, or is out
                    return max(wait, 0.05), 0
                limit = 1  # the probe, alone
            elif reason == "rate":
                queue.waiting = "rate"
                return wait, 0
            live = health.live_limit(queue.key)
            if live is not None:
                limit = min(limit, live)
        if queue.not_before > now:
            queue.waiting = "rate"
            return queue.not_before - now, 0
        if queue.in_flight >= limit:
            queue.waiting = "slots"
            return math.inf, 0
        paced = self.rate is not None or (
            health is not None and health.send_rate(queue.key) is not None
        )
        return 0.0, 1 if paced else limit - queue.in_flight

    def _pace(self, queue: HostQueue, health: HostHealth | None, now: float) -> None:
        # The next start of a paced host comes 1/rate after this one: --rate, or the host's
        # adaptive rate (its claim books the slot only once the task runs, after this call).
        adaptive = None if health is None else health.send_rate(queue.key)
        rates = [r for r in (self.rate, adaptive) if r]
        if rates:
            queue.not_before = now + 1.0 / min(rates)


def estimate_eta(
    scheduler: Scheduler, health: HostHealth | None, finished: int, started: float
) -> float | None:
    """Seconds left, or ``None`` before anything ended: the slowest host's time, each host at
    its own pace (a paced host at its rate, after its breaker's wait; a host whose calls fail
    at once, none), and never less than what is left at the whole crawl's pace so far."""
    now = time.monotonic()
    elapsed = now - started
    if finished == 0 or elapsed <= 0:
        return None
    left = 0
    slowest = 0.0
    for queue in scheduler.hosts.values():
        host_left = len(queue.urls) + queue.in_flight
        left += host_left
        if not host_left:
            continue
        wait, rate = 0.0, scheduler.rate
        if health is not None:
            wait, _, fails_fast = health.availability(queue.key, now)
            if fails_fast:
                continue
            adaptive = health.send_rate(queue.key)
            rate = min(r for r in (rate, adaptive) if r) if rate or adaptive else None
            wait = 0.0 if math.isinf(wait) else wait
        if rate:
            slowest = max(slowest, wait + host_left / rate)
        elif queue.finished and queue.first_start is not None and now > queue.first_start:
            slowest = max(slowest, wait + host_left * (now - queue.first_start) / queue.finished)
    return max(slowest, left * elapsed / finished)
