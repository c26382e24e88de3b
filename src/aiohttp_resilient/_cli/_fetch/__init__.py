"""``aiohttp-resilient fetch``: a polite, resumable crawl with progress and a failure report.

Private: the command line is the interface. URLs come from arguments, ``--input FILE`` or stdin;
bodies go under ``--out DIR`` (with ``manifest.jsonl``) or records into ``--jsonl FILE``. The
first Ctrl-C sends nothing more (no new URL, retry or probe), gives the requests in flight
``STOP_GRACE`` (1 s) to end and writes the report; a second one exits at once, without the
report (the manifest is flushed line by line, so nothing finished is lost either way).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from .._argtypes import number, store_url
from ._crawl import DEFAULT_CONCURRENCY, STOP_GRACE, Crawl, CrawlConfig
from ._progress import make_progress
from ._report import Stats, render
from ._store import ARGUMENTS, Record, Store, UrlListError, read_url_lines

__all__ = ["add_parser", "run"]

#: Seconds between two plain progress lines (when there is no progress bar).
DEFAULT_PROGRESS_INTERVAL = 2.0
#: The exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 128 + signal.SIGINT


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``fetch`` subcommand to the ``aiohttp-resilient`` parser."""
    defaults = CrawlConfig()
    parser = commands.add_parser(
        "fetch",
        help="fetch a list of URLs politely, with progress, a failure report and --resume",
        description=(
            "Fetch URLs (arguments, --input FILE, or stdin; one per line) through "
            "resilient_session(preset='crawler'). Bodies go under --out DIR, named safely per "
            "host, with DIR/manifest.jsonl mapping each URL to its file; or --jsonl FILE gets "
            "one record per URL. At the end: a report per host and per cause, report.json, and "
            "the failed URLs in failed.txt (which --input takes back). Ctrl-C stops cleanly; a "
            "second Ctrl-C exits at once. Exit status 1 when a URL failed, 130 when interrupted."
        ),
    )
    parser.add_argument("urls", nargs="*", metavar="URL", help="URLs to fetch")
    parser.add_argument(
        "--input", "-i", metavar="FILE", help="read URLs from FILE, one per line ('-': stdin)"
    )
    output = parser.add_mutually_exclusive_group(required=True)
    output.add_argument("--out", "-o", type=Path, metavar="DIR", help="write bodies under DIR")
    output.add_argument("--jsonl", type=Path, metavar="FILE", help="write records, no bodies")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip URLs the manifest (or --jsonl file) records as fetched; fetch the rest",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=number(int, minimum=1),
        default=DEFAULT_CONCURRENCY,
        metavar="N",
        help=f"URLs in flight in all ({DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--per-host",
        type=number(int, minimum=1),
        default=defaults.per_host,
        metavar="N",
        help=f"requests in flight per host ({defaults.per_host}, the crawler preset's)",
    )
    parser.add_argument(
        "--rate",
        type=number(float, minimum=0, strict=True),
        metavar="N",
        help="requests started per second per host (no pacing by default)",
    )
    parser.add_argument(
        "--timeout",
        type=number(float, minimum=0, strict=True),
        default=defaults.timeout,
        metavar="SECONDS",
        help=f"seconds per URL, retries included ({defaults.timeout:g})",
    )
    parser.add_argument(
        "--retries",
        type=number(int, minimum=0),
        default=defaults.retries,
        metavar="N",
        help=f"retries per URL ({defaults.retries}); what is retried is the library's rule",
    )
    parser.add_argument(
        "--store",
        type=store_url,
        metavar="URL",
        help="share --per-host and hosts' Retry-After with every fetch given the same "
        "redis://[:password@]host:port/db (or rediss://), on this machine or others; "
        "needs the [redis] extra",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="a progress bar (needs the [cli] extra; auto: on a terminal) or plain lines",
    )
    parser.add_argument(
        "--progress-interval",
        type=number(float, minimum=0, strict=True),
        default=DEFAULT_PROGRESS_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between plain lines ({DEFAULT_PROGRESS_INTERVAL:g})",
    )


