"""RetryMiddleware: an aiohttp client middleware that retries what is safe to retry."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import warnings
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs

from ._classify import (
    Signal,
    Verdict,
    classify,
    malformed_host,
    signal_of_error,
    signal_of_status,
)
from ._connector import TrackingConnector, last_connection_idle
from ._decision import next_step, next_step_after_error
from ._engine import (
    Clock,
    RetryRun,
    Sleep,
    deadline_timer,
    log_fields,
    logger,
    timer_expired,
)
from ._events import Attempt, RetryHook, check_hooks, describe_error
from ._exceptions import (
    BodyNotReplayableError,
    CircuitOpenError,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
)
from ._health import HealthPolicy, HostClaim, HostHealth, WaitExpiredError
from ._idle import IdleWatchdog
from ._limiter import HostKey, HostLimiter, host_key
from ._notes import add_note
from ._policy import RetryPolicy, parse_retry_after
from ._redact import redact_url
from ._stats import GIVEUP_BODY, GIVEUP_CIRCUIT, GIVEUP_DEADLINE, StatsRecorder

__all__ = ["HANDLED_ATTR", "RetryMiddleware", "session_middleware", "session_policy", "use_policy"]

#: Set on an exception the middleware let through as not retryable, so that an enclosing
#: ``@retry_on_disconnect`` does not retry what was judged unsafe.
HANDLED_ATTR: Final = "_aiohttp_resilient_handled"

# The methods for which aiohttp's ClientSession silently runs the middleware chain once more after
# a ClientOSError or ServerDisconnectedError (aiohttp.client.IDEMPOTENT_METHODS in 3.14).
_HIDDEN_RETRY_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_HIDDEN_RETRY_ERRORS: Final = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)
# Errors that, on a reused connection before a response, mean the server had closed it idle.
_STALE_ERRORS: Final = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
    aiohttp.ClientConnectionResetError,
)

# Answers that say "too many": under a congested host's lowered limit, their attempts are
# queued again without counting.
_CONGESTION_STATUSES: Final = frozenset({429, 503})

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
    """The first :class:`RetryMiddleware` in ``session``'s chain, if any (aiohttp keeps the
    chain in a private attribute: this is the one place that reads it to find ours)."""
    for middleware in getattr(session, "_middlewares", None) or ():
        if isinstance(middleware, RetryMiddleware):
            return middleware
    return None


class _DeadlinePassedError(Exception):
    """The policy's deadline passed: while waiting for a slot, before an attempt, or during one.

    Private: the give-up it leads to is raised from the timer's TimeoutError or the last failure.
    """

    def __init__(self, *, waited_for: str | None = None, during_attempt: bool = False) -> None:
        super().__init__()
        self.waited_for = waited_for  # what the attempt waited for and never got (a slot, ...)
        self.during_attempt = during_attempt


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


def _last_error(run: RetryRun | None) -> BaseException | None:
    return run.history[-1].error if run is not None and run.history else None


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
        sleep: The wait function (inject a fake one in tests).
        clock: A monotonic clock in seconds (inject a fake one in tests).
    """

    __slots__ = (
        "_clock",
        "_health",
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

    @property
    def stats_recorder(self) -> StatsRecorder | None:
        """What counts this middleware's calls (``None`` when ``stats=False``)."""
        return self._stats

    @property
    def limiter(self) -> HostLimiter | None:
        """The per-host limiter, if any."""
        return self._health.limiter

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
        """Send ``req`` through ``handler`` until it succeeds or the policy gives up."""
        policy = _policy_override.get() or self.policy
        method = req.method
        idempotent = method in policy.methods or (
            policy.idempotency_header is not None and policy.idempotency_header in req.headers
        )
        # aiohttp re-runs the chain once after a ClientOSError/ServerDisconnectedError unless the
        # session's private switch is off. It reads the switch when a request starts, so requests
        # already under way may still be re-run: _not_retried() never lets those errors through.
        session = req.session
        if getattr(session, "_retry_connection", False):
            session._retry_connection = False
        health = self._health
        stats = self._stats
        idle = self._idle if policy.watch_idle else None  # off for a long poll's policy
        url = req.url
        key = (url.scheme, url.host, url.port)  # host_key(), inlined: it runs per request
        buffer = idempotent and policy.buffer_body
        deadline = policy.deadline
        clock = self._clock
        started = clock()
        wait_until = None if deadline is None else started + deadline
        run: RetryRun | None = None
        number = 0
        charged_at: float | None = None  # when the next attempt was charged to the budget
        while True:
            number += 1
            claim = health.try_claim(
                key, started if number == 1 else clock(), number == 1, charged_at
            )
            if claim is None:
                claim = await self._claim(
                    req, policy, key, run, number, started, wait_until, charged_at
                )
            if idle is not None:  # idle.watch(req), inlined: it runs per attempt
                idle.watched[req] = req.response
                if idle.loop is not req.loop:
                    idle.start(req.loop)
            try:
                if deadline is None:  # the hot path: _send() inlined, a coroutine frame less
                    resp = await handler(req)
                    if (
                        buffer
                        and not resp.content.is_eof()  # arrived whole: nothing left to cut
                        and resp.status not in policy.statuses
                    ):
                        await _buffer_body(resp, policy.max_buffer_size)
                else:
                    resp = await self._send_before(
                        started + deadline - clock(), req, handler, policy, buffer
                    )
            except _DeadlinePassedError as passed:
                if idle is not None:
                    idle.unwatch(req)
                claim.abandon(clock())
                raise await self._deadline_give_up(
                    passed, run, policy, req, started, number, claim.started
                ) from (passed.__cause__ if passed.during_attempt else _last_error(run))
            except Exception as exc:
                error = exc
            except BaseException:  # cancelled: free the claim, never retry or swallow
                if idle is not None:
                    idle.unwatch(req)
                claim.abandon(clock())
                raise
            else:
                status = resp.status
                if (hint := resp.headers.get(hdrs.KEEP_ALIVE)) is not None:
                    _note_keep_alive(req, hint)
                if not (status in policy.statuses and (idempotent or status == 429)):
                    # The slot stays taken while the caller streams the body: it is freed
                    # with the connection (None: the body arrived whole, it is back already).
                    connection = resp.connection
                    keep = connection is not None and claim.slot
                    now = clock()
                    if status < 400:
                        claim.served(now, keep_slot=keep)
                    else:
                        claim.end(signal_of_status(status), now, keep_slot=keep)
                    if keep:
                        connection.add_callback(claim.release_slot)  # type: ignore[union-attr]
                    if stats is not None:
                        stats.served(key, now - started, now - claim.started, run, status)
                    if idle is not None and resp.content.is_eof():
                        idle.watched.pop(req, None)  # else the watchdog follows the caller's read
                    return resp
                # A retryable status. Until it is handed back or thrown away, the response and
                # its slot must be freed on any way out (a cancelled hook, say).
                try:
                    retry_after = None
                    if policy.respect_retry_after:
                        retry_after = parse_retry_after(resp.headers.get(hdrs.RETRY_AFTER))
                    now = clock()
                    # The slot stays until it is known whether the caller gets the response.
                    claim.end(
                        signal_of_status(status), now, retry_after=retry_after, keep_slot=True
                    )
                    attempt = Attempt(
                        number=number,
                        status=status,
                        reused_connection=_reused(_take_idle()),
                        elapsed=now - claim.started,
                    )
                    if run is None:
                        run = self._new_run(policy, req, started)
                    try:
                        delay, reason, charged_at = await next_step(
                            health,
                            run,
                            key,
                            attempt,
                            now,
                            at_once=False,
                            congestion=status in _CONGESTION_STATUSES,
                            requeue=status in _CONGESTION_STATUSES and claim.congested(),
                            retry_after=retry_after,
                        )
                    except RetryBudgetExhaustedError:
                        if policy.raise_on_status:
                            raise
                        _hold_slot_while_streaming(claim, resp)
                        return resp  # the give-up is told; the caller gets the answer
                    if delay is None:
                        gave_up = await run.give_up(attempt, reason, retry_after=retry_after)
                        if not policy.raise_on_status:
                            _hold_slot_while_streaming(claim, resp)
                            return resp
                except BaseException:
                    resp.release()
                    claim.release_slot()
                    raise
                resp.release()
                claim.release_slot()
                if delay is None:
                    raise gave_up
                await self._before_resend(req, run, attempt, delay, reason, number, cause=None)
                continue

            # The attempt raised.
            if idle is not None:
                idle.unwatch(req)
            now = clock()
            verdict = classify(error)
            pooled_for = _take_idle()
            stale = (
                verdict is Verdict.MAYBE_SENT
                and isinstance(error, _STALE_ERRORS)
                and claim.is_stale_race(now)
                and _stale_race(req, pooled_for)
                # One free pass per call: a host that refuses requests at once on pooled
                # connections (overload answered with RST) looks like the race every time.
                and (run is None or not run.stale_used)
            )
            # The stale keep-alive race says nothing about the host.
            signal = Signal.LOCAL if stale else signal_of_error(error)
            claim.end(signal, now)
            if not (verdict is Verdict.NOT_SENT or (verdict is Verdict.MAYBE_SENT and idempotent)):
                if stats is not None:
                    stats.not_retried(
                        key, () if run is None else run.history, now - claim.started, now - started
                    )
                raise self._not_retried(
                    req, error, verdict, number, run.history if run is not None else (), stale
                )
            attempt = Attempt(
                number=number,
                error=error,
                reused_connection=_reused(pooled_for),
                elapsed=now - claim.started,
            )
            if run is None:
                run = self._new_run(policy, req, started)
            if stale:
                run.stale_used = True
            delay, reason, charged_at = await next_step_after_error(
                health, run, claim, attempt, now, signal, stale=stale
            )
            if delay is None:
                raise await run.give_up(attempt, reason) from error
            await self._before_resend(req, run, attempt, delay, reason, number, cause=error)

    async def _claim(
        self,
        req: ClientRequest,
        policy: RetryPolicy,
        key: HostKey,
        run: RetryRun | None,
        number: int,
        started: float,
        wait_until: float | None,
        charged_at: float | None,
    ) -> HostClaim:
        # The slow path of a claim: the breaker, the rate or the slots make the attempt wait.
        health = self._health
        try:
            return await health.claim(
                key,
                first=number == 1,
                charged_at=charged_at,
                wait_until=wait_until,
                last_error=_last_error(run),
            )
        except WaitExpiredError as expired:
            passed = _DeadlinePassedError(waited_for=expired.waited_for)
            raise await self._deadline_give_up(
                passed, run, policy, req, started, number, self._clock()
            ) from _last_error(run) or expired.__cause__
        except CircuitOpenError as exc:
            if run is None:
                run = self._new_run(policy, req, started)
            await run.give_up(None, str(exc), kind=GIVEUP_CIRCUIT)
            raise

    async def _send(
        self,
        req: ClientRequest,
        handler: ClientHandlerType,
        policy: RetryPolicy,
        buffer: bool,
    ) -> ClientResponse:
        # Kept the same as its inlined twin at the top of __call__'s loop.
        resp = await handler(req)
        if (
            buffer
            and not resp.content.is_eof()  # arrived whole: nothing left to cut
            and resp.status not in policy.statuses
        ):
            await _buffer_body(resp, policy.max_buffer_size)
        return resp

    async def _deadline_give_up(
        self,
        passed: _DeadlinePassedError,
        run: RetryRun | None,
        policy: RetryPolicy,
        req: ClientRequest,
        started: float,
        number: int,
        attempt_started: float,
    ) -> RetriesExhaustedError:
        if run is None:
            run = self._new_run(policy, req, started)
        if passed.during_attempt:
            run.record(
                Attempt(
                    number=number,
                    error=passed.__cause__,
                    elapsed=self._clock() - attempt_started,
                )
            )
            reason = f"the deadline of {policy.deadline:g}s passed during attempt {number}"
        elif passed.waited_for is not None:
            reason = (
                f"the deadline of {policy.deadline:g}s passed while attempt {number} waited for "
                f"{passed.waited_for}"
            )
        else:
            reason = f"the deadline of {policy.deadline:g}s passed before attempt {number}"
        return await run.give_up(None, reason, kind=GIVEUP_DEADLINE)

    async def _send_before(
        self,
        remaining: float,
        req: ClientRequest,
        handler: ClientHandlerType,
        policy: RetryPolicy,
        buffer: bool,
    ) -> ClientResponse:
        if remaining <= 0:
            raise _DeadlinePassedError
        timer = deadline_timer(remaining)
        try:
            async with timer:
                return await self._send(req, handler, policy, buffer)
        except asyncio.TimeoutError as exc:  # not the builtin TimeoutError on Python 3.10
            if not timer_expired(timer):  # an aiohttp timeout inside, not ours
                raise
            raise _DeadlinePassedError(during_attempt=True) from exc

    def _new_run(self, policy: RetryPolicy, req: ClientRequest, started: float) -> RetryRun:
        return RetryRun(
            policy,
            method=req.method,
            url=functools.partial(redact_url, req.url),
            started=started,
            clock=self._clock,
            sleep=self._sleep,
            on_retry=self._on_retry,
            on_giveup=self._on_giveup,
            stats=self._stats,
            key=host_key(req.url),
        )

    async def _before_resend(
        self,
        req: ClientRequest,
        run: RetryRun,
        attempt: Attempt,
        delay: float,
        reason: str,
        number: int,
        *,
        cause: BaseException | None,
    ) -> None:
        # A failed attempt may leave its body writer running: let it settle first (as aiohttp's
        # own retry does), then look at whether the body can be sent again.
        await req.close()
        body = req.body
        if getattr(body, "consumed", False):
            # aiohttp would re-send a spent stream as an empty body, silently.
            error = BodyNotReplayableError(
                method=req.method,
                url=redact_url(req.url),
                body_type=type(body).__name__,
                attempts=number,
                status=attempt.status,
                last_failure=attempt.outcome,
            )
            logger.warning(
                "not retrying: %s",
                error,
                extra=log_fields(
                    "not_retried",
                    req.method,
                    error.url,
                    host_key(req.url),
                    attempt=number,
                    reason=GIVEUP_BODY,
                ),
            )
            if self._stats is not None:
                self._stats.gave_up(
                    host_key(req.url), GIVEUP_BODY, run.history, self._clock() - run.started
                )
            raise error from cause
        continue100 = getattr(req, "_continue", None)
        if continue100 is not None and continue100.done():
            # aiohttp makes one "100 Continue" waiter per request, and the last attempt spent it:
            # reused, it ends the next attempt's body writer at once (cancelled), which closes the
            # connection before the response is read (AttributeError on Python 3.12+).
            req.update_expect_continue(True)
        await run.retry(attempt, delay, reason)

    def _not_retried(
        self,
        req: ClientRequest,
        error: Exception,
        verdict: Verdict,
        number: int,
        history: tuple[Attempt, ...],
        stale: bool = False,
    ) -> Exception:
        if stale:
            why = (
                f"{req.method} is not idempotent and lost the stale keep-alive race (the server "
                "closed the idle connection as the request went out; it may have arrived): send "
                "an Idempotency-Key header to make it retryable"
            )
        elif verdict is Verdict.MAYBE_SENT:
            why = (
                f"{req.method} is not idempotent and the request may have reached the server "
                "(send an Idempotency-Key header to make it retryable)"
            )
        elif malformed_host(req.url.host) and isinstance(error, aiohttp.ClientConnectorDNSError):
            why = f"the host name {req.url.host!r} is malformed: fix the URL"
        else:
            why = "retrying cannot help with this error"
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
                    host_key(req.url),
                    attempt=number,
                    cause=cause,
                    reason=why,
                ),
            )
        if (
            req.method in _HIDDEN_RETRY_METHODS
            and isinstance(error, _HIDDEN_RETRY_ERRORS)
            and not isinstance(error, aiohttp.ClientConnectorError)  # aiohttp re-raises those
        ):
            # aiohttp would answer this error type by sending the request once more on its own,
            # if its switch was still on when this request started (another request may have
            # turned it off since): so it must not leave the middleware as it is.
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
