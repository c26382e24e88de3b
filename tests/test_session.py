"""resilient_session(): a real ClientSession, tuned, with the middleware, against real servers."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from _helpers import EventLog
from aiohttp_resilient import (
    PRESETS,
    RetriesExhaustedError,
    RetryMiddleware,
    RetryPolicy,
    TrackingConnector,
    resilient_session,
)
from aiohttp_resilient.testing import Fault, FaultServer

QUICK = RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.001)


async def test_middleware_installed_and_hidden_retry_off(fault_server: FaultServer) -> None:
    """The server sees exactly the policy's attempts through a resilient session."""
    fault_server.set_default("/down", Fault.fin())
    async with resilient_session(policy=QUICK) as session:
        assert isinstance(session, aiohttp.ClientSession)
        assert isinstance(session.connector, TrackingConnector)
        with pytest.raises(RetriesExhaustedError):
            await session.get(fault_server.url_for("/down"))
    assert fault_server.count("/down") == 3


@pytest.mark.parametrize("preset", ["default", "crawler", "api"])
async def test_presets_tune_the_connector_and_timeout(preset: str) -> None:
    """Each preset's limits and timeout reach the real connector and session."""
    tuning = PRESETS[preset]
    async with resilient_session(preset=preset) as session:  # type: ignore[arg-type]
        connector = session.connector
        assert connector is not None
        assert connector.limit == tuning.limit
        assert connector.limit_per_host == tuning.limit_per_host
        assert session.timeout == tuning.timeout
        # No per-read timer: the middleware's idle watchdog abandons a silent response instead.
        assert session.timeout.sock_read is None
        assert session._middlewares[0].idle_timeout == tuning.idle_timeout  # type: ignore[attr-defined]
        assert session.timeout.sock_connect is not None
        assert session.timeout.connect is not None
        assert session.timeout.total is not None


async def test_options_override_the_preset() -> None:
    """Keyword options win over the preset, and ClientSession keywords pass through."""
    timeout = aiohttp.ClientTimeout(total=5)
    async with resilient_session(
        preset="crawler", limit=10, limit_per_host=2, timeout=timeout, raise_for_status=True
    ) as session:
        assert session.connector is not None
        assert session.connector.limit == 10
        assert session.connector.limit_per_host == 2
        assert session.timeout == timeout
        assert session.raise_for_status is True


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"preset": "scraper"}, "preset"),
        ({"limit": 0}, "limit"),
        ({"limit_per_host": -1}, "limit_per_host"),
        ({"limit": 4, "limit_per_host": 8}, "limit_per_host"),
        ({"keepalive_timeout": 0}, "keepalive_timeout"),
        ({"policy": {"attempts": 2}}, "policy"),
    ],
)
async def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    """Bad options fail where they are passed, naming the field."""
    with pytest.raises(ValueError, match=field):
        resilient_session(**options)  # type: ignore[arg-type]


async def test_connector_and_connector_options_conflict() -> None:
    """A ready connector cannot be combined with connector options."""
    connector = aiohttp.TCPConnector()
    try:
        with pytest.raises(ValueError, match="connector"):
            resilient_session(connector=connector, keepalive_timeout=3)
    finally:
        await connector.close()


async def test_own_connector_is_used(fault_server: FaultServer) -> None:
    """A connector passed in is the one the session uses, middleware still installed."""
    fault_server.script("/x", [Fault.status(503), Fault.ok()])
    connector = aiohttp.TCPConnector(limit=3)
    async with resilient_session(connector=connector, policy=QUICK) as session:
        assert session.connector is connector
        async with session.get(fault_server.url_for("/x")) as resp:
            assert resp.status == 200
    assert fault_server.count("/x") == 2


