"""upload_batches(): items POSTed as bounded JSON batches, halved when the server says "too big".

Each batch carries an ``Idempotency-Key`` derived from the upload's id, the batch's position in the
stream and its bytes, which makes the session's middleware retry it like an idempotent request (see
``RetryPolicy.idempotency_header``): a batch that may have reached the server is sent again with the
same key, never outside its own retries, and two batches with the same bytes never share one.
A ``413``, or a reset that came before the body was written whole, means the batch may be too big
for the server: it is halved (down to one item, which is then reported, not dropped). Later batches
are built no larger than half of what was refused only when the size is the likely cause: a
``413``, or a reset that repeats (see :meth:`_Uploader.shrink`), not one reset of a flaky link.
"""

from __future__ import annotations

import gzip as gzip_module
import hashlib
import json
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from yarl import URL

from .._exceptions import RetriesExhaustedError
from .._retry._classify import Verdict, classify
from .._retry._middleware import session_policy
from .._retry._policy import DEFAULT_IDEMPOTENCY_HEADER, _check_int

__all__ = ["FailedBatch", "UploadReport", "upload_batches"]

#: Items per batch by default.
DEFAULT_MAX_ITEMS = 1000
#: Bytes per batch body (before compression) by default: under nginx's default
#: ``client_max_body_size`` of 1 MiB, with room for headers.
DEFAULT_MAX_BYTES = 1_000_000
_CONTENT_TYPES = {"json": "application/json", "jsonl": "application/x-ndjson"}


@dataclass(frozen=True, slots=True)
class FailedBatch:
    """Items the server did not take, and why.

    Attributes:
        first: Position of the first item in the input (0-based).
        items: The items themselves, so that the caller can send them again or inspect them.
        reason: What happened, in words.
        status: The server's status, when it answered.
        error: The exception, when the request failed without an answer.
    """

    first: int
    items: tuple[Any, ...]
    reason: str
    status: int | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class UploadReport:
    """What :func:`upload_batches` did.

    Attributes:
        batches_sent: Batches the server accepted (2xx).
        items_sent: Items in them.
        splits: Batches halved because the server found them too big.
        failed: Batches (or single items) not delivered, with their errors.
        stopped: The upload stopped at the first failure (``stop_on_failure``); items after it
            were not read.
        max_bytes: The batch size in bytes the upload ended with (lowered by a ``413``, or by
            resets that repeat).
    """

    batches_sent: int = 0
    items_sent: int = 0
    splits: int = 0
    failed: list[FailedBatch] = field(default_factory=list)
    stopped: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def items_failed(self) -> int:
        """Items in :attr:`failed`."""
        return sum(len(batch.items) for batch in self.failed)

    @property
    def ok(self) -> bool:
        """Every item was delivered."""
        return not self.failed and not self.stopped


class _Body(Payload):
    """A bytes body that remembers whether any attempt handed all of it to the connection.

    aiohttp's ``BytesPayload`` warns on bodies over 1 MiB; this one is made for them, and is
    re-sent intact by each retry.
    """

    _value: bytes

    def __init__(self, value: bytes, content_type: str) -> None:
        super().__init__(value, content_type=content_type)
        self._size = len(value)
        self.written = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._value.decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        value = self._value if content_length is None else self._value[:content_length]
        await writer.write(value)
        self.written = True


class _TooBig(Exception):
    """The server refused the batch with a 413, or reset the connection before it was sent."""

    def __init__(self, why: str, *, resets: int = 0) -> None:
        super().__init__(why)
        self.resets = resets  # attempts of this body ended by a reset (0: a 413)


def _resets(exc: aiohttp.ClientError) -> int:
    """How many attempts of the request ``exc`` ended were reset (the session may have retried)."""
    if not isinstance(exc, RetriesExhaustedError):
        return 1
    count = sum(
        1
        for attempt in exc.history
        if attempt.error is not None and classify(attempt.error) is Verdict.MAYBE_SENT
    )
    return max(count, 1)


