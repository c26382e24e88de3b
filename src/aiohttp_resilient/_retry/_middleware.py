"""RetryMiddleware: an aiohttp client middleware that retries what is safe to retry."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import warnings
from collections.abc import Awaitable, Iterator
from contextvars import ContextVar
from typing import Final

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs

from .._exceptions import BodyNotReplayableError, RetriesExhaustedError
from .._health._claim import HostClaim
from .._health._hosts import Entered, HostHealth
from .._health._limiter import HostKey, HostLimiter
from .._health._policy import HealthPolicy
from .._hedge._delay import HedgeWindow
from .._hedge._policy import HedgePolicy
from .._hedge._race import hedgeable, race
from .._observe._stats import StatsRecorder
from .._transport._aiohttp_compat import (
    HIDDEN_RETRY_ERRORS,
    HIDDEN_RETRY_METHODS,
    hidden_retry_on,
    renew_expect_continue,
    session_middlewares,
    turn_off_hidden_retry,
)
from .._transport._connector import TrackingConnector, judged_by_policy, last_connection_idle
from .._transport._idle import IdleWatchdog
from .._util._log import log_fields, logger
from .._util._notes import add_note
from .._util._redact import redact_url
from .._util._timing import Clock, Sleep
from ._classify import (
    HANDLED_ATTR,
    Signal,
    Verdict,
    bad_host_name,
    classify,
    signal_of_error,
    signal_of_status,
)
from ._decision import Step, Why
from ._events import Attempt, RetryHook, check_hooks, describe_error
from ._loop import Judged, Refusal, retry_loop
from ._policy import RetryPolicy, parse_retry_after
from ._run import RetryRun

__all__ = ["RetryMiddleware", "session_middleware", "session_policy", "use_policy"]

# Errors that, on a reused connection before a response, mean the server had closed it idle.
_STALE_ERRORS: Final = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientConnectionResetError,
)

_policy_override: ContextVar[RetryPolicy | None] = ContextVar(
    "aiohttp_resilient_policy_override", default=None
)


@contextlib.contextmanager
def use_policy(policy: RetryPolicy) -> Iterator[RetryPolicy]:
    """Use ``policy`` instead of the middleware's own for the requests made inside the block.

    The override follows the task (a :class:`contextvars.ContextVar`), so concurrent tasks keep
    their own. Usage::

        with use_policy(RetryPolicy(attempts=1)):
            async with session.post(url, data=payload) as resp: ...
    """
    if not isinstance(policy, RetryPolicy):
        raise ValueError(f"use_policy() takes a RetryPolicy, got {type(policy).__name__}")
    token = _policy_override.set(policy)
    try:
        yield policy
    finally:
        _policy_override.reset(token)


def session_policy(session: aiohttp.ClientSession) -> RetryPolicy | None:
    """The policy requests made here through ``session`` get: :func:`use_policy`'s, else that of
    the session's first :class:`RetryMiddleware`; ``None`` when the session has none."""
    middleware = session_middleware(session)
    return None if middleware is None else _policy_override.get() or middleware.policy


def session_middleware(session: aiohttp.ClientSession) -> RetryMiddleware | None:
    """The first :class:`RetryMiddleware` in ``session``'s chain, if any."""
    for middleware in session_middlewares(session):
        if isinstance(middleware, RetryMiddleware):
            return middleware
    return None


def _reused(idle: float | None) -> bool | None:
    return None if idle is None else idle >= 0.0


def _take_idle() -> float | None:
    """How long the connection of the attempt that just ended had sat idle before it was
    reused (``NEW_CONNECTION``: it was new; ``None``: unknown)."""
    idle = last_connection_idle.get()
    if idle is not None:
        last_connection_idle.set(None)  # a later attempt that fails to connect must not see it
    return idle


def _stale_race(req: ClientRequest, idle: float | None) -> bool:
    # The connection had sat idle long enough that the server could have closed it (judged
    # against the host's known keep-alive timeout, or a floor): the stale race is possible.
    # A failure on a connection reused at once is a reset, not the race.
    connector = req.session.connector
    return (
        idle is not None
        and isinstance(connector, TrackingConnector)
        and idle >= connector.race_idle_floor(req.connection_key)
    )


