"""A raw-``asyncio`` HTTP/1.1 server that answers each request with a scripted :class:`Fault`.

It is written on :class:`asyncio.Protocol` rather than ``aiohttp.web`` for two reasons: byte-exact
control over the wire (half a status line, a body cut after N bytes, RST instead of FIN, dropping
only the Nth request of a connection), and speed, so a benchmark measures the client, not the
server.

Besides per-request faults it models a host's health as a whole: a bounded capacity with a service
time (overload), a request rate limit, outages, and restarts that drop every connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import email.utils
import http
import math
import random
import socket
import ssl as ssl_module
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._faults import Fault, _check_number
from ._ranges import Endpoint

__all__ = ["FaultServer", "Outage", "RecordedRequest"]

#: Bytes of each request body kept in :attr:`RecordedRequest.body`; the size is always exact.
RECORDED_BODY_LIMIT = 64 * 1024
#: Longest request head (request line and headers) accepted before answering 431.
MAX_HEAD_SIZE = 64 * 1024
#: Longest chunk-size line (with extensions) of a chunked body accepted before answering 400.
MAX_CHUNK_LINE = 4096
#: Bytes buffered from a pipelining client while a slow response (hang, drip) is in progress,
#: before the server stops reading from that connection.
MAX_PIPELINE_BUFFER = 1024 * 1024
#: After a 413, the server reads and discards the rest of the body (closing with unread data
#: would make the kernel send RST and the client could lose the 413), but no longer than this.
LINGER_SECONDS = 2.0
#: How long ``stop_listening`` waits for closed connections to finish before aborting them.
CLOSE_WAIT_SECONDS = 2.0
#: The default burst of ``rate_limit=N``: a tenth of a second's worth of requests, at least one,
#: so a client that paces itself is never refused while a flood is cut to the rate at once.
RATE_BURST_SHARE = 0.1

_LINGER_RST = struct.pack("ii", 1, 0)

# Parser states of a connection.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _BUSY, _CLOSED = range(8)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it.

    Attributes:
        method: The request method, e.g. ``"GET"``.
        path: The request target without the query string.
        query: The query string without ``?`` (empty when there is none).
        headers: Request headers, case-insensitive.
        body_size: Exact number of body bytes received (after de-chunking).
        body: The first 64 KiB of the body.
        conn_id: 1-based number of the connection it came on (never reused by one server).
        seq_on_conn: 1-based position of this request on its connection.
        action: What the server did: a fault kind (``"ok"``, ``"status"``, ``"fin"``, ``"rst"``,
            ``"partial_status"``, ``"cut_body"``, ``"hang"``, ``"drip"``), ``"413"`` or
            ``"max_body_rst"`` (body over ``max_body``), ``"dropped"`` (``require_header``
            missing), or ``"aborted"`` (the connection went away before the response was
            written: the body was incomplete, or the connection was dropped while the response
            was held for ``service_time``).
        shed: Why the server refused the request instead of serving it: ``"outage"``,
            ``"rate"`` (over ``rate_limit``) or ``"capacity"`` (over ``capacity``); ``None`` when
            it was served (its fault then came from the scripts, rules and defaults).
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body_size: int
    body: bytes
    conn_id: int
    seq_on_conn: int
    action: str
    shed: str | None = None


@dataclass(slots=True)
class Outage:
    """A time during which a :class:`FaultServer` answers every request with one fault.

    Made by :meth:`FaultServer.outage`; times are :func:`time.monotonic` values, which on Linux
    are the same clock in every process, so another process can compare its own timestamps.

    Attributes:
        start: When the outage begins.
        end: When the server is healthy again.
        fault: What every request in ``[start, end)`` gets (paths in ``exempt_paths`` excepted).
        requests: Requests that arrived during the outage (each got ``fault``).
    """

    start: float
    end: float
    fault: Fault
    requests: int = 0

    @property
    def seconds(self) -> float:
        """How long the outage lasts."""
        return self.end - self.start


class _RandomRule:
    __slots__ = ("_rng", "_table")

    def __init__(self, weights: Mapping[Fault, float], seed: int) -> None:
        total = 0.0
        table: list[tuple[float, Fault]] = []
        for fault, weight in weights.items():
            if not isinstance(fault, Fault):
                raise ValueError(f"weights: keys must be Fault, got {fault!r}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"weights: weight of {fault!r} must be a number, got {weight!r}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weights: weight of {fault!r} must be >= 0, got {weight!r}")
            total += weight
            table.append((total, fault))
        # Slack for float sums such as 0.1 + 0.2 + 0.7.
        if total > 1 + 1e-9:
            raise ValueError(f"weights: probabilities sum to {total:g}, more than 1")
        self._rng = random.Random(seed)
        self._table = table

    def draw(self) -> Fault | None:
        r = self._rng.random()
        for threshold, fault in self._table:
            if r < threshold:
                return fault
        return None


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
        max_requests_per_conn: Close a connection (FIN) after this many responses on it, without
            announcing it with ``Connection: close``.
        max_body: Reject request bodies larger than this many bytes.
        max_body_action: ``"413"``: answer ``413`` with ``Connection: close`` (the rest of the body
            is read and discarded first, so the client sees the answer); ``"rst"``: reset.
        require_header: Requests without this header are dropped: the connection is closed with
            no response, like a CDN rejecting a request.
        record: Keep a :class:`RecordedRequest` per request in :attr:`records`; turn off for
            benchmarks (counts are kept either way).
        capacity: At most this many requests in service at once (it needs ``service_time``):
            a request that finds them all busy gets ``over_capacity`` at once, as an overloaded
            server or its load balancer sheds load.
        service_time: Seconds each served ``ok`` response is held before it is written, so that
            concurrency costs the server something; a held request counts against ``capacity``.
            Only ``ok`` faults are held; other faults are played at once.
        over_capacity: What a request over ``capacity`` gets: ``Fault.status(503)`` by default,
            ``Fault.status(503, retry_after=1)``, ``Fault.rst()``, ...
        rate_limit: Admit at most this many requests per second (a GCRA token bucket); the rest
            get ``over_rate``.
        rate_burst: Requests the bucket admits back to back after a quiet spell; by default a
            tenth of a second's worth, at least one.
        over_rate: What a request over ``rate_limit`` gets: ``Fault.status(429)`` by default.
        compute_retry_after: Give ``status`` faults of outages, ``over_rate`` and
            ``over_capacity`` that set no ``retry_after`` of their own a ``Retry-After`` of the
            whole seconds (at least 1) until the refusal should end: the end of the outage, the
            next free token of the rate limit, ``service_time`` for the capacity.
        exempt_paths: Paths that outages, ``rate_limit``, ``capacity`` and ``service_time`` leave
            alone, such as a health check or a benchmark's warm-up path.
        request_id_header: Count the requests that carry each value of this header in
            :attr:`request_ids`, so that requests which arrived twice (a POST retried after it
            reached the server) can be counted with ``record=False``.
        ssl: Serve HTTPS with this server-side context (the URL's scheme becomes ``https``).

    Attributes:
        records: Recorded requests, in the order they were fully read.
        connections_opened: Connections accepted since the start or the last :meth:`reset`.
        action_counts: Requests per action (see :attr:`RecordedRequest.action`), kept even with
            ``record=False``.
        shed_counts: Requests refused per reason (see :attr:`RecordedRequest.shed`).
        outages: Every :class:`Outage` asked for, in the order asked.
        request_ids: Requests per value of ``request_id_header``, counted as each head is read.
    """

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
        if not isinstance(default, Fault):
            raise ValueError(f"default must be a Fault, got {default!r}")
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
        if capacity is not None:
            _check_number("capacity", capacity, minimum=1, integer=True)
        _check_number("service_time", service_time, minimum=0)
        if capacity is not None and service_time == 0:
            # Unheld responses leave service at once: the capacity could never be reached.
            raise ValueError("capacity needs service_time > 0 (requests are in service while held)")
        if rate_limit is not None:
            _check_number("rate_limit", rate_limit, minimum=0, strict=True)
        if rate_burst is not None:
            if rate_limit is None:
                raise ValueError("rate_burst needs rate_limit")
            _check_number("rate_burst", rate_burst, minimum=1)
        for name, fault in (("over_capacity", over_capacity), ("over_rate", over_rate)):
            if not isinstance(fault, Fault):
                raise ValueError(f"{name} must be a Fault, got {fault!r}")
        if isinstance(exempt_paths, str):
            raise ValueError(f"exempt_paths must be a collection of paths, got {exempt_paths!r}")
        if request_id_header is not None and not request_id_header.strip():
            raise ValueError("request_id_header must be a header name")
        self.host = host
        self.port = port
        self.default = default
        self.idle_close = idle_close
        self.keep_alive_header = keep_alive_header
        self.max_requests_per_conn = max_requests_per_conn
        self.max_body = max_body
        self.max_body_action = max_body_action
        self.require_header = require_header
        self._required_lower = require_header.strip().lower() if require_header else None
        self.record = record
        self.capacity = capacity
        self.service_time = float(service_time)
        self.over_capacity = over_capacity
        self.rate_limit = rate_limit
        self.rate_burst = (
            None if rate_limit is None else rate_burst or max(1.0, rate_limit * RATE_BURST_SHARE)
        )
        self.over_rate = over_rate
        self.compute_retry_after = compute_retry_after
        self.exempt_paths = frozenset(exempt_paths)
        self.request_id_header = request_id_header
        self.ssl = ssl
        self._id_lower = request_id_header.strip().lower() if request_id_header else None
        self.records: list[RecordedRequest] = []
        self.connections_opened = 0
        self.action_counts: dict[str, int] = collections.Counter()
        self.shed_counts: dict[str, int] = collections.Counter()
        self.outages: list[Outage] = []
        self.request_ids: collections.Counter[str] = collections.Counter()
        # Health modes: checked on each request only when one is configured (`_gated`).
        self._gated = capacity is not None or service_time > 0 or rate_limit is not None
        self._in_service = 0
        self._next_outage: Outage | None = None
        # GCRA: the theoretical arrival time of the next request, the interval between two
        # admitted requests, and how far ahead of schedule the burst lets a client run.
        self._tat = 0.0
        self._interval = 0.0 if rate_limit is None else 1.0 / rate_limit
        self._tolerance = 0.0 if self.rate_burst is None else (self.rate_burst - 1) * self._interval
        # Faults with a computed Retry-After, made once per (fault, seconds).
        self._with_seconds: dict[tuple[Fault, int], Fault] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._scripts: dict[str, collections.deque[Fault]] = {}
        self._random: dict[str | None, _RandomRule] = {}
        self._defaults: dict[str, Fault] = {}
        self._endpoints: dict[str, Endpoint] = {}
        self._conns: set[_Connection] = set()
        self._next_conn_id = 0
        self._server: asyncio.Server | None = None
        self._all_closed: asyncio.Event | None = None
        self._url: URL | None = None
        # Rendered responses for faults whose bytes only change with the Date header; the whole
        # cache is dropped when the second changes, so the hot path is one dict lookup.
        self._cache: dict[tuple[Fault, bool, bool], bytes] = {}
        self._cache_second = -1
        self._date = b""

    def __repr__(self) -> str:
        where = str(self._url) if self._url is not None else f"{self.host}:{self.port}"
        state = "listening" if self._server is not None else "stopped"
        return (
            f"<FaultServer {where} {state} requests={self.count()} "
            f"connections={self.connections_opened} open={len(self._conns)}"
            + (f" in_service={self._in_service}" if self.service_time else "")
            + ">"
        )

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
        items = list(faults)
        for fault in items:
            if not isinstance(fault, Fault):
                raise ValueError(f"faults: items must be Fault, got {fault!r}")
        self._scripts.setdefault(path, collections.deque()).extend(items)

    def random(self, path: str | None, weights: Mapping[Fault, float], *, seed: int) -> None:
        """Make requests to ``path`` (any path when None) draw a fault from ``weights``.

        Each request draws from ``random.Random(seed)``: fault ``f`` with probability
        ``weights[f]``; with the remaining probability (``1 - sum``) the default applies. A path
        rule, when present, decides alone: it does not fall through to the global rule. Calling
        it again for the same path replaces the rule and restarts its sequence.

        Example: ``server.random(None, {Fault.fin(): 0.05, Fault.status(503): 0.02}, seed=1)``.
        """
        self._random[path] = _RandomRule(weights, seed)

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
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        self._defaults[path] = fault

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
        _check_number("seconds", seconds, minimum=0, strict=True)
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        if at is not None:
            _check_number("at", at, minimum=0)
        start = time.monotonic() if at is None else at
        outage = Outage(start, start + seconds, fault)
        for other in self.outages:
            if other.start < outage.end and outage.start < other.end:
                raise ValueError(
                    f"outage [{outage.start:.3f}, {outage.end:.3f}) overlaps "
                    f"[{other.start:.3f}, {other.end:.3f})"
                )
        self.outages.append(outage)
        self._next_outage = self._upcoming_outage(time.monotonic())
        self._gated = True
        return outage

    @property
    def in_service(self) -> int:
        """Requests held for ``service_time`` right now."""
        return self._in_service

    @property
    def connections_open(self) -> int:
        """Client connections open right now."""
        return len(self._conns)

    @property
    def duplicate_ids(self) -> dict[str, int]:
        """Values of ``request_id_header`` that arrived more than once, with their counts."""
        return {rid: n for rid, n in self.request_ids.items() if n > 1}

    def reset(self) -> None:
        """Clear scripts, random rules, outages, records and counters (path defaults stay).

        Connection ids keep counting up, so ids recorded before and after stay distinct.
        """
        self._scripts.clear()
        self._random.clear()
        self.records.clear()
        self._counts.clear()
        self.action_counts.clear()
        self.shed_counts.clear()
        self.request_ids.clear()
        self.outages.clear()
        self._next_outage = None
        self.connections_opened = 0

    def count(self, path: str | None = None, *, method: str | None = None) -> int:
        """Requests whose head was fully read, to ``path`` and/or with ``method`` (None: any)."""
        if method is not None:
            method = method.upper()
        return sum(
            n
            for (p, m), n in self._counts.items()
            if (path is None or p == path) and (method is None or m == method)
        )

    def _choose(self, path: str) -> Fault:
        if self._scripts:
            queue = self._scripts.get(path)
            if queue:
                return queue.popleft()
        if self._random:
            rule = self._random.get(path) or self._random.get(None)
            if rule is not None:
                fault = rule.draw()
                if fault is not None:
                    return fault
        if self._defaults:
            return self._defaults.get(path, self.default)
        return self.default

    # -- host health ---------------------------------------------------------------------------

    def _upcoming_outage(self, now: float) -> Outage | None:
        """The outage in progress or the next one, or None."""
        upcoming = [o for o in self.outages if o.end > now]
        return min(upcoming, key=lambda o: o.start) if upcoming else None

    def _shed(self) -> tuple[Fault, str] | None:
        """The fault and reason to refuse the current request with, or None to serve it.

        An outage comes first, then the rate limit (a refused request takes no token), then the
        capacity (an admitted request that finds no free slot has used its token).
        """
        now = time.monotonic()
        outage = self._next_outage
        if outage is not None:
            if now >= outage.end:
                outage = self._next_outage = self._upcoming_outage(now)
            if outage is not None and now >= outage.start:
                outage.requests += 1
                return self._retry_after(outage.fault, outage.end - now), "outage"
        if self.rate_limit is not None:
            tat = self._tat if self._tat > now else now
            if tat - now > self._tolerance:
                return self._retry_after(self.over_rate, tat - self._tolerance - now), "rate"
            self._tat = tat + self._interval
        if self.capacity is not None and self._in_service >= self.capacity:
            return self._retry_after(self.over_capacity, self.service_time), "capacity"
        return None

    def _retry_after(self, fault: Fault, seconds: float) -> Fault:
        """``fault`` with ``Retry-After: ceil(seconds)`` (>= 1) if ``compute_retry_after`` asks."""
        if not self.compute_retry_after or fault.kind != "status" or fault.retry_after is not None:
            return fault
        whole = max(1, math.ceil(seconds))
        key = (fault, whole)
        derived = self._with_seconds.get(key)
        if derived is None:
            derived = self._with_seconds[key] = dataclasses.replace(fault, retry_after=whole)
        return derived

    # -- rendering ---------------------------------------------------------------------------

    def _date_header(self) -> bytes:
        now = int(time.time())
        if now != self._cache_second:
            self._cache_second = now
            self._cache.clear()
            self._date = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._date

    def _render(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        content_length: int,
        *,
        close: bool,
        retry_after: bytes | None = None,
    ) -> bytes:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        parts = [
            f"HTTP/1.1 {status} {reason}\r\n".encode(),
            self._date_header(),
            b"Content-Length: %d\r\n" % content_length,
        ]
        if retry_after is not None:
            parts.append(b"Retry-After: " + retry_after + b"\r\n")
        if close:
            parts.append(b"Connection: close\r\n")
        elif self.keep_alive_header is not None:
            parts.append(b"Keep-Alive: " + self.keep_alive_header.encode("latin-1") + b"\r\n")
        parts.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
        parts.append(b"\r\n")
        return b"".join(parts)

    def _response(self, fault: Fault, *, close: bool, head_only: bool) -> bytes:
        """The complete response for ``ok``/``status`` faults, cached while the Date holds."""
        self._date_header()
        key = (fault, close, head_only)
        data = self._cache.get(key)
        if data is not None:
            return data
        retry_after = None
        if fault.retry_after is not None:
            if fault.retry_after_date:
                # Rounded up so the date is never earlier than the promised delay.
                when = math.ceil(time.time() + fault.retry_after)
                retry_after = email.utils.formatdate(when, usegmt=True).encode()
            elif fault.retry_after == int(fault.retry_after):
                retry_after = b"%d" % int(fault.retry_after)
            else:
                retry_after = repr(float(fault.retry_after)).encode()
        data = self._render(
            fault.code, fault.headers, len(fault.body), close=close, retry_after=retry_after
        )
        if not head_only:
            data += fault.body
        if not fault.retry_after_date:
            self._cache[key] = data
        return data

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
            lambda: _Connection(self),
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

    # -- bookkeeping called by connections -----------------------------------------------------

    def _arrived(self, path: str, method: str, request_id: str | None) -> None:
        key = (path, method)
        self._counts[key] = self._counts.get(key, 0) + 1
        if request_id is not None:
            self.request_ids[request_id] += 1

    def _finished(self, conn: _Connection, action: str, shed: str | None = None) -> None:
        conn.in_request = False
        self.action_counts[action] += 1
        if shed is not None:
            self.shed_counts[shed] += 1
        if self.record:
            self.records.append(
                RecordedRequest(
                    method=conn.method,
                    path=conn.path,
                    query=conn.query,
                    headers=CIMultiDictProxy(CIMultiDict(conn.headers)),
                    body_size=conn.body_size,
                    body=bytes(conn.body[:RECORDED_BODY_LIMIT]),
                    conn_id=conn.conn_id,
                    seq_on_conn=conn.seq,
                    action=action,
                    shed=shed,
                )
            )


