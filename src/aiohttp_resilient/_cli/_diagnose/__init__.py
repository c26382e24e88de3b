"""``aiohttp-resilient diagnose URL``: the troubleshooting flow, run for real.

Private: the command line is the interface. Steps run in order (resolve, connect, tls, proxy,
http, keep-alive, repeat, and the opt-in body limit), each bounded in requests and time, each
printed as it ends; then the conclusions map what was found to ``resilient_session(...)``
settings. Only the body probe sends anything but GET, and only when asked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import urllib.request
from collections.abc import Callable
from typing import TextIO

from yarl import URL

from ..._util._redact import redact_url
from .._argtypes import http_url, number
from ._http import probe_body_limit, probe_http, probe_proxy, probe_repeat
from ._keepalive import probe_keepalive
from ._model import (
    DEFAULT_BODY_MAX,
    DEFAULT_KEEPALIVE_FIRST_GAP,
    DEFAULT_KEEPALIVE_MAX,
    DEFAULT_REPEAT,
    DEFAULT_STEP_TIMEOUT,
    MAX_REPEAT,
    PROBLEMS,
    DiagnoseConfig,
    Step,
)
from ._network import probe_connect, probe_resolve, probe_tls
from ._report import conclude, step_line, write_conclusions, write_json

__all__ = ["add_parser", "diagnose", "run"]

#: Most seconds ``--keepalive-max`` may ask for: the probe must stay bounded.
MAX_KEEPALIVE_SECONDS = 600.0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``diagnose`` subcommand to the ``aiohttp-resilient`` parser."""
    parser = commands.add_parser(
        "diagnose",
        help="find why requests to a URL fail, and which resilient_session() setting fixes it",
        description=(
            "Run the troubleshooting flow against URL: resolve (aiodns), connect (each address "
            "family), tls (version, cipher, chain, expiry), proxy (through it and direct), http "
            "(status, headers, phase timings), keep-alive (the server's idle timeout, measured, "
            "against the client pool's), repeat (are failures intermittent?) and, with "
            "--probe-body, the largest accepted request body. Exit status 1 when a problem was "
            "found. Only GET requests are sent unless --probe-body is given."
        ),
    )
    parser.add_argument("url", type=http_url, metavar="URL", help="http:// or https:// URL")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument(
        "--proxy",
        metavar="URL",
        help="HTTP proxy to test (default: HTTP(S)_PROXY from the environment, if set)",
    )
    parser.add_argument(
        "--ca-bundle",
        metavar="PEM",
        help="CA certificates to trust, as ca_bundle= does",
    )
    parser.add_argument(
        "--preset",
        choices=("default", "crawler", "api"),
        default="default",
        help="the resilient_session() preset to compare with (default)",
    )
    parser.add_argument(
        "--timeout",
        type=number(float, minimum=0.1, maximum=120),
        default=DEFAULT_STEP_TIMEOUT,
        metavar="SECONDS",
        help=f"bound of each network operation ({DEFAULT_STEP_TIMEOUT:g})",
    )
    parser.add_argument(
        "--repeat",
        type=number(int, minimum=1, maximum=MAX_REPEAT),
        default=DEFAULT_REPEAT,
        metavar="N",
        help=f"requests of the repeat step, at most {MAX_REPEAT} ({DEFAULT_REPEAT})",
    )
    parser.add_argument(
        "--keepalive-max",
        type=number(float, minimum=0.1, maximum=MAX_KEEPALIVE_SECONDS),
        default=DEFAULT_KEEPALIVE_MAX,
        metavar="SECONDS",
        help=f"seconds the keep-alive probe holds idle connections in all "
        f"({DEFAULT_KEEPALIVE_MAX:g})",
    )
    parser.add_argument(
        "--keepalive-first-gap",
        type=number(float, minimum=0.05, maximum=MAX_KEEPALIVE_SECONDS),
        default=DEFAULT_KEEPALIVE_FIRST_GAP,
        metavar="SECONDS",
        help=f"first idle gap; each next one doubles ({DEFAULT_KEEPALIVE_FIRST_GAP:g})",
    )
    parser.add_argument("--no-keepalive", action="store_true", help="skip the keep-alive step")
    parser.add_argument(
        "--probe-body",
        action="store_true",
        help="also find the largest accepted request body by POSTing zeros of growing size "
        "(sends data: opt-in)",
    )
    parser.add_argument(
        "--body-max",
        type=number(int, minimum=1024, maximum=1 << 32),
        default=DEFAULT_BODY_MAX,
        metavar="BYTES",
        help=f"largest body the probe sends ({DEFAULT_BODY_MAX})",
    )


def _env_proxy(url: URL) -> str | None:
    """The proxy aiohttp would use with ``trust_env=True``, from HTTP(S)_PROXY and NO_PROXY."""
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.raw_host or ""):
        return proxy
    return None


async def diagnose(
    config: DiagnoseConfig, *, keepalive: bool = True, emit: Callable[[Step], None] = print
) -> list[Step]:
    """Run the steps in order, ``emit`` each as it ends; later steps that cannot work after an
    earlier failure (no address, no connection, no TLS) are not run."""
    steps: list[Step] = []

    def record(step: Step) -> Step:
        steps.append(step)
        emit(step)
        return step

    resolved = record(await probe_resolve(config))
    if resolved.verdict == "fail":
        return steps
    connect = record(await probe_connect(config, resolved.facts["addresses"]))
    if not connect.facts["reachable"] and config.proxy is None:
        return steps
    reachable = [r["address"] for r in connect.facts["families"].values() if r["error"] is None]
    address = reachable[0] if reachable else resolved.facts["addresses"][0]
    if config.tls and reachable and record(await probe_tls(config, address)).verdict == "fail":
        return steps
    if config.proxy is not None:
        record(await probe_proxy(config, config.proxy, redact_url(config.proxy)))
    record(await probe_http(config))
    if keepalive and (reachable or config.proxy is not None):
        record(await probe_keepalive(config, address))
    record(await probe_repeat(config))
    if config.probe_body:
        record(await probe_body_limit(config))
    return steps


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``diagnose`` from parsed arguments; 1 when a problem was found, else 0."""
    url: URL = args.url
    config = DiagnoseConfig(
        url=url,
        proxy=args.proxy if args.proxy is not None else _env_proxy(url),
        ca_bundle=args.ca_bundle,
        timeout=args.timeout,
        repeat=args.repeat,
        keepalive_max=args.keepalive_max,
        keepalive_first_gap=args.keepalive_first_gap,
        probe_body=args.probe_body,
        body_max=args.body_max,
        preset=args.preset,
    )
    shown = redact_url(url)
    # Each give-up is a finding the steps report; the library's log line would repeat it.
    logging.getLogger("aiohttp_resilient").addHandler(logging.NullHandler())

    def emit(step: Step) -> None:
        if not args.json:
            out.write(step_line(step) + "\n")
            out.flush()

    if not args.json:
        out.write(f"diagnose {shown}\n")
    steps: list[Step] = []
    with contextlib.suppress(KeyboardInterrupt):
        steps = asyncio.run(diagnose(config, keepalive=not args.no_keepalive, emit=emit))
    if not steps:
        return 130
    problem = any(step.verdict in PROBLEMS for step in steps)
    conclusions = conclude(steps, config)
    if args.json:
        write_json(out, shown, steps, conclusions, problem)
    else:
        write_conclusions(out, conclusions, problem)
    return 1 if problem else 0
