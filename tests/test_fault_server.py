"""FaultServer: every fault through a real aiohttp.ClientSession, and the server's bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import errno
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from _helpers import has_ipv6_loopback
from aiohttp_resilient.testing import Fault, FaultServer, Outage, RecordedRequest

#: Bounds every request of this file, so a server bug fails a test instead of hanging it.
TIMEOUT = aiohttp.ClientTimeout(total=5)


@contextlib.asynccontextmanager
async def client(*, hidden_retry: bool = False) -> AsyncIterator[aiohttp.ClientSession]:
    """A real ClientSession; aiohttp's hidden once-retry is off unless asked for."""
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        # Private switch (see AIOHTTP_FACTS.md): otherwise GET/PUT/... repeat once on FIN/RST.
        session._retry_connection = hidden_retry
        yield session


def actions(server: FaultServer) -> list[str]:
    return [r.action for r in server.records]


async def exchange(server: FaultServer, data: bytes) -> bytes:
    """Write raw bytes on a fresh connection and read until the server closes it (5 s bound)."""
    reader, writer = await asyncio.open_connection(server.url.host, server.url.port)
    writer.write(data)
    received = await asyncio.wait_for(reader.read(), 5)  # read() to EOF: the server closed
    writer.close()
    await writer.wait_closed()
    return received


# -- faults as aiohttp sees them -------------------------------------------------------------


