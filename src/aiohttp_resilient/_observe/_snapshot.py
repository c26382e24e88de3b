"""Stats: a frozen picture, overall and per host, of what was counted and what holds now (the
breaker, the live limit, attempts in flight and queued, the connection pool), and its table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from .._health._breaker import CircuitState
from .._health._hosts import HostHealth
from .._health._limiter import format_host
from .._retry._decision import Why
from .._store._fleet import FleetLimiter
from ._histogram import Latency
from ._stats import OTHER_HOST, STATS_ATTR, HostCounts, StatsRecorder

if TYPE_CHECKING:
    from .._health._limiter import HostKey

__all__ = ["HostStats", "PoolUse", "Stats", "StoreStats", "stats", "take_snapshot"]

#: The name of the overall row.
ALL_HOSTS: Final = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolUse:
    """The connector's pooled connections to a host (or in all).

    Attributes:
        idle: Open and waiting in the keep-alive pool.
        acquired: Carrying a request now.
    """

    idle: int = 0
    acquired: int = 0

    @property
    def open(self) -> int:
        """Connections open: idle and acquired."""
        return self.idle + self.acquired

    def __add__(self, other: PoolUse) -> PoolUse:
        return PoolUse(idle=self.idle + other.idle, acquired=self.acquired + other.acquired)


def _empty() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class HostStats:
    """One host's figures (or all hosts' summed), as they stood.

    Attributes:
        host: ``scheme://host:port``, ``"other"`` for hosts past the cap, ``"all"`` for the sum.
        requests: Logical calls that ended: answered (a success, a 4xx or a 5xx handed back),
            given up on, or failed by an error not retried.
        successes: Calls answered with a status below 400 (2xx, 3xx, a ``101`` upgrade), or,
            for a ``@retry_on_disconnect`` function, that returned.
        answered: Calls that handed a response to the caller, by status class (``"2xx"``,
            ``"4xx"``, ...): a 404, or a 503 to a POST (never retried on a status), is an
            answer of its class, not a success. A response handed back after the policy gave
            up on it (``raise_on_status=False``) is a give-up, under ``give_ups``.
        responses: Responses received, one per attempt that got one (those retried and those
            given up on included), by status class: what the server counted, when every
            attempt reached it. An attempt whose body was cut counts as its error.
        attempts: Attempts those calls made (each retry is one more).
        retries: Retries by cause (``disconnect``, ``reset``, ``timeout``, ``cut_body``,
            ``connect``, ``stale_connection``, ``status_503``, ``retry_after``, ...).
        give_ups: Calls given up on, by reason (``attempts``, ``deadline``, ``budget``,
            ``circuit_open``, ``retry_after_max``, ``body_not_replayable``).
        not_retried: Calls that failed with an error not safe or useful to retry.
        hedges: Hedges sent: second copies of slow calls (:class:`HedgePolicy`), not counted
            in ``attempts``.
        hedges_won: Hedges whose answer the caller got (the original was cancelled).
        circuit_state: The breaker's state (``None`` on the overall row).
        circuit_openings: Times the breaker opened (since the host was last forgotten).
        concurrency_limit: The live adaptive concurrency limit (``None``: uncapped).
        in_flight: Attempts holding a per-host slot now.
        queued: Attempts waiting for one.
        pool: The connector's connections to the host.
        call_latency: Latency of logical calls, waits included.
        attempt_latency: Latency of single attempts.
    """

    host: str
    requests: int = 0
    successes: int = 0
    answered: Mapping[str, int] = field(default_factory=_empty)
    responses: Mapping[str, int] = field(default_factory=_empty)
    attempts: int = 0
    retries: Mapping[str, int] = field(default_factory=_empty)
    give_ups: Mapping[str, int] = field(default_factory=_empty)
    not_retried: int = 0
    hedges: int = 0
    hedges_won: int = 0
    circuit_state: CircuitState | None = None
    circuit_openings: int = 0
    concurrency_limit: int | None = None
    in_flight: int = 0
    queued: int = 0
    pool: PoolUse = field(default_factory=PoolUse)
    call_latency: Latency = field(default_factory=Latency)
    attempt_latency: Latency = field(default_factory=Latency)

    @property
    def client_errors(self) -> int:
        """Calls answered with a 4xx."""
        return self.answered.get("4xx", 0)

    @property
    def server_errors(self) -> int:
        """Calls answered with a 5xx."""
        return self.answered.get("5xx", 0)

    @property
    def retries_total(self) -> int:
        """All retries."""
        return sum(self.retries.values())

    @property
    def give_ups_total(self) -> int:
        """All give-ups."""
        return sum(self.give_ups.values())

    @property
    def budget_refusals(self) -> int:
        """Retries the host's retry budget refused (each ended its call)."""
        return self.give_ups.get(Why.BUDGET.value, 0)


