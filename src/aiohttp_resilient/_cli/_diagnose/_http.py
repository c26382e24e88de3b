"""The steps over HTTP, sent as ``resilient_session()`` sends them but with one attempt each, so
that every failure shows: http (one timed GET), proxy (through it and direct), repeat (N GETs)
and the opt-in body limit (POSTs of growing size)."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohttp
import aiohttp.payload
from aiohttp.abc import AbstractStreamWriter

from ..._exceptions import ResilientError, cause_name
from ..._health._policy import HealthPolicy
from ..._retry._classify import Verdict as SendVerdict
from ..._retry._classify import classify
from ..._retry._policy import RetryPolicy
from ..._session import resilient_session
from ..._transport._keepalive import parse_keep_alive_timeout
from ._model import (
    BODY_PROBE_PRECISION,
    BODY_PROBE_START,
    BODY_READ_CAP,
    DiagnoseConfig,
    Step,
    Stopwatch,
    Verdict,
)
from ._proxy import PROXY_HEADERS, proxy_answer

__all__ = ["probe_body_limit", "probe_http", "probe_proxy", "probe_repeat"]

#: One attempt, statuses handed back: the probe must see each failure, not a retried success.
#: Bodies are not buffered by the middleware: the probe reads them itself, up to a cap.
_ONE_ATTEMPT = RetryPolicy(attempts=1, raise_on_status=False, buffer_body=False)
#: Response bodies are read in chunks of this size, and dropped.
_READ_CHUNK = 64 * 1024
#: No breaker, budget or adaptive limits: a run of failures must not turn into refusals.
_NO_HEALTH = HealthPolicy(budget=None, breaker=None, adaptive_limit=None, adaptive_rate=None)
#: The response headers the http step reports.
_REPORTED_HEADERS = (
    "Server",
    "Connection",
    "Keep-Alive",
    "Content-Type",
    "Content-Length",
    *PROXY_HEADERS,
)
#: Requests of the proxy step each way, at most.
_PROXY_REQUESTS = 10
#: Bisection rounds of the body probe, at most.
_BODY_BISECT_ROUNDS = 12
#: A size counts as refused by a dropped connection only if every one of this many tries drops:
#: a server that drops a share of all requests must not look like a body limit. A 413 is
#: believed at once.
_BODY_DROP_TRIES = 3


@dataclass(slots=True)
class _Outcome:
    status: int | None = None
    cause: str | None = None  # "HTTP 503" or an exception's class; None when it succeeded
    reused: bool = False
    not_sent: bool = False  # failed before anything was sent (connect phase, DNS, pool wait)
    truncated: bool = False  # the body was not read past BODY_READ_CAP
    by_proxy: str | None = None  # the proxy's reason, when the proxy made the response itself
    marks: dict[str, float] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _tracer(outcome_of: dict[str, _Outcome]) -> aiohttp.TraceConfig:
    """Marks of each request's phases, into the outcome its trace context names."""
    config = aiohttp.TraceConfig()

    def marker(name: str) -> Any:
        async def mark(session: object, context: SimpleNamespace, params: object) -> None:
            outcome = outcome_of.get(context.trace_request_ctx)
            if outcome is not None:
                outcome.marks.setdefault(name, time.monotonic())
                if name == "reuse":
                    outcome.reused = True

        return mark

    config.on_request_start.append(marker("start"))
    config.on_dns_resolvehost_start.append(marker("dns_start"))
    config.on_dns_resolvehost_end.append(marker("dns_end"))
    config.on_connection_create_start.append(marker("connect_start"))
    config.on_connection_create_end.append(marker("connect_end"))
    config.on_connection_reuseconn.append(marker("reuse"))
    config.on_request_headers_sent.append(marker("sent"))
    config.on_request_end.append(marker("headers"))
    config.freeze()
    return config


