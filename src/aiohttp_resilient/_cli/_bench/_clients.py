"""The clients the benchmark compares, each built inside its own client process.

Every client answers one question the same way: ``await fetch(url, method, headers)`` sends a
GET (or a POST with a small body), reads the whole body, and returns only if the answer is a 200
with its body; anything else raises. Retrying clients retry the same family of errors
(``ServerDisconnectedError``, ``ClientOSError`` with its subclass ``ClientConnectorError``,
``ClientPayloadError``, and the statuses 429/500/502/503/504 where they can) with at most
:data:`ATTEMPTS` attempts. ``*-defaults`` clients are configured as their documentation's first
example does (what users get); ``*-tuned`` ones with the same small backoff as ours (what an
expert gets), and they retry a POST only when it cannot have reached the server (a refused
connection): a generic decorator cannot see the method, so their fetch raises an error outside
the family for the rest. ``benchmarks/README.md`` lists each configuration.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from ..._hedge._policy import HedgePolicy
from ..._retry._decorator import retry_on_disconnect
from ..._retry._events import RetryEvent
from ..._retry._middleware import RetryMiddleware
from ..._retry._policy import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_RETRY_METHODS,
)
from ..._session import resilient_session
from ..._transport._aiohttp_compat import turn_off_hidden_retry

__all__ = [
    "ATTEMPTS",
    "CLIENTS",
    "OPT_IN_CLIENTS",
    "POST_BODY",
    "TAIL_CLIENTS",
    "BuiltClient",
    "ClientSpec",
    "Fetch",
    "StatusError",
    "missing_module",
]

#: Attempts in all for every retrying client: our default, so the schedules compare.
ATTEMPTS: Final = DEFAULT_ATTEMPTS
#: The statuses a fair alternative retries (ours by default).
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
#: The body of every POST (bytes: every client can send it again intact).
POST_BODY: Final = b'{"op": "create"}'

#: ``fetch(url, method, headers)``: one logical request; returns on a 200 with its body.
Fetch = Callable[[str, str, "Mapping[str, str] | None"], Awaitable[None]]


class StatusError(Exception):
    """The answer was not a 200: what a client without status retries ends with."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


#: What the fair alternatives retry.
RETRY_ERRORS: Final = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientPayloadError,
)


class _RetryableStatusError(StatusError):
    """A retryable status, raised inside the wrappers so that they retry it."""


class _MaybeSentError(Exception):
    """A POST failed after it may have reached the server: outside the family, not retried."""


class BuiltClient:
    """A ready client: ``fetch``, the attempts it counted itself, and how to close it."""

    __slots__ = ("_close", "attempts", "fetch")

    def __init__(self, fetch: Fetch, close: Callable[[], Awaitable[None]]) -> None:
        self.fetch = fetch
        self._close = close
        #: Attempts counted by the retry layer itself (``None``: it has none to count).
        self.attempts: int | None = None

    async def close(self) -> None:
        await self._close()


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """A client of the comparison.

    Attributes:
        name: Its name in tables and on the command line.
        build: Makes it, given the concurrency.
        requires: The module it needs beyond the runtime dependencies (the ``bench`` extra).
        config: How it is configured, one line, for the reports.
    """

    name: str
    build: Callable[[int], Awaitable[BuiltClient]]
    requires: str | None
    config: str


def missing_module(spec: ClientSpec) -> str | None:
    """The module ``spec`` needs and cannot import, or ``None``."""
    if spec.requires is None or importlib.util.find_spec(spec.requires) is not None:
        return None
    return spec.requires


def _session(concurrency: int, *, hidden_retry: bool = True) -> aiohttp.ClientSession:
    # The pool never throttles the run: at least as many connections as workers.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(100, concurrency)))
    if not hidden_retry:
        turn_off_hidden_retry(session)
    return session


def _plain_fetch(session: aiohttp.ClientSession) -> Fetch:
    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        data = POST_BODY if method == "POST" else None
        async with session.request(method, url, headers=headers, data=data) as resp:
            await resp.read()
            if resp.status != 200:
                raise StatusError(resp.status)

    return fetch


def _raising_fetch(session: aiohttp.ClientSession, *, careful_posts: bool) -> Fetch:
    """A fetch for the wrappers: a retryable status raises an error they retry.

    With ``careful_posts``, a POST raises an error they do not retry unless it cannot have
    reached the server (``ClientConnectorError``: the connection was refused); a generic
    decorator cannot see the method, so this is how it is configured well.
    """

    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        data = POST_BODY if method == "POST" else None
        try:
            async with session.request(method, url, headers=headers, data=data) as resp:
                if resp.status in RETRY_STATUSES and not (careful_posts and method == "POST"):
                    raise _RetryableStatusError(resp.status)
                await resp.read()
                if resp.status != 200:
                    raise StatusError(resp.status)
        except RETRY_ERRORS as exc:
            if careful_posts and method == "POST" and not isinstance(exc, _NOT_SENT):
                raise _MaybeSentError(f"POST may have reached the server: {exc!r}") from exc
            raise

    return fetch


