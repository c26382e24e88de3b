"""The ``aiohttp-resilient`` command line: ``aiohttp-resilient serve --fault fin=5% ...``,
``aiohttp-resilient bench --quick``, ``aiohttp-resilient diagnose URL`` and
``aiohttp-resilient fetch --out DIR URL...``.

Built on argparse subcommands (stdlib only); each command's options live with its code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Sequence

from ..testing._faults import (
    SPEC_HELP,
    Fault,
    FaultSpecError,
    parse_fault,
    parse_fault_spec,
    parse_fault_specs,
)
from ..testing._load import ServerLoad
from ..testing._server import FaultServer
from . import _bench, _diagnose, _fetch
from ._argtypes import number as _number

__all__ = ["build_parser", "main"]

#: Seconds between two running count lines of ``serve`` unless ``--stats-interval`` says otherwise.
DEFAULT_STATS_INTERVAL = 1.0


def _fault_spec(text: str) -> str:
    """Validate one ``--fault`` spec early, so argparse names the option in its error."""
    try:
        parse_fault_spec(text)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(f"invalid fault spec {exc}") from None
    return text


def _one_fault(text: str) -> Fault:
    """An argparse ``type`` for an option taking one fault, no percentage: ``503:retry-after=1``."""
    try:
        return parse_fault(text)
    except FaultSpecError as exc:
        raise argparse.ArgumentTypeError(f"invalid fault {exc}") from None


def _outage_spec(text: str) -> tuple[float, float, Fault]:
    """``AT:SECONDS[:FAULT]``: an outage ``AT`` seconds after the start, ``rst`` by default."""
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: expected AT:SECONDS[:FAULT], e.g. 10:3:rst")
    at = _number(float, minimum=0)(parts[0])
    seconds = _number(float, minimum=0, strict=True)(parts[1])
    fault = _one_fault(parts[2]) if len(parts) == 3 else Fault.rst()
    return at, seconds, fault


def build_parser() -> argparse.ArgumentParser:
    """The ``aiohttp-resilient`` argument parser, one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="aiohttp-resilient",
        description="Tools for testing aiohttp clients against an unreliable network.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run a loopback HTTP/1.1 server that injects faults",
        description=(
            "Run a FaultServer until --duration passes or SIGINT/SIGTERM arrives. The first line "
            "printed is 'serving on URL'; then one count line per --stats-interval; at the end a "
            "summary. Requests not drawn into a fault get '200 ok'."
        ),
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument(
        "--port", type=_number(int, minimum=0), default=0, help="port; 0 picks a free one (0)"
    )
    serve.add_argument(
        "--fault",
        action="append",
        default=[],
        type=_fault_spec,
        metavar="SPEC",
        help="FAULT=PERCENT%%, repeatable; see the grammar below",
    )
    serve.add_argument(
        "--seed",
        type=_number(int, minimum=0),
        default=None,
        help="seed of the fault draws (random, and printed, when not given)",
    )
    serve.add_argument(
        "--idle-close-ms",
        type=_number(int, minimum=0, strict=True),
        metavar="N",
        help="close keep-alive connections idle for N ms, without warning",
    )
    serve.add_argument(
        "--max-requests-per-conn",
        type=_number(int, minimum=1),
        metavar="N",
        help="close each connection after N responses, without Connection: close",
    )
    serve.add_argument(
        "--max-body",
        type=_number(int, minimum=0),
        metavar="N",
        help="reject request bodies over N bytes (see --max-body-action)",
    )
    serve.add_argument(
        "--max-body-action",
        choices=("413", "rst"),
        default="413",
        help="answer bodies over --max-body with 413 or reset the connection (413)",
    )
    serve.add_argument(
        "--require-header",
        metavar="NAME",
        help="drop requests without this header: close the connection without a response",
    )
    health = serve.add_argument_group(
        "host health",
        "the server as a whole: overloaded, rate limited, down for a while "
        "(FAULT is one fault of the grammar below, without a percentage)",
    )
    health.add_argument(
        "--capacity",
        type=_number(int, minimum=1),
        metavar="K",
        help="at most K requests in service at once (needs --service-time-ms); "
        "the rest get --over-capacity at once",
    )
    health.add_argument(
        "--service-time-ms",
        type=_number(float, minimum=0, strict=True),
        metavar="MS",
        help="hold each 200 response MS milliseconds before writing it",
    )
    health.add_argument(
        "--over-capacity",
        type=_one_fault,
        default=Fault.status(503),
        metavar="FAULT",
        help="what requests over --capacity get (503)",
    )
    health.add_argument(
        "--rate-limit",
        type=_number(float, minimum=0, strict=True),
        metavar="N",
        help="admit N requests per second (token bucket); the rest get --over-rate",
    )
    health.add_argument(
        "--rate-burst",
        type=_number(float, minimum=1),
        metavar="B",
        help="requests admitted back to back after a quiet spell (N/10, at least 1)",
    )
    health.add_argument(
        "--over-rate",
        type=_one_fault,
        default=Fault.status(429),
        metavar="FAULT",
        help="what requests over --rate-limit get (429)",
    )
    health.add_argument(
        "--compute-retry-after",
        action="store_true",
        help="refusals without a retry-after of their own say when they should end "
        "(whole seconds, at least 1)",
    )
    health.add_argument(
        "--outage",
        action="append",
        default=[],
        type=_outage_spec,
        metavar="AT:SECONDS[:FAULT]",
        help="from AT seconds after the start, every request gets FAULT (rst) for SECONDS; "
        "repeatable",
    )
    health.add_argument(
        "--exempt-path",
        action="append",
        default=[],
        metavar="PATH",
        help="a path that capacity, rate limit and outages leave alone; repeatable",
    )
    health.add_argument(
        "--request-id-header",
        metavar="NAME",
        help="count requests per value of this header; the counts show ids that arrived twice",
    )
    serve.add_argument(
        "--duration",
        type=_number(float, minimum=0, strict=True),
        metavar="SECONDS",
        help="stop after this long (default: run until SIGINT/SIGTERM)",
    )
    serve.add_argument(
        "--stats-interval",
        type=_number(float, minimum=0, strict=True),
        default=DEFAULT_STATS_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between count lines ({DEFAULT_STATS_INTERVAL:g})",
    )
    serve.set_defaults(parser=serve)
    _bench.add_parser(commands)
    _diagnose.add_parser(commands)
    _fetch.add_parser(commands)
    return parser


