"""Counting what happened, per host: calls, the answers handed back by status class, attempts,
responses by status class, retries by cause, give-ups by reason, latency. The request path calls
:class:`StatsRecorder` once per logical call that got an answer (and on each retry and give-up,
which are rare); everything else is read when a snapshot is taken."""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import aiohttp

from .._retry._decision import Why
from .._retry._events import Attempt
from ._histogram import LATENCY_BOUNDS, Histogram, Latency

if TYPE_CHECKING:
    from typing import Protocol

    class _Run(Protocol):
        """What :meth:`StatsRecorder.served` reads of a retried call (a ``RetryRun``)."""

        @property
        def history(self) -> tuple[Attempt, ...]: ...

    from .._health._limiter import HostKey

__all__ = [
    "OTHER_HOST",
    "STATS_ATTR",
    "StatsListener",
    "StatsRecorder",
    "retry_cause",
    "status_class",
]

# Why a call gave up (the ``reason`` label of give-ups).

#: The attribute of a ``@retry_on_disconnect`` function holding (its recorder, its health).
STATS_ATTR: Final = "_aiohttp_resilient_stats"

#: The host under which hosts past ``max_hosts`` are counted together.
OTHER_HOST: Final = "other"
_OTHER_KEY: Final[HostKey] = ("other", None, None)

#: Default cap on hosts counted apart (a crawler's millions of hosts must not grow the table).
DEFAULT_MAX_HOSTS: Final = 1024

#: Told of each retry and give-up: (event, host key, fields). OpenTelemetry's span events use it.
StatsListener = Callable[[str, "HostKey", Mapping[str, object]], None]