#: The one error of the family after which a request cannot have reached the server.
_NOT_SENT: Final = aiohttp.ClientConnectorError


def _counted(client: BuiltClient, inner: Fetch) -> Fetch:
    """``inner``, counting each call as one attempt of ``client``."""
    client.attempts = 0

    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        client.attempts = (client.attempts or 0) + 1
        await inner(url, method, headers)

    return fetch


# -- the clients -------------------------------------------------------------------------------


async def _raw(concurrency: int) -> BuiltClient:
    session = _session(concurrency)
    return BuiltClient(_plain_fetch(session), session.close)


async def _raw_no_hidden(concurrency: int) -> BuiltClient:
    session = _session(concurrency, hidden_retry=False)
    return BuiltClient(_plain_fetch(session), session.close)


async def _resilient(concurrency: int) -> BuiltClient:
    built: BuiltClient

    def on_retry(event: RetryEvent) -> None:
        built.attempts = (built.attempts or 0) + 1

    session = resilient_session(
        limit=max(100, concurrency), limit_per_host=max(16, concurrency), on_retry=on_retry
    )
    built = BuiltClient(_plain_fetch(session), session.close)
    built.attempts = 0  # retries only; the runner adds one per logical request
    return built


async def _resilient_hedge(concurrency: int) -> BuiltClient:
    built: BuiltClient

    def on_retry(event: RetryEvent) -> None:
        built.attempts = (built.attempts or 0) + 1

    session = resilient_session(
        limit=max(100, concurrency),
        limit_per_host=max(16, concurrency),
        on_retry=on_retry,
        hedge=HedgePolicy(),
    )
    built = BuiltClient(_plain_fetch(session), session.close)
    built.attempts = 0  # retries only (hedges are counted by the server)
    return built


async def _hedge_python(concurrency: int) -> BuiltClient:
    hedge: Any = importlib.import_module("hedge")
    transport: Any = importlib.import_module("hedge.transport")
    # As its README shows: HedgeConfig() defaults (p90 per host, 10% token bucket), around an
    # aiohttp session whose pool does not throttle the run.
    session = transport.HedgedAiohttpSession(
        config=hedge.HedgeConfig(),
        connector=aiohttp.TCPConnector(limit=max(100, concurrency)),
    )

    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        data = POST_BODY if method == "POST" else None
        resp = await getattr(session, method.lower())(url, headers=headers, data=data)
        try:
            await resp.read()
            if resp.status != 200:
                raise StatusError(resp.status)
        finally:
            resp.release()

    return BuiltClient(fetch, session.close)


async def _middleware_only(concurrency: int) -> BuiltClient:
    built: BuiltClient

    def on_retry(event: RetryEvent) -> None:
        built.attempts = (built.attempts or 0) + 1

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(100, concurrency)),
        middlewares=[RetryMiddleware(on_retry=on_retry)],
    )
    built = BuiltClient(_plain_fetch(session), session.close)
    built.attempts = 0
    return built


async def _decorated(concurrency: int) -> BuiltClient:
    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    built.attempts = 0

    def on_retry(event: RetryEvent) -> None:
        built.attempts = (built.attempts or 0) + 1

    plain = _plain_fetch(session)

    # Decorating says the whole function is safe to run again: POSTs are retried too.
    @retry_on_disconnect(on_retry=on_retry)
    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        await plain(url, method, headers)

    built.fetch = fetch
    return built


async def _aiohttp_retry(concurrency: int, *, tuned: bool) -> BuiltClient:
    ar: Any = importlib.import_module("aiohttp_retry")
    session = _session(concurrency)
    if tuned:
        options = ar.ExponentialRetry(
            attempts=ATTEMPTS,
            start_timeout=DEFAULT_BACKOFF_BASE,
            max_timeout=DEFAULT_BACKOFF_MAX,
            factor=2.0,
            statuses=set(RETRY_STATUSES),
            exceptions=set(RETRY_ERRORS),
            # Its default is every method, POST included; an expert names the idempotent ones.
            # aiohttp-retry 2.9 applies `methods` to status retries only: an error is retried
            # whatever the method, so a POST cut off in flight is still sent again.
            methods=set(DEFAULT_RETRY_METHODS),
        )
        client = ar.RetryClient(client_session=session, retry_options=options)
    else:
        client = ar.RetryClient(client_session=session)
    built = BuiltClient(_plain_fetch(session), client.close)
    counting = _CountingSession(session, built)
    client._client = counting  # count the attempts aiohttp-retry makes, at no cost to it

    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        data = POST_BODY if method == "POST" else None
        async with client.request(method, url, headers=headers, data=data) as resp:
            await resp.read()
            if resp.status != 200:
                raise StatusError(resp.status)

    built.fetch = fetch
    return built