def _sum_labels(counts: Iterable[Mapping[str, int]]) -> Mapping[str, int]:
    """Counts by label (a status class, a cause, a reason), summed label by label."""
    summed: dict[str, int] = {}
    for mapping in counts:
        for label, n in mapping.items():
            summed[label] = summed.get(label, 0) + n
    return MappingProxyType(summed)


def merge_hosts(name: str, rows: Iterable[HostStats]) -> HostStats:
    """The sum of ``rows`` under ``name`` (the breaker's state is not summed)."""
    rows = list(rows)
    total: dict[str, Any] = dict.fromkeys(
        ("requests", "successes", "attempts", "not_retried", "hedges", "hedges_won"), 0
    )
    total.update(circuit_openings=0, in_flight=0, queued=0)
    pool = PoolUse()
    calls = Latency()
    attempts = Latency()
    for row in rows:
        for key in total:
            total[key] += getattr(row, key)
        pool += row.pool
        calls += row.call_latency
        attempts += row.attempt_latency
    return HostStats(
        host=name,
        answered=_sum_labels(row.answered for row in rows),
        responses=_sum_labels(row.responses for row in rows),
        retries=_sum_labels(row.retries for row in rows),
        give_ups=_sum_labels(row.give_ups for row in rows),
        pool=pool,
        call_latency=calls,
        attempt_latency=attempts,
        **total,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreStats:
    """The shared store of a session given ``store=`` (see README, "Many processes").

    Attributes:
        store: Its name, without a password (``redis://127.0.0.1:6379/0``).
        up: Whether its last call succeeded (else the process runs on its own state).
        failures: Calls that failed or timed out.
        fallbacks: Times the process went on alone.
        rejoins: Times the store came back.
    """

    store: str
    up: bool
    failures: int
    fallbacks: int
    rejoins: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """What :func:`stats` returns: the sum over hosts (``total``) and each host's figures,
    busiest first. ``str()`` and :meth:`summary` give a table.

    Usage::

        print(stats(session))                # the table
        stats(session).total.retries         # {'disconnect': 12, 'status_503': 3}
        stats(session).hosts["https://api.example.org:443"].call_latency.p99
    """

    total: HostStats
    hosts: Mapping[str, HostStats]
    #: The shared store, if the session has one.
    store: StoreStats | None = None

    def summary(self) -> str:
        """A table: a row per host (busiest first) and the overall row, then each host's
        retries by cause and give-ups by reason: which host failed how."""
        return format_table(self)

    def __str__(self) -> str:
        return format_table(self)


def take_snapshot(
    recorder: StatsRecorder | None,
    health: HostHealth | None,
    connector: aiohttp.BaseConnector | None = None,
) -> Stats:
    """Read the counts of ``recorder``, the state of ``health`` and the pool of ``connector``."""
    keys: dict[HostKey, None] = {}
    if recorder is not None:
        keys.update(dict.fromkeys(recorder.counted_hosts()))
    if health is not None:
        keys.update(dict.fromkeys(health.known_hosts()))
    pools = _pool_use(connector)
    rows = [_host_row(key, recorder, health, pools) for key in keys]
    rows.sort(key=lambda row: (-row.requests, row.host))
    total = merge_hosts(ALL_HOSTS, rows)
    if connector is not None:  # connections to hosts the middleware never saw count too
        total = replace(total, pool=sum(pools.values(), PoolUse()))
    return Stats(
        total=total,
        hosts=MappingProxyType({row.host: row for row in rows}),
        store=None if health is None else _store_stats(health),
    )


def _store_stats(health: HostHealth) -> StoreStats | None:
    limiter = health.limiter
    if not isinstance(limiter, FleetLimiter):
        return None
    guard = limiter.guard
    return StoreStats(
        store=limiter.store.describe(),
        up=guard.up,
        failures=guard.failures,
        fallbacks=guard.fallbacks,
        rejoins=guard.rejoins,
    )


def _host_row(
    key: HostKey,
    recorder: StatsRecorder | None,
    health: HostHealth | None,
    pools: Mapping[HostKey, PoolUse],
) -> HostStats:
    counts = HostCounts() if recorder is None else recorder.host_counts(key)
    name = OTHER_HOST if key[0] == OTHER_HOST and key[1] is None else format_host(key)
    live: dict[str, Any] = {}
    if health is not None and name != OTHER_HOST:
        limiter = health.limiter
        live.update(
            circuit_state=health.circuit_state(key),
            circuit_openings=health.circuit_openings(key),
            concurrency_limit=health.live_limit(key),
            in_flight=0 if limiter is None else limiter.in_flight(key),
            queued=0 if limiter is None else limiter.waiting(key),
        )
    requests = counts.call_latency.count
    return HostStats(
        host=name,
        requests=requests,
        successes=counts.successes,
        answered=counts.answered,
        responses=counts.responses,
        attempts=counts.attempt_latency.count,
        retries=counts.retries,
        give_ups=counts.give_ups,
        not_retried=counts.not_retried,
        hedges=counts.hedges,
        hedges_won=counts.hedges_won,
        pool=pools.get(key, PoolUse()),
        call_latency=counts.call_latency,
        attempt_latency=counts.attempt_latency,
        **live,
    )


def _pool_use(connector: aiohttp.BaseConnector | None) -> dict[HostKey, PoolUse]:
    # aiohttp keeps its pool in private fields (3.14: _conns, idle per ConnectionKey;
    # _acquired_per_host, in use): read them defensively, since nothing public tells.
    if connector is None:
        return {}
    idle: Mapping[Any, Any] = getattr(connector, "_conns", None) or {}
    acquired: Mapping[Any, Any] = getattr(connector, "_acquired_per_host", None) or {}
    pools: dict[HostKey, PoolUse] = {}
    for conn_key, entries in list(idle.items()):
        key = _host_key(conn_key)
        pools[key] = pools.get(key, PoolUse()) + PoolUse(idle=len(entries))
    for conn_key, entries in list(acquired.items()):
        key = _host_key(conn_key)
        pools[key] = pools.get(key, PoolUse()) + PoolUse(acquired=len(entries))
    return pools


def _host_key(conn_key: Any) -> HostKey:
    scheme = "https" if getattr(conn_key, "is_ssl", False) else "http"
    return (scheme, getattr(conn_key, "host", None), getattr(conn_key, "port", None))


# -- the table ------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _pairs(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda i: -i[1]))


_COLUMNS: Final = (
    ("host", "<"),
    ("calls", ">"),
    ("ok", ">"),
    ("4xx", ">"),
    ("5xx", ">"),
    ("attempts", ">"),
    ("retries", ">"),
    ("gave up", ">"),
    ("failed", ">"),
    ("p50", ">"),
    ("p90", ">"),
    ("p99", ">"),
    ("circuit", "<"),
    ("limit", ">"),
    ("in flight", ">"),
    ("queued", ">"),
    ("pool open/idle", ">"),
)


def _cells(row: HostStats) -> tuple[str, ...]:
    latency = row.call_latency
    return (
        row.host,
        str(row.requests),
        str(row.successes),
        str(row.client_errors),
        str(row.server_errors),
        str(row.attempts),
        str(row.retries_total),
        str(row.give_ups_total),
        str(row.not_retried),
        _ms(latency.p50),
        _ms(latency.p90),
        _ms(latency.p99),
        "-" if row.circuit_state is None else row.circuit_state.value,
        "-" if row.concurrency_limit is None else str(row.concurrency_limit),
        str(row.in_flight),
        str(row.queued),
        f"{row.pool.open}/{row.pool.idle}",
    )


_LEGEND: Final = (
    "(ok: answered 2xx/3xx; 4xx, 5xx: answered so; failed: errors not retried; "
    "latency of logical calls, waits and retries included)"
)
_SUCCESS_CLASSES: Final = frozenset({"1xx", "2xx", "3xx"})


def format_table(stats: Stats) -> str:
    """The table of :meth:`Stats.summary`."""
    rows = [_cells(row) for row in stats.hosts.values()]
    rows.append(_cells(stats.total))
    header = tuple(name for name, _ in _COLUMNS)
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            f"{cell:{align}{width}}"
            for cell, (_, align), width in zip(cells, _COLUMNS, widths, strict=True)
        ).rstrip()

    lines = [line(header), *(line(cells) for cells in rows)]
    lines.append(_LEGEND)
    for row in stats.hosts.values():
        if row.responses.keys() - _SUCCESS_CLASSES:  # some attempt got an error status
            classes = ", ".join(f"{name} {n}" for name, n in sorted(row.responses.items()))
            lines.append(f"{row.host} responses to attempts: {classes}")
        if row.retries:
            lines.append(f"{row.host} retries: {_pairs(row.retries)}")
        if row.give_ups:
            lines.append(f"{row.host} gave up: {_pairs(row.give_ups)}")
    return "\n".join(lines)


def stats(target: object) -> Stats | None:
    """A frozen snapshot of what a session, a :class:`RetryMiddleware` or a
    ``@retry_on_disconnect`` function counted, with its hosts' live state; ``None`` when it
    keeps no stats (no retry middleware, or ``stats=False``).

    For a session, the first :class:`RetryMiddleware` in it is read, and the session's
    connector gives the pool's use. Taking a snapshot costs O(hosts); counting costs O(1) per
    call.

    Usage::

        async with resilient_session() as session:
            ...
            print(stats(session))  # a table: which host failed how
    """
    # The middleware imports this module's recorder.
    from .._retry._middleware import RetryMiddleware, session_middleware

    connector = None
    middleware = target
    if isinstance(target, aiohttp.ClientSession):
        connector = target.connector
        middleware = session_middleware(target)
    if isinstance(middleware, RetryMiddleware):
        recorder = middleware.stats_recorder
        health: HostHealth | None = middleware.health
    else:
        recorder, health = getattr(target, STATS_ATTR, (None, None))
    if recorder is None:
        return None
    return take_snapshot(recorder, health, connector)