#: Slots of a per-class counter: ``status // 100`` (0-9: aiohttp's parsers take three digits
#: only), and one for a ``@retry_on_disconnect`` function's return, which has no status.
_CLASS_SLOTS: Final = 11
_RETURNED: Final = 10
#: The status :meth:`StatsRecorder.served` is given for a function's return.
_NO_STATUS: Final = 1000
#: Each status's slot, looked up: cheaper than ``None`` checks and a division on every call.
_SLOT_OF: Final = (*(status // 100 for status in range(_NO_STATUS)), _RETURNED)
#: The slots that are successes: 1xx (a ``101`` upgrade), 2xx, 3xx, and a function's return.
_SUCCESS_SLOTS: Final = (1, 2, 3, _RETURNED)


def retry_cause(attempt: Attempt, why: Why) -> str:
    """The ``cause`` label of a retry: ``stale_connection``, ``retry_after``, ``status_503``,
    ``disconnect``, ``reset``, ``timeout``, ``cut_body``, ``connect`` or ``other``."""
    if why is Why.STALE:
        return "stale_connection"
    if why is Why.RETRY_AFTER:
        return "retry_after"
    if attempt.error is None:
        return f"status_{attempt.status}"
    return error_cause(attempt.error)


def error_cause(error: BaseException) -> str:
    """The family of a failed attempt's error (see :func:`retry_cause`)."""
    # Order matters: aiohttp's timeouts are OSErrors too, its connector errors ClientOSErrors.
    if isinstance(error, aiohttp.ClientPayloadError):
        return "cut_body"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "disconnect"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(error, (aiohttp.ClientOSError, aiohttp.ClientConnectionResetError, OSError)):
        return "reset"
    return "other"


def status_class(status: int) -> str:
    """The class of an HTTP status, as the ``status_class`` label and stats name it: ``"2xx"``."""
    return f"{status // 100}xx"


def _by_class(counts: list[int]) -> Mapping[str, int]:
    return MappingProxyType({f"{i}xx": n for i, n in enumerate(counts[:_RETURNED]) if n})


class _Counters:
    """One host's counts (mutable; read through :meth:`StatsRecorder.host_counts`)."""

    __slots__ = (
        "answered",
        "attempts",
        "calls",
        "give_ups",
        "hedges",
        "hedges_won",
        "not_answered",
        "not_retried",
        "retries",
    )

    def __init__(self) -> None:
        # Calls that handed a response to the caller, by status // 100 (see _CLASS_SLOTS).
        self.answered = [0] * _CLASS_SLOTS
        # Responses to attempts that were not handed back (retried, or given up on), by class.
        self.not_answered = [0] * _CLASS_SLOTS
        self.not_retried = 0
        self.retries: dict[str, int] = {}
        self.give_ups: dict[str, int] = {}
        self.hedges = 0  # hedges sent (a second copy of a slow call)
        self.hedges_won = 0  # hedges whose answer the caller got
        self.calls = Histogram()  # one observation per logical call that ended
        self.attempts = Histogram()  # one per attempt of those calls


class StatsRecorder:
    """Counts per host what a :class:`RetryMiddleware` or ``@retry_on_disconnect`` did.

    Each event costs a dict lookup and a few additions (O(1), no allocation once a host is
    known). Hosts past ``max_hosts`` are counted together as ``"other"``.

    Usage::

        recorder = StatsRecorder()
        retry = RetryMiddleware(stats=recorder)
        print(recorder.snapshot())

    Args:
        max_hosts: The most hosts counted apart.
    """

    __slots__ = ("_hosts", "listeners", "max_hosts")

    def __init__(self, *, max_hosts: int = DEFAULT_MAX_HOSTS) -> None:
        if isinstance(max_hosts, bool) or not isinstance(max_hosts, int) or max_hosts < 1:
            raise ValueError(f"max_hosts must be an int >= 1, got {max_hosts!r}")
        self.max_hosts = max_hosts
        self._hosts: dict[HostKey, _Counters] = {}
        #: Told of every retry and give-up (see :data:`StatsListener`).
        self.listeners: list[StatsListener] = []

    def __repr__(self) -> str:
        return f"<StatsRecorder hosts={len(self._hosts)} max_hosts={self.max_hosts}>"

    def _counters(self, key: HostKey) -> _Counters:
        counters = self._hosts.get(key)
        if counters is None:
            if len(self._hosts) >= self.max_hosts:
                key = _OTHER_KEY
                counters = self._hosts.get(key)
            if counters is None:
                counters = self._hosts[key] = _Counters()
        return counters

    # -- the request path -------------------------------------------------------------------------

    def served(
        self,
        key: HostKey,
        call_elapsed: float,
        attempt_elapsed: float,
        run: _Run | None,
        status: int = _NO_STATUS,
    ) -> None:
        """A call ended with a response of ``status`` handed to the caller (after ``run``'s
        failures); without one, a ``@retry_on_disconnect`` function returned (a success)."""
        # Histogram.observe() twice, inlined: this runs once per request. Answers are counted
        # by class, not derived (calls - give-ups - not retried): those counts, read one after
        # the other from a scraping thread while calls end, could make successes go backwards.
        counters = self._hosts.get(key) or self._counters(key)
        counters.answered[_SLOT_OF[status]] += 1
        index = bisect_left(LATENCY_BOUNDS, call_elapsed)
        calls = counters.calls
        calls.counts[index] += 1
        calls.total += call_elapsed
        if attempt_elapsed != call_elapsed:  # equal when the first attempt went at once
            index = bisect_left(LATENCY_BOUNDS, attempt_elapsed)
        attempts = counters.attempts
        attempts.counts[index] += 1
        attempts.total += attempt_elapsed
        if run is not None:
            _observe_attempts(counters, run.history)

    def hedged(self, key: HostKey) -> None:
        """A hedge of a slow call to ``key`` was sent."""
        self._counters(key).hedges += 1

    def hedge_won(self, key: HostKey) -> None:
        """A hedge's answer was handed to the caller (the original was cancelled)."""
        self._counters(key).hedges_won += 1

    def retried(self, key: HostKey, attempt: Attempt, delay: float, why: Why) -> None:
        """A retry of ``attempt`` was decided (before its wait)."""
        cause = retry_cause(attempt, why)
        retries = self._counters(key).retries
        retries[cause] = retries.get(cause, 0) + 1
        for listener in self.listeners:
            listener(
                "retry",
                key,
                {"attempt": attempt.number, "cause": cause, "delay": delay, "reason": why.value},
            )

    def gave_up(
        self, key: HostKey, reason: str, history: Iterable[Attempt], call_elapsed: float
    ) -> None:
        """A call gave up (``reason``: a give-up :class:`Why`'s value) after ``history``."""
        counters = self._counters(key)
        counters.give_ups[reason] = counters.give_ups.get(reason, 0) + 1
        counters.calls.observe(call_elapsed)
        attempts = _observe_attempts(counters, history)
        for listener in self.listeners:
            listener("give_up", key, {"attempts": attempts, "reason": reason})

    def not_retried(
        self, key: HostKey, history: Iterable[Attempt], attempt_elapsed: float, call_elapsed: float
    ) -> None:
        """A call failed with an error it was not safe or useful to retry."""
        counters = self._counters(key)
        counters.not_retried += 1
        counters.calls.observe(call_elapsed)
        counters.attempts.observe(attempt_elapsed)
        _observe_attempts(counters, history)

    # -- reading ----------------------------------------------------------------------------------

    def counted_hosts(self) -> list[HostKey]:
        """The hosts counted so far (``("other", None, None)`` for those past ``max_hosts``)."""
        return list(self._hosts)

    def host_counts(self, key: HostKey) -> HostCounts:
        """``key``'s counts as they stand."""
        counters = self._hosts.get(key)
        if counters is None:
            return HostCounts()
        answered = counters.answered.copy()  # read first: never more than the calls read after
        not_answered = counters.not_answered.copy()
        return HostCounts(
            successes=sum(answered[i] for i in _SUCCESS_SLOTS),
            answered=_by_class(answered),
            responses=_by_class([a + b for a, b in zip(answered, not_answered, strict=True)]),
            not_retried=counters.not_retried,
            retries=MappingProxyType(dict(counters.retries)),
            give_ups=MappingProxyType(dict(counters.give_ups)),
            hedges=counters.hedges,
            hedges_won=counters.hedges_won,
            call_latency=counters.calls.freeze(),
            attempt_latency=counters.attempts.freeze(),
        )


def _observe_attempts(counters: _Counters, history: Iterable[Attempt]) -> int:
    # The attempts of a call that did not hand their response back: their latency, and the
    # class of the responses they got (retried, or given up on).
    n = 0
    for attempt in history:
        counters.attempts.observe(attempt.elapsed)
        if attempt.status is not None:
            counters.not_answered[attempt.status // 100] += 1
        n += 1
    return n


def _empty() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class HostCounts:
    """What a :class:`StatsRecorder` counted for one host (the calls that ended are
    ``call_latency.count``; :class:`HostStats` says what each count means)."""

    successes: int = 0
    answered: Mapping[str, int] = field(default_factory=_empty)
    responses: Mapping[str, int] = field(default_factory=_empty)
    not_retried: int = 0
    retries: Mapping[str, int] = field(default_factory=_empty)
    give_ups: Mapping[str, int] = field(default_factory=_empty)
    hedges: int = 0
    hedges_won: int = 0
    call_latency: Latency = field(default_factory=Latency)
    attempt_latency: Latency = field(default_factory=Latency)
