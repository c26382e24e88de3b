"""The keep-alive step: how long the server keeps an idle connection, measured.

One connection is held idle for growing gaps (1 s, 2 s, 4 s, ... within ``keepalive_max`` in
all), with a GET between two gaps. While idle, the probe reads: a FIN or RST from the server
ends the read at the moment the server gave up, which is the timeout to the millisecond. A
server (or middlebox) that drops a connection silently, or closes it just as a gap ends, shows
when the GET after that gap fails; then the timeout lies between the last gap that survived
and that one. A GET can also fail by chance (a server that drops a share of all requests): so
a failed GET is not believed at once: the probe opens a new connection and waits a longer gap
(a FIN in it is the timeout, to the millisecond; a GET that succeeds after it was the chance
failure), and only a second failure brackets the timeout. With a proxy, the connection is the
client's to the proxy (as the pool's would be), and what closes it is the proxy. The GETs go
over a raw stream (the pool would hide the close by opening a new connection).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import ssl
import time
from typing import Any

from yarl import URL

from ..._session import PRESETS, _tls_context, default_user_agent
from ..._util._redact import redact_url
from ._model import BODY_READ_CAP, DiagnoseConfig, Step, Stopwatch, Verdict, diagnose_command
from ._network import open_stream

__all__ = ["probe_keepalive", "suggested_keepalive"]

#: The client's pool keeps connections at most this share of the server's idle timeout, so it
#: lets go first even when a request is in flight as the timer runs out.
KEEPALIVE_SHARE = 0.75
#: New connections a run may open after a failure it does not believe yet (a first request that
#: failed, or a GET after a gap): a server dropping 5% of requests fails 3 in a row 1 in 8000.
RETRIES = 3
#: After a failed GET, the gap is measured again this much longer: a server that closes just as
#: the gap ends shows its FIN inside the longer one.
RETRY_WIDEN = 1.5
#: A gap this much short of the pool's idle time still counts as as long (a gap ends when the
#: time left to the run ends, microseconds short of it).
GAP_SLACK = 0.01


class _ConnectionClosed(Exception):
    """The connection was closed (or reset) while the probe used it."""


class _TooLarge(Exception):
    """The response body goes on past :data:`BODY_READ_CAP`: not read, so the connection
    cannot carry another request."""


#: Bodies are read in pieces of this size and dropped.
_READ_CHUNK = 64 * 1024
#: What a request on the probe's connection may fail with.
_FAILURES = (_ConnectionClosed, OSError, asyncio.TimeoutError, ValueError)


def _why(exc: BaseException, timeout: float) -> str:
    """A failure in words (no private class names)."""
    if isinstance(exc, _ConnectionClosed):
        return "the connection was closed before the response ended"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no response within {timeout:g} s"
    if isinstance(exc, ValueError):
        return "the response could not be parsed as HTTP/1.1"
    return f"{type(exc).__name__}: {exc}"


def suggested_keepalive(server_timeout: float) -> float:
    """The ``keepalive_timeout`` that lets the client let go first: 3/4 of the server's,
    rounded to tenths of a second (so 1.99 s measured for a 2 s timeout still gives 1.5)."""
    return max(0.1, round(server_timeout * KEEPALIVE_SHARE, 1))


@dataclasses.dataclass(slots=True, eq=False)
class _Conn:
    """The probe's connection: direct to ``address``, or to the proxy; reopened on demand."""

    config: DiagnoseConfig
    address: str
    method: str = "GET"
    requests: int = 0
    retries: int = 0
    version: str = "HTTP/1.1"
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def open(self) -> bool:
        """A new connection and its first request (HEAD if the body is too large to read at
        every gap); returns whether the server keeps the connection. A failure that may be
        chance is tried again on another connection, up to :data:`RETRIES` in a run."""
        while True:
            await self.close()
            try:
                self.reader, self.writer = await self._connect()
                try:
                    return await self.exchange()
                except _TooLarge:
                    # The idle timer starts when a response ends: a body not read to its end
                    # measures nothing. HEAD gets the same head, and servers time idle
                    # connections the same after it.
                    self.method = "HEAD"
            except _FAILURES:
                if self.retries >= RETRIES:
                    raise
                self.retries += 1

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        proxy = self.config.proxy
        if proxy is None:
            tls = _tls_context(self.config.ca_bundle) if self.config.tls else None
            return await open_stream(self.config, self.address, tls)
        url = URL(proxy)
        return await asyncio.wait_for(
            asyncio.open_connection(url.host, url.port), self.config.timeout
        )

    async def idle(self, gap: float) -> tuple[float, str | None]:
        """Idle ``gap`` seconds; returns the seconds idle and how the server closed (``FIN``,
        ``RST``), or ``None`` if it did not. Data on an idle connection raises ValueError."""
        assert self.reader is not None
        idle_from = time.monotonic()
        try:
            data = await asyncio.wait_for(self.reader.read(1), gap)
        except asyncio.TimeoutError:
            idle = time.monotonic() - idle_from
            return idle, "FIN" if self.reader.at_eof() else None  # a FIN just after the gap
        except OSError:
            return time.monotonic() - idle_from, "RST"
        if data:
            raise ValueError("the server sent data on an idle connection")
        return time.monotonic() - idle_from, "FIN"

    async def exchange(self) -> bool:
        """One request and its whole response; returns whether the connection stays open."""
        assert self.reader is not None
        assert self.writer is not None
        self.requests += 1
        self.writer.write(_request_head(self.config, self.method))
        await self.writer.drain()
        read = _read_response(self.reader, self.method == "HEAD")
        keep, self.version = await asyncio.wait_for(read, self.config.timeout)
        return keep

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.writer.wait_closed()
            self.reader = self.writer = None


