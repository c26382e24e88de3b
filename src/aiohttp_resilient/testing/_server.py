"""A raw-``asyncio`` HTTP/1.1 server that answers each request with a scripted :class:`Fault`.

It is written on :class:`asyncio.Protocol` rather than ``aiohttp.web`` for two reasons: byte-exact
control over the wire (half a status line, a body cut after N bytes, RST instead of FIN, dropping
only the Nth request of a connection), and speed, so a benchmark measures the client, not the
server.

Besides per-request faults it models a host's health as a whole: a bounded capacity with a service
time (overload), a request rate limit, outages, and restarts that drop every connection.

This module is the facade that ties the parts together, one concern each: ``_http11`` (the
request parser), ``_render`` (response bytes), ``_conn`` (a connection playing faults),
``_plan`` (scripts, random rules, defaults), ``_records`` (records and counts), ``_load``
(:class:`ServerLoad`: capacity, service time, rate limit, outages).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, cast, overload

from yarl import URL

from ._conn import ServerConnection
from ._endpoint import Endpoint
from ._faults import Fault, _check_number
from ._load import LoadShaper, Outage, ServerLoad, resolve_load
from ._plan import FaultPlan
from ._records import Ledger, RecordedRequest
from ._render import ResponseWriter

__all__ = ["FaultServer", "Outage", "RecordedRequest", "ServerLoad"]

#: How long ``stop_listening`` waits for closed connections to finish before aborting them.
CLOSE_WAIT_SECONDS = 2.0

_T = TypeVar("_T")


class _LoadOption(Generic[_T]):
    """A :class:`FaultServer` attribute kept in its :class:`ServerLoad`: read from it, and set
    by replacing it (validated, in effect from the next request)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _LoadOption[_T]: ...
    @overload
    def __get__(self, obj: FaultServer, owner: type) -> _T: ...
    def __get__(self, obj: FaultServer | None, owner: type) -> _T | _LoadOption[_T]:
        if obj is None:
            return self
        return cast(_T, getattr(obj.load, self._name))

    def __set__(self, obj: FaultServer, value: _T) -> None:
        changes: dict[str, Any] = {self._name: value}
        obj.load = dataclasses.replace(obj.load, **changes)


