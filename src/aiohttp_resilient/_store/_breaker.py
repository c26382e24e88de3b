"""The circuit breaker fleet-wide: one breaker state per host in a shared store.

A process whose own breaker opens tells the store (:meth:`HealthStore.breaker_report`); from
then on the store refuses that host's leases to every process (the answer to an acquire says
"open, next probe in X s", as it says "paused"), and each process holds its calls as its own
open breaker would (:meth:`BreakerState.told_open`), failing them with the same
:class:`CircuitOpenError`. When the break ends, the one probe of the fleet is a lease with a TTL
(:meth:`HealthStore.breaker_probe`), so a prober that dies does not wedge the host; the probe's
outcome closes the breaker for all, or opens it again with the local breaker's backoff rules
(:func:`next_break`, the same numbers in Lua for Redis).

This module holds the answers' shapes and the in-memory store's breakers; the Redis store's
are Lua in ``_scripts.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from .._health._breaker import BreakerPolicy, next_break

__all__ = ["BreakerNews", "FleetOpenError", "MemoryBreakers", "Outcome", "Report", "Verdict"]


#: Seconds an open breaker nobody probes stays in the store after its break (the Redis key's
#: TTL too): a host left alone leaves nothing behind.
IDLE_KEPT: Final = 600.0


class Verdict(enum.IntEnum):
    """What the store says of a host's breaker (its number is the Lua scripts' answer)."""

    CLOSED = 0
    PROBE = 1  # this call is the fleet's one probe: it holds the probe lease and a slot
    OPEN = 2


class Outcome(enum.IntEnum):
    """What a process tells the store of a host's breaker (the Lua scripts' number)."""

    OPENED = 0  # its own breaker opened (its failures reached the threshold)
    PROBE_FAILED = 1
    PROBE_SUCCEEDED = 2
    PROBE_ABANDONED = 3  # the probe ended with no news (cancelled): the next may go at once


class Report(NamedTuple):
    """A process's word on a host's breaker, for the store."""

    #: The probe's lease member ("" for an opening).
    member: str
    outcome: Outcome
    #: Draws the jitter of a new break, in [0, 1).
    rnd: float
    #: The host's Retry-After with the failure: no probe before it ends.
    retry_after: float | None
    #: Why it opened, in words.
    reason: str
    #: For a close this process made alone while the store was down, told once it is back:
    #: seconds since then. A break the fleet opened after it stays open.
    closed_ago: float = 0.0


class BreakerNews(NamedTuple):
    """The store's word on a host's breaker."""

    verdict: Verdict
    #: Seconds until a probe may go (open), 0 otherwise.
    wait: float = 0.0
    #: Seconds since the fleet's breaker opened (the outage so far).
    down_for: float = 0.0
    #: Why it opened, in words.
    reason: str = ""


class FleetOpenError(Exception):
    """Raised by a fleet limiter's acquire when the store holds the host's breaker open (or
    closed, to a call that came to probe): :class:`HostHealth` adopts the news and admits
    the call again. Never seen by a caller."""

    def __init__(self, news: BreakerNews) -> None:
        super().__init__(news.verdict.name)
        self.news = news


@dataclass(slots=True)
class _Breaker:
    until: float
    since: float
    openings: int
    reason: str
    prober: str | None = None
    probe_until: float = 0.0


class MemoryBreakers:
    """The fleet breakers of a :class:`MemoryStore` (times from its clock): the reference the
    Redis scripts are tested against."""

    __slots__ = ("_breakers",)

    def __init__(self) -> None:
        self._breakers: dict[str, _Breaker] = {}

    def sweep(self, now: float) -> None:
        """Forget the breakers whose last break ended more than ``IDLE_KEPT`` ago."""
        for host in [h for h, b in self._breakers.items() if now - b.until > IDLE_KEPT]:
            del self._breakers[host]

    def news(self, host: str, now: float) -> BreakerNews | None:
        """The open breaker's news for an acquire, or ``None`` while closed."""
        b = self._breakers.get(host)
        if b is None:
            return None
        if now - b.until > IDLE_KEPT:
            del self._breakers[host]
            return None
        return BreakerNews(Verdict.OPEN, max(0.0, b.until - now), now - b.since, b.reason)

    def probe(self, host: str, member: str, now: float, ttl: float, poll: float) -> BreakerNews:
        """``member`` asks to be the probe (its slot is the caller's to lease)."""
        if self.news(host, now) is None:
            return BreakerNews(Verdict.CLOSED)
        b = self._breakers[host]
        down_for = now - b.since
        if b.until > now:
            return BreakerNews(Verdict.OPEN, b.until - now, down_for, b.reason)
        if b.prober is not None and b.probe_until > now:
            return BreakerNews(Verdict.OPEN, min(b.probe_until - now, poll), down_for, b.reason)
        b.prober, b.probe_until = member, now + ttl
        return BreakerNews(Verdict.PROBE, 0.0, down_for, b.reason)

    def renew(self, host: str, members: Sequence[str], until: float) -> None:
        """A probe whose slot is renewed keeps its probe lease too (a long probe stays the
        only one)."""
        b = self._breakers.get(host)
        if b is not None and b.prober is not None and b.prober in members:
            b.probe_until = until

    def report(self, host: str, report: Report, policy: BreakerPolicy, now: float) -> None:
        """A process's news of ``host`` (see :class:`Outcome`)."""
        member, outcome, rnd, retry_after, reason, closed_ago = report
        b = self._breakers.get(host)
        if outcome is Outcome.PROBE_SUCCEEDED:
            if b is None or not closed_ago or b.since <= now - closed_ago:
                self._breakers.pop(host, None)  # the host is back, for all
        elif b is None:
            if outcome is not Outcome.PROBE_ABANDONED:  # a failure: the fleet's breaker opens
                pause, openings = next_break(policy, 0, 0.0, rnd, retry_after)
                self._breakers[host] = _Breaker(now + pause, now, openings, reason)
        elif b.prober == member and member:  # only the probe's own word moves an open breaker
            b.prober = None
            if outcome is Outcome.PROBE_FAILED:
                pause, b.openings = next_break(policy, b.openings, now - b.since, rnd, retry_after)
                b.until, b.reason = now + pause, reason
            elif outcome is Outcome.PROBE_ABANDONED:
                b.until = now