def _request_head(config: DiagnoseConfig, method: str) -> bytes:
    """The request head; through a proxy, in absolute form with the proxy's credentials."""
    url = config.url
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port:
        host = f"{host}:{url.port}"
    target = url.raw_path_qs
    extra = ""
    if config.proxy is not None:
        target = f"{url.scheme}://{host}{url.raw_path_qs}"
        proxy = URL(config.proxy)
        if proxy.user is not None:
            secret = f"{proxy.user}:{proxy.password or ''}".encode()
            extra = f"Proxy-Authorization: Basic {base64.b64encode(secret).decode()}\r\n"
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{extra}"
        f"User-Agent: {default_user_agent()}\r\nAccept: */*\r\n\r\n"
    )
    return head.encode("latin-1")


async def probe_keepalive(config: DiagnoseConfig, address: str) -> Step:
    """Measure how long an idle connection is kept (the server's, or through a proxy the
    proxy's) and compare it with the client pool's ``keepalive_timeout``."""
    client_timeout = PRESETS[config.preset].keepalive_timeout
    facts: dict[str, Any] = {
        "client_keepalive_timeout": client_timeout,
        "url": redact_url(config.url),
    }
    if config.proxy is not None:
        facts["proxy"] = redact_url(config.proxy)
        if config.tls:
            return Step(
                name="keep-alive",
                verdict="skip",
                seconds=0.0,
                summary="not measured through a proxy for https:// (the tunnel hides which "
                "hop closes)",
                facts=facts,
            )
        facts["hop"] = "proxy"
    conn = _Conn(config, address)
    with Stopwatch() as watch:
        try:
            facts.update(await _measure(conn, config))
        finally:
            await conn.close()
    facts.update(requests=conn.requests, retried=conn.retries)
    if conn.method == "HEAD":
        note = f"the body is over {BODY_READ_CAP} bytes: probed with HEAD"
        facts.update(method="HEAD", note=note)
    step = _verdict(facts, watch.seconds, config)
    if "note" in facts:
        return dataclasses.replace(step, summary=f"{step.summary} ({facts['note']})")
    return step


async def _measure(conn: _Conn, config: DiagnoseConfig) -> dict[str, Any]:
    """Idle gaps of growing length until the connection is closed; returns the facts."""
    try:
        if not await conn.open():
            return {"keeps_connections": False, "http_version": conn.version}
    except _FAILURES as exc:
        return {"error": f"the first request failed: {_why(exc, config.timeout)}"}
    deadline = time.monotonic() + config.keepalive_max
    gap = config.keepalive_first_gap
    survived = 0.0
    doubted: float | None = None  # the gap after which a GET failed once
    while (remaining := deadline - time.monotonic()) > 0.05:
        try:
            idle, closed = await conn.idle(min(gap, remaining))
        except ValueError as exc:
            return {"error": str(exc)}
        if closed is not None:
            return {"server_idle_timeout": idle, "detected_by": closed}
        try:
            if not await conn.exchange():
                return {"error": "the connection was closed after a request (Connection: close)"}
        except _TooLarge:
            return {"error": f"the body grew over {BODY_READ_CAP} bytes"}
        except _FAILURES:
            if doubted is not None or conn.retries >= RETRIES:
                # Failed twice: the timeout lies between the last gap survived and this one.
                return {
                    "server_idle_timeout": idle,
                    "bracket": [survived, idle],
                    "detected_by": "failed request",
                }
            doubted = idle
            conn.retries += 1
            try:
                await conn.open()
            except _FAILURES as exc:
                return {"error": f"a new connection failed: {_why(exc, config.timeout)}"}
            deadline += idle * RETRY_WIDEN  # measured again: not counted in --keepalive-max
            gap = idle * RETRY_WIDEN
            continue
        survived, doubted, gap = max(survived, idle), None, gap * 2
    return {"server_idle_timeout": None, "held": survived}


