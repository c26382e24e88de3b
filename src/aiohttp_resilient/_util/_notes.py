"""PEP 678 notes on exceptions, on every supported Python."""

from __future__ import annotations

__all__ = ["add_note"]


def add_note(error: BaseException, note: str) -> None:
    """Add ``note`` to ``error`` once (shown under its traceback from Python 3.11 on)."""
    notes = getattr(error, "__notes__", ())
    if note in notes:
        return
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # Python 3.10: PEP 678's attribute, as the exceptiongroup backport sets it
        error.__notes__ = [*notes, note]  # type: ignore[attr-defined]
