"""HedgeWindow: the per-host delay and extra-load bound, on a fake clock (no network)."""

from __future__ import annotations

import pytest

from aiohttp_resilient import HedgePolicy
from aiohttp_resilient._hedge._delay import HedgeWindow

KEY = ("http", "example.test", 80)


def test_no_adaptive_delay_before_the_warmup() -> None:
    """Fewer answers than ``warmup`` in the window: no hedge (None); then the percentile."""
    window = HedgeWindow(HedgePolicy(warmup=5, min_delay=0.0))
    for i in range(4):
        window.observe(KEY, 0.1, float(i) * 0.01)
    assert window.delay(KEY, 0.05) is None
    window.observe(KEY, 0.1, 0.06)
    delay = window.delay(KEY, 0.07)
    assert delay is not None
    assert 0.08 <= delay <= 0.1  # within the 0.1 s answers' bucket


@pytest.mark.parametrize(
    ("seconds", "policy", "expected"),
    [
        (0.001, HedgePolicy(warmup=1, min_delay=0.005), 0.005),  # the floor
        (3.0, HedgePolicy(warmup=1), None),  # past max_delay: not a tail, no hedge
        (0.5, HedgePolicy(warmup=1, delay=0.02), 0.02),  # a fixed delay ignores the latency
    ],
)
def test_floor_ceiling_and_fixed_delay(
    seconds: float, policy: HedgePolicy, expected: float | None
) -> None:
    """The adaptive delay is floored at min_delay, dropped past max_delay; a fixed one wins."""
    window = HedgeWindow(policy)
    window.observe(KEY, seconds, 0.0)
    assert window.delay(KEY, 0.0) == expected


def test_answers_older_than_the_window_are_forgotten() -> None:
    """After a window without answers the host is warming up again."""
    window = HedgeWindow(HedgePolicy(warmup=3, window=10.0))
    for _ in range(3):
        window.observe(KEY, 0.05, 0.0)
    assert window.delay(KEY, 0.0) is not None
    assert window.delay(KEY, 11.0) is None


def test_hedges_are_bounded_by_max_extra_of_the_calls_in_the_window() -> None:
    """10% of 30 calls: three hedges, then none until the window moves on."""
    window = HedgeWindow(HedgePolicy(max_extra=0.1, window=10.0))
    for _ in range(30):
        window.called(KEY, 1.0)
    assert [window.try_hedge(KEY, 1.0) for _ in range(4)] == [True, True, True, False]
    assert not window.try_hedge(KEY, 12.0)  # the calls expired with their slots


def test_strain_names_why_a_host_gets_no_hedge() -> None:
    """HostHealth.strain(): None for a healthy or unknown host; "rate" once a 429 shaped its
    rate; "breaker" while its breaker is open (host health on a fake clock)."""
    from aiohttp_resilient import BreakerPolicy, HealthPolicy, HostHealth, Signal

    now = [0.0]
    breaker = BreakerPolicy(consecutive_failures=1, min_failure_span=0.0)
    health = HostHealth(HealthPolicy(breaker=breaker), clock=lambda: now[0])
    assert health.strain(KEY, 0.0) is None  # unknown
    claim = health.try_claim(KEY, 0.0, True)
    assert claim is not None
    claim.served(0.01)
    assert health.strain(KEY, 0.01) is None
    claim = health.try_claim(KEY, 0.02, True)
    assert claim is not None
    claim.end(Signal.THROTTLED, 0.03)
    assert health.strain(KEY, 0.03) == "rate"
    other = ("http", "other.test", 80)
    claim = health.try_claim(other, 0.04, True)
    assert claim is not None
    claim.end(Signal.DROPPED, 0.05)
    assert health.strain(other, 0.05) == "breaker"