class FaultServer:
    """A loopback HTTP/1.1 server whose answers are scripted faults.

    Use it as an async context manager; every request gets one :class:`Fault`, chosen in this
    order: the next item of the path's :meth:`script`, else the path's :meth:`random` rule, else
    the global random rule (``path=None``), else the path's :meth:`set_default`, else ``default``.

    Example::

        async with FaultServer() as server:
            server.script("/", [Fault.status(503, retry_after=0), Fault.ok()])
            async with aiohttp.ClientSession() as session:
                async with session.get(server.url_for("/")) as resp:
                    assert resp.status == 503
            assert server.count("/") == 1

    Args:
        host: Address to listen on; a literal IP address (``"127.0.0.1"``, ``"::1"``).
        port: Port to listen on; 0 picks a free one, kept across :meth:`start_listening`.
        default: The fault for requests nothing else decides.
        idle_close: Close a keep-alive connection after it was idle this many seconds, without
            ``Connection: close`` (a plain FIN), as servers with short idle timeouts do.
        keep_alive_header: Send ``Keep-Alive: <this value>`` (``"timeout=5"``, say) with every
            response that keeps the connection open.
        max_requests_per_conn: Close a connection (FIN) after this many responses on it, without
            announcing it with ``Connection: close``.
        max_body: Reject request bodies larger than this many bytes.
        max_body_action: ``"413"``: answer ``413`` with ``Connection: close`` (the rest of the body
            is read and discarded first, so the client sees the answer); ``"rst"``: reset.
        require_header: Requests without this header are dropped: the connection is closed with
            no response, like a CDN rejecting a request.
        record: Keep a :class:`RecordedRequest` per request in :attr:`records`; turn off for
            benchmarks (counts are kept either way).
        load: The load shaping as one :class:`ServerLoad` (capacity, service time, rate limit,
            exempt paths); the keywords below build one instead, and may not be given with it.
        capacity, service_time, over_capacity, rate_limit, rate_burst, over_rate,
        compute_retry_after, exempt_paths: The fields of :class:`ServerLoad` (see there), as
            keywords: ``FaultServer(capacity=16, service_time=0.01)`` is
            ``FaultServer(load=ServerLoad(capacity=16, service_time=0.01))``.
        request_id_header: Count the requests that carry each value of this header in
            :attr:`request_ids`, so that requests which arrived twice (a POST retried after it
            reached the server) can be counted with ``record=False``.
        ssl: Serve HTTPS with this server-side context (the URL's scheme becomes ``https``).

    Attributes:
        load: The :class:`ServerLoad` in effect; assign a new one (``dataclasses.replace``) to
            change it from the next request on. Its fields read as attributes of the server
            too, and setting one (``server.service_time = 0.0``) replaces ``load``.
        records: Recorded requests, in the order they were fully read.
        connections_opened: Connections accepted since the start or the last :meth:`reset`.
        action_counts: Requests per action (see :attr:`RecordedRequest.action`), kept even with
            ``record=False``.
        shed_counts: Requests refused per reason (see :attr:`RecordedRequest.shed`).
        outages: Every :class:`Outage` asked for, in the order asked.
        request_ids: Requests per value of ``request_id_header``, counted as each head is read.
    """

    capacity: _LoadOption[int | None] = _LoadOption()
    service_time: _LoadOption[float] = _LoadOption()
    over_capacity: _LoadOption[Fault] = _LoadOption()
    rate_limit: _LoadOption[float | None] = _LoadOption()
    over_rate: _LoadOption[Fault] = _LoadOption()
    compute_retry_after: _LoadOption[bool] = _LoadOption()
    exempt_paths: _LoadOption[frozenset[str]] = _LoadOption()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Fault = Fault.ok(),  # noqa: B008 - Fault is immutable, sharing it is safe
        idle_close: float | None = None,
        keep_alive_header: str | None = None,
        max_requests_per_conn: int | None = None,
        max_body: int | None = None,
        max_body_action: Literal["413", "rst"] = "413",
        require_header: str | None = None,
        record: bool = True,
        load: ServerLoad | None = None,
        capacity: int | None = None,
        service_time: float = 0.0,
        over_capacity: Fault = Fault.status(503),  # noqa: B008 - immutable, see default
        rate_limit: float | None = None,
        rate_burst: float | None = None,
        over_rate: Fault = Fault.status(429),  # noqa: B008 - immutable, see default
        compute_retry_after: bool = False,
        exempt_paths: Iterable[str] = (),
        request_id_header: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        keywords = ServerLoad(
            capacity=capacity,
            service_time=service_time,
            over_capacity=over_capacity,
            rate_limit=rate_limit,
            rate_burst=rate_burst,
            over_rate=over_rate,
            compute_retry_after=compute_retry_after,
            exempt_paths=exempt_paths,
        )
        self._shaper = LoadShaper(resolve_load(load, keywords))
        _check_options(
            idle_close=idle_close,
            keep_alive_header=keep_alive_header,
            max_requests_per_conn=max_requests_per_conn,
            max_body=max_body,
            max_body_action=max_body_action,
            require_header=require_header,
            request_id_header=request_id_header,
        )
        self._plan = FaultPlan(default)
        self._writer = ResponseWriter(keep_alive_header)
        self._ledger = Ledger(record=record)
        self.host = host
        self.port = port
        self.idle_close = idle_close
        self.max_requests_per_conn = max_requests_per_conn
        self.max_body = max_body
        self.max_body_action = max_body_action
        self.require_header = require_header
        self._required_lower = require_header.strip().lower() if require_header else None
        self.request_id_header = request_id_header
        self._id_lower = request_id_header.strip().lower() if request_id_header else None
        self.ssl = ssl
        # The ledger's and the shaper's containers, never replaced (reset() clears them).
        self.records = self._ledger.records
        self.action_counts = self._ledger.action_counts
        self.shed_counts = self._ledger.shed_counts
        self.request_ids = self._ledger.request_ids
        self.outages = self._shaper.outages
        self.connections_opened = 0
        self._endpoints: dict[str, Endpoint] = {}
        self._conns: set[ServerConnection] = set()
        self._next_conn_id = 0
        self._server: asyncio.Server | None = None
        self._all_closed: asyncio.Event | None = None
        self._url: URL | None = None

    def __repr__(self) -> str:
        where = str(self._url) if self._url is not None else f"{self.host}:{self.port}"
        state = "listening" if self._server is not None else "stopped"
        return (
            f"<FaultServer {where} {state} requests={self.count()} "
            f"connections={self.connections_opened} open={len(self._conns)}"
            + (f" in_service={self.in_service}" if self.service_time else "")
            + ">"
        )

    # -- options kept by the parts ---------------------------------------------------------------

    @property
    def load(self) -> ServerLoad:
        """The :class:`ServerLoad` in effect."""
        return self._shaper.load

    @load.setter
    def load(self, load: ServerLoad) -> None:
        self._shaper.configure(resolve_load(load, _NO_KEYWORDS))

    @property
    def rate_burst(self) -> float | None:
        """The rate limit's burst in effect (see :attr:`ServerLoad.burst`)."""
        return self._shaper.load.burst

    @rate_burst.setter
    def rate_burst(self, value: float | None) -> None:
        self.load = dataclasses.replace(self.load, rate_burst=value)

    @property
    def default(self) -> Fault:
        """The fault for requests nothing else decides."""
        return self._plan.default

    @default.setter
    def default(self, fault: Fault) -> None:
        if not isinstance(fault, Fault):
            raise ValueError(f"default must be a Fault, got {fault!r}")
        self._plan.default = fault

    @property
    def record(self) -> bool:
        """Whether a :class:`RecordedRequest` is kept per request."""
        return self._ledger.record

    @record.setter
    def record(self, value: bool) -> None:
        self._ledger.record = value

    @property
    def keep_alive_header(self) -> str | None:
        """The ``Keep-Alive`` header value sent on responses that keep the connection."""
        return self._writer.keep_alive_header

    @keep_alive_header.setter
    def keep_alive_header(self, value: str | None) -> None:
        self._writer = ResponseWriter(value)  # a fresh cache: cached responses carry the old one

    @property
    def url(self) -> URL:
        """Base URL, e.g. ``http://127.0.0.1:PORT`` or ``http://[::1]:PORT``."""
        if self._url is None:
            raise RuntimeError("FaultServer.url is known once the server has started")
        return self._url

    def url_for(self, path: str) -> URL:
        """``url_for("/a?b=1")`` is the base URL joined with that path (and query)."""
        if not path.startswith("/"):
            path = "/" + path
        return self.url.join(URL(path))

    # -- scripting ---------------------------------------------------------------------------

    def script(self, path: str, faults: Iterable[Fault]) -> None:
        """Queue faults for ``path``: each request to it takes the next one (FIFO).

        Calling it again appends. When the queue is used up the other rules apply again.
        """
        self._plan.script(path, faults)

    def random(self, path: str | None, weights: Mapping[Fault, float], *, seed: int) -> None:
        """Make requests to ``path`` (any path when None) draw a fault from ``weights``.

        Each request draws from ``random.Random(seed)``: fault ``f`` with probability
        ``weights[f]``; with the remaining probability (``1 - sum``) the default applies. A path
        rule, when present, decides alone: it does not fall through to the global rule. Calling
        it again for the same path replaces the rule and restarts its sequence.

        Example: ``server.random(None, {Fault.fin(): 0.05, Fault.status(503): 0.02}, seed=1)``.
        """
        self._plan.random(path, weights, seed=seed)

    def serve(self, path: str, endpoint: Endpoint) -> None:
        """Let ``endpoint`` (a :class:`RangedFile`, an :class:`IdempotentSink`) answer ``path``.

        Faults still apply: the endpoint answers where an ``ok`` fault would, and sees every
        body that arrived whole, whatever fault then answers it.
        """
        if not callable(getattr(endpoint, "respond", None)):
            raise ValueError(f"endpoint must have respond() and received(), got {endpoint!r}")
        self._endpoints[path] = endpoint

    def set_default(self, path: str, fault: Fault) -> None:
        """Use ``fault`` for requests to ``path`` that no script or random rule decides."""
        self._plan.set_default(path, fault)

    def outage(
        self,
        seconds: float,
        fault: Fault = Fault.rst(),  # noqa: B008 - Fault is immutable, sharing it is safe
        *,
        at: float | None = None,
    ) -> Outage:
        """Answer every request with ``fault`` for ``seconds``, then be healthy again.

        The outage starts now, or at ``at`` (a :func:`time.monotonic` value: on Linux another
        process's clock too). Requests to ``exempt_paths`` are served as usual; requests held
        for ``service_time`` when it starts are still answered. Outages may not overlap.

        Example::

            outage = server.outage(3.0, Fault.status(503))
            ...
            print(outage.requests, "requests arrived during the outage")

        Returns:
            The :class:`Outage`, also appended to :attr:`outages`; its ``requests`` counts up
            as requests arrive during it.
        """
        return self._shaper.add_outage(seconds, fault, at)

    # -- what the server saw -------------------------------------------------------------------

    @property
    def in_service(self) -> int:
        """Requests held for ``service_time`` right now."""
        return self._shaper.in_service

    @property
    def connections_open(self) -> int:
        """Client connections open right now."""
        return len(self._conns)

    @property
    def duplicate_ids(self) -> dict[str, int]:
        """Values of ``request_id_header`` that arrived more than once, with their counts."""
        return self._ledger.duplicate_ids()

    def reset(self) -> None:
        """Clear scripts, random rules, outages, records and counters (path defaults stay).

        Connection ids keep counting up, so ids recorded before and after stay distinct.
        """
        self._plan.clear()
        self._ledger.clear()
        self._shaper.clear_outages()
        self.connections_opened = 0

    def count(self, path: str | None = None, *, method: str | None = None) -> int:
        """Requests whose head was fully read, to ``path`` and/or with ``method`` (None: any)."""
        return self._ledger.count(path, method)

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FaultServer:
        await self.start_listening()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_listening()

    async def start_listening(self) -> None:
        """Listen (again) on the same host and port; a no-op if already listening."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: ServerConnection(self),
            host=self.host,
            port=self.port,
            reuse_address=True,
            ssl=self.ssl,
        )
        self._server = server
        if self.port == 0:
            self.port = int(server.sockets[0].getsockname()[1])
        scheme = "http" if self.ssl is None else "https"
        self._url = URL.build(scheme=scheme, host=self.host, port=self.port)

    async def stop_listening(self, *, abort: bool = False) -> None:
        """Close the listening socket and every open connection.

        New connection attempts are refused until :meth:`start_listening`. Responses in progress
        (held for ``service_time``, hanging, dripping) are never finished; a request whose
        response was still held is recorded as ``"aborted"``.

        Args:
            abort: Drop every connection at once, as the kernel does when the server process is
                killed: output not yet flushed is lost, and the client sees FIN (or RST where
                the server left data unread). By default each connection is closed after its
                pending output is flushed (FIN).
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            if abort:
                conn.abort()
            else:
                conn.close()
        if self._conns:
            # connection_lost runs a loop iteration or so after close(), once data is flushed.
            self._all_closed = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_closed.wait(), CLOSE_WAIT_SECONDS)
            except asyncio.TimeoutError:
                for conn in list(self._conns):
                    conn.abort()
                await asyncio.sleep(0)
            finally:
                self._all_closed = None
        if server is not None:
            await server.wait_closed()

    async def restart(self, down: float = 0.0) -> None:
        """Go away as a killed process does, stay away ``down`` seconds, listen again.

        Every open connection is dropped (``stop_listening(abort=True)``), connection attempts
        are refused meanwhile, and the server comes back on the same port with its scripts,
        rules and counts.
        """
        _check_number("down", down, minimum=0)
        await self.stop_listening(abort=True)
        await asyncio.sleep(down)
        await self.start_listening()

    # -- called by connections (the Host protocol of _conn.py) ---------------------------------

    def _connected(self, conn: ServerConnection) -> int:
        self._next_conn_id += 1
        self.connections_opened += 1
        self._conns.add(conn)
        return self._next_conn_id

    def _disconnected(self, conn: ServerConnection) -> None:
        self._conns.discard(conn)
        if not self._conns and self._all_closed is not None:
            self._all_closed.set()


