"""Adaptive per-host concurrency: the live limit under the configured cap (AIMD)."""

from __future__ import annotations

from dataclasses import dataclass

from ._policy import _check_int, _check_number

__all__ = ["AdaptiveLimitPolicy", "LimitState"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveLimitPolicy:
    """How a host's live concurrency limit follows congestion (loss-based AIMD, which Netflix's
    concurrency-limits recommends for clients).

    The limit starts at the per-host cap, so a healthy host never waits for it to grow. Attempts
    are judged in windows of at least ``window_samples`` (and at least the limit). A window in
    which ``drop_ratio`` or more of the attempts were dropped (429, 503, or a reset, disconnect
    or timeout before any response) cuts the limit by ``decrease``, at most once per window,
    so a burst of drops cuts once; a window without a drop, in which at least half the limit
    was in use, adds one. Only answers below 400 count as good samples, so fast error pages
    never make it grow (scrapy's AutoThrottle guard). Random faults rarely fill half a window:
    at 20% faults and 50 samples, about once in 10**5 windows.

    Usage::

        HealthPolicy(adaptive_limit=AdaptiveLimitPolicy(min_limit=2))

    Attributes:
        min_limit: The limit never goes below this.
        window_samples: Attempts per window at the least (Netflix's windows: 10; more here, so
            that a window's drop ratio tells overload from random faults).
        drop_ratio: The share of a window's attempts that must have dropped to cut the limit.
        decrease: The factor of a cut (TCP halves; a concurrency-limited server at 4x its
            capacity is reached in two windows).
    """

    min_limit: int = 1
    window_samples: int = 50
    drop_ratio: float = 0.5
    decrease: float = 0.5

    def __post_init__(self) -> None:
        _check_int("min_limit", self.min_limit, minimum=1)
        _check_int("window_samples", self.window_samples, minimum=1)
        _check_number("drop_ratio", self.drop_ratio, minimum=0.0, inclusive=False)
        if self.drop_ratio > 1.0:
            raise ValueError(f"drop_ratio must be <= 1, got {self.drop_ratio!r}")
        _check_number("decrease", self.decrease, minimum=0.0, inclusive=False)
        if self.decrease >= 1.0:
            raise ValueError(f"decrease must be < 1, got {self.decrease!r}")


class LimitState:
    """One host's live limit and the window being judged (a few integers)."""

    __slots__ = ("_drops", "_max_in_flight", "_policy", "_samples", "ceiling", "limit")

    def __init__(self, policy: AdaptiveLimitPolicy, ceiling: int) -> None:
        self._policy = policy
        self.ceiling = ceiling
        self.limit = ceiling
        self._samples = 0
        self._drops = 0
        self._max_in_flight = 0

    def sample(self, dropped: bool, in_flight: int) -> bool:
        """Count an attempt that ended (``in_flight``: attempts out when it was sent); returns
        whether the limit changed."""
        self._samples += 1
        if dropped:
            self._drops += 1
        if in_flight > self._max_in_flight:
            self._max_in_flight = in_flight
        policy = self._policy
        limit = self.limit
        if self._samples < policy.window_samples or self._samples < limit:
            return False
        drops, used = self._drops, self._max_in_flight
        ratio = drops / self._samples
        self._samples = self._drops = self._max_in_flight = 0
        if ratio >= policy.drop_ratio:
            self.limit = max(policy.min_limit, int(limit * policy.decrease))
        elif drops == 0 and 2 * used >= limit:
            self.limit = min(self.ceiling, limit + 1)
        return self.limit != limit
