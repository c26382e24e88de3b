"""@retry_on_disconnect against a real FaultServer, alone and around a resilient session."""

from __future__ import annotations

import asyncio
import inspect

import aiohttp
import pytest

from _helpers import BACKOFF_ONLY, EventLog, SleepRecorder, wait_until
from aiohttp_resilient import (
    BreakerPolicy,
    BudgetPolicy,
    CircuitOpenError,
    HealthPolicy,
    HostHealth,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
    RetryPolicy,
    resilient_session,
    retry_on_disconnect,
)
from aiohttp_resilient.testing import Fault, FaultServer

NO_WAIT = RetryPolicy(backoff_base=0.0, backoff_max=0.0)


async def test_bare_decorator_retries_disconnects(fault_server: FaultServer) -> None:
    """Used bare, it re-runs the function after a disconnect, then returns its result."""
    fault_server.script("/p", [Fault.fin(), Fault.rst(), Fault.ok(body=b"ok!")])

    @retry_on_disconnect
    async def send(session: aiohttp.ClientSession) -> bytes:
        async with session.post(fault_server.url_for("/p"), data=b"x") as resp:
            return await resp.read()

    async with aiohttp.ClientSession() as session:
        assert await send(session) == b"ok!"
    assert fault_server.count("/p") == 3


async def test_configured_decorator_gives_up(fault_server: FaultServer) -> None:
    """Configured with attempts=2 it gives up after two runs, raised from the last error."""
    fault_server.set_default("/p", Fault.fin())
    sleeps, events = SleepRecorder(), EventLog()

    @retry_on_disconnect(
        policy=RetryPolicy(jitter=None, backoff_base=0.5),
        attempts=3,
        sleep=sleeps,
        on_retry=events,
        health=BACKOFF_ONLY,
    )
    async def send(session: aiohttp.ClientSession) -> None:
        await session.post(fault_server.url_for("/p"), data=b"x")

    async with aiohttp.ClientSession() as session:
        with pytest.raises(RetriesExhaustedError) as info:
            await send(session)
    assert fault_server.count("/p") == 3
    assert sleeps.delays == [0.5, 1.0]
    assert info.value.attempts == 3
    assert info.value.method is None
    assert isinstance(info.value.__cause__, aiohttp.ServerDisconnectedError)
    assert events.events[0].url.endswith("send")


async def test_other_errors_are_not_retried() -> None:
    """Only the disconnect family is retried: a bug in the function is not."""
    calls = 0

    @retry_on_disconnect(policy=NO_WAIT)
    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await broken()
    assert calls == 1


async def test_nesting_does_not_multiply_attempts(fault_server: FaultServer) -> None:
    """A decorated function using a resilient session: 4 attempts, not 4 x 4."""
    fault_server.set_default("/down", Fault.fin())

    @retry_on_disconnect(policy=NO_WAIT, attempts=4)
    async def fetch(session: aiohttp.ClientSession) -> None:
        await session.get(fault_server.url_for("/down"))

    async with resilient_session(policy=NO_WAIT.replace(attempts=4)) as session:
        with pytest.raises(RetriesExhaustedError) as info:
            await fetch(session)
    assert fault_server.count("/down") == 4
    assert info.value.attempts == 4
    assert info.value.method == "GET"  # the middleware's give-up, passed through


async def test_nesting_respects_the_middlewares_no(fault_server: FaultServer) -> None:
    """A POST the middleware judged unsafe to repeat is not repeated by the decorator."""
    fault_server.set_default("/p", Fault.fin())

    @retry_on_disconnect(policy=NO_WAIT)
    async def send(session: aiohttp.ClientSession) -> None:
        await session.post(fault_server.url_for("/p"), data=b"x")

    async with resilient_session(policy=NO_WAIT) as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await send(session)
    assert fault_server.count("/p") == 1


