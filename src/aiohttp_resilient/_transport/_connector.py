"""A TCPConnector that tells the retry middleware whether an attempt got a reused connection, and
that stops reusing a host's idle connections before the host closes them (see ``_keepalive``)."""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from time import monotonic
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from yarl import URL

from .._retry._policy import DEFAULT_IDEMPOTENCY_HEADER, DEFAULT_RETRY_METHODS
from ._keepalive import (
    OBSERVE_FOR,
    KeepAliveEstimate,
    KeepAliveTable,
    parse_keep_alive_timeout,
)

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientTimeout
    from aiohttp.client_reqrep import ConnectionKey
    from aiohttp.tracing import Trace

__all__ = [
    "NEW_CONNECTION",
    "TrackingConnector",
    "judged_by_policy",
    "last_connection_idle",
    "race_unsafe",
]

#: :data:`last_connection_idle` of an attempt that got a new connection.
NEW_CONNECTION: Final = -1.0

#: How long the connection the current task's latest attempt got had sat idle in the pool before
#: it was handed out, in seconds; :data:`NEW_CONNECTION` for a new one, ``None`` when unknown.
#: A ContextVar, not an attribute on aiohttp's objects: storing a foreign attribute on the request
#: or the protocol forces CPython to give them an instance dict, which slowed every attribute
#: access aiohttp makes on them (25k more instructions per request, measured with callgrind).
last_connection_idle: Final[ContextVar[float | None]] = ContextVar(
    "aiohttp_resilient_last_connection_idle", default=None
)

#: The requests a RetryMiddleware is sending whose policy judges them otherwise than the default
#: rule (custom ``methods`` or ``idempotency_header``, ``use_policy()`` included): request ->
#: idempotent, for the length of the middleware's call. Other requests, and requests sent around
#: the middleware, are judged by the default methods and header. A dict keyed by the request, not
#: a ContextVar (each set and reset copies the context: 2.9k instructions per request) nor an
#: attribute on it (see :data:`last_connection_idle`).
judged_by_policy: Final[dict[ClientRequest, bool]] = {}

#: Whether the request the current task is connecting for is one the race would lose (one the
#: middleware does not send again): set by connect() for each request, read by the pool's _get(),
#: which does not see the request.
race_unsafe: Final[ContextVar[bool]] = ContextVar("aiohttp_resilient_race_unsafe", default=False)


