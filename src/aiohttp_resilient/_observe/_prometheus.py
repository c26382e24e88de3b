"""PrometheusCollector: the stats as Prometheus metrics (the ``[prometheus]`` extra)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Final

import aiohttp
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._health._breaker import CircuitState
from .._retry._middleware import RetryMiddleware
from ._histogram import Latency
from ._snapshot import HostStats, Stats, StoreStats, merge_hosts, stats
from ._stats import OTHER_HOST, STATS_ATTR

__all__ = ["HTTP_BUCKETS", "PrometheusCollector"]

#: The ``le`` bounds of the duration histograms, in seconds: 5 ms to 100 s, the range of HTTP
#: calls from a cached answer to a long retried download. Each one is a bound of the stats'
#: own buckets, so the exported counts are exact.
HTTP_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0)
#: Hosts exported by name; the rest are summed under ``host="other"``.
DEFAULT_MAX_HOSTS: Final = 20
_CIRCUIT_VALUE: Final = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class PrometheusCollector(Collector):
    """Exports what :func:`stats` reads, at each scrape, as ``aiohttp_resilient_*`` metrics.

    Counters: ``requests_total``, ``successes_total`` (calls answered 2xx or 3xx),
    ``answered_total`` (calls that handed a response back, label ``status_class``: ``2xx``,
    ``4xx``, ``5xx``, ...), ``responses_total`` (``status_class``; one per attempt that got a
    response, retried ones included: what the server counted), ``attempts_total``,
    ``retries_total`` (label ``cause``), ``give_ups_total`` (``reason``), ``not_retried_total``,
    ``budget_refusals_total``, ``circuit_openings_total``, ``hedges_total`` and
    ``hedges_won_total`` (:class:`HedgePolicy`). Gauges: ``circuit_state`` (0 closed,
    1 half-open, 2 open), ``concurrency_limit``, ``in_flight``, ``queued``,
    ``pool_connections`` (``state`` idle or acquired). Histograms: ``request_duration_seconds``
    (logical calls) and ``attempt_duration_seconds``, with :data:`HTTP_BUCKETS`.

    Every metric has a ``host`` label (``scheme://host:port``; URLs carry no credentials into
    it). A crawler meets millions of hosts and each would be a time series: only ``max_hosts``
    hosts are named, the others are summed under ``host="other"``. The named hosts are the
    busiest when first seen, and they keep their names for the collector's lifetime, so that
    every counter only grows (a host moving to ``"other"`` would look like a counter reset).

    Usage::

        from prometheus_client import REGISTRY, start_http_server

        REGISTRY.register(PrometheusCollector(session))
        start_http_server(9100)

    Args:
        source: A session, a :class:`RetryMiddleware` or a ``@retry_on_disconnect``
            function (anything :func:`stats` reads), or a function returning :class:`Stats`.
        max_hosts: Hosts exported by name.
        namespace: The metrics' prefix.
    """

    def __init__(
        self,
        source: object,
        *,
        max_hosts: int = DEFAULT_MAX_HOSTS,
        namespace: str = "aiohttp_resilient",
    ) -> None:
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 0:
            raise ValueError(f"max_hosts must be an int >= 0, got {max_hosts!r}")
        if not namespace or not namespace.replace("_", "").isalnum():
            raise ValueError(f"namespace must be letters, digits and '_', got {namespace!r}")
        if stats(source) is not None:
            self._read: Callable[[], Stats | None] = lambda: stats(source)
        elif callable(source) and not _stats_capable(source):
            self._read = source  # a function that returns Stats
        else:
            raise ValueError(
                f"source keeps no stats (no RetryMiddleware, or stats=False): {source!r}"
            )
        self.max_hosts = max_hosts
        self.namespace = namespace
        self._named: dict[str, None] = {}  # the hosts exported by name, for good
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        """Nothing to check at registration: the names are fixed and collected lazily."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metrics as they stand now."""
        snapshot = self._read()
        if snapshot is None:
            return
        with self._lock:  # scrapes may run in several threads at once
            rows = capped_hosts(snapshot, self._named, self.max_hosts)
        yield from self._counters(rows)
        yield from self._gauges(rows)
        if snapshot.store is not None:
            yield from self._store(snapshot.store)
        yield self._histogram(
            "request_duration_seconds",
            "Duration of logical calls, retries and waits included.",
            [(row.host, row.call_latency) for row in rows],
        )
        yield self._histogram(
            "attempt_duration_seconds",
            "Duration of single attempts.",
            [(row.host, row.attempt_latency) for row in rows],
        )

    def _store(self, store: StoreStats) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            self._name("store_up"),
            "1 while the shared store answers; 0 while this process runs on its own state.",
            labels=["store"],
        )
        up.add_metric([store.store], 1.0 if store.up else 0.0)
        yield up
        fallbacks = CounterMetricFamily(
            self._name("store_fallbacks"),
            "Times this process went on alone because the shared store failed.",
            labels=["store"],
        )
        fallbacks.add_metric([store.store], store.fallbacks)
        yield fallbacks

    def _name(self, name: str) -> str:
        return f"{self.namespace}_{name}"

    def _counters(self, rows: list[HostStats]) -> Iterator[Metric]:
        simple: tuple[tuple[str, str, Callable[[HostStats], int]], ...] = (
            ("requests", "Logical calls that ended.", lambda r: r.requests),
            ("successes", "Calls answered with a 2xx or 3xx.", lambda r: r.successes),
            ("attempts", "Attempts sent (a retry is one more).", lambda r: r.attempts),
            ("not_retried", "Calls failed by an error not retried.", lambda r: r.not_retried),
            ("budget_refusals", "Retries the budget refused.", lambda r: r.budget_refusals),
            ("circuit_openings", "Times a breaker opened.", lambda r: r.circuit_openings),
            ("hedges", "Hedges sent (second copies of slow calls).", lambda r: r.hedges),
            ("hedges_won", "Hedges whose answer the caller got.", lambda r: r.hedges_won),
        )
        for name, doc, value in simple:
            family = CounterMetricFamily(self._name(name), doc, labels=["host"])
            for row in rows:
                family.add_metric([row.host], value(row))
            yield family
        for name, label, doc, attr in (
            ("answered", "status_class", "Calls that handed a response back.", "answered"),
            ("responses", "status_class", "Responses to attempts, retried ones too.", "responses"),
            ("retries", "cause", "Retries, by the failure that caused them.", "retries"),
            ("give_ups", "reason", "Calls given up on, by reason.", "give_ups"),
        ):
            family = CounterMetricFamily(self._name(name), doc, labels=["host", label])
            for row in rows:
                for key, n in sorted(getattr(row, attr).items()):
                    family.add_metric([row.host, key], n)
            yield family

    def _gauges(self, rows: list[HostStats]) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            self._name("circuit_state"), "Breaker: 0 closed, 1 half-open, 2 open.", labels=["host"]
        )
        limit = GaugeMetricFamily(
            self._name("concurrency_limit"), "Live per-host concurrency limit.", labels=["host"]
        )
        in_flight = GaugeMetricFamily(
            self._name("in_flight"), "Attempts holding a per-host slot.", labels=["host"]
        )
        queued = GaugeMetricFamily(
            self._name("queued"), "Attempts waiting for a per-host slot.", labels=["host"]
        )
        pool = GaugeMetricFamily(
            self._name("pool_connections"),
            "The connector's connections, by state.",
            labels=["host", "state"],
        )
        for row in rows:
            if row.circuit_state is not None:
                state.add_metric([row.host], _CIRCUIT_VALUE[row.circuit_state])
            if row.concurrency_limit is not None:
                limit.add_metric([row.host], row.concurrency_limit)
            in_flight.add_metric([row.host], row.in_flight)
            queued.add_metric([row.host], row.queued)
            pool.add_metric([row.host, "idle"], row.pool.idle)
            pool.add_metric([row.host, "acquired"], row.pool.acquired)
        yield from (state, limit, in_flight, queued, pool)

    def _histogram(
        self, name: str, doc: str, series: list[tuple[str, Latency]]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self._name(name), doc, labels=["host"], unit="")
        for host, latency in series:
            buckets: list[tuple[str, float]] = [
                (repr(float(bound)), float(n)) for bound, n in latency.cumulative(HTTP_BUCKETS)
            ]
            buckets.append(("+Inf", float(latency.count)))
            family.add_metric([host], buckets, latency.sum)
        return family


