"""Adaptive per-host send rate, for hosts that limit requests per second (the AWS SDK's
adaptive retry mode: cut to 0.7x on a throttle, grow back along a CUBIC curve)."""

from __future__ import annotations

from dataclasses import dataclass

from ._policy import _check_number

__all__ = ["AdaptiveRatePolicy", "RateState"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveRatePolicy:
    """How fast a throttled host is sent to.

    Off for a host until it throttles (a 429: a 503 is left to the adaptive concurrency limit
    and the breaker, since a host that is down answers it too). Then requests go no faster
    than a token bucket allows: its rate starts at ``beta`` times the rate at which the host
    was answering (throttles included), is cut by ``beta`` on each later throttle, at most once
    per ``cooldown``, and grows back along
    ``scale * (t - K)**3 + w_max`` (CUBIC), growing no further than twice the measured rate.
    The constants
    are botocore's, smithy's and the AWS SDK for Ruby's.

    Usage::

        HealthPolicy(adaptive_rate=AdaptiveRatePolicy(beta=0.5))

    Attributes:
        beta: The factor of a cut (AWS: 0.7).
        scale: CUBIC's C (AWS: 0.4).
        min_rate: Requests per second never go below this (AWS: 0.5).
        smoothing: Weight of the newest measurement in the measured rate (AWS: 0.8).
        bucket: Seconds per rate measurement (AWS: 0.5).
        cooldown: Seconds between two cuts: the throttles that answer requests sent before a
            cut do not cut again.
        burst: Seconds' worth of requests that may go at once.
    """

    beta: float = 0.7
    scale: float = 0.4
    min_rate: float = 0.5
    smoothing: float = 0.8
    bucket: float = 0.5
    cooldown: float = 0.5
    burst: float = 0.05

    def __post_init__(self) -> None:
        _check_number(
            "beta", self.beta, minimum=0.0, inclusive=False, maximum=1.0, max_inclusive=False
        )
        _check_number("smoothing", self.smoothing, minimum=0.0, inclusive=False, maximum=1.0)
        for name in ("scale", "min_rate", "bucket"):
            _check_number(name, getattr(self, name), minimum=0.0, inclusive=False)
        _check_number("cooldown", self.cooldown, minimum=0.0)
        _check_number("burst", self.burst, minimum=0.0)


class RateState:
    """One host's rate: a GCRA token bucket (one timestamp) and the CUBIC numbers."""

    __slots__ = (
        "_bucket_count",
        "_bucket_end",
        "_k",
        "_last_throttle",
        "_measured",
        "_policy",
        "_tat",
        "_w_max",
        "enabled",
        "rate",
    )

    def __init__(self, policy: AdaptiveRatePolicy, now: float) -> None:
        self._policy = policy
        self.enabled = False
        self.rate = 0.0
        self._tat = now  # GCRA: the theoretical arrival time of the next request
        self._measured = 0.0
        self._bucket_count = 0
        self._bucket_end = now + policy.bucket
        self._w_max = 0.0
        self._k = 0.0
        self._last_throttle = -1e18

    def wait(self, now: float) -> float:
        """Seconds the next send would wait, without taking its slot."""
        if not self.enabled:
            return 0.0
        return max(0.0, max(self._tat, now) - self._policy.burst - now)

    def reserve(self, now: float) -> tuple[float, float]:
        """Take the next send slot: (seconds to wait before sending, a token for
        :meth:`unreserve`)."""
        if not self.enabled:
            return 0.0, 0.0
        tat = max(self._tat, now)
        self._tat = tat + 1.0 / self.rate
        return max(0.0, tat - self._policy.burst - now), self._tat

    def unreserve(self, token: float) -> None:
        """Give back the slot :meth:`reserve` took (its caller will not send), if it is still
        the last one taken."""
        if self.enabled and self._tat == token:
            self._tat -= 1.0 / self.rate

    def measured(self, now: float) -> float:
        """Answers per second (throttles included: the rate the client was sending at, as
        botocore's ``RateClocker`` measures it), smoothed."""
        self._measure(now)
        if self._measured == 0.0:  # no bucket closed yet: what the current one has seen
            policy = self._policy
            elapsed = now - (self._bucket_end - policy.bucket)
            # Over a fifth of a bucket at least: a burst at start-up over a few milliseconds
            # says nothing about a rate.
            return self._bucket_count / max(elapsed, policy.bucket / 5)
        return self._measured

    def success(self, now: float) -> None:
        """An answer that was not a throttle."""
        if now >= self._bucket_end:
            self._measure(now)
        self._bucket_count += 1
        if self.enabled:
            policy = self._policy
            t = now - self._last_throttle
            cubic = policy.scale * (t - self._k) ** 3 + self._w_max
            # Growth stops at twice the measured rate (botocore), but that bound never cuts:
            # a client that slept on Retry-After measures little and has not been throttled.
            ceiling = max(self.rate, 2.0 * self.measured(now))
            self.rate = max(policy.min_rate, min(cubic, ceiling))

    def throttle(self, now: float) -> bool:
        """The host throttled; returns whether the rate was cut."""
        policy = self._policy
        self._measure(now)
        self._bucket_count += 1
        if now - self._last_throttle < policy.cooldown:
            return False
        # The first throttle starts from the rate the client was sending at; later ones from
        # the rate it was allowed (botocore takes the lower of the two, but a client that slept
        # on Retry-After measures almost nothing and would cut itself to a crawl).
        w_max = self.rate if self.enabled else self.measured(now)
        self._w_max = max(w_max, policy.min_rate)
        self._k = (self._w_max * (1.0 - policy.beta) / policy.scale) ** (1.0 / 3.0)
        self.rate = max(policy.min_rate, self._w_max * policy.beta)
        self._last_throttle = now
        if not self.enabled:
            self.enabled = True
            self._tat = now
        return True

    def _measure(self, now: float) -> None:
        if now < self._bucket_end:
            return
        policy = self._policy
        current = self._bucket_count / policy.bucket
        self._measured = policy.smoothing * current + (1.0 - policy.smoothing) * self._measured
        self._bucket_count = 0
        passed = int((now - self._bucket_end) // policy.bucket) + 1
        if passed > 1:  # idle buckets measured nothing
            self._measured *= (1.0 - policy.smoothing) ** (passed - 1)
        self._bucket_end += policy.bucket * passed
