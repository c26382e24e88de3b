"""OpenTelemetry through the real SDK with in-memory exporters, with and without
opentelemetry-instrumentation-aiohttp-client on the session."""

from __future__ import annotations

import collections
from typing import Any

import aiohttp
import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from aiohttp_resilient import RetryPolicy, instrument_session, resilient_session
from aiohttp_resilient.testing import Fault, FaultServer

FAST = RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.002, jitter=None)


def providers() -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tracer_provider, exporter, MeterProvider(metric_readers=[reader]), reader


def duration_points(reader: InMemoryMetricReader) -> list[Any]:
    data = reader.get_metrics_data()
    points = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == "http.client.request.duration":
                    points.extend((scope.scope.name, p) for p in metric.data.data_points)
    return points


def by_kind(spans: tuple[ReadableSpan, ...], kind: SpanKind) -> list[ReadableSpan]:
    return sorted((s for s in spans if s.kind is kind), key=lambda s: s.start_time or 0)


async def test_a_span_per_call_a_child_per_attempt_and_a_duration_each(
    fault_server: FaultServer,
) -> None:
    """Three attempts: three CLIENT spans under one call span, resend_count 1 and 2, two retry
    events, three duration samples, as many as the server saw."""
    fault_server.script("/a", [Fault.fin(), Fault.status(503), Fault.ok()])
    tracer_provider, exporter, meter_provider, reader = providers()
    async with resilient_session(policy=FAST) as session:
        instrument_session(session, tracer_provider=tracer_provider, meter_provider=meter_provider)
        async with session.get(fault_server.url_for("/a").with_query(token="t-secret")) as resp:
            await resp.read()
    spans = exporter.get_finished_spans()
    (call,) = by_kind(spans, SpanKind.INTERNAL)
    attempts = by_kind(spans, SpanKind.CLIENT)
    assert len(attempts) == fault_server.count("/a") == 3
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in attempts)
    assert [s.attributes.get("http.request.resend_count") for s in attempts] == [None, 1, 2]
    assert [s.attributes.get("http.response.status_code") for s in attempts] == [None, 503, 200]
    assert attempts[0].attributes["error.type"] == "ServerDisconnectedError"
    assert [e.name for e in call.events] == ["aiohttp_resilient.retry"] * 2
    assert [e.attributes["aiohttp_resilient.cause"] for e in call.events] == [
        "disconnect",
        "status_503",
    ]
    points = duration_points(reader)
    assert sum(p.count for _, p in points) == 3
    assert {p.attributes["http.request.method"] for _, p in points} == {"GET"}
    assert list(points[0][1].explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    everything = repr([dict(s.attributes) for s in spans]) + repr([p for _, p in points])
    assert "t-secret" not in everything
    assert "token=REDACTED" in everything


async def test_a_give_up_is_an_event_on_the_call_span(fault_server: FaultServer) -> None:
    """The call span of a call given up on carries the give-up and its reason."""
    fault_server.set_default("/dead", Fault.status(502))
    tracer_provider, exporter, meter_provider, _ = providers()
    async with resilient_session(policy=FAST.replace(attempts=2)) as session:
        instrument_session(session, tracer_provider=tracer_provider, meter_provider=meter_provider)
        with pytest.raises(aiohttp.ClientError):
            await session.get(fault_server.url_for("/dead"))
    (call,) = by_kind(exporter.get_finished_spans(), SpanKind.INTERNAL)
    assert [e.name for e in call.events] == [
        "aiohttp_resilient.retry",
        "aiohttp_resilient.give_up",
        "exception",
    ]
    assert call.events[1].attributes["aiohttp_resilient.reason"] == "attempts"
    assert len(by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)) == 2


@pytest.mark.parametrize("how", ["trace_config", "instrumentor"])
async def test_with_the_aiohttp_instrumentation_nothing_is_counted_twice(
    fault_server: FaultServer, how: str
) -> None:
    """Its span is the call's: our attempts nest under it, and the duration metric is its
    alone (one sample per call), not ours too; whether its trace config is passed or its
    instrumentor patches every session."""
    from opentelemetry.instrumentation.aiohttp_client import (
        AioHttpClientInstrumentor,
        create_trace_config,
    )

    fault_server.script("/a", [Fault.status(503), Fault.ok()])
    tracer_provider, exporter, meter_provider, reader = providers()
    instrumentor = AioHttpClientInstrumentor()
    if how == "trace_config":
        configs = [
            create_trace_config(tracer_provider=tracer_provider, meter_provider=meter_provider)
        ]
    else:
        configs = []
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        async with resilient_session(policy=FAST, trace_configs=configs) as session:
            instrument_session(
                session, tracer_provider=tracer_provider, meter_provider=meter_provider
            )
            async with session.get(fault_server.url_for("/a")) as resp:
                await resp.read()
    finally:
        if how == "instrumentor":
            instrumentor.uninstrument()
    spans = exporter.get_finished_spans()
    assert by_kind(spans, SpanKind.INTERNAL) == []
    clients = by_kind(spans, SpanKind.CLIENT)
    theirs = [s for s in clients if s.parent is None]
    ours = [s for s in clients if s.parent is not None]
    assert len(theirs) == 1
    assert len(ours) == fault_server.count("/a") == 2
    assert all(s.parent.span_id == theirs[0].context.span_id for s in ours)  # type: ignore[union-attr]
    assert [e.name for e in theirs[0].events] == ["aiohttp_resilient.retry"]
    assert all(scope != "aiohttp_resilient" for scope, _ in duration_points(reader))


