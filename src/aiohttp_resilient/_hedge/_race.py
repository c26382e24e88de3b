"""The race between a call and its hedges: the first good answer wins, the others are cancelled.

The original goes through the middleware's whole retry path (its retries included); a hedge is
one more attempt of the same request on a copy of it, sent when the original has not answered
after the host's delay and the host can take more load. A hedge claims the host like any
attempt (a slot under the per-host limit, waited for if need be), is charged to the retry budget
and never retried. An attempt that fails does not fail the call while another is running; the
call fails with the original's error when all have failed.

Cancellation (the pitfall of every hedging library: ``asyncio.wait`` does not cancel what it
waits for): on every way out, the attempts still running are cancelled and awaited (aiohttp
closes the connection of a request cancelled mid-flight; the middleware frees its claim), and a
loser that had already answered is released (its connection goes back to the pool if the body
was complete, else it is closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from contextvars import ContextVar
from typing import Any, Final, Protocol

from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, payload

from .._health._claim import HostClaim
from .._health._hosts import HostHealth
from .._health._limiter import HostKey
from .._observe._stats import StatsRecorder
from .._retry._classify import signal_of_error, signal_of_status
from .._retry._loop import Refusal
from .._retry._policy import RetryPolicy
from .._transport._aiohttp_compat import clone_request
from .._util._log import log_fields, logger
from .._util._redact import redact_url
from .._util._timing import Clock
from ._delay import HedgeWindow

__all__ = ["HEDGE_ATTEMPT", "Hedger", "hedgeable", "race"]

#: True inside a hedge's task (each task runs in a copy of the context, so it stays there): an
#: inner middleware, such as the OpenTelemetry attempt span, tells a hedge from an attempt.
HEDGE_ATTEMPT: Final[ContextVar[bool]] = ContextVar("aiohttp_resilient_hedge", default=False)

Original = Callable[[ClientRequest, ClientHandlerType], Coroutine[Any, Any, ClientResponse]]
Send = Callable[[ClientRequest, ClientHandlerType, RetryPolicy, bool], Awaitable[ClientResponse]]


class Hedger(Protocol):
    """What the race needs of the middleware that runs it."""

    _health: HostHealth
    _stats: StatsRecorder | None
    _clock: Clock
    _hedge: HedgeWindow | None

    def _answered(
        self,
        req: ClientRequest,
        resp: ClientResponse,
        claim: HostClaim,
        run: None,
        started: float,
        policy: RetryPolicy,
        idempotent: bool,
        key: HostKey,
        idle: None,
    ) -> Refusal | None: ...


class _Wake:
    """Wakes the race when an attempt ends (a done callback) or its timer fires: a cheaper
    ``asyncio.wait(FIRST_COMPLETED)`` for a race that runs on every hedgeable call."""

    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None

    def __call__(self, _: object = None) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until an attempt ends or ``timeout`` seconds pass (``None``: no timer)."""
        self._future = future = self._loop.create_future()
        timer = None if timeout is None else self._loop.call_later(timeout, self)
        try:
            await future
        finally:
            self._future = None
            if timer is not None:
                timer.cancel()


class _HedgeRefusedError(Exception):
    """A hedge got an answer the retry policy would retry (a 503, say): it lost."""


def hedgeable(req: ClientRequest, policy: RetryPolicy) -> bool:
    """Whether ``req`` may be sent twice: idempotent by the policy's rule, with no body or a
    bytes one (a stream can be sent once)."""
    idempotent = req.method in policy.methods or (
        policy.idempotency_header is not None and policy.idempotency_header in req.headers
    )
    body = req.body
    return idempotent and (body == b"" or isinstance(body, payload.BytesPayload))


async def race(
    hedger: Hedger,
    window: HedgeWindow,
    req: ClientRequest,
    handler: ClientHandlerType,
    policy: RetryPolicy,
    original: Original,
    send: Send,
) -> ClientResponse:
    """Run ``req`` through ``original`` (the retry path), hedged with ``send`` (one attempt)."""
    url = req.url
    key: HostKey = (url.scheme, url.host, url.port)
    clock = hedger._clock
    started = clock()
    window.called(key, started)
    delay = window.delay(key, started)
    if delay is None:  # warming up, or too slow to hedge: the call as it would go unhedged
        resp = await original(req, handler)
        now = clock()
        window.observe(key, now - started, now)
        return resp
    loop = asyncio.get_running_loop()
    first = loop.create_task(original(req, handler))
    running: dict[asyncio.Future[ClientResponse], bool] = {first: False}  # True: a hedge
    wake = _Wake(loop)
    first.add_done_callback(wake)
    hedges_left = window.policy.max_hedges
    failure: BaseException | None = None  # the original's, once it failed
    try:
        while True:
            if failure is None:
                timeout = delay if hedges_left else None
            else:  # only hedges run: within what is left of the policy's deadline, if any
                timeout = _left(policy, started, clock())
            await wake.wait(timeout)
            done = [task for task in running if task.done()]
            if not done:
                if failure is not None:  # the deadline passed while only hedges ran
                    raise failure
                # The delay passed with no answer: hedge, if the host can take it.
                hedges_left -= 1
                hedge = _launch(hedger, window, key, (req, first), handler, policy, send, started)
                if hedge is None:
                    hedges_left = 0
                else:
                    running[hedge] = True
                    hedge.add_done_callback(wake)
                continue
            winner = None
            for task in done:
                is_hedge = running.pop(task)
                if not task.cancelled() and task.exception() is None:
                    winner = winner or (task, is_hedge)
                elif not is_hedge:  # no more hedges: those running may still answer
                    failure = asyncio.CancelledError() if task.cancelled() else task.exception()
                    hedges_left = 0
            if winner is not None:
                return _won(hedger, window, key, winner, done, started, clock, req)
            if not running:  # every attempt failed, the original among them
                assert failure is not None
                raise failure
    finally:
        await _stop(running)


