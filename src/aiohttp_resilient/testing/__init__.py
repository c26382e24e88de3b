"""Test helpers: a loopback HTTP/1.1 server that injects network faults on demand.

Example::

    from aiohttp_resilient.testing import Fault, FaultServer

    async with FaultServer() as server:
        server.script("/", [Fault.fin(), Fault.status(503, retry_after=1), Fault.ok()])
        ...  # point an aiohttp.ClientSession at server.url_for("/")

    # A host's health as a whole: an overloaded server, a rate limit, an outage.
    FaultServer(capacity=16, service_time=0.01, over_capacity=Fault.status(503))
    FaultServer(load=ServerLoad(rate_limit=500, compute_retry_after=True))  # options as one value
    server.outage(3.0, Fault.rst())

    # Large transfers: a file served with ranges and cuts, a batch endpoint applied once per key.
    file = RangedFile(50_000_000)
    server.serve("/big.bin", file)
    file.cut_after(1_000_000, how="rst")
    server.serve("/batches", IdempotentSink())
"""

from ._faults import Fault
from ._load import Outage, ServerLoad
from ._ranges import Endpoint, IdempotentSink, RangedFile, ServedRange
from ._records import RecordedRequest
from ._server import FaultServer
from ._slow import SlowAnswers

__all__ = [
    "Endpoint",
    "Fault",
    "FaultServer",
    "IdempotentSink",
    "Outage",
    "RangedFile",
    "RecordedRequest",
    "ServedRange",
    "ServerLoad",
    "SlowAnswers",
]
