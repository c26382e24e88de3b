"""PrometheusCollector, scraped over HTTP from prometheus_client's own loopback server."""

from __future__ import annotations

import asyncio
import itertools

import aiohttp
import pytest

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from aiohttp_resilient import PrometheusCollector, RetryPolicy, resilient_session  # noqa: E402
from aiohttp_resilient.testing import Fault, FaultServer  # noqa: E402

FAST = RetryPolicy(attempts=3, backoff_base=0.001, backoff_max=0.002, jitter=None)


@pytest.fixture
def registry() -> prometheus_client.CollectorRegistry:
    return prometheus_client.CollectorRegistry()


async def scrape(registry: prometheus_client.CollectorRegistry) -> dict[tuple[str, tuple], float]:
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = server.server_address[1]
        async with aiohttp.ClientSession() as plain:
            async with plain.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
    finally:
        server.shutdown()
        server.server_close()
        await asyncio.to_thread(thread.join, 5)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_counters_match_the_server_after_scripted_faults(
    fault_server: FaultServer, registry: prometheus_client.CollectorRegistry
) -> None:
    """requests, answers and responses by status class, attempts, retries{cause},
    give-ups{reason} and the duration histogram."""
    fault_server.script("/a", [Fault.fin(), Fault.status(503), Fault.ok()])
    fault_server.set_default("/dead", Fault.status(502))
    async with resilient_session(policy=FAST) as session:
        registry.register(PrometheusCollector(session))
        async with session.get(fault_server.url_for("/a")) as resp:
            await resp.read()
        with pytest.raises(aiohttp.ClientError):
            await session.get(fault_server.url_for("/dead"))
        samples = await scrape(registry)
    host = ("host", f"http://127.0.0.1:{fault_server.url.port}")
    ns = "aiohttp_resilient"
    assert samples[(f"{ns}_requests_total", (host,))] == 2
    assert samples[(f"{ns}_successes_total", (host,))] == 1
    assert samples[(f"{ns}_answered_total", (host, ("status_class", "2xx")))] == 1
    assert (f"{ns}_answered_total", (host, ("status_class", "5xx"))) not in samples  # a give-up
    assert samples[(f"{ns}_responses_total", (host, ("status_class", "2xx")))] == 1
    assert samples[(f"{ns}_responses_total", (host, ("status_class", "5xx")))] == 1 + 3
    assert samples[(f"{ns}_attempts_total", (host,))] == fault_server.count() == 6
    assert samples[(f"{ns}_retries_total", (("cause", "disconnect"), host))] == 1
    assert samples[(f"{ns}_retries_total", (("cause", "status_503"), host))] == 1
    assert samples[(f"{ns}_retries_total", (("cause", "status_502"), host))] == 2
    assert samples[(f"{ns}_give_ups_total", (host, ("reason", "attempts")))] == 1
    assert samples[(f"{ns}_request_duration_seconds_count", (host,))] == 2
    assert samples[(f"{ns}_attempt_duration_seconds_count", (host,))] == 6
    assert samples[(f"{ns}_attempt_duration_seconds_bucket", (host, ("le", "+Inf")))] == 6
    assert samples[(f"{ns}_circuit_state", (host,))] == 0
    assert samples[(f"{ns}_in_flight", (host,))] == 0
    assert samples[(f"{ns}_pool_connections", (host, ("state", "idle")))] >= 1


async def test_hosts_past_the_cap_are_exported_as_other(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    """With max_hosts=1 the busier host is named and the other summed under host="other"."""
    async with FaultServer() as busy, FaultServer() as quiet:
        async with resilient_session() as session:
            registry.register(PrometheusCollector(session, max_hosts=1))
            for server in (busy, busy, quiet):
                async with session.get(server.url_for("/")) as resp:
                    await resp.read()
            samples = await scrape(registry)
    requests = {
        dict(labels)["host"]: value
        for (name, labels), value in samples.items()
        if name == "aiohttp_resilient_requests_total"
    }
    assert requests == {f"http://127.0.0.1:{busy.url.port}": 2, "other": 1}


async def test_no_secret_reaches_a_label(
    fault_server: FaultServer, registry: prometheus_client.CollectorRegistry
) -> None:
    """User info and credential-like query values never appear in the exposition."""
    url = fault_server.url_for("/s").with_user("bob").with_password("pw-secret")
    async with resilient_session() as session:
        registry.register(PrometheusCollector(session))
        async with session.get(url.with_query(api_key="key-secret")) as resp:
            await resp.read()
        text = prometheus_client.generate_latest(registry).decode()
    assert "secret" not in text
    assert "aiohttp_resilient_requests_total" in text


def test_a_source_without_stats_is_refused() -> None:
    """A session without a RetryMiddleware cannot be exported: said at once."""
    with pytest.raises(ValueError, match="keeps no stats"):
        PrometheusCollector(object())


def test_a_middleware_or_function_without_stats_is_refused() -> None:
    """A RetryMiddleware(stats=False) or a @retry_on_disconnect(stats=False) function is
    callable, but it is not a function returning Stats: refused at construction, not called at
    every scrape. A plain function returning Stats is still taken."""
    from aiohttp_resilient import RetryMiddleware, retry_on_disconnect, stats

    calls = []

    @retry_on_disconnect(stats=False)
    async def fetch() -> None:
        calls.append(1)

    for source in (RetryMiddleware(stats=False), fetch):
        with pytest.raises(ValueError, match="keeps no stats"):
            PrometheusCollector(source)
    assert not calls

    @retry_on_disconnect
    async def counted() -> None:
        pass

    collector = PrometheusCollector(lambda: stats(counted))
    assert list(collector.collect())  # the function's Stats, read at each scrape


def counter_samples(registry: prometheus_client.CollectorRegistry) -> dict[tuple, float]:
    text = prometheus_client.generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type in ("counter", "histogram")
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


async def test_named_hosts_stay_named_so_no_counter_goes_backwards(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    """max_hosts=1 while the hosts' ranks change: the first host named keeps its name, and
    every counter series of every scrape is there, at least what it was, at the next."""
    async with FaultServer() as first, FaultServer() as second:
        first.script("/", [Fault.status(503), Fault.ok(), Fault.status(503), Fault.ok()])
        second.script("/", [Fault.status(503), Fault.ok()])
        async with resilient_session(policy=FAST) as session:
            registry.register(PrometheusCollector(session, max_hosts=1))

            async def get(server: FaultServer, times: int) -> None:
                for _ in range(times):
                    async with session.get(server.url_for("/")) as resp:
                        await resp.read()

            # first: 2 calls, 2 retries; second: 1 call, 1 retry. Then second takes the lead,
            # then first takes it back.
            scrapes = []
            for server, times in ((first, 2), (second, 1), (second, 5), (first, 10)):
                await get(server, times)
                scrapes.append(counter_samples(registry))
    assert first.count() == 14
    assert second.count() == 7
    for before, after in itertools.pairwise(scrapes):
        for series, value in before.items():
            assert series in after, f"{series} vanished"
            assert after[series] >= value, f"{series} went from {value} to {after[series]}"
    named = {dict(labels)["host"] for (name, labels) in scrapes[-1] if "host" in dict(labels)}
    assert named == {f"http://127.0.0.1:{first.url.port}", "other"}