async def test_default_headers_and_user_headers(fault_server: FaultServer) -> None:
    """An honest User-Agent and Accept-Encoding go out; user headers add to or replace them."""
    async with resilient_session() as session:
        async with session.get(fault_server.url_for("/a")) as resp:
            assert resp.status == 200
    async with resilient_session(headers={"User-Agent": "mine/1", "X-Trace": "t"}) as session:
        async with session.get(fault_server.url_for("/b")) as resp:
            assert resp.status == 200
    first, second = fault_server.records
    assert first.headers["User-Agent"].startswith("aiohttp-resilient/")
    assert "aiohttp/" in first.headers["User-Agent"]
    assert "gzip" in first.headers["Accept-Encoding"]
    assert second.headers["User-Agent"] == "mine/1"
    assert second.headers["X-Trace"] == "t"
    assert "gzip" in second.headers["Accept-Encoding"]


async def test_user_agent_is_an_automatic_header(fault_server: FaultServer) -> None:
    """Our User-Agent rides with aiohttp's automatic headers (no merge per request): a request's
    own header wins, skipping another auto header keeps it, skipping it drops it, and a session
    with a request_class of its own still sends it."""

    class MyRequest(aiohttp.ClientRequest):
        pass

    url = fault_server.url_for("/ua")
    async with resilient_session() as session:
        for options in (
            {"headers": {"User-Agent": "req/1"}},
            {"skip_auto_headers": ["Accept"]},
            {"skip_auto_headers": ["User-Agent"]},
        ):
            async with session.get(url, **options) as resp:  # type: ignore[arg-type]
                assert resp.status == 200
    async with resilient_session(request_class=MyRequest) as session:
        async with session.get(url) as resp:
            assert resp.status == 200
    agents = [r.headers.get("User-Agent") for r in fault_server.records]
    assert agents[0] == "req/1"
    assert str(agents[1]).startswith("aiohttp-resilient/")
    assert agents[2] is None
    assert str(agents[3]).startswith("aiohttp-resilient/")


async def test_force_close_sends_connection_close(fault_server: FaultServer) -> None:
    """force_close sends Connection: close and uses a new connection per request."""
    async with resilient_session(force_close=True) as session:
        for _ in range(3):
            async with session.get(fault_server.url_for("/c")) as resp:
                await resp.read()
    assert [r.headers["Connection"].lower() for r in fault_server.records] == ["close"] * 3
    assert [r.conn_id for r in fault_server.records] == [1, 2, 3]


async def test_keepalive_connections_are_reused(fault_server: FaultServer) -> None:
    """By default requests share one kept-alive connection."""
    async with resilient_session() as session:
        for _ in range(3):
            async with session.get(fault_server.url_for("/c")) as resp:
                await resp.read()
    assert [r.conn_id for r in fault_server.records] == [1, 1, 1]


