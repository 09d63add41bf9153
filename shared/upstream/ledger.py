"""What the upstream client did for the caller: requests sent, whether one may have been worked, and
whether an answer came back with images.

The job handler asks this after a generation failed somewhere between the upstream call and the
archive: once a request may have been worked (:mod:`shared.upstream.work`), and surely once upstream
answered with images, whatever failed after it (the deadline, the archive, a bug) must not make the
job run again. The client writes to the ledger of the
calling task (a context variable), so the caller needs no handle on the client to read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class UpstreamCalls:
    """Requests that left this process for the images API, whether one may have been worked, and whether one was answered with images."""

    sent: int = 0  # attempts that began to leave (the request may reach upstream from here on)
    answered: bool = False
    # A request reached upstream whole and no answer has shown it did no work yet (the rule's verdict so far).
    may_have_worked: bool = False


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
