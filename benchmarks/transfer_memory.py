"""Peak memory of a 1 GiB download and a 1 GiB upload stream, against raw aiohttp in the same run.

Each case runs in a fresh client process pinned to CPU 1 against a fresh ``FaultServer`` process
pinned to CPU 0, on 127.0.0.1. The client reports its peak RSS (``VmHWM``, reset once the imports
and the session are in place, so the number is the transfer's own) and its resident size before
the transfer, so that the difference is what the transfer cost.

Cases:

* ``download``: :func:`download` through ``resilient_session()``, the body cut ``--cuts`` times
  (each resume a ranged request), SHA-256 checked;
* ``raw-stream``: raw aiohttp, ``iter_chunked(256 KiB)`` into a file, no cuts: the lower bound;
* ``raw-read``: raw aiohttp, ``await resp.read()`` then one write: what a naive client holds;
* ``upload``: :func:`upload_batches` of 1 KiB items from a generator, ``max_bytes`` 2 MB against a
  server limit of 1 MB (413), so the first batches split;
* ``raw-upload``: a hand loop POSTing batches of the same size with a plain ``ClientSession``.

Usage::

    python benchmarks/transfer_memory.py [--size-mib 1024] [--cuts 3] [--cases download,upload]

Every case is bounded by ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SERVER_CPU = 0
CLIENT_CPU = 1
MiB = 1024 * 1024
ITEM_PAD = 1000  # bytes of padding per uploaded item: about 1 KiB of JSON each
UPLOAD_LIMIT = 1_000_000
CASES = ("download", "raw-stream", "raw-read", "upload", "raw-upload")


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # Linux >= 4.0: VmHWM := current RSS


# -- server process -------------------------------------------------------------------------------


async def _serve(size: int, cuts: int) -> None:
    from aiohttp_resilient.testing import FaultServer, RangedFile

    file = RangedFile(size, seed=42)
    if cuts:
        file.cut_after(*[size // (cuts + 1)] * cuts, how="rst")
    server = FaultServer(record=False, max_body=UPLOAD_LIMIT)
    server.serve("/file", file)
    async with server:
        print(json.dumps({"url": str(server.url), "sha256": file.sha256()}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed


# -- client process -------------------------------------------------------------------------------


def _items(total: int) -> Iterator[dict[str, Any]]:
    for i in range(total // (ITEM_PAD + 24)):
        yield {"id": i, "pad": "x" * ITEM_PAD}


async def _client(case: str, url: str, sha256: str, size: int, folder: Path) -> dict[str, Any]:
    import aiohttp

    from aiohttp_resilient import download, resilient_session, upload_batches

    target = folder / "file.bin"
    resilient = case in ("download", "upload")
    session = resilient_session() if resilient else aiohttp.ClientSession()
    async with session:
        before = _status_mib("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        detail: dict[str, Any] = {}
        if case == "download":
            result = await download(session, url + "/file", target, sha256=sha256)
            detail = {"cuts": result.cuts, "resumes": result.resumes}
        elif case == "raw-stream":
            async with session.get(url + "/file") as resp:
                with target.open("wb") as f:
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        f.write(chunk)
        elif case == "raw-read":
            async with session.get(url + "/file") as resp:
                body = await resp.read()
            target.write_bytes(body)
            del body
        elif case == "upload":
            report = await upload_batches(
                session, url + "/upload", _items(size), max_items=100_000, max_bytes=2_000_000
            )
            detail = {
                "items": report.items_sent,
                "batches": report.batches_sent,
                "splits": report.splits,
                "ok": report.ok,
            }
        else:  # raw-upload: the same batch size as upload's after its splits
            batch: list[bytes] = []
            for item in _items(size):
                batch.append(json.dumps(item, separators=(",", ":")).encode())
                if len(batch) == UPLOAD_LIMIT // 2 // (ITEM_PAD + 24):
                    async with session.post(url + "/upload", data=b"[" + b",".join(batch) + b"]"):
                        pass
                    batch = []
        seconds = time.perf_counter() - started
    return {
        "case": case,
        "seconds": round(seconds, 2),
        "rss_before_mib": round(before, 1),
        "peak_rss_mib": round(_status_mib("VmHWM"), 1),
        **detail,
    }


def _run_case(case: str, size: int, cuts: int, timeout: float) -> dict[str, Any]:
    me = [sys.executable, __file__]
    server = subprocess.Popen(
        [*me, "serve", "--size", str(size), "--cuts", str(cuts if case == "download" else 0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        info = json.loads(server.stdout.readline())
        with tempfile.TemporaryDirectory() as folder:
            out = subprocess.run(
                [*me, "client", case, info["url"], info["sha256"], str(size), folder],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        if out.returncode:
            raise SystemExit(f"{case} failed:\n{out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="role")
    serve = sub.add_parser("serve")
    serve.add_argument("--size", type=int, required=True)
    serve.add_argument("--cuts", type=int, default=0)
    client = sub.add_parser("client")
    for name in ("case", "url", "sha256", "size", "folder"):
        client.add_argument(name)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--cuts", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.role == "serve":
        _pin(SERVER_CPU)
        asyncio.run(_serve(args.size, args.cuts))
    elif args.role == "client":
        _pin(CLIENT_CPU)
        result = asyncio.run(
            _client(args.case, args.url, args.sha256, int(args.size), Path(args.folder))
        )
        print(json.dumps(result), flush=True)
    else:
        size = args.size_mib * MiB
        print(f"size {args.size_mib} MiB, server on CPU {SERVER_CPU}, clients on CPU {CLIENT_CPU}")
        print("| case | seconds | RSS before (MiB) | peak RSS (MiB) | details |")
        print("|---|---:|---:|---:|---|")
        for case in args.cases.split(","):
            r = _run_case(case, size, args.cuts, args.timeout)
            rest = {k: v for k, v in r.items() if k not in ("case", "seconds")}
            details = ", ".join(
                f"{k} {v}" for k, v in rest.items() if k not in ("rss_before_mib", "peak_rss_mib")
            )
            print(
                f"| {case} | {r['seconds']} | {r['rss_before_mib']} | {r['peak_rss_mib']} "
                f"| {details} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