def _left(policy: RetryPolicy, started: float, now: float) -> float | None:
    # Seconds left of the call's deadline (None: it has none); 0 once it passed.
    deadline = policy.deadline
    return None if deadline is None else max(0.0, started + deadline - now)


def _launch(
    hedger: Hedger,
    window: HedgeWindow,
    key: HostKey,
    racing: tuple[ClientRequest, asyncio.Future[ClientResponse]],
    handler: ClientHandlerType,
    policy: RetryPolicy,
    send: Send,
    started: float,
) -> asyncio.Future[ClientResponse] | None:
    # Stand down on a sick host, past the extra-load bound, or with the retry budget refusing
    # (or while the original's body is still being written).
    original, first = racing
    now = hedger._clock()
    health = hedger._health
    copy = clone_request(original)
    reason = "body" if copy is None else health.strain(key, now)
    if reason is None and not window.try_hedge(key, now):
        reason = "max_extra"
    if reason is None and not health.charge(key, now):
        reason = "budget"
    if logger.isEnabledFor(logging.DEBUG):
        _log(original, key, reason)
    if copy is None or reason is not None:
        return None
    if hedger._stats is not None:
        hedger._stats.hedged(key)
    hedge = _hedge(hedger, (copy, first), handler, policy, key, send, started)
    return asyncio.get_running_loop().create_task(hedge)


def _log(req: ClientRequest, key: HostKey, reason: str | None) -> None:
    url = redact_url(req.url)
    fields = log_fields("hedge", req.method, url, key, stood_down=reason)
    if reason is None:
        logger.debug("hedging %s %s", req.method, url, extra=fields)
    else:
        logger.debug("not hedging %s %s: %s", req.method, url, reason, extra=fields)


async def _hedge(
    hedger: Hedger,
    copy_of: tuple[ClientRequest, asyncio.Future[ClientResponse]],
    handler: ClientHandlerType,
    policy: RetryPolicy,
    key: HostKey,
    send: Send,
    call_started: float,
) -> ClientResponse:
    # One attempt under a claim of its own; a refusal or an error is the hedge's loss.
    req, first = copy_of
    HEDGE_ATTEMPT.set(True)
    health, clock = hedger._health, hedger._clock
    claim = health.try_claim(key, clock(), False) or await health.claim(key, first=False)
    if first.done() and not first.cancelled() and first.exception() is None:
        # The slot it waited for was the original's, freed as it answered: the race is decided
        # (it is told in the same loop pass), so the copy need not go.
        claim.abandon(clock())
        raise _HedgeRefusedError("the original answered while the hedge waited for a slot")
    try:
        resp = await send(req, handler, policy, True)
    except Exception as exc:
        claim.end(signal_of_error(exc), clock())
        raise
    except BaseException:  # cancelled: the original won
        claim.abandon(clock())
        raise
    refusal = hedger._answered(req, resp, claim, None, call_started, policy, True, key, None)
    if refusal is not None:
        claim.end(signal_of_status(refusal.status), clock(), retry_after=refusal.told(policy))
        resp.release()
        raise _HedgeRefusedError(f"the hedge got {refusal.status}")
    return resp


def _won(
    hedger: Hedger,
    window: HedgeWindow,
    key: HostKey,
    winner: tuple[asyncio.Future[ClientResponse], bool],
    done: Iterable[asyncio.Future[ClientResponse]],
    started: float,
    clock: Clock,
    req: ClientRequest,
) -> ClientResponse:
    task, is_hedge = winner
    now = clock()
    window.observe(key, now - started, now)
    for other in done:  # finished in the same pass: its answer is thrown away
        if other is not task and not other.cancelled() and other.exception() is None:
            other.result().release()
    if is_hedge:
        if hedger._stats is not None:
            hedger._stats.hedge_won(key)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "hedge of %s %s won after %.3fs",
                req.method,
                redact_url(req.url),
                now - started,
                extra=log_fields("hedge_won", req.method, redact_url(req.url), key),
            )
    return task.result()


async def _stop(running: dict[asyncio.Future[ClientResponse], bool]) -> None:
    # Cancel what still runs and wait until it has let go of its claim and connection (a
    # cancellation of the caller meanwhile still propagates); a response that slipped through
    # before the cancellation landed is released.
    if not running:
        return
    for task in running:
        task.cancel()
    await asyncio.wait(running)
    for task in running:
        if not task.cancelled() and task.exception() is None:
            task.result().release()
