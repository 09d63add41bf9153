"""One total time limit for everything a call does: booked waits, every attempt on every backend, body reads.

A :class:`Deadline` is made once, where the caller's time starts: when an HTTP request arrives (a
synchronous answer must leave within the front end's 230 s) or when a queue delivery starts (a job
must end within host.json's ``functionTimeout``). Everything below it takes what is left: a wait
never outlasts it, an attempt gets the rest of it and never a fresh timeout of its own.

The clock is an input (monotonic seconds by default): tests move it instead of waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Deadline:
    """``seconds`` from now on ``clock``; :meth:`remaining` is what any step may still take."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic, started: float | None = None) -> None:
        """``started``: when the caller's time began on ``clock`` (default: now), e.g. when a request arrived."""
        self.clock = clock
        self.total = seconds
        self.at = (clock() if started is None else started) + seconds

    def remaining(self) -> float:
        """Seconds left (0 once it has passed)."""
        return max(0.0, self.at - self.clock())

    @property
    def passed(self) -> bool:
        """True once nothing is left."""
        return self.remaining() <= 0

    def __repr__(self) -> str:
        return f"Deadline({self.total:g} s, {self.remaining():.3f} s left)"
