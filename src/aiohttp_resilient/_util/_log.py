"""The library's logger and the structured fields every record carries."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from .._health._limiter import format_host

if TYPE_CHECKING:
    from .._health._limiter import HostKey

__all__ = ["log_fields", "logger"]

#: Every retry (INFO) and give-up (WARNING) is logged here, secrets redacted.
logger: Final = logging.getLogger("aiohttp_resilient")


def log_fields(
    event: str, method: str | None, url: str | None, key: HostKey | None, **facts: object
) -> dict[str, object]:
    """The ``extra=`` fields of a log record: ``event``, ``method``, ``url`` (redacted),
    ``host`` and the facts given (none of these names is a :class:`logging.LogRecord`
    attribute, so they cannot clash)."""
    return {
        "event": event,
        "method": method,
        "url": url,
        "host": None if key is None else format_host(key),
        **facts,
    }
