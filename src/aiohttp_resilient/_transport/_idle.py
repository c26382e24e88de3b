"""IdleWatchdog: a response that stops arriving is abandoned, without a timer per read.

aiohttp's ``ClientTimeout(sock_read=...)`` cancels and re-creates a timer on every
``data_received`` (``ResponseHandler._reschedule_timeout``): two timers for the smallest response,
one more per read of a large one. The watchdog keeps one timer per event loop for all the
attempts it watches and, when it fires, looks at whether each made progress since the last look
(Netty's ``IdleStateHandler`` and Go's deadlines avoid per-read timer churn the same way). Taking
an attempt under watch is a dict insertion; nothing runs per read.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

import aiohttp

from .._retry._policy import _check_number

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientResponse

__all__ = ["CHECKS_PER_IDLE", "IdleWatchdog"]

#: Looks per idle period: a response silent for ``idle`` seconds is abandoned at most
#: ``idle / CHECKS_PER_IDLE`` later; a look costs a few attribute reads per watched attempt.
CHECKS_PER_IDLE: Final = 4
# Timer handles may fire a clock tick early: what is this close to idle counts as idle.
_SLACK: Final = 1e-3


class _Watch:
    """What the watchdog knew of an attempt at its last look."""

    __slots__ = ("marker", "since", "stale")

    def __init__(self, stale: ClientResponse | None, now: float) -> None:
        #: The request's response before this attempt (a retry reuses the request object).
        self.stale = stale
        #: When progress was last seen (or the watch began).
        self.since = now
        #: Bytes of the body received at the last look; -1 while waiting for the headers.
        self.marker = -2


class IdleWatchdog:
    """Abandons an attempt whose response goes silent for ``idle`` seconds.

    Silent means: the request was sent (the request's head and body written), and then either
    the status line and headers have not all arrived, or the body stopped growing while the
    caller was waiting for it (nothing unread in its buffer). The attempt then fails as aiohttp's
    ``sock_read`` would make it fail, with :class:`aiohttp.SocketTimeoutError` on the pending
    read, which :class:`RetryMiddleware` retries like any read timeout of an idempotent request.
    A body the caller streams after the middleware handed the response over stays watched until
    it ends, is released, or goes silent.

    Differences from ``sock_read``, both on purpose: the headers must arrive whole within
    ``idle`` of the request being sent (Go's ``ResponseHeaderTimeout``), a trickle of header
    bytes does not keep a response alive; and a caller that does not read what already arrived
    is never cut (``sock_read`` stops only once aiohttp's buffer is full).

    A silence is detected between ``idle`` and ``idle * (1 + 1/CHECKS_PER_IDLE)`` seconds after
    the last byte: one timer per event loop looks every ``idle / CHECKS_PER_IDLE`` seconds while
    something is watched, and stops when nothing is. A stream whose gaps are all shorter than
    ``idle`` is never cut, and a look that comes more than a period late (the event loop was
    blocked) cuts nothing.

    Usage::

        watchdog = IdleWatchdog(30.0)
        watchdog.watch(req)  # before each attempt; unwatch(req) when it fails

    Args:
        idle: Seconds of silence after which an attempt is abandoned.

    Raises:
        ValueError: ``idle`` is not a positive number.
    """

    __slots__ = ("_handle", "_period", "idle", "loop", "watched")

    def __init__(self, idle: float) -> None:
        _check_number("idle_timeout", idle, minimum=0, inclusive=False)
        self.idle = float(idle)
        self._period = self.idle / CHECKS_PER_IDLE
        #: The watched requests, each with what was known at the last look (before the first
        #: look: the response the request had before this attempt).
        self.watched: dict[ClientRequest, _Watch | ClientResponse | None] = {}
        #: The loop the timer runs on (``None``: no timer).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, req: ClientRequest) -> None:
        """Watch the attempt about to send ``req`` (again, on a retry). The middleware inlines
        this: keep the two alike."""
        self.watched[req] = req.response
        if self.loop is not req.loop:
            self.start(req.loop)

    def unwatch(self, req: ClientRequest) -> None:
        """Stop watching ``req`` (its attempt failed, or its response is complete)."""
        self.watched.pop(req, None)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the timer on ``loop``: at the first watch, or the first on a new loop (the timer
        of a finished loop never fires)."""
        if self._handle is not None:
            self._handle.cancel()
        self.loop = loop
        self._handle = loop.call_at(loop.time() + self._period, self._look)

    def _look(self) -> None:
        watched = self.watched
        loop = self.loop
        if not watched or loop is None:
            self.loop = self._handle = None  # the next watch starts the timer again
            return
        now = loop.time()
        assert self._handle is not None
        # A look that runs more than a period late judges nothing: the event loop was stalled
        # (a blocking call, a starved process), and bytes that came meanwhile are not read yet.
        stalled = now - self._handle.when() > self._period
        self._handle = loop.call_at(now + self._period, self._look)
        for req, state in list(watched.items()):
            if not isinstance(state, _Watch):  # its first look
                state = watched[req] = _Watch(state, now)
            resp = req.response
            if resp is None or resp is state.stale:
                # Connecting, or writing the request's head: aiohttp's connect timeouts rule.
                state.since = now
                continue
            content = resp.content
            if content is None:  # waiting for the status line and headers
                if getattr(req, "_writer", None) is not None:  # the body is still being sent
                    state.since = now
                    continue
                marker = -1
            else:
                if content.is_eof() or content.exception() is not None or resp.connection is None:
                    del watched[req]  # complete, failed, or released by the caller
                    continue
                if getattr(content, "_size", 0):  # unread: the caller's turn, not the server's
                    state.since = now
                # Bytes off the network, not decoded ones: a compressed body arrives steadily
                # while its decoder may give nothing for a while.
                marker = content.total_raw_bytes
            if marker != state.marker:
                state.marker = marker
                state.since = now
            elif now - state.since >= self.idle - _SLACK and not stalled:
                del watched[req]
                self._expire(resp)

    def _expire(self, resp: ClientResponse) -> None:
        # As aiohttp's own sock_read expiry (ResponseHandler._on_read_timeout): the error goes
        # to the protocol (a pending wait for the headers) and to the body's stream.
        error = aiohttp.SocketTimeoutError(
            f"no byte of the response for {self.idle:g}s (idle_timeout)"
        )
        connection = resp.connection
        protocol = None if connection is None else connection.protocol
        if protocol is not None:
            protocol.set_exception(error)
        if resp.content is not None:
            resp.content.set_exception(error)

    def __repr__(self) -> str:
        return f"<IdleWatchdog idle={self.idle:g}s watching={len(self.watched)}>"
