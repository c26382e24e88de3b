"""Endpoints a :class:`FaultServer` can serve on a path: a file with ranges, an idempotent sink.

Both are scriptable fault sources for large transfers:

- :class:`RangedFile` answers ``GET``/``HEAD`` with ``200``, ``206`` (``Content-Range``) or ``416``,
  honours ``If-Range`` against its strong ``ETag`` or its ``Last-Modified``, can ignore ranges, can
  change its content between requests, streams with flow control (a large file costs the server
  little memory) and cuts a response after N body bytes, by FIN or RST.
- :class:`IdempotentSink` takes ``POST`` batches of JSON (an array, or JSON lines, optionally
  gzip-compressed) and applies each ``Idempotency-Key`` once, as real APIs do: a key seen again gets
  the first answer back, and its items are not counted again.

Usage::

    file = RangedFile(50 * 1024 * 1024, etag=True)
    server.serve("/big.bin", file)
    file.cut_after(1_000_000, 5_000_000)   # the next two responses are cut there
"""

from __future__ import annotations

import collections
import email.utils
import gzip
import hashlib
import json
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._endpoint import Endpoint, Exchange
from ._faults import _check_number

__all__ = ["Endpoint", "IdempotentSink", "RangedFile", "ServedRange"]

#: Bytes per write of a streamed file body; writes pause while the transport's buffer is full.
WRITE_CHUNK = 256 * 1024
# The content repeats with this period: a prime length, so that no power-of-two slice of two
# versions (which start the period at different offsets) is equal.
_PERIOD = 1_048_583
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
# Last-Modified of version 0: a fixed date, one second later per version.
_EPOCH = 1_700_000_000


@dataclass(frozen=True, slots=True)
class ServedRange:
    """One answer of a :class:`RangedFile`.

    Attributes:
        status: ``200``, ``206`` or ``416``.
        start: First byte offset of the body sent.
        end: One past the last byte the answer promised.
        sent: Body bytes written before the response ended or was cut.
        version: The file's version when it answered.
        range_header: The request's ``Range`` header, if any.
        if_range: The request's ``If-Range`` header, if any.
        cut: ``"fin"`` or ``"rst"`` when the response was cut, else ``None``.
    """

    status: int
    start: int
    end: int
    sent: int
    version: int
    range_header: str | None
    if_range: str | None
    cut: str | None


def _header(conn: Exchange, name: str) -> str | None:
    lname = name.lower()
    for key, value in conn.headers:
        if key.lower() == lname:
            return value
    return None


