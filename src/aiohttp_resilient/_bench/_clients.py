"""The clients the benchmark compares, each built inside its own client process.

Every client answers one question the same way: ``await fetch(url)`` GETs ``url``, reads the whole
body, and returns only if the answer is a 200 with its body; anything else raises. Retrying
clients retry the same family of errors (``ServerDisconnectedError``, ``ClientOSError``,
``ClientPayloadError``, and the statuses 429/500/502/503/504 where they can) with at most
:data:`ATTEMPTS` attempts. ``*-defaults`` clients are configured as their documentation's first
example does (what users get); ``*-tuned`` ones with the same small backoff as ours (what an
expert gets). ``benchmarks/README.md`` lists each configuration.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from .._decorator import retry_on_disconnect
from .._events import RetryEvent
from .._middleware import RetryMiddleware
from .._policy import DEFAULT_ATTEMPTS, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX
from .._session import resilient_session

__all__ = ["ATTEMPTS", "CLIENTS", "BuiltClient", "ClientSpec", "StatusError", "missing_module"]

#: Attempts in all for every retrying client: our default, so the schedules compare.
ATTEMPTS: Final = DEFAULT_ATTEMPTS
#: The statuses a fair alternative retries (ours by default).
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})

Fetch = Callable[[str], Awaitable[None]]


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
        session._retry_connection = False
    return session


def _plain_fetch(session: aiohttp.ClientSession) -> Fetch:
    async def fetch(url: str) -> None:
        async with session.get(url) as resp:
            await resp.read()
            if resp.status != 200:
                raise StatusError(resp.status)

    return fetch


def _raising_fetch(session: aiohttp.ClientSession) -> Fetch:
    """A fetch for the wrappers: a retryable status raises an error they retry."""

    async def fetch(url: str) -> None:
        async with session.get(url) as resp:
            if resp.status in RETRY_STATUSES:
                raise _RetryableStatusError(resp.status)
            await resp.read()
            if resp.status != 200:
                raise StatusError(resp.status)

    return fetch


def _counted(client: BuiltClient, inner: Fetch) -> Fetch:
    """``inner``, counting each call as one attempt of ``client``."""
    client.attempts = 0

    async def fetch(url: str) -> None:
        client.attempts = (client.attempts or 0) + 1
        await inner(url)

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

    @retry_on_disconnect(on_retry=on_retry)
    async def fetch(url: str) -> None:
        await plain(url)

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
        )
        client = ar.RetryClient(client_session=session, retry_options=options)
    else:
        client = ar.RetryClient(client_session=session)
    built = BuiltClient(_plain_fetch(session), client.close)
    counting = _CountingSession(session, built)
    client._client = counting  # count the attempts aiohttp-retry makes, at no cost to it

    async def fetch(url: str) -> None:
        async with client.get(url) as resp:
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


async def _backoff(concurrency: int, *, tuned: bool) -> BuiltClient:
    import backoff

    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    inner = _counted(built, _raising_fetch(session))
    family = (*RETRY_ERRORS, _RetryableStatusError)
    if tuned:
        decorator = backoff.on_exception(
            backoff.expo,
            family,
            max_tries=ATTEMPTS,
            factor=DEFAULT_BACKOFF_BASE,
            max_value=DEFAULT_BACKOFF_MAX,
            logger=None,
        )
    else:
        decorator = backoff.on_exception(backoff.expo, family, max_tries=ATTEMPTS, logger=None)

    @decorator
    async def fetch(url: str) -> None:
        await inner(url)

    built.fetch = fetch
    return built


async def _tenacity(concurrency: int, *, tuned: bool) -> BuiltClient:
    tn: Any = importlib.import_module("tenacity")
    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    inner = _counted(built, _raising_fetch(session))
    family = (*RETRY_ERRORS, _RetryableStatusError)
    if tuned:
        decorator = tn.retry(
            retry=tn.retry_if_exception_type(family),
            stop=tn.stop_after_attempt(ATTEMPTS),
            wait=tn.wait_random_exponential(
                multiplier=DEFAULT_BACKOFF_BASE, max=DEFAULT_BACKOFF_MAX
            ),
            reraise=True,
        )
    else:
        # tenacity's defaults retry any error forever, at once: the only change is the bound.
        decorator = tn.retry(stop=tn.stop_after_attempt(ATTEMPTS), reraise=True)

    async def once(url: str) -> None:
        await inner(url)

    built.fetch = decorator(once)
    return built


async def _hand_loop(concurrency: int) -> BuiltClient:
    session = _session(concurrency)
    built = BuiltClient(_plain_fetch(session), session.close)
    inner = _counted(built, _raising_fetch(session))
    family = (*RETRY_ERRORS, _RetryableStatusError)

    async def fetch(url: str) -> None:
        # What people write: retry the family at once, a bounded number of times.
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await inner(url)
            except family:  # noqa: PERF203 - the loop people write, as they write it
                if attempt == ATTEMPTS:
                    raise
                await asyncio.sleep(0)
            else:
                return

    built.fetch = fetch
    return built


def _partial(
    build: Callable[..., Awaitable[BuiltClient]], **kwargs: Any
) -> Callable[[int], Awaitable[BuiltClient]]:
    def make(concurrency: int) -> Awaitable[BuiltClient]:
        return build(concurrency, **kwargs)

    return make


_SMALL = f"{ATTEMPTS} attempts, waits {DEFAULT_BACKOFF_BASE:g}s x 2^n, max {DEFAULT_BACKOFF_MAX:g}s"

#: Every client, in report order. ``raw`` is the baseline every ratio is taken against.
CLIENTS: Final[tuple[ClientSpec, ...]] = (
    ClientSpec(
        "raw", _raw, None, "aiohttp.ClientSession, no retry layer (aiohttp's hidden retry on)"
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
        "resilient_session(limit=max(100,c), limit_per_host=max(16,c)), default RetryPolicy",
    ),
    ClientSpec(
        "middleware-only",
        _middleware_only,
        None,
        "plain ClientSession(middlewares=[RetryMiddleware()]): no HostLimiter, "
        "TrackingConnector or session tuning",
    ),
    ClientSpec(
        "decorator",
        _decorated,
        None,
        "@retry_on_disconnect (default policy) around a plain ClientSession fetch",
    ),
    ClientSpec(
        "aiohttp-retry-defaults",
        _partial(_aiohttp_retry, tuned=False),
        "aiohttp_retry",
        "RetryClient() as documented: ExponentialRetry() = 3 attempts, 5xx only, no exceptions",
    ),
    ClientSpec(
        "aiohttp-retry-tuned",
        _partial(_aiohttp_retry, tuned=True),
        "aiohttp_retry",
        f"ExponentialRetry(attempts=5, start_timeout=0.1, max_timeout=10, exceptions=family, "
        f"statuses=429/5xx): {_SMALL}, no jitter",
    ),
    ClientSpec(
        "backoff-defaults",
        _partial(_backoff, tuned=False),
        None,
        "backoff.on_exception(backoff.expo, family, max_tries=5): waits full_jitter(1, 2, 4, 8 s)",
    ),
    ClientSpec(
        "backoff-tuned",
        _partial(_backoff, tuned=True),
        None,
        f"backoff.on_exception(backoff.expo, family, max_tries=5, factor=0.1, max_value=10): "
        f"{_SMALL}, full jitter",
    ),
    ClientSpec(
        "tenacity-defaults",
        _partial(_tenacity, tuned=False),
        "tenacity",
        "tenacity.retry(stop=stop_after_attempt(5)): any error, no wait",
    ),
    ClientSpec(
        "tenacity-tuned",
        _partial(_tenacity, tuned=True),
        "tenacity",
        f"retry_if_exception_type(family), stop_after_attempt(5), "
        f"wait_random_exponential(multiplier=0.1, max=10): {_SMALL}, full jitter",
    ),
    ClientSpec(
        "hand-loop",
        _hand_loop,
        None,
        "for attempt in range(5): try fetch / except family: retry at once",
    ),
)
