"""``aiohttp-resilient fetch``: subprocesses against several loopback hosts that make faults;
interrupted with SIGINT and resumed; the servers count what they were sent."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import pty
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from _helpers import run_cli, start_cli
from aiohttp_resilient._cli._fetch._crawl import CrawlConfig
from aiohttp_resilient._cli._main import build_parser
from aiohttp_resilient.testing import Fault, FaultServer

#: Faults on every host: what the crawler preset's retries absorb (6% of attempts fail).
FAULTS = {Fault.fin(): 0.03, Fault.rst(): 0.01, Fault.status(503): 0.02}
#: Loopback addresses, one host each (Linux routes all of 127/8 to lo).
HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@contextlib.asynccontextmanager
async def faulty_hosts() -> AsyncIterator[list[FaultServer]]:
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for seed, host in enumerate(HOSTS):
            server = await stack.enter_async_context(FaultServer(host=host))
            server.random(None, FAULTS, seed=seed)
            servers.append(server)
        yield servers


def manifest(out: Path) -> dict[str, dict[str, Any]]:
    """The last record of each URL."""
    latest = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        latest[record["url"]] = record
    return latest


async def test_fetch_2000_urls_interrupted_and_resumed(tmp_path: Path) -> None:
    """2,000 URLs over three faulty hosts, SIGINT once part-way, then --resume: every URL the
    policy can recover is fetched (only the 404s fail), each body is in its file, nothing
    finished before the interrupt is fetched again, and failed.txt is accepted back."""
    out = tmp_path / "out"
    url_list = tmp_path / "urls.txt"
    async with faulty_hosts() as servers:
        urls = [f"{servers[i % 3].url}/page/{i}.html" for i in range(2000)]
        missing = {url for i, url in enumerate(urls) if i % 250 == 7}
        for server in servers:
            for url in missing:
                if url.startswith(str(server.url)):
                    server.set_default(url.removeprefix(str(server.url)), Fault.status(404))
        url_list.write_text("\n".join(urls) + "\n")
        args = ("fetch", "--out", str(out), "--input", str(url_list), "--retries", "6")
        args += ("--concurrency", "24", "--per-host", "8", "--rate", "150")

        # First run, interrupted once some 500 URLs are recorded.
        proc = await start_cli(*args)
        manifest_file = out / "manifest.jsonl"
        for _ in range(3000):
            if manifest_file.exists() and manifest_file.read_text().count("\n") >= 500:
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 130, stderr.decode()
        assert "stopping: nothing more is sent; finishing the requests in flight" in stderr.decode()
        first = json.loads((out / "report.json").read_text())
        assert first["interrupted"] is True
        assert "fetch interrupted" in stdout.decode()
        before = manifest(out)
        assert first["fetched"] + first["failed"] == len(before) < 2000
        assert first["not_started"] == 2000 - len(before)
        fetched_before = {url for url, r in before.items() if r["error"] is None}
        ok_before = _ok_counts(servers)

        # Resumed: the rest, then the failed list back as input.
        code, _, err = await run_cli(*args, "--resume", timeout=120)
        assert code == 1, err  # the 404s
        second = json.loads((out / "report.json").read_text())
        final = manifest(out)
        code3, _, err3 = await run_cli(
            "fetch", "--out", str(out), "--resume", "--input", str(out / "failed.txt")
        )
    assert second["skipped_already_fetched"] == len(fetched_before)
    assert set(final) == set(urls)
    failed = {url for url, r in final.items() if r["error"] is not None}
    assert failed == missing  # nothing the policy could recover was lost
    assert {final[url]["error"] for url in missing} == {"HTTP 404"}
    for url in set(urls) - missing:
        record = final[url]
        assert record["status"] == 200
        assert (out / record["file"]).read_bytes() == b"ok"
    assert sorted((out / "failed.txt").read_text().split()) == sorted(missing)
    assert second["per_cause"]["HTTP 404"] == len(missing)  # failures are tried again
    assert set(second["per_host"]) == {str(s.url) for s in servers}
    assert second["retries"] > 0
    third = json.loads((out / "report.json").read_text())
    assert (code3, third["failed"], third["fetched"]) == (1, len(missing), 0), err3
    # Each URL served once: those in flight at the interrupt finished and were recorded, and
    # nothing recorded as fetched was fetched again.
    ok_after = _ok_counts(servers)
    assert set(ok_after) == {URL(url).path for url in set(urls) - missing}
    assert set(ok_after.values()) == {1}
    assert sum(ok_before.values()) == len(fetched_before)


def _ok_counts(servers: list[FaultServer]) -> dict[str, int]:
    """Path -> 200 responses served (each URL's path is unique across the hosts)."""
    counts: collections.Counter[str] = collections.Counter()
    for server in servers:
        counts.update(record.path for record in server.records if record.action == "ok")
    return counts


async def test_fetch_jsonl_from_stdin_counts_attempts_like_the_server(tmp_path: Path) -> None:
    """URLs on stdin, records in --jsonl: attempts per URL as the server counted them, the
    cause of a permanent failure, plain progress lines on a pipe, the report beside the file."""
    jsonl = tmp_path / "records.jsonl"
    async with FaultServer() as server:
        server.script("/flaky", [Fault.fin(), Fault.status(503), Fault.ok()])
        server.set_default("/gone", Fault.status(404))
        urls = [server.url_for(p) for p in ("/flaky", "/gone", "/fine")]
        proc = await start_cli(
            "fetch", "--jsonl", str(jsonl), "--progress-interval", "0.05", stdin=True
        )
        stdin = "".join(f"{url}\n" for url in urls).encode() + b"# a comment\n\n"
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), 30)
    records = {r["url"]: r for r in map(json.loads, jsonl.read_text().splitlines())}
    flaky, gone, fine = (records[str(url)] for url in urls)
    assert (flaky["status"], flaky["attempts"], flaky["error"]) == (200, 3, None)
    assert server.count("/flaky") == 3
    assert (gone["status"], gone["attempts"], gone["error"]) == (404, 1, "HTTP 404")
    assert server.count("/gone") == 1
    assert fine["file"] is None
    assert fine["headers"]["Content-Length"] == "2"
    assert proc.returncode == 1
    assert "fetch: 3/3 done, 1 failed, 0 in flight" in stderr.decode()
    report = json.loads((tmp_path / "records.jsonl.report.json").read_text())
    assert (report["fetched"], report["failed"], report["retries"]) == (2, 1, 2)
    assert report["per_cause"] == {"HTTP 404": 1}
    assert (tmp_path / "records.jsonl.failed.txt").read_text() == f"{urls[1]}\n"
    assert "HTTP 404" in stdout.decode()


