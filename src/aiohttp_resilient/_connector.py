"""A TCPConnector that tells the retry middleware whether an attempt got a reused connection."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import aiohttp

from ._middleware import REUSED_ATTR

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientTimeout
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

__all__ = ["TrackingConnector"]

# Marks a protocol (one TCP connection) that has already carried a request.
_SERVED_ATTR: Final = "_aiohttp_resilient_served"


class TrackingConnector(aiohttp.TCPConnector):
    """A :class:`aiohttp.TCPConnector` that marks each request with whether its connection was
    reused from the keep-alive pool.

    A disconnect on a reused connection before any response is the stale keep-alive race (the
    server closed the idle connection as it was reused), which :class:`RetryMiddleware` retries at
    once instead of backing off. aiohttp's trace hooks tell the same, at a cost on every request;
    this costs two attribute operations.
    """

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: ClientTimeout
    ) -> Connection:
        """Get a connection as aiohttp does, and note on ``req`` whether it was pooled."""
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        if protocol is not None:
            reused = protocol.__dict__.get(_SERVED_ATTR, False)
            if not reused:
                protocol.__dict__[_SERVED_ATTR] = True
            req.__dict__[REUSED_ATTR] = reused
        return connection