def _stats_capable(source: object) -> bool:
    """Whether ``source`` is a session, a :class:`RetryMiddleware` or a
    ``@retry_on_disconnect`` function: something :func:`stats` reads (which keeps none when it
    returned ``None``), not a function that returns :class:`Stats`. A middleware or a decorated
    function is callable too: taken for a stats function, it would be called at every scrape."""
    return isinstance(source, (aiohttp.ClientSession, RetryMiddleware)) or hasattr(
        source, STATS_ATTR
    )


def capped_hosts(snapshot: Stats, named: dict[str, None], max_hosts: int) -> list[HostStats]:
    """The hosts in ``named`` by name, then the rest summed as ``"other"`` (if any).

    ``named`` is updated first: while it holds fewer than ``max_hosts`` hosts, the busiest
    hosts not in it yet join it, and stay. A host never moves between its name and ``"other"``:
    were the top hosts picked again at each scrape, a host leaving the top would take its
    counts out of its series into ``"other"``'s, and a counter would go backwards (read by
    Prometheus as a reset)."""
    rows = list(snapshot.hosts.values())  # busiest first
    for row in rows:
        if len(named) >= max_hosts:
            break
        if row.host != OTHER_HOST:
            named.setdefault(row.host, None)
    kept = [row for row in rows if row.host in named]
    rest = [row for row in rows if row.host not in named]
    if rest:
        kept.append(merge_hosts(OTHER_HOST, rest))
    return kept
