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
    so a burst of drops cuts once (attempts sent before a change are not counted after it), and
    from the number of attempts that were in flight when that is below the limit; a
    window without a drop, in which at least half the limit
    was in use, adds one. Only answers below 400 count as good samples, so fast error pages
    never make it grow (scrapy's AutoThrottle guard). Random faults rarely fill half a window:
    at 20% faults and 50 samples, about once in 10**5 windows.

    Usage::

        HealthPolicy(adaptive_limit=AdaptiveLimitPolicy(min_limit=2))

    Attributes:
        min_limit: The limit never goes below this.
        window_samples: Attempts per window at the least (Netflix's windows: 10; more here, so
            that a window's drop ratio tells overload from random faults).
        drop_ratio: The share of a window's attempts that must have dropped (or been
            throttled) to cut the limit. Half: resets and disconnects are also random network
            faults, which rarely fill half a window.
        throttle_ratio: The share of a window's attempts answered 429 or 503 that cuts the
            limit: the host said so itself, so a fifth of the window is enough (random 503s at
            5% reach it in 3 windows of 1,000). Drops count at this share too when the host's
            retries keep failing (its retry budget is past its immediate share): a host that
            resets what exceeds its capacity fails retries as it fails first attempts, while
            retries after random faults succeed.
        decrease: The factor of a cut (Netflix's AIMD: 0.9). Not TCP's halving: one attempt
            over a full host's capacity is refused at once, again and again, so a window can be
            half drops with the limit one too high; a small cut there costs one slot, not half.
            Windows are short under overload (fast refusals fill them), so 4x the capacity is
            still reached in 14 windows, about 0.1 s on loopback.
    """

    min_limit: int = 1
    window_samples: int = 50
    drop_ratio: float = 0.5
    throttle_ratio: float = 0.2
    decrease: float = 0.9

    def __post_init__(self) -> None:
        _check_int("min_limit", self.min_limit, minimum=1)
        _check_int("window_samples", self.window_samples, minimum=1)
        for name in ("drop_ratio", "throttle_ratio"):
            _check_number(name, getattr(self, name), minimum=0.0, inclusive=False, maximum=1.0)
        _check_number(
            "decrease",
            self.decrease,
            minimum=0.0,
            inclusive=False,
            maximum=1.0,
            max_inclusive=False,
        )


class LimitState:
    """One host's live limit and the window being judged (a few integers)."""

    __slots__ = (
        "_correlated",
        "_drops",
        "_max_in_flight",
        "_policy",
        "_samples",
        "_throttles",
        "ceiling",
        "cuts",
        "epoch",
        "limit",
    )

    def __init__(self, policy: AdaptiveLimitPolicy, ceiling: int) -> None:
        self._policy = policy
        self.ceiling = ceiling
        self.limit = ceiling
        #: Counts the limit's changes: an attempt sent under an older limit says nothing about
        #: the current one (TCP cuts at most once per window of data sent after the last cut).
        self.epoch = 0
        #: Counts the cuts: an attempt refused after a cut was sent under a limit now known to
        #: be too high (the request path queues it again instead of counting it as a failure).
        self.cuts = 0
        self._samples = 0
        self._drops = 0
        self._throttles = 0
        self._max_in_flight = 0
        self._correlated = False  # a drop in this window came while retries kept failing

    @property
    def min_limit(self) -> int:
        """The limit's floor."""
        return self._policy.min_limit

    def _cut(self, used: int) -> bool:
        limit = self.limit
        self.limit = max(self._policy.min_limit, int(min(limit, used) * self._policy.decrease))
        self._samples = self._drops = self._throttles = self._max_in_flight = 0
        self._correlated = False
        if self.limit == limit:
            return False
        self.cuts += 1
        self.epoch += 1
        return True

    def sample(
        self,
        dropped: bool,
        throttled: bool,
        in_flight: int,
        epoch: int,
        correlated: bool = False,
    ) -> bool:
        """Count an attempt that ended: ``dropped`` (a reset, disconnect or timeout before any
        response), ``throttled`` (429 or 503), or neither (an answer below 400); ``in_flight``
        and ``epoch``: the attempts out and the :attr:`epoch` when it was sent; ``correlated``:
        the host's retries have been failing too (its retry budget is past its immediate
        share), so drops are not independent faults. Returns whether the limit changed."""
        if epoch != self.epoch:
            return False
        self._samples += 1
        if dropped:
            self._drops += 1
            if correlated:
                self._correlated = True
        elif throttled:
            self._throttles += 1
        if in_flight > self._max_in_flight:
            self._max_in_flight = in_flight
        policy = self._policy
        limit = self.limit
        samples = self._samples
        if samples < policy.window_samples or samples < limit:
            return False
        drops, throttles, used = self._drops, self._throttles, self._max_in_flight
        correlated = self._correlated
        self._samples = self._drops = self._throttles = self._max_in_flight = 0
        self._correlated = False
        if (
            throttles >= policy.throttle_ratio * samples
            or drops + throttles >= policy.drop_ratio * samples
            or (correlated and drops + throttles >= policy.throttle_ratio * samples)
        ):
            # Cut from what was in use, not from a limit the host never saw (RFC 7661's
            # window validation): backing-off callers may hold far fewer slots than the limit.
            return self._cut(used)
        if drops + throttles == 0 and 2 * used >= limit and limit < self.ceiling:
            self.limit = limit + 1
            self.epoch += 1
            return True
        return False
