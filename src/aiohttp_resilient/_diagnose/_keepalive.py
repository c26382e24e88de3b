"""The keep-alive step: how long the server keeps an idle connection, measured.

One connection is held idle for growing gaps (1 s, 2 s, 4 s, ... within ``keepalive_max`` in
all), with a GET between two gaps. While idle, the probe reads: a FIN or RST from the server
ends the read at the moment the server gave up, which is the timeout to the millisecond. A
server (or middlebox) that drops a connection silently, or closes it just as a gap ends, shows
when the GET after that gap fails; then the timeout lies between the last gap that survived
and that one. The GETs go over a raw
stream (the pool would hide the close by opening a new connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import time
from typing import Any

from .._session import PRESETS, _tls_context, default_user_agent
from ._model import BODY_READ_CAP, DiagnoseConfig, Step, Stopwatch
from ._network import open_stream

__all__ = ["probe_keepalive", "suggested_keepalive"]

#: The client's pool keeps connections at most this share of the server's idle timeout, so it
#: lets go first even when a request is in flight as the timer runs out.
KEEPALIVE_SHARE = 0.75


class _Closed(Exception):
    """The connection was closed (or reset) while the probe used it."""


class _TooLarge(Exception):
    """The response body goes on past :data:`BODY_READ_CAP`: not read, so the connection
    cannot carry another request."""


#: Bodies are read in pieces of this size and dropped.
_READ_CHUNK = 64 * 1024


def suggested_keepalive(server_timeout: float) -> float:
    """The ``keepalive_timeout`` that lets the client let go first: 3/4 of the server's,
    rounded to tenths of a second (so 1.99 s measured for a 2 s timeout still gives 1.5)."""
    return max(0.1, round(server_timeout * KEEPALIVE_SHARE, 1))


async def probe_keepalive(config: DiagnoseConfig, address: str) -> Step:
    """Measure the server's idle timeout on one direct connection and compare it with the
    client pool's ``keepalive_timeout``."""
    client_timeout = PRESETS[config.preset].keepalive_timeout
    facts: dict[str, Any] = {"client_keepalive_timeout": client_timeout}
    requests = 0
    with Stopwatch() as watch:
        try:
            tls = _tls_context(config.ca_bundle) if config.tls else None
            reader, writer = await open_stream(config, address, tls)
        except (OSError, asyncio.TimeoutError) as exc:
            return Step(
                name="keep-alive",
                verdict="fail",
                seconds=watch.elapsed,
                summary=f"cannot connect: {type(exc).__name__}",
                facts=facts,
            )
        method = "GET"
        try:
            requests += 1
            try:
                keep = await _exchange(reader, writer, config, method)
            except _TooLarge:
                # The idle timer starts when a response ends: a connection whose body was not
                # read to its end measures nothing, and reading a large body at every gap would
                # download it again each time. HEAD gets the same head with no body, and
                # servers time idle connections the same after it.
                await _close(writer)
                reader, writer = await open_stream(config, address, tls)
                method = "HEAD"
                facts["method"] = method
                facts["note"] = f"the body is over {BODY_READ_CAP} bytes: probed with HEAD"
                requests += 1
                keep = await _exchange(reader, writer, config, method)
            if not keep:
                facts.update(server_idle_timeout=0.0, detected_by="Connection: close")
            else:
                facts.update(await _hold(reader, writer, config, method))
                requests += facts.pop("requests")
        except (_Closed, _TooLarge, OSError, asyncio.TimeoutError, ValueError) as exc:
            facts.update(error=f"the first request failed: {type(exc).__name__}")
        finally:
            await _close(writer)
    facts["requests"] = requests
    step = _verdict(facts, watch.seconds, client_timeout)
    if "note" in facts:
        return dataclasses.replace(step, summary=f"{step.summary} ({facts['note']})")
    return step


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()


