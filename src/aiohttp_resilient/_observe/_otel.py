"""OpenTelemetry: a span per logical call, a child span and a duration per attempt, retries and
give-ups as span events (the ``[otel]`` extra: ``opentelemetry-api`` only, as the OpenTelemetry
library guidelines ask; without an SDK everything here is a no-op)."""

from __future__ import annotations

import time
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Final

import aiohttp
from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._exceptions import RetriesExhaustedError
from .._health._limiter import HostKey
from .._hedge._race import HEDGE_ATTEMPT
from .._retry._middleware import RetryMiddleware
from .._transport._aiohttp_compat import session_middlewares, set_session_middlewares
from .._util._redact import redact_url

__all__ = ["DURATION_BUCKETS", "instrument_session"]

_SCOPE: Final = "aiohttp_resilient"
#: The semantic conventions' advised bounds for ``http.client.request.duration``, in seconds.
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_INSTRUMENTATION_MODULE: Final = "opentelemetry.instrumentation.aiohttp_client"

# (the request, how many attempts of it went): aiohttp passes one request object through every
# attempt of a call, so the count starts again when another request comes. A weak reference:
# the task's context must not keep a finished request alive.
_attempts: ContextVar[tuple[weakref.ref[ClientRequest], int] | None] = ContextVar(
    "aiohttp_resilient_otel_attempts", default=None
)


