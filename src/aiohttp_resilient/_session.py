"""resilient_session(): a real aiohttp.ClientSession, tuned, with the retry middleware installed."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.metadata
import inspect
import os
import platform
import ssl as ssl_module
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any, Final, Literal

import aiohttp
import aiohttp.connector
from aiohttp import hdrs
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

from ._health._hosts import HostHealth
from ._health._limiter import HostLimiter
from ._health._policy import HealthPolicy
from ._hedge._policy import HedgePolicy
from ._retry._events import RetryHook
from ._retry._middleware import RetryMiddleware, session_middleware
from ._retry._policy import RetryPolicy, _check_bool, _check_int, _check_number
from ._store._base import HealthStore
from ._store._connector import StoreConnector
from ._store._open import open_store
from ._transport._aiohttp_compat import NEEDS_CLEANUP_CLOSED, turn_off_hidden_retry
from ._transport._connector import TrackingConnector
from ._transport._response import ResilientResponse

__all__ = [
    "PRESETS",
    "SessionPreset",
    "default_user_agent",
    "resilient_session",
    "session_health",
]

PresetName = Literal["default", "crawler", "api"]

#: Idle keep-alive connections are dropped after this many seconds: under the 5 s after which
#: uvicorn and Node.js close them (nginx: 75 s), so the client lets go first and the stale
#: connection race is rare. aiohttp's default is 15 s, above those servers' timeouts.
DEFAULT_KEEPALIVE_TIMEOUT: Final = 4.0
#: aiohttp's 300 s total is one budget for all attempts, waits and the body; 120 s still covers a
#: full retry schedule while bounding a call that would otherwise hang for five minutes. No
#: sock_read: aiohttp re-arms it on every read (about 10% of a small request's CPU); the
#: middleware's idle watchdog (DEFAULT_IDLE_TIMEOUT) does its job with one timer per loop.
DEFAULT_TIMEOUT: Final = aiohttp.ClientTimeout(total=120, connect=15, sock_connect=10)
#: A response silent this long is abandoned and retried instead of failing at ``total``
#: (what the preset's ``sock_read=30`` did before).
DEFAULT_IDLE_TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPreset:
    """The tuning behind a named preset of :func:`resilient_session`; every field can be
    overridden by the keyword of the same name.

    Attributes:
        limit: Connections in all (aiohttp: 100).
        limit_per_host: Attempts and connections in flight per host (aiohttp: unlimited).
        ttl_dns_cache: Seconds a DNS answer is cached (aiohttp: 10).
        keepalive_timeout: Seconds an idle pooled connection is kept (aiohttp: 15).
        timeout: The session's :class:`aiohttp.ClientTimeout` (aiohttp: total 300, sock_connect 30).
        idle_timeout: Seconds without a byte of a response before its attempt is abandoned and
            retried (the middleware's idle watchdog; aiohttp has none by default).
        policy: The retry policy.
    """

    limit: int
    limit_per_host: int
    ttl_dns_cache: int | None
    keepalive_timeout: float
    timeout: aiohttp.ClientTimeout
    idle_timeout: float
    policy: RetryPolicy


#: The presets, by name. "default" suits a service calling a handful of hosts; "crawler" many
#: hosts, politely (4 at a time per host, the order browsers and Scrapy use per domain, DNS
#: cached for 5 minutes, patient with Retry-After); "api" one host at high concurrency with
#: short waits.
PRESETS: Final[Mapping[str, SessionPreset]] = {
    "default": SessionPreset(
        limit=100,
        limit_per_host=16,
        ttl_dns_cache=10,
        keepalive_timeout=DEFAULT_KEEPALIVE_TIMEOUT,
        timeout=DEFAULT_TIMEOUT,
        idle_timeout=DEFAULT_IDLE_TIMEOUT,
        policy=RetryPolicy(),
    ),
    "crawler": SessionPreset(
        limit=256,
        limit_per_host=4,
        ttl_dns_cache=300,
        keepalive_timeout=DEFAULT_KEEPALIVE_TIMEOUT,
        timeout=aiohttp.ClientTimeout(total=180, connect=15, sock_connect=10),
        idle_timeout=DEFAULT_IDLE_TIMEOUT,
        policy=RetryPolicy(attempts=4, backoff_base=0.5, backoff_max=30.0, retry_after_max=120.0),
    ),
    "api": SessionPreset(
        limit=256,
        limit_per_host=256,
        ttl_dns_cache=10,
        keepalive_timeout=DEFAULT_KEEPALIVE_TIMEOUT,
        timeout=aiohttp.ClientTimeout(total=60, connect=10, sock_connect=5),
        idle_timeout=20.0,
        policy=RetryPolicy(attempts=5, backoff_base=0.05, backoff_max=5.0, retry_after_max=30.0),
    ),
}


def default_user_agent() -> str:
    """``aiohttp-resilient/X aiohttp/Y Python/Z``: who is calling, honestly (some CDNs drop
    requests without a User-Agent)."""
    try:
        version = importlib.metadata.version("aiohttp-resilient")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
        version = "0"
    return (
        f"aiohttp-resilient/{version} aiohttp/{aiohttp.__version__} "
        f"Python/{platform.python_version()}"
    )


def resilient_session(
    *,
    policy: RetryPolicy | None = None,
    preset: PresetName = "default",
    limit: int | None = None,
    limit_per_host: int | None = None,
    ttl_dns_cache: int | None = None,
    keepalive_timeout: float | None = None,
    idle_timeout: float | None = None,
    force_close: bool = False,
    ca_bundle: str | PathLike[str] | None = None,
    ssl_context: ssl_module.SSLContext | None = None,
    on_retry: RetryHook | None = None,
    on_giveup: RetryHook | None = None,
    health: HealthPolicy | None = None,
    hedge: HedgePolicy | None = None,
    stats: bool = True,
    store: HealthStore | str | None = None,
    **session_options: Any,
) -> aiohttp.ClientSession:
    """A :class:`aiohttp.ClientSession` that survives the network.

    Usage::

        async with resilient_session() as session:
            async with session.get(url) as resp:
                data = await resp.json()

    What differs from a bare ``ClientSession`` (each can be overridden):

    - A :class:`RetryMiddleware` with ``policy`` (or the preset's) runs first in the chain, and
      aiohttp's own hidden retry is off, so the server sees exactly the attempts the policy allows.
    - A per-host cap (``limit_per_host``) on attempts in flight, enforced by a
      :class:`HostLimiter` and the connector alike; no slot is held while backing off.
    - Idle connections are dropped after ``keepalive_timeout`` (4 s, under common servers' 5 s).
    - ``ClientTimeout`` with connect, sock_connect and total set (see :data:`PRESETS`), and an
      idle watchdog instead of ``sock_read``: a response silent for ``idle_timeout`` seconds
      (30) is abandoned and retried, at one timer per event loop instead of one per read.
    - TLS verification on, TLS 1.2 at least, optionally with ``ca_bundle`` as trusted CAs.
    - An honest ``User-Agent`` (an automatic header, as aiohttp's own: ``headers=`` replaces it,
      ``skip_auto_headers=("User-Agent",)`` drops it; with a ``request_class=`` of yours it is a
      session header instead, which only ``headers=`` replaces) and aiohttp's
      ``Accept-Encoding``.
    - ``enable_cleanup_closed`` only on the Python versions where aiohttp still needs it.

    Args:
        policy: The retry policy; the preset's when ``None``.
        preset: ``"default"``, ``"crawler"`` (many hosts, polite per host) or ``"api"`` (one host,
            high concurrency): see :data:`PRESETS`.
        limit: Connections in all.
        limit_per_host: Attempts in flight per (scheme, host, port). With ``connector=``, the
            cap is the connector's own ``limit_per_host`` (none when it has none) unless this
            is given.
        ttl_dns_cache: Seconds DNS answers are cached; the preset's when ``None``.
        keepalive_timeout: Seconds an idle pooled connection is kept.
        idle_timeout: Seconds without a byte of a response before its attempt is abandoned
            and retried; the preset's when ``None``, ``0`` turns the watchdog off.
        force_close: Send ``Connection: close`` and use each connection once.
        ca_bundle: A PEM file of CA certificates to trust instead of the system's.
        ssl_context: A ready ``SSLContext`` (then ``ca_bundle`` must not be given).
        on_retry: Hook called with a :class:`RetryEvent` before each retry.
        on_giveup: Hook called with a :class:`RetryEvent` on giving up.
        health: Which host-health mechanisms run (:class:`HealthPolicy`); all by default.
            The session's middleware keeps the state: ``session_health(session)`` reads it.
        hedge: Send a second copy of slow idempotent calls (:class:`HedgePolicy`); none when
            ``None``.
        stats: Count calls, attempts, retries, give-ups and latency per host;
            ``stats(session)`` reads them.
        store: Share the per-host cap with other processes: ``"redis://host:6379/0"`` (or
            ``rediss://``; the session makes the client and closes it), or a
            :class:`HealthStore` you made and close (:class:`RedisStore`, :class:`MemoryStore`).
            If the store fails, the session goes on alone at once (README, "Many processes").
        **session_options: Any other :class:`aiohttp.ClientSession` keyword: ``timeout``,
            ``headers``, ``proxy`` (``"http://user:password@proxy:3128"``), ``trust_env``
            (``HTTP(S)_PROXY`` from the environment), ``middlewares`` (run inside the retry,
            once per attempt), ``connector`` (then without the connector options above), ...

    Raises:
        ValueError: An unknown preset, a bad option value, or options that contradict (the
            message names the option, and the preset when the other value was the preset's).
        RuntimeError: Called outside a running event loop.
    """
    _check_running_loop()
    try:
        tuning = PRESETS[preset]
    except (KeyError, TypeError):
        raise ValueError(
            f"preset must be one of {', '.join(map(repr, PRESETS))}, got {preset!r}"
        ) from None
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("limit", limit),
            ("limit_per_host", limit_per_host),
            ("ttl_dns_cache", ttl_dns_cache),
            ("keepalive_timeout", keepalive_timeout),
            ("idle_timeout", idle_timeout),
        )
        if value is not None
    }
    _check_options(changes, force_close, ca_bundle, ssl_context)
    tuning = dataclasses.replace(tuning, **changes)
    if policy is None:
        policy = tuning.policy
    elif not isinstance(policy, RetryPolicy):
        raise ValueError(f"policy must be a RetryPolicy, got {type(policy).__name__}")

    connector = session_options.pop("connector", None)
    if connector is None:
        if tuning.limit_per_host > tuning.limit:
            raise ValueError(_limits_contradict(tuning, preset, changes))
        if ssl_context is not None and ca_bundle is not None:
            raise ValueError("pass ssl_context or ca_bundle, not both")
        cap: int | None = tuning.limit_per_host
    elif not isinstance(connector, aiohttp.BaseConnector):
        raise ValueError(f"connector must be an aiohttp connector, got {type(connector).__name__}")
    elif any(v is not None for v in (limit, ttl_dns_cache, keepalive_timeout, ca_bundle)) or (
        force_close or ssl_context is not None
    ):
        raise ValueError(
            "connector= was given together with connector options "
            "(limit, ttl_dns_cache, keepalive_timeout, force_close, ca_bundle, ssl_context): "
            "configure the connector you pass instead"
        )
    else:
        # A connector you pass is yours: the per-host cap is its limit_per_host (0: none),
        # unless limit_per_host= sets one for the retry layer too.
        cap = limit_per_host if limit_per_host is not None else connector.limit_per_host or None
    if health is not None and not isinstance(health, HealthPolicy):
        raise ValueError(f"health must be a HealthPolicy, got {type(health).__name__}")
    if store is not None and cap is None:
        raise ValueError("store= shares the per-host cap: give limit_per_host too")
    if store is not None and connector is not None and isinstance(store, str):
        raise ValueError(
            "store= as a URL needs the session's own connector: with connector=, "
            "pass a RedisStore you close yourself"
        )
    headers = session_options.pop("headers", None)
    if "request_class" in session_options:
        # Theirs: our User-Agent goes in the session's headers instead (a merge per request).
        headers = _merge_headers({hdrs.USER_AGENT: default_user_agent()}, headers)
    else:
        session_options["request_class"] = _request_class()
        if headers is not None:
            headers = _merge_headers({}, headers)  # checked here, merged by aiohttp
    if store is not None:  # checked before a store (and its client) is made for nothing
        _check_session_keywords(session_options)
    shared, owned = (None, False) if store is None else open_store(store)
    retry = RetryMiddleware(
        policy,
        health=HostHealth(health, limiter=None if cap is None else HostLimiter(cap), store=shared),
        on_retry=on_retry,
        on_giveup=on_giveup,
        stats=stats,
        idle_timeout=tuning.idle_timeout or None,
        hedge=hedge,
    )
    # Everything is checked: only now is a connector made (an error leaves nothing to close).
    if connector is None:
        options: dict[str, Any] = {
            "limit": tuning.limit,
            "limit_per_host": tuning.limit_per_host,
            "ttl_dns_cache": tuning.ttl_dns_cache,
            "keepalive_timeout": None if force_close else tuning.keepalive_timeout,
            "force_close": force_close,
            "ssl": ssl_context if ssl_context is not None else _tls_context(ca_bundle),
            # Only where it works: elsewhere aiohttp ignores it with a DeprecationWarning.
            "enable_cleanup_closed": NEEDS_CLEANUP_CLOSED,
        }
        if owned:  # the session made the store: closing the session closes it
            assert shared is not None
            connector = StoreConnector(store=shared, **options)
        else:
            connector = TrackingConnector(**options)
    session_options.setdefault("timeout", tuning.timeout)
    session_options.setdefault("response_class", ResilientResponse)
    session = aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        middlewares=(retry, *session_options.pop("middlewares", ())),
        **session_options,
    )
    # aiohttp re-runs the chain once on its own after a disconnect; the middleware owns retries.
    turn_off_hidden_retry(session)
    return session


def _check_session_keywords(options: Mapping[str, Any]) -> None:
    """Raise the ``TypeError`` aiohttp would for a keyword ``ClientSession`` does not take."""
    try:
        _session_signature().bind_partial(**options)
    except TypeError as exc:
        raise TypeError(f"aiohttp.ClientSession: {exc}") from None


@functools.cache
def _session_signature() -> inspect.Signature:
    return inspect.signature(aiohttp.ClientSession)


def session_health(session: aiohttp.ClientSession) -> HostHealth | None:
    """The host-health state of the first :class:`RetryMiddleware` in ``session``, if any.

    Usage::

        health = session_health(session)
        health.circuit_state(("https", "api.example.org", 443))
    """
    middleware = session_middleware(session)
    return None if middleware is None else middleware.health


def _tls_context(ca_bundle: str | PathLike[str] | None) -> ssl_module.SSLContext:
    return _cached_tls_context(None if ca_bundle is None else str(ca_bundle))


@functools.lru_cache(maxsize=8)
def _cached_tls_context(ca_bundle: str | None) -> ssl_module.SSLContext:
    # Loading the CA store takes milliseconds: share one context among sessions, as aiohttp does.
    context = ssl_module.create_default_context(cafile=ca_bundle)
    context.minimum_version = ssl_module.TLSVersion.TLSv1_2
    return context


@functools.lru_cache(maxsize=1)
def _request_class() -> type[aiohttp.ClientRequest]:
    user_agent = default_user_agent()

    class ResilientRequest(aiohttp.ClientRequest):
        """aiohttp's request with our User-Agent among its automatic headers (as aiohttp's own
        is): a session-wide ``headers=`` would cost a header merge on every request (about 2%
        of a small GET, counted with callgrind), and the user's headers still win."""

        DEFAULT_HEADERS = {  # noqa: RUF012 - aiohttp's own class attribute, overridden
            **aiohttp.ClientRequest.DEFAULT_HEADERS,
            hdrs.USER_AGENT: user_agent,
        }

        def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
            super().update_auto_headers(skip_auto_headers)
            # With skip_auto_headers, aiohttp writes its own User-Agent over the defaults'.
            if skip_auto_headers is not None and self.headers.get(hdrs.USER_AGENT) is (
                SERVER_SOFTWARE
            ):
                self.headers[hdrs.USER_AGENT] = user_agent

    return ResilientRequest


def _merge_headers(defaults: dict[str, str], user: Any) -> Any:
    if user is None:
        return defaults
    merged: CIMultiDict[str] = CIMultiDict(defaults)
    try:
        for name, value in user.items() if hasattr(user, "items") else user:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError  # noqa: TRY301 - one message for every malformed shape
            merged[name] = value  # the user's value wins over ours
    except (TypeError, ValueError):
        # Not the value itself in the message: headers carry credentials.
        raise ValueError(
            "headers must be a mapping or (name, value) pairs of strings, got "
            f"{type(user).__name__}"
        ) from None
    return merged


def _check_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "resilient_session() must be called inside a running event loop: from an "
            "async def function run by asyncio.run() (or another running loop), since aiohttp "
            "binds the session and its connector to the loop they are made in. For example: "
            "async def main(): async with resilient_session() as session: ...; asyncio.run(main())"
        ) from None


def _check_options(
    changes: Mapping[str, Any],
    force_close: object,
    ca_bundle: object,
    ssl_context: object,
) -> None:
    for name in ("limit", "limit_per_host"):
        if name in changes:
            _check_int(name, changes[name], minimum=1)
    if "ttl_dns_cache" in changes:
        _check_int("ttl_dns_cache", changes["ttl_dns_cache"], minimum=0)
    if "keepalive_timeout" in changes:
        _check_number("keepalive_timeout", changes["keepalive_timeout"], minimum=0, inclusive=False)
    if "idle_timeout" in changes:
        _check_number("idle_timeout", changes["idle_timeout"], minimum=0)
    _check_bool("force_close", force_close)
    if ca_bundle is not None:
        if not isinstance(ca_bundle, (str, PathLike)):
            raise ValueError(f"ca_bundle must be a path to a PEM file, got {ca_bundle!r}")
        if not os.path.isfile(ca_bundle):
            raise ValueError(f"ca_bundle: no such file: {os.fspath(ca_bundle)!r}")
    if ssl_context is not None and not isinstance(ssl_context, ssl_module.SSLContext):
        raise ValueError(f"ssl_context must be an ssl.SSLContext, got {type(ssl_context).__name__}")


def _limits_contradict(tuning: SessionPreset, preset: str, changes: Mapping[str, Any]) -> str:
    # Say which value came from where: a preset's value the caller never typed is a surprise.
    def origin(name: str) -> str:
        return "" if name in changes else f", the {preset!r} preset's"

    return (
        f"limit_per_host ({tuning.limit_per_host}{origin('limit_per_host')}) must not exceed "
        f"limit ({tuning.limit}{origin('limit')}): pass limit_per_host={tuning.limit} or "
        f"less, or limit={tuning.limit_per_host} or more"
    )