class _PooledHandler(ResponseHandler):
    """aiohttp's protocol, telling its connector's keep-alive table when the server closed it
    while it sat idle in the pool, or when it outlived an idle time."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connector: weakref.ReferenceType[TrackingConnector],
    ) -> None:
        super().__init__(loop)
        self.pool_key: ConnectionKey | None = None  # set when first handed out
        self._owner = connector
        self._told = False

    def eof_received(self) -> None:
        self._peer_closed()
        super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is not None and self.transport is not None:  # a reset from the peer
            self._peer_closed()
        super().connection_lost(exc)

    def close(self) -> None:
        if not self._told and self.is_connected():
            # Closed by its own pool (expired, or the session closing) while still open.
            self._tell(peer=False)
        super().close()

    def _peer_closed(self) -> None:
        if not self._told:
            self._tell(peer=True)

    def _tell(self, *, peer: bool) -> None:
        self._told = True
        connector = self._owner()
        key = self.pool_key
        if connector is None or key is None or (table := connector._keep_alive) is None:
            return
        idle = connector._idle_time(key, self)
        if idle is None:  # in use: not an idle close
            return
        if peer:
            table.closed_idle(key, idle, monotonic())
        else:
            table.survived_idle(key, idle)


class TrackingConnector(aiohttp.TCPConnector):
    """A :class:`aiohttp.TCPConnector` that notes whether each request's connection was reused
    from the keep-alive pool, and learns each host's keep-alive idle timeout.

    A disconnect on a reused connection before any response is the stale keep-alive race (the
    server closed the idle connection as it was reused), which :class:`RetryMiddleware` retries at
    once instead of backing off.

    Keep-alive learning, per pool key: a server's ``Keep-Alive: timeout=N`` (the middleware passes
    it on), and the idle time after which the server was seen closing pooled connections, set how
    long an idle connection may be reused; requests the race would lose (not idempotent, and
    without an ``Idempotency-Key``) reuse a connection to a host whose timeout is unknown only
    within 1 s of idleness. The pool
    hands out its most recently used connection first. :attr:`keep_alive_estimate` tells what was
    learned. The rule in full is in the README ("Keep-alive").

    Usage::

        session = aiohttp.ClientSession(connector=TrackingConnector(), middlewares=[retry])
    """

    # Made on the first connect, so that TrackingConnector keeps TCPConnector's own typed __init__.
    _keep_alive: KeepAliveTable | None = None
    #: Called with each request as it asks for a connection (every attempt that will go on the
    #: wire, pooled connection or new), before anything is sent; it may raise to stop the
    #: attempt. ``fetch`` counts attempts and refuses new ones after Ctrl-C with it.
    on_connect: Callable[[ClientRequest], None] | None = None

    def keep_alive_estimate(self, url: str | URL) -> KeepAliveEstimate:
        """What was learned of the idle timeout of the host that ``url`` is on (any pool to it:
        direct or through a proxy)."""
        target = URL(url)
        req_key = (target.raw_host or "", target.port, target.scheme in ("https", "wss"))
        table = self._table()
        for key in table.pool_keys():
            if (key.host, key.port, key.is_ssl) == req_key:  # type: ignore[attr-defined]
                return table.estimate(key)
        return table.estimate(req_key)

    def race_idle_floor(self, key: ConnectionKey) -> float:
        """Seconds a connection of ``key``'s pool must have sat idle before a failure on its
        reuse can be the stale keep-alive race (the server could have closed it idle): see
        :meth:`KeepAliveTable.race_idle_floor`."""
        return self._table().race_idle_floor(key)

    def note_keep_alive(self, key: ConnectionKey, header: str) -> None:
        """Take a response's ``Keep-Alive`` header for ``key``'s pool."""
        timeout = parse_keep_alive_timeout(header)
        if timeout is not None:
            self._table().announced(key, timeout)

    def _table(self) -> KeepAliveTable:
        table = self._keep_alive
        if table is None:
            pool_idle = self._keepalive_timeout  # None: aiohttp keeps idle connections forever
            table = self._keep_alive = KeepAliveTable(math.inf if pool_idle is None else pool_idle)
            # A subclass of the protocol aiohttp makes: partial[] is invariant to mypy.
            self._factory = functools.partial(  # type: ignore[assignment]
                _PooledHandler, loop=self._loop, connector=weakref.ref(self)
            )
        return table

    def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: ClientTimeout
    ) -> Coroutine[Any, Any, Connection]:
        """aiohttp's ``connect()``, told first whether ``req`` is one the stale keep-alive race
        would lose (the pool's ``_get()`` does not see the request). A plain function returning
        aiohttp's coroutine: no coroutine frame of its own on every request."""
        if self.on_connect is not None:
            self.on_connect(req)
        idempotent = judged_by_policy.get(req)
        if idempotent is None:  # the default rule (or sent around the middleware)
            idempotent = (
                req.method in DEFAULT_RETRY_METHODS or DEFAULT_IDEMPOTENCY_HEADER in req.headers
            )
        race_unsafe.set(not idempotent)
        return super().connect(req, traces, timeout)

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace], timeout: ClientTimeout
    ) -> ResponseHandler:
        # Only new connections pass here (not every request): the protocol learns its pool key,
        # and the attempt is told that its connection is new.
        if self._keep_alive is None:
            self._table()  # before the first protocol is made: it swaps the factory
        protocol = await super()._create_connection(req, traces, timeout)
        if isinstance(protocol, _PooledHandler):
            protocol.pool_key = req.connection_key
        last_connection_idle.set(NEW_CONNECTION)
        return protocol

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        # aiohttp 3.14's _get(), with two changes: the most recently released connection goes
        # first (the least likely to have been closed by the server), and none idle longer than
        # the host's reuse limit goes out (the oldest of those stays pooled as an observation,
        # the others are closed: _observe_only()).
        if (conns := self._conns.get(key)) is None:
            last_connection_idle.set(NEW_CONNECTION)  # a new connection comes (or its making fails)
            return None
        table = self._keep_alive
        if table is None:
            return await super()._get(key, traces)
        safe, unsafe = table.limits(key)
        limit = unsafe if race_unsafe.get() else safe
        now = monotonic()
        while conns:
            proto, released = conns[-1]
            if not proto.is_connected():
                self._close_pooled(key, proto)
                conns.pop()
                continue
            if now - released > limit:
                self._observe_only(key, conns, now)
                last_connection_idle.set(NEW_CONNECTION)
                return None
            conns.pop()
            if not conns:
                del self._conns[key]
            self._acquired.add(proto)
            if self._limit_per_host:
                self._acquired_per_host[key].add(proto)
            last_connection_idle.set(now - released)
            if traces:
                for trace in traces:
                    try:
                        await trace.send_connection_reuseconn()
                    except BaseException:  # noqa: PERF203 - as aiohttp's own _get()
                        self._release_acquired(key, proto)
                        raise
            return Connection(self, key, proto, self._loop)
        del self._conns[key]
        last_connection_idle.set(NEW_CONNECTION)
        return None

    def _observe_only(
        self, key: ConnectionKey, conns: deque[tuple[ResponseHandler, float]], now: float
    ) -> None:
        # Every pooled connection of ``key`` is idle past the reuse limit. The oldest stays as
        # an observation (the server closing it teaches its timeout; its outliving the pool
        # time, a longer one) for at most OBSERVE_FOR seconds; the others are closed, so that
        # the sockets a host holds stay within what the pool would hold without learning. Each
        # is closed while still pooled, so its close counts as a survival.
        # A connection is about to be made (the caller returns None): the observation must not
        # take the host past its cap, so it goes when the host's slots are all in use.
        keep = 0 if self._at_host_cap(key) else 1
        while len(conns) > keep or (conns and now - conns[0][1] > OBSERVE_FOR):
            self._close_pooled(key, conns[-1][0])
            conns.pop()
        if not conns:
            del self._conns[key]

    def _at_host_cap(self, key: ConnectionKey) -> bool:
        # Whether the connections in use to ``key`` plus the one about to be made fill its
        # limit_per_host: an idle one kept beside them would be one socket over the cap.
        if not self._limit_per_host:
            return False
        in_use = len(self._acquired_per_host.get(key, ()))
        return in_use + 1 >= self._limit_per_host

    def _close_pooled(self, key: ConnectionKey, proto: ResponseHandler) -> None:
        # As aiohttp's _get() closes a pooled connection it will not hand out. Called while the
        # connection is still in the pool, so that _PooledHandler.close() can tell its idle time.
        transport = proto.transport
        proto.close()
        if not self._cleanup_closed_disabled and key.is_ssl:
            self._cleanup_closed_transports.append(transport)

    def _idle_time(self, key: ConnectionKey, proto: ResponseHandler) -> float | None:
        # How long ``proto`` has sat idle in ``key``'s pool, or None when it is not in the pool
        # (in use). A scan: it runs when a connection closes, not per request.
        if (conns := self._conns.get(key)) is None:
            return None
        for pooled, released in conns:
            if pooled is proto:
                return monotonic() - released
        return None