class _Client:
    """One session with one attempt per request, recording each request's outcome."""

    def __init__(self, config: DiagnoseConfig, *, force_close: bool = False) -> None:
        self.config = config
        self.outcomes: dict[str, _Outcome] = {}
        self.session = resilient_session(
            preset=config.preset,
            policy=_ONE_ATTEMPT,
            health=_NO_HEALTH,
            ca_bundle=config.ca_bundle,
            force_close=force_close,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
            trace_configs=[_tracer(self.outcomes)],
        )

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()

    async def request(
        self,
        method: str = "GET",
        *,
        proxy: str | None = None,
        data: aiohttp.payload.Payload | None = None,
        allow_redirects: bool = True,
    ) -> _Outcome:
        key = str(len(self.outcomes))
        outcome = self.outcomes[key] = _Outcome()
        try:
            async with self.session.request(
                method,
                self.config.url,
                proxy=proxy,
                data=data,
                allow_redirects=allow_redirects,
                trace_request_ctx=key,
            ) as resp:
                outcome.status = resp.status
                outcome.truncated = await _drain(resp)
                outcome.marks["read"] = time.monotonic()
                outcome.headers = {
                    h: resp.headers[h] for h in _REPORTED_HEADERS if h in resp.headers
                }
        # asyncio.TimeoutError, not TimeoutError: on 3.10 they differ, and aiohttp's total
        # timeout raises the asyncio one there.
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            outcome.cause = cause_name(exc)
            error = exc.__cause__ if isinstance(exc, ResilientError) and exc.__cause__ else exc
            outcome.not_sent = classify(error) is SendVerdict.NOT_SENT
            return outcome
        if proxy is not None:
            outcome.by_proxy = proxy_answer(outcome.status, outcome.headers)
        if outcome.by_proxy is not None:
            outcome.cause = f"HTTP {outcome.status} from the proxy"
        elif outcome.status >= 500:
            outcome.cause = f"HTTP {outcome.status}"
        return outcome


async def _drain(resp: aiohttp.ClientResponse) -> bool:
    """Read the body and drop it, up to :data:`BODY_READ_CAP` bytes; returns whether it went
    on past that. A body not read to its end cannot leave its connection in the pool: aiohttp
    closes that connection when the response is released."""
    read = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK):
        read += len(chunk)
        if read >= BODY_READ_CAP and not resp.content.at_eof():
            return True
    return False


def _phases(outcome: _Outcome) -> dict[str, float]:
    """blackbox_exporter's phase names, in seconds (TLS is inside connect here; the tls step
    times the handshake alone)."""
    m = outcome.marks
    phases: dict[str, float] = {}
    if "dns_start" in m and "dns_end" in m:
        phases["resolve"] = m["dns_end"] - m["dns_start"]
    if "connect_start" in m and "connect_end" in m:
        phases["connect"] = m["connect_end"] - m["connect_start"] - phases.get("resolve", 0.0)
    if "sent" in m and "headers" in m:
        phases["processing"] = m["headers"] - m["sent"]
    if "headers" in m and "read" in m:
        phases["transfer"] = m["read"] - m["headers"]
    return phases


async def probe_http(config: DiagnoseConfig) -> Step:
    """One GET as ``resilient_session()`` sends it: status, headers, phase timings."""
    async with _Client(config) as client:
        with Stopwatch() as watch:
            outcome = await client.request(proxy=config.proxy)
    phases = _phases(outcome)
    facts: dict[str, Any] = {
        "status": outcome.status,
        "error": outcome.cause,
        "headers": outcome.headers,
        "phases": phases,
        "keep_alive_header": parse_keep_alive_timeout(outcome.headers.get("Keep-Alive", "")),
        "connection_close": outcome.headers.get("Connection", "").lower() == "close",
        "body_truncated": outcome.truncated,
        "via_proxy": config.proxy is not None,
        "answered_by_proxy": outcome.by_proxy,
    }
    timing = " ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in phases.items())
    if outcome.status is None:
        summary = f"failed: {outcome.cause}"
        if config.proxy is not None:
            summary += " (on the connection to the proxy)"
    elif outcome.by_proxy is not None:
        summary = (
            f"HTTP {outcome.status} made by the proxy itself, not the origin: {outcome.by_proxy}"
        )
    else:
        heads = ", ".join(
            f"{k}: {v}"
            for k, v in outcome.headers.items()
            if k in ("Server", "Connection", "Keep-Alive")
        )
        summary = f"HTTP {outcome.status}" + (f" ({heads})" if heads else "") + f"; {timing}"
        if config.proxy is not None:
            summary = "through the proxy: " + summary
        if outcome.truncated:
            summary += f" (body not read past {_size(BODY_READ_CAP)}: transfer is of that part)"
    verdict: Verdict = "fail" if outcome.cause is not None else "ok"
    return Step(name="http", verdict=verdict, seconds=watch.seconds, summary=summary, facts=facts)


