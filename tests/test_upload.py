"""upload_batches(): batches halved on 413 or reset, delivered exactly once by Idempotency-Key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import aiohttp
import pytest

from _helpers import raw_http_server
from aiohttp_resilient import RetryPolicy, resilient_session, upload_batches
from aiohttp_resilient.testing import Fault, FaultServer, IdempotentSink

LIMIT = 1_000_000  # the server's body limit, nginx's default order of size
FAST = RetryPolicy(attempts=8, backoff_base=0.01, backoff_max=0.05)
N = 10_000


def rows(n: int = N, pad: int = 300, start: int = 0) -> Iterator[dict[str, Any]]:
    for i in range(start, start + n):
        yield {"id": i, "pad": "x" * pad}


async def arows(n: int = N) -> AsyncIterator[dict[str, Any]]:
    for row in rows(n, pad=1000):
        yield row


@pytest.mark.parametrize("action", ["413", "rst"])
async def test_10000_items_over_a_1_mb_limit_arrive_exactly_once(
    action: Literal["413", "rst"],
) -> None:
    sink = IdempotentSink()
    async with (
        FaultServer(max_body=LIMIT, max_body_action=action) as server,
        resilient_session(policy=FAST) as session,
    ):
        server.serve("/batches", sink)
        # Some batches are applied, then the connection drops before the answer.
        server.random("/batches", {Fault.fin(): 0.15, Fault.rst(): 0.1}, seed=12)
        report = await upload_batches(
            session, server.url_for("/batches"), arows(), max_items=N, max_bytes=3_300_000
        )
    assert report.ok, report.failed
    assert report.items_sent == N
    assert report.batches_sent == len(sink.batches)
    # Server side: every item applied, none twice, although some batches arrived twice.
    assert sorted(sink.applied) == list(range(N))
    assert set(sink.applied.values()) == {1}
    assert sink.replays > 0
    refused = server.action_counts["413" if action == "413" else "max_body_rst"]
    assert report.splits >= 2
    assert refused >= report.splits
    assert max(r.body_size for r in server.records if r.action in ("ok", "fin", "rst")) <= LIMIT
    assert report.max_bytes <= LIMIT
    # Expect: 100-continue: a refused batch's body was never sent.
    assert all(r.body_size == 0 for r in server.records if r.action in ("413", "max_body_rst"))


async def test_one_item_too_big_on_its_own_is_reported_not_dropped() -> None:
    sink = IdempotentSink()
    items = [*rows(10), {"id": "huge", "pad": "y" * (LIMIT + 1)}, *rows(5, start=10)]
    async with FaultServer(max_body=LIMIT) as server, resilient_session(policy=FAST) as session:
        server.serve("/b", sink)
        report = await upload_batches(session, server.url_for("/b"), items, max_bytes=4 * LIMIT)
    assert not report.ok
    assert report.items_sent == 15
    assert report.items_failed == 1
    (failed,) = report.failed
    assert failed.first == 10
    assert failed.items[0]["id"] == "huge"
    assert "too big" in failed.reason
    assert sorted(sink.applied) == list(range(15))


async def test_stop_at_first_failure_reads_no_further() -> None:
    consumed: list[int] = []

    def numbered() -> Iterator[dict[str, int]]:
        for i in range(100):
            consumed.append(i)
            yield {"id": i}

    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.set_default("/b", Fault.status(400))
        report = await upload_batches(
            session, server.url_for("/b"), numbered(), max_items=10, stop_on_failure=True
        )
        assert server.count("/b") == 1
    assert report.stopped
    assert report.failed[0].status == 400
    assert report.items_failed == 10
    assert len(consumed) == 11  # the batch, and the item that would have started the next


async def test_gzip_json_lines_and_keys_from_content() -> None:
    sink = IdempotentSink()
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/b", sink)
        url = server.url_for("/b")
        for _ in range(2):  # the second run sends the same batches: the server applies none
            report = await upload_batches(
                session, url, rows(50), max_items=20, format="jsonl", gzip=True, upload_id="u1"
            )
            assert report.batches_sent == 3
        assert sorted(sink.applied) == list(range(50))
        assert sink.replays == 3
        # Without the same upload_id, a call is a new upload with keys of its own.
        await upload_batches(session, url, rows(50), max_items=20, format="jsonl", gzip=True)
    assert set(sink.applied.values()) == {2}
    assert sink.replays == 3
    heads = [r.headers for r in server.records]
    assert all(h["Content-Encoding"] == "gzip" for h in heads)
    assert all(h["Content-Type"] == "application/x-ndjson" for h in heads)
    assert len({h["Idempotency-Key"] for h in heads}) == 6


async def test_equal_batches_get_keys_of_their_own() -> None:
    """Repeated rows make batches with equal bytes: each is still applied, none dropped as a replay.

    Keyed by their bytes alone, the server applied 5 of 10 clicks, and 4 of 8 rows whose batch
    was split into equal halves, while the report said all were sent.
    """
    click = {"event": "click", "n": 1}
    row = {"pad": "x" * 300}
    sink = IdempotentSink()
    async with FaultServer(max_body=1500) as server, resilient_session(policy=FAST) as session:
        server.serve("/b", sink)
        clicks = await upload_batches(session, server.url_for("/b"), [click] * 10, max_items=5)
        split = await upload_batches(session, server.url_for("/b"), [row] * 8, max_bytes=10_000)
    assert clicks.ok
    assert clicks.items_sent == 10
    assert split.ok
    assert split.splits == 1
    assert split.items_sent == 8
    assert sink.applied[json.dumps(click, sort_keys=True)] == 10
    assert sink.applied[json.dumps(row, sort_keys=True)] == 8
    assert sink.replays == 0


async def test_reset_after_the_body_is_reported_not_split() -> None:
    async with FaultServer() as server, aiohttp.ClientSession() as session:
        server.script("/b", [Fault.rst()])
        report = await upload_batches(session, server.url_for("/b"), rows(5))
    # A plain session does not retry a POST that reached the server, and a reset after the body
    # went out whole is no sign of size: the batch is reported, not split.
    assert server.count("/b") == 1
    assert report.splits == 0
    assert report.items_failed == 5


async def test_one_reset_while_sending_does_not_shrink_later_batches() -> None:
    """A flaky link, not a size limit: one reset splits its batch, and that is all.

    Every reset before the body went out lowered max_bytes for the rest of the run, so a flaky
    link drove the upload toward one-item batches.
    """
    sizes: list[int] = []

    async def answer(head: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        sizes.append(len(json.loads(body)))
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        return True

    resets = iter([True])  # the first request is reset before its body, the others are served

    def reset(head: str) -> bool:
        return next(resets, False)

    async with raw_http_server(answer, reset=reset) as (url, heads):
        async with aiohttp.ClientSession() as session:  # no retries: the upload sees the reset
            report = await upload_batches(session, url + "/b", rows(40), max_items=10)
    assert len(heads) == 6
    assert sizes == [5, 5, 10, 10, 10]
    assert report.ok
    assert report.splits == 1
    assert report.max_bytes == 1_000_000


async def test_resets_that_repeat_still_shrink_later_batches() -> None:
    """A body limit answered by resets: later batches come down below it, even without retries."""
    sink = IdempotentSink()
    async with FaultServer(max_body=10_000, max_body_action="rst") as server:
        server.serve("/b", sink)
        async with aiohttp.ClientSession() as session:
            report = await upload_batches(session, server.url_for("/b"), rows(200), max_items=50)
    assert report.ok
    assert sorted(sink.applied) == list(range(200))
    assert report.max_bytes <= 10_000
    # Once lowered, batches fit: far fewer refusals than one per batch of 50.
    assert server.action_counts["max_body_rst"] < 200 // 50 * 2


async def test_a_batch_reset_on_every_attempt_of_the_session_shrinks_at_once() -> None:
    """The session's middleware retried the batch (its key makes it idempotent): a repeat."""
    sink = IdempotentSink()
    policy = RetryPolicy(attempts=3, backoff_base=0.01, backoff_max=0.02)
    async with (
        FaultServer(max_body=5000, max_body_action="rst") as server,
        resilient_session(policy=policy) as session,
    ):
        server.serve("/b", sink)
        report = await upload_batches(session, server.url_for("/b"), rows(24), max_bytes=100_000)
    assert server.action_counts["max_body_rst"] == 3  # all on the first batch, by the session
    assert report.splits == 1
    assert report.max_bytes < 5000
    assert sorted(sink.applied) == list(range(24))


