"""One accepted connection of a :class:`FaultServer`: requests read, faults played on the wire.

The parsing is :class:`~._http11.RequestReader`'s; this module decides per request (dropped,
refused for its body size, shed by the load shaper, or given the plan's fault) and plays the
fault byte by byte: a canned response, FIN, RST (``SO_LINGER`` 0), half a status line, a cut
body, a hang, a drip, or an endpoint's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterable
from typing import Any, Protocol

from ._endpoint import Endpoint
from ._faults import Fault
from ._http11 import BUSY, CLOSED, HEAD, RequestHead, RequestReader
from ._load import LoadShaper
from ._plan import FaultPlan
from ._records import RECORDED_BODY_LIMIT, Ledger
from ._render import ResponseWriter

__all__ = ["Host", "ServerConnection"]

#: Bytes buffered from a pipelining client while a slow response (hang, drip) is in progress,
#: before the server stops reading from that connection.
MAX_PIPELINE_BUFFER = 1024 * 1024
#: After a 413, the server reads and discards the rest of the body (closing with unread data
#: would make the kernel send RST and the client could lose the 413), but no longer than this.
LINGER_SECONDS = 2.0

_LINGER_RST = struct.pack("ii", 1, 0)


class Host(Protocol):
    """What a connection needs of its server (a :class:`FaultServer`)."""

    @property
    def idle_close(self) -> float | None: ...
    @property
    def max_requests_per_conn(self) -> int | None: ...
    @property
    def max_body(self) -> int | None: ...
    @property
    def max_body_action(self) -> str: ...
    @property
    def record(self) -> bool: ...
    @property
    def _required_lower(self) -> str | None: ...
    @property
    def _id_lower(self) -> str | None: ...
    @property
    def _plan(self) -> FaultPlan: ...
    @property
    def _shaper(self) -> LoadShaper: ...
    @property
    def _writer(self) -> ResponseWriter: ...
    @property
    def _endpoints(self) -> dict[str, Endpoint]: ...
    @property
    def _ledger(self) -> Ledger: ...

    def _connected(self, conn: ServerConnection) -> int:
        """A connection was accepted; returns its id."""

    def _disconnected(self, conn: ServerConnection) -> None:
        """A connection is gone."""


def _find_header(headers: list[tuple[str, str]], lname: str) -> str | None:
    """The last value of the header named ``lname`` (lowercase), or None."""
    found = None
    for name, value in headers:
        if name.lower() == lname:
            found = value
    return found


class ServerConnection(RequestReader):
    """One accepted connection: requests parsed by the base class, answered with faults."""

    def __init__(self, server: Host) -> None:
        super().__init__()
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn_id = 0
        self.seq = 0
        self.responses = 0
        # Timers: `idle` for idle_close; `timer` for a hang, a drip or the post-413 linger.
        self.idle: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False
        # True from a request's head until it is recorded, so a lost connection records it.
        self.in_request = False
        # The request being read.
        self.method = ""
        self.path = ""
        self.query = ""
        self.headers: list[tuple[str, str]] = []
        self.body_size = 0
        self.body = bytearray()
        self.keep_alive = True
        self.head_only = False
        self.rejected: str | None = None
        # A dripping response in progress.
        self.drip_data = b""
        self.drip_pos = 0
        self.drip_fault: Fault | None = None
        # An `ok` response held for service_time (it counts against the server's capacity).
        self.held: Fault | None = None
        # An endpoint's streamed response in progress, the transport's flow control, whether the
        # whole body is kept for an endpoint, and the endpoint's answer to the current request.
        self.stream: Any = None
        self.writing_paused = False
        self.keep_body = False
        self.endpoint_answer: tuple[int, Any] | None = None

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn_id = self.server._connected(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.state == CLOSED:
            return
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.buf += data
        if self.state == BUSY:
            if len(self.buf) > MAX_PIPELINE_BUFFER and not self.paused:
                self.paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        self._process()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.stream is not None:
            # Not from inside this callback: asyncio's transport calls it mid-flush, and a stream
            # that ends there and closes the transport would have it report the loss twice.
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        if self.stream is not None and not self.writing_paused:
            self.stream.pump()

    def eof_received(self) -> bool | None:
        # The client half-closed: nothing more will come; close our side too (returning None
        # makes asyncio close the transport). A response in progress is cut, as with any server.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self.in_request:
            self._finish(self.rejected or "aborted")
        self.state = CLOSED
        self.server._disconnected(self)
        self.transport = None
        self.drip_data = b""
        self.stream = None

    # -- closing -----------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held is not None:
            # The held response is never written: its slot is free again.
            self.held = None
            self.server._shaper.in_service -= 1

    def close(self) -> None:
        """Close with FIN after the written data is flushed."""
        self._cancel_timers()
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._cancel_timers()
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Abort with RST: SO_LINGER (on, 0 s) makes the kernel reset instead of FIN."""
        self._cancel_timers()
        self.state = CLOSED
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # The socket may already be gone; abort() closes the transport either way.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()

    def _arm_idle(self) -> None:
        idle = self.server.idle_close
        if idle is not None and self.transport is not None:
            if self.idle is not None:
                self.idle.cancel()
            self.idle = asyncio.get_running_loop().call_later(idle, self._idle_expired)

    def _idle_expired(self) -> None:
        self.idle = None
        if self.state == HEAD and not self.buf:
            self.close()

    # -- requests (RequestReader hooks) --------------------------------------------------------

    def _on_drained(self) -> None:
        self._arm_idle()

    def _bad_request(self, status: int) -> None:
        """Answer a malformed request and close: the byte stream cannot be trusted after it."""
        assert self.transport is not None
        if self.in_request:
            self._finish(str(status))
        self.transport.write(self.server._writer.render(status, (), 0, close=True))
        self.close()

    def _finish(self, action: str, shed: str | None = None) -> None:
        self.in_request = False
        self.server._ledger.finished(self, action, shed)

    def _on_head(self, head: RequestHead) -> None:
        server = self.server
        self._begin(head)
        required = server._required_lower
        id_header = server._id_lower
        request_id = None if id_header is None else _find_header(head.headers, id_header)
        server._ledger.arrived(head.path, head.method, request_id)
        if required is not None and _find_header(head.headers, required) is None:
            # Like a CDN that refuses the request: no response, just a closed connection.
            self._finish("dropped")
            self.close()
            return
        max_body = server.max_body
        if max_body is not None and not head.chunked and head.content_length > max_body:
            if server.max_body_action == "rst":
                self._finish("max_body_rst")
                self.reset()
                return
            self._reject_413()
        elif head.expect_continue and (head.content_length or head.chunked):
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._read_body(head)

    def _begin(self, head: RequestHead) -> None:
        """Make ``head`` the current request."""
        self.seq += 1
        self.in_request = True
        self.method = head.method
        self.path = head.path
        self.query = head.query
        self.headers = head.headers
        self.body_size = 0
        if self.body:
            self.body = bytearray()
        self.rejected = None
        self.endpoint_answer = None
        self.keep_body = head.path in self.server._endpoints
        self.head_only = head.method == "HEAD"
        self.keep_alive = head.keep_alive

    def _reject_413(self) -> None:
        assert self.transport is not None
        self.rejected = "413"
        self.transport.write(
            self.server._writer.render(413, (), 0, close=True) if not self.head_only else b""
        )
        self.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self.close)

    def _on_body(self, data: bytearray) -> None:
        self.body_size += len(data)
        server = self.server
        if self.keep_body:
            self.body += data
        elif server.record and len(self.body) < RECORDED_BODY_LIMIT:
            self.body += data[: RECORDED_BODY_LIMIT - len(self.body)]
        max_body = server.max_body
        if max_body is not None and self.rejected is None and self.body_size > max_body:
            # Only reachable for chunked bodies: a Content-Length over the limit is refused early.
            if server.max_body_action == "rst":
                self._finish("max_body_rst")
                self.reset()
            else:
                self._reject_413()

    def _on_complete(self) -> None:
        server = self.server
        if self.rejected is not None:
            self._finish(self.rejected)
            self.close()
            return
        if self.keep_body:
            server._endpoints[self.path].received(self)
        shaper = server._shaper
        if shaper.gated and self.path not in shaper.exempt_paths:
            shed = shaper.shed()
            if shed is not None:
                fault, reason = shed
                self._finish(fault.kind, reason)
                self._play(fault)
                return
            fault = server._plan.choose(self.path)
            if fault.kind == "ok" and shaper.load.service_time:
                # Recorded when written, so a response dropped while held counts as aborted.
                self._hold(fault)
                return
        else:
            fault = server._plan.choose(self.path)
        self._finish(fault.kind)
        self._play(fault)

    # -- playing faults ------------------------------------------------------------------------

    def _hold(self, fault: Fault) -> None:
        """Write the ``ok`` response ``service_time`` from now; in service until then."""
        shaper = self.server._shaper
        shaper.in_service += 1
        self.held = fault
        self.state = BUSY
        self.timer = asyncio.get_running_loop().call_later(shaper.load.service_time, self._release)

    def _release(self) -> None:
        fault = self.held
        assert fault is not None
        assert self.transport is not None
        self.timer = None
        self.held = None
        self.server._shaper.in_service -= 1
        self._finish(fault.kind)
        self._play(fault)  # an endpoint's answer too, when the path has one
        if self.state == HEAD:
            self._process()  # requests pipelined behind the held one

    def _play(self, fault: Fault) -> None:
        """Answer the current (already recorded) request with ``fault``."""
        kind = fault.kind
        transport = self.transport
        assert transport is not None
        writer = self.server._writer
        if kind == "ok" and self.keep_body:
            self.server._endpoints[self.path].respond(self)
        elif kind == "ok" or kind == "status":
            close = not self.keep_alive
            transport.write(writer.response(fault, close=close, head_only=self.head_only))
            self._responded(close)
        elif kind == "fin":
            self.close()
        elif kind == "rst":
            self.reset()
        elif kind == "partial_status":
            transport.write(b"HTTP/1.1 20")
            self.close()
        elif kind == "cut_body":
            transport.write(writer.render(200, (), fault.size, close=False) + b"x" * fault.sent)
            if fault.how == "rst":
                self.reset()
            else:
                self.close()
        elif kind == "hang":
            self.state = BUSY
            self.timer = asyncio.get_running_loop().call_later(fault.seconds, self.close)
        else:
            self._drip(fault)

    def _drip(self, fault: Fault) -> None:
        assert self.transport is not None
        close = not self.keep_alive
        self.transport.write(
            self.server._writer.render(fault.code, fault.headers, len(fault.body), close=close)
        )
        self.state = BUSY
        self.drip_fault = fault
        self.drip_data = b"" if self.head_only else fault.body
        self.drip_pos = 0
        self._drip_next()

    def _drip_next(self) -> None:
        fault = self.drip_fault
        assert fault is not None
        if self.drip_pos >= len(self.drip_data):
            self.timer = None
            self.drip_fault = None
            self.drip_data = b""
            self._responded(not self.keep_alive)
            if self.state == HEAD:
                self._process()
            return
        self.timer = asyncio.get_running_loop().call_later(fault.interval, self._drip_write)

    def _drip_write(self) -> None:
        fault = self.drip_fault
        assert fault is not None
        assert self.transport is not None
        end = self.drip_pos + fault.chunk
        self.transport.write(self.drip_data[self.drip_pos : end])
        self.drip_pos = end
        self._drip_next()

    # -- for endpoints (the Exchange protocol, see _endpoint.py) --------------------------------

    def write_simple(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> None:
        """Answer with a whole response."""
        assert self.transport is not None
        close = not self.keep_alive
        data = self.server._writer.render(status, headers, len(body), close=close)
        self.transport.write(data if self.head_only else data + body)
        self._responded(close)

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
        assert self.transport is not None
        self.state = BUSY
        self.stream = stream
        self.transport.write(self.server._writer.render(status, headers, length, close=close))

    def end_stream(self, cut: str | None) -> None:
        """The streamed body is written (or cut by ``"fin"``/``"rst"``)."""
        self.stream = None
        if cut == "rst":
            self.reset()
        elif cut is not None:
            self.close()
        else:
            self._responded(not self.keep_alive)
            if self.state == HEAD:
                self._process()

    def _responded(self, close: bool) -> None:
        """A full response went out: keep the connection for the next request, or close it."""
        self.responses += 1
        limit = self.server.max_requests_per_conn
        if close or (limit is not None and self.responses >= limit):
            self.close()
            return
        self.state = HEAD
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
