"""Latency histograms with fixed log-spaced buckets: O(1) to observe, quantiles on reading."""

from __future__ import annotations

from bisect import bisect_left as _bisect_left
from dataclasses import dataclass
from typing import Final

__all__ = ["LATENCY_BOUNDS", "Histogram", "Latency"]


def _renard_bounds() -> tuple[float, ...]:
    # The R10 preferred numbers (1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8) per decade, 100 µs to
    # 1000 s: each bucket ~26% wider than the last, and the round figures dashboards use
    # (0.005, 0.01, 0.025, 0.1, 0.5, 1, 2.5, 10 s) are exact bounds.
    steps = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)
    bounds = [round(step * 10.0**exponent, 10) for exponent in range(-4, 3) for step in steps]
    return (*bounds, 1000.0)


#: The upper bounds of the buckets, in seconds; one more bucket holds what lies above the last.
LATENCY_BOUNDS: Final = _renard_bounds()
_LAST: Final = len(LATENCY_BOUNDS)  # the overflow bucket's index


class Histogram:
    """Counts of observations per bucket of :data:`LATENCY_BOUNDS`, and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_LAST + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation in the bucket that holds it,
        ``LATENCY_BOUNDS[i - 1] < seconds <= LATENCY_BOUNDS[i]``.

        A binary search in C over the fixed bounds (7 comparisons): constant time, no
        allocation, and cheaper than a logarithm in Python (it runs twice per request).
        """
        self.counts[_bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.total += seconds

    def freeze(self) -> Latency:
        """A snapshot of the counts so far."""
        return Latency(buckets=tuple(self.counts), sum=self.total)


@dataclass(frozen=True, slots=True, kw_only=True)
class Latency:
    """A latency histogram as it stood: counts per bucket of :data:`LATENCY_BOUNDS` (the last
    one for anything above them) and the sum of the observations, in seconds.

    Quantiles are interpolated within their bucket, as Prometheus' ``histogram_quantile``
    does: within ~26% of the true value, since that is a bucket's width.
    """

    buckets: tuple[int, ...] = (0,) * (_LAST + 1)
    sum: float = 0.0

    @property
    def count(self) -> int:
        """How many observations."""
        return sum(self.buckets)

    @property
    def p50(self) -> float | None:
        """The median, in seconds (``None`` without observations)."""
        return self.quantile(0.5)

    @property
    def p90(self) -> float | None:
        """The 90th percentile, in seconds."""
        return self.quantile(0.9)

    @property
    def p99(self) -> float | None:
        """The 99th percentile, in seconds."""
        return self.quantile(0.99)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0 <= q <= 1) in seconds, ``None`` without observations."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, got {q!r}")
        count = self.count
        if count == 0:
            return None
        rank = q * count
        seen = 0
        for index, n in enumerate(self.buckets):
            if n and seen + n >= rank:
                if index == _LAST:
                    return LATENCY_BOUNDS[-1]  # above the last bound: its bound is all we know
                low = 0.0 if index == 0 else LATENCY_BOUNDS[index - 1]
                return low + (LATENCY_BOUNDS[index] - low) * max(rank - seen, 0.0) / n
            seen += n
        return LATENCY_BOUNDS[-1]  # pragma: no cover - rank <= count ends the loop above

    def cumulative(self, bounds: tuple[float, ...]) -> list[tuple[float, int]]:
        """``(bound, observations <= bound)`` for each of ``bounds``, which must be among
        :data:`LATENCY_BOUNDS` (so the counts are exact)."""
        out = []
        running = 0
        position = 0
        for bound in bounds:
            index = LATENCY_BOUNDS.index(bound)  # ValueError for a bound that is not one of ours
            while position <= index:
                running += self.buckets[position]
                position += 1
            out.append((bound, running))
        return out

    def __add__(self, other: Latency) -> Latency:
        return Latency(
            buckets=tuple(a + b for a, b in zip(self.buckets, other.buckets, strict=True)),
            sum=self.sum + other.sum,
        )