async def test_ok_default_response_and_record() -> None:
    """The default answer is 200 b"ok" with Content-Length; the request is recorded."""
    async with (
        FaultServer() as server,
        client() as session,
        session.get(server.url_for("/a?x=1"), headers={"X-Test": "1"}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "2"
        assert await resp.read() == b"ok"
    [rec] = server.records
    assert isinstance(rec, RecordedRequest)
    assert (rec.method, rec.path, rec.query) == ("GET", "/a", "x=1")
    assert rec.headers["x-test"] == "1"
    assert (rec.body_size, rec.body, rec.conn_id, rec.seq_on_conn, rec.action) == (
        0,
        b"",
        1,
        1,
        "ok",
    )
    assert server.count() == server.count("/a") == server.count(method="get") == 1
    assert server.count("/b") == server.count(method="POST") == 0


async def test_keep_alive_reuses_the_connection() -> None:
    """Sequential requests share one connection: same conn_id, growing seq_on_conn."""
    async with FaultServer() as server, client() as session:
        for _ in range(3):
            async with session.get(server.url) as resp:
                await resp.read()
    assert [(r.conn_id, r.seq_on_conn) for r in server.records] == [(1, 1), (1, 2), (1, 3)]
    assert server.connections_opened == 1


async def test_fin_gives_server_disconnected() -> None:
    """FIN before any byte: ServerDisconnectedError, and the POST reached the server once."""
    async with FaultServer(default=Fault.fin()) as server, client() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(server.url, data=b"payload")
    assert server.count(method="POST") == 1
    assert actions(server) == ["fin"]
    assert server.records[0].body == b"payload"


async def test_hidden_retry_repeats_get_once_after_fin() -> None:
    """With aiohttp's hidden retry on, a GET after a FIN is silently sent again."""
    async with FaultServer() as server, client(hidden_retry=True) as session:
        server.script("/", [Fault.fin()])
        async with session.get(server.url_for("/")) as resp:
            assert resp.status == 200
    assert actions(server) == ["fin", "ok"]
    assert [r.conn_id for r in server.records] == [1, 2]


async def test_rst_gives_client_os_error_econnreset() -> None:
    """RST before any byte: ClientOSError with errno ECONNRESET."""
    async with FaultServer(default=Fault.rst()) as server, client() as session:
        with pytest.raises(aiohttp.ClientOSError) as info:
            await session.post(server.url, data=b"x")
    assert type(info.value) is aiohttp.ClientOSError
    assert info.value.errno == errno.ECONNRESET
    assert server.count() == 1
    assert actions(server) == ["rst"]


async def test_partial_status_line_gives_server_disconnected() -> None:
    """Half a status line then FIN: aiohttp 3.14.5 raises ServerDisconnectedError."""
    async with FaultServer(default=Fault.partial_status()) as server, client() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError) as info:
            await session.post(server.url, data=b"x")
    assert type(info.value) is aiohttp.ServerDisconnectedError
    assert server.count() == 1
    assert actions(server) == ["partial_status"]


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_cut_body_gives_payload_error_on_read(how: str) -> None:
    """Headers arrive, the body is cut: ClientPayloadError from resp.read(), not before."""
    fault = Fault.cut_body(size=1000, sent=100, how="rst" if how == "rst" else "fin")
    async with (
        FaultServer(default=fault) as server,
        client() as session,
        session.get(server.url) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1000"
        with pytest.raises(aiohttp.ClientPayloadError, match="received 100 of 1000"):
            await resp.read()
    assert actions(server) == ["cut_body"]


async def test_hang_gives_socket_timeout_and_exit_cancels_the_timer() -> None:
    """A silent server trips sock_read (SocketTimeoutError); leaving the server is immediate."""
    loop = asyncio.get_running_loop()
    async with FaultServer(default=Fault.hang(30)) as server:
        async with client() as session:
            with pytest.raises(aiohttp.SocketTimeoutError):
                await session.get(server.url, timeout=aiohttp.ClientTimeout(sock_read=0.2))
        started = loop.time()
    assert loop.time() - started < 1.0
    assert actions(server) == ["hang"]


async def test_hang_then_fin_after_the_delay() -> None:
    """After `seconds` of silence the server closes: ServerDisconnectedError."""
    async with FaultServer(default=Fault.hang(0.1)) as server, client() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(server.url, data=b"x")


async def test_drip_delivers_the_whole_body_slowly() -> None:
    """Drip: full Content-Length, body arrives in timed chunks, connection stays usable."""
    body = bytes(range(50))
    async with FaultServer() as server, client() as session:
        server.script("/", [Fault.drip(body, chunk=10, interval=0.02)])
        started = time.monotonic()
        async with session.get(server.url_for("/")) as resp:
            assert resp.headers["Content-Length"] == "50"
            assert await resp.read() == body
        assert time.monotonic() - started >= 0.09
        async with session.get(server.url_for("/")) as resp:
            assert await resp.read() == b"ok"
    assert [(r.conn_id, r.action) for r in server.records] == [(1, "drip"), (1, "ok")]


async def test_drip_slower_than_sock_read_times_out() -> None:
    """A gap between chunks longer than sock_read: SocketTimeoutError while reading."""
    async with (
        FaultServer(default=Fault.drip(interval=0.5)) as server,
        client() as session,
        session.get(server.url, timeout=aiohttp.ClientTimeout(sock_read=0.1)) as resp,
    ):
        with pytest.raises(aiohttp.SocketTimeoutError):
            await resp.read()


async def test_status_with_retry_after_seconds() -> None:
    """Retry-After as delta-seconds: integral values without a fraction."""
    async with FaultServer() as server, client() as session:
        server.script(
            "/",
            [Fault.status(503, retry_after=2, body=b"busy"), Fault.status(429, retry_after=1.5)],
        )
        async with session.get(server.url_for("/")) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "2"
            assert await resp.read() == b"busy"
        async with session.get(server.url_for("/")) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "1.5"
    assert actions(server) == ["status", "status"]


async def test_status_with_retry_after_date() -> None:
    """Retry-After as an IMF-fixdate about `retry_after` seconds from now."""
    fault = Fault.status(503, retry_after=30, retry_after_date=True)
    async with (
        FaultServer(default=fault) as server,
        client() as session,
        session.get(server.url) as resp,
    ):
        value = resp.headers["Retry-After"]
    assert value.endswith(" GMT")
    delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    assert 28 <= delay <= 31


async def test_status_custom_headers() -> None:
    """Extra headers are sent as given."""
    fault = Fault.ok(201, b"{}", headers={"Content-Type": "application/json"})
    async with (
        FaultServer(default=fault) as server,
        client() as session,
        session.get(server.url) as resp,
    ):
        assert resp.status == 201
        assert await resp.json() == {}


async def test_head_gets_headers_only() -> None:
    """HEAD: Content-Length of the body, no body bytes, connection reusable."""
    async with (
        FaultServer() as server,
        client() as session,
        session.head(server.url) as resp,
    ):
        assert resp.headers["Content-Length"] == "2"
        async with session.get(server.url) as resp:
            assert await resp.read() == b"ok"
    assert [r.conn_id for r in server.records] == [1, 1]


# -- request bodies --------------------------------------------------------------------------


async def test_chunked_body_size_is_recorded() -> None:
    """An async-generator body goes chunked; the server records its exact size and bytes."""

    async def gen() -> AsyncIterator[bytes]:
        for i in range(10):
            yield bytes([65 + i]) * 1000

    async with (
        FaultServer() as server,
        client() as session,
        session.post(server.url_for("/up"), data=gen()) as resp,
    ):
        assert resp.status == 200
    [rec] = server.records
    assert rec.headers["Transfer-Encoding"] == "chunked"
    assert rec.body_size == 10_000
    assert rec.body == b"".join(bytes([65 + i]) * 1000 for i in range(10))


async def test_large_body_size_exact_but_recorded_bytes_capped() -> None:
    """body_size counts every byte; body keeps the first 64 KiB."""
    async with (
        FaultServer() as server,
        client() as session,
        session.post(server.url, data=b"z" * 200_000) as resp,
    ):
        assert resp.status == 200
    [rec] = server.records
    assert rec.body_size == 200_000
    assert rec.body == b"z" * 65536


async def test_max_body_413() -> None:
    """A body over max_body gets 413 with Connection: close; a small one is fine."""
    async with (
        FaultServer(max_body=100) as server,
        client() as session,
        session.post(server.url, data=b"a" * 1000) as resp,
    ):
        assert resp.status == 413
        assert resp.headers["Connection"] == "close"
        async with session.post(server.url, data=b"a" * 100) as resp:
            assert resp.status == 200
    assert [(r.action, r.body_size) for r in server.records] == [("413", 1000), ("ok", 100)]


async def test_max_body_413_chunked() -> None:
    """A chunked body that grows past max_body also gets 413."""

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"b" * 100

    async with (
        FaultServer(max_body=250) as server,
        client() as session,
        session.post(server.url, data=gen()) as resp,
    ):
        assert resp.status == 413
    assert actions(server) == ["413"]


async def test_max_body_rst() -> None:
    """max_body_action="rst": the connection is reset, ClientOSError ECONNRESET."""
    async with FaultServer(max_body=100, max_body_action="rst") as server, client() as session:
        with pytest.raises(aiohttp.ClientOSError) as info:
            await session.post(server.url, data=b"a" * 1000)
    assert info.value.errno == errno.ECONNRESET
    assert actions(server) == ["max_body_rst"]


# -- connection policies ---------------------------------------------------------------------


async def test_require_header_drops_requests_without_it() -> None:
    """Without the header: no response, FIN (ServerDisconnectedError); with it: 200."""
    async with FaultServer(require_header="X-Api-Key") as server, client() as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(server.url, data=b"x")
        async with session.post(server.url, data=b"x", headers={"x-api-key": "k"}) as resp:
            assert resp.status == 200
    assert actions(server) == ["dropped", "ok"]
    assert server.count() == 2


async def test_idle_close_and_the_pool_recovers() -> None:
    """An idle pooled connection closed by the server is not reused: the next GET works."""
    async with (
        FaultServer(idle_close=0.05) as server,
        client() as session,
        session.get(server.url) as resp,
    ):
        await resp.read()
        await asyncio.sleep(0.2)
        async with session.get(server.url) as resp:
            assert resp.status == 200
    assert [(r.conn_id, r.action) for r in server.records] == [(1, "ok"), (2, "ok")]


async def test_max_requests_per_conn_closes_silently() -> None:
    """After N responses the server closes the connection without Connection: close."""
    async with FaultServer(max_requests_per_conn=2) as server, client(hidden_retry=True) as session:
        for _ in range(3):
            async with session.get(server.url) as resp:
                assert "Connection" not in resp.headers
                assert resp.status == 200
                await resp.read()
            # Let the FIN that follows the 2nd response reach the client's pool.
            await asyncio.sleep(0.01)
    assert [(r.conn_id, r.seq_on_conn) for r in server.records] == [(1, 1), (1, 2), (2, 1)]


async def test_stop_and_start_listening_on_the_same_port() -> None:
    """Stopped: ClientConnectorError; started again: success on the same port."""
    async with FaultServer() as server, client() as session:
        url = server.url
        await server.stop_listening()
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(url)
        await server.start_listening()
        assert server.url == url
        async with session.get(url) as resp:
            assert resp.status == 200
    assert server.count() == 1


async def test_client_connection_close_is_honoured() -> None:
    """A client's Connection: close gets the header back and a closed connection."""
    async with FaultServer() as server:
        data = await exchange(server, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nok")


async def test_pipelined_requests_are_answered_in_order() -> None:
    """Two requests in one write, the first slow (drip): two responses, in order."""
    async with FaultServer() as server:
        server.script("/1", [Fault.drip(b"first", chunk=2, interval=0.01)])
        data = await exchange(
            server,
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        )
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b"first") < data.rindex(b"ok")
    assert [(r.path, r.seq_on_conn, r.body) for r in server.records] == [
        ("/1", 1, b""),
        ("/2", 2, b"abc"),
    ]


async def test_malformed_request_gets_400() -> None:
    """Garbage instead of a request line: 400 and close."""
    async with FaultServer() as server:
        data = await exchange(server, b"NONSENSE\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert server.count() == 0


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_loopback() -> None:
    """host="::1" listens on IPv6 and the URL brackets the address."""
    async with FaultServer(host="::1") as server, client() as session:
        assert str(server.url).startswith("http://[::1]:")
        async with session.get(server.url_for("/six")) as resp:
            assert await resp.read() == b"ok"


# -- host health: overload, rate limit, outages, restarts ------------------------------------


async def _status_or_error(session: aiohttp.ClientSession, url: URL) -> int | str:
    """The status of a GET, or the name of the client error it raised."""
    try:
        async with session.get(url) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientError as exc:
        return type(exc).__name__


async def test_capacity_sheds_the_excess_at_once() -> None:
    """capacity=2, service_time: 2 of 5 concurrent GETs are held and served, 3 get 503 first."""
    async with (
        FaultServer(capacity=2, service_time=0.3, over_capacity=Fault.status(503)) as server,
        client() as session,
    ):
        order: list[int] = []

        async def get() -> None:
            async with session.get(server.url_for("/")) as resp:
                await resp.read()
                order.append(resp.status)

        await asyncio.gather(*(get() for _ in range(5)))
        assert server.in_service == 0
    # The refusals went out at once, the held responses only after service_time.
    assert order == [503, 503, 503, 200, 200]
    assert server.shed_counts == {"capacity": 3}
    assert server.action_counts == {"status": 3, "ok": 2}
    assert sorted((r.action, r.shed) for r in server.records) == [
        ("ok", None),
        ("ok", None),
        ("status", "capacity"),
        ("status", "capacity"),
        ("status", "capacity"),
    ]


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        (Fault.status(503, retry_after=1), "503 Retry-After: 1"),
        (Fault.rst(), "ClientOSError"),
        (Fault.fin(), "ServerDisconnectedError"),
    ],
)
async def test_over_capacity_fault_is_played(over: Fault, expected: str) -> None:
    """over_capacity can be any fault: a 503 with Retry-After, a reset, a close."""
    async with (
        FaultServer(capacity=1, service_time=0.3, over_capacity=over) as server,
        client() as session,
    ):
        held = asyncio.create_task(_status_or_error(session, server.url_for("/")))
        await wait_for_in_service(server, 1)
        try:
            async with session.get(server.url_for("/")) as resp:
                got = f"{resp.status} Retry-After: {resp.headers.get('Retry-After')}"
        except aiohttp.ClientError as exc:
            got = type(exc).__name__
        assert got == expected
        assert await held == 200


async def wait_for_in_service(server: FaultServer, n: int) -> None:
    """Wait (bounded: 2 s) until ``n`` requests are held."""
    for _ in range(200):
        if server.in_service == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"in_service stayed {server.in_service}, expected {n}")