def _counts_line(server: FaultServer) -> str:
    parts = [f"requests={server.count()} connections={server.connections_opened}"]
    parts.extend(f"{name}={n}" for name, n in sorted(server.action_counts.items()))
    parts.extend(f"shed:{name}={n}" for name, n in sorted(server.shed_counts.items()))
    if server.capacity is not None:
        parts.append(f"in_service={server.in_service}")
    if server.request_id_header is not None:
        parts.append(f"ids_twice={len(server.duplicate_ids)}")
    return " ".join(parts)


def _server_load(args: argparse.Namespace) -> ServerLoad:
    """The ``host health`` flags as the server's load shaping."""
    return ServerLoad(
        capacity=args.capacity,
        service_time=0.0 if args.service_time_ms is None else args.service_time_ms / 1000,
        over_capacity=args.over_capacity,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
        over_rate=args.over_rate,
        compute_retry_after=args.compute_retry_after,
        exempt_paths=args.exempt_path,
    )


async def _serve(args: argparse.Namespace, weights: dict[Fault, float], seed: int) -> int:
    server = FaultServer(
        host=args.host,
        port=args.port,
        idle_close=None if args.idle_close_ms is None else args.idle_close_ms / 1000,
        max_requests_per_conn=args.max_requests_per_conn,
        max_body=args.max_body,
        max_body_action=args.max_body_action,
        require_header=args.require_header,
        # A long run would keep every request in memory; the counters are all serve prints.
        record=False,
        load=_server_load(args),
        request_id_header=args.request_id_header,
    )
    if weights:
        server.random(None, weights, seed=seed)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not available on Windows event loops; there Ctrl-C raises KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        try:
            await server.start_listening()
        except OSError as exc:
            print(f"aiohttp-resilient serve: error: cannot listen: {exc}", file=sys.stderr)
            return 1
        print(f"serving on {server.url}", flush=True)
        if weights:
            print(f"fault seed: {seed}", flush=True)
        started = time.monotonic()
        for at, seconds, fault in args.outage:
            server.outage(seconds, fault, at=started + at)
        deadline = None if args.duration is None else started + args.duration
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = (
                args.stats_interval
                if deadline is None
                else min(args.stats_interval, deadline - now)
            )
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                print(f"[{time.monotonic() - started:7.1f}s] {_counts_line(server)}", flush=True)
        await server.stop_listening()
        print(f"summary: {time.monotonic() - started:.1f}s {_counts_line(server)}", flush=True)
        return 0
    finally:
        await server.stop_listening()
        for sig in handled:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for usage errors, as argparse does).

    Example: ``main(["serve", "--fault", "fin=5%", "--duration", "10"])``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command == "serve":
            try:
                weights = parse_fault_specs(args.fault)
            except FaultSpecError as exc:
                args.parser.error(f"argument --fault: {exc}")
            if args.capacity is not None and args.service_time_ms is None:
                args.parser.error("argument --capacity: needs --service-time-ms")
            if args.rate_burst is not None and args.rate_limit is None:
                args.parser.error("argument --rate-burst: needs --rate-limit")
            windows = sorted((at, at + seconds) for at, seconds, _ in args.outage)
            for (_, end), (start, _) in itertools.pairwise(windows):
                if start < end:
                    args.parser.error("argument --outage: outages overlap")
    except SystemExit as exc:
        # argparse exits on --help and on usage errors; callers of main() get the code instead.
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if args.command == "bench":
        return _bench.run(args)
    if args.command == "diagnose":
        return _diagnose.run(args)
    if args.command == "fetch":
        return _fetch.run(args)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_serve(args, weights, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
