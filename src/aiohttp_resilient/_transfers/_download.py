"""download(): a large response streamed to a file, resumed after cuts with Range and If-Range.

The session's middleware retries each request that fails before its body starts (with the
session's policy, host health and deadline); once the body streams, a cut is this module's to
absorb: it asks for the rest with ``Range: bytes=N-`` and ``If-Range: <validator>``, so that a file
that changed on the server comes back whole (``200``) instead of being stitched from two versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiohttp import hdrs
from yarl import URL

from .._exceptions import DownloadError
from .._health._limiter import host_key
from .._retry._middleware import session_policy, use_policy
from .._retry._policy import _check_int, compute_delay
from .._util._log import log_fields, logger
from .._util._redact import redact_url

__all__ = ["DownloadError", "DownloadResult", "ProgressHook", "download"]

#: Bytes read from the response and written to the part file at a time: the memory a download
#: holds beyond aiohttp's own read buffer.
DEFAULT_CHUNK_SIZE = 256 * 1024
#: Cuts absorbed in one call; a body that keeps being cut after this many is an error.
DEFAULT_MAX_RESUMES = 50
_SIDECAR_VERSION = 1
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")
# Failures of a body that was streaming: the connection went (FIN, RST, idle timeout).
_CUTS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, asyncio.TimeoutError)

ProgressHook = Callable[[int, "int | None"], "Awaitable[None] | None"]


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What :func:`download` did.

    Attributes:
        path: The complete file.
        size: Its size in bytes.
        sha256: Its SHA-256, hex.
        requests: Requests that got a response (each may have been retried by the session).
        resumes: Requests that continued a part file with a range (across processes too).
        restarts: Times the part file was thrown away because the server sent the whole file.
        cuts: Times the body was cut while streaming.
        size_verified: Whether the file is known to be whole. ``False`` only when the server
            gave no size (no ``Content-Length``, no ``Content-Range`` total), did not frame the
            body (not chunked) so that only the connection closing ended it, and no ``sha256``
            was given: a cut there looks exactly like the end, so the file may be truncated
            (a warning is logged too). Pass ``sha256`` to be sure.
    """

    path: Path
    size: int
    sha256: str
    requests: int
    resumes: int
    restarts: int
    cuts: int
    size_verified: bool


@dataclass(slots=True)
class _State:
    """The part file's identity, as kept in the sidecar next to it."""

    url: str
    validator: str | None
    size: int | None

    def dump(self) -> str:
        return json.dumps(
            {"v": _SIDECAR_VERSION, "url": self.url, "validator": self.validator, "size": self.size}
        )

    @classmethod
    def load(cls, text: str) -> _State | None:
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("v") != _SIDECAR_VERSION:
            return None
        url, validator, size = data.get("url"), data.get("validator"), data.get("size")
        if not isinstance(url, str) or not isinstance(validator, (str, type(None))):
            return None
        if not (size is None or (isinstance(size, int) and size >= 0)):
            return None
        return cls(url, validator, size)


def _validator(resp: aiohttp.ClientResponse) -> str | None:
    """The response's validator usable in If-Range: a strong ETag, else Last-Modified."""
    etag = resp.headers.get(hdrs.ETAG)
    if etag is not None and etag.startswith('"'):  # W/"..." is weak: RFC 9110 forbids it there
        return etag
    return resp.headers.get(hdrs.LAST_MODIFIED)