class _CountingSession:
    """Stands in for the session inside aiohttp-retry: counts each ``request`` call."""

    def __init__(self, session: aiohttp.ClientSession, built: BuiltClient) -> None:
        self._session = session
        self._built = built
        built.attempts = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self._built.attempts = (self._built.attempts or 0) + 1
        return self._session.request(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


#: What the wrappers retry: the error family, and the retryable statuses raised as errors.
_FAMILY: Final = (*RETRY_ERRORS, _RetryableStatusError)


async def _backoff(concurrency: int, *, tuned: bool) -> BuiltClient:
    import backoff

    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    inner = _counted(built, _raising_fetch(session, careful_posts=tuned))
    if tuned:
        decorator = backoff.on_exception(
            backoff.expo,
            _FAMILY,
            max_tries=ATTEMPTS,
            factor=DEFAULT_BACKOFF_BASE,
            max_value=DEFAULT_BACKOFF_MAX,
            logger=None,
        )
    else:
        decorator = backoff.on_exception(backoff.expo, _FAMILY, max_tries=ATTEMPTS, logger=None)

    @decorator
    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        await inner(url, method, headers)

    built.fetch = fetch
    return built


async def _tenacity(concurrency: int, *, tuned: bool) -> BuiltClient:
    tn: Any = importlib.import_module("tenacity")
    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    inner = _counted(built, _raising_fetch(session, careful_posts=tuned))
    if tuned:
        decorator = tn.retry(
            retry=tn.retry_if_exception_type(_FAMILY),
            stop=tn.stop_after_attempt(ATTEMPTS),
            wait=tn.wait_random_exponential(
                multiplier=DEFAULT_BACKOFF_BASE, max=DEFAULT_BACKOFF_MAX
            ),
            reraise=True,
        )
    else:
        # tenacity's defaults retry any error forever, at once: the only change is the bound.
        decorator = tn.retry(stop=tn.stop_after_attempt(ATTEMPTS), reraise=True)

    async def once(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        await inner(url, method, headers)

    built.fetch = decorator(once)
    return built


#: stamina adds its jitter to the exponential wait (uniform in [0, wait_jitter]) instead of
#: drawing the wait under it (full jitter): a jitter of one base keeps the waits close to ours.
STAMINA_JITTER: Final = DEFAULT_BACKOFF_BASE


async def _stamina(concurrency: int) -> BuiltClient:
    stamina: Any = importlib.import_module("stamina")
    # Its default instrumentation logs every retry at WARNING (or feeds Prometheus/structlog
    # where installed); the other wrappers run without logging (backoff: logger=None).
    stamina.instrumentation.set_on_retry_hooks([])
    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    inner = _counted(built, _raising_fetch(session, careful_posts=True))

    # timeout stays at its default, 45 s for all the attempts: longer than any run here.
    decorator = stamina.retry(
        on=_FAMILY,
        attempts=ATTEMPTS,
        wait_initial=DEFAULT_BACKOFF_BASE,
        wait_max=DEFAULT_BACKOFF_MAX,
        wait_jitter=STAMINA_JITTER,
        wait_exp_base=2,
    )

    async def once(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        await inner(url, method, headers)

    built.fetch = decorator(once)
    return built


async def _hand_loop(concurrency: int) -> BuiltClient:
    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    inner = _counted(built, _raising_fetch(session, careful_posts=False))

    async def fetch(url: str, method: str, headers: Mapping[str, str] | None) -> None:
        # What people write: retry the family at once, a bounded number of times, any method.
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await inner(url, method, headers)
            except _FAMILY:  # noqa: PERF203 - the loop people write, as they write it
                if attempt == ATTEMPTS:
                    raise
                await asyncio.sleep(0)
            else:
                return

    built.fetch = fetch
    return built


#: Clients run only where named (``--clients``) or in the ``tail`` scenario: hedging answers a
#: slow tail, and the per-request fault and host-health tables are about retries.
OPT_IN_CLIENTS: Final = frozenset({"resilient-hedge", "hedge-python"})
#: The ``tail`` scenario's clients when ``--clients`` does not say.
TAIL_CLIENTS: Final = ("raw", "resilient", "resilient-hedge", "hedge-python")


def _partial(
    build: Callable[..., Awaitable[BuiltClient]], **kwargs: Any
) -> Callable[[int], Awaitable[BuiltClient]]:
    def make(concurrency: int) -> Awaitable[BuiltClient]:
        return build(concurrency, **kwargs)

    return make


_SMALL = f"{ATTEMPTS} attempts, waits {DEFAULT_BACKOFF_BASE:g}s x 2^n, max {DEFAULT_BACKOFF_MAX:g}s"
_POST_POLICY = "POST retried only when it cannot have been sent (the policy's methods)"
_POST_CAREFUL = "POST retried only after a refused connection"
_POST_ANY = "POST retried like GET"

#: Every client, in report order. ``raw`` is the baseline every ratio is taken against.
CLIENTS: Final[tuple[ClientSpec, ...]] = (
    ClientSpec(
        "raw",
        _raw,
        None,
        "aiohttp.ClientSession, no retry layer (aiohttp's hidden retry on, GETs only)",
    ),
    ClientSpec(
        "raw-nohidden",
        _raw_no_hidden,
        None,
        "aiohttp.ClientSession with session._retry_connection = False",
    ),
    ClientSpec(
        "resilient",
        _resilient,
        None,
        "resilient_session(limit=max(100,c), limit_per_host=max(16,c)), default RetryPolicy; "
        f"{_POST_POLICY}",
    ),
    # A client with opt-in adaptive concurrency goes here once the library offers it, e.g.
    # ClientSpec("resilient-adaptive", ...): resilient_session(...) with that option and
    # nothing else changed. Until then `resilient` measures whatever the defaults do.
    ClientSpec(
        "middleware-only",
        _middleware_only,
        None,
        "plain ClientSession(middlewares=[RetryMiddleware()]): no HostLimiter, "
        f"TrackingConnector or session tuning; {_POST_POLICY}",
    ),
    ClientSpec(
        "decorator",
        _decorated,
        None,
        "@retry_on_disconnect (default policy) around a plain ClientSession fetch; "
        "POST retried too (decorating says the function is safe to run again)",
    ),
    ClientSpec(
        "aiohttp-retry-defaults",
        _partial(_aiohttp_retry, tuned=False),
        "aiohttp_retry",
        "RetryClient() as documented: ExponentialRetry() = 3 attempts, 5xx only, no exceptions; "
        "any method, POST included",
    ),
    ClientSpec(
        "aiohttp-retry-tuned",
        _partial(_aiohttp_retry, tuned=True),
        "aiohttp_retry",
        f"ExponentialRetry(attempts=5, start_timeout=0.1, max_timeout=10, exceptions=family, "
        f"statuses=429/5xx, methods=idempotent): {_SMALL}, no jitter; POST not retried on a "
        "status, but retried after an error (aiohttp-retry checks methods for statuses only)",
    ),
    ClientSpec(
        "backoff-defaults",
        _partial(_backoff, tuned=False),
        None,
        "backoff.on_exception(backoff.expo, family, max_tries=5): waits full_jitter(1, 2, 4, 8 s); "
        f"{_POST_ANY}",
    ),
    ClientSpec(
        "backoff-tuned",
        _partial(_backoff, tuned=True),
        None,
        f"backoff.on_exception(backoff.expo, family, max_tries=5, factor=0.1, max_value=10): "
        f"{_SMALL}, full jitter; {_POST_CAREFUL}",
    ),
    ClientSpec(
        "tenacity-defaults",
        _partial(_tenacity, tuned=False),
        "tenacity",
        f"tenacity.retry(stop=stop_after_attempt(5)): any error, no wait; {_POST_ANY}",
    ),
    ClientSpec(
        "tenacity-tuned",
        _partial(_tenacity, tuned=True),
        "tenacity",
        f"retry_if_exception_type(family), stop_after_attempt(5), "
        f"wait_random_exponential(multiplier=0.1, max=10): {_SMALL}, full jitter; "
        f"{_POST_CAREFUL}",
    ),
    ClientSpec(
        "stamina-tuned",
        _stamina,
        "stamina",
        f"stamina.retry(on=family, attempts=5, wait_initial=0.1, wait_max=10, "
        f"wait_jitter={STAMINA_JITTER:g}), timeout left at 45 s: waits 0.1-0.2, 0.2-0.3, "
        f"0.4-0.5, 0.8-0.9 s; retry hooks (logging) off; {_POST_CAREFUL}",
    ),
    ClientSpec(
        "hand-loop",
        _hand_loop,
        None,
        f"for attempt in range(5): try fetch / except family: retry at once; {_POST_ANY}",
    ),
    ClientSpec(
        "resilient-hedge",
        _resilient_hedge,
        None,
        "resilient with hedge=HedgePolicy(): a second copy of a GET still unanswered at the "
        "host's p95, at most 5% extra, standing down on a sick host",
    ),
    ClientSpec(
        "hedge-python",
        _hedge_python,
        "hedge",
        "hedge-python's HedgedAiohttpSession(HedgeConfig()): a backup at the host's p90 "
        "(DDSketch), 10% token bucket; no retries",
    ),
)