async def _hold(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    config: DiagnoseConfig,
    method: str,
) -> dict[str, Any]:
    """Idle gaps of growing length until the server closes; returns the facts."""
    deadline = time.monotonic() + config.keepalive_max
    gap = config.keepalive_first_gap
    survived = 0.0
    requests = 0
    while (remaining := deadline - time.monotonic()) > 0.05:
        gap = min(gap, remaining)
        idle_from = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(1), gap)
        except asyncio.TimeoutError:
            pass  # still open after `gap` idle seconds
        except OSError:
            return {
                "server_idle_timeout": time.monotonic() - idle_from,
                "detected_by": "RST",
                "requests": requests,
            }
        else:
            if data:
                return {"error": "the server sent data on an idle connection", "requests": requests}
            return {
                "server_idle_timeout": time.monotonic() - idle_from,
                "detected_by": "FIN",
                "requests": requests,
            }
        idle = time.monotonic() - idle_from
        if reader.at_eof():  # the FIN came just after the gap ended
            return {"server_idle_timeout": idle, "detected_by": "FIN", "requests": requests}
        requests += 1
        try:
            open_after = await _exchange(reader, writer, config, method)
        except _TooLarge:
            return {"error": f"the body grew over {BODY_READ_CAP} bytes", "requests": requests}
        except (_Closed, OSError, asyncio.TimeoutError, ValueError):
            # Closed as the request went out (a timeout right at the gap's end), or dropped
            # without a word earlier: the timeout lies between the last gap that survived and
            # this one.
            return {
                "server_idle_timeout": idle,
                "bracket": [survived, idle],
                "detected_by": "failed request",
                "requests": requests,
            }
        if not open_after:
            return {
                "error": "the server closed the connection after a request (Connection: close)",
                "requests": requests,
            }
        survived, gap = max(survived, gap), gap * 2
    return {"server_idle_timeout": None, "held": survived, "requests": requests}


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    config: DiagnoseConfig,
    method: str = "GET",
) -> bool:
    """One request and its whole response (a body over :data:`BODY_READ_CAP` raises
    :class:`_TooLarge`); returns whether the connection stays open."""
    url = config.url
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if url.explicit_port:
        host = f"{host}:{url.port}"
    head = (
        f"{method} {url.raw_path_qs} HTTP/1.1\r\nHost: {host}\r\n"
        f"User-Agent: {default_user_agent()}\r\nAccept: */*\r\n\r\n"
    )
    writer.write(head.encode("latin-1"))
    await writer.drain()
    return await asyncio.wait_for(_read_response(reader, method == "HEAD"), config.timeout)


async def _skip(reader: asyncio.StreamReader, size: int) -> None:
    """Read ``size`` bytes and drop them, a piece at a time."""
    while size > 0:
        size -= len(await reader.readexactly(min(size, _READ_CHUNK)))


async def _read_response(reader: asyncio.StreamReader, head: bool = False) -> bool:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _Closed from exc
    lines = raw.decode("latin-1").split("\r\n")
    version = lines[0].split(" ", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if head:
        return keep  # no body, whatever the headers say
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
            return False
    except asyncio.IncompleteReadError as exc:
        raise _Closed from exc
    return keep


def _verdict(facts: dict[str, Any], seconds: float, client_timeout: float) -> Step:
    server = facts.get("server_idle_timeout")
    if "error" in facts:
        return Step(
            name="keep-alive",
            verdict="info",
            seconds=seconds,
            summary=f"not measured: {facts['error']}",
            facts=facts,
        )
    if server is None:
        held = facts["held"]
        summary = (
            f"an idle connection survived gaps up to {held:.2f} s; the client's pool lets go "
            f"after {client_timeout:g} s"
        )
        if held >= client_timeout:
            return Step(
                name="keep-alive", verdict="ok", seconds=seconds, summary=summary, facts=facts
            )
        # Not long enough to tell whether the server outlasts the pool.
        summary += " (raise --keepalive-max to compare)"
        return Step(
            name="keep-alive", verdict="info", seconds=seconds, summary=summary, facts=facts
        )
    how = facts["detected_by"]
    if "bracket" in facts:
        low, high = facts["bracket"]
        measured = f"between {low:.2f} and {high:.2f} s (a request after that gap failed)"
    elif how == "Connection: close":
        measured = "0 s: it answers with Connection: close"
    else:
        measured = f"{server:.2f} s ({how})"
    if server <= client_timeout:
        # Bracketed: under the lower bound, which the server is known to allow.
        bound = facts["bracket"][0] if "bracket" in facts else server
        facts["suggested_keepalive_timeout"] = suggested_keepalive(bound) if bound > 0 else None
        summary = (
            f"the server closes idle connections after {measured}; the client's pool keeps "
            f"them {client_timeout:g} s: pooled connections go stale (Server disconnected)"
        )
        return Step(
            name="keep-alive", verdict="warn", seconds=seconds, summary=summary, facts=facts
        )
    summary = (
        f"the server closes idle connections after {measured}; the client's pool lets go "
        f"first, after {client_timeout:g} s"
    )
    return Step(name="keep-alive", verdict="ok", seconds=seconds, summary=summary, facts=facts)
