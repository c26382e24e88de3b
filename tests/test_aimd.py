"""The adaptive limit's rule, window by window (pure logic: no network, no clock)."""

from __future__ import annotations

import pytest

from aiohttp_resilient import AdaptiveLimitPolicy
from aiohttp_resilient._health._aimd import LimitState

POLICY = AdaptiveLimitPolicy(window_samples=10)


def feed(
    state: LimitState,
    good: int,
    dropped: int = 0,
    throttled: int = 0,
    *,
    in_flight: int = 16,
    correlated: bool = False,
) -> bool:
    """One window's samples, drops first; returns whether the limit changed."""
    changed = False
    epoch = state.epoch
    kinds = [(True, False)] * dropped + [(False, True)] * throttled + [(False, False)] * good
    for was_dropped, was_throttled in kinds:
        changed |= state.sample(was_dropped, was_throttled, in_flight, epoch, correlated)
    return changed


def test_starts_at_the_cap() -> None:
    """A healthy host never waits for the limit to grow."""
    assert LimitState(POLICY, 16).limit == 16


def test_random_drops_below_half_a_window_do_not_cut() -> None:
    """Resets in 4 of 16 attempts could be random network faults: no cut."""
    state = LimitState(POLICY, 16)
    assert not feed(state, good=12, dropped=4)
    assert state.limit == 16


def test_half_a_window_of_drops_cuts_once() -> None:
    """Drops in half a window cut the limit by ``decrease``, once for the window."""
    state = LimitState(POLICY, 16)
    assert feed(state, good=8, dropped=8)
    assert state.limit == 14  # int(16 * 0.9)
    assert state.cuts == 1


@pytest.mark.parametrize(("throttled", "cut"), [(3, False), (4, True)])
def test_throttles_cut_at_a_fifth_of_the_window(throttled: int, cut: bool) -> None:
    """429 and 503 are the host's own word: a fifth of the window is enough."""
    state = LimitState(POLICY, 16)
    feed(state, good=16 - throttled, throttled=throttled)
    assert (state.limit < 16) is cut


def test_correlated_drops_cut_at_a_fifth_of_the_window() -> None:
    """Drops while the host's retries keep failing are congestion, not random faults."""
    state = LimitState(POLICY, 16)
    assert feed(state, good=12, dropped=4, correlated=True)
    assert state.limit == 14


def test_a_cut_starts_from_what_was_in_use() -> None:
    """With 6 attempts in flight under a limit of 16, the cut starts from 6 (window
    validation), not from a limit the host never saw."""
    state = LimitState(POLICY, 16)
    feed(state, good=8, throttled=8, in_flight=6)
    assert state.limit == 5  # int(6 * 0.9)


def test_attempts_sent_before_a_change_are_not_counted() -> None:
    """A burst of drops from attempts sent under the old limit does not cut again."""
    state = LimitState(POLICY, 16)
    old_epoch = state.epoch
    feed(state, good=8, dropped=8)
    for _ in range(20):
        assert not state.sample(True, False, 16, old_epoch)
    assert state.limit == 14


def test_grows_by_one_only_in_clean_windows_that_use_it() -> None:
    """+1 per window without a drop in which half the limit was in use; not past the cap."""
    state = LimitState(POLICY, 16)
    feed(state, good=8, dropped=8)
    assert state.limit == 14
    assert not feed(state, good=14, in_flight=5)  # not using half of it: no growth
    assert feed(state, good=14, in_flight=7)
    assert state.limit == 15
    assert not feed(state, good=14, dropped=1, in_flight=12)  # one drop: no growth
    feed(state, good=15, in_flight=15)
    feed(state, good=16, in_flight=15)
    assert state.limit == 16


