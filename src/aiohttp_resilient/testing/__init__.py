"""Test helpers: a loopback HTTP/1.1 server that injects network faults on demand.

Example::

    from aiohttp_resilient.testing import Fault, FaultServer

    async with FaultServer() as server:
        server.script("/", [Fault.fin(), Fault.status(503, retry_after=1), Fault.ok()])
        ...  # point an aiohttp.ClientSession at server.url_for("/")
"""

from ._faults import Fault
from ._server import FaultServer, RecordedRequest

__all__ = ["Fault", "FaultServer", "RecordedRequest"]
