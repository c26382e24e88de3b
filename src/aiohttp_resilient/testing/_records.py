"""What the server saw: a record per request, and counts kept even when records are off."""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from ._endpoint import Exchange

__all__ = ["RECORDED_BODY_LIMIT", "Ledger", "RecordedRequest"]

#: Bytes of each request body kept in :attr:`RecordedRequest.body`; the size is always exact.
RECORDED_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server saw it.

    Attributes:
        method: The request method, e.g. ``"GET"``.
        path: The request target without the query string.
        query: The query string without ``?`` (empty when there is none).
        headers: Request headers, case-insensitive.
        body_size: Exact number of body bytes received (after de-chunking).
        body: The first 64 KiB of the body.
        conn_id: 1-based number of the connection it came on (never reused by one server).
        seq_on_conn: 1-based position of this request on its connection.
        action: What the server did: a fault kind (``"ok"``, ``"status"``, ``"fin"``, ``"rst"``,
            ``"partial_status"``, ``"cut_body"``, ``"hang"``, ``"drip"``), ``"413"`` or
            ``"max_body_rst"`` (body over ``max_body``), ``"dropped"`` (``require_header``
            missing), or ``"aborted"`` (the connection went away before the response was
            written: the body was incomplete, or the connection was dropped while the response
            was held for ``service_time``).
        shed: Why the server refused the request instead of serving it: ``"outage"``,
            ``"rate"`` (over ``rate_limit``) or ``"capacity"`` (over ``capacity``); ``None`` when
            it was served (its fault then came from the scripts, rules and defaults).
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body_size: int
    body: bytes
    conn_id: int
    seq_on_conn: int
    action: str
    shed: str | None = None


class Ledger:
    """Counts per path and method, action, shed reason and request id; records when asked.

    Args:
        record: Keep a :class:`RecordedRequest` per request in :attr:`records`.
    """

    __slots__ = ("_counts", "action_counts", "record", "records", "request_ids", "shed_counts")

    def __init__(self, *, record: bool) -> None:
        self.record = record
        self.records: list[RecordedRequest] = []
        self.action_counts: dict[str, int] = collections.Counter()
        self.shed_counts: dict[str, int] = collections.Counter()
        self.request_ids: collections.Counter[str] = collections.Counter()
        self._counts: dict[tuple[str, str], int] = {}

    def arrived(self, path: str, method: str, request_id: str | None) -> None:
        """A request head was read."""
        key = (path, method)
        self._counts[key] = self._counts.get(key, 0) + 1
        if request_id is not None:
            self.request_ids[request_id] += 1

    def finished(self, request: Exchange, action: str, shed: str | None) -> None:
        """The server did ``action`` with ``request`` (refused it for ``shed``, if not None)."""
        self.action_counts[action] += 1
        if shed is not None:
            self.shed_counts[shed] += 1
        if self.record:
            self.records.append(
                RecordedRequest(
                    method=request.method,
                    path=request.path,
                    query=request.query,
                    headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                    body_size=request.body_size,
                    body=bytes(request.body[:RECORDED_BODY_LIMIT]),
                    conn_id=request.conn_id,
                    seq_on_conn=request.seq,
                    action=action,
                    shed=shed,
                )
            )

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Requests whose head was read, to ``path`` and/or with ``method`` (None: any)."""
        if method is not None:
            method = method.upper()
        return sum(
            n
            for (p, m), n in self._counts.items()
            if (path is None or p == path) and (method is None or m == method)
        )

    def duplicate_ids(self) -> dict[str, int]:
        """Request ids that arrived more than once, with their counts."""
        return {rid: n for rid, n in self.request_ids.items() if n > 1}

    def clear(self) -> None:
        """Forget every record and count (the containers stay the same objects)."""
        self.records.clear()
        self._counts.clear()
        self.action_counts.clear()
        self.shed_counts.clear()
        self.request_ids.clear()