def _tally(outcomes: list[_Outcome]) -> dict[str, Any]:
    causes = collections.Counter(o.cause for o in outcomes if o.cause is not None)
    statuses = collections.Counter(str(o.status) for o in outcomes if o.status is not None)
    return {
        "requests": len(outcomes),
        "failures": sum(causes.values()),
        "causes": dict(causes.most_common()),
        "statuses": dict(statuses.most_common()),
        "failed_on_reused_connection": sum(1 for o in outcomes if o.cause and o.reused),
        "bodies_truncated": sum(1 for o in outcomes if o.truncated),
        # The proxy's own answers, by its reason.
        "proxy_answers": dict(
            collections.Counter(o.by_proxy for o in outcomes if o.by_proxy).most_common()
        ),
        # Failures before anything was sent (the connection could not be opened), by cause.
        "not_sent": dict(
            collections.Counter(o.cause for o in outcomes if o.cause and o.not_sent).most_common()
        ),
    }


def _tally_text(tally: dict[str, Any]) -> str:
    truncated = (
        f"; bodies not read past {_size(BODY_READ_CAP)}, so their connections were closed, "
        "not reused"
        if tally["bodies_truncated"]
        else ""
    )
    if not tally["failures"]:
        return f"{tally['requests']}/{tally['requests']} succeeded{truncated}"
    causes = ", ".join(f"{cause} x{n}" for cause, n in tally["causes"].items())
    return f"{tally['failures']}/{tally['requests']} failed ({causes}){truncated}"


async def probe_repeat(config: DiagnoseConfig) -> Step:
    """``repeat`` GETs back to back on pooled connections, as a client would send them."""
    async with _Client(config) as client:
        with Stopwatch() as watch:
            outcomes = [await client.request(proxy=config.proxy) for _ in range(config.repeat)]
    tally = _tally(outcomes)
    failures = tally["failures"]
    tally["intermittent"] = 0 < failures < len(outcomes)
    verdict: Verdict = "ok" if not failures else "warn" if tally["intermittent"] else "fail"
    return Step(
        name="repeat",
        verdict=verdict,
        seconds=watch.seconds,
        summary=_tally_text(tally),
        facts=tally,
    )


async def probe_proxy(config: DiagnoseConfig, proxy: str, shown: str) -> Step:
    """The same GET through the proxy and direct, fresh connections each time, to tell whose
    disconnect it is."""
    count = min(config.repeat, _PROXY_REQUESTS)
    with Stopwatch() as watch:
        async with _Client(config, force_close=True) as client:
            via = [await client.request(proxy=proxy) for _ in range(count)]
            direct = [await client.request() for _ in range(count)]
    via_tally, direct_tally = _tally(via), _tally(direct)
    facts = {"proxy": shown, "via_proxy": via_tally, "direct": direct_tally}
    proxy_only = via_tally["failures"] > direct_tally["failures"]
    facts["proxy_fails_more"] = proxy_only
    verdict: Verdict = "warn" if proxy_only else "fail" if direct_tally["failures"] else "ok"
    summary = f"via {shown}: {_tally_text(via_tally)}; direct: {_tally_text(direct_tally)}"
    return Step(name="proxy", verdict=verdict, seconds=watch.seconds, summary=summary, facts=facts)


class _Zeros(aiohttp.payload.Payload):
    """``size`` zero bytes with a Content-Length, written a chunk at a time: a probe of tens of
    MiB must not be allocated whole (nor each of its sizes in turn)."""

    _CHUNK = bytes(64 * 1024)

    def __init__(self, size: int) -> None:
        super().__init__(None, content_type="application/octet-stream")
        self._size = self._length = size  # _size is what aiohttp sends as Content-Length

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return "\0" * self._length

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        remaining = self._length if content_length is None else min(self._length, content_length)
        chunk = memoryview(self._CHUNK)
        while remaining > 0:
            piece = chunk[: min(remaining, len(chunk))]
            await writer.write(piece)
            remaining -= len(piece)


def _unprobable(status: int) -> bool:
    """An answer that says nothing about the body's size: POST not allowed here, credentials
    wanted, or the resource is elsewhere (redirects are not followed: a 303 turns a POST into a
    GET without its body)."""
    return status in (401, 405, 407, 501) or 300 <= status < 400


