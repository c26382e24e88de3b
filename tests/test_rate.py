"""The adaptive send rate's rule (pure logic, a fake clock: no network, no sleeps)."""

from __future__ import annotations

import pytest

from aiohttp_resilient import AdaptiveRatePolicy
from aiohttp_resilient._health._rate import RateState

POLICY = AdaptiveRatePolicy()


def answered(state: RateState, per_second: float, start: float, seconds: float) -> float:
    """Successful answers at ``per_second`` from ``start`` for ``seconds``; returns the end."""
    step = 1.0 / per_second
    now = start
    while now < start + seconds:
        state.success(now)
        now += step
    return now


def test_off_until_the_host_throttles() -> None:
    state = RateState(POLICY, 0.0)
    answered(state, 400, 0.0, 2.0)
    assert not state.enabled
    assert state.reserve(2.0) == (0.0, 0.0)


def test_first_throttle_starts_at_beta_times_the_measured_rate() -> None:
    """400 answers/s measured, then a 429: 0.7 x 400."""
    state = RateState(POLICY, 0.0)
    end = answered(state, 400, 0.0, 2.0)
    assert state.throttle(end)
    assert state.rate == pytest.approx(280, rel=0.05)


def test_throttles_within_the_cooldown_cut_once() -> None:
    state = RateState(POLICY, 0.0)
    end = answered(state, 400, 0.0, 2.0)
    state.throttle(end)
    rate = state.rate
    assert not state.throttle(end + 0.1)
    assert state.current(end + 0.1) > rate  # not cut again: still growing from the first cut
    allowed = state.current(end + 0.6)
    assert state.throttle(end + 0.6)
    assert state.rate == pytest.approx(0.7 * allowed)  # from the rate allowed, not measured


def test_rate_grows_back_along_the_cubic_curve() -> None:
    """Back to the rate it was cut from after K seconds, K = cbrt(w_max (1 - beta) / C)."""
    state = RateState(POLICY, 0.0)
    end = answered(state, 400, 0.0, 2.0)
    state.throttle(end)
    w_max = state.rate / 0.7
    k = (w_max * 0.3 / 0.4) ** (1 / 3)
    answered(state, 400, end, k + 0.01)
    assert state.current(end + k) == pytest.approx(w_max, rel=0.01)
    assert state.current(end + 2 * k) > w_max  # and on past it, probing


def test_a_quiet_spell_does_not_cut_the_rate() -> None:
    """A client that slept on Retry-After measures few answers: that bounds growth, never
    cuts what it was allowed."""
    state = RateState(POLICY, 0.0)
    end = answered(state, 400, 0.0, 2.0)
    state.throttle(end)
    rate = state.rate
    answered(state, 2, end + 1.0, 3.0)  # two answers a second for three seconds
    assert state.current(end + 4.0) >= rate


@pytest.mark.parametrize("pace", [1.0, 10.0], ids=["1/s", "10/s"])
def test_rate_after_sparse_sending_and_a_throttled_burst(pace: float) -> None:
    """A host that allows 20 requests/s (and a burst of 2), sent to at ``pace`` for 10 s, then
    a burst it answers with two 200s and a 429: the cut starts from what the host accepted in
    the burst, and whatever the pace before, the rate is back past 15/s 5 s and 10 s later
    (botocore's rules left it near 0.5/s for minutes after 1/s)."""
    state = RateState(POLICY, 0.0)
    now = answered(state, pace, 0.0, 10.0)
    state.success(now)
    state.success(now + 0.001)
    assert state.throttle(now + 0.002)
    assert 10.0 <= state.rate <= 20.0  # 0.7 x about 20, never the floor
    assert state.current(now + 5.0) >= 15.0
    assert state.current(now + 10.0) >= 15.0
    # No answers meanwhile: the curve depends on time only.
    assert state.current(now + 10.0) > state.current(now + 5.0)


def test_a_throttle_never_cuts_below_the_floor() -> None:
    """A throttle with nothing accepted before it (a first request answered 429) cuts to the
    ``min_rate``, and the rate grows from there."""
    state = RateState(POLICY, 0.0)
    assert state.throttle(0.0)
    assert state.rate == POLICY.min_rate
    assert state.current(5.0) >= 15.0


def test_bucket_paces_sends() -> None:
    """At 100/s, the sends after the burst allowance wait 10 ms apart."""
    state = RateState(AdaptiveRatePolicy(burst=0.0), 0.0)
    answered(state, 143, 0.0, 2.0)
    state.throttle(2.0)  # about 100/s
    waits = [state.reserve(2.0)[0] for _ in range(4)]
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(1 / state.rate)
    assert waits[3] == pytest.approx(3 / state.rate)


@pytest.mark.parametrize(
    ("field", "value"),
    [("beta", 1.0), ("beta", 0), ("scale", 0), ("min_rate", -1), ("smoothing", 1.5), ("burst", -1)],
)
def test_bad_values_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        AdaptiveRatePolicy(**{field: value})  # type: ignore[arg-type]


def test_an_unused_send_slot_is_given_back() -> None:
    """A caller that gives up waiting does not push every later caller further out."""
    state = RateState(AdaptiveRatePolicy(burst=0.0), 0.0)
    answered(state, 143, 0.0, 2.0)
    state.throttle(2.0)
    state.reserve(2.0)
    before = state.wait(2.0)
    _, token = state.reserve(2.0)
    state.unreserve(token)
    assert state.wait(2.0) == pytest.approx(before)