async def test_service_time_delays_ok_but_not_other_faults() -> None:
    """service_time holds ok responses only; a scripted 500 goes out at once."""
    async with FaultServer(service_time=0.2) as server, client() as session:
        server.script("/", [Fault.status(500)])
        started = time.monotonic()
        assert await _status_or_error(session, server.url_for("/")) == 500
        assert time.monotonic() - started < 0.2
        started = time.monotonic()
        assert await _status_or_error(session, server.url_for("/")) == 200
        assert time.monotonic() - started >= 0.2


async def test_held_response_keeps_pipelined_requests_in_order() -> None:
    """A request pipelined behind a held one is answered after it, on the same connection."""
    async with FaultServer(service_time=0.05) as server:
        data = await exchange(
            server,
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert [(r.path, r.action) for r in server.records] == [("/1", "ok"), ("/2", "ok")]


async def test_rate_limit_admits_the_burst_then_refuses() -> None:
    """rate_limit=2/s with a burst of 3: three back-to-back GETs pass, the fourth gets 429."""
    async with FaultServer(rate_limit=2, rate_burst=3) as server, client() as session:
        got = [await _status_or_error(session, server.url_for("/")) for _ in range(4)]
    assert got == [200, 200, 200, 429]
    assert server.shed_counts == {"rate": 1}
    assert server.records[-1].shed == "rate"


async def test_rate_limit_refills_and_default_burst() -> None:
    """The default burst is a tenth of a second's worth (>= 1); tokens come back with time."""
    assert FaultServer(rate_limit=500).rate_burst == 50
    async with FaultServer(rate_limit=5, over_rate=Fault.status(503)) as server:
        assert server.rate_burst == 1
        async with client() as session:
            first = [await _status_or_error(session, server.url_for("/")) for _ in range(2)]
            await asyncio.sleep(0.25)  # a token every 200 ms
            later = await _status_or_error(session, server.url_for("/"))
    assert first == [200, 503]
    assert later == 200


async def test_computed_retry_after_of_the_rate_limit() -> None:
    """compute_retry_after: the 429 says how many whole seconds until a token is free."""
    async with (
        FaultServer(rate_limit=0.5, compute_retry_after=True) as server,
        client() as session,
    ):
        async with session.get(server.url) as resp:
            assert resp.status == 200
        async with session.get(server.url) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "2"  # a token every 2 s


async def test_fixed_retry_after_wins_over_the_computed_one() -> None:
    """A Retry-After set on the fault is sent as it is, even with compute_retry_after."""
    fault = Fault.status(429, retry_after=7)
    async with (
        FaultServer(rate_limit=0.5, over_rate=fault, compute_retry_after=True) as server,
        client() as session,
    ):
        await _status_or_error(session, server.url)
        async with session.get(server.url) as resp:
            assert resp.headers["Retry-After"] == "7"


async def test_outage_fails_everything_but_exempt_paths_then_heals() -> None:
    """During an outage every request gets its fault (exempt paths excepted); then 200 again."""
    async with FaultServer(exempt_paths=["/health"]) as server, client() as session:
        outage = server.outage(0.3, Fault.rst())
        assert isinstance(outage, Outage)
        during = [await _status_or_error(session, server.url_for("/a")) for _ in range(3)]
        health = await _status_or_error(session, server.url_for("/health"))
        await asyncio.sleep(max(0.0, outage.end - time.monotonic()))
        after = await _status_or_error(session, server.url_for("/a"))
    assert during == ["ClientOSError"] * 3
    assert (health, after) == (200, 200)
    assert outage.requests == 3
    assert outage.seconds == pytest.approx(0.3)
    assert server.outages == [outage]
    assert server.shed_counts == {"outage": 3}


async def test_outage_scheduled_ahead_with_computed_retry_after() -> None:
    """at= starts the outage later; a 503 during it says when it ends."""
    async with FaultServer(compute_retry_after=True) as server, client() as session:
        outage = server.outage(2.5, Fault.status(503), at=time.monotonic() + 0.2)
        before = await _status_or_error(session, server.url)
        await asyncio.sleep(max(0.0, outage.start - time.monotonic()))
        async with session.get(server.url) as resp:
            during = (resp.status, resp.headers["Retry-After"])
    assert before == 200
    assert during == (503, "3")  # 2.5 s or a little less, rounded up
    assert outage.requests == 1


async def test_outages_may_not_overlap() -> None:
    """A second outage overlapping the first is refused."""
    server = FaultServer()
    now = time.monotonic()
    server.outage(1.0, at=now + 10)
    with pytest.raises(ValueError, match="overlaps"):
        server.outage(1.0, at=now + 10.5)
    server.outage(1.0, at=now + 11)  # back to back is fine


async def test_abort_drops_in_flight_and_idle_connections_like_a_kill() -> None:
    """stop_listening(abort=True): a held request fails at once, new connections are refused,
    and the server listens again on the same port."""
    async with FaultServer(service_time=30) as server, client() as session:
        url = server.url
        held = asyncio.create_task(_status_or_error(session, server.url_for("/held")))
        await wait_for_in_service(server, 1)
        started = time.monotonic()
        await server.stop_listening(abort=True)
        assert await held == "ServerDisconnectedError"
        assert time.monotonic() - started < 1.0
        assert server.in_service == 0
        assert await _status_or_error(session, url) == "ClientConnectorError"
        await server.start_listening()
        assert server.url == url
        server.service_time = 0.0
        assert await _status_or_error(session, url) == 200
    assert [r.action for r in server.records] == ["aborted", "ok"]


async def test_restart_comes_back_on_the_same_port() -> None:
    """restart(down): refused while down, served after, on the same URL; counts carry over."""
    async with FaultServer() as server, client() as session:
        url = server.url
        assert await _status_or_error(session, url) == 200
        restart = asyncio.create_task(server.restart(down=0.3))
        await asyncio.sleep(0.1)
        assert await _status_or_error(session, url) == "ClientConnectorError"
        await restart
        assert server.url == url
        assert await _status_or_error(session, url) == 200
    assert server.count() == 2


async def test_request_ids_count_posts_that_arrived_twice() -> None:
    """request_id_header: arrivals per id, also with record=False; duplicate_ids lists repeats."""
    async with (
        FaultServer(request_id_header="X-Request-Id", record=False) as server,
        client() as session,
    ):
        for rid in ("a", "b", "a"):
            async with session.post(server.url, data=b"x", headers={"X-Request-Id": rid}) as resp:
                assert resp.status == 200
        async with session.get(server.url) as resp:
            assert resp.status == 200
    assert server.request_ids == {"a": 2, "b": 1}
    assert server.duplicate_ids == {"a": 2}


def test_repr_shows_requests_in_service() -> None:
    """The repr tells how many requests are held when a service time is set."""
    assert "in_service=0" in repr(FaultServer(service_time=0.1))
    assert "in_service" not in repr(FaultServer())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capacity": 0, "service_time": 0.1}, "capacity"),
        ({"capacity": 2.5, "service_time": 0.1}, "capacity"),
        ({"capacity": 4}, "service_time"),
        ({"service_time": -1}, "service_time"),
        ({"service_time": float("nan")}, "service_time"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": 10, "rate_burst": 0.5}, "rate_burst"),
        ({"rate_burst": 5}, "rate_burst"),
        ({"over_rate": 429}, "over_rate"),
        ({"over_capacity": "503"}, "over_capacity"),
        ({"exempt_paths": "/w"}, "exempt_paths"),
        ({"request_id_header": " "}, "request_id_header"),
    ],
)
def test_health_options_validated(kwargs: dict[str, object], field: str) -> None:
    """Bad health options raise ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        FaultServer(**kwargs)  # type: ignore[arg-type]


def test_outage_validated() -> None:
    """outage() refuses a non-positive length and a non-Fault."""
    server = FaultServer()
    with pytest.raises(ValueError, match="seconds"):
        server.outage(0)
    with pytest.raises(ValueError, match="fault"):
        server.outage(1, "rst")  # type: ignore[arg-type]


# -- choosing faults -------------------------------------------------------------------------


async def test_script_is_fifo_then_default() -> None:
    """Scripted faults are used in order, per path; then the path default, then the server's."""
    async with FaultServer(default=Fault.status(404)) as server, client() as session:
        server.script("/s", [Fault.status(500), Fault.status(502)])
        server.set_default("/s", Fault.status(204))
        got = []
        for path in ["/s", "/other", "/s", "/s", "/s"]:
            async with session.get(server.url_for(path)) as resp:
                got.append(resp.status)
    assert got == [500, 404, 502, 204, 204]


