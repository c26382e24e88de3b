"""HostLimiter: at most N attempts in flight per (scheme, host, port)."""

from __future__ import annotations

import asyncio
from typing import TypeAlias

from yarl import URL

__all__ = ["HostKey", "HostLimiter", "host_key"]

HostKey: TypeAlias = tuple[str, str | None, int | None]


def host_key(url: URL) -> HostKey:
    """The key a request is limited under: ``(scheme, host, port)``, default ports filled in."""
    return (url.scheme, url.host, url.port)


class _Host:
    __slots__ = ("held", "semaphore", "users")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.held = 0
        self.users = 0  # holders and waiters: the entry goes when nobody needs it


class HostLimiter:
    """Caps the attempts in flight to each host, as a polite crawler must.

    An attempt holds its host's slot from before it connects until its response is released (the
    body read, or the response closed), and never while it sleeps between attempts, so a backing-off
    request does not block the others. Waiting for a slot is cancellable and leaks nothing. Hosts
    nobody is using take no memory, so a crawler over millions of hosts stays small.

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

    __slots__ = ("_hosts", "_limit")

    def __init__(self, limit_per_host: int) -> None:
        if isinstance(limit_per_host, bool) or not isinstance(limit_per_host, int):
            raise ValueError(f"limit_per_host must be an int, got {limit_per_host!r}")
        if limit_per_host < 1:
            raise ValueError(f"limit_per_host must be >= 1, got {limit_per_host!r}")
        self._limit = limit_per_host
        self._hosts: dict[HostKey, _Host] = {}

    @property
    def limit_per_host(self) -> int:
        """The most attempts in flight to one host."""
        return self._limit

    async def acquire(self, key: HostKey) -> None:
        """Wait for a slot for ``key``'s host."""
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(self._limit)
        host.users += 1
        try:
            await host.semaphore.acquire()
        except BaseException:  # cancelled while waiting: give the place back, then re-raise
            self._forget(key, host)
            raise
        host.held += 1

    def release(self, key: HostKey) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        host = self._hosts[key]
        host.held -= 1
        host.semaphore.release()
        self._forget(key, host)

    def in_flight(self, key: HostKey) -> int:
        """How many slots of ``key``'s host are held now."""
        host = self._hosts.get(key)
        return 0 if host is None else host.held

    def _forget(self, key: HostKey, host: _Host) -> None:
        host.users -= 1
        if host.users == 0:
            del self._hosts[key]

    def __repr__(self) -> str:
        busy = sum(h.held for h in self._hosts.values())
        waiting = sum(h.users for h in self._hosts.values()) - busy
        return (
            f"<HostLimiter limit_per_host={self._limit} hosts={len(self._hosts)} "
            f"in_flight={busy} waiting={waiting}>"
        )