async def test_second_interrupt_exits_at_once(tmp_path: Path) -> None:
    """While requests hang, the first SIGINT waits for them; a second exits at once (130),
    leaving the manifest with the one URL that was fetched, whole."""
    out = tmp_path / "out"
    async with FaultServer(default=Fault.hang(30)) as server:
        server.set_default("/quick", Fault.ok())
        urls = [str(server.url_for("/quick"))] + [str(server.url_for(f"/{i}")) for i in range(9)]
        proc = await start_cli("fetch", "--out", str(out), *urls)
        manifest_file = out / "manifest.jsonl"
        for _ in range(1000):
            if server.count() >= 2 and manifest_file.exists() and manifest_file.read_text():
                break
            await asyncio.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        for _ in range(100):  # bounded: each line is a progress line or the stop notice
            line = await asyncio.wait_for(proc.stderr.readline(), 10)
            if b"stopping" in line:
                break
        # The first stop waits for the hanging requests; the second does not.
        proc.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(proc.communicate(), 10)
        stderr = line + rest
    assert proc.returncode == 130
    assert "interrupted again, exiting at once" in stderr.decode()
    assert [
        json.loads(line)["url"] for line in (out / "manifest.jsonl").read_text().splitlines()
    ] == [urls[0]]


async def _paced_run_interrupted(
    server: FaultServer, out: Path
) -> tuple[asyncio.subprocess.Process, bytes]:
    """``fetch`` of 16 URLs of ``server`` at -c 16 --rate 0.1, SIGINT once the first is
    recorded; returns the ended process and its stdout (bounded: 8 s after the SIGINT)."""
    urls = [str(server.url_for(f"/{i}")) for i in range(16)]
    proc = await start_cli("fetch", "--out", str(out), "-c", "16", "--rate", "0.1", *urls)
    manifest_file = out / "manifest.jsonl"
    for _ in range(1000):
        if manifest_file.exists() and manifest_file.read_text():
            break
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, _ = await asyncio.wait_for(proc.communicate(), 8)
    return proc, stdout