class _Uploader:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: URL,
        *,
        max_items: int,
        max_bytes: int,
        fmt: Literal["json", "jsonl"],
        gzip: bool,
        stop_on_failure: bool,
        headers: dict[str, str],
        upload_id: str,
    ) -> None:
        self.session = session
        self.upload_id = upload_id
        self.url = url
        self.max_items = max_items
        self.fmt = fmt
        self.gzip = gzip
        self.stop_on_failure = stop_on_failure
        self.headers = headers
        self.report = UploadReport(max_bytes=max_bytes)
        # The smallest body reset once, while no body that large has been accepted since.
        self.reset_size: int | None = None
        self.key_header = _key_header(session)

    def frame_size(self, sizes: int, count: int) -> int:
        """Body bytes of ``count`` items whose encodings add up to ``sizes``."""
        if self.fmt == "json":
            return sizes + max(count - 1, 0) + 2  # "[" a "," b "]"
        return sizes + count  # one "\n" per item

    def body(self, encoded: list[bytes]) -> bytes:
        if self.fmt == "json":
            return b"[" + b",".join(encoded) + b"]"
        return b"".join(item + b"\n" for item in encoded)

    async def run(self, items: Iterable[Any] | AsyncIterable[Any]) -> UploadReport:
        batch: list[Any] = []
        encoded: list[bytes] = []
        sizes = 0
        first = 0
        index = -1
        async for index, item in _enumerate(items):
            try:
                data = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"items[{index}] cannot be encoded as JSON ({exc}); "
                    f"{self.report.items_sent} items were sent before it"
                ) from exc
            full = len(batch) >= self.max_items or (
                batch and self.frame_size(sizes + len(data), len(batch) + 1) > self.report.max_bytes
            )
            if full:
                if not await self.send(first, batch, encoded):
                    return self.report
                batch, encoded, sizes, first = [], [], 0, index
            batch.append(item)
            encoded.append(data)
            sizes += len(data)
        if batch:
            await self.send(first, batch, encoded)
        return self.report

    async def send(self, first: int, batch: list[Any], encoded: list[bytes]) -> bool:
        """Deliver one batch, halving it while the server finds it too big; False to stop."""
        body = self.body(encoded)
        try:
            failure = await self.post(body, first)
        except _TooBig as too_big:
            self.shrink(too_big, len(body))
            if len(batch) == 1:
                failure = FailedBatch(first, tuple(batch), f"too big on its own: {too_big}")
            else:
                self.report.splits += 1
                half = len(batch) // 2
                return await self.send(first, batch[:half], encoded[:half]) and await self.send(
                    first + half, batch[half:], encoded[half:]
                )
        if failure is None:
            if self.reset_size is not None and len(body) >= self.reset_size:
                self.reset_size = None  # that size went through: the reset was not about size
            self.report.batches_sent += 1
            self.report.items_sent += len(batch)
            return True
        if failure.first < 0:  # filled in here: post() does not know the items
            failure = FailedBatch(
                first, tuple(batch), failure.reason, failure.status, failure.error
            )
        self.report.failed.append(failure)
        if self.stop_on_failure:
            self.report.stopped = True
            return False
        return True

    def shrink(self, refusal: _TooBig, size: int) -> None:
        """Lower later batches' size after a refusal of ``size`` bytes, when size is the cause.

        A 413 says so. A reset while sending may be a body limit (some servers and proxies
        answer one by resetting) or a flaky link, and only a repeat tells them apart: the same
        body reset on every attempt the session made (two or more: its middleware retries a
        batch, the Idempotency-Key making it idempotent), or a reset of a body at least as big as
        an earlier reset one, with no body that big accepted in between. A single reset costs
        its batch a split and leaves later batches alone.
        """
        if refusal.resets == 0 or refusal.resets >= 2:
            cap = size // 2
        elif self.reset_size is not None and size >= self.reset_size:
            cap = self.reset_size // 2
        else:
            self.reset_size = size if self.reset_size is None else min(self.reset_size, size)
            return
        self.reset_size = None
        self.report.max_bytes = max(1, min(self.report.max_bytes, cap))

    def key(self, raw: bytes, first: int) -> str:
        """The batch's Idempotency-Key: its upload, its first item's position, its bytes.

        The bytes alone would give equal batches (repeated rows; the halves of a split batch of
        repeated rows) one key, and a server that applies keys once would drop all but the first.
        """
        digest = hashlib.sha256(f"{self.upload_id}\n{first}\n".encode())
        digest.update(raw)
        return digest.hexdigest()[:32]

    async def post(self, raw: bytes, first: int) -> FailedBatch | None:
        """POST one body; None when accepted, a FailedBatch (items unknown) when not.

        Raises:
            _TooBig: 413, or a reset before the body was written whole.
        """
        headers = dict(self.headers)
        # From the uncompressed bytes: a retry, the plain re-send after a 415, or a later run
        # with the same upload_id over the same items carries the same key.
        headers[self.key_header] = self.key(raw, first)
        data = raw
        if self.gzip:
            headers[hdrs.CONTENT_ENCODING] = "gzip"
            data = gzip_module.compress(raw, compresslevel=5)
        payload = _Body(data, _CONTENT_TYPES[self.fmt])
        try:
            async with self.session.post(
                self.url, data=payload, headers=headers, expect100=True
            ) as resp:
                status, reason = resp.status, resp.reason
                if status == 413:
                    raise _TooBig(f"413 for {len(data)} bytes")
                no_gzip = status == 415 and self.gzip
                if not no_gzip:
                    await resp.read()
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            if not payload.written and classify(cause) is Verdict.MAYBE_SENT:
                # The connection went while the body was being sent: the server cannot have
                # taken it, and a server that resets oversized uploads looks exactly like this.
                resets = _resets(exc)
                times = f" ({resets} attempts)" if resets > 1 else ""
                raise _TooBig(
                    f"connection reset while sending {len(data)} bytes{times}", resets=resets
                ) from exc
            return FailedBatch(-1, (), str(exc) or type(exc).__name__, error=exc)
        if no_gzip:
            # The server does not take gzip: plain from now on. Sent once the 415 is released,
            # not inside its block: until then its connection (a chunked body may still be on
            # its way) holds a slot of the host, the only one under limit_per_host=1.
            self.gzip = False
            return await self.post(raw, first)
        if status < 300:
            return None
        return FailedBatch(-1, (), f"{status} {reason}", status=status)