class RangedFile:
    """A file of ``size`` pseudo-random bytes, served with ranges and scriptable cuts.

    The content is a function of ``seed`` and :attr:`version`, so a test can compute what the
    client should have (:meth:`sha256`) without holding it, and :meth:`change` makes every byte
    differ from the old version's.

    Args:
        size: Bytes in the file.
        seed: Picks the content.
        etag: Send a strong ``ETag`` (``"seed-version"``).
        last_modified: Send ``Last-Modified`` (one second later per version).
        ranges: Honour ``Range``; ``False`` answers every request with the whole file, as a
            server without range support does (and sends no ``Accept-Ranges``).
        weak_etag: Send the ``ETag`` weak (``W/"..."``): a client must not use it in ``If-Range``.
        content_encoding: Send this ``Content-Encoding`` (``"gzip"``, say) with the bytes as they
            are, as Apache does for a ``.tar.gz`` and S3 for an object stored with that
            metadata: sizes and ranges count these bytes, and a client that decodes them gets
            other bytes (or, the content being random, a decoding error).

    Attributes:
        version: Bumped by :meth:`change`.
        served: One :class:`ServedRange` per answer, in order.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        etag: bool = True,
        last_modified: bool = True,
        ranges: bool = True,
        weak_etag: bool = False,
        content_encoding: str | None = None,
    ) -> None:
        _check_number("size", size, minimum=0, integer=True)
        self.size = size
        self.seed = seed
        self.etag_enabled = etag
        self.last_modified_enabled = last_modified
        self.ranges = ranges
        self.weak_etag = weak_etag
        self.content_encoding = content_encoding
        self.version = 0
        self.served: list[ServedRange] = []
        self._cuts: collections.deque[tuple[int, str]] = collections.deque()
        self._changes: collections.deque[int] = collections.deque()
        rng = random.Random(seed)
        block = rng.randbytes(_PERIOD)
        self._doubled = block + block

    # -- scripting -----------------------------------------------------------------------------

    def change(self) -> None:
        """Give the file new content, a new ``ETag`` and a later ``Last-Modified``."""
        self.version += 1

    def cut_after(self, *sent: int, how: Literal["fin", "rst"] = "fin") -> None:
        """Cut each of the next responses after this many body bytes, by FIN or RST."""
        if how not in ("fin", "rst"):
            raise ValueError(f"how must be 'fin' or 'rst', got {how!r}")
        for n in sent:
            _check_number("sent", n, minimum=0, integer=True)
            self._cuts.append((n, how))

    def change_after_cut(self, *numbers: int) -> None:
        """Call :meth:`change` right after the ``numbers``-th cut (1-based, counted from now)."""
        for n in numbers:
            _check_number("numbers", n, minimum=1, integer=True)
            self._changes.append(n)

    # -- content -------------------------------------------------------------------------------

    @property
    def etag(self) -> str:
        tag = f'"{self.seed}-{self.version}"'
        return "W/" + tag if self.weak_etag else tag

    @property
    def last_modified(self) -> str:
        return email.utils.formatdate(_EPOCH + self.version, usegmt=True)

    def read(self, start: int, end: int, version: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the file (of ``version``, the current one by default)."""
        shift = ((self.version if version is None else version) * 7919 + start) % _PERIOD
        out = bytearray()
        while len(out) < end - start:
            take = min(end - start - len(out), _PERIOD)
            out += self._doubled[shift : shift + take]
            shift = (shift + take) % _PERIOD
        return bytes(out)

    def chunks(self, version: int | None = None) -> Iterator[bytes]:
        """The whole file, in chunks of :data:`WRITE_CHUNK`."""
        for start in range(0, self.size, WRITE_CHUNK):
            yield self.read(start, min(start + WRITE_CHUNK, self.size), version)

    def sha256(self, version: int | None = None) -> str:
        """The hex SHA-256 of the file's content."""
        digest = hashlib.sha256()
        for chunk in self.chunks(version):
            digest.update(chunk)
        return digest.hexdigest()

    # -- Endpoint ------------------------------------------------------------------------------

    def received(self, conn: Exchange) -> None:
        pass

    def respond(self, conn: Exchange) -> None:
        range_header = _header(conn, "Range")
        if_range = _header(conn, "If-Range")
        start, end, status = 0, self.size, 200
        wanted = _RANGE.match(range_header.strip()) if range_header and self.ranges else None
        if wanted is not None and self._validator_matches(if_range):
            first = int(wanted.group(1))
            last = int(wanted.group(2)) + 1 if wanted.group(2) else self.size
            if first >= self.size:
                self._record(416, 0, 0, 0, range_header, if_range, None)
                headers = [("Content-Range", f"bytes */{self.size}"), *self._headers()]
                conn.write_simple(416, headers)
                return
            start, end, status = first, min(last, self.size), 206
        headers = self._headers()
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{self.size}"))
        cut = self._cuts.popleft() if self._cuts else None
        _Stream(self, conn, status, headers, start, end, cut, range_header, if_range).begin()

    def _validator_matches(self, if_range: str | None) -> bool:
        if if_range is None:
            return True
        if_range = if_range.strip()
        if if_range.startswith('"'):  # an entity tag: strong comparison only (RFC 9110 13.1.5)
            return self.etag_enabled and not self.weak_etag and if_range == self.etag
        return self.last_modified_enabled and if_range == self.last_modified

    def _headers(self) -> list[tuple[str, str]]:
        headers = [("Content-Type", "application/octet-stream")]
        if self.ranges:
            headers.append(("Accept-Ranges", "bytes"))
        if self.etag_enabled:
            headers.append(("ETag", self.etag))
        if self.last_modified_enabled:
            headers.append(("Last-Modified", self.last_modified))
        if self.content_encoding is not None:
            headers.append(("Content-Encoding", self.content_encoding))
        return headers

    def _record(
        self,
        status: int,
        start: int,
        end: int,
        sent: int,
        range_header: str | None,
        if_range: str | None,
        cut: str | None,
    ) -> None:
        self.served.append(
            ServedRange(status, start, end, sent, self.version, range_header, if_range, cut)
        )
        if cut is not None and self._changes:
            self._changes = collections.deque(n - 1 for n in self._changes)
            if self._changes[0] == 0:
                self._changes.popleft()
                self.change()