class _Connection(asyncio.Protocol):
    """One accepted connection: an incremental HTTP/1.1 request parser plus fault playback."""

    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _HEAD
        self.conn_id = 0
        self.seq = 0
        self.responses = 0
        # Timers: `idle` for idle_close; `timer` for a hang, a drip or the post-413 linger.
        self.idle: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False
        # True from a request's head until it is recorded, so a lost connection records it.
        self.in_request = False
        # The request being read.
        self.method = ""
        self.path = ""
        self.query = ""
        self.headers: list[tuple[str, str]] = []
        self.body_size = 0
        self.body = bytearray()
        self.remaining = 0
        self.keep_alive = True
        self.head_only = False
        self.rejected: str | None = None
        # A dripping response in progress.
        self.drip_data = b""
        self.drip_pos = 0
        self.drip_fault: Fault | None = None
        # An `ok` response held for service_time (it counts against the server's capacity).
        self.held: Fault | None = None
        # An endpoint's streamed response in progress, the transport's flow control, whether the
        # whole body is kept for an endpoint, and the endpoint's answer to the current request.
        self.stream: Any = None
        self.writing_paused = False
        self.keep_body = False
        self.endpoint_answer: tuple[int, Any] | None = None

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        server = self.server
        server._next_conn_id += 1
        server.connections_opened += 1
        self.conn_id = server._next_conn_id
        server._conns.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.state == _CLOSED:
            return
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        self.buf += data
        if self.state == _BUSY:
            if len(self.buf) > MAX_PIPELINE_BUFFER and not self.paused:
                self.paused = True
                assert self.transport is not None
                self.transport.pause_reading()
            return
        self._process()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.stream is not None:
            # Not from inside this callback: asyncio's transport calls it mid-flush, and a stream
            # that ends there and closes the transport would have it report the loss twice.
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        if self.stream is not None and not self.writing_paused:
            self.stream.pump()

    def eof_received(self) -> bool | None:
        # The client half-closed: nothing more will come; close our side too (returning None
        # makes asyncio close the transport). A response in progress is cut, as with any server.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        if self.in_request:
            self.server._finished(self, self.rejected or "aborted")
        self.state = _CLOSED
        server = self.server
        server._conns.discard(self)
        if not server._conns and server._all_closed is not None:
            server._all_closed.set()
        self.transport = None
        self.drip_data = b""
        self.stream = None

    # -- closing -----------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.held is not None:
            # The held response is never written: its slot is free again.
            self.held = None
            self.server._in_service -= 1

    def close(self) -> None:
        """Close with FIN after the written data is flushed."""
        self._cancel_timers()
        self.state = _CLOSED
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._cancel_timers()
        self.state = _CLOSED
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Abort with RST: SO_LINGER (on, 0 s) makes the kernel reset instead of FIN."""
        self._cancel_timers()
        self.state = _CLOSED
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # The socket may already be gone; abort() closes the transport either way.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        transport.abort()

    def _arm_idle(self) -> None:
        idle = self.server.idle_close
        if idle is not None and self.transport is not None:
            if self.idle is not None:
                self.idle.cancel()
            self.idle = asyncio.get_running_loop().call_later(idle, self._idle_expired)

    def _idle_expired(self) -> None:
        self.idle = None
        if self.state == _HEAD and not self.buf:
            self.close()

    def _bad_request(self, status: int) -> None:
        """Answer a malformed request and close: the byte stream cannot be trusted after it."""
        assert self.transport is not None
        if self.in_request:
            self.server._finished(self, str(status))
        self.transport.write(self.server._render(status, (), 0, close=True))
        self.close()

    # -- parsing -----------------------------------------------------------------------------

    def _process(self) -> None:
        """Parse as much of the buffer as possible; each pass consumes bytes or returns."""
        buf = self.buf
        while self.state != _CLOSED and self.state != _BUSY:
            state = self.state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_SIZE:
                        self._bad_request(431)
                    elif not buf:
                        self._arm_idle()
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._on_head(head)
            elif state == _BODY:
                if not buf:
                    return
                n = min(self.remaining, len(buf))
                self._on_body(buf[:n])
                del buf[:n]
                self.remaining -= n
                if self.remaining == 0 and self.state == _BODY:
                    self._on_complete()
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_CHUNK_LINE:
                        self._bad_request(400)
                    return
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                if not line or line.strip(b"0123456789abcdefABCDEF"):
                    self._bad_request(400)
                    return
                size = int(line, 16)
                if size == 0:
                    self.state = _TRAILERS
                else:
                    self.remaining = size
                    self.state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not buf:
                    return
                n = min(self.remaining, len(buf))
                self._on_body(buf[:n])
                del buf[:n]
                self.remaining -= n
                if self.remaining == 0 and self.state == _CHUNK_DATA:
                    self.state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    self._bad_request(400)
                    return
                del buf[:2]
                self.state = _CHUNK_SIZE
            else:  # _TRAILERS
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_SIZE:
                        self._bad_request(431)
                    return
                del buf[: end + 2]
                if end == 0:
                    self._on_complete()

    def _on_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0]
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._bad_request(400)
            return
        method, target, version = parts
        content_length = 0
        chunked = False
        connection = ""
        expect_continue = False
        has_required = self.server._required_lower is None
        required = self.server._required_lower
        id_header = self.server._id_lower
        request_id: str | None = None
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name[-1] in " \t":
                self._bad_request(400)
                return
            value = value.strip()
            headers.append((name, value))
            lname = name.lower()
            if lname == "content-length":
                if not value.isdigit():
                    self._bad_request(400)
                    return
                content_length = int(value)
            elif lname == "transfer-encoding":
                chunked = value.lower().endswith("chunked")
            elif lname == "connection":
                connection = value.lower()
            elif lname == "expect":
                expect_continue = value.lower() == "100-continue"
            if lname == required:
                has_required = True
            if lname == id_header:
                request_id = value
        path, _, query = target.partition("?")
        self.seq += 1
        self.in_request = True
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body_size = 0
        if self.body:
            self.body = bytearray()
        self.rejected = None
        self.endpoint_answer = None
        self.keep_body = path in self.server._endpoints
        self.head_only = method == "HEAD"
        if version == "HTTP/1.1":
            self.keep_alive = "close" not in connection
        else:
            self.keep_alive = "keep-alive" in connection
        server = self.server
        server._arrived(path, method, request_id)

        if not has_required:
            # Like a CDN that refuses the request: no response, just a closed connection.
            server._finished(self, "dropped")
            self.close()
            return
        max_body = server.max_body
        if max_body is not None and not chunked and content_length > max_body:
            if server.max_body_action == "rst":
                server._finished(self, "max_body_rst")
                self.reset()
                return
            self._reject_413()
        elif expect_continue and (content_length or chunked):
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if chunked:
            self.state = _CHUNK_SIZE
        elif content_length:
            self.remaining = content_length
            self.state = _BODY
        else:
            self._on_complete()

    def _reject_413(self) -> None:
        assert self.transport is not None
        self.rejected = "413"
        self.transport.write(
            self.server._render(413, (), 0, close=True) if not self.head_only else b""
        )
        self.timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, self.close)

    def _on_body(self, data: bytearray) -> None:
        self.body_size += len(data)
        server = self.server
        if self.keep_body:
            self.body += data
        elif server.record and len(self.body) < RECORDED_BODY_LIMIT:
            self.body += data[: RECORDED_BODY_LIMIT - len(self.body)]
        max_body = server.max_body
        if max_body is not None and self.rejected is None and self.body_size > max_body:
            # Only reachable for chunked bodies: a Content-Length over the limit is refused early.
            if server.max_body_action == "rst":
                server._finished(self, "max_body_rst")
                self.reset()
            else:
                self._reject_413()

    def _on_complete(self) -> None:
        server = self.server
        if self.rejected is not None:
            server._finished(self, self.rejected)
            self.close()
            return
        if self.keep_body:
            server._endpoints[self.path].received(self)
        if server._gated and self.path not in server.exempt_paths:
            shed = server._shed()
            if shed is not None:
                fault, reason = shed
                server._finished(self, fault.kind, reason)
                self._play(fault)
                return
            fault = server._choose(self.path)
            if fault.kind == "ok" and server.service_time:
                # Recorded when written, so a response dropped while held counts as aborted.
                self._hold(fault)
                return
        else:
            fault = server._choose(self.path)
        server._finished(self, fault.kind)
        self._play(fault)

    def _hold(self, fault: Fault) -> None:
        """Write the ``ok`` response ``service_time`` from now; in service until then."""
        server = self.server
        server._in_service += 1
        self.held = fault
        self.state = _BUSY
        self.timer = asyncio.get_running_loop().call_later(server.service_time, self._release)

    def _release(self) -> None:
        fault = self.held
        assert fault is not None
        assert self.transport is not None
        server = self.server
        self.timer = None
        self.held = None
        server._in_service -= 1
        server._finished(self, fault.kind)
        self._play(fault)  # an endpoint's answer too, when the path has one
        if self.state == _HEAD:
            self._process()  # requests pipelined behind the held one

    def _play(self, fault: Fault) -> None:
        """Answer the current (already recorded) request with ``fault``."""
        server = self.server
        kind = fault.kind
        transport = self.transport
        assert transport is not None
        if kind == "ok" and self.keep_body:
            server._endpoints[self.path].respond(self)
        elif kind == "ok" or kind == "status":
            close = not self.keep_alive
            transport.write(server._response(fault, close=close, head_only=self.head_only))
            self._responded(close)
        elif kind == "fin":
            self.close()
        elif kind == "rst":
            self.reset()
        elif kind == "partial_status":
            transport.write(b"HTTP/1.1 20")
            self.close()
        elif kind == "cut_body":
            transport.write(server._render(200, (), fault.size, close=False) + b"x" * fault.sent)
            if fault.how == "rst":
                self.reset()
            else:
                self.close()
        elif kind == "hang":
            self.state = _BUSY
            self.timer = asyncio.get_running_loop().call_later(fault.seconds, self.close)
        else:  # drip
            close = not self.keep_alive
            transport.write(server._render(fault.code, fault.headers, len(fault.body), close=close))
            self.state = _BUSY
            self.drip_fault = fault
            self.drip_data = b"" if self.head_only else fault.body
            self.drip_pos = 0
            self._drip_next()

    # -- for endpoints (see _ranges.py) -------------------------------------------------------

    def write_simple(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> None:
        """Answer with a whole response."""
        assert self.transport is not None
        close = not self.keep_alive
        data = self.server._render(status, headers, len(body), close=close)
        self.transport.write(data if self.head_only else data + body)
        self._responded(close)

    def start_stream(
        self,
        stream: Any,
        status: int,
        headers: Iterable[tuple[str, str]],
        length: int,
        *,
        close: bool,
    ) -> None:
        """Write a response head; ``stream.pump()`` writes the body as the transport drains."""
        assert self.transport is not None
        self.state = _BUSY
        self.stream = stream
        self.transport.write(self.server._render(status, headers, length, close=close))

    def end_stream(self, cut: str | None) -> None:
        """The streamed body is written (or cut by ``"fin"``/``"rst"``)."""
        self.stream = None
        if cut == "rst":
            self.reset()
        elif cut is not None:
            self.close()
        else:
            self._responded(not self.keep_alive)
            if self.state == _HEAD:
                self._process()

    def _drip_next(self) -> None:
        fault = self.drip_fault
        assert fault is not None
        if self.drip_pos >= len(self.drip_data):
            self.timer = None
            self.drip_fault = None
            self.drip_data = b""
            self._responded(not self.keep_alive)
            if self.state == _HEAD:
                self._process()
            return
        self.timer = asyncio.get_running_loop().call_later(fault.interval, self._drip_write)

    def _drip_write(self) -> None:
        fault = self.drip_fault
        assert fault is not None
        assert self.transport is not None
        end = self.drip_pos + fault.chunk
        self.transport.write(self.drip_data[self.drip_pos : end])
        self.drip_pos = end
        self._drip_next()

    def _responded(self, close: bool) -> None:
        """A full response went out: keep the connection for the next request, or close it."""
        self.responses += 1
        limit = self.server.max_requests_per_conn
        if close or (limit is not None and self.responses >= limit):
            self.close()
            return
        self.state = _HEAD
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
