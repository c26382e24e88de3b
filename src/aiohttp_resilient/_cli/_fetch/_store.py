"""Where ``fetch`` puts what it fetched: URL lists in, safe file names, and the manifest (one
JSON record per finished URL, appended and flushed as each ends, so an interrupted run loses
nothing it finished and ``--resume`` knows what is done)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from yarl import URL

from .._argtypes import url_problem

__all__ = [
    "Record",
    "Store",
    "UrlListError",
    "host_of",
    "read_url_lines",
    "safe_relative_path",
]

#: The ``source`` of URLs given on the command line.
ARGUMENTS = "arguments"
#: Characters kept in file names; everything else becomes ``_``.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest readable part of a file name (the hash keeps names apart).
_SLUG_MAX = 60
#: An extension kept from the URL's last path segment: short and alphanumeric.
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,6}$")
#: Response headers kept in each record.
RECORDED_HEADERS = ("Content-Type", "Content-Length", "Last-Modified", "ETag", "Server")


class UrlListError(ValueError):
    """A line of the URL list is not an http(s) URL; the message names the line."""


@dataclass(slots=True, kw_only=True)
class Record:
    """One URL's outcome, as the manifest (or ``--jsonl``) keeps it.

    Attributes:
        url: The URL as given.
        status: The final response status, if one arrived.
        size: Body bytes received.
        seconds: From the first attempt's start to the body's end.
        attempts: Attempts made (1 when nothing was retried).
        error: Why it failed (``"HTTP 404"``, ``"ServerDisconnectedError"``), ``None`` if not.
        headers: A subset of the response headers (:data:`RECORDED_HEADERS`).
        file: Where the body is, relative to ``--out`` (``None`` with ``--jsonl``).
    """

    url: str
    status: int | None
    size: int
    seconds: float
    attempts: int
    error: str | None
    headers: dict[str, str] = field(default_factory=dict)
    file: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def retries(self) -> int:
        """Attempts after the first (0 attempts: the open breaker refused it); what the report
        and the progress count."""
        return max(self.attempts - 1, 0)


def host_of(url: str) -> str:
    """``scheme://host:port``, the key per-host counts and limits go by."""
    parsed = URL(url)
    return f"{parsed.scheme}://{parsed.host_port_subcomponent}"


def read_url_lines(lines: Iterable[str], source: str) -> Iterator[str]:
    """The URLs of a list, one per line; blank lines and ``#`` comments skipped (``source``
    names the list in errors; :data:`ARGUMENTS` for the command line's).

    Raises:
        UrlListError: naming ``source`` and the line number of the first bad line.
    """
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        problem = url_problem(text)
        if problem is not None:
            # Arguments have no lines: "arguments, line 1:" would send the user looking for one.
            where = "" if source == ARGUMENTS else f"{source}, line {number}: "
            raise UrlListError(where + problem)
        yield text


def safe_relative_path(url: str) -> str:
    """``host_port/slug-hash.ext``: one folder per host, one file per URL.

    Nothing of the URL can climb out of the folder (only ``[A-Za-z0-9._-]`` survive, no name
    starts with a dot) and the hash of the whole URL keeps two URLs from sharing a file.
    """
    parsed = URL(url)
    host = _UNSAFE.sub("_", (parsed.raw_host or "host").strip("[]")).lstrip(".") or "host"
    folder = f"{host}_{parsed.port}"
    last = parsed.raw_path.rstrip("/").rsplit("/", 1)[-1] or "index"
    match = _EXTENSION.search(last)
    extension = match[0].lower() if match else ""
    stem = last[: -len(extension)] if extension else last
    slug = _UNSAFE.sub("_", stem).strip("._")[:_SLUG_MAX] or "index"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"{folder}/{slug}-{digest}{extension}"