def test_bad_arguments_are_named() -> None:
    import asyncio

    async def call(**kwargs: Any) -> None:
        async with aiohttp.ClientSession() as session:
            await upload_batches(session, "http://127.0.0.1:1/", **kwargs)

    for kwargs, field in [
        ({"items": [], "max_items": 0}, "max_items"),
        ({"items": [], "max_bytes": -1}, "max_bytes"),
        ({"items": [], "format": "xml"}, "format"),
        ({"items": "abc"}, "items"),
        ({"items": [], "headers": {"idempotency-key": "k"}}, "Idempotency-Key"),
        ({"items": [object()]}, r"items\[0\]"),
        ({"items": [], "upload_id": ""}, "upload_id"),
    ]:
        with pytest.raises(ValueError, match=field):
            asyncio.run(call(**kwargs))


async def test_the_policys_idempotency_header_is_refused_in_headers() -> None:
    policy = RetryPolicy(idempotency_header="X-Request-Key")
    async with FaultServer() as server, resilient_session(policy=policy) as session:
        url = server.url_for("/b")
        for name, named in [("x-request-key", "X-Request-Key"), ("Idempotency-Key", "Idempotency")]:
            with pytest.raises(ValueError, match=f"must not set {named}"):
                await upload_batches(session, url, rows(2), headers={name: "k"})
        assert server.count("/b") == 0