async def test_user_middlewares_run_inside_the_retry(fault_server: FaultServer) -> None:
    """A user's middleware runs once per attempt, inside our retry loop."""
    fault_server.script("/m", [Fault.fin(), Fault.ok()])
    calls: list[str] = []

    async def count_calls(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        calls.append(req.method)
        return await handler(req)

    async with resilient_session(policy=QUICK, middlewares=[count_calls]) as session:
        middlewares = session._middlewares
        assert isinstance(middlewares[0], RetryMiddleware)
        async with session.get(fault_server.url_for("/m")) as resp:
            assert resp.status == 200
    assert calls == ["GET", "GET"]
    assert fault_server.count("/m") == 2


async def test_hooks_reach_the_middleware(fault_server: FaultServer) -> None:
    """on_retry and on_giveup given to resilient_session are called."""
    fault_server.set_default("/down", Fault.fin())
    retries, giveups = EventLog(), EventLog()
    async with resilient_session(policy=QUICK, on_retry=retries, on_giveup=giveups) as session:
        with pytest.raises(RetriesExhaustedError):
            await session.get(fault_server.url_for("/down"))
    assert [e.attempt for e in retries.events] == [1, 2]
    assert [e.attempt for e in giveups.events] == [3]


async def test_per_host_limit_caps_connections(fault_server: FaultServer) -> None:
    """The crawler preset opens at most 4 connections to one host under load."""
    fault_server.set_default("/slow", Fault.drip(body=b"x" * 30, chunk=10, interval=0.01))
    async with resilient_session(preset="crawler") as session:

        async def fetch() -> None:
            async with session.get(fault_server.url_for("/slow")) as resp:
                await resp.read()

        await asyncio.gather(*(fetch() for _ in range(12)))
    assert fault_server.count("/slow") == 12
    assert fault_server.connections_opened == 4


# TLS: a real TLS server on loopback with a self-signed certificate ------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


class _TinyHttp(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # type: ignore[attr-defined]


@pytest.fixture
async def tls_server(self_signed: tuple[Path, Path]) -> AsyncIterator[tuple[str, list[int]]]:
    """A TLS server on 127.0.0.1; the list counts TCP connections it accepted."""
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    accepted: list[int] = []
    protocols: list[_TinyHttp] = []

    def factory() -> _TinyHttp:  # called at accept time, before the handshake
        accepted.append(1)
        protocols.append(_TinyHttp())
        return protocols[-1]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}/", accepted
    finally:
        server.close()
        for protocol in protocols:  # Python 3.10's Server.close() leaves accepted ones open
            if getattr(protocol, "transport", None) is not None:
                protocol.transport.close()
        await server.wait_closed()


async def test_certificate_error_is_never_retried(tls_server: tuple[str, list[int]]) -> None:
    """Verification is on; a certificate failure is raised at once, one connection made."""
    url, accepted = tls_server
    async with resilient_session(policy=QUICK) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url)
    assert len(accepted) == 1
    # The same through a plain session's first request (aiohttp's own retry still armed then).
    middleware = RetryMiddleware(QUICK)
    async with aiohttp.ClientSession(middlewares=[middleware]) as session:
        for _ in range(2):
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await session.get(url)
    assert len(accepted) == 3


async def test_ca_bundle_is_trusted(
    tls_server: tuple[str, list[int]], self_signed: tuple[Path, Path]
) -> None:
    """ca_bundle makes the session trust that CA, with TLS 1.2 at least."""
    url, _ = tls_server
    async with resilient_session(ca_bundle=self_signed[0]) as session:
        async with session.get(url) as resp:
            assert await resp.read() == b"ok"


async def test_ssl_context_and_ca_bundle_conflict(self_signed: tuple[Path, Path]) -> None:
    """Only one way to set TLS trust at a time."""
    with pytest.raises(ValueError, match="ssl_context"):
        resilient_session(ssl_context=ssl.create_default_context(), ca_bundle=self_signed[0])


# Proxies: the FaultServer stands in for the proxy (plain HTTP, absolute-form targets); nothing
# is forwarded anywhere, so no traffic leaves loopback.


async def test_explicit_proxy_with_credentials(fault_server: FaultServer) -> None:
    """proxy= with user:password in the URL sends Proxy-Authorization, and retries go through it."""
    fault_server.script("http://origin.test/x", [Fault.fin(), Fault.ok()])
    proxy = fault_server.url.with_user("pu").with_password("pp")
    async with resilient_session(proxy=str(proxy), policy=QUICK) as session:
        async with session.get("http://origin.test/x") as resp:
            assert resp.status == 200
    assert [r.path for r in fault_server.records] == ["http://origin.test/x"] * 2
    assert {r.headers["Proxy-Authorization"] for r in fault_server.records} == {"Basic cHU6cHA="}


async def test_trust_env_takes_the_proxy_from_the_environment(
    fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trust_env=True reads HTTP_PROXY, as aiohttp does."""
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", str(fault_server.url))
    async with resilient_session(trust_env=True) as session:
        async with session.get("http://origin.test/env") as resp:
            assert resp.status == 200
    assert [r.path for r in fault_server.records] == ["http://origin.test/env"]
