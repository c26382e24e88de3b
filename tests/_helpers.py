"""Shared test helpers: sessions wired to a RetryMiddleware whose waits are recorded, not slept."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aiohttp

from aiohttp_resilient import (
    BudgetPolicy,
    HealthPolicy,
    HostLimiter,
    RetryEvent,
    RetryMiddleware,
    RetryPolicy,
    TrackingConnector,
)


class SleepRecorder:
    """A stand-in for asyncio.sleep that records each wait and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def closed_port() -> int:
    """A loopback port just freed, with nothing listening on it (for a connection refused, or
    a server of the test's own to bind)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


async def wait_listening(port: int, *, timeout: float = 10.0) -> None:
    """Until something accepts connections on the loopback ``port``; fail after ``timeout``."""
    for _ in range(int(timeout / 0.05)):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {timeout}s")


class EventLog:
    """Collects the RetryEvents a hook receives."""

    def __init__(self) -> None:
        self.events: list[RetryEvent] = []

    def __call__(self, event: RetryEvent) -> None:
        self.events.append(event)

    @property
    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]


def fast_policy(**changes: Any) -> RetryPolicy:
    """A policy whose waits are exact (no jitter) so that tests can assert them."""
    changes.setdefault("retry_after_jitter", 0.0)
    return RetryPolicy(jitter=None, **changes)


#: Host health whose budget never allows an immediate retry: every disconnect backs off, as
#: the schedule tests need.
BACKOFF_ONLY = HealthPolicy(budget=BudgetPolicy(immediate_share=0.0))


def retry_session(
    policy: RetryPolicy | None = None,
    *,
    sleep: SleepRecorder | None = None,
    limiter: HostLimiter | None = None,
    on_retry: Any = None,
    on_giveup: Any = None,
    limit: int = 100,
    middlewares: Iterable[Any] = (),
    tracking: bool = True,
    health: Any = None,
    idle_timeout: float | None = None,
    **session_options: Any,
) -> aiohttp.ClientSession:
    """A real ClientSession with our middleware, its hidden retry left as aiohttp sets it."""
    middleware = RetryMiddleware(
        policy or fast_policy(),
        limiter=limiter,
        health=health,
        on_retry=on_retry,
        on_giveup=on_giveup,
        idle_timeout=idle_timeout,
        sleep=sleep or SleepRecorder(),
    )
    connector_class = TrackingConnector if tracking else aiohttp.TCPConnector
    return aiohttp.ClientSession(
        connector=connector_class(limit=limit),
        middlewares=(middleware, *middlewares),
        **session_options,
    )


async def start_cli(
    *args: str, stdin: bool = False, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """``aiohttp-resilient ARGS`` started in a subprocess, stdout and stderr piped (and stdin,
    if asked; stderr may be a file descriptor instead)."""
    import sys

    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiohttp_resilient._cli._main",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )


async def run_cli(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """``aiohttp-resilient ARGS`` in a subprocess; returns (exit status, stdout, stderr).

    The caller's loopback servers keep serving while it runs, in the caller's event loop."""
    proc = await start_cli(*args)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


#: Writes the response to one request (its head, and its body) and says whether the connection
#: stays open for another.
RawAnswer = Callable[[str, bytes, asyncio.StreamWriter], Awaitable[bool]]


@contextlib.asynccontextmanager
async def raw_http_server(
    answer: RawAnswer, *, reset: Callable[[str], bool] | None = None
) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback HTTP/1.1 server for answers FaultServer does not make (chunked, no length).

    ``answer(head, body, writer)`` is called per request with its head (request line and
    headers) and its ``Content-Length`` body (``100 Continue`` is sent first when asked for).
    ``reset(head)``, when given, is asked first: True resets the connection (RST) before the
    body is read. Yields the base URL and the request heads, in order.
    """
    heads: list[str] = []
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            for _ in range(1000):
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                heads.append(head)
                if reset is not None and reset(head):
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                lower = head.lower()
                length = re.search(r"\r\ncontent-length: *(\d+)", lower)
                size = int(length[1]) if length else 0
                if size and "\r\nexpect: 100-continue" in lower:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await reader.readexactly(size) if size else b""
                if not await answer(head, body, writer):
                    return
                await writer.drain()
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()
        for writer in list(writers):
            writer.close()
        await server.wait_closed()


def has_ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True