async def test_415_to_gzip_sends_plain_from_then_on() -> None:
    sink = IdempotentSink()
    async with FaultServer() as server, resilient_session(policy=FAST) as session:
        server.serve("/b", sink)
        server.script("/b", [Fault.status(415)])
        report = await upload_batches(
            session, server.url_for("/b"), rows(30), max_items=10, gzip=True
        )
    assert report.ok
    assert report.batches_sent == 3
    encodings = [r.headers.get("Content-Encoding") for r in server.records]
    assert encodings == ["gzip", None, None, None]
    assert sorted(sink.applied) == list(range(30))


async def test_the_plain_resend_after_a_chunked_415_does_not_wait_for_its_own_slot() -> None:
    """Under limit_per_host=1 the 415's connection holds the host's only slot until released.

    The plain re-send was made inside the 415's ``async with``: with a chunked 415 body still
    coming, it waited for the slot its own 415 held, until the deadline.
    """
    done = asyncio.Event()

    async def answer(head: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if "\r\ncontent-encoding: gzip" in head.lower():
            writer.write(b"HTTP/1.1 415 Unsupported Media Type\r\nTransfer-Encoding: chunked\r\n")
            writer.write(b"\r\n5\r\nno gz\r\n")  # the rest of the body never comes
            await writer.drain()
            await asyncio.wait_for(done.wait(), 10)
            return False
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        return True

    async with (
        raw_http_server(answer) as (url, heads),
        resilient_session(policy=FAST, limit_per_host=1) as session,
    ):
        try:
            report = await asyncio.wait_for(
                upload_batches(session, url + "/b", rows(3), gzip=True), 5
            )
        finally:
            done.set()
    assert report.ok
    assert len(heads) == 2
    assert "content-encoding" not in heads[1].lower()