class RetryMiddleware:
    """An aiohttp client middleware that retries what is safe to retry, and nothing else.

    Put it in any ``ClientSession(middlewares=[...])``; :func:`resilient_session` installs one.
    Per attempt, it classifies the failure by whether the request can have reached the server
    (connect-phase failures are retried for any method; disconnects, resets, read timeouts, cut
    bodies and retryable statuses only for idempotent requests), waits with exponential backoff
    and full jitter or as ``Retry-After`` says, releases every response it throws away, and gives
    up with :class:`RetriesExhaustedError`.

    It takes over aiohttp's own hidden retry (one immediate re-run of the whole chain after a
    disconnect) by switching it off in the session it runs in, so the attempts the server sees are
    exactly those the policy allows.

    Usage::

        retry = RetryMiddleware(RetryPolicy(attempts=3))
        async with aiohttp.ClientSession(middlewares=[retry]) as session: ...

    Args:
        policy: The default policy; :func:`use_policy` overrides it per request.
        limiter: Caps attempts in flight per host; ``None`` for no cap beyond the connector's.
        health: The host-health state (:class:`HostHealth`, shared by whoever is given the same
            instance) or the :class:`HealthPolicy` of a new one; by default a new one with
            every mechanism on, over ``limiter``.
        idle_timeout: Seconds without a byte of the response after which an attempt is
            abandoned with :class:`aiohttp.SocketTimeoutError` (and retried if the request is
            idempotent); it covers the wait for the headers, the body read inside the retry,
            and a body the caller streams afterwards. One timer per event loop, not per read
            (``_idle.py``). ``None``: no watchdog (aiohttp's ``sock_read`` still
            works).
        on_retry: Called with a :class:`RetryEvent` before each wait (a coroutine function is
            awaited).
        on_giveup: Called with a :class:`RetryEvent` when giving up.
        stats: Count calls, attempts, retries, give-ups and latency per host (read them with
            :func:`stats`): ``True`` (a new :class:`StatsRecorder`), a recorder to share, or
            ``False`` for none.
        hedge: Send a second copy of slow idempotent calls (:class:`HedgePolicy`); ``None``
            (the default) for none.
        sleep: The wait function (inject a fake one in tests).
        clock: A monotonic clock in seconds (inject a fake one in tests).
    """

    __slots__ = (
        "_clock",
        "_health",
        "_hedge",
        "_idle",
        "_on_giveup",
        "_on_retry",
        "_sleep",
        "_stats",
        "policy",
    )

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        limiter: HostLimiter | None = None,
        health: HostHealth | HealthPolicy | None = None,
        on_retry: RetryHook | None = None,
        on_giveup: RetryHook | None = None,
        stats: StatsRecorder | bool = True,
        idle_timeout: float | None = None,
        hedge: HedgePolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        if not isinstance(stats, (bool, StatsRecorder)):
            raise ValueError(f"stats must be a bool or a StatsRecorder, got {type(stats).__name__}")
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise ValueError(f"policy must be a RetryPolicy, got {type(policy).__name__}")
        if limiter is not None and not isinstance(limiter, HostLimiter):
            raise ValueError(f"limiter must be a HostLimiter, got {type(limiter).__name__}")
        check_hooks(on_retry=on_retry, on_giveup=on_giveup)
        if hedge is not None and not isinstance(hedge, HedgePolicy):
            raise ValueError(f"hedge must be a HedgePolicy, got {type(hedge).__name__}")
        if isinstance(health, HostHealth):
            if limiter is not None and health.limiter is not limiter:
                raise ValueError(
                    "limiter= and health= disagree: pass the limiter to HostHealth(limiter=...)"
                )
        elif health is None or isinstance(health, HealthPolicy):
            health = HostHealth(health, limiter=limiter, clock=clock, sleep=sleep)
        else:
            raise ValueError(
                f"health must be a HostHealth or HealthPolicy, got {type(health).__name__}"
            )
        self.policy = RetryPolicy() if policy is None else policy
        self._health = health
        self._on_retry = on_retry
        self._on_giveup = on_giveup
        self._sleep = sleep
        self._clock = clock
        self._idle = None if idle_timeout is None else IdleWatchdog(idle_timeout)
        self._stats = StatsRecorder() if stats is True else (stats or None)
        self._hedge = None if hedge is None else HedgeWindow(hedge)
        if hedge is not None:
            # Calls go through the race: a subclass's __call__, so that the unhedged request
            # path does not even test whether hedging is on.
            self.__class__ = _HedgingRetryMiddleware

    @property
    def stats_recorder(self) -> StatsRecorder | None:
        """What counts this middleware's calls (``None`` when ``stats=False``)."""
        return self._stats

    @property
    def limiter(self) -> HostLimiter | None:
        """The per-host limiter, if any."""
        return self._health.limiter

    @property
    def hedge(self) -> HedgePolicy | None:
        """The hedging policy, if calls are hedged."""
        return None if self._hedge is None else self._hedge.policy

    @property
    def health(self) -> HostHealth:
        """The host-health state."""
        return self._health

    @property
    def idle_timeout(self) -> float | None:
        """Seconds of silence after which an attempt's response is abandoned (``None``: off)."""
        return None if self._idle is None else self._idle.idle

    def __repr__(self) -> str:
        return f"<RetryMiddleware policy={self.policy!r} health={self._health!r}>"

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Send ``req`` through ``handler`` until it succeeds or the policy gives up.

        The aiohttp-facing glue and the first attempt's fast path (no wait, no deadline); every
        other attempt goes through the retry loop (``_loop.py``), shared with the decorator.
        """
        policy = _policy_override.get() or self.policy
        # aiohttp re-runs the chain once after a ClientOSError/ServerDisconnectedError unless the
        # session's private switch is off. It reads the switch when a request starts, so requests
        # already under way may still be re-run: not_retried() never lets those errors through.
        session = req.session
        if hidden_retry_on(session):
            turn_off_hidden_retry(session)
        idempotent = req.method in policy.methods or (
            policy.idempotency_header is not None and policy.idempotency_header in req.headers
        )
        url = req.url
        key = (url.scheme, url.host, url.port)  # host_key(), inlined: it runs per request
        idle = self._idle if policy.watch_idle else None  # off for a long poll's policy
        started = self._clock()
        if not policy._plain:  # a deadline, or idempotency judged by the policy's own rule
            return await self._judged_loop(req, handler, policy, key, idempotent, idle, started)
        health = self._health
        entered = health.try_enter(key, started)
        if entered is None:  # the host is not calm or full: the loop sends every attempt
            return await self._loop(req, handler, policy, key, idempotent, idle, started)
        if idle is not None:  # idle.watch(req), inlined: it runs per request
            idle.watched[req] = req.response
            if idle.loop is not req.loop:
                idle.start(req.loop)
        try:
            resp = await handler(req)  # _send(), inlined: a coroutine frame less
            if _may_be_cut(resp, policy, idempotent):
                await _buffer_body(resp, policy.max_buffer_size)
        except Exception as exc:
            claim = health.claim_after(key, entered, started)
            return await self._loop(
                req, handler, policy, key, idempotent, idle, started, claim=claim, error=exc
            )
        except BaseException:  # cancelled: free the slot, never retry or swallow
            if idle is not None:
                idle.unwatch(req)
            if health.limiter is not None:
                health.limiter.release(key)
            raise
        if resp.status < 400:  # the hot path: two counts on the host's record, no claim
            self._served_first(req, resp, entered, key, started, idle)
            return resp
        claim = health.claim_after(key, entered, started)
        refusal = self._answered(req, resp, claim, None, started, policy, idempotent, key, idle)
        if refusal is None:
            return resp
        return await self._loop(
            req,
            handler,
            policy,
            key,
            idempotent,
            idle,
            started,
            claim=claim,
            result=resp,
            refusal=refusal,
        )

    async def _judged_loop(
        self,
        req: ClientRequest,
        handler: ClientHandlerType,
        policy: RetryPolicy,
        key: HostKey,
        idempotent: bool,
        idle: IdleWatchdog | None,
        started: float,
    ) -> ClientResponse:
        # Every attempt through the loop, with the connector told this request's judgement by
        # its policy: it keeps requests the stale race would lose off long-idle connections.
        judged_by_policy[req] = idempotent
        try:
            return await self._loop(req, handler, policy, key, idempotent, idle, started)
        finally:
            judged_by_policy.pop(req, None)

    def _loop(
        self,
        req: ClientRequest,
        handler: ClientHandlerType,
        policy: RetryPolicy,
        key: HostKey,
        idempotent: bool,
        idle: IdleWatchdog | None,
        started: float,
        *,
        claim: HostClaim | None = None,
        error: Exception | None = None,
        result: ClientResponse | None = None,
        refusal: Refusal | None = None,
    ) -> Awaitable[ClientResponse]:
        # The retry loop takes over: after the first attempt failed (with an error or a
        # refusal), or from the start when the call waits or has a deadline.
        return retry_loop(
            self._health,
            _RequestAttempts(self, req, handler, policy, key, idempotent, idle),
            key,
            policy,
            started,
            self._clock,
            self._stats,
            number=0 if claim is None else 1,
            claim=claim,
            error=error,
            result=result,
            refusal=refusal,
        )

    def _served_first(
        self,
        req: ClientRequest,
        resp: ClientResponse,
        entered: Entered,
        key: HostKey,
        started: float,
        idle: IdleWatchdog | None,
    ) -> None:
        """Book a first attempt's answer below 400, handed back to the caller."""
        health = self._health
        limiter = health.limiter
        if limiter is not None:  # first, so that nothing below can keep the slot
            # The slot stays taken while the caller streams the body: it is freed with the
            # connection (None: the body arrived whole, it is back already).
            connection = resp.connection
            if connection is None:
                limiter.release(key)
            else:
                connection.add_callback(functools.partial(limiter.release, key))
        if (hint := resp.headers.get(hdrs.KEEP_ALIVE)) is not None:
            _note_keep_alive(req, hint)
        now = self._clock()
        health.answered(key, entered, started, now)
        stats = self._stats
        if stats is not None:
            elapsed = now - started
            stats.served(key, elapsed, elapsed, None, resp.status)
        if idle is not None and resp.content.is_eof():
            idle.watched.pop(req, None)  # else the watchdog follows the caller's read

    def _answered(
        self,
        req: ClientRequest,
        resp: ClientResponse,
        claim: HostClaim,
        run: RetryRun | None,
        started: float,
        policy: RetryPolicy,
        idempotent: bool,
        key: HostKey,
        idle: IdleWatchdog | None,
    ) -> Refusal | None:
        """Book an answer handed back to the caller (``None``), or say it is to be retried."""
        status = resp.status
        if (hint := resp.headers.get(hdrs.KEEP_ALIVE)) is not None:
            _note_keep_alive(req, hint)
        if status in policy.statuses and (idempotent or status == 429):
            retry_after = None
            if policy.respect_retry_after:
                retry_after = parse_retry_after(resp.headers.get(hdrs.RETRY_AFTER))
            return Refusal(status, retry_after)
        # The slot stays taken while the caller streams the body: it is freed with the
        # connection (None: the body arrived whole, it is back already).
        connection = resp.connection
        keep = connection is not None and claim.slot
        now = self._clock()
        if status < 400:
            claim.served(now, keep_slot=keep)
        else:
            claim.end(signal_of_status(status), now, keep_slot=keep)
        if keep:
            connection.add_callback(claim.release_slot)  # type: ignore[union-attr]
        stats = self._stats
        if stats is not None:
            stats.served(key, now - started, now - claim.started, run, status)
        if idle is not None and resp.content.is_eof():
            idle.watched.pop(req, None)  # else the watchdog follows the caller's read
        return None


