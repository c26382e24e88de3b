"""Large transfers: a download that survives cuts and a changed file, an upload that survives a
body limit.

Starts its own FaultServer on 127.0.0.1 with a 20 MB file whose responses are cut three times
(and which changes on the server after the second cut), and a batch endpoint with a 1 MB body
limit that applies each Idempotency-Key once and drops some connections after the body arrived.
Run it: ``python examples/transfers.py``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp_resilient import download, resilient_session, upload_batches
from aiohttp_resilient.testing import Fault, FaultServer, IdempotentSink, RangedFile


def rows(n: int) -> list[dict[str, object]]:
    return [{"id": i, "text": "lorem ipsum " * 40} for i in range(n)]


async def main() -> int:
    """Download and upload; exit status 0 when both arrived whole and exactly once."""
    file = RangedFile(20_000_000, seed=7)
    file.cut_after(4_000_000, 6_000_000, 3_000_000)
    file.change_after_cut(2)  # the file is replaced on the server mid-download
    sink = IdempotentSink()
    async with FaultServer(max_body=1_000_000) as server, resilient_session() as session:
        server.serve("/data.bin", file)
        server.serve("/rows", sink)
        server.random("/rows", {Fault.fin(): 0.3}, seed=3)

        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / "data.bin"
            result = await download(
                session, server.url_for("/data.bin"), target, sha256=file.sha256(version=1)
            )
        print(
            f"download: {result.size} bytes, sha256 ok; {result.cuts} cuts, "
            f"{result.resumes} resumed with Range + If-Range, {result.restarts} restart "
            "(the file changed)"
        )

        report = await upload_batches(
            session, server.url_for("/rows"), rows(5000), max_items=5000, max_bytes=4_000_000
        )
        print(
            f"upload: {report.items_sent} items in {report.batches_sent} batches, "
            f"{report.splits} splits after 413, {sink.replays} batches sent again and not "
            "applied twice"
        )
    once = sorted(sink.applied) == list(range(5000)) and set(sink.applied.values()) == {1}
    print(f"server applied every item exactly once: {once}")
    return 0 if once and report.ok and result.restarts == 1 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
