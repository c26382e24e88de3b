"""Adaptive per-host concurrency: the live limit under the configured cap (AIMD)."""

from __future__ import annotations

from dataclasses import dataclass

from .._retry._policy import _check_int, _check_number

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
    from the number of attempts that were in flight when that is below the limit. The cut comes
    as soon as the window's refusals make that share of the whole window, not after the rest
    of it was refused too: an overloaded host's refusals come back fast, and 4x its capacity is
    cut to it within a service time or two. A window without a drop, in which at least half the
    limit was in use, adds one; if the slot it added is refused (an attempt sent at the new
    limit), the limit goes back at once, and the next growth waits 1, 3, 7, then 15 clean
    windows: a host at its capacity costs a refusal per probe, not a window of them. A cut
    limit whose windows keep a few refusals, too few to cut (4 or more; one slot over a full
    host's capacity is refused attempt after attempt), tries one slot less for a window: kept
    if the refusals fall to a quarter, else given back (random faults), the next trial waiting
    4, 8, 16, 32, then 64 windows. Only
    answers below 400 count as good samples, so fast error pages never make it grow (scrapy's
    AutoThrottle guard). Random faults rarely fill half a window: at 20% faults and 50
    samples, about once in 10**5 windows; one that refuses a probe only takes that probe back,
    and a limit never cut is never tried lower.

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
            Windows are short under overload (fast refusals fill them, and the cut comes as
            soon as it is certain), so 4x the capacity is reached in about 0.1 s on loopback.
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
        "_failed_probes",
        "_failed_trials",
        "_max_in_flight",
        "_policy",
        "_probing",
        "_samples",
        "_skip",
        "_throttles",
        "_trial_from",
        "_trial_wait",
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
        #: be too high (the request path queues it again).
        self.cuts = 0
        self._samples = 0
        self._drops = 0
        self._throttles = 0
        self._max_in_flight = 0
        self._correlated = False  # a drop in this window came while retries kept failing
        self._probing = False  # the last change was a growth, not yet borne out by a window
        self._failed_probes = 0  # growths taken back in a row
        self._skip = 0  # clean windows still to pass before the next growth
        self._trial_from = 0  # refusals of the window before a trial step down (0: none)
        self._trial_wait = 0  # windows still to pass before the next trial
        self._failed_trials = 0  # trials undone (refusals that did not fall)

    @property
    def min_limit(self) -> int:
        """The limit's floor."""
        return self._policy.min_limit

    def _reset(self) -> None:
        self._samples = self._drops = self._throttles = self._max_in_flight = 0
        self._correlated = False

    def _cut(self, used: int) -> bool:
        limit = self.limit
        self.limit = max(self._policy.min_limit, int(min(limit, used) * self._policy.decrease))
        self._reset()
        self._probing = False
        self._failed_probes = self._skip = self._trial_from = 0
        if self.limit == limit:
            return False
        self.cuts += 1
        self.epoch += 1
        return True

    def _take_back(self) -> bool:
        # The slot the last growth added was refused: the host is full one below. Back to
        # the limit it held, at once, and probe again only after 1, 3, 7, then 15 clean
        # windows, so a host at its capacity costs one refusal per probe, not a window's cut.
        self.limit -= 1
        self._reset()
        self._probing = False
        self._failed_probes = min(self._failed_probes + 1, 4)
        self._skip = (1 << self._failed_probes) - 1
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
        and ``epoch``: the attempts out (itself included) and the :attr:`epoch` when it was
        sent; ``correlated``: the host's retries have been failing too (its retry budget is
        past its immediate share), so drops are not independent faults. Returns whether the
        limit changed."""
        if epoch != self.epoch:
            return False
        self._samples += 1
        if in_flight > self._max_in_flight:
            self._max_in_flight = in_flight
        policy = self._policy
        limit = self.limit
        full = self._window(limit)
        if dropped or throttled:
            if self._probing and in_flight >= limit:
                return self._take_back()
            if dropped:
                self._drops += 1
                self._correlated |= correlated
            else:
                self._throttles += 1
            # The verdict comes as soon as it is certain (the refusals already make the share
            # of the whole window), not after the rest of the window has been refused too.
            refused = self._drops + self._throttles
            if (
                self._throttles >= policy.throttle_ratio * full
                or refused >= policy.drop_ratio * full
                or (self._correlated and refused >= policy.throttle_ratio * full)
            ):
                # Cut from what was in use, not from a limit the host never saw (RFC 7661's
                # window validation): backing-off callers may hold far fewer slots than the
                # limit.
                return self._cut(self._max_in_flight)
        if self._samples < full:
            return False
        return self._close_window(limit)

    def answered(self, count: int) -> bool:
        """Count ``count`` answers below 400 sent at the ceiling (the fast path's, counted
        together: there, their number alone matters); returns whether the limit changed."""
        self._samples += count
        limit = self.limit
        if self._samples < self._window(limit):
            return False
        return self._close_window(limit)

    def _window(self, limit: int) -> int:
        # Samples a window holds: window_samples, or the limit when that is more.
        window = self._policy.window_samples
        return window if window > limit else limit

    def _close_window(self, limit: int) -> bool:
        refused = self._drops + self._throttles
        used = self._max_in_flight
        self._reset()
        if self._probing and not refused:  # a whole window at the grown limit, no refusal
            self._failed_probes = 0
        self._probing = False
        if self._trial_wait:
            self._trial_wait -= 1
        if self._trial_from:
            return self._judge_trial(refused)
        if refused:
            # A cut limit with refusals too few to cut (one slot over a full host's capacity
            # bounces attempt after attempt): try one slot less, kept only if they stop.
            if refused < 4 or self._trial_wait or limit >= self.ceiling or limit <= self.min_limit:
                return False
            self._trial_from = refused
            self.limit = limit - 1
            self.epoch += 1
            return True
        if self._skip:
            self._skip -= 1
            return False
        if 2 * used >= limit and limit < self.ceiling:
            self.limit = limit + 1
            self.epoch += 1
            self._probing = True
            return True
        return False

    def _judge_trial(self, refused: int) -> bool:
        before = self._trial_from
        self._trial_from = 0
        if 4 * refused <= before:
            return False  # they came with the load: the slot less stays
        # Refusals that do not fall with the load are random faults: the slot comes back, and
        # the next trial waits 4, 8, 16, 32, then 64 windows.
        self._failed_trials = min(self._failed_trials + 1, 5)
        self._trial_wait = 2 << self._failed_trials
        self.limit = min(self.limit + 1, self.ceiling)
        self.epoch += 1
        return True
