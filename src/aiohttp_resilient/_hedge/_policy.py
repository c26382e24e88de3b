"""HedgePolicy: when a slow idempotent call gets a second copy, and how much load that may add."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .._retry._policy import _check_number

__all__ = ["DEFAULT_MAX_EXTRA", "DEFAULT_MIN_DELAY", "DEFAULT_PERCENTILE", "HedgePolicy"]

#: "The Tail at Scale" defers the hedge until the 95th-percentile latency: about 5% more requests.
DEFAULT_PERCENTILE: Final = 0.95
#: Hedges as a share of the host's hedgeable calls over ``window`` (Finagle's ``maxExtraLoad``;
#: the paper's 5% at p95).
DEFAULT_MAX_EXTRA: Final = 0.05
#: Below this a hedge races the original's own jitter, not its stalls (Finagle floors at 1 ms;
#: on loopback a p95 of a fraction of a millisecond would hedge noise).
DEFAULT_MIN_DELAY: Final = 0.005


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgePolicy:
    """Send a second copy of an idempotent call that has not answered after a delay; the first
    answer wins and the other attempt is cancelled.

    Only requests the retry policy would retry as idempotent are hedged (its ``methods``, or an
    ``Idempotency-Key``), and only with a body that can be sent twice (none, or bytes). The
    delay is the host's recent latency at ``percentile`` (over ``window`` seconds, once
    ``warmup`` answers are known; no hedge before), kept within ``min_delay`` and ``max_delay``,
    or the fixed ``delay``. Hedges are bounded to ``max_extra`` of the host's hedgeable calls over
    ``window``, charge the host's retry budget, take a slot under the per-host limit like any
    attempt, and stand down while the host is sick (breaker not closed, adaptive limit cut,
    rate shaped, retry budget past half spent).

    Usage::

        resilient_session(hedge=HedgePolicy())               # p95 of the host's latency
        RetryMiddleware(hedge=HedgePolicy(delay=0.05))       # a fixed 50 ms

    Attributes:
        delay: A fixed delay in seconds; ``None`` for the host's percentile.
        percentile: The latency percentile (0.5 to 0.999) the adaptive delay follows.
        min_delay: The adaptive delay's floor, in seconds.
        max_delay: The adaptive delay's ceiling: a host slower than this at ``percentile`` is
            not hedged (Finagle stops at 2 s: its slowness is not a tail any more).
        warmup: Answers a host must have given within ``window`` before an adaptive hedge goes.
        max_hedges: Hedges per call (1 to 4; gRPC caps attempts at 5), one per delay.
        max_extra: Hedges per hedgeable call over ``window`` (0 < max_extra <= max_hedges).
        window: Seconds the latency and the extra-load count cover (1 to 60; Finagle: 30 and 10).
    """

    delay: float | None = None
    percentile: float = DEFAULT_PERCENTILE
    min_delay: float = DEFAULT_MIN_DELAY
    max_delay: float = 2.0
    warmup: int = 20
    max_hedges: int = 1
    max_extra: float = DEFAULT_MAX_EXTRA
    window: float = 10.0

    def __post_init__(self) -> None:
        if self.delay is not None:
            _check_number("delay", self.delay, minimum=0.0)
        _check_number("percentile", self.percentile, minimum=0.5, maximum=0.999)
        _check_number("min_delay", self.min_delay, minimum=0.0)
        _check_number("max_delay", self.max_delay, minimum=self.min_delay, inclusive=False)
        _check_int("warmup", self.warmup, 1, 100_000)
        _check_int("max_hedges", self.max_hedges, 1, 4)
        _check_number(
            "max_extra", self.max_extra, minimum=0.0, inclusive=False, maximum=self.max_hedges
        )
        _check_number("window", self.window, minimum=1.0, maximum=60.0)


def _check_int(name: str, value: object, minimum: int, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
