"""HostLimiter: at most N attempts in flight per (scheme, host, port)."""

from __future__ import annotations

import asyncio
import collections
from typing import TypeAlias

from yarl import URL

__all__ = ["HostKey", "HostLimiter", "format_host", "host_key"]

HostKey: TypeAlias = tuple[str, str | None, int | None]

#: Idle hosts are kept (so that a host's next request allocates nothing) until this many hosts are
#: known; then the idle ones are dropped in one sweep.
IDLE_HOSTS_KEPT = 1024


def host_key(url: URL) -> HostKey:
    """The key a request is limited under: ``(scheme, host, port)``, default ports filled in."""
    return (url.scheme, url.host, url.port)


def format_host(key: HostKey) -> str:
    """``scheme://host:port``, as hosts are named in messages, stats and metric labels; an
    IPv6 address in brackets, as in a URL (``http://[::1]:8080``)."""
    scheme, host, port = key
    if host is not None and ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}" if port is not None else f"{scheme}://{host}"


class _Host:
    __slots__ = ("held", "limit", "waiters")

    def __init__(self, limit: int) -> None:
        self.held = 0
        #: The live limit: the cap, or less while the host is congested (see ``set_limit``).
        self.limit = limit
        # Created on first contention: most hosts never queue.
        self.waiters: collections.deque[asyncio.Future[None]] | None = None


class HostLimiter:
    """Caps the attempts in flight to each host, as a polite crawler must.

    An attempt holds its host's slot from before it connects until its response is released (the
    body read, or the response closed), and never while it sleeps between attempts, so a backing-off
    request does not block the others. Waiters are served first come, first served; waiting is
    cancellable and leaks nothing. Idle hosts are forgotten in a sweep once more than
    ``IDLE_HOSTS_KEPT`` (1024) hosts are known, so a crawler over millions of hosts stays small.
    Taking a free slot neither suspends nor allocates, so the limiter costs next to nothing when
    nothing queues.

    Usage::

        limiter = HostLimiter(limit_per_host=4)
        await limiter.acquire(key)
        try: ...
        finally: limiter.release(key)

    Args:
        limit_per_host: The most attempts in flight to one (scheme, host, port).

    Raises:
        ValueError: ``limit_per_host`` is not a positive int.
    """

    __slots__ = ("_hosts", "_limit", "_sweep_at")

    def __init__(self, limit_per_host: int) -> None:
        if isinstance(limit_per_host, bool) or not isinstance(limit_per_host, int):
            raise ValueError(f"limit_per_host must be an int, got {limit_per_host!r}")
        if limit_per_host < 1:
            raise ValueError(f"limit_per_host must be >= 1, got {limit_per_host!r}")
        self._limit = limit_per_host
        self._hosts: dict[HostKey, _Host] = {}
        self._sweep_at = IDLE_HOSTS_KEPT

    @property
    def limit_per_host(self) -> int:
        """The most attempts in flight to one host."""
        return self._limit

    def try_acquire(self, key: HostKey) -> int:
        """Take a slot for ``key``'s host if one is free and nobody queues for it; never waits.
        Returns how many of its slots are held now, this one included (0: none was free)."""
        host = self._hosts.get(key)
        if host is None:
            if len(self._hosts) >= self._sweep_at:
                self._sweep()
            host = self._hosts[key] = _Host(self._limit)
        if host.held < host.limit and not host.waiters:
            host.held += 1
            return host.held
        return 0

    async def acquire(self, key: HostKey) -> None:
        """Wait for a slot for ``key``'s host."""
        # This class's own try_acquire: a subclass's may need the store this slot waits before.
        if HostLimiter.try_acquire(self, key):
            return
        host = self._hosts[key]
        if host.waiters is None:
            host.waiters = collections.deque()
        waiter = asyncio.get_running_loop().create_future()
        host.waiters.append(waiter)
        try:
            await waiter  # release() hands its slot over by resolving this
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release(key)  # handed a slot, then cancelled: pass it on
            elif waiter in host.waiters:
                # release() drops the cancelled waiters it passes over, so a waiter cancelled
                # with many others may be gone already.
                host.waiters.remove(waiter)
            raise

    def release(self, key: HostKey) -> None:
        """Give back a slot taken by :meth:`acquire` or :meth:`try_acquire`."""
        host = self._hosts[key]
        if host.waiters and host.held <= host.limit and self._hand_over(host):
            return  # the slot went straight to the next in line
        host.held -= 1

    def set_limit(self, key: HostKey, limit: int) -> None:
        """Change ``key``'s live limit (at most the cap): waiters get the slots a rise frees,
        and a cut takes effect as slots are released."""
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(self._limit)
        host.limit = max(1, min(limit, self._limit))
        while host.held < host.limit and self._hand_over(host):
            host.held += 1

    def refused(self, key: HostKey, throttled: bool, retry_after: float | None) -> None:
        """``key``'s host refused an attempt: 429 (``throttled``) or 503, with its
        ``Retry-After`` seconds if any. Nothing here (the host's adaptive rate and the retry
        that got it deal with it); a :class:`FleetLimiter` tells the fleet."""

    def paced(self, key: HostKey) -> bool:
        """Whether something beyond this process paces ``key``'s host (a fleet's shared rate
        or ``Retry-After``); never, here."""
        return False

    def waiting(self, key: HostKey) -> int:
        """How many attempts wait for a slot of ``key``'s host."""
        host = self._hosts.get(key)
        return 0 if host is None or not host.waiters else len(host.waiters)

    @staticmethod
    def _hand_over(host: _Host) -> bool:
        waiters = host.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def in_flight(self, key: HostKey) -> int:
        """How many slots of ``key``'s host are held now."""
        host = self._hosts.get(key)
        return 0 if host is None else host.held

    def _sweep(self) -> None:
        # Drop idle hosts; sweep again only once the table has doubled, so that a crawler with
        # more busy hosts than IDLE_HOSTS_KEPT does not sweep on every new one (amortised O(1)).
        # A host whose live limit is cut keeps its entry: forgetting it would reset the limit.
        limit = self._limit
        self._hosts = {
            k: h for k, h in self._hosts.items() if h.held or h.waiters or h.limit < limit
        }
        self._sweep_at = max(IDLE_HOSTS_KEPT, 2 * len(self._hosts))

    def __repr__(self) -> str:
        busy = sum(h.held for h in self._hosts.values())
        waiting = sum(len(h.waiters) for h in self._hosts.values() if h.waiters)
        active = sum(1 for h in self._hosts.values() if h.held or h.waiters)
        return (
            f"<HostLimiter limit_per_host={self._limit} hosts={active} "
            f"in_flight={busy} waiting={waiting}>"
        )
