"""The retry budget's rule with a fake clock (pure logic)."""

from __future__ import annotations

import pytest

from aiohttp_resilient import BudgetPolicy
from aiohttp_resilient._health._budget import BudgetState, Tier


def test_floor_lets_a_quiet_client_retry() -> None:
    """No traffic: min_per_second x ttl retries (10/s x 10 s = 100), the first half at once."""
    state = BudgetState(BudgetPolicy(), 0.0)
    tiers = [state.withdraw(1.0) for _ in range(101)]
    assert tiers[:50] == [Tier.IMMEDIATE] * 50
    assert tiers[50:100] == [Tier.BACKOFF] * 50
    assert tiers[100] is Tier.REFUSED


def test_requests_add_a_share() -> None:
    """1000 requests add 0.2 x 1000 = 200 retries to the floor."""
    state = BudgetState(BudgetPolicy(), 0.0)
    for _ in range(1000):
        state.deposit(0.5)
    assert state.allowance(1.0) == pytest.approx(300)


def test_a_successful_retry_gives_its_charge_back() -> None:
    state = BudgetState(BudgetPolicy(ratio=0.0, min_per_second=0.1), 0.0)
    assert state.withdraw(1.0) is not Tier.REFUSED
    assert state.withdraw(1.0) is Tier.REFUSED
    state.refund(1.0, 1.0)
    assert state.withdraw(1.0) is not Tier.REFUSED


def test_charges_expire_with_the_window() -> None:
    """Retries count for ttl seconds, one slot (ttl / 10) at a time."""
    state = BudgetState(BudgetPolicy(ratio=0.0, min_per_second=0.1, ttl=10.0), 0.0)
    state.withdraw(0.5)
    assert state.withdraw(5.0) is Tier.REFUSED
    assert state.withdraw(11.0) is not Tier.REFUSED


def test_past_immediate_marks_failing_retries() -> None:
    state = BudgetState(BudgetPolicy(ratio=0.0, min_per_second=1.0), 0.0)  # 10 retries
    for _ in range(4):
        state.withdraw(1.0)
    assert not state.past_immediate(1.0)
    state.withdraw(1.0)
    assert state.past_immediate(1.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("ratio", -0.1), ("min_per_second", -1), ("ttl", 0.5), ("ttl", 61), ("immediate_share", 2)],
)
def test_bad_values_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        BudgetPolicy(**{field: value})  # type: ignore[arg-type]


def test_a_budget_that_allows_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="ratio and min_per_second"):
        BudgetPolicy(ratio=0, min_per_second=0)


def test_a_refund_goes_to_the_slot_of_its_charge() -> None:
    """A charge that expired before its retry succeeded is not given back twice."""
    state = BudgetState(BudgetPolicy(ratio=0.0, min_per_second=0.1, ttl=10.0), 0.0)
    state.withdraw(0.5)
    state.refund(12.0, 0.5)  # the charge expired at 10.5
    assert state.spent(12.0) == 0.0
    assert state.withdraw(12.0) is not Tier.REFUSED
    assert state.withdraw(12.0) is Tier.REFUSED  # the late refund made no room


def test_a_refund_in_a_later_slot_frees_the_charge() -> None:
    state = BudgetState(BudgetPolicy(ratio=0.0, min_per_second=0.1, ttl=10.0), 0.0)
    state.withdraw(0.5)
    state.refund(3.5, 0.5)
    assert state.spent(3.5) == 0.0
    assert state.withdraw(9.0) is not Tier.REFUSED
    # At 11.0 the first charge and its refund have expired together; the charge made at 9.0
    # still counts (a refund booked in its own slot, 3.5, would have cancelled it by now).
    assert state.spent(11.0) == 1.0