class Store:
    """The output of one ``fetch``: bodies under ``out`` with ``manifest.jsonl``, or records
    only, in a ``--jsonl`` file. The report and the failed-URL list go beside them."""

    def __init__(self, *, out: Path | None, jsonl: Path | None) -> None:
        if (out is None) == (jsonl is None):
            raise ValueError("give exactly one of out (a folder) and jsonl (a file)")
        self.out = out
        if out is not None:
            self.manifest = out / "manifest.jsonl"
            self.report = out / "report.json"
            self.failed = out / "failed.txt"
            self.unfinished = out / "unfinished.txt"
        else:
            assert jsonl is not None
            self.manifest = jsonl
            self.report = jsonl.with_name(jsonl.name + ".report.json")
            self.failed = jsonl.with_name(jsonl.name + ".failed.txt")
            self.unfinished = jsonl.with_name(jsonl.name + ".unfinished.txt")
        self._file: IO[str] | None = None

    def output_problem(self, inputs: Iterable[Path] = ()) -> str | None:
        """Why the output cannot be written where it was asked, in one line; ``None`` if it can
        (checked before anything is fetched: ``--out urls.txt`` must not end in a traceback).
        ``inputs``: the URL lists read, which the manifest must not be (records would be
        appended to them), nor may it be a file of something else (no record in it)."""
        if self.out is not None:
            option, path, want_dir = "--out", self.out, True
        else:
            option, path, want_dir = "--jsonl", self.manifest, False
        kind = "folder" if want_dir else "file"
        manifest = self.manifest
        if manifest.is_file():
            if any(manifest.samefile(list_file) for list_file in inputs if list_file.exists()):
                return f"{option} {path} is also the --input list: choose another {kind}"
            if manifest.stat().st_size > 0 and next(self._records(), None) is None:
                where = f" in {manifest.name}" if want_dir else ""
                return (
                    f"{option} {path} holds no fetch record{where}: it is not the output of a "
                    f"run to resume; choose another {kind}"
                )
        if want_dir and path.exists() and not path.is_dir():
            return (
                f"{option} {path} is a file, not a folder: choose a folder for the bodies "
                "(or --jsonl FILE for records only)"
            )
        if not want_dir and path.is_dir():
            return f"{option} {path} is a folder, not a file: choose a file for the records"
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    return f"{option} {path}: {parent} is a file, not a folder"
                break
        return None

    def resume_command(self, url_list: Path, options: Iterable[str] = ()) -> str:
        """The command that fetches ``url_list`` into this output, skipping what is done, with
        ``options`` (the run's settings that differ from the defaults)."""
        if self.out is not None:
            where = ["--out", str(self.out)]
        else:
            where = ["--jsonl", str(self.manifest)]
        words = ["aiohttp-resilient", "fetch", "--resume", "--input", str(url_list), *where]
        return shlex.join([*words, *options])

    def exists(self) -> bool:
        """Whether an earlier run left records here."""
        return self.manifest.exists() and self.manifest.stat().st_size > 0

    def load(self) -> dict[str, Record]:
        """The last record of each URL (a resumed run appends newer ones). A line cut short by
        a hard stop is ignored: that URL is fetched again."""
        return {record.url: record for record in self._records()}

    def _records(self) -> Iterator[Record]:
        """Each record of the manifest, in order; lines that are not one skipped."""
        if not self.manifest.exists():
            return
        with self.manifest.open(encoding="utf-8") as file:
            for line in file:
                try:
                    record = Record(**json.loads(line))
                except (ValueError, TypeError):
                    continue
                yield record

    def is_done(self, record: Record) -> bool:
        """Fetched, and (with ``--out``) its file still there."""
        if not record.ok:
            return False
        return self.out is None or (record.file is not None and (self.out / record.file).exists())

    def open(self) -> None:
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        self.manifest.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.manifest.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def save_body(self, url: str, body: bytes) -> str | None:
        """Write the body under ``out`` (through a temporary file, so a file is whole or absent);
        returns its relative path, or ``None`` with ``--jsonl``."""
        if self.out is None:
            return None
        relative = safe_relative_path(url)
        path = self.out / relative
        path.parent.mkdir(exist_ok=True)
        partial = path.with_name(path.name + ".part")
        partial.write_bytes(body)
        os.replace(partial, path)
        return relative

    def append(self, record: Record) -> None:
        """One manifest line, flushed at once."""
        assert self._file is not None, "Store.open() first"
        self._file.write(json.dumps(asdict(record), separators=(",", ":")) + "\n")
        self._file.flush()

    def write_failed(self, urls: Iterable[str]) -> int:
        """The failed URLs, one per line: a list ``fetch`` takes back as input."""
        urls = list(urls)
        self.failed.write_text("".join(f"{url}\n" for url in urls), encoding="utf-8")
        return len(urls)

    def write_unfinished(self, urls: Iterable[str]) -> int:
        """The URLs an interrupted run did not fetch (failed, or not started), one per line."""
        urls = list(urls)
        self.unfinished.write_text("".join(f"{url}\n" for url in urls), encoding="utf-8")
        return len(urls)

    def write_report(self, report: dict[str, Any]) -> None:
        self.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
