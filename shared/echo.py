"""Caller input as it may appear in an error message or a ``param``: escaped and capped.

A refusal names what was wrong, so it repeats some of what the caller sent. That echo is
bounded (a 250,000-character model name must not come back whole), escaped (a newline or
an unpaired surrogate cannot break a log line or the UTF-8 of the answer) and says how
long the original was, so nothing is hidden by the cut.
"""

from __future__ import annotations

ECHO_LIMIT = 100  # characters of caller input repeated in one message or param


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message: at most ``limit`` characters, then ``… (N characters)``."""
    if isinstance(value, str) and len(value) > limit:
        return f"{repr(value[:limit])[:limit]}… ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def capped(text: str, limit: int = ECHO_LIMIT) -> str:
    """A name the caller sent, as a ``param``: itself when short and printable, else escaped and cut."""
    # isprintable() is False for controls, separators other than space and unpaired surrogates.
    if len(text) <= limit and text.isprintable():
        return text
    escaped = text[:limit].encode("unicode_escape").decode("ascii")[:limit]
    return escaped if len(text) <= limit else f"{escaped}…"

