"""The request side of HTTP/1.1: an incremental parser of heads and bodies (sized or chunked).

:class:`RequestReader` is an :class:`asyncio.Protocol` base that owns the read buffer and the
parse state; the connection built on it decides what to do with each head, body piece and
complete request. The parser is strict where a fault server must not guess (a malformed request
line or header, a bad chunk size: ``400``; an oversized head: ``431``) and lenient elsewhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

__all__ = ["MAX_CHUNK_LINE", "MAX_HEAD_SIZE", "RequestHead", "RequestReader", "parse_head"]

#: Longest request head (request line and headers) accepted before answering 431.
MAX_HEAD_SIZE = 64 * 1024
#: Longest chunk-size line (with extensions) of a chunked body accepted before answering 400.
MAX_CHUNK_LINE = 4096

# Parser states of a connection. BUSY: a response is in progress, requests pipelined behind it
# wait in the buffer; CLOSED: nothing more is read.
HEAD, BODY, CHUNK_SIZE, CHUNK_DATA, CHUNK_CRLF, TRAILERS, BUSY, CLOSED = range(8)


@dataclass(slots=True)
class RequestHead:
    """A parsed request line and header block (the last of repeated framing headers wins)."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    content_length: int
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def parse_head(head: bytes) -> RequestHead | None:
    """Parse a head without its final blank line; ``None`` when it is malformed (answer 400)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, version = parts
    content_length = 0
    chunked = False
    connection = ""
    expect_continue = False
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name[-1] in " \t":
            return None
        value = value.strip()
        headers.append((name, value))
        lname = name.lower()
        if lname == "content-length":
            if not value.isdigit():
                return None
            content_length = int(value)
        elif lname == "transfer-encoding":
            chunked = value.lower().endswith("chunked")
        elif lname == "connection":
            connection = value.lower()
        elif lname == "expect":
            expect_continue = value.lower() == "100-continue"
    path, _, query = target.partition("?")
    # HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless told to keep.
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return RequestHead(
        method, path, query, headers, content_length, chunked, keep_alive, expect_continue
    )


class RequestReader(asyncio.Protocol):
    """Reads requests out of :attr:`buf`; subclasses act on them through the ``_on_*`` hooks.

    A subclass's :meth:`_on_head` calls :meth:`_read_body` to go on with the body (or not, when
    it has closed the connection). Hooks may change :attr:`state` (to ``BUSY`` or ``CLOSED``):
    parsing stops until it is ``HEAD`` again and :meth:`_process` is called.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.state = HEAD
        # Body bytes still to come of a sized body or of the current chunk.
        self.remaining = 0

    # -- hooks ----------------------------------------------------------------------------------

    def _on_head(self, head: RequestHead) -> None:
        raise NotImplementedError

    def _on_body(self, data: bytearray) -> None:
        raise NotImplementedError

    def _on_complete(self) -> None:
        raise NotImplementedError

    def _bad_request(self, status: int) -> None:
        raise NotImplementedError

    def _on_drained(self) -> None:
        """The buffer is empty between requests (a keep-alive connection gone idle)."""

    # -- parsing --------------------------------------------------------------------------------

    def _read_body(self, head: RequestHead) -> None:
        if head.chunked:
            self.state = CHUNK_SIZE
        elif head.content_length:
            self.remaining = head.content_length
            self.state = BODY
        else:
            self._on_complete()

    def _process(self) -> None:
        """Parse as much of the buffer as possible; each pass consumes bytes or returns."""
        buf = self.buf
        while self.state != CLOSED and self.state != BUSY:
            state = self.state
            if state == HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_SIZE:
                        self._bad_request(431)
                    elif not buf:
                        self._on_drained()
                    return
                raw = bytes(buf[:end])
                del buf[: end + 4]
                head = parse_head(raw)
                if head is None:
                    self._bad_request(400)
                    return
                self._on_head(head)
            elif state in (BODY, CHUNK_DATA):
                if not buf:
                    return
                self._take_body(buf)
            elif not self._chunk_framing(state, buf):
                return

    def _take_body(self, buf: bytearray) -> None:
        n = min(self.remaining, len(buf))
        self._on_body(buf[:n])
        del buf[:n]
        self.remaining -= n
        if self.remaining == 0:
            if self.state == BODY:
                self._on_complete()
            elif self.state == CHUNK_DATA:
                self.state = CHUNK_CRLF

    def _chunk_framing(self, state: int, buf: bytearray) -> bool:
        """One step of a chunk-size line, a chunk's CRLF or a trailer line; False to wait."""
        if state == CHUNK_CRLF:
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                self._bad_request(400)
                return False
            del buf[:2]
            self.state = CHUNK_SIZE
            return True
        end = buf.find(b"\r\n")
        if state == CHUNK_SIZE:
            if end < 0:
                if len(buf) > MAX_CHUNK_LINE:
                    self._bad_request(400)
                return False
            line = bytes(buf[:end]).split(b";", 1)[0].strip()
            del buf[: end + 2]
            if not line or line.strip(b"0123456789abcdefABCDEF"):
                self._bad_request(400)
                return False
            size = int(line, 16)
            if size == 0:
                self.state = TRAILERS
            else:
                self.remaining = size
                self.state = CHUNK_DATA
            return True
        # TRAILERS: skipped up to the blank line that ends the request.
        if end < 0:
            if len(buf) > MAX_HEAD_SIZE:
                self._bad_request(431)
            return False
        del buf[: end + 2]
        if end == 0:
            self._on_complete()
        return True
