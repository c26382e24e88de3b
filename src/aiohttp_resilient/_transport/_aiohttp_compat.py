"""Every piece of aiohttp's private API the library relies on, in one place.

aiohttp is pinned to ``>=3.14.4,<4``, and a release within that range may rename any of these
without notice: ``tests/test_aiohttp_compat.py`` asserts that each still exists and behaves as
assumed, so such a release fails a test that names what broke. The other user of private API
is ``TrackingConnector`` (``_connector.py``), a ``TCPConnector`` subclass whose pool overrides
(``_get``, ``_create_connection``, the protocol factory) the same test checks.
"""

from __future__ import annotations

import copy
from typing import Final

import aiohttp
import aiohttp.client
import aiohttp.connector
from aiohttp import ClientMiddlewareType, ClientRequest

__all__ = [
    "HIDDEN_RETRY_ERRORS",
    "HIDDEN_RETRY_METHODS",
    "NEEDS_CLEANUP_CLOSED",
    "clone_request",
    "hidden_retry_on",
    "renew_expect_continue",
    "session_middlewares",
    "set_session_middlewares",
    "turn_off_hidden_retry",
]

#: The methods whose request ``ClientSession._request`` sends once more, at once, after a
#: ``ClientOSError`` or ``ServerDisconnectedError``: aiohttp's hidden retry (since 3.10).
HIDDEN_RETRY_METHODS: Final = frozenset(aiohttp.client.IDEMPOTENT_METHODS)
#: The errors that make aiohttp's hidden retry re-run the whole middleware chain.
HIDDEN_RETRY_ERRORS: Final = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)
#: Whether ``TCPConnector(enable_cleanup_closed=True)`` works on this Python (elsewhere aiohttp
#: ignores it with a DeprecationWarning).
NEEDS_CLEANUP_CLOSED: Final = bool(aiohttp.connector.NEEDS_CLEANUP_CLOSED)


def clone_request(req: ClientRequest) -> ClientRequest | None:
    """A copy of ``req`` that can be sent while it is in flight (a hedge), with its own headers;
    ``None`` while ``req``'s body is still being written. The body payload is shared, so only a
    body that can be written twice (none, or bytes) may be cloned.

    aiohttp has no public way to copy a request: ``send()`` keeps its state on the instance
    (``response``, and the body writer task, which is dropped when it is done). A shallow copy
    made once the writer is done starts clean: its own ``send()`` sets both anew.
    """
    if req._writer is not None:  # a copy would share the running writer's bookkeeping
        return None
    clone = copy.copy(req)
    clone.headers = req.headers.copy()  # send() sets Connection and Content-Type on each
    clone.response = None
    return clone


def hidden_retry_on(session: aiohttp.ClientSession) -> bool:
    """Whether ``session`` still runs aiohttp's hidden retry (``_retry_connection``)."""
    return bool(getattr(session, "_retry_connection", False))


def turn_off_hidden_retry(session: aiohttp.ClientSession) -> None:
    """Switch aiohttp's hidden retry off in ``session``: the middleware owns retries. aiohttp
    has no public switch; its ``TestClient`` sets the same attribute."""
    session._retry_connection = False


def session_middlewares(session: aiohttp.ClientSession) -> tuple[ClientMiddlewareType, ...]:
    """``session``'s middleware chain, outermost first (aiohttp keeps it privately)."""
    return tuple(getattr(session, "_middlewares", None) or ())


def set_session_middlewares(
    session: aiohttp.ClientSession, middlewares: tuple[ClientMiddlewareType, ...]
) -> None:
    """Replace ``session``'s middleware chain (no public way puts one around another)."""
    session._middlewares = middlewares


def renew_expect_continue(req: ClientRequest) -> None:
    """Give ``req`` a fresh "100 Continue" waiter if its last attempt spent it.

    aiohttp makes one waiter per request (``_continue``); reused, a spent one ends the next
    attempt's body writer at once (cancelled), which closes the connection before the response
    is read (an AttributeError on Python 3.12+).
    """
    waiter = getattr(req, "_continue", None)
    if waiter is not None and waiter.done():
        req.update_expect_continue(True)
