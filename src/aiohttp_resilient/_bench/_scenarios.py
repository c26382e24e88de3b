"""The fault scenarios: what the server does to the requests of a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["FULL_CELLS", "QUICK_CELLS", "SCENARIOS", "Scenario"]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One way for the network to fail.

    Attributes:
        name: Its name on the command line and in reports (``fin-5%``).
        kind: ``fin``, ``rst``, ``cut`` (body cut mid-way), ``503`` (bursts with Retry-After) or
            ``race`` (the server closes keep-alive connections without notice).
        rate: The fraction of requests faulted (for ``fin``, ``rst``, ``cut``).
        description: One line for the reports.
        burst: ``503``: this many consecutive 503s in every :attr:`burst_every` requests.
        burst_every: ``503``: the requests of one cycle, the burst at its end.
        retry_after: ``503``: the ``Retry-After`` seconds of each 503.
        max_requests_per_conn: ``race``: the server closes each connection after this many
            responses, without ``Connection: close``.
    """

    name: str
    kind: str
    rate: float
    description: str
    burst: int = 0
    burst_every: int = 0
    retry_after: int = 0
    max_requests_per_conn: int | None = None


def _rate(kind: str, rate: float, what: str) -> Scenario:
    return Scenario(f"{kind}-{rate:.0%}", kind, rate, f"{rate:.0%} of requests: {what}")


SCENARIOS: Final[dict[str, Scenario]] = {
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
    )
}

#: (scenario, concurrency) cells of ``--quick``: the 0% overhead figure and the hardest FIN rate
#: at the concurrency where default schedules hurt most.
QUICK_CELLS: Final = (("fin-0%", 16), ("fin-20%", 16))

#: The full run: the FIN sweep at every concurrency, the other faults at 64.
FULL_CELLS: Final = tuple(
    [(f"fin-{p}%", c) for c in (16, 64, 256) for p in (0, 1, 5, 20)]
    + [(name, 64) for name in ("rst-5%", "rst-20%", "cut-5%", "503-burst", "keepalive-race")]
)