async def test_cancellation_is_not_retried(fault_server: FaultServer) -> None:
    """A cancelled call stays cancelled."""
    fault_server.set_default("/hang", Fault.hang(5.0))

    @retry_on_disconnect
    async def fetch(session: aiohttp.ClientSession) -> None:
        await session.post(fault_server.url_for("/hang"), data=b"x")

    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(fetch(session))
        await wait_until(lambda: fault_server.count("/hang") > 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert fault_server.count("/hang") == 1


async def test_deadline_cuts_a_hanging_call(fault_server: FaultServer) -> None:
    """The deadline bounds the whole call, attempts included."""
    fault_server.set_default("/hang", Fault.hang(5.0))

    @retry_on_disconnect(deadline=0.3)
    async def fetch(session: aiohttp.ClientSession) -> None:
        await session.post(fault_server.url_for("/hang"), data=b"x")

    async with aiohttp.ClientSession() as session:
        with pytest.raises(RetriesExhaustedError, match="deadline"):
            await fetch(session)
    assert fault_server.count("/hang") == 1


async def test_signature_and_metadata_are_kept() -> None:
    """The wrapper keeps the wrapped function's name, docstring and signature."""

    async def original(url: str, *, retries: int = 2) -> int:
        """Fetch it."""
        return retries

    wrapped = retry_on_disconnect(original)
    configured = retry_on_disconnect(attempts=2)(original)
    for function in (wrapped, configured):
        assert function.__name__ == "original"
        assert function.__doc__ == "Fetch it."
        assert inspect.signature(function) == inspect.signature(original)
        assert inspect.iscoroutinefunction(function)
    assert await wrapped("u", retries=5) == 5


def test_mistakes_fail_at_decoration_time() -> None:
    """A sync function or a bad field is refused where the decorator is applied."""

    def sync() -> None: ...

    with pytest.raises(TypeError, match="async def"):
        retry_on_disconnect(sync)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts"):
        retry_on_disconnect(attempts=0)
    with pytest.raises(ValueError, match="policy"):
        retry_on_disconnect(policy=3)  # type: ignore[call-overload]


async def test_callable_object_with_async_call_is_accepted() -> None:
    """An object whose __call__ is async counts as a coroutine function."""

    class Fetcher:
        calls = 0

        async def __call__(self) -> int:
            self.calls += 1
            if self.calls == 1:
                raise aiohttp.ServerDisconnectedError()
            return self.calls

    fetcher = Fetcher()
    assert await retry_on_disconnect(policy=NO_WAIT)(fetcher)() == 2


# Host health: the decorated function is one host ------------------------------------------------


async def test_disconnect_is_retried_at_once_within_the_budget(fault_server: FaultServer) -> None:
    """As in the middleware, a disconnect goes again at once while the budget has room."""
    fault_server.script("/p", [Fault.fin(), Fault.ok()])
    sleeps = SleepRecorder()

    @retry_on_disconnect(sleep=sleeps)
    async def send(session: aiohttp.ClientSession) -> int:
        async with session.post(fault_server.url_for("/p"), data=b"x") as resp:
            return resp.status

    async with aiohttp.ClientSession() as session:
        assert await send(session) == 200
    assert fault_server.count("/p") == 2
    assert sleeps.delays == []


async def test_decorator_budget_refuses(fault_server: FaultServer) -> None:
    """The function's retry budget refuses the retry once spent: the server sees 2 calls."""
    fault_server.set_default("/p", Fault.rst())
    budget = BudgetPolicy(ratio=0.0, min_per_second=0.1)

    @retry_on_disconnect(health=HealthPolicy(budget=budget, breaker=None), sleep=SleepRecorder())
    async def send(session: aiohttp.ClientSession) -> None:
        await session.post(fault_server.url_for("/p"), data=b"x")

    async with aiohttp.ClientSession() as session:
        with pytest.raises(RetryBudgetExhaustedError) as info:
            await send(session)
    assert fault_server.count("/p") == 2
    assert info.value.host.endswith("send")


async def test_decorator_breaker_opens_and_fails_fast(fault_server: FaultServer) -> None:
    """A run of failures opens the function's breaker; later calls send nothing."""
    fault_server.set_default("/p", Fault.rst())
    breaker = BreakerPolicy(consecutive_failures=3, min_failure_span=0.0, patience=0.0)
    health = HostHealth(HealthPolicy(breaker=breaker))

    @retry_on_disconnect(health=health, sleep=SleepRecorder())
    async def send(session: aiohttp.ClientSession) -> None:
        await session.post(fault_server.url_for("/p"), data=b"x")

    async with aiohttp.ClientSession() as session:
        with pytest.raises(CircuitOpenError):
            await send(session)
        with pytest.raises(CircuitOpenError):
            await send(session)
    assert fault_server.count("/p") == 3
