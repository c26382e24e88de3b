"""ResilientResponse: says why a body cut after the response was handed over was not retried."""

from __future__ import annotations

import aiohttp

from .._util._notes import add_note

__all__ = ["ResilientResponse"]


class ResilientResponse(aiohttp.ClientResponse):
    """The :class:`aiohttp.ClientResponse` that :func:`resilient_session` makes.

    A body the retry layer read inside its loop was retried when cut. A body it streamed to the
    caller (no ``Content-Length``, larger than ``max_buffer_size``, or buffering off) can only be
    cut while the caller reads it: ``read()``, ``text()`` and ``json()`` then raise aiohttp's
    :class:`aiohttp.ClientPayloadError` with a note saying so and how to get it retried.
    Reading ``resp.content`` directly gets the error without the note.
    """

    async def read(self) -> bytes:
        """Read the whole body (aiohttp's ``read()``), explaining a cut."""
        try:
            return await super().read()
        except aiohttp.ClientPayloadError as exc:
            add_note(exc, streamed_cut_note(self))
            raise


def streamed_cut_note(resp: aiohttp.ClientResponse) -> str:
    """Why a body cut while the caller read it was not retried, and what would retry it."""
    if resp.content_length is None:
        why = (
            "the body had no Content-Length (chunked), so it was streamed to you instead of "
            "read inside the retry loop (it might never end)"
        )
    else:
        why = (
            f"the body ({resp.content_length} bytes) was streamed to you instead of read inside "
            "the retry loop: it is larger than the policy's max_buffer_size, or buffering was "
            "off for this request (buffer_body=False, or a method the policy does not retry)"
        )
    return (
        f"aiohttp-resilient did not retry: {why}. To have a cut retried, wrap the function that "
        "sends the request and reads the body in @retry_on_disconnect, or raise "
        "RetryPolicy.max_buffer_size for bodies of known length"
    )
