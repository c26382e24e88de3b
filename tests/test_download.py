"""download(): cuts resumed with Range + If-Range against FaultServer's RangedFile."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from _helpers import raw_http_server
from aiohttp_resilient import DownloadError, RetryPolicy, download, resilient_session
from aiohttp_resilient.testing import Fault, FaultServer, RangedFile

MiB = 1024 * 1024
CHUNK = 256 * 1024  # download()'s read size and the server's write size
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def overlaps(file: RangedFile) -> list[int]:
    """Bytes each request asked for again that the server had already sent before it."""
    served = file.served
    return [a.start + a.sent - b.start for a, b in itertools.pairwise(served)]


async def test_50_mb_cut_five_times_resumes_with_ranges(tmp_path: Path) -> None:
    file = RangedFile(50 * MiB, seed=1)
    file.cut_after(7 * MiB, 9 * MiB + 123, 3 * MiB, 11 * MiB, 5 * MiB + 1)
    seen: list[int] = []
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/big.bin", file)
        result = await download(
            session,
            server.url_for("/big.bin"),
            tmp_path / "big.bin",
            sha256=file.sha256(),
            progress=lambda done, total: seen.append(done),
        )
    assert hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest() == file.sha256()
    assert result.size == 50 * MiB
    assert result.cuts == 5
    assert result.resumes == 5
    assert [s.status for s in file.served] == [200] + [206] * 5
    assert [s.cut for s in file.served] == ["fin"] * 5 + [None]
    # Every resume asks from where the last one stopped, give or take what was in flight.
    assert all(0 <= overlap <= CHUNK for overlap in overlaps(file)), overlaps(file)
    assert all(s.if_range == file.etag for s in file.served[1:])
    assert result.size_verified
    assert seen[-1] == 50 * MiB
    assert seen == sorted(seen)
    assert names(tmp_path) == ["big.bin"]


async def test_rst_cuts_resume_too(tmp_path: Path) -> None:
    file = RangedFile(8 * MiB, seed=2)
    file.cut_after(MiB, 2 * MiB, how="rst")
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        result = await download(session, server.url_for("/f"), tmp_path / "f", sha256=file.sha256())
    assert result.cuts == 2
    assert [s.status for s in file.served] == [200, 206, 206]


async def test_file_changed_between_cuts_restarts_not_stitched(tmp_path: Path) -> None:
    file = RangedFile(8 * MiB, seed=3)
    file.cut_after(3 * MiB, 2 * MiB)
    file.change_after_cut(1)  # the file changes right after the first cut
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        result = await download(session, server.url_for("/f"), tmp_path / "f")
    assert file.version == 1
    assert result.sha256 == file.sha256(version=1) != file.sha256(version=0)
    # The resume after the change was answered with the whole new file: If-Range did its work.
    assert [(s.status, s.version) for s in file.served] == [(200, 0), (200, 1), (206, 1)]
    assert file.served[1].if_range == '"3-0"'
    assert result.restarts == 1


async def test_last_modified_is_the_validator_without_a_strong_etag(tmp_path: Path) -> None:
    file = RangedFile(4 * MiB, seed=4, weak_etag=True)
    file.cut_after(MiB)
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        await download(session, server.url_for("/f"), tmp_path / "f", sha256=file.sha256())
    assert file.served[1].if_range == file.last_modified
    assert file.served[1].status == 206


async def test_server_without_ranges_restarts_cleanly(tmp_path: Path) -> None:
    file = RangedFile(6 * MiB, seed=5, ranges=False)
    file.cut_after(2 * MiB, 4 * MiB)
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        result = await download(session, server.url_for("/f"), tmp_path / "f", sha256=file.sha256())
    assert [s.status for s in file.served] == [200, 200, 200]
    assert result.restarts == 2
    assert result.size == 6 * MiB


async def test_cuts_at_the_same_byte_without_ranges_are_no_progress(tmp_path: Path) -> None:
    """Counted from where each restart began, every cut looked like progress: 51 full restarts."""
    file = RangedFile(4 * MiB, seed=11, ranges=False)
    file.cut_after(*[MiB] * 60)
    policy = FAST.replace(attempts=3)
    async with FaultServer() as server, resilient_session(policy=policy) as session:
        server.serve("/f", file)
        with pytest.raises(DownloadError, match="cut 4 times \\(without progress\\)"):
            await download(session, server.url_for("/f"), tmp_path / "f")
    # The first cut got somewhere; the next `attempts` got no further.
    assert [(s.status, s.sent) for s in file.served] == [(200, MiB)] * 4


async def test_a_file_served_with_content_encoding_is_saved_as_sent(tmp_path: Path) -> None:
    """A .tar.gz served with Content-Encoding: gzip is its gzip bytes, resumed by their offsets.

    aiohttp decoded such a body while Content-Length and Content-Range counted the encoded
    bytes: the download could never complete.
    """
    file = RangedFile(4 * MiB, seed=14, content_encoding="gzip")
    file.cut_after(MiB, 2 * MiB)
    archive = gzip.compress(RangedFile(MiB, seed=15).read(0, MiB))
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        encoded = Fault.ok(body=archive, headers={"Content-Encoding": "gzip"})
        server.set_default("/a.tar.gz", encoded)
        result = await download(session, server.url_for("/f"), tmp_path / "f", sha256=file.sha256())
        whole = await download(session, server.url_for("/a.tar.gz"), tmp_path / "a.tar.gz")
    assert [s.status for s in file.served] == [200, 206, 206]
    assert result.size == 4 * MiB
    assert (tmp_path / "a.tar.gz").read_bytes() == archive
    assert whole.size_verified


async def test_no_validator_means_no_range(tmp_path: Path) -> None:
    """Without ETag or Last-Modified a resume could stitch two versions: start over instead."""
    file = RangedFile(3 * MiB, seed=6, etag=False, last_modified=False)
    file.cut_after(MiB)
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        await download(session, server.url_for("/f"), tmp_path / "f", sha256=file.sha256())
    assert [s.range_header for s in file.served] == [None, None]


async def test_416_and_wrong_checksum_are_errors_that_say_so(tmp_path: Path) -> None:
    file = RangedFile(2 * MiB, seed=7)
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        url = server.url_for("/f")
        with pytest.raises(DownloadError, match="does not match the expected"):
            await download(session, url, tmp_path / "f", sha256="0" * 64)
        assert names(tmp_path) == []
        # A part file longer than the file: the server answers the range with 416.
        file.cut_after(MiB, MiB // 2)
        with pytest.raises(DownloadError, match="cut 2 times"):
            await download(session, url, tmp_path / "g", max_resumes=1)
        part = tmp_path / "g.part"
        with part.open("ab") as f:
            f.write(b"x" * (2 * MiB))
        sidecar = (tmp_path / "g.part.json").read_text().replace("2097152", "null")
        (tmp_path / "g.part.json").write_text(sidecar)
        with pytest.raises(DownloadError, match="416"):
            await download(session, url, tmp_path / "g")
        assert not part.exists()


async def test_416_for_a_part_file_that_is_already_whole_finishes_it(tmp_path: Path) -> None:
    """A chunked body cut after its last byte is whole: the server's 416 says so, nothing is lost.

    Every 416 removed the part file, a complete one too.
    """
    data = RangedFile(300_000, seed=12).read(0, 300_000)
    got_all = asyncio.Event()

    async def answer(head: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if "\r\nrange:" not in head.lower():
            writer.write(b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nETag: "v1"\r\n\r\n')
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await asyncio.wait_for(got_all.wait(), 10)
            return False  # closed without the last chunk: a cut
        writer.write(
            b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */%d\r\n"
            b'ETag: "v1"\r\nContent-Length: 0\r\n\r\n' % len(data)
        )
        return True

    def progress(done: int, total: int | None) -> None:
        if done == len(data):
            got_all.set()

    async with raw_http_server(answer) as (url, heads), resilient_session(policy=FAST) as session:
        result = await download(
            session,
            url + "/f",
            tmp_path / "f",
            sha256=hashlib.sha256(data).hexdigest(),
            progress=progress,
        )
    assert len(heads) == 2
    assert f"\r\nRange: bytes={len(data)}-\r\n" in heads[1]
    assert result.cuts == 1
    assert result.size == len(data)
    assert (tmp_path / "f").read_bytes() == data
    assert names(tmp_path) == ["f"]


async def test_a_body_ended_only_by_the_connection_is_not_called_verified(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No Content-Length, not chunked: a cut at 100 KB of 200 KB looks like the end.

    It was a complete, 100,000-byte file. It is still saved (nothing tells it from a whole one),
    but the result says it is unverified and a warning says so; chunked framing, a size or a
    SHA-256 verify it.
    """
    data = RangedFile(200_000, seed=13).read(0, 200_000)

    async def answer(head: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if head.startswith("GET /chunked "):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (100_000, data[:100_000]))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + data[:100_000])
        return False  # the server meant to send 200,000 bytes

    async with raw_http_server(answer) as (url, heads), resilient_session(policy=FAST) as session:
        with caplog.at_level("WARNING", logger="aiohttp_resilient"):
            cut = await download(session, url + "/close", tmp_path / "close")
        framed = await download(session, url + "/chunked", tmp_path / "chunked")
        with pytest.raises(DownloadError, match="SHA-256"):
            await download(
                session, url + "/close", tmp_path / "x", sha256=hashlib.sha256(data).hexdigest()
            )
    assert cut.size == 100_000
    assert not cut.size_verified
    (record,) = [r for r in caplog.records if "may be truncated" in r.getMessage()]
    assert record.event == "download_unverified"  # type: ignore[attr-defined]
    assert record.size == 100_000  # type: ignore[attr-defined]
    assert framed.size == 100_000
    assert framed.size_verified
    assert len(heads) == 3


