"""The per-host circuit breaker: stop sending to a host that is down, probe it, resume."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Final

from .._retry._policy import _check_int, _check_number
from ._window import rotate

__all__ = ["Admission", "BreakerPolicy", "BreakerState", "CircuitState"]

#: The failure-ratio window is kept as this many buckets (Polly's rolling window: 10).
BUCKETS: Final = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a host counts as down, and how it is probed.

    Failures are resets, disconnects, refused connections, timeouts and 5xx answers; 4xx
    answers, TLS verification errors, the client's own pool waits and cancellations count for
    nothing. The breaker opens on ``consecutive_failures`` failures in a row that span at least
    ``min_failure_span`` seconds, or when ``failure_ratio`` of at least ``minimum_calls`` calls
    in the last ``window`` seconds failed. While open, nothing is sent to the host; after a
    break, exactly one call goes as the probe, and its outcome closes the breaker or opens it
    again for a longer break.

    Usage::

        HealthPolicy(breaker=BreakerPolicy(consecutive_failures=10, patience=2.0))

    Attributes:
        consecutive_failures: Failures in a row that open it (Envoy's ``consecutive_5xx``,
            pybreaker, aiobreaker and purgatory: 5). The rule that serves a quiet client.
        min_failure_span: Those failures must have lasted this many seconds since the host's
            last success. A loaded host rejects bursts while it still serves others: that is the
            adaptive limit's to handle; a host that failed everything for 0.1 s is down. A
            refused connection needs no span: nothing listens (a loaded host resets or answers
            503; it does not refuse), and waiting it out would let a call spend every attempt
            of a restart before the breaker holds it.
        failure_ratio: The share of failed calls in the window that opens it, once calls came
            in at least half the window (a sustained ratio, not a burst); ``None`` for no ratio
            rule. High (0.9): a host that still serves one call in ten is slowed by the budget
            and the adaptive limit, not cut off.
        minimum_calls: Calls the window must hold before the ratio counts (Polly: 100,
            resilience4j: 100; lower, for a crawler's few calls per host).
        window: Seconds of the ratio's window (Polly: 30; 10 here, as the retry budget).
        break_duration: The first break, in seconds. Short: a restarting process is back in
            one or two seconds (Polly 5 s and Envoy 30 s serve fleets with spare hosts; a client
            of one host has none).
        break_multiplier: Once the outage is older than ``patience``, each consecutive
            opening's break is this much longer. Gently (1.25): a probe is one request, and the
            first success after an outage comes at most about a quarter of the outage late.
        max_break: No break is longer (Envoy's ``max_ejection_time``: 300 s).
        break_jitter: Breaks are lengthened by up to this share, so clients told the same do
            not probe together. A break is never shorter than a ``Retry-After`` the host sent
            with the failure that opened it, up to ``max_break``.
        patience: Seconds, from the breaker's opening (the outage's start, not the call's),
            during which calls wait for the probe, within their deadline; after that they
            fail at once with :class:`CircuitOpenError` until a probe finds the host back (the
            call whose turn it is to probe still goes). While the outage is younger than this,
            probes come every ``break_duration`` (one request each); after, each break is
            ``break_multiplier`` times longer. 3 s serves the calls of a restart of up to about
            2.5 s (probes at 0.5, 1.0, ... 2.5 s) and bounds what a dead host costs a crawl: its
            calls fail within about 2.8 s of the outage's start, then at once
            (``benchmarks/restart_patience.py``). ``0`` never waits, ``None`` waits as long as
            the deadline (or the session's timeout) allows.
    """

    consecutive_failures: int = 5
    min_failure_span: float = 0.1
    failure_ratio: float | None = 0.9
    minimum_calls: int = 50
    window: float = 10.0
    break_duration: float = 0.5
    break_multiplier: float = 1.25
    max_break: float = 30.0
    break_jitter: float = 0.1
    patience: float | None = 3.0

    def __post_init__(self) -> None:
        _check_int("consecutive_failures", self.consecutive_failures, minimum=1)
        _check_number("min_failure_span", self.min_failure_span, minimum=0.0)
        if self.failure_ratio is not None:
            _check_number(
                "failure_ratio", self.failure_ratio, minimum=0.0, inclusive=False, maximum=1.0
            )
        _check_int("minimum_calls", self.minimum_calls, minimum=1)
        _check_number("window", self.window, minimum=0.0, inclusive=False)
        _check_number("break_duration", self.break_duration, minimum=0.0, inclusive=False)
        _check_number("break_multiplier", self.break_multiplier, minimum=1.0)
        _check_number("max_break", self.max_break, minimum=self.break_duration)
        _check_number("break_jitter", self.break_jitter, minimum=0.0)
        if self.patience is not None:
            _check_number("patience", self.patience, minimum=0.0)


