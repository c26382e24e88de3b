"""pytest plugin (entry point ``pytest11``): the ``fault_server`` fixture.

pytest loads this module for everyone who has aiohttp-resilient installed, so it imports nothing
that could fail at startup: pytest-asyncio is optional and the server is imported only when the
fixture runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ._server import FaultServer

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["fault_server"]

_NEEDS_ASYNCIO = (
    "the fault_server fixture (from aiohttp-resilient) is async and needs pytest-asyncio: "
    "pip install pytest-asyncio"
)

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def fault_server() -> AsyncIterator[FaultServer]:
        """A started :class:`~aiohttp_resilient.testing.FaultServer` with default settings.

        Example::

            async def test_retry(fault_server):
                fault_server.script("/", [Fault.fin(), Fault.ok()])
        """
        from ._server import FaultServer

        async with FaultServer() as server:
            yield server

else:  # pragma: no cover - exercised only without pytest-asyncio

    @pytest.fixture
    def fault_server() -> FaultServer:
        """Fails with the reason: the real fixture needs pytest-asyncio."""
        pytest.fail(_NEEDS_ASYNCIO, pytrace=False)