def _input_urls(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    urls = list(read_url_lines(args.urls, ARGUMENTS))
    if args.input == "-" or (args.input is None and not args.urls):
        urls.extend(read_url_lines(stdin, "stdin"))
    elif args.input is not None:
        with open(args.input, encoding="utf-8") as file:
            urls.extend(read_url_lines(file, args.input))
    return list(dict.fromkeys(urls))  # each URL once, first order kept


def run(args: argparse.Namespace, stdin: TextIO = sys.stdin) -> int:
    """Run ``fetch`` from parsed arguments; the exit status."""
    if args.per_host > args.concurrency:
        args.per_host = args.concurrency  # a host can never get more than all
    try:
        urls = _input_urls(args, stdin)
    except (UrlListError, OSError) as exc:
        print(f"aiohttp-resilient fetch: error: {exc}", file=sys.stderr)
        return 2
    store = Store(out=args.out, jsonl=args.jsonl)
    inputs = [] if args.input in (None, "-") else [Path(args.input)]
    if (problem := store.output_problem(inputs)) is not None:
        print(f"aiohttp-resilient fetch: error: {problem}", file=sys.stderr)
        return 2
    if store.exists() and not args.resume:
        print(
            f"aiohttp-resilient fetch: error: {store.manifest} exists: pass --resume to "
            "continue that run, or choose another output",
            file=sys.stderr,
        )
        return 2
    if not store.manifest.exists() and (
        clobbered := [path for path in (store.report, store.failed) if path.exists()]
    ):
        # Not a run of ours to continue (no manifest), yet its report would be overwritten.
        print(
            f"aiohttp-resilient fetch: error: {', '.join(map(str, clobbered))} exists without "
            f"{store.manifest.name}: a run would overwrite it; choose another output",
            file=sys.stderr,
        )
        return 2
    config = CrawlConfig(
        concurrency=args.concurrency,
        per_host=args.per_host,
        rate=args.rate,
        timeout=args.timeout,
        retries=args.retries,
    )
    # Every give-up is a record and a line of the report; the library's log would repeat it.
    logging.getLogger("aiohttp_resilient").addHandler(logging.NullHandler())
    return asyncio.run(_main(urls, store, config, args))


async def _main(
    urls: list[str], store: Store, config: CrawlConfig, args: argparse.Namespace
) -> int:
    latest = store.load()
    todo = [url for url in urls if url not in latest or not store.is_done(latest[url])]
    skipped = len(urls) - len(todo)
    stats = Stats()

    def on_record(record: Record) -> None:
        store.append(record)
        stats.add(record)
        latest[record.url] = record

    crawl = Crawl(todo, store, config, on_record, shared_store=args.store)
    stop = asyncio.Event()
    _on_interrupt(stop)
    bar = {"auto": None, "bar": True, "lines": False}[args.progress]
    progress = make_progress(len(todo), plain_interval=args.progress_interval, bar=bar)
    started = time.monotonic()
    store.open()

    async def tick() -> None:
        while True:
            await asyncio.sleep(progress.interval)
            progress.update(crawl)

    ticker = asyncio.create_task(tick())
    try:
        interrupted = await crawl.run(stop)
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        store.close()
        progress.close(crawl)
    failed = [url for url in urls if url in latest and not latest[url].ok]
    resume = None
    if interrupted and store.write_unfinished(
        u for u in urls if u not in latest or not latest[u].ok
    ):
        resume = store.resume_command(store.unfinished, config.command_options())
    elif failed:
        resume = store.resume_command(store.failed, config.command_options())
    report = stats.report(
        elapsed=time.monotonic() - started,
        skipped=skipped,
        interrupted=interrupted,
        not_started=crawl.total - crawl.finished,
        failed_file=str(store.failed),
        failed_urls=store.write_failed(failed),
        resume_command=resume,
    )
    store.write_report(report)
    print(render(report), flush=True)
    if interrupted:
        return EXIT_INTERRUPTED
    return 1 if failed else 0


def _on_interrupt(stop: asyncio.Event) -> None:
    """First SIGINT: stop cleanly. Second: exit at once (records are already on disk)."""
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        if stop.is_set():
            print("\nfetch: interrupted again, exiting at once", file=sys.stderr, flush=True)
            os._exit(EXIT_INTERRUPTED)
        print(
            f"\nfetch: stopping: nothing more is sent; finishing the requests in flight (at "
            f"most {STOP_GRACE:g} s), then writing the report (Ctrl-C again to exit at once)",
            file=sys.stderr,
            flush=True,
        )
        stop.set()

    # Not available on Windows event loops; there Ctrl-C raises KeyboardInterrupt instead.
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, interrupted)