def instrument_session(
    session: aiohttp.ClientSession,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> aiohttp.ClientSession:
    """Trace and measure ``session``'s calls with OpenTelemetry; returns the session.

    - A span per logical call (``INTERNAL``, named by the method), with a ``CLIENT`` child span
      per attempt carrying ``http.request.resend_count`` from the second attempt on, and the
      ``traceparent`` of the attempt's span sent with it; a hedge's span (:class:`HedgePolicy`)
      has ``aiohttp_resilient.hedge`` true. A span that ends with a 4xx or
      5xx (an HTTP client's errors, as the semantic conventions have it) has the status ERROR
      and ``error.type`` the code as a string (``"404"``); one that ends with an exception,
      ERROR and the exception's type, except a give-up on a status, whose type is the status.
    - The stable metric ``http.client.request.duration`` (seconds, the semantic conventions'
      attributes and buckets), once per attempt.
    - Each retry and give-up as an event (``aiohttp_resilient.retry``, ``...give_up``) on the
      call's span, with its cause, delay and reason (needs the session's stats, on by default).

    With ``opentelemetry-instrumentation-aiohttp-client`` on the session (instrument aiohttp
    before the session is made), its span is the call's span: ours would repeat it, so the
    attempt spans and events go under its span, and ``http.client.request.duration`` is left
    to it, so nothing is counted twice.

    URLs in attributes are redacted (user info and credential-like query values). A session
    instrumented already is returned unchanged (the first call's providers stay).

    Usage::

        async with resilient_session() as session:
            instrument_session(session)
            ...

    Raises:
        ValueError: ``session`` has no :class:`RetryMiddleware`.
    """
    middlewares = session_middlewares(session)
    index = next((i for i, m in enumerate(middlewares) if isinstance(m, RetryMiddleware)), None)
    if index is None:
        raise ValueError("instrument_session() needs a session with a RetryMiddleware")
    if any(isinstance(m, (_CallSpan, _AttemptSpan)) for m in middlewares):
        return session  # instrumented already: a second pair would count everything twice
    retry = middlewares[index]
    assert isinstance(retry, RetryMiddleware)
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    instrumented = aiohttp_instrumented(session)
    duration = None
    if not instrumented:
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
    outer = () if instrumented else (_CallSpan(tracer),)
    set_session_middlewares(
        session,
        (
            *middlewares[:index],
            *outer,
            retry,
            _AttemptSpan(tracer, duration),
            *middlewares[index + 1 :],
        ),
    )
    recorder = retry.stats_recorder
    if recorder is not None and add_span_event not in recorder.listeners:
        recorder.listeners.append(add_span_event)
    return session


def aiohttp_instrumented(session: aiohttp.ClientSession) -> bool:
    """Whether ``opentelemetry-instrumentation-aiohttp-client`` traces ``session``."""
    for config in session.trace_configs:
        if getattr(config, "_is_instrumented_by_opentelemetry", False):
            return True
        if any(
            getattr(handler, "__module__", "").startswith(_INSTRUMENTATION_MODULE)
            for handler in config.on_request_start
        ):
            return True
    return False


def add_span_event(event: str, key: HostKey, fields: Mapping[str, object]) -> None:
    """A retry or give-up as an event on the current span (the call's)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            f"aiohttp_resilient.{event}",
            {
                f"aiohttp_resilient.{name}": value
                for name, value in fields.items()
                if isinstance(value, (str, int, float, bool))
            },
        )


def _attributes(req: ClientRequest) -> dict[str, Any]:
    url = req.url
    return {
        "http.request.method": req.method,
        "server.address": url.host or "",
        "server.port": url.port or 0,
    }


def _set_status(span: trace.Span, status: int, metric_attributes: dict[str, Any] | None) -> None:
    """``http.response.status_code``, and for an error status ``error.type`` (the code as a
    string) and the span's status ERROR: for an HTTP client, the semantic conventions make a 4xx
    an error as well as a 5xx (and any code outside 100-599); below 400 the status stays unset."""
    span.set_attribute("http.response.status_code", status)
    if metric_attributes is not None:
        metric_attributes["http.response.status_code"] = status
    if 100 <= status < 400:
        return
    span.set_attribute("error.type", str(status))
    span.set_status(Status(StatusCode.ERROR))
    if metric_attributes is not None:
        metric_attributes["error.type"] = str(status)


class _CallSpan:
    """The outer middleware: one span per logical call."""

    __slots__ = ("_tracer",)

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        attributes = _attributes(req)
        attributes["url.full"] = redact_url(req.url)
        with self._tracer.start_as_current_span(
            req.method, kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            try:
                resp = await handler(req)
            except Exception as exc:  # the span records it and its status becomes ERROR
                # A give-up on a status is that status's error, as on the attempt's span.
                status = getattr(exc, "status", None)
                if isinstance(exc, RetriesExhaustedError) and status is not None:
                    span.set_attribute("http.response.status_code", status)
                    span.set_attribute("error.type", str(status))
                else:
                    span.set_attribute("error.type", type(exc).__qualname__)
                raise
            _set_status(span, resp.status, None)
            return resp


class _AttemptSpan:
    """The inner middleware (inside the retry): a span and a duration per attempt."""

    __slots__ = ("_duration", "_tracer")

    def __init__(self, tracer: trace.Tracer, duration: metrics.Histogram | None) -> None:
        self._tracer = tracer
        self._duration = duration

    async def __call__(self, req: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        last = _attempts.get()
        number = last[1] + 1 if last is not None and last[0]() is req else 1
        _attempts.set((weakref.ref(req), number))
        attributes = _attributes(req)
        attributes["url.full"] = redact_url(req.url)
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
        if HEDGE_ATTEMPT.get():
            attributes["aiohttp_resilient.hedge"] = True
        metric_attributes = _attributes(req)
        with self._tracer.start_as_current_span(
            req.method, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            propagate.inject(req.headers)  # the server's parent is this attempt
            started = time.perf_counter()
            try:
                resp = await handler(req)
            except Exception as exc:
                metric_attributes["error.type"] = type(exc).__qualname__
                span.set_attribute("error.type", type(exc).__qualname__)
                self._record(started, metric_attributes)
                raise
            _set_status(span, resp.status, metric_attributes)
            self._record(started, metric_attributes)
            return resp

    def _record(self, started: float, attributes: dict[str, Any]) -> None:
        if self._duration is not None:
            self._duration.record(time.perf_counter() - started, attributes)
