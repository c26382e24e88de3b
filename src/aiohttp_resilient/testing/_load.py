"""A host's health as a whole: capacity and service time, a rate limit, outages.

:class:`ServerLoad` is the configuration (frozen, validated); :class:`LoadShaper` is the state
the server keeps to apply it, and decides per request whether to serve it or to refuse it with
a fault.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ._faults import Fault, _check_number

__all__ = ["RATE_BURST_SHARE", "LoadShaper", "Outage", "ServerLoad", "resolve_load"]

#: The default burst of ``rate_limit=N``: a tenth of a second's worth of requests, at least one,
#: so a client that paces itself is never refused while a flood is cut to the rate at once.
RATE_BURST_SHARE = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLoad:
    """How a :class:`FaultServer` behaves under load, as one value.

    Usage::

        FaultServer(load=ServerLoad(capacity=16, service_time=0.01, rate_limit=500))
        server.load = dataclasses.replace(server.load, service_time=0.0)

    Attributes:
        capacity: At most this many requests in service at once (it needs ``service_time``):
            a request that finds them all busy gets ``over_capacity`` at once, as an overloaded
            server or its load balancer sheds load.
        service_time: Seconds each served ``ok`` response is held before it is written, so that
            concurrency costs the server something; a held request counts against ``capacity``.
            Only ``ok`` faults are held; other faults are played at once.
        over_capacity: What a request over ``capacity`` gets: ``Fault.status(503)`` by default.
        rate_limit: Admit at most this many requests per second (a GCRA token bucket); the rest
            get ``over_rate``.
        rate_burst: Requests the bucket admits back to back after a quiet spell; ``None``: a
            tenth of a second's worth, at least one (see :attr:`burst`).
        over_rate: What a request over ``rate_limit`` gets: ``Fault.status(429)`` by default.
        compute_retry_after: Give ``status`` faults of outages, ``over_rate`` and
            ``over_capacity`` that set no ``retry_after`` of their own a ``Retry-After`` of the
            whole seconds (at least 1) until the refusal should end: the end of the outage, the
            next free token of the rate limit, ``service_time`` for the capacity.
        exempt_paths: Paths that outages, ``rate_limit``, ``capacity`` and ``service_time`` leave
            alone, such as a health check; any iterable of paths, kept as a frozenset.
    """

    capacity: int | None = None
    service_time: float = 0.0
    over_capacity: Fault = Fault.status(503)  # noqa: RUF009 - Fault is immutable and hashable
    rate_limit: float | None = None
    rate_burst: float | None = None
    over_rate: Fault = Fault.status(429)  # noqa: RUF009 - immutable, see over_capacity
    compute_retry_after: bool = False
    exempt_paths: Iterable[str] = frozenset()

    def __post_init__(self) -> None:
        if self.capacity is not None:
            _check_number("capacity", self.capacity, minimum=1, integer=True)
        _check_number("service_time", self.service_time, minimum=0)
        if self.capacity is not None and self.service_time == 0:
            # Unheld responses leave service at once: the capacity could never be reached.
            raise ValueError("capacity needs service_time > 0 (requests are in service while held)")
        if self.rate_limit is not None:
            _check_number("rate_limit", self.rate_limit, minimum=0, strict=True)
        if self.rate_burst is not None:
            if self.rate_limit is None:
                raise ValueError("rate_burst needs rate_limit")
            _check_number("rate_burst", self.rate_burst, minimum=1)
        for name in ("over_capacity", "over_rate"):
            if not isinstance(getattr(self, name), Fault):
                raise ValueError(f"{name} must be a Fault, got {getattr(self, name)!r}")
        if not isinstance(self.compute_retry_after, bool):
            raise ValueError(
                f"compute_retry_after must be a bool, got {self.compute_retry_after!r}"
            )
        if isinstance(self.exempt_paths, str):
            raise ValueError(
                f"exempt_paths must be a collection of paths, got {self.exempt_paths!r}"
            )
        # Frozen: the normalised values go in through object.__setattr__, as dataclasses do.
        object.__setattr__(self, "service_time", float(self.service_time))
        object.__setattr__(self, "exempt_paths", frozenset(self.exempt_paths))

    @property
    def burst(self) -> float | None:
        """The burst in effect: ``rate_burst``, else a tenth of ``rate_limit`` (>= 1)."""
        if self.rate_limit is None:
            return None
        return self.rate_burst or max(1.0, self.rate_limit * RATE_BURST_SHARE)

    @property
    def shapes(self) -> bool:
        """Whether any option is on, so that requests must be checked one by one."""
        return self.capacity is not None or self.service_time > 0 or self.rate_limit is not None


#: Every option off: a server that serves every request at once.
_NO_LOAD = ServerLoad()


def resolve_load(load: ServerLoad | None, keywords: ServerLoad) -> ServerLoad:
    """``load`` if given, else the one the server's keywords built; both given: ``ValueError``.

    A keyword counts as given when it differs from its default, since the keywords have
    defaults rather than a sentinel.
    """
    if load is None:
        return keywords
    if not isinstance(load, ServerLoad):
        raise ValueError(f"load must be a ServerLoad, got {load!r}")
    given = [
        f.name
        for f in dataclasses.fields(ServerLoad)
        if getattr(keywords, f.name) != getattr(_NO_LOAD, f.name)
    ]
    if given:
        names = ", ".join(given)
        raise ValueError(f"load and {names} both given: pass {names} inside load=ServerLoad(...)")
    return load


@dataclass(slots=True)
class Outage:
    """A time during which a :class:`FaultServer` answers every request with one fault.

    Made by :meth:`FaultServer.outage`; times are :func:`time.monotonic` values, which on Linux
    are the same clock in every process, so another process can compare its own timestamps.

    Attributes:
        start: When the outage begins.
        end: When the server is healthy again.
        fault: What every request in ``[start, end)`` gets (paths in ``exempt_paths`` excepted).
        requests: Requests that arrived during the outage (each got ``fault``).
    """

    start: float
    end: float
    fault: Fault
    requests: int = 0

    @property
    def seconds(self) -> float:
        """How long the outage lasts."""
        return self.end - self.start


class LoadShaper:
    """Applies a :class:`ServerLoad` and the outages asked for; one per server.

    Attributes:
        load: The configuration in effect (replace it with :meth:`configure`).
        gated: Requests must go through :meth:`shed`: an option is or was on, or an outage was
            asked for.
        in_service: Requests held for ``service_time`` right now.
        outages: Every outage asked for, in the order asked.
    """

    __slots__ = (
        "_interval",
        "_next_outage",
        "_tat",
        "_tolerance",
        "_with_seconds",
        "exempt_paths",
        "gated",
        "in_service",
        "load",
        "outages",
    )

    def __init__(self, load: ServerLoad) -> None:
        self.outages: list[Outage] = []
        self.in_service = 0
        self.gated = False
        self._next_outage: Outage | None = None
        # GCRA: the theoretical arrival time of the next request, the interval between two
        # admitted requests, and how far ahead of schedule the burst lets a client run.
        self._tat = 0.0
        # Faults with a computed Retry-After, made once per (fault, seconds).
        self._with_seconds: dict[tuple[Fault, int], Fault] = {}
        self.configure(load)

    def configure(self, load: ServerLoad) -> None:
        """Apply ``load`` from the next request on (held requests keep their timers)."""
        self.load = load
        self.exempt_paths: frozenset[str] = frozenset(load.exempt_paths)
        self._interval = 0.0 if load.rate_limit is None else 1.0 / load.rate_limit
        burst = load.burst
        self._tolerance = 0.0 if burst is None else (burst - 1) * self._interval
        # Once gated, always gated: turning an option off must not skip a scheduled outage.
        self.gated = self.gated or load.shapes

    def add_outage(self, seconds: float, fault: Fault, at: float | None) -> Outage:
        """Schedule an outage from ``at`` (now when None); it may not overlap another."""
        _check_number("seconds", seconds, minimum=0, strict=True)
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        if at is not None:
            _check_number("at", at, minimum=0)
        start = time.monotonic() if at is None else at
        outage = Outage(start, start + seconds, fault)
        for other in self.outages:
            if other.start < outage.end and outage.start < other.end:
                raise ValueError(
                    f"outage [{outage.start:.3f}, {outage.end:.3f}) overlaps "
                    f"[{other.start:.3f}, {other.end:.3f})"
                )
        self.outages.append(outage)
        self._next_outage = self._upcoming_outage(time.monotonic())
        self.gated = True
        return outage

    def clear_outages(self) -> None:
        self.outages.clear()
        self._next_outage = None

    def _upcoming_outage(self, now: float) -> Outage | None:
        """The outage in progress or the next one, or None."""
        upcoming = [o for o in self.outages if o.end > now]
        return min(upcoming, key=lambda o: o.start) if upcoming else None

    def shed(self) -> tuple[Fault, str] | None:
        """The fault and reason to refuse the current request with, or None to serve it.

        An outage comes first, then the rate limit (a refused request takes no token), then the
        capacity (an admitted request that finds no free slot has used its token).
        """
        now = time.monotonic()
        outage = self._next_outage
        if outage is not None:
            if now >= outage.end:
                outage = self._next_outage = self._upcoming_outage(now)
            if outage is not None and now >= outage.start:
                outage.requests += 1
                return self._retry_after(outage.fault, outage.end - now), "outage"
        load = self.load
        if load.rate_limit is not None:
            tat = self._tat if self._tat > now else now
            if tat - now > self._tolerance:
                return self._retry_after(load.over_rate, tat - self._tolerance - now), "rate"
            self._tat = tat + self._interval
        if load.capacity is not None and self.in_service >= load.capacity:
            return self._retry_after(load.over_capacity, load.service_time), "capacity"
        return None

    def _retry_after(self, fault: Fault, seconds: float) -> Fault:
        """``fault`` with ``Retry-After: ceil(seconds)`` (>= 1) if ``compute_retry_after`` asks."""
        if (
            not self.load.compute_retry_after
            or fault.kind != "status"
            or fault.retry_after is not None
        ):
            return fault
        whole = max(1, math.ceil(seconds))
        key = (fault, whole)
        derived = self._with_seconds.get(key)
        if derived is None:
            derived = self._with_seconds[key] = dataclasses.replace(fault, retry_after=whole)
        return derived