async def _skip(reader: asyncio.StreamReader, size: int) -> None:
    """Read ``size`` bytes and drop them, a piece at a time."""
    while size > 0:
        size -= len(await reader.readexactly(min(size, _READ_CHUNK)))


async def _read_response(reader: asyncio.StreamReader, head: bool = False) -> tuple[bool, str]:
    """One response read whole; returns whether the connection stays open, and the version."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _ConnectionClosed from exc
    lines = raw.decode("latin-1").split("\r\n")
    version = lines[0].split(" ", 1)[0]
    if not version.startswith("HTTP/"):
        raise ValueError("not an HTTP response")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if head:
        return keep, version  # no body, whatever the headers say
    try:
        if headers.get("transfer-encoding", "").lower().endswith("chunked"):
            read = 0
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                read += size
                if read > BODY_READ_CAP:
                    raise _TooLarge
                await _skip(reader, size + 2)
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > BODY_READ_CAP:
                raise _TooLarge
            await _skip(reader, length)
        elif keep is False:
            return False, version
    except asyncio.IncompleteReadError as exc:
        raise _ConnectionClosed from exc
    return keep, version


def _verdict(facts: dict[str, Any], seconds: float, config: DiagnoseConfig) -> Step:
    """The step from its facts; ``facts["measured"]`` is the finding the conclusion repeats."""
    client_timeout = PRESETS[config.preset].keepalive_timeout
    who = "the proxy" if facts.get("hop") == "proxy" else "the server"

    def step(verdict: Verdict, summary: str) -> Step:
        return Step(
            name="keep-alive", verdict=verdict, seconds=seconds, summary=summary, facts=facts
        )

    if "error" in facts:
        return step("info", f"not measured: {facts['error']}")
    if facts.get("keeps_connections") is False:
        how = (
            "it answers HTTP/1.0 without Connection: keep-alive"
            if facts["http_version"] != "HTTP/1.1"
            else "it answers with Connection: close"
        )
        return step(
            "info",
            f"{who} does not keep connections ({how}): each request opens a new one, and "
            "none is left idle to go stale",
        )
    server = facts["server_idle_timeout"]
    if server is None:
        held = facts["held"]
        summary = (
            f"an idle connection survived gaps up to {held:.2f} s; the client's pool lets go "
            f"after {client_timeout:g} s"
        )
        if held >= client_timeout - GAP_SLACK:
            return step("ok", summary)
        # Not long enough to tell whether the server outlasts the pool: one gap as long as
        # the pool's idle time tells.
        facts["compare_command"] = diagnose_command(
            config,
            "--keepalive-first-gap",
            f"{client_timeout:g}",
            "--keepalive-max",
            f"{client_timeout + 0.5:g}",
        )
        return step("info", f"{summary}; to compare: {facts['compare_command']}")
    if "bracket" in facts:
        low, high = facts["bracket"]
        measured = f"between {low:.2f} and {high:.2f} s (a request after that gap failed twice)"
    else:
        low = high = server
        measured = f"{server:.2f} s ({facts['detected_by']})"
    facts["measured"] = f"{who} closes idle connections after {measured}"
    if low < client_timeout or high <= client_timeout:
        # Under the lower bound, which the server is known to allow; with none (the first
        # gap already failed), a shorter first gap would find one.
        facts["suggested_keepalive_timeout"] = suggested_keepalive(low) if low > 0 else None
        return step(
            "warn",
            f"{facts['measured']}; the client's pool keeps them {client_timeout:g} s: pooled "
            "connections go stale (Server disconnected)",
        )
    return step(
        "ok", f"{facts['measured']}; the client's pool lets go first, after {client_timeout:g} s"
    )