class _HedgingRetryMiddleware(RetryMiddleware):
    """A :class:`RetryMiddleware` made with ``hedge=``: hedgeable calls race their hedges
    (``_hedge/_race.py``); the others take the plain path."""

    __slots__ = ()

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        policy = _policy_override.get() or self.policy
        window = self._hedge
        if window is None or not hedgeable(req, policy):
            return await RetryMiddleware.__call__(self, req, handler)
        original = functools.partial(RetryMiddleware.__call__, self)
        return await race(self, window, req, handler, policy, original, _send)


async def _send(
    req: ClientRequest, handler: ClientHandlerType, policy: RetryPolicy, idempotent: bool
) -> ClientResponse:
    """One attempt: the handler, then the body read inside the retry loop if it may be cut."""
    resp = await handler(req)
    if _may_be_cut(resp, policy, idempotent):
        await _buffer_body(resp, policy.max_buffer_size)
    return resp


def _may_be_cut(resp: ClientResponse, policy: RetryPolicy, idempotent: bool) -> bool:
    # Whether to read the body inside the retry loop, so that a cut there is retried.
    return (
        idempotent
        and policy.buffer_body
        and not resp.content.is_eof()  # arrived whole: nothing left to cut
        and resp.status not in policy.statuses
    )


class _RequestAttempts:
    """One aiohttp request's attempts, as the retry loop sends and judges them."""

    __slots__ = ("_handler", "_idempotent", "_idle", "_key", "_middleware", "_req", "policy")

    def __init__(
        self,
        middleware: RetryMiddleware,
        req: ClientRequest,
        handler: ClientHandlerType,
        policy: RetryPolicy,
        key: HostKey,
        idempotent: bool,
        idle: IdleWatchdog | None,
    ) -> None:
        self._middleware = middleware
        self._req = req
        self._handler = handler
        self.policy = policy
        self._key = key
        self._idempotent = idempotent
        self._idle = idle

    def send(self) -> Awaitable[ClientResponse]:
        return _send(self._req, self._handler, self.policy, self._idempotent)

    def watch(self) -> None:
        idle = self._idle
        if idle is not None:
            idle.watch(self._req)

    def unwatch(self) -> None:
        if self._idle is not None:
            self._idle.unwatch(self._req)

    def answered(
        self, resp: ClientResponse, claim: HostClaim, run: RetryRun | None, started: float
    ) -> Refusal | None:
        return self._middleware._answered(
            self._req,
            resp,
            claim,
            run,
            started,
            self.policy,
            self._idempotent,
            self._key,
            self._idle,
        )

    def judge(self, error: Exception, claim: HostClaim, run: RetryRun | None, now: float) -> Judged:
        verdict = classify(error)
        pooled_for = _take_idle()
        stale = (
            verdict is Verdict.MAYBE_SENT
            and isinstance(error, _STALE_ERRORS)
            and claim.is_stale_race(now)
            and _stale_race(self._req, pooled_for)
            # One free pass per call: a host that refuses requests at once on pooled
            # connections (overload answered with RST) looks like the race every time.
            and (run is None or not run.stale_used)
        )
        return Judged(
            retryable=verdict is Verdict.NOT_SENT
            or (verdict is Verdict.MAYBE_SENT and self._idempotent),
            # The stale keep-alive race says nothing about the host.
            signal=Signal.LOCAL if stale else signal_of_error(error),
            stale=stale,
            reused=_reused(pooled_for),
        )

    def reused(self) -> bool | None:
        return _reused(_take_idle())

    def hand_back(self, resp: ClientResponse, claim: HostClaim) -> None:
        _hold_slot_while_streaming(claim, resp)

    def discard(self, resp: ClientResponse, claim: HostClaim) -> None:
        resp.release()
        claim.release_slot()

    def new_run(self, started: float) -> RetryRun:
        middleware, req = self._middleware, self._req
        return RetryRun(
            self.policy,
            method=req.method,
            url=functools.partial(redact_url, req.url),
            started=started,
            clock=middleware._clock,
            sleep=middleware._sleep,
            on_retry=middleware._on_retry,
            on_giveup=middleware._on_giveup,
            stats=middleware._stats,
            key=self._key,
        )

    async def before_resend(
        self, run: RetryRun, attempt: Attempt, cause: BaseException | None
    ) -> None:
        """Let a failed attempt's body writer settle (as aiohttp's own retry does), then check
        that the body can be sent again."""
        req = self._req
        await req.close()
        body = req.body
        if getattr(body, "consumed", False):
            raise await self._body_spent(run, attempt, type(body).__name__) from cause
        renew_expect_continue(req)

    async def _body_spent(
        self, run: RetryRun, attempt: Attempt, body_type: str
    ) -> BodyNotReplayableError:
        # aiohttp would re-send a spent stream as an empty body, silently.
        req = self._req
        error = BodyNotReplayableError(
            method=req.method,
            url=redact_url(req.url),
            body_type=body_type,
            attempts=attempt.number,
            status=attempt.status,
            last_failure=attempt.outcome,
        )
        # Told like every give-up (log, on_giveup, stats); the error raised names the body.
        await run.give_up(attempt, Step(Why.BODY, detail=str(error)))
        return error

    def not_retried(
        self, error: Exception, judged: Judged, number: int, run: RetryRun | None
    ) -> Exception:
        """The error to raise for a failure that is not retried, with a note saying why."""
        req = self._req
        why = _why_not_retried(req, error, judged)
        if logger.isEnabledFor(logging.INFO):
            url = redact_url(req.url)
            cause = describe_error(error)
            logger.info(
                "not retrying %s %s: %s: %s",
                req.method,
                url,
                cause,
                why,
                extra=log_fields(
                    "not_retried",
                    req.method,
                    url,
                    self._key,
                    attempt=number,
                    cause=cause,
                    reason=why,
                ),
            )
        if (
            req.method in HIDDEN_RETRY_METHODS
            and isinstance(error, HIDDEN_RETRY_ERRORS)
            and not isinstance(error, aiohttp.ClientConnectorError)  # aiohttp re-raises those
        ):
            # aiohttp would answer this error type by sending the request once more on its own,
            # if its switch was still on when this request started (another request may have
            # turned it off since): so it must not leave the middleware as it is.
            history = () if run is None else run.history
            wrapped = RetriesExhaustedError(
                method=req.method,
                url=redact_url(req.url),
                attempts=number,
                history=(*history, Attempt(number=number, error=error)),
                reason=f"not retried: {why}",
            )
            wrapped.__cause__ = error
            return wrapped
        with contextlib.suppress(AttributeError):
            setattr(error, HANDLED_ATTR, True)
        add_note(error, f"aiohttp-resilient did not retry: {why}")
        return error