async def test_precedence_script_path_random_global_random_default() -> None:
    """Script beats path rule beats global rule; a path rule decides alone for its path."""
    async with FaultServer() as server, client() as session:
        server.random(None, {Fault.status(503): 1.0}, seed=0)
        server.random("/p", {Fault.status(502): 1.0}, seed=0)
        server.random("/never", {Fault.status(500): 0.0}, seed=0)
        server.set_default("/never", Fault.status(201))
        server.script("/p", [Fault.status(500)])
        got = []
        for path in ["/p", "/p", "/q", "/never"]:
            async with session.get(server.url_for(path)) as resp:
                got.append(resp.status)
    assert got == [500, 502, 503, 201]


async def _random_run(seed: int) -> list[str]:
    weights = {Fault.status(503): 0.3, Fault.status(500): 0.2, Fault.fin(): 0.1}
    async with FaultServer() as server, client() as session:
        server.random("/r", weights, seed=seed)
        for _ in range(40):
            with contextlib.suppress(aiohttp.ServerDisconnectedError):
                async with session.get(server.url_for("/r")) as resp:
                    await resp.read()
    return [f"{r.action}" for r in server.records]


async def test_random_rule_repeats_with_the_same_seed() -> None:
    """The same seed gives the same sequence of faults; another seed another one."""
    first = await _random_run(7)
    assert first == await _random_run(7)
    assert first != await _random_run(8)
    assert {"ok", "status", "fin"} <= set(first)
    assert len(first) == 40


