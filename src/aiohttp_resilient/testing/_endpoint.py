"""What an endpoint and the records see of one request on a connection, as protocols.

Its own module so that the endpoints (``_ranges``), the records and the connection all depend
on it, and on nothing of each other: the connection satisfies :class:`Exchange` by its shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["Endpoint", "Exchange"]


class Exchange(Protocol):
    """The request a connection is answering, and how to answer it.

    Attributes:
        method: The request method.
        path: The request target without the query string.
        query: The query string without ``?``.
        headers: The request headers, in the order received.
        body: The body kept so far (all of it for an endpoint's path).
        body_size: Body bytes received.
        conn_id: 1-based number of the connection.
        seq: 1-based position of the request on its connection.
        keep_alive: Whether the connection stays open after the response.
        head_only: A ``HEAD`` request: the response has no body.
        transport: The connection's transport, ``None`` once it is lost.
        writing_paused: The transport's buffer is full (flow control).
        endpoint_answer: What an endpoint decided when the body arrived, for ``respond``.
    """

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytearray
    body_size: int
    conn_id: int
    seq: int
    keep_alive: bool
    head_only: bool
    transport: asyncio.Transport | None
    writing_paused: bool
    endpoint_answer: tuple[int, Any] | None

    def write_simple(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> None:
        """Answer with a whole response."""

    def start_stream(
        self,
        stream: Any,
        status: int,
        headers: Iterable[tuple[str, str]],
        length: int,
        *,
        close: bool,
    ) -> None:
        """Write a response head; ``stream.pump()`` writes the body as the transport drains."""

    def end_stream(self, cut: str | None) -> None:
        """The streamed body is written (or cut by ``"fin"``/``"rst"``)."""


class Endpoint(Protocol):
    """What a :class:`FaultServer` calls for a path given to :meth:`FaultServer.serve`."""

    def received(self, conn: Exchange) -> None:
        """The request's body arrived whole (called whatever fault then answers it)."""

    def respond(self, conn: Exchange) -> None:
        """Answer the request (called instead of an ``ok`` fault's canned response)."""