class _Download:
    """One call of :func:`download`: the part file, its sidecar, and the resume loop."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str | URL,
        path: Path,
        *,
        sha256: str | None,
        chunk_size: int,
        max_resumes: int,
        progress: ProgressHook | None,
        headers: dict[str, str],
    ) -> None:
        self.session = session
        self.url = URL(url)
        self.shown = redact_url(self.url)
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.sidecar = path.with_name(path.name + ".part.json")
        self.sha256 = sha256
        self.chunk_size = chunk_size
        self.max_resumes = max_resumes
        self.progress = progress
        self.headers = headers
        # The session's policy with body buffering off: the body must stream, not be read whole.
        policy = session_policy(session)
        self.policy = None if policy is None else policy.replace(buffer_body=False)
        self.state = _State(self.shown, None, None)
        self.offset = 0
        # The furthest the part file got in this call: a cut counts as progress only past it, so
        # a server that ignores ranges and cuts at the same byte each time makes none.
        self.reached = 0
        self.digest = hashlib.sha256()
        self.requests = self.resumes = self.restarts = self.cuts = 0
        # The last body had neither a length nor chunked framing: only the closing connection
        # ended it, and a cut would have looked the same.
        self.ended_by_close = False

    def error(self, message: str) -> DownloadError:
        return DownloadError(message, url=self.shown, path=self.path)

    # -- the part file -------------------------------------------------------------------------

    def load_part(self) -> None:
        """Continue a part file left by an earlier call whose sidecar still describes it."""
        try:
            state = _State.load(self.sidecar.read_text())
            size = self.part.stat().st_size
        except OSError:
            return
        if state is None or state.url != self.shown or state.validator is None:
            return
        if state.size is not None and size > state.size:
            return
        self.state = state
        self.offset = self.reached = size
        with self.part.open("rb") as f:
            for block in iter(lambda: f.read(1024 * 1024), b""):
                self.digest.update(block)

    def save_state(self) -> None:
        tmp = self.sidecar.with_name(self.sidecar.name + ".tmp")
        tmp.write_text(self.state.dump())
        os.replace(tmp, self.sidecar)

    def discard(self) -> None:
        for file in (self.part, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> DownloadResult:
        self.load_part()
        stalls = 0
        while True:
            if self.state.size is not None and self.offset == self.state.size and self.offset:
                return self.finish()
            try:
                done = await self.one_request()
            except _Cut as cut:
                self.cuts += 1
                stalls = 0 if cut.progressed else stalls + 1
                attempts = self.policy.attempts if self.policy is not None else 1
                if self.cuts > self.max_resumes or stalls >= attempts:
                    why = "without progress" if stalls >= attempts else "too often"
                    raise self.error(
                        f"the body was cut {self.cuts} times ({why}); {self.offset} bytes kept "
                        f"in {self.part.name} for a later call"
                    ) from cut.__cause__
                if stalls and self.policy is not None:
                    await asyncio.sleep(compute_delay(self.policy, stalls))
                continue
            if done:
                return self.finish()

    async def one_request(self) -> bool:
        """One ranged (or whole) GET streamed into the part file; True when the body ended."""
        headers = dict(self.headers)
        headers[hdrs.ACCEPT_ENCODING] = "identity"  # ranges count stored bytes
        resuming = self.offset > 0 and self.state.validator is not None
        if resuming:
            headers[hdrs.RANGE] = f"bytes={self.offset}-"
            headers[hdrs.IF_RANGE] = self.state.validator  # type: ignore[assignment]
        with use_policy(self.policy) if self.policy is not None else contextlib.nullcontext():
            # The bytes as sent, never decoded: Content-Length, Content-Range and Range count
            # them, and a file served with Content-Encoding (a .tar.gz on Apache, an S3 object
            # stored with that metadata) is those bytes.
            async with self.session.get(self.url, headers=headers, auto_decompress=False) as resp:
                self.requests += 1
                if resp.status == 416:
                    self.check_416(resp, resuming)
                    return True  # the part file is the whole file
                with self.open_for(resp, resuming) as file:
                    return await self.stream(resp, file)

    @contextlib.contextmanager
    def open_for(self, resp: aiohttp.ClientResponse, resuming: bool) -> Iterator[IO[bytes]]:
        """Check the answer against the part file, then open the part file where it continues."""
        status = resp.status
        if status == 206:
            self.check_range(resp, resuming)
            self.resumes += 1
            mode = "ab"
        elif status == 200:
            if self.offset:
                self.restarts += 1  # the server ignores ranges, or the file changed
            self.offset = 0
            self.digest = hashlib.sha256()
            self.state = _State(self.shown, _validator(resp), resp.content_length)
            mode = "wb"
        else:
            resp.raise_for_status()
            raise self.error(f"unexpected status {status} {resp.reason}")
        self.save_state()
        with self.part.open(mode) as file:
            yield file

    def check_416(self, resp: aiohttp.ClientResponse, resuming: bool) -> None:
        """Accept a 416 that says the part file already holds the whole file, else raise.

        A body of unknown size cut after its last byte (a chunked response whose end never came)
        is resumed at its end, and a server answers ``bytes=N-`` with ``416 bytes */N``.
        """
        content_range = resp.headers.get(hdrs.CONTENT_RANGE, "")
        match = _UNSATISFIED_RANGE.match(content_range.strip())
        validator = _validator(resp)
        if (
            resuming
            and match is not None
            and int(match[1]) == self.offset
            and self.state.size in (None, self.offset)
            and validator in (None, self.state.validator)
        ):
            self.state.size = self.offset
            return
        self.discard()
        raise self.error(
            f"the server refused the range bytes={self.offset}- with 416 (its size is "
            f"{content_range or 'not given'}); the part file was removed: call again to start "
            "over"
        )

    def check_range(self, resp: aiohttp.ClientResponse, resuming: bool) -> None:
        content_range = resp.headers.get(hdrs.CONTENT_RANGE, "")
        match = _CONTENT_RANGE.match(content_range.strip())
        if not resuming or match is None:
            raise self.error(
                f"206 with Content-Range {content_range!r} to a request for "
                + (f"bytes={self.offset}-" if resuming else "the whole file")
            )
        first, last, total = int(match[1]), int(match[2]), match[3]
        size = self.state.size if total == "*" else int(total)
        if first != self.offset or (self.state.size is not None and size != self.state.size):
            raise self.error(
                f"asked for bytes={self.offset}- of {self.state.size} bytes, the server sent "
                f"Content-Range {content_range!r}"
            )
        if size is not None and last + 1 != size:
            raise self.error(f"the server sent a partial range {content_range!r}; the rest is due")
        validator = _validator(resp)
        if validator is not None and validator != self.state.validator:
            raise self.error(
                f"206 for validator {self.state.validator!r} carries {validator!r}: "
                "the server mixed two versions of the file"
            )
        self.state.size = size

    async def stream(self, resp: aiohttp.ClientResponse, file: IO[bytes]) -> bool:
        reached = self.reached
        self.ended_by_close = (
            resp.content_length is None
            and "chunked" not in resp.headers.get(hdrs.TRANSFER_ENCODING, "").lower()
        )
        try:
            async for chunk in resp.content.iter_chunked(self.chunk_size):
                file.write(chunk)
                self.digest.update(chunk)
                self.offset += len(chunk)
                if self.progress is not None:
                    result = self.progress(self.offset, self.state.size)
                    if inspect.isawaitable(result):
                        await result
        except _CUTS as exc:
            self.reached = max(reached, self.offset)
            raise _Cut(progressed=self.offset > reached) from exc
        return True

    def finish(self) -> DownloadResult:
        size = self.part.stat().st_size
        if self.state.size is not None and size != self.state.size:
            self.discard()
            raise self.error(f"got {size} bytes, the server announced {self.state.size}")
        digest = self.digest.hexdigest()
        if self.sha256 is not None and digest != self.sha256.lower():
            self.discard()
            raise self.error(f"SHA-256 {digest} does not match the expected {self.sha256}")
        verified = self.sha256 is not None or self.state.size is not None or not self.ended_by_close
        if not verified:
            logger.warning(
                "download of %s: the server gave no size and the body ended with the "
                "connection; the %d bytes saved in %s may be truncated (pass sha256= to verify)",
                self.shown,
                size,
                self.path,
                extra=log_fields(
                    "download_unverified", "GET", self.shown, host_key(self.url), size=size
                ),
            )
        os.replace(self.part, self.path)
        with contextlib.suppress(FileNotFoundError):
            self.sidecar.unlink()
        return DownloadResult(
            path=self.path,
            size=size,
            sha256=digest,
            requests=self.requests,
            resumes=self.resumes,
            restarts=self.restarts,
            cuts=self.cuts,
            size_verified=verified,
        )


class _Cut(Exception):
    def __init__(self, *, progressed: bool) -> None:
        super().__init__()
        self.progressed = progressed


def _target(path: str | os.PathLike[str]) -> Path:
    target = Path(os.fspath(path))
    if not target.name or target.name in (".", ".."):
        raise ValueError(f"path must name a file, got {os.fspath(path)!r}")
    if target.is_dir():
        raise ValueError(f"path must name a file, got the directory {os.fspath(path)!r}")
    if not target.parent.is_dir():
        raise ValueError(f"path's directory does not exist: {str(target.parent)!r}")
    return target


async def download(
    session: aiohttp.ClientSession,
    url: str | URL,
    path: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    max_resumes: int = DEFAULT_MAX_RESUMES,
    progress: ProgressHook | None = None,
    headers: dict[str, str] | None = None,
) -> DownloadResult:
    """Download ``url`` to ``path``, resuming after cuts, and verify it.

    The body streams to ``path + ".part"`` (``chunk_size`` bytes in memory at a time) and is
    renamed to ``path`` once complete and verified. After a cut (FIN, RST, read timeout) the rest
    is asked for with ``Range: bytes=N-`` and ``If-Range`` carrying the strong ``ETag`` (else
    ``Last-Modified``): a ``206`` must answer with the matching ``Content-Range``; a ``200`` (the
    server ignores ranges, or the file changed) restarts from byte 0. A small sidecar
    (``path + ".part.json"``: validator, URL without credentials, size) lets a later call, in
    another process, continue the part file; one that no longer matches starts over. Only these
    three files, all in ``path``'s directory, are written. The file is saved as the server sends
    it: a ``Content-Encoding`` (gzip, say) is not decoded, since sizes and ranges count its bytes.

    A body with neither a size nor chunked framing ends when the server closes the connection,
    and a cut there looks the same as the end: such a file is still saved, but
    :attr:`DownloadResult.size_verified` is ``False`` and a warning is logged, unless ``sha256``
    was given and matched.

    Requests go through the session: with :func:`resilient_session` its policy, host health and
    deadline apply to each request (buffering is turned off for them, so that the body streams);
    consecutive cuts without a byte of progress (past the furthest byte this call had reached:
    a server that ignores ranges and cuts at the same place each time makes none) are waited on
    with its backoff and end the call after its ``attempts``.

    Usage::

        async with resilient_session() as session:
            result = await download(session, url, "data/big.iso", sha256=expected)

    Args:
        session: Any ``aiohttp.ClientSession``; a resilient one retries each request.
        url: What to download.
        path: Where the file goes; its directory must exist.
        sha256: The expected SHA-256 (hex); a mismatch removes the file and raises.
        chunk_size: Bytes read and written at a time.
        max_resumes: Cuts absorbed in one call before giving up (the part file stays).
        progress: Called with (bytes so far, total or None) after each chunk; may be async.
        headers: Extra request headers (``Range``, ``If-Range`` are the download's own).

    Raises:
        ValueError: A bad argument (named).
        DownloadError: ``416`` (unless its ``Content-Range: bytes */N`` says the part file's
            ``N`` bytes are the whole file: then it is finished and verified), a ``206`` that
            does not fit the part file, a size or checksum mismatch, or too many cuts; the
            message says which.
        aiohttp.ClientError: What the session raised (a give-up, a status error).
    """
    target = _target(path)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    _check_int("chunk_size", chunk_size, minimum=1)
    _check_int("max_resumes", max_resumes, minimum=1)
    if progress is not None and not callable(progress):
        raise ValueError(f"progress must be callable, got {progress!r}")
    extra: dict[str, Any] = dict(headers or {})
    for own in (hdrs.RANGE, hdrs.IF_RANGE):
        if any(name.lower() == own.lower() for name in extra):
            raise ValueError(f"headers must not set {own}: download() sets it")
    return await _Download(
        session,
        url,
        target,
        sha256=sha256,
        chunk_size=chunk_size,
        max_resumes=max_resumes,
        progress=progress,
        headers=extra,
    ).run()