async def test_random_weights_validated() -> None:
    """Weights over 1 in total, or negative, are refused."""
    server = FaultServer()
    with pytest.raises(ValueError, match="weights"):
        server.random(None, {Fault.fin(): 0.6, Fault.rst(): 0.6}, seed=1)
    with pytest.raises(ValueError, match="weights"):
        server.random(None, {Fault.fin(): -0.1}, seed=1)


async def test_reset_clears_scripts_records_and_counts() -> None:
    """reset() forgets scripts, random rules, records and counters."""
    async with FaultServer() as server, client() as session:
        server.script("/", [Fault.status(500), Fault.status(500)])
        server.random(None, {Fault.status(502): 1.0}, seed=1)
        async with session.get(server.url_for("/")) as resp:
            assert resp.status == 500
        server.reset()
        assert (server.records, server.count(), server.connections_opened) == ([], 0, 0)
        async with session.get(server.url_for("/")) as resp:
            assert resp.status == 200
    assert actions(server) == ["ok"]
    assert server.action_counts == {"ok": 1}


async def test_record_false_keeps_counts_only() -> None:
    """record=False: no records, counts and action_counts still kept."""
    async with FaultServer(record=False) as server, client() as session:
        for _ in range(3):
            async with session.get(server.url) as resp:
                await resp.read()
    assert server.records == []
    assert server.count() == 3
    assert server.action_counts == {"ok": 3}