async def test_206_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    file = RangedFile(2 * MiB, seed=8)
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        file.cut_after(MiB, MiB // 2)
        with pytest.raises(DownloadError, match="cut 2 times"):
            await download(session, server.url_for("/f"), tmp_path / "f", max_resumes=1)
        # The server now answers every range with a Content-Range for another offset.
        server.serve("/f", _Lying(file))
        with pytest.raises(DownloadError, match="Content-Range"):
            await download(session, server.url_for("/f"), tmp_path / "f")


class _Lying:
    def __init__(self, file: RangedFile) -> None:
        self.file = file

    def received(self, conn: object) -> None:
        pass

    def respond(self, conn: object) -> None:
        conn.write_simple(  # type: ignore[attr-defined]
            206,
            [("Content-Range", f"bytes 0-9/{self.file.size}"), ("ETag", self.file.etag)],
            b"0123456789",
        )


async def test_retryable_status_before_the_body_is_retried_by_the_session(tmp_path: Path) -> None:
    file = RangedFile(MiB, seed=9)
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        server.script("/f", [Fault.status(503), Fault.rst()])
        result = await download(session, server.url_for("/f"), tmp_path / "f")
        assert server.count("/f") == 3
        assert result.requests == 1


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    async def call(**kwargs: object) -> None:
        async with aiohttp.ClientSession() as session:
            await download(session, "http://127.0.0.1:1/", **kwargs)  # type: ignore[arg-type]

    for kwargs, field in [
        ({"path": tmp_path}, "path"),
        ({"path": tmp_path / "no" / "f"}, "directory"),
        ({"path": tmp_path / "f", "sha256": "abc"}, "sha256"),
        ({"path": tmp_path / "f", "chunk_size": 0}, "chunk_size"),
        ({"path": tmp_path / "f", "headers": {"range": "bytes=1-"}}, "Range"),
    ]:
        with pytest.raises(ValueError, match=field):
            asyncio.run(call(**kwargs))


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp_resilient import download, resilient_session

    def progress(done, total):
        if done >= int(sys.argv[3]):
            print("killing", flush=True)
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)

    async def main():
        async with resilient_session() as session:
            await download(session, sys.argv[1], sys.argv[2], progress=progress)

    asyncio.run(main())
    """
)


async def test_killed_download_resumes_in_a_new_process(tmp_path: Path) -> None:
    file = RangedFile(16 * MiB, seed=10)
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/f", file)
        url = str(server.url_for("/f"))
        target = tmp_path / "f"
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CHILD,
            url,
            str(target),
            str(6 * MiB),
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONWARNINGS": "error"},
        )
        out, _ = await asyncio.wait_for(child.communicate(), 60)
        assert child.returncode == -9
        assert b"killing" in out
        kept = (tmp_path / "f.part").stat().st_size
        assert 6 * MiB <= kept < 16 * MiB
        result = await download(session, url, target, sha256=file.sha256())
    assert result.resumes == 1
    assert file.served[-1].status == 206
    assert file.served[-1].start == kept