class _Stream:
    """One streamed file response: writes while the transport takes more, then ends or cuts."""

    def __init__(
        self,
        file: RangedFile,
        conn: Exchange,
        status: int,
        headers: list[tuple[str, str]],
        start: int,
        end: int,
        cut: tuple[int, str] | None,
        range_header: str | None,
        if_range: str | None,
    ) -> None:
        self.file = file
        self.conn = conn
        self.status = status
        self.headers = headers
        self.start = start
        self.end = end
        self.stop = end if cut is None else min(end, start + cut[0])
        self.cut = None if cut is None or self.stop >= end else cut[1]
        self.pos = start
        self.version = file.version
        self.range_header = range_header
        self.if_range = if_range

    def begin(self) -> None:
        conn = self.conn
        close = not conn.keep_alive
        conn.start_stream(self, self.status, self.headers, self.end - self.start, close=close)
        if conn.head_only:
            self.stop = self.pos
        self.pump()

    def pump(self) -> None:
        """Write until the transport is full (resumed by ``resume_writing``) or the end."""
        conn = self.conn
        while self.pos < self.stop:
            if conn.writing_paused or conn.transport is None:
                return
            n = min(WRITE_CHUNK, self.stop - self.pos)
            conn.transport.write(self.file.read(self.pos, self.pos + n, self.version))
            self.pos += n
        self.file._record(
            self.status,
            self.start,
            self.end,
            self.pos - self.start,
            self.range_header,
            self.if_range,
            self.cut,
        )
        conn.end_stream(self.cut)


class IdempotentSink:
    """A batch endpoint that applies each ``Idempotency-Key`` once, as payment APIs do.

    A request's body is JSON (an array of items) or JSON lines, gzip-compressed when it says
    ``Content-Encoding: gzip``. The first request with a key applies its items (each item's
    ``key_field`` value is counted in :attr:`applied`) and answers ``201`` with
    ``{"applied": n}``; a request with a key already applied answers the same, applies nothing
    and is counted in :attr:`replays`. A request without the header is applied every time.

    Args:
        key_field: The item field counted in :attr:`applied`; items without it count by their
            JSON text.
        header: The idempotency header's name.

    Attributes:
        applied: How many times each item was applied: exactly once each is the goal.
        batches: Applied batches, by key, with their item counts.
        replays: Requests that carried an already applied key.
        bad: Requests whose body could not be decoded (answered ``400``).
    """

    def __init__(self, *, key_field: str = "id", header: str = "Idempotency-Key") -> None:
        self.key_field = key_field
        self.header = header
        self.applied: collections.Counter[Any] = collections.Counter()
        self.batches: dict[str, int] = {}
        self.replays = 0
        self.bad = 0

    def received(self, conn: Exchange) -> None:
        key = _header(conn, self.header)
        if key is not None and key in self.batches:
            self.replays += 1
            conn.endpoint_answer = (201, {"applied": self.batches[key], "replay": True})
            return
        try:
            items = _decode(
                bytes(conn.body),
                _header(conn, "Content-Encoding"),
                _header(conn, "Content-Type"),
            )
        except ValueError as exc:
            self.bad += 1
            conn.endpoint_answer = (400, {"error": str(exc)})
            return
        for item in items:
            if isinstance(item, Mapping) and self.key_field in item:
                self.applied[item[self.key_field]] += 1
            else:
                self.applied[json.dumps(item, sort_keys=True)] += 1
        if key is not None:
            self.batches[key] = len(items)
        conn.endpoint_answer = (201, {"applied": len(items)})

    def respond(self, conn: Exchange) -> None:
        status, answer = conn.endpoint_answer or (500, {"error": "no body"})
        conn.write_simple(
            status, [("Content-Type", "application/json")], json.dumps(answer).encode()
        )


def _decode(body: bytes, encoding: str | None, content_type: str | None) -> list[Any]:
    if encoding is not None and encoding.strip().lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise ValueError(f"bad gzip body: {exc}") from exc
    try:
        text = body.decode()
        ctype = (content_type or "").lower()
        if "ndjson" in ctype or "jsonl" in ctype:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        items = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bad JSON body: {exc}") from exc
    if not isinstance(items, list):
        raise ValueError("the body is not a JSON array")
    return items
