"""A mixed crawl, side by side: ``aiohttp-resilient fetch`` against aria2c, curl and wget.

2,000 URLs over 8 loopback hosts (127.0.0.1-8, one port), 250 each, interleaved by host:

- ``127.0.0.1``-``.3``: healthy;
- ``127.0.0.4``: flaky, 3% of requests closed (FIN) and 2% reset (RST) before any answer;
- ``127.0.0.5``: rate-limited to 20 requests/s, ``429`` with ``Retry-After`` beyond that;
- ``127.0.0.6``: restarts 1 s into each run: it stops listening for 2 s (connections refused);
- ``127.0.0.7``: dead (nothing listens: connections refused);
- ``127.0.0.8``: slow, 0.2 s per answer and at most 4 at once (``503`` + ``Retry-After: 1``
  beyond that).

The servers (the project's ``FaultServer``) run in their own process pinned with
``taskset -c 0``, each tool pinned with ``taskset -c 1``, one tool at a time, each with a hard
timeout. Each body is 4 KiB derived from its URL and checked byte for byte; the requests, the
``429``s and the ``503``s are counted by the servers. Amplification: requests the reachable
hosts received per reachable URL (1,750); the dead host's refused connections are not counted
(nothing accepts them).

Usage::

    python benchmarks/mixed_crawl.py                      # every tool found, one round
    python benchmarks/mixed_crawl.py --tools fetch,aria2c --rounds 3 --timeout 300

Needs ``aria2c``, ``curl`` and ``wget`` on PATH for those columns (``apt-get install aria2 curl
wget``); a missing tool is skipped and said so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOSTS = 8
PER_HOST = 250
BODY = 4096
KINDS = ("healthy", "healthy", "healthy", "flaky", "rate-limited", "restarting", "dead", "slow")
DEAD = KINDS.index("dead")
RESTART_AT = 1.0
RESTART_FOR = 2.0


def body_of(path: str) -> bytes:
    """The 4 KiB body of ``path``: a SHA-256 chain, so that any mix-up shows."""
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (BODY // len(seed) + 1))[:BODY]


def path_of(host: int, i: int) -> str:
    # Unique file names across hosts: aria2c, curl and wget name files by the last segment.
    return f"/h{host + 1}-{i:04d}.bin"


def url_list(port: int) -> list[str]:
    hosts = range(HOSTS)
    return [f"http://127.0.0.{h + 1}:{port}{path_of(h, i)}" for i in range(PER_HOST) for h in hosts]


# -- the server process -----------------------------------------------------------------------


async def serve(port: int) -> None:
    """Run the hosts until stdin closes; ``round`` resets the counts and schedules the restart,
    ``counts FILE`` writes them."""
    from aiohttp_resilient.testing import Fault, FaultServer

    servers: dict[int, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        for h, kind in enumerate(KINDS):
            if kind == "dead":
                continue
            options: dict[str, Any] = {"host": f"127.0.0.{h + 1}", "port": port, "record": False}
            if kind == "rate-limited":
                options.update(rate_limit=20.0, compute_retry_after=True)
            if kind == "slow":
                options.update(
                    capacity=4, service_time=0.2, over_capacity=Fault.status(503, retry_after=1)
                )
            server = await stack.enter_async_context(FaultServer(**options))
            for i in range(PER_HOST):
                server.set_default(path_of(h, i), Fault.ok(body=body_of(path_of(h, i))))
            servers[h] = server
        flaky = servers[KINDS.index("flaky")]
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        restarts: list[asyncio.Task[None]] = []
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command, _, arg = line.strip().partition(" ")
            if command == "round":
                for server in servers.values():
                    server.reset()  # which clears random rules too: each round sets its own
                flaky.random(None, {Fault.fin(): 0.03, Fault.rst(): 0.02}, seed=len(restarts))
                restarts.append(asyncio.create_task(_restart(servers[KINDS.index("restarting")])))
            elif command == "counts":
                text = json.dumps(_counts(servers))
                await loop.run_in_executor(None, Path(arg).write_text, text)
            print("ok", flush=True)


async def _restart(server: Any) -> None:
    await asyncio.sleep(RESTART_AT)
    await server.stop_listening(abort=True)
    await asyncio.sleep(RESTART_FOR)
    await server.start_listening()


def _counts(servers: dict[int, Any]) -> dict[str, Any]:
    return {
        KINDS[h] + f"-{h + 1}": {
            "requests": sum(s.action_counts.values()),
            "ok": s.action_counts.get("ok", 0),
            "429": s.shed_counts.get("rate", 0),
            "503": s.shed_counts.get("capacity", 0),
            "fin/rst": s.action_counts.get("fin", 0) + s.action_counts.get("rst", 0),
            "connections": s.connections_opened,
        }
        for h, s in servers.items()
    }


# -- the tools --------------------------------------------------------------------------------


def commands(tool: str, urls: Path, out: Path) -> list[str]:
    """Each tool as a careful user would run it: 16 at a time, 4 per host, 4 retries."""
    if tool == "fetch":
        exe = str(Path(sys.executable).with_name("aiohttp-resilient"))
        return [exe, "fetch", "-i", str(urls), "-o", str(out), "--progress", "lines"]
    if tool == "aria2c":
        return [
            "aria2c", "-i", str(urls), "-d", str(out), "-j", "16",
            "--max-connection-per-server=4", "--max-tries=5", "--retry-wait=1",
            "--connect-timeout=5", "--timeout=10", "--auto-file-renaming=false",
            "--allow-overwrite=true", "--console-log-level=error", "--summary-interval=0",
            "--download-result=hide",
        ]  # fmt: skip
    if tool == "curl":
        config = out.with_suffix(".curlrc")
        config.write_text(
            "".join(
                f'url = "{url}"\noutput = "{out / url.rsplit("/", 1)[1]}"\n'
                for url in urls.read_text().split()
            )
        )
        return [
            "curl", "--parallel", "--parallel-max", "16", "--retry", "4", "--retry-delay", "1",
            "--retry-connrefused", "--connect-timeout", "5", "--max-time", "30", "-s", "-f",
            "--create-dirs", "-K", str(config),
        ]  # fmt: skip
    if tool == "wget":
        return [
            "wget", "-i", str(urls), "-P", str(out), "-nd", "-nv", "--tries=5", "--waitretry=1",
            "--retry-connrefused", "--timeout=10",
        ]  # fmt: skip
    raise ValueError(f"tool must be fetch, aria2c, curl or wget, got {tool!r}")


def fetched_files(tool: str, out: Path, urls: list[str]) -> dict[str, Path]:
    if tool == "fetch":
        files = {}
        manifest = out / "manifest.jsonl"
        if manifest.exists():
            for line in manifest.read_text().splitlines():
                record = json.loads(line)
                if record["file"]:
                    files[record["url"]] = out / record["file"]
        return files
    return {url: out / url.rsplit("/", 1)[1] for url in urls}


def verify(tool: str, out: Path, urls: list[str]) -> tuple[int, int]:
    """(URLs whose file holds exactly their body, files present with other bytes)."""
    good = bad = 0
    for url, file in fetched_files(tool, out, urls).items():
        if not file.is_file():
            continue
        path = "/" + url.rsplit("/", 1)[1]
        if file.read_bytes() == body_of(path):
            good += 1
        else:
            bad += 1
    return good, bad


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_tool(
    tool: str, server: subprocess.Popen[str], port: int, work: Path, timeout: float
) -> dict[str, Any]:
    urls = url_list(port)
    url_file = work / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    out = work / tool
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    command = commands(tool, url_file, out)
    _tell(server, "round")
    started = time.monotonic()
    proc = subprocess.Popen(
        ["taskset", "-c", "1", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _, stderr = proc.communicate()
        timed_out = True
    wall = time.monotonic() - started
    counts_file = work / "counts.json"
    _tell(server, f"counts {counts_file}")
    counts = json.loads(counts_file.read_text())
    good, bad = verify(tool, out, urls)
    reachable = len(urls) - PER_HOST
    requests = sum(c["requests"] for c in counts.values())
    return {
        "tool": tool,
        "wall": round(wall, 2),
        "timed_out": timed_out,
        "exit": proc.returncode,
        "fetched": good,
        "corrupt": bad,
        "reachable": reachable,
        "amplification": round(requests / reachable, 3),
        "429s": counts["rate-limited-5"]["429"],
        "503s": counts["slow-8"]["503"],
        "fin/rst": counts["flaky-4"]["fin/rst"],
        "counts": counts,
        "command": " ".join(command).replace(str(work), "$WORK"),
        "stderr_tail": stderr[-600:],
    }


def _tell(server: subprocess.Popen[str], command: str) -> None:
    assert server.stdin is not None
    assert server.stdout is not None
    server.stdin.write(command + "\n")
    server.stdin.flush()
    if server.stdout.readline().strip() != "ok":
        raise RuntimeError(f"the server did not answer {command!r}")


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| tool | wall time (s) | fetched / reachable | corrupt | amplification | 429s drawn "
        "| 503s drawn | FIN/RST drawn |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        wall = f"> {r['wall']:.0f} (timed out)" if r["timed_out"] else f"{r['wall']:.1f}"
        rows.append(
            f"| {r['tool']} | {wall} | {r['fetched']}/{r['reachable']} | {r['corrupt']} | "
            f"{r['amplification']:.3f} | {r['429s']} | {r['503s']} | {r['fin/rst']} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools", default="fetch,aria2c,curl,wget")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per tool run")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(args.serve))
        return 0
    tools = [t for t in args.tools.split(",") if t == "fetch" or shutil.which(t)]
    for missing in set(args.tools.split(",")) - set(tools):
        print(f"skipped: {missing} is not on PATH", file=sys.stderr)
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, __file__, "--serve", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("the servers did not start")
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="mixed-crawl-") as tmp:
            for round_ in range(args.rounds):
                for tool in tools:  # interleaved: each round runs every tool once
                    result = run_tool(tool, server, port, Path(tmp), args.timeout)
                    result["round"] = round_ + 1
                    results.append(result)
                    print(
                        f"round {round_ + 1} {tool}: {result['wall']:.1f} s, "
                        f"{result['fetched']}/{result['reachable']} fetched, "
                        f"{result['corrupt']} corrupt, amplification {result['amplification']}, "
                        f"{result['429s']} 429s, {result['503s']} 503s, "
                        f"{result['fin/rst']} FIN/RST"
                        + (" (timed out)" if result["timed_out"] else ""),
                        flush=True,
                    )
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(10)
    print(table(results))
    for tool in tools:
        print(f"- {tool}: `{next(r['command'] for r in results if r['tool'] == tool)}`")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