def _why_not_retried(req: ClientRequest, error: Exception, judged: Judged) -> str:
    if judged.stale:
        return (
            f"{req.method} is not idempotent and lost the stale keep-alive race (the server "
            "closed the idle connection as the request went out; it may have arrived): send "
            "an Idempotency-Key header to make it retryable"
        )
    if classify(error) is Verdict.MAYBE_SENT:
        return (
            f"{req.method} is not idempotent and the request may have reached the server "
            "(send an Idempotency-Key header to make it retryable)"
        )
    if bad_host_name(error):
        return f"the host name {req.url.host!r} is malformed: fix the URL"
    return "retrying cannot help with this error"


def _note_keep_alive(req: ClientRequest, header: str) -> None:
    # The server announced its idle timeout: the connector keeps its pooled connections below it.
    connector = req.session.connector
    if isinstance(connector, TrackingConnector):
        connector.note_keep_alive(req.connection_key, header)


def _hold_slot_while_streaming(claim: HostClaim, resp: ClientResponse) -> None:
    # A response handed to the caller keeps its slot until its connection is released.
    connection = resp.connection
    if connection is None:  # the body arrived whole: the connection is back in the pool
        claim.release_slot()
    else:
        connection.add_callback(claim.release_slot)


async def _buffer_body(resp: ClientResponse, cap: int) -> None:
    """Read the body inside the retry loop (so that a cut is retried), if it fits in ``cap``.

    Callers skip bodies that have already arrived whole (nothing can cut them any more). Only
    bodies of known length are buffered: one without ``Content-Length`` may never end (an event
    stream, a long poll, an upgraded connection), and the caller must get it at once. A body that
    does not fit is handed to the caller unread, as if buffering were off.
    """
    content = resp.content
    length = resp.content_length
    if length is None or length > cap or resp.status < 200:
        return
    if hdrs.CONTENT_ENCODING not in resp.headers:
        # aiohttp's own read(), not ResilientResponse's: a cut here is retried, not explained.
        await ClientResponse.read(resp)  # the caller's read() then returns these bytes
        return
    # Compressed: Content-Length counts the compressed bytes, the cap applies to what would be
    # held in memory. Read under the cap, then put back what was read, so that the caller can
    # still stream a body that turns out too big.
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= cap and (chunk := await content.readany()):
            chunks.append(chunk)
            size += len(chunk)
    except BaseException:
        resp.close()
        raise
    with warnings.catch_warnings():
        # aiohttp deprecated unread_data() for parsers; it is still the one way to push back.
        warnings.simplefilter("ignore", DeprecationWarning)
        content.unread_data(b"".join(chunks))
    if size <= cap:
        await ClientResponse.read(resp)