async def test_plugin_fixture(fault_server: FaultServer) -> None:
    """The fault_server fixture (pytest11 entry point) yields a started server."""
    fault_server.script("/", [Fault.status(503)])
    async with client() as session, session.get(fault_server.url_for("/")) as resp:
        assert resp.status == 503


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Fault.status(99), "code"),
        (lambda: Fault.status(600), "code"),
        (lambda: Fault.status(503, retry_after=-1), "retry_after"),
        (lambda: Fault.status(503, retry_after_date=True), "retry_after"),
        (lambda: Fault.status(204, body=b"x"), "body"),
        (lambda: Fault.ok(headers={"Content-Length": "1"}), "headers"),
        (lambda: Fault.ok(headers={"X": "a\r\nb"}), "headers"),
        (lambda: Fault.cut_body(size=10, sent=10), "sent"),
        (lambda: Fault.cut_body(how="both"), "how"),  # type: ignore[arg-type]
        (lambda: Fault.hang(-1), "seconds"),
        (lambda: Fault.hang(float("inf")), "seconds"),
        (lambda: Fault.drip(chunk=0), "chunk"),
        (lambda: Fault.drip(interval=-0.1), "interval"),
    ],
)
def test_fault_validation_names_the_field(make: object, field: str) -> None:
    """Bad arguments raise ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        make()  # type: ignore[operator]


def test_fault_is_hashable_and_readable() -> None:
    """Faults are equal by value, usable as dict keys, and print like their constructor."""
    assert Fault.status(503, retry_after=1) == Fault.status(503, retry_after=1)
    assert len({Fault.fin(), Fault.fin(), Fault.rst()}) == 2
    assert repr(Fault.status(503, retry_after=2)) == "Fault.status(code=503, retry_after=2)"
    with pytest.raises(AttributeError):
        Fault.fin().kind = "rst"  # type: ignore[misc]


def test_url_before_start_is_an_error() -> None:
    """url is known only once listening."""
    with pytest.raises(RuntimeError, match="started"):
        _ = FaultServer().url


async def test_slow_answers_roll_per_request_and_skip_a_client_gone() -> None:
    """SlowAnswers: with share 1 every answer waits (its headers too), with share 0 none does;
    an answer whose client left while it waited is dropped without an error."""
    from aiohttp_resilient.testing import SlowAnswers

    slow = SlowAnswers(share=1.0, seconds=0.3, seed=1)
    fast = SlowAnswers(share=0.0, seconds=5.0, seed=1)
    async with FaultServer() as server, aiohttp.ClientSession() as session:
        server.serve("/slow", slow)
        server.serve("/fast", fast)
        started = asyncio.get_running_loop().time()
        async with session.get(server.url_for("/slow")) as resp:
            assert (resp.status, await resp.read()) == (200, b"ok")
        assert asyncio.get_running_loop().time() - started >= 0.3  # a lower bound, not a speed
        async with session.get(server.url_for("/fast")) as resp:
            assert await resp.read() == b"ok"
        with pytest.raises(asyncio.TimeoutError):
            await session.get(server.url_for("/slow"), timeout=aiohttp.ClientTimeout(total=0.05))
        await asyncio.sleep(0.4)  # its answer comes due after the client left
    assert (slow.slow, fast.slow) == (2, 0)
    assert server.count("/slow") == 2


@pytest.mark.parametrize(("field", "value"), [("share", 1.5), ("share", "x"), ("seconds", -1.0)])
def test_slow_answers_reject_bad_values_naming_the_field(field: str, value: object) -> None:
    """A bad share or seconds raises ValueError naming it."""
    from aiohttp_resilient.testing import SlowAnswers

    kwargs: dict[str, Any] = {"share": 0.1, "seconds": 1.0, "seed": 1, field: value}
    with pytest.raises(ValueError, match=field):
        SlowAnswers(**kwargs)