async def test_first_interrupt_does_not_wait_for_paced_slots(tmp_path: Path) -> None:
    """-c 16 --rate 0.1 on one host: 15 workers hold slots 10 to 150 s ahead. The first SIGINT
    ends the run at once (the pacer waits on the stop), with the one URL fetched recorded and
    the others left for a resumed run."""
    out = tmp_path / "out"
    async with FaultServer() as server:
        # Before the second slot (10 s after the first); without the fix, 150 s.
        proc, _ = await _paced_run_interrupted(server, out)
        manifest_file = out / "manifest.jsonl"
    assert proc.returncode == 130
    assert server.count() == 1
    assert len(manifest_file.read_text().splitlines()) == 1


async def test_output_of_an_earlier_run_needs_resume(tmp_path: Path) -> None:
    """A second run into the same --out without --resume is refused: nothing is overwritten."""
    out = tmp_path / "out"
    async with FaultServer() as server:
        code, _, _ = await run_cli("fetch", "--out", str(out), str(server.url_for("/a")))
        assert code == 0
        code, _, err = await run_cli("fetch", "--out", str(out), str(server.url_for("/a")))
    assert code == 2
    assert "pass --resume" in err
    assert server.count() == 1


@pytest.mark.parametrize("resume", [False, True])
async def test_a_report_without_a_manifest_is_not_overwritten(tmp_path: Path, resume: bool) -> None:
    """--out into a folder that holds a report.json and failed.txt but no manifest (not a run
    to resume) is refused, with or without --resume: the files are left as they were."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}\n")
    (out / "failed.txt").write_text("http://127.0.0.1:9/\n")
    async with FaultServer() as server:
        args = ("--resume",) if resume else ()
        code, _, err = await run_cli("fetch", "--out", str(out), *args, str(server.url_for("/a")))
    assert code == 2
    assert "report.json" in err
    assert "choose another output" in err
    assert server.count() == 0
    assert (out / "report.json").read_text() == "{}\n"
    assert (out / "failed.txt").read_text() == "http://127.0.0.1:9/\n"


async def test_bad_url_line_is_named(tmp_path: Path) -> None:
    """A list with a line that is not an http(s) URL: exit 2 naming the file and the line."""
    url_list = tmp_path / "urls.txt"
    url_list.write_text("http://127.0.0.1:1/a\n\nftp://example.org/x\n")
    code, _, err = await run_cli("fetch", "--out", str(tmp_path / "o"), "--input", str(url_list))
    assert code == 2
    assert f"{url_list}, line 3: 'ftp://example.org/x' is not an http:// or https:// URL" in err


async def test_bad_url_argument_is_named_without_a_line(tmp_path: Path) -> None:
    """A bad URL on the command line: the reason (a port out of range says so), no "line"."""
    code, _, err = await run_cli("fetch", "--out", str(tmp_path / "o"), "http://127.0.0.1:99999/")
    assert code == 2
    assert err.strip() == (
        "aiohttp-resilient fetch: error: 'http://127.0.0.1:99999/': the port is out of range "
        "(1-65535)"
    )


@pytest.mark.parametrize("option", ["--out", "--jsonl"])
async def test_output_onto_an_existing_file_or_folder_is_one_line(
    tmp_path: Path, option: str
) -> None:
    """``fetch -i urls.txt -o urls.txt`` (and --jsonl onto a folder): exit 2 with one line
    saying what is wrong, no traceback, nothing fetched, the file left as it was."""
    url_list = tmp_path / "urls.txt"
    async with FaultServer() as server:
        url_list.write_text(f"{server.url_for('/a')}\n")
        target = url_list if option == "--out" else tmp_path
        code, _, err = await run_cli("fetch", "--input", str(url_list), option, str(target))
    assert code == 2
    assert len(err.splitlines()) == 1, err
    kind = "a file, not a folder" if option == "--out" else "a folder, not a file"
    assert err.startswith(f"aiohttp-resilient fetch: error: {option} {target} is {kind}")
    assert server.count() == 0
    assert url_list.read_text() == f"{server.url_for('/a')}\n"


def _hint(stdout: str, label: str) -> list[str]:
    """The command a report prints after ``label``, split as a shell would."""
    (line,) = [line for line in stdout.splitlines() if line.strip().startswith(label)]
    return shlex.split(line.split(": ", 1)[1])


async def _run_as_printed(words: list[str]) -> tuple[int, str, str]:
    """A printed command run as a user would: the installed ``aiohttp-resilient`` on PATH."""
    assert words[0] == "aiohttp-resilient"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = await asyncio.create_subprocess_exec(
        *words, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("output", ["--out", "--jsonl"])
async def test_retry_hint_runs_as_printed(tmp_path: Path, output: str) -> None:
    """A run at --retries 0 with a failed URL prints a command to retry it, --retries 0
    carried; run as printed, it fetches that URL, and only it, again into the same output
    (the server sees it twice: once per run, no retry)."""
    target = tmp_path / ("out" if output == "--out" else "records.jsonl")
    async with FaultServer() as server:
        server.set_default("/missing", Fault.status(503))
        urls = [str(server.url_for("/fine")), str(server.url_for("/missing"))]
        code, stdout, _ = await run_cli("fetch", output, str(target), "--retries", "0", *urls)
        assert code == 1
        hint = _hint(stdout, "to retry the failed URLs")
        assert hint[-2:] == ["--retries", "0"]
        code, again, err = await _run_as_printed(hint)
    assert code == 1, err  # the 503 again, nothing else
    assert "0 fetched, 1 failed, 0 already fetched" in again
    assert [r.path for r in server.records] == ["/fine", "/missing", "/missing"]


async def test_interrupted_run_prints_how_to_resume(tmp_path: Path) -> None:
    """SIGINT with 15 of 16 URLs not started: the report prints a command that fetches the
    rest at the run's setting (--rate 0.1; -c 16 is the default); run as printed (but at
    --rate 100: 0.1 would take 140 s), it fetches those 15 and only those (each path served
    once)."""
    out = tmp_path / "out"
    async with FaultServer() as server:
        proc, stdout = await _paced_run_interrupted(server, out)
        assert proc.returncode == 130
        hint = _hint(stdout.decode(), "to fetch the rest")
        assert hint[-3:] == [str(out), "--rate", "0.1"]
        hint[-1] = "100"
        code, again, err = await _run_as_printed(hint)
    assert code == 0, err
    assert "15 fetched, 0 failed, 0 already fetched" in again
    assert sorted(r.path for r in server.records) == sorted(f"/{i}" for i in range(16))


async def test_rate_paces_each_host(tmp_path: Path) -> None:
    """--rate 10: ten URLs of one host start at least 0.1 s apart (0.9 s in all, at least)."""
    async with FaultServer() as server:
        urls = [str(server.url_for(f"/{i}")) for i in range(10)]
        code, out, _ = await run_cli(
            "fetch", "--jsonl", str(tmp_path / "r.jsonl"), "--rate", "10", *urls
        )
    report = json.loads((tmp_path / "r.jsonl.report.json").read_text())
    assert (code, report["fetched"]) == (0, 10), out
    assert report["elapsed_seconds"] >= 0.9


async def fetch_on_a_terminal(tmp_path: Path, *, hide_rich: bool) -> tuple[int, str]:
    """Three URLs (one retried once) fetched with stderr on a pseudo-terminal; returns the exit
    status and what the terminal got. ``hide_rich``: as if the [cli] extra were missing."""
    primary, secondary = pty.openpty()
    async with FaultServer() as server:
        server.script("/1", [Fault.fin(), Fault.ok()])
        urls = [str(server.url_for(f"/{i}")) for i in range(3)]
        args = ("fetch", "--jsonl", str(tmp_path / "r.jsonl"), "--progress-interval", "0.05")
        if hide_rich:
            code = (
                "import sys; sys.modules['rich'] = None; "
                "from aiohttp_resilient._cli._main import main"
            )
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                f"{code}; sys.exit(main(sys.argv[1:]))",
                *args,
                *urls,
                stdout=asyncio.subprocess.PIPE,
                stderr=secondary,
            )
        else:
            proc = await start_cli(*args, *urls, stderr=secondary)
        status = await asyncio.wait_for(proc.wait(), 30)
    # Our end of the terminal stays open until all is read, so nothing written is dropped.
    os.set_blocking(primary, False)
    screen = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(primary, 65536):
            screen += chunk
    os.close(primary)
    os.close(secondary)
    return status, screen.decode(errors="replace")


async def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """With the [cli] extra and stderr on a terminal: a rich bar with done/total, failed, in
    flight and retries, on stderr, instead of plain lines."""
    pytest.importorskip("rich", reason="rich is the [cli] extra (the test extra installs it)")
    code, text = await fetch_on_a_terminal(tmp_path, hide_rich=False)
    assert code == 0
    assert "3/3" in text
    assert "0 failed, 0 in flight, 1 retries" in text
    assert "fetch: 3/3 done" not in text  # no plain lines on a terminal


async def test_plain_lines_on_a_terminal_without_rich(tmp_path: Path) -> None:
    """Without rich importable, a terminal gets the plain lines."""
    code, text = await fetch_on_a_terminal(tmp_path, hide_rich=True)
    assert code == 0
    assert "fetch: 3/3 done, 0 failed, 0 in flight" in text
    assert "1 retries" in text


async def test_a_bad_url_error_prints_no_credentials(tmp_path: Path) -> None:
    """A URL refused (a port out of range) with user info and a token in its query: the error
    names the problem, and neither the password nor the token is ever printed."""
    url = "https://user:s3cret@127.0.0.1:70000/a?token=t0ken"
    code, out, err = await run_cli("fetch", "--out", str(tmp_path / "o"), url)
    assert code == 2
    assert "the port is out of range (1-65535)" in err
    assert "REDACTED" in err
    assert "s3cret" not in out + err
    assert "t0ken" not in out + err


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("target", ["the input", "another file"])
async def test_jsonl_onto_a_file_that_is_not_a_manifest_is_refused(
    tmp_path: Path, target: str, resume: bool
) -> None:
    """``fetch -i urls.txt --jsonl urls.txt``, or --jsonl onto a file with no record in it:
    exit 2 naming the problem, with or without --resume (which must not append records to
    it); nothing fetched, the file left as it was."""
    url_list = tmp_path / "urls.txt"
    notes = tmp_path / "notes.txt"
    notes.write_text("not a record\n")
    async with FaultServer() as server:
        url_list.write_text(f"{server.url_for('/a')}\n")
        jsonl = url_list if target == "the input" else notes
        before = jsonl.read_text()
        args = ("--resume",) if resume else ()
        code, _, err = await run_cli("fetch", "-i", str(url_list), "--jsonl", str(jsonl), *args)
    assert code == 2
    assert len(err.splitlines()) == 1, err
    why = "is also the --input list" if target == "the input" else "holds no fetch record"
    assert err.startswith(f"aiohttp-resilient fetch: error: --jsonl {jsonl} {why}"), err
    assert "pass --resume" not in err
    assert server.count() == 0
    assert jsonl.read_text() == before


def test_every_setting_of_a_crawl_is_an_option_that_gives_it_back() -> None:
    """CrawlConfig.command_options() names only the settings that differ from the defaults,
    and each is an option of ``fetch`` that parses back to the same value."""
    assert CrawlConfig().command_options() == []
    config = CrawlConfig(concurrency=3, per_host=2, rate=0.25, timeout=7.5, retries=0)
    args = build_parser().parse_args(["fetch", "--out", "o", *config.command_options()])
    assert {f.name: getattr(args, f.name) for f in dataclasses.fields(config)} == {
        "concurrency": 3,
        "per_host": 2,
        "rate": 0.25,
        "timeout": 7.5,
        "retries": 0,
    }
