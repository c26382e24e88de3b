"""Per host: the recent latency a hedge waits for, and the extra load hedges have added.

Both are kept over the policy's ``window`` as :data:`SLOTS` slots that expire one at a time:
a histogram of answer times per slot (the fixed log buckets of ``_observe/_histogram.py``,
O(1) per observation) and counts of hedgeable calls and hedges sent per slot. The percentile is
read from the merged slots at most every ``window / SLOTS`` seconds (Finagle refreshes every
3 s), so a call costs a few additions.
"""

from __future__ import annotations

from typing import Final

from .._health._limiter import HostKey
from .._observe._histogram import Histogram, Latency
from ._policy import HedgePolicy

__all__ = ["SLOTS", "HedgeWindow"]

#: Slots the window is kept in.
SLOTS: Final = 5
#: Hosts kept before those idle for a window are forgotten.
_HOSTS_KEPT: Final = 1024


class _Host:
    """One host's slots and its cached delay."""

    __slots__ = ("calls", "delay", "epochs", "hedges", "latency", "refresh_at", "touched")

    def __init__(self) -> None:
        self.epochs = [-1] * SLOTS
        self.latency = [Histogram() for _ in range(SLOTS)]
        self.calls = [0] * SLOTS
        self.hedges = [0] * SLOTS
        self.delay: float | None = None
        self.refresh_at = float("-inf")
        self.touched = 0.0

    def slot(self, epoch: int) -> int:
        index = epoch % SLOTS
        if self.epochs[index] != epoch:  # a slot from an earlier turn of the ring: empty it
            self.epochs[index] = epoch
            self.latency[index] = Histogram()
            self.calls[index] = self.hedges[index] = 0
        return index

    def live(self, epoch: int) -> list[int]:
        return [i for i in range(SLOTS) if epoch - SLOTS < self.epochs[i] <= epoch]


class HedgeWindow:
    """The per-host figures a :class:`HedgePolicy` decides with (one per middleware)."""

    __slots__ = ("_hosts", "_width", "policy")

    def __init__(self, policy: HedgePolicy) -> None:
        self.policy = policy
        self._width = policy.window / SLOTS
        self._hosts: dict[HostKey, _Host] = {}

    def _host(self, key: HostKey, now: float) -> _Host:
        host = self._hosts.get(key)
        if host is None:
            if len(self._hosts) >= _HOSTS_KEPT:
                self._forget(now)
            host = self._hosts[key] = _Host()
        host.touched = now
        return host

    def _forget(self, now: float) -> None:
        window = self.policy.window
        for key in [k for k, h in self._hosts.items() if now - h.touched > window]:
            del self._hosts[key]

    def observe(self, key: HostKey, seconds: float, now: float) -> None:
        """An attempt answered after ``seconds`` (or was superseded after that long)."""
        host = self._host(key, now)
        host.latency[host.slot(int(now // self._width))].observe(seconds)

    def called(self, key: HostKey, now: float) -> None:
        """A hedgeable call started (it earns ``max_extra`` of a hedge)."""
        host = self._host(key, now)
        host.calls[host.slot(int(now // self._width))] += 1

    def delay(self, key: HostKey, now: float) -> float | None:
        """Seconds a call to ``key`` waits before its hedge; ``None``: no hedge (warming up, or
        the host is slower than ``max_delay`` at the percentile)."""
        policy = self.policy
        if policy.delay is not None:
            return policy.delay
        host = self._host(key, now)
        if now >= host.refresh_at:
            host.delay = self._percentile(host, int(now // self._width), now)
        return host.delay

    def _percentile(self, host: _Host, epoch: int, now: float) -> float | None:
        # Read again after a slot's width, or at the next call while warming up.
        policy = self.policy
        merged = Latency()
        for index in host.live(epoch):
            merged = merged + host.latency[index].freeze()
        if merged.count < policy.warmup:
            return None
        host.refresh_at = now + self._width
        value = merged.quantile(policy.percentile)
        if value is None or value > policy.max_delay:
            return None
        return max(policy.min_delay, value)

    def try_hedge(self, key: HostKey, now: float) -> bool:
        """Count a hedge if the window's extra load allows one (``max_extra`` of its calls)."""
        host = self._host(key, now)
        epoch = int(now // self._width)
        current = host.slot(epoch)
        live = host.live(epoch)
        calls = sum(host.calls[i] for i in live)
        hedges = sum(host.hedges[i] for i in live)
        if hedges + 1 > self.policy.max_extra * calls:
            return False
        host.hedges[current] += 1
        return True
