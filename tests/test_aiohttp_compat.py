"""The private pieces of aiohttp the library relies on still exist and behave as assumed.

Each test names one assumption (``_aiohttp_compat.py`` and ``TrackingConnector``'s overrides):
an aiohttp release that renames or changes one fails here, by name, instead of somewhere deep in
a retry. Real sessions against a real loopback server, as everywhere.
"""

from __future__ import annotations

import asyncio
import collections
import inspect

import aiohttp
import pytest
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from aiohttp.client_proto import ResponseHandler

from aiohttp_resilient import TrackingConnector
from aiohttp_resilient._transport._aiohttp_compat import (
    HIDDEN_RETRY_ERRORS,
    HIDDEN_RETRY_METHODS,
    clone_request,
    hidden_retry_on,
    renew_expect_continue,
    session_middlewares,
    set_session_middlewares,
    turn_off_hidden_retry,
)
from aiohttp_resilient.testing import Fault, FaultServer


def test_the_hidden_retry_covers_the_idempotent_methods() -> None:
    assert frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}) == HIDDEN_RETRY_METHODS
    assert (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) == HIDDEN_RETRY_ERRORS


@pytest.mark.parametrize("switched_off", [False, True])
async def test_the_hidden_retry_resends_a_disconnected_get_until_switched_off(
    fault_server: FaultServer, switched_off: bool
) -> None:
    """``ClientSession._retry_connection``: on, a GET that met a FIN is sent once more by
    aiohttp itself (counted on the server); off, it is not."""
    fault_server.script("/g", [Fault.fin(), Fault.ok()])
    async with aiohttp.ClientSession() as session:
        assert hidden_retry_on(session)
        if switched_off:
            turn_off_hidden_retry(session)
            assert not hidden_retry_on(session)
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await session.get(fault_server.url_for("/g"))
        else:
            async with session.get(fault_server.url_for("/g")) as resp:
                assert resp.status == 200
    assert fault_server.count("/g") == (1 if switched_off else 2)


async def test_the_middleware_chain_is_read_and_replaced(fault_server: FaultServer) -> None:
    """``ClientSession._middlewares``: the chain given at construction, and a replaced chain is
    the one that runs."""
    seen: list[str] = []

    def tagged(tag: str) -> aiohttp.ClientMiddlewareType:
        async def middleware(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
            seen.append(tag)
            return await handler(req)

        return middleware

    first = tagged("first")
    async with aiohttp.ClientSession(middlewares=(first,)) as session:
        assert session_middlewares(session) == (first,)
        set_session_middlewares(session, (tagged("outer"), first))
        async with session.get(fault_server.url_for("/m")) as resp:
            await resp.read()
    assert seen == ["outer", "first"]


async def test_a_spent_100_continue_waiter_is_renewed(fault_server: FaultServer) -> None:
    """``ClientRequest._continue``: one waiter per request, done once an attempt got its "100
    Continue"; renewed, the next attempt waits for its own."""
    waiters: list[object] = []

    async def twice(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        resp = await handler(req)
        resp.release()
        spent = getattr(req, "_continue", None)
        assert isinstance(spent, asyncio.Future)
        assert spent.done()
        await req.close()
        renew_expect_continue(req)
        renewed = req._continue  # type: ignore[attr-defined]
        waiters.extend((spent, renewed))
        assert not renewed.done()
        return await handler(req)

    async with aiohttp.ClientSession(middlewares=(twice,)) as session:
        async with session.post(fault_server.url_for("/c"), data=b"x" * 10, expect100=True) as r:
            assert r.status == 200
    assert fault_server.count("/c") == 2
    assert waiters[0] is not waiters[1]


async def test_the_pool_internals_tracking_connector_overrides(fault_server: FaultServer) -> None:
    """``TCPConnector._get(key, traces)``, ``_create_connection(req, traces, timeout)``, the
    pool ``_conns`` (a deque of (protocol, release time) per key), ``_acquired``,
    ``_acquired_per_host``, ``_release_acquired``, ``_limit_per_host``, ``_keepalive_timeout``,
    ``_cleanup_closed_disabled``, ``_cleanup_closed_transports`` and ``_factory``."""
    params = list(inspect.signature(aiohttp.TCPConnector._get).parameters)
    assert params == ["self", "key", "traces"]
    params = list(inspect.signature(aiohttp.TCPConnector._create_connection).parameters)
    assert params == ["self", "req", "traces", "timeout"]
    fault_server.script("/p", [Fault.drip(body=b"x" * 20, chunk=10, interval=0.05)])
    connector = TrackingConnector(limit_per_host=4, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(fault_server.url_for("/p")) as resp:
            assert len(connector._acquired) == 1  # in use while its body streams
            assert sum(len(s) for s in connector._acquired_per_host.values()) == 1
            await resp.read()
        assert not connector._acquired
        assert isinstance(connector._acquired, set)
        assert isinstance(connector._acquired_per_host, collections.defaultdict)
        (pool,) = connector._conns.values()
        assert isinstance(pool, collections.deque)
        ((proto, released),) = pool
        assert isinstance(proto, ResponseHandler)
        assert isinstance(released, float)
        assert connector._limit_per_host == 4
        assert connector._keepalive_timeout == 30
        assert isinstance(connector._cleanup_closed_disabled, bool)
        assert isinstance(connector._cleanup_closed_transports, list)
        assert callable(connector._release_acquired)
        assert isinstance(connector._factory(), ResponseHandler)
        # The reused connection is the pooled one: _get() handed it out.
        async with session.get(fault_server.url_for("/p")) as resp:
            await resp.read()
    assert [r.conn_id for r in fault_server.records] == [1, 1]


async def test_a_clone_made_before_sending_goes_alongside_its_original(
    fault_server: FaultServer,
) -> None:
    """clone_request(): a shallow copy of an unsent request, sent through the same handler at
    the same time as it, gets a response of its own; the original's headers stay its own."""
    fault_server.script("/", [Fault.ok(body=b"one"), Fault.ok(body=b"two")])
    bodies: list[bytes] = []

    async def both(req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        clone = clone_request(req)
        assert clone.headers is not req.headers
        first, second = await asyncio.gather(handler(req), handler(clone))
        assert first is not second
        assert req.response is first
        assert clone.response is second
        bodies.append(await second.read())
        return first

    async with aiohttp.ClientSession(middlewares=(both,)) as session:
        async with session.get(fault_server.url_for("/"), data=b"x") as resp:
            bodies.append(await resp.read())
    assert sorted(bodies) == [b"one", b"two"]
    assert fault_server.count("/") == 2
    assert all(r.body == b"x" for r in fault_server.records)