async def probe_body_limit(config: DiagnoseConfig) -> Step:
    """The largest POST body accepted: double from 1 KiB until refused (413, or the connection
    reset or closed, or a 5xx), then bisect; bounded by ``body_max`` and a number of rounds.

    Sent as the other steps send, through ``--proxy`` if one is given. A POST that failed
    before anything was sent (the connection could not be opened) measures nothing, and a
    refusal other than a 413 of the smallest size is no size limit: a server that fails every
    POST is said to, not given a limit of 0 bytes."""
    accepted = 0
    refused: int | None = None
    how: str | None = None
    sent = not_sent = 0
    with Stopwatch() as watch:
        async with _Client(config, force_close=True) as client:

            async def attempt(size: int) -> str | None:
                """``None`` if ``size`` was accepted, else how it was refused."""
                nonlocal sent, not_sent
                failure = None
                for _ in range(_BODY_DROP_TRIES):
                    outcome = await client.request(
                        "POST", proxy=config.proxy, data=_Zeros(size), allow_redirects=False
                    )
                    if outcome.not_sent:
                        not_sent += 1  # nothing reached the server: nothing measured
                        continue
                    sent += 1
                    status = outcome.status
                    if status == 413:
                        return "413"
                    if status is not None and _unprobable(status):
                        raise _NotProbable(f"the server answers POST with {status}")
                    if status is not None and status < 500:
                        return None  # read and answered (a 400 for a body of zeros counts)
                    failure = outcome.cause  # dropped, timed out or a 5xx: try again
                if failure is None:
                    raise _NotProbable(f"no POST could be sent ({outcome.cause})")
                return failure

            try:
                size = BODY_PROBE_START
                while size <= config.body_max:
                    result = await attempt(size)
                    if result is not None:
                        refused, how = size, result
                        break
                    accepted, size = size, size * 2
                if refused is not None and not accepted and how != "413":
                    return _every_post_fails(watch.elapsed, refused, how, sent)
                for _ in range(_BODY_BISECT_ROUNDS):
                    if refused is None or refused <= max(accepted, 1) * BODY_PROBE_PRECISION:
                        break
                    middle = (accepted + refused) // 2
                    result = await attempt(middle)
                    if result is None:
                        accepted = middle
                    else:
                        refused, how = middle, result
            except _NotProbable as exc:
                return Step(
                    name="body-limit",
                    verdict="info",
                    seconds=watch.elapsed,
                    summary=f"not measured: {exc}",
                    facts={"error": str(exc), "requests": sent, "not_sent": not_sent},
                )
    facts = {
        "accepted": accepted,
        "refused": refused,
        "refused_with": how,
        "requests": sent,
        "not_sent": not_sent,
    }
    verdict: Verdict
    if refused is None:
        summary = f"bodies up to {_size(accepted)} accepted (the probe's bound)"
        verdict = "ok"
    else:
        with_ = "413" if how == "413" else f"a dropped connection ({how})"
        summary = (
            f"largest accepted {_size(accepted)}; {_size(refused)} refused with {with_} "
            f"({sent} POSTs)"
        )
        # A 413 says what happened; a dropped connection looks like a network fault.
        verdict = "info" if how == "413" else "warn"
    return Step(
        name="body-limit", verdict=verdict, seconds=watch.seconds, summary=summary, facts=facts
    )


def _every_post_fails(seconds: float, size: int, how: str | None, sent: int) -> Step:
    """Even the smallest body failed, and not with a 413: no size limit can be told apart from
    a server (or network) that fails POSTs."""
    return Step(
        name="body-limit",
        verdict="warn",
        seconds=seconds,
        summary=f"not measured: even {_size(size)} failed ({how}, {sent} POSTs): POSTs fail "
        "whatever their size",
        facts={"accepted": 0, "refused": None, "refused_with": how, "requests": sent},
    )


class _NotProbable(Exception):
    pass


def _size(n: int) -> str:
    """``1536`` -> ``"1536 B (1.5 KiB)"``: exact, and readable."""
    if n < 1024:
        return f"{n} B"
    scaled, unit = (n / 1024, "KiB") if n < 1024 * 1024 else (n / (1024 * 1024), "MiB")
    return f"{n} B ({scaled:.1f} {unit})"