class CircuitState(enum.Enum):
    """A host's breaker state."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Admission(enum.Enum):
    """What the breaker says to a call that wants to send."""

    GO = "go"
    PROBE = "probe"  # go, as the one probe of a half-open breaker
    WAIT = "wait"  # open, or a probe is out: wait for its outcome or fail


class BreakerState:
    """One host's breaker: a handful of numbers, changed only by :meth:`admit` and
    :meth:`record`, so a shared store can run each as one atomic script."""

    __slots__ = (
        "_bucket",
        "_bucket_end",
        "_calls",
        "_failures",
        "_policy",
        "_rng",
        "consecutive",
        "last_success",
        "open_until",
        "opened_at",
        "openings",
        "reason",
        "state",
    )

    def __init__(self, policy: BreakerPolicy, now: float, rng: random.Random | None = None) -> None:
        self._policy = policy
        self._rng = rng or random.Random()
        self.state = CircuitState.CLOSED
        self.consecutive = 0
        #: When the host last answered (or when it was first seen).
        self.last_success = now
        self.open_until = 0.0
        #: When the outage began: the breaker's last move from closed to open (failed probes
        #: reopen it without moving this). Calls' patience counts from here.
        self.opened_at = 0.0
        #: Consecutive openings: each break is longer (reset when a probe succeeds).
        self.openings = 0
        #: Why it last opened, in words (for logs, hooks and CircuitOpenError).
        self.reason = ""
        self._calls = [0] * BUCKETS
        self._failures = [0] * BUCKETS
        self._bucket = 0
        self._bucket_end = now + policy.window / BUCKETS

    def admit(self, now: float) -> Admission:
        """May a call go now?"""
        state = self.state
        if state is CircuitState.CLOSED:
            return Admission.GO
        if state is CircuitState.OPEN and now >= self.open_until:
            self.state = CircuitState.HALF_OPEN
            return Admission.PROBE
        return Admission.WAIT

    def succeeded(self, now: float, count: int = 1) -> None:
        """:meth:`record` of ``count`` successes that were not the probe, the last at ``now``."""
        if now >= self._bucket_end:
            self._advance(now)
        self._calls[self._bucket] += count
        self.consecutive = 0
        self.last_success = now

    def record(
        self,
        now: float,
        failed: bool,
        *,
        probe: bool,
        retry_after: float | None = None,
        refused: bool = False,
    ) -> CircuitState | None:
        """Count a call's outcome; returns the new state if it changed. ``refused``: the
        failure was a refused connection (nothing listens), which needs no failure span."""
        if now >= self._bucket_end:
            self._advance(now)
        if probe:
            if failed:
                return self._open(now, retry_after, "the probe failed")
            self._close(now)
            return CircuitState.CLOSED
        index = self._bucket
        self._calls[index] += 1
        if not failed:
            self.consecutive = 0
            self.last_success = now
            return None
        self._failures[index] += 1
        self.consecutive += 1
        if self.state is not CircuitState.CLOSED:
            return None  # answers to calls sent before the break never lengthen it (Polly)
        policy = self._policy
        if self.consecutive >= policy.consecutive_failures and (
            refused or now - self.last_success >= policy.min_failure_span
        ):
            span = now - self.last_success
            return self._open(
                now, retry_after, f"{self.consecutive} failures in a row over {span:.3g}s"
            )
        if self._ratio_exceeded():
            calls = sum(self._calls)
            share = sum(self._failures) / calls
            return self._open(now, retry_after, f"{share:.0%} of {calls} calls failed")
        return None

    def probe_abandoned(self, now: float) -> None:
        """The probe ended without an outcome (cancelled, or a local error): let the next
        call probe at once."""
        if self.state is CircuitState.HALF_OPEN:
            self.state = CircuitState.OPEN
            self.open_until = now

    def _ratio_exceeded(self) -> bool:
        ratio = self._policy.failure_ratio
        if ratio is None:
            return False
        calls = sum(self._calls)
        if calls < self._policy.minimum_calls or sum(self._failures) < ratio * calls:
            return False
        # Sustained: calls in at least half the window's buckets. A burst of fast refusals
        # from a host that is also serving (overload) fills a bucket in milliseconds.
        return sum(1 for n in self._calls if n) >= BUCKETS // 2

    def _open(self, now: float, retry_after: float | None, reason: str) -> CircuitState:
        policy = self._policy
        if self.state is CircuitState.CLOSED:
            self.opened_at = now
        base = policy.break_duration * policy.break_multiplier**self.openings
        if base >= policy.max_break:
            base = policy.max_break  # and the openings stop counting: no float overflow
        elif policy.patience is None or now - self.opened_at >= policy.patience:
            self.openings += 1
        # else: while calls wait out a young outage, the probes keep the first break's pace
        # (one request each): the one that finds a restarted host back comes soon after it.
        pause = base * (1.0 + policy.break_jitter * self._rng.random())
        if retry_after is not None and retry_after > pause:
            # Never probe before the host said it would be back, within max_break.
            pause = min(retry_after, max(policy.max_break, pause))
        self.state = CircuitState.OPEN
        self.open_until = now + pause
        self.reason = reason
        return CircuitState.OPEN

    def _close(self, now: float) -> None:
        self.state = CircuitState.CLOSED
        self.consecutive = 0
        self.openings = 0
        self.last_success = now
        self._calls = [0] * BUCKETS
        self._failures = [0] * BUCKETS

    def _advance(self, now: float) -> None:
        self._bucket, self._bucket_end = rotate(
            (self._calls, self._failures),
            self._bucket,
            self._bucket_end,
            self._policy.window / BUCKETS,
            now,
        )
