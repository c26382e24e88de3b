"""The fault scenarios: what the server does to the requests of a run.

Two families. Per-request faults (``fin-5%``, ``cut-5%``, ``503-burst``, ...) hit requests one at
a time, at random or in counted bursts: a retry at once is the best answer to them. Host-health
scenarios (``overload-*``, ``ratelimit-*``, ``brownout-*``, ``restart``) make the server sick as a
whole: a retry at once makes things worse, and they are what tells a retry layer that watches the
host's health apart from a naive loop. Each host-health scenario is defined at one concurrency and
has a full and a small (``--quick``) size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ...testing import Fault
from ._fleet import DESCRIPTION as FLEET_DESCRIPTION
from ._fleet import PROCS as FLEET_PROCS

__all__ = [
    "CAPACITY",
    "FAULT_CELLS",
    "HEALTH_KINDS",
    "QUICK_FAULT_CELLS",
    "RATE_LIMIT",
    "RESTART_SERVICE_TIME",
    "SCENARIOS",
    "SERVICE_TIME",
    "TAIL_SECONDS",
    "TAIL_SHARE",
    "Scenario",
    "scenarios",
]

#: Overload: requests in service at once, and the seconds each is held (1600 req/s in all).
CAPACITY: Final = 16
SERVICE_TIME: Final = 0.010
#: Rate limit: requests admitted per second; a run of 2000 requests takes about 4 s.
RATE_LIMIT: Final = 500
#: Restart: each request takes the server this long, so that requests it has received are in
#: service when it dies (without it every response is written before the kill can land).
RESTART_SERVICE_TIME: Final = 0.005
#: Tail: the share of answers that are slow, and how slow (issue 20: 2% take 1 s).
TAIL_SHARE: Final = 0.02
TAIL_SECONDS: Final = 1.0
#: Scenario kinds that make the host sick as a whole.
HEALTH_KINDS: Final = frozenset({"overload", "ratelimit", "brownout", "restart"})


@dataclass(frozen=True, slots=True)
class Scenario:
    """One way for the network or the server to fail.

    Attributes:
        name: Its name on the command line and in reports (``fin-5%``).
        kind: ``fin``, ``rst``, ``cut`` (body cut mid-way), ``503`` (bursts with Retry-After),
            ``race`` (the server closes keep-alive connections without notice), ``overload``,
            ``ratelimit``, ``brownout`` (an outage mid-run), ``restart``, ``tail``, or ``fleet``
            (client processes sharing a Redis store: run by ``_fleet.py``, not the runner).
        rate: The fraction of requests faulted (for ``fin``, ``rst``, ``cut``).
        description: One line for the reports.
        burst: ``503``: this many consecutive 503s in every :attr:`burst_every` requests.
        burst_every: ``503``: the requests of one cycle, the burst at its end.
        retry_after: ``503``: the ``Retry-After`` seconds of each 503.
        max_requests_per_conn: ``race``: the server closes each connection after this many
            responses, without ``Connection: close``.
        concurrency: The concurrency the scenario is defined at (None: the mode's sweep).
        capacity: ``overload``: requests in service at once.
        service_time: ``overload``: seconds each admitted response is held.
        rate_limit: ``ratelimit``: requests admitted per second.
        refusal: What refused requests get: over capacity, over the rate, during the outage.
        compute_retry_after: Refusals carry a computed ``Retry-After`` (see ``FaultServer``).
        outage_at: ``brownout``: seconds into the measured run the outage starts.
        outage_seconds: ``brownout``: how long every request fails.
        restarts: ``restart``: seconds into the run at which the server goes away.
        down_seconds: ``restart``: how long it stays away each time.
        post_every: Every Nth request is a POST with a unique ``X-Request-Id`` (0: GETs only).
        requests: Logical requests per run (None: the mode's); count-based runs only.
        time_cap: Seconds after which a count-based run is cut (None: the mode's).
        run_seconds: Timed runs: issue requests for this long instead of a count.
        grace: Timed runs: seconds the requests still in flight at the end may take to finish.
        slow_seconds: ``tail``: how long the slow answers (``rate`` of them) wait, headers and
            all.
    """

    name: str
    kind: str
    rate: float
    description: str
    burst: int = 0
    burst_every: int = 0
    retry_after: int = 0
    max_requests_per_conn: int | None = None
    concurrency: int | None = None
    capacity: int | None = None
    service_time: float = 0.0
    rate_limit: float | None = None
    refusal: Fault | None = None
    compute_retry_after: bool = False
    outage_at: float = 0.0
    outage_seconds: float = 0.0
    restarts: tuple[float, ...] = ()
    down_seconds: float = 0.0
    post_every: int = 0
    requests: int | None = None
    time_cap: float | None = None
    run_seconds: float | None = None
    grace: float = 0.0
    slow_seconds: float = 0.0

    @property
    def timed(self) -> bool:
        """Whether a run lasts :attr:`run_seconds` rather than a number of requests."""
        return self.run_seconds is not None

    def params(self) -> dict[str, object]:
        """The figures the reports need (targets, plots), as plain data for the JSON."""
        return {
            "kind": self.kind,
            "rate": self.rate,
            "capacity": self.capacity,
            "service_time": self.service_time,
            "rate_limit": self.rate_limit,
            "refusal": None if self.refusal is None else repr(self.refusal),
            "outage_at": self.outage_at,
            "outage_seconds": self.outage_seconds,
            "restarts": list(self.restarts),
            "down_seconds": self.down_seconds,
            "post_every": self.post_every,
            "run_seconds": self.run_seconds,
            "slow_seconds": self.slow_seconds,
        }


def _rate(kind: str, rate: float, what: str) -> Scenario:
    return Scenario(f"{kind}-{rate:.0%}", kind, rate, f"{rate:.0%} of requests: {what}")


def _overload(name: str, refusal: Fault, what: str, *, quick: bool) -> Scenario:
    requests, cap = (600, 2.0) if quick else (4000, 8.0)
    return Scenario(
        name,
        "overload",
        0.0,
        f"capacity {CAPACITY} requests in service, each held {SERVICE_TIME * 1e3:g} ms "
        f"({CAPACITY / SERVICE_TIME:,.0f} req/s at most); requests over it get {what} at once; "
        f"{4 * CAPACITY} clients",
        concurrency=4 * CAPACITY,
        capacity=CAPACITY,
        service_time=SERVICE_TIME,
        refusal=refusal,
        requests=requests,
        time_cap=cap,
    )


def _ratelimit(name: str, refusal: Fault, what: str, *, computed: bool, quick: bool) -> Scenario:
    requests, cap = (300, 1.5) if quick else (2000, 10.0)
    return Scenario(
        name,
        "ratelimit",
        0.0,
        f"{RATE_LIMIT} requests/s admitted (burst {RATE_LIMIT // 10}); the rest get {what}",
        concurrency=16,
        rate_limit=RATE_LIMIT,
        refusal=refusal,
        compute_retry_after=computed,
        requests=requests,
        time_cap=cap,
    )


def _brownout(name: str, refusal: Fault, what: str, *, quick: bool) -> Scenario:
    at, seconds, run, grace = (0.4, 1.0, 2.4, 0.5) if quick else (0.5, 3.0, 7.0, 2.0)
    return Scenario(
        name,
        "brownout",
        0.0,
        f"healthy, then every request gets {what} for {seconds:g} s from {at:g} s into the "
        f"run, then healthy; {run:g} s run, 64 clients",
        concurrency=64,
        refusal=refusal,
        outage_at=at,
        outage_seconds=seconds,
        run_seconds=run,
        grace=grace,
    )


def _restart(*, quick: bool) -> Scenario:
    restarts, down, run, grace = (
        ((0.3, 1.1), 0.5, 2.0, 0.5) if quick else ((0.5, 3.0), 1.5, 6.0, 2.0)
    )
    return Scenario(
        "restart",
        "restart",
        0.0,
        f"each request takes the server {RESTART_SERVICE_TIME * 1e3:g} ms; it drops every "
        f"connection (requests in service included) and refuses new ones for {down:g} s, as a "
        f"killed and restarted process does, at {' and '.join(f'{t:g}' for t in restarts)} s "
        f"into a {run:g} s run; 1 request in 5 is a POST with a unique X-Request-Id; 64 clients",
        concurrency=64,
        service_time=RESTART_SERVICE_TIME,
        restarts=restarts,
        down_seconds=down,
        post_every=5,
        run_seconds=run,
        grace=grace,
    )


def _tail(*, quick: bool) -> Scenario:
    requests, cap = (1500, 20.0) if quick else (5000, 60.0)
    return Scenario(
        "tail",
        "tail",
        TAIL_SHARE,
        f"{TAIL_SHARE:.0%} of answers, rolled per request, come after {TAIL_SECONDS:g} s (headers "
        "and all), the rest at once; 16 clients; run with the hedging clients "
        "(--clients raw,resilient,resilient-hedge,hedge-python)",
        concurrency=16,
        slow_seconds=TAIL_SECONDS,
        requests=requests,
        time_cap=cap,
    )


def scenarios(*, quick: bool) -> dict[str, Scenario]:
    """Every scenario by name, the host-health ones at their ``--quick`` or full size."""
    busy = Fault.status(503)
    return {
        s.name: s
        for s in (
            _rate("fin", 0.0, "no fault"),
            _rate("fin", 0.01, "FIN before any response byte"),
            _rate("fin", 0.05, "FIN before any response byte"),
            _rate("fin", 0.20, "FIN before any response byte"),
            _rate("rst", 0.05, "RST before any response byte"),
            _rate("rst", 0.20, "RST before any response byte"),
            _rate("cut", 0.05, "200 promising 1000 bytes, FIN after 100"),
            Scenario(
                "503-burst",
                "503",
                0.0,
                "in every 500 requests, a burst of 32 consecutive 503s with Retry-After: 1",
                burst=32,
                burst_every=500,
                retry_after=1,
            ),
            Scenario(
                "keepalive-race",
                "race",
                0.0,
                "the server closes each connection after 20 responses, without Connection: close",
                max_requests_per_conn=20,
            ),
            _overload("overload-503", busy, "503", quick=quick),
            _overload(
                "overload-503-ra",
                Fault.status(503, retry_after=1),
                "503 with Retry-After: 1",
                quick=quick,
            ),
            _overload("overload-rst", Fault.rst(), "RST", quick=quick),
            _ratelimit(
                "ratelimit-429-ra",
                Fault.status(429),
                "429 with Retry-After: whole seconds until a token is free (1 at this rate)",
                computed=True,
                quick=quick,
            ),
            _ratelimit(
                "ratelimit-429",
                Fault.status(429),
                "429, no Retry-After",
                computed=False,
                quick=quick,
            ),
            _ratelimit("ratelimit-503", busy, "503, no Retry-After", computed=False, quick=quick),
            _brownout("brownout-rst", Fault.rst(), "RST", quick=quick),
            _brownout("brownout-503", busy, "503 (no Retry-After)", quick=quick),
            _restart(quick=quick),
            _tail(quick=quick),
            Scenario("fleet", "fleet", 0.0, FLEET_DESCRIPTION, concurrency=FLEET_PROCS),
        )
    }


#: Every scenario at its full size: the names the command line accepts.
SCENARIOS: Final = scenarios(quick=False)

#: (scenario, concurrency) cells of the per-request faults in ``--quick``: the 0% overhead figure
#: and the hardest FIN rate at the concurrency where default schedules hurt most.
QUICK_FAULT_CELLS: Final = (("fin-0%", 16), ("fin-20%", 16))

#: The full run's per-request cells: the FIN sweep at every concurrency, the other faults at 64.
FAULT_CELLS: Final = tuple(
    [(f"fin-{p}%", c) for c in (16, 64, 256) for p in (0, 1, 5, 20)]
    + [(name, 64) for name in ("rst-5%", "rst-20%", "cut-5%", "503-burst", "keepalive-race")]
)
