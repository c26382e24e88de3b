"""The circuit breaker's rule with a fake clock (pure logic: no network, no sleeps)."""

from __future__ import annotations

import random

import pytest

from aiohttp_resilient import BreakerPolicy, CircuitState
from aiohttp_resilient._health._breaker import Admission, BreakerState

POLICY = BreakerPolicy(break_jitter=0.0)


def fail(state: BreakerState, now: float, n: int = 1, *, step: float = 0.01) -> float:
    for _ in range(n):
        state.record(now, True, probe=False)
        now += step
    return now


def test_opens_on_consecutive_failures_that_last() -> None:
    """5 failures in a row open it once they span 0.1 s since the last success."""
    state = BreakerState(POLICY, 0.0)
    state.succeeded(1.0)
    fail(state, 1.01, 5, step=0.001)  # 5 failures within 5 ms: a burst, not a dead host
    assert state.state is CircuitState.CLOSED
    assert state.record(1.2, True, probe=False) is CircuitState.OPEN
    assert state.open_until == pytest.approx(1.2 + 0.5)


def test_a_success_resets_the_run() -> None:
    state = BreakerState(POLICY, 0.0)
    now = fail(state, 0.0, 4, step=0.1)
    state.succeeded(now)
    fail(state, now + 0.01, 4, step=0.1)
    assert state.state is CircuitState.CLOSED


def test_ratio_rule_needs_a_sustained_ratio() -> None:
    """90% failures over 50+ calls open it only once calls came in half the window."""
    policy = BreakerPolicy(break_jitter=0.0, consecutive_failures=1000)
    burst = BreakerState(policy, 0.0)
    for i in range(100):  # 100 calls in 0.1 s, 95 failed
        burst.record(i * 0.001, i % 20 != 0, probe=False)
    assert burst.state is CircuitState.CLOSED
    sustained = BreakerState(policy, 0.0)
    for i in range(100):  # the same calls over 6 s
        sustained.record(i * 0.06, i % 20 != 0, probe=False)
    assert sustained.state is CircuitState.OPEN


def test_exactly_one_probe_after_the_break() -> None:
    state = BreakerState(POLICY, 0.0)
    fail(state, 0.2, 5, step=0.05)
    assert state.admit(0.5) is Admission.WAIT
    opened = state.open_until
    assert state.admit(opened) is Admission.PROBE
    assert state.state is CircuitState.HALF_OPEN
    assert state.admit(opened + 0.1) is Admission.WAIT  # the probe is out: nobody else goes


def test_probe_outcome_closes_or_reopens_longer() -> None:
    """A failed probe reopens the breaker: at the first break's pace while the outage is
    younger than the patience (the probe that finds a restarted host comes soon), then each
    break 1.25x longer."""
    state = BreakerState(BreakerPolicy(break_jitter=0.0, patience=1.0), 0.0)
    now = fail(state, 0.2, 5, step=0.05)
    first_break = state.open_until - (now - 0.05)
    assert first_break == pytest.approx(0.5)
    breaks = []
    for _ in range(4):
        state.admit(state.open_until)
        reopened_at = state.open_until + 0.01
        assert state.record(reopened_at, True, probe=True) is CircuitState.OPEN
        breaks.append(state.open_until - reopened_at)
    # Opened at 0.4 s; reopened 0.51 s into the outage (young: the same break), then 1.02 s
    # and 1.65 s in (past the patience: 1.25x, then 1.25x again).
    assert breaks == pytest.approx([0.5, 0.5, 0.625, 0.78125])
    state.admit(state.open_until)
    assert state.record(state.open_until + 0.01, False, probe=True) is CircuitState.CLOSED
    assert state.openings == 0  # the next opening starts from the first break again


def test_break_is_never_shorter_than_retry_after_and_capped() -> None:
    state = BreakerState(BreakerPolicy(break_jitter=0.0, max_break=10.0), 0.0)
    fail(state, 0.2, 4, step=0.05)
    state.record(0.5, True, probe=False, retry_after=7.0)
    assert state.open_until == pytest.approx(7.5)
    for _ in range(20):
        state.admit(state.open_until)
        start = state.open_until
        state.record(start, True, probe=True)
    assert state.open_until - start == pytest.approx(10.0)


def test_jitter_only_lengthens_the_break() -> None:
    state = BreakerState(BreakerPolicy(break_jitter=0.1), 0.0, random.Random(1))
    fail(state, 0.2, 5, step=0.05)
    pause = state.open_until - 0.4
    assert 0.5 <= pause <= 0.55


def test_abandoned_probe_lets_the_next_call_probe_at_once() -> None:
    state = BreakerState(POLICY, 0.0)
    fail(state, 0.2, 5, step=0.05)
    state.admit(state.open_until)
    state.probe_abandoned(5.0)
    assert state.admit(5.0) is Admission.PROBE


def test_late_answers_do_not_lengthen_the_break() -> None:
    """Failures of calls sent before it opened are counted, never extend it (Polly)."""
    state = BreakerState(POLICY, 0.0)
    fail(state, 0.2, 5, step=0.05)
    until = state.open_until
    fail(state, 0.5, 10)
    assert state.open_until == until


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("consecutive_failures", 0),
        ("min_failure_span", -1),
        ("failure_ratio", 1.5),
        ("minimum_calls", 0),
        ("window", 0),
        ("break_duration", 0),
        ("break_multiplier", 0.5),
        ("max_break", 0.1),
        ("break_jitter", -0.1),
        ("patience", -1),
        ("patience", "10"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        BreakerPolicy(**{field: value})  # type: ignore[arg-type]


def test_a_host_down_for_days_never_overflows_the_break() -> None:
    """Breaks stop growing at max_break, however many probes fail (2.0 ** 1100 overflows)."""
    state = BreakerState(BreakerPolicy(break_jitter=0.0, break_multiplier=2.0), 0.0)
    now = fail(state, 0.2, 5, step=0.05)
    for _ in range(5000):
        now = state.open_until
        state.admit(now)
        state.record(now, True, probe=True)
    assert state.open_until - now == pytest.approx(30.0)


def test_retry_after_lengthens_the_break_only_up_to_max_break() -> None:
    """A 503 with Retry-After: 86400 does not keep the circuit open for a day."""
    state = BreakerState(BreakerPolicy(break_jitter=0.0, max_break=30.0), 0.0)
    fail(state, 0.2, 4, step=0.05)
    state.record(0.5, True, probe=False, retry_after=86400.0)
    assert state.open_until == pytest.approx(30.5)


def test_the_reason_says_which_rule_opened_it() -> None:
    state = BreakerState(POLICY, 0.0)
    fail(state, 0.2, 5, step=0.05)
    assert state.reason.startswith("5 failures in a row over")
    state.admit(state.open_until)
    state.record(state.open_until, True, probe=True)
    assert state.reason == "the probe failed"