#: ``load=`` alone: the keywords at their defaults.
_NO_KEYWORDS = ServerLoad()


def _check_options(
    *,
    idle_close: float | None,
    keep_alive_header: str | None,
    max_requests_per_conn: int | None,
    max_body: int | None,
    max_body_action: str,
    require_header: str | None,
    request_id_header: str | None,
) -> None:
    """Raise ValueError naming the first of the connection and request options that is bad."""
    if idle_close is not None and not (math.isfinite(idle_close) and idle_close > 0):
        raise ValueError(f"idle_close must be > 0 or None, got {idle_close!r}")
    if max_requests_per_conn is not None and max_requests_per_conn < 1:
        raise ValueError(f"max_requests_per_conn must be >= 1, got {max_requests_per_conn!r}")
    if max_body is not None and max_body < 0:
        raise ValueError(f"max_body must be >= 0, got {max_body!r}")
    if max_body_action not in ("413", "rst"):
        raise ValueError(f"max_body_action must be '413' or 'rst', got {max_body_action!r}")
    if keep_alive_header is not None and (
        not isinstance(keep_alive_header, str) or not keep_alive_header.strip()
    ):
        raise ValueError(f"keep_alive_header must be a header value, got {keep_alive_header!r}")
    if require_header is not None and not require_header.strip():
        raise ValueError("require_header must be a header name")
    if request_id_header is not None and not request_id_header.strip():
        raise ValueError("request_id_header must be a header name")
