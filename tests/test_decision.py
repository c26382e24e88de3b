"""What follows a failed attempt, as a table: the specification of ``_decision.next_step``.

Pure logic on a fake clock (as ``test_budget.py``): a host's health and a call's run, driven into
each situation, and the :class:`Step` that must follow. The README's "What is retried" and "Host
health" say the same rules in words.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiohttp_resilient import (
    AdaptiveLimitPolicy,
    BreakerPolicy,
    BudgetPolicy,
    HealthPolicy,
    HostHealth,
    HostLimiter,
    RetryPolicy,
)
from aiohttp_resilient._retry._classify import Signal
from aiohttp_resilient._retry._decision import Step, Why, next_step
from aiohttp_resilient._retry._run import RetryRun

KEY = ("http", "host", 80)
#: A budget of one retry in its window, none of it immediate past the first.
ONE_RETRY = BudgetPolicy(ratio=0.0, min_per_second=0.1, ttl=10.0)


@dataclass
class Case:
    """A situation and the step that must follow attempt ``number``."""

    name: str
    expected: Step
    number: int = 1
    policy: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    decide: dict[str, Any] = field(default_factory=dict)
    circuit_open: bool = False
    budget_spent: bool = False
    now: float = 1.0


CASES = [
    Case("disconnect: at once, charged", Step(Why.AT_ONCE, 0.0, "", 1.0), decide={"at_once": True}),
    Case(
        "disconnect before the last attempt: backs off, charged",
        Step(Why.BACKOFF, 0.1, "", 1.0),
        number=4,
        decide={"at_once": True},
    ),
    Case("other failure: backoff, charged", Step(Why.BACKOFF, 0.1, "", 1.0)),
    Case(
        "second backoff: the schedule's second wait",
        Step(Why.BACKOFF, 0.2, "", 1.0),
        number=2,
        decide={"_backoffs_before": 1},
    ),
    Case(
        "refused connection: backoff, uncharged",
        Step(Why.BACKOFF, 0.1),
        decide={"unreachable": True},
    ),
    Case("stale race: at once, uncharged", Step(Why.STALE, 0.0), decide={"stale": True}),
    Case(
        "stale race, immediate retry off: backoff, uncharged",
        Step(Why.BACKOFF, 0.1),
        policy={"retry_stale_immediately": False},
        decide={"stale": True},
    ),
    Case(
        "refusal under a cut limit: backoff, never at once",
        Step(Why.BACKOFF, 0.1, "", 1.0),
        decide={"at_once": True, "requeue": True},
    ),
    Case("Retry-After: its wait", Step(Why.RETRY_AFTER, 2.0, "", 1.0), decide={"retry_after": 2.0}),
    Case(
        "Retry-After over the cap: give up",
        Step(
            Why.RETRY_AFTER_MAX,
            detail="the server asked to wait 90s (Retry-After), more than retry_after_max=60s",
        ),
        decide={"retry_after": 90.0},
    ),
    Case(
        "attempts used: give up",
        Step(Why.ATTEMPTS, detail="all 5 attempts the policy allows were used"),
        number=5,
        decide={"at_once": True},
    ),
    Case(
        "one attempt allowed: give up at once",
        Step(Why.ATTEMPTS, detail="all 1 attempt the policy allows were used"),
        policy={"attempts": 1},
    ),
    Case("circuit open: wait for the probe, uncharged", Step(Why.PROBE, 0.0), circuit_open=True),
    Case(
        "circuit open but attempts used: give up",
        Step(Why.ATTEMPTS, detail="all 2 attempts the policy allows were used"),
        number=2,
        policy={"attempts": 2},
        circuit_open=True,
    ),
    Case(
        "backoff past the deadline: give up (the charge comes back)",
        Step(
            Why.DEADLINE,
            detail="waiting 5s (backoff) would pass the deadline of 3s (2s left)",
        ),
        policy={"deadline": 3.0, "backoff_base": 5.0, "backoff_max": 5.0},
    ),
    Case(
        "budget spent: give up", Step(Why.BUDGET), health={"budget": ONE_RETRY}, budget_spent=True
    ),
    Case(
        "budget spent, refusal under an adaptive limit: backoff under it, uncharged",
        Step(Why.BACKOFF, 0.1),
        health={"budget": ONE_RETRY},
        budget_spent=True,
        decide={"congestion": True},
    ),
    Case(
        "budget past its immediate share: a disconnect backs off",
        Step(Why.BACKOFF, 0.1, "", 1.0),
        health={"budget": BudgetPolicy(immediate_share=0.0)},
        decide={"at_once": True},
    ),
]


def build(case: Case) -> tuple[HostHealth, RetryRun]:
    clock = [0.0]
    policy = RetryPolicy(jitter=None, retry_after_jitter=0.0, **case.policy)
    health_policy = HealthPolicy(
        breaker=BreakerPolicy(consecutive_failures=1),
        adaptive_limit=AdaptiveLimitPolicy(),
        adaptive_rate=None,
        **case.health,
    )
    health = HostHealth(health_policy, limiter=HostLimiter(8), clock=lambda: clock[0])
    claim = health.try_claim(KEY, 0.0, True)
    assert claim is not None
    if case.circuit_open:
        claim.end(Signal.REFUSED, 0.0)  # one refused connection opens this breaker
    else:
        claim.served(0.0)
    if case.budget_spent:
        assert health.advise(KEY, 0.5, may_go_at_once=False)[0].name != "REFUSED"
    run = RetryRun(
        policy,
        method="GET",
        url="http://host/",
        started=0.0,
        clock=lambda: case.now,
        sleep=asyncio.sleep,
        on_retry=None,
        on_giveup=None,
    )
    for _ in range(case.decide.get("_backoffs_before", 0)):
        run.backoff_wait()
    return health, run


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_next_step(case: Case) -> None:
    health, run = build(case)
    decide = {"at_once": False, **case.decide}
    decide.pop("_backoffs_before", None)
    step = next_step(health, run, KEY, case.number, case.now, **decide)
    assert step == case.expected
    assert step.gives_up is (case.expected.delay is None)


def test_a_give_up_gives_back_the_charge_it_took() -> None:
    """A retry charged to the budget but not made (its wait would pass the deadline) is
    refunded: the next call's retry finds the budget as it was."""
    case = next(c for c in CASES if c.expected.why is Why.DEADLINE)
    health, run = build(case)
    before = health.budget_figures(KEY)
    next_step(health, run, KEY, 1, case.now, at_once=False)
    assert health.budget_figures(KEY) == before


@pytest.mark.parametrize(("why", "delay"), [(Why.BACKOFF, None), (Why.ATTEMPTS, 0.0)])
def test_a_step_cannot_contradict_itself(why: Why, delay: float | None) -> None:
    """A retry has a wait and a give-up has none: a step that says otherwise is a bug."""
    with pytest.raises(ValueError, match=why.name):
        Step(why, delay)