def test_the_cut_comes_as_soon_as_it_is_certain() -> None:
    """A fifth of the window refused with 429/503 cuts at once, not after the rest of the
    window was refused too; three of sixteen are not enough, whatever follows."""
    state = LimitState(POLICY, 16)
    assert feed(state, good=0, throttled=4)  # 4 >= 0.2 x 16: certain
    assert state.limit == 14
    state = LimitState(POLICY, 16)
    assert not feed(state, good=0, throttled=3)
    assert not feed(state, good=13)
    assert state.limit == 16


def test_a_refused_growth_is_taken_back_at_once() -> None:
    """A host at its capacity: the slot a growth added is refused (sent at the limit), so the
    limit goes back at once, not after a window of refusals, and the next probes wait 1, then 3
    clean windows; a refusal below the limit is counted as usual."""
    state = LimitState(POLICY, 16)
    feed(state, good=8, dropped=8)
    assert feed(state, good=14, in_flight=14)
    assert state.limit == 15
    assert not state.sample(False, True, 12, state.epoch)  # below the limit: counted
    assert state.sample(False, True, 15, state.epoch)  # the new slot refused
    assert state.limit == 14
    assert state.cuts == 2
    assert not feed(state, good=14, in_flight=14)  # one window skipped
    assert feed(state, good=14, in_flight=14)
    assert state.sample(True, False, 15, state.epoch)  # a drop takes it back too
    assert state.limit == 14
    for _ in range(3):
        assert not feed(state, good=14, in_flight=14)
    assert feed(state, good=14, in_flight=14)
    feed(state, good=15, in_flight=15)  # the probe held a whole window: no more skipping
    assert state.limit == 16


def cut_to_15() -> LimitState:
    state = LimitState(POLICY, 20)
    feed(state, good=10, throttled=10, in_flight=17)
    assert state.limit == 15  # int(17 x 0.9)
    return state


def test_refusals_that_stop_one_slot_lower_keep_it_lower() -> None:
    """A cut limit one slot over a full host's capacity: refusals too few to cut, window after
    window. One slot less is tried, and kept since they stop."""
    state = cut_to_15()
    assert not feed(state, good=13, dropped=2, in_flight=15)  # 2 of 15: too few to try
    assert feed(state, good=11, dropped=4, in_flight=15)  # 4 of 15: try one less
    assert state.limit == 14
    assert not feed(state, good=14, in_flight=14)  # none: kept
    assert state.limit == 14


def test_random_refusals_undo_the_trial_and_delay_the_next() -> None:
    """Refusals that do not fall one slot lower are random faults: the slot comes back, and
    the next trial waits 4 windows (then 8)."""
    state = cut_to_15()
    assert feed(state, good=11, dropped=4, in_flight=15)
    assert state.limit == 14
    assert feed(state, good=10, dropped=4, in_flight=14)  # as many: undone
    assert state.limit == 15
    for _ in range(3):
        assert not feed(state, good=11, dropped=4, in_flight=15)
    assert feed(state, good=11, dropped=4, in_flight=15)  # the 4th window: a new trial
    assert state.limit == 14
    assert feed(state, good=11, dropped=3, in_flight=14)  # 3 > 4/4: undone again
    assert state.limit == 15
    for _ in range(7):
        assert not feed(state, good=11, dropped=4, in_flight=15)
    assert feed(state, good=11, dropped=4, in_flight=15)


def test_a_limit_at_the_cap_is_never_tried_lower() -> None:
    """Refusals too few to cut, at a limit never cut for congestion, are left alone."""
    state = LimitState(POLICY, 16)
    for _ in range(10):
        assert not feed(state, good=12, dropped=4)
    assert state.limit == 16


def test_never_below_the_floor() -> None:
    state = LimitState(AdaptiveLimitPolicy(window_samples=10, min_limit=3), 4)
    for _ in range(5):
        feed(state, good=0, dropped=10, in_flight=4)
    assert state.limit == 3


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("min_limit", 0),
        ("window_samples", 0),
        ("drop_ratio", 1.5),
        ("throttle_ratio", 0),
        ("decrease", 1.0),
        ("decrease", True),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        AdaptiveLimitPolicy(**{field: value})  # type: ignore[arg-type]
