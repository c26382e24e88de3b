"""How long each host lets a pooled connection sit idle, learned, and the rule for reusing one.

A server closes a keep-alive connection after it was idle for its timeout (uvicorn and Node.js:
5 s, Apache: 5 s, gunicorn: 2 s, nginx: 75 s, many load balancers a few seconds). A client that
reuses the connection just as the server closes it sends its request into a closing socket: the
stale keep-alive race. A GET can be sent again at once; a POST cannot, since the client cannot
know whether it arrived. So the client must let go of an idle connection before the server does.

The rule, per connection pool key (host, port, TLS, proxy):

- A server that announces its timeout (``Keep-Alive: timeout=N``) is taken at its word, unless
  it is seen closing sooner (a proxy or load balancer in front of it).
- A server seen closing a pooled connection that was idle ``d`` seconds has a timeout of about
  ``d``: the shortest such ``d`` is kept (a close sooner than :data:`MIN_IDLE_EVIDENCE` after a
  response is a server closing after each response, not an idle timeout).
- A connection is reused only while its idle time is under :data:`REUSE_SHARE` of the host's
  timeout (the shorter of announced and learned), and never past the pool's
  ``keepalive_timeout``.
- A host whose timeout is not known yet: idempotent requests reuse up to the pool's
  ``keepalive_timeout`` (the race costs them an immediate retry); non-idempotent ones only up to
  :data:`UNKNOWN_UNSAFE_IDLE` (the race would lose them).
- Connections idle past the limit are not reused; the oldest stays in the pool as an observation
  until ``keepalive_timeout`` (at most :data:`OBSERVE_FOR`), the others are closed, so a host never
  holds more sockets than it would without learning. If the server closes it, that is a new
  observation; if it (or one closed by the pool while alive) survives
  longer than the timeout learned, that timeout was an odd close (a restart, a load balancer's
  reshuffle) and is forgotten, so one odd close never pins a host to short reuse. Survivals also
  teach a lower bound that lets non-idempotent requests reuse connections to hosts that keep
  them long. A close observed :data:`FORGET_AFTER` seconds after the last one replaces it even
  when longer (the server's timeout was raised).

The cost: a request after an idle gap longer than the limit opens a new connection.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FORGET_AFTER",
    "MIN_IDLE_EVIDENCE",
    "OBSERVE_FOR",
    "RACE_SHARE",
    "REUSE_SHARE",
    "UNKNOWN_UNSAFE_IDLE",
    "KeepAliveEstimate",
    "KeepAliveTable",
    "parse_keep_alive_timeout",
]

#: A connection is reused only while idle for less than this share of the host's timeout: the
#: rest covers the round trip and the time between the server's last byte and the client's.
REUSE_SHARE: Final = 0.75
#: Seconds a non-idempotent request reuses an idle connection to a host whose timeout is unknown.
UNKNOWN_UNSAFE_IDLE: Final = 1.0
#: A close this soon after a response is not an idle timeout (the server closes after each
#: response, or after N requests): it teaches nothing about idle time.
MIN_IDLE_EVIDENCE: Final = 0.25
#: A failure on a reused connection is the stale keep-alive race only if the connection had been
#: idle for at least this share of the host's known timeout (and never less than
#: :data:`MIN_IDLE_EVIDENCE`, the floor when the timeout is unknown): the server could have
#: closed it. Half, not all: a learned timeout is one observation, an announced one may be the
#: origin's behind a proxy that closes sooner, and the server's timer starts at its last byte.
RACE_SHARE: Final = 0.5
#: Seconds after which a learned close is forgotten (and the host re-learned from scratch).
FORGET_AFTER: Final = 600.0
#: Seconds at most that one connection idle past the reuse limit is kept as an observation, when
#: the pool's own keepalive_timeout is longer (or None: aiohttp then never closes it).
OBSERVE_FOR: Final = 60.0

_TIMEOUT_RE: Final = re.compile(r"(?:^|[,;\s])timeout\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_keep_alive_timeout(value: str) -> float | None:
    """The ``timeout`` of a ``Keep-Alive`` header (``"timeout=5, max=100"`` gives 5.0), or
    ``None`` when it has none or a nonsensical one."""
    match = _TIMEOUT_RE.search(value)
    if match is None:
        return None
    seconds = float(match.group(1))
    return seconds if 0 < seconds < math.inf else None


@dataclass(frozen=True, slots=True)
class KeepAliveEstimate:
    """What is known about one host's idle timeout, and the reuse limits that follow.

    Attributes:
        announced: The timeout the server announced with ``Keep-Alive: timeout=N``.
        closed_after: The shortest idle time after which the server was seen closing a pooled
            connection (its learned timeout), if not forgotten since.
        survived: The longest idle time a pooled connection was seen to survive.
        reuse_limit: Seconds of idleness after which idempotent requests stop reusing a connection.
        unsafe_reuse_limit: The same for non-idempotent requests.
    """

    announced: float | None
    closed_after: float | None
    survived: float | None
    reuse_limit: float
    unsafe_reuse_limit: float


class _HostIdle:
    __slots__ = ("announced", "closed_after", "closed_when", "limits", "survived")

    def __init__(self) -> None:
        self.announced: float | None = None
        self.closed_after: float | None = None
        self.closed_when = 0.0
        self.survived: float | None = None
        self.limits = (0.0, 0.0)


class KeepAliveTable:
    """The learned idle timeouts of the hosts one connector talks to (see the module's rule).

    ``limits(key)`` runs once per pooled request: a dictionary lookup. Learning runs when a
    connection closes or a ``Keep-Alive`` header arrives.

    Args:
        pool_idle: The connector's ``keepalive_timeout``: no connection is reused past it.
    """

    __slots__ = ("_default", "_hosts", "pool_idle")

    def __init__(self, pool_idle: float) -> None:
        self.pool_idle = pool_idle
        self._default = (pool_idle, min(pool_idle, UNKNOWN_UNSAFE_IDLE))
        self._hosts: dict[Hashable, _HostIdle] = {}

    def limits(self, key: Hashable) -> tuple[float, float]:
        """``(idempotent, non-idempotent)`` reuse limits in seconds of idleness for ``key``."""
        host = self._hosts.get(key)
        return self._default if host is None else host.limits

    def estimate(self, key: Hashable) -> KeepAliveEstimate:
        """What is known of ``key``'s idle timeout."""
        host = self._hosts.get(key)
        safe, unsafe = self.limits(key)
        if host is None:
            return KeepAliveEstimate(None, None, None, safe, unsafe)
        return KeepAliveEstimate(host.announced, host.closed_after, host.survived, safe, unsafe)

    def race_idle_floor(self, key: Hashable) -> float:
        """Seconds of idleness before reuse after which a failure on a connection of ``key``
        can be the stale keep-alive race (see :data:`RACE_SHARE`). Runs on failures only."""
        host = self._hosts.get(key)
        if host is None:
            return MIN_IDLE_EVIDENCE
        known = [t for t in (host.announced, host.closed_after) if t is not None]
        if not known:
            return MIN_IDLE_EVIDENCE
        # Never above the pool's own idle limit: a huge announced timeout would hide every race.
        return max(MIN_IDLE_EVIDENCE, min(RACE_SHARE * min(known), self.pool_idle))

    def pool_keys(self) -> list[Hashable]:
        """The pool keys something was learned about."""
        return list(self._hosts)

    def announced(self, key: Hashable, timeout: float) -> None:
        """The server said ``Keep-Alive: timeout=<timeout>``."""
        host = self._host(key)
        if host.announced != timeout:
            host.announced = timeout
            self._update(host)

    def closed_idle(self, key: Hashable, idle: float, now: float) -> None:
        """The server closed a connection that had been idle in the pool for ``idle`` seconds."""
        if idle < MIN_IDLE_EVIDENCE:
            return
        host = self._host(key)
        # The shortest close is the timeout; one learned long ago may have changed since.
        if (
            host.closed_after is None
            or idle < host.closed_after
            or now - host.closed_when > FORGET_AFTER
        ):
            host.closed_after = idle
        host.closed_when = now
        self._update(host)

    def survived_idle(self, key: Hashable, idle: float) -> None:
        """A pooled connection was still open after ``idle`` seconds of idleness."""
        host = self._hosts.get(key)
        if host is None:
            if idle <= UNKNOWN_UNSAFE_IDLE:
                return  # nothing the default limits do not assume already
            host = self._host(key)
        changed = False
        if host.survived is None or idle > host.survived:
            host.survived = idle
            changed = True
        if host.closed_after is not None and idle > host.closed_after:
            host.closed_after = None  # an odd close: the server keeps connections longer
            changed = True
        if changed:
            self._update(host)

    def _host(self, key: Hashable) -> _HostIdle:
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _HostIdle()
            if len(self._hosts) > 4096:  # a crawler's hosts: forget the oldest entry
                del self._hosts[next(iter(self._hosts))]
        return host

    def _update(self, host: _HostIdle) -> None:
        pool = self.pool_idle
        # A server may announce a timeout that something in front of it (a proxy, a load
        # balancer) cuts short: the shorter of what it says and what it does.
        known = [t for t in (host.announced, host.closed_after) if t is not None]
        if known:
            timeout = min(known)
            limit = min(pool, REUSE_SHARE * timeout)
            host.limits = (limit, limit)
            return
        unsafe = UNKNOWN_UNSAFE_IDLE
        if host.survived is not None:
            unsafe = max(unsafe, REUSE_SHARE * host.survived)
        host.limits = (pool, min(pool, unsafe))