async def test_instrumenting_twice_counts_once(fault_server: FaultServer) -> None:
    """A second instrument_session() leaves the session as it was: one call span, one attempt
    span and one duration point per attempt, resend_count as the server saw it."""
    fault_server.script("/a", [Fault.status(503), Fault.ok()])
    tracer_provider, exporter, meter_provider, reader = providers()
    async with resilient_session(policy=FAST) as session:
        for _ in range(2):
            same = instrument_session(
                session, tracer_provider=tracer_provider, meter_provider=meter_provider
            )
            assert same is session
        async with session.get(fault_server.url_for("/a")) as resp:
            await resp.read()
    spans = exporter.get_finished_spans()
    assert len(by_kind(spans, SpanKind.INTERNAL)) == 1
    attempts = by_kind(spans, SpanKind.CLIENT)
    assert len(attempts) == fault_server.count("/a") == 2
    assert [s.attributes.get("http.request.resend_count") for s in attempts] == [None, 1]
    assert sum(p.count for _, p in duration_points(reader)) == 2


async def test_stats_prometheus_and_otel_agree_with_the_server_by_status(
    fault_server: FaultServer,
) -> None:
    """120 x 200 and 30 x 404, 5 POSTs answered 503 (never retried on a status), a GET given up
    on after 3 x 503, another that got 200 after 2 x 503: stats, Prometheus and the spans count
    each class as the server answered it, and only 2xx calls are successes."""
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    from aiohttp_resilient import PrometheusCollector, stats

    codes = {"/ok": 200, "/missing": 404, "/busy": 503, "/flaky": 503}
    fault_server.set_default("/missing", Fault.status(404))
    fault_server.set_default("/busy", Fault.status(503))
    fault_server.script("/flaky", [Fault.status(503), Fault.status(503), Fault.ok()])
    tracer_provider, exporter, meter_provider, reader = providers()
    registry = prometheus_client.CollectorRegistry()
    async with resilient_session(policy=FAST) as session:
        instrument_session(session, tracer_provider=tracer_provider, meter_provider=meter_provider)
        registry.register(PrometheusCollector(session))
        for path, n in (("/ok", 120), ("/missing", 30)):
            for _ in range(n):
                async with session.get(fault_server.url_for(path)) as resp:
                    await resp.read()
        for _ in range(5):
            async with session.post(fault_server.url_for("/busy"), data=b"x") as resp:
                assert resp.status == 503
        with pytest.raises(aiohttp.ClientError):
            await session.get(fault_server.url_for("/busy"))
        async with session.get(fault_server.url_for("/flaky")) as resp:
            assert resp.status == 200
        snapshot = stats(session)
        exposition = prometheus_client.generate_latest(registry).decode()
    # The server's own count, by the status it answered.
    served: dict[str, int] = {}
    for record in fault_server.records:
        code = 200 if record.action == "ok" else codes[record.path]
        served[f"{code // 100}xx"] = served.get(f"{code // 100}xx", 0) + 1
    assert served == {"2xx": 121, "4xx": 30, "5xx": 10}

    assert snapshot is not None
    total = snapshot.total
    assert total.responses == served
    assert total.answered == {"2xx": 121, "4xx": 30, "5xx": 5}
    assert (total.successes, total.client_errors, total.server_errors) == (121, 30, 5)
    assert total.give_ups == {"attempts": 1}
    assert total.requests == 121 + 30 + 5 + 1

    host = f"http://127.0.0.1:{fault_server.url.port}"
    samples = {
        (sample.name, sample.labels.get("status_class")): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.labels.get("host") == host
    }
    for status_class, n in served.items():
        assert samples[("aiohttp_resilient_responses_total", status_class)] == n
    for status_class, n in total.answered.items():
        assert samples[("aiohttp_resilient_answered_total", status_class)] == n
    assert samples[("aiohttp_resilient_successes_total", None)] == 121

    attempts = by_kind(exporter.get_finished_spans(), SpanKind.CLIENT)
    by_status: dict[str, int] = {}
    for span in attempts:
        status_class = f"{span.attributes['http.response.status_code'] // 100}xx"
        by_status[status_class] = by_status.get(status_class, 0) + 1
        error = not status_class.startswith("2")
        assert (span.status.status_code is StatusCode.ERROR) is error
        assert span.attributes.get("error.type") == (
            str(span.attributes["http.response.status_code"]) if error else None
        )
    assert by_status == served
    calls = by_kind(exporter.get_finished_spans(), SpanKind.INTERNAL)
    call_errors = collections.Counter(
        s.attributes.get("error.type") for s in calls if s.status.status_code is StatusCode.ERROR
    )
    assert call_errors == {"404": 30, "503": 6}  # 5 POSTs answered, 1 GET given up on
    points = [p for scope, p in duration_points(reader) if scope == "aiohttp_resilient"]
    by_metric: dict[str, int] = {}
    for point in points:
        status_class = f"{point.attributes['http.response.status_code'] // 100}xx"
        by_metric[status_class] = by_metric.get(status_class, 0) + point.count
    assert by_metric == served