def _key_header(session: aiohttp.ClientSession) -> str:
    """The header that makes the session's middleware treat a POST as idempotent."""
    policy = session_policy(session)
    header = None if policy is None else policy.idempotency_header
    return header or DEFAULT_IDEMPOTENCY_HEADER


async def _enumerate(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield index, item
            index += 1
    else:
        for item in items:
            yield index, item
            index += 1


async def upload_batches(
    session: aiohttp.ClientSession,
    url: str | URL,
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    max_items: int = DEFAULT_MAX_ITEMS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    format: Literal["json", "jsonl"] = "json",
    gzip: bool = False,
    stop_on_failure: bool = False,
    headers: dict[str, str] | None = None,
    upload_id: str | None = None,
) -> UploadReport:
    """POST ``items`` to ``url`` in batches, halving a batch the server finds too big.

    Items are read lazily (a sync iterable or an async iterator of any length: one batch is held
    at a time), encoded as JSON, and sent as a JSON array (``format="json"``) or JSON lines
    (``"jsonl"``) of at most ``max_items`` items and ``max_bytes`` bytes, gzip-compressed with
    ``gzip=True`` (a ``415`` answer turns compression off for the rest). Every batch carries an
    ``Idempotency-Key`` derived from ``upload_id``, the position of its first item in ``items``
    and its bytes, so the session's middleware retries it safely (a server that applies keys once
    applies it once) and equal batches (repeated items) still get keys of their own. On ``413``,
    or a reset while the body was being sent, the batch is halved and each half sent, down to
    single items; one item still too big is reported in :attr:`UploadReport.failed`, never
    dropped silently. Other failures (statuses, retries exhausted) are reported per batch;
    ``stop_on_failure=True`` stops at the first one.

    Later batches are built no larger than half of a refused one after a ``413``, or after a
    reset that repeats: on every attempt the session made for that batch (two or more), or on a
    batch at least as big as one reset earlier with none that big accepted since. A single reset
    (a flaky link, not a limit) splits its batch and leaves later batches alone.

    Requests carry ``Expect: 100-continue``, so a server that refuses the size does so before
    the body is sent.

    Usage::

        async with resilient_session() as session:
            report = await upload_batches(session, url, rows, max_bytes=512_000)
        if not report.ok:
            for batch in report.failed: ...

    Args:
        upload_id: Names this upload in the batches' keys; a random one per call by default, so
            two calls never share keys. Pass the same ``upload_id`` to a re-run over the same
            items (after a crash, say) to send the same keys again: batches the server already
            applied are then not applied twice. Batches come out the same as long as the items,
            ``max_items``, ``max_bytes``, ``format`` and the server's size limit are the same.

    Raises:
        ValueError: A bad argument (named), or an item that cannot be encoded as JSON.
    """
    _check_int("max_items", max_items, minimum=1)
    _check_int("max_bytes", max_bytes, minimum=1)
    if format not in _CONTENT_TYPES:
        raise ValueError(f"format must be 'json' or 'jsonl', got {format!r}")
    if not isinstance(items, (Iterable, AsyncIterable)) or isinstance(items, (str, bytes, dict)):
        raise ValueError(f"items must be an iterable of items, got {type(items).__name__}")
    extra = dict(headers or {})
    for own in dict.fromkeys((DEFAULT_IDEMPOTENCY_HEADER, _key_header(session))):
        if any(name.lower() == own.lower() for name in extra):
            raise ValueError(f"headers must not set {own}: each batch gets its own")
    if upload_id is None:
        upload_id = secrets.token_hex(16)
    elif not isinstance(upload_id, str) or not upload_id:
        raise ValueError(f"upload_id must be a non-empty string, got {upload_id!r}")
    return await _Uploader(
        session,
        URL(url),
        max_items=max_items,
        max_bytes=max_bytes,
        fmt=format,
        gzip=gzip,
        stop_on_failure=stop_on_failure,
        headers=extra,
        upload_id=upload_id,
    ).run(items)
