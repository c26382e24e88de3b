"""A TCPConnector that tells the retry middleware whether an attempt got a reused connection."""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Final

import aiohttp

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientTimeout
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

__all__ = ["TrackingConnector", "last_connection_reused"]

#: Whether the connection the current task's latest attempt got had carried a request before.
#: A ContextVar, not an attribute on aiohttp's objects: storing a foreign attribute on the request
#: or the protocol forces CPython to give them an instance dict, which slowed every attribute
#: access aiohttp makes on them (25k more instructions per request, measured with callgrind).
last_connection_reused: Final[ContextVar[bool | None]] = ContextVar(
    "aiohttp_resilient_last_connection_reused", default=None
)


class TrackingConnector(aiohttp.TCPConnector):
    """A :class:`aiohttp.TCPConnector` that notes whether each request's connection was reused
    from the keep-alive pool.

    A disconnect on a reused connection before any response is the stale keep-alive race (the
    server closed the idle connection as it was reused), which :class:`RetryMiddleware` retries at
    once instead of backing off. aiohttp's trace hooks tell the same, at a cost on every request;
    this costs a set lookup.

    Usage::

        session = aiohttp.ClientSession(connector=TrackingConnector(), middlewares=[retry])
    """

    # Made on first use, so that TrackingConnector keeps TCPConnector's own typed __init__.
    _served: weakref.WeakSet[ResponseHandler]

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: ClientTimeout
    ) -> Connection:
        """Get a connection as aiohttp does, and note whether it had served before."""
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            try:
                served = self._served
            except AttributeError:
                served = self._served = weakref.WeakSet()
            if protocol in served:
                last_connection_reused.set(True)
            else:
                served.add(protocol)
                last_connection_reused.set(False)
        return connection
