"""What the upstream client did for the caller: requests sent, and whether an answer came back with images.

The job handler asks this after a generation failed somewhere between the upstream call and the
archive: once upstream answered with images, the image is billed, so whatever failed after it
(the archive, a bug) must not make the job run again. The client writes to the ledger of the
calling task (a context variable), so the caller needs no handle on the client to read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class UpstreamCalls:
    """Requests that left this process for the images API, and whether one was answered with images."""

    sent: int = 0
    answered: bool = False


_CURRENT: ContextVar[UpstreamCalls | None] = ContextVar("upstream_calls", default=None)


@contextmanager
def track_upstream() -> Iterator[UpstreamCalls]:
    """Record the upstream calls made inside this block (in this task) in the ledger it yields."""
    calls = UpstreamCalls()
    token = _CURRENT.set(calls)
    try:
        yield calls
    finally:
        _CURRENT.reset(token)


def current_calls() -> UpstreamCalls:
    """The ledger of the enclosing :func:`track_upstream` block, or a fresh one nobody reads."""
    return _CURRENT.get() or UpstreamCalls()
