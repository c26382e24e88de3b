"""Adaptive per-host send rate, for hosts that limit requests per second (the AWS SDK's
adaptive retry mode: cut to 0.7x on a throttle, grow back along a CUBIC curve)."""

from __future__ import annotations

from dataclasses import dataclass

from .._retry._policy import _check_number

__all__ = ["AdaptiveRatePolicy", "RateState"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveRatePolicy:
    """How fast a throttled host is sent to.

    Off for a host until it throttles (a 429: a 503 is left to the adaptive concurrency limit
    and the breaker, since a host that is down answers it too). Then requests go no faster
    than a token bucket allows. A throttle cuts the rate to ``beta`` times ``w_max``, the rate
    at which the host accepted requests (answers that were not 429, smoothed, or the current
    ``bucket`` when a burst makes it higher; a later cut starts from the rate allowed, past
    the last peak only as far as the host accepted), at most once per ``cooldown``. The rate
    then grows back along ``scale * (t - K)**3 + w_max`` (CUBIC), ``t`` being the seconds since
    the cut and ``K = cbrt(w_max * (1 - beta) / scale)`` the time it takes to reach ``w_max``
    again, and on past it, probing. The constants are
    botocore's, smithy's and the AWS SDK for Ruby's; two rules differ from theirs. They cut from
    the rate the client was sending at (429s included): after sparse sending, or a sleep on
    ``Retry-After``, that is near nothing, and the cut falls to ``min_rate``. And they grow no
    faster than twice that measured rate: a client that sends 1 request a second stays near
    that limit for minutes after a burst was throttled. Here the curve depends on time only:
    a host allowing 20 requests/s, throttled once in a burst after 1 request a second, is
    allowed 14/s at once, 20/s after 2.5 s and more after that.

    Usage::

        HealthPolicy(adaptive_rate=AdaptiveRatePolicy(beta=0.5))

    Attributes:
        beta: The factor of a cut (AWS: 0.7).
        scale: CUBIC's C (AWS: 0.4).
        min_rate: Requests per second never go below this (AWS: 0.5).
        smoothing: Weight of the newest bucket in the accepted rate (AWS: 0.8).
        bucket: Seconds per rate measurement (AWS: 0.5); buckets without answers are skipped.
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
        "_accepted",
        "_bucket_count",
        "_bucket_end",
        "_bucket_ok",
        "_k",
        "_last_throttle",
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
        self._accepted = 0.0  # answers per second that were not throttles (smoothed)
        self._bucket_count = 0  # answers in the current bucket, throttles included
        self._bucket_ok = 0  # of which not throttles
        self._bucket_end = now + policy.bucket
        self._w_max = 0.0
        self._k = 0.0
        self._last_throttle = -1e18

    def current(self, now: float) -> float:
        """The rate allowed now: the CUBIC curve at ``now`` (0.0 while off). It grows with the
        time since the last cut, not with answers, so a host sent to sparsely, or not at all
        while its callers slept on ``Retry-After``, is back to its old rate within seconds."""
        if self.enabled:
            policy = self._policy
            cubic = policy.scale * (now - self._last_throttle - self._k) ** 3 + self._w_max
            self.rate = max(policy.min_rate, cubic)
        return self.rate

    def wait(self, now: float) -> float:
        """Seconds the next send would wait, without taking its slot."""
        if not self.enabled:
            return 0.0
        self.current(now)
        return max(0.0, max(self._tat, now) - self._policy.burst - now)

    def reserve(self, now: float) -> tuple[float, float]:
        """Take the next send slot: (seconds to wait before sending, a token for
        :meth:`unreserve`)."""
        if not self.enabled:
            return 0.0, 0.0
        tat = max(self._tat, now)
        self._tat = tat + 1.0 / self.current(now)
        return max(0.0, tat - self._policy.burst - now), self._tat

    def unreserve(self, token: float) -> None:
        """Give back the slot :meth:`reserve` took (its caller will not send), if it is still
        the last one taken."""
        if self.enabled and self._tat == token:
            self._tat -= 1.0 / self.rate

    def accepted(self, now: float) -> float:
        """Answers per second that were not throttles: what the host took, smoothed over the
        buckets in which it was sent to (an idle spell says nothing about the host); the
        current bucket counts as soon as it says more (a burst after a quiet spell)."""
        self._measure(now)
        policy = self._policy
        elapsed = now - (self._bucket_end - policy.bucket)
        # Over a fifth of a bucket at least: a few answers in a few milliseconds say nothing
        # about a rate.
        return max(self._accepted, self._bucket_ok / max(elapsed, policy.bucket / 5))

    def success(self, now: float, count: int = 1) -> None:
        """``count`` answers that were not a throttle, the last at ``now``."""
        if now >= self._bucket_end:
            self._measure(now)
        self._bucket_count += count
        self._bucket_ok += count

    def throttle(self, now: float) -> bool:
        """The host throttled; returns whether the rate was cut."""
        policy = self._policy
        self._measure(now)
        self._bucket_count += 1
        if now - self._last_throttle < policy.cooldown:
            return False
        # The first cut starts from what the host accepted (its limit lies there: what it was
        # offered beyond it came back 429), not from botocore's rate of all answers, which a
        # client sending 1 request a second, or sleeping on Retry-After, measures near nothing.
        # Later cuts start from the rate allowed, but past the last peak only as far as the
        # host accepted: the curve grows on while the client sends little.
        accepted = self.accepted(now)
        if self.enabled:
            accepted = min(self.current(now), max(accepted, self._w_max))
        w_max = max(accepted, policy.min_rate)
        self._w_max = w_max
        self._k = (w_max * (1.0 - policy.beta) / policy.scale) ** (1.0 / 3.0)
        self.rate = max(policy.min_rate, w_max * policy.beta)
        self._last_throttle = now
        if not self.enabled:
            self.enabled = True
            self._tat = now
        return True

    def _measure(self, now: float) -> None:
        if now < self._bucket_end:
            return
        policy = self._policy
        if self._bucket_count:  # buckets without answers (idle) leave the figure alone
            self._accepted = (
                policy.smoothing * self._bucket_ok / policy.bucket
                + (1.0 - policy.smoothing) * self._accepted
            )
        self._bucket_count = self._bucket_ok = 0
        passed = int((now - self._bucket_end) // policy.bucket) + 1
        self._bucket_end += policy.bucket * passed
