"""Where each line stands, and how a person sees it: a rich live bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# Every state a line goes through, in the order a person reads them.
ACTIVE = ("waiting", "submitted", "queued", "running", "downloading")
FINAL = ("succeeded", "skipped", "failed", "invalid", "changed")
FROM_SERVICE = {"notRunning": "queued", "running": "running", "succeeded": "downloading", "failed": "failed"}


class Tally:
    """The state of every line, and the run's throughput (``clock`` is an input: tests pass their own)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.states: dict[int, str] = {}
        self.clock = clock
        self.started = clock()

    def set(self, line: int, state: str) -> None:
        """Move a line to ``state``."""
        self.states[line] = state

    def counts(self) -> Counter[str]:
        """Lines per state."""
        return Counter(self.states.values())

    @property
    def total(self) -> int:
        """Lines in the file (blank lines aside)."""
        return len(self.states)

    @property
    def done(self) -> int:
        """Lines in a final state."""
        return sum(n for state, n in self.counts().items() if state in FINAL)

    def per_minute(self) -> float:
        """Lines that succeeded in this run, per minute so far."""
        minutes = max(self.clock() - self.started, 1e-9) / 60
        return self.counts()["succeeded"] / minutes

    def describe(self) -> str:
        """``succeeded 12 · running 3 · failed 1`` (states with no line left out)."""
        counts = self.counts()
        return " · ".join(f"{state} {counts[state]}" for state in (*FINAL, *ACTIVE) if counts[state])


class Reporter(Protocol):
    """What the batch tells a person (or a test) as it goes."""

    def changed(self, tally: Tally) -> None: ...
    def finished(self, result: Any, tally: Tally) -> None: ...
    def close(self, tally: Tally) -> None: ...


class SilentReporter:
    """Reports nothing (the library's default)."""

    def changed(self, tally: Tally) -> None:
        """Nothing."""

    def finished(self, result: Any, tally: Tally) -> None:
        """Nothing."""

    def close(self, tally: Tally) -> None:
        """Nothing."""


class PlainReporter:
    """One line per finished request, then a summary: for logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def changed(self, tally: Tally) -> None:
        """Nothing: a log gets a line when something finishes."""

    def finished(self, result: Any, tally: Tally) -> None:
        """``[7/30] line 4 succeeded b1f…: b1f…-0.png``."""
        self.console.print(f"[{tally.done}/{tally.total}] {result.summary()}", markup=False, highlight=False, soft_wrap=True)

    def close(self, tally: Tally) -> None:
        """The counts and the throughput."""
        self.console.print(f"done: {tally.describe()} ({tally.per_minute():.1f} succeeded/min)", markup=False, highlight=False)


class RichReporter:
    """A live bar with the counts per state and the throughput; problems printed above it as they happen."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[states]}"),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("batch", total=None, states="", rate="")
        self.progress.start()

    def changed(self, tally: Tally) -> None:
        """Redraw the counts."""
        self.progress.update(self.task, total=tally.total, completed=tally.done, states=tally.describe(), rate=f"{tally.per_minute():.1f}/min")

    def finished(self, result: Any, tally: Tally) -> None:
        """Print what went wrong with a line; successes only move the bar."""
        if result.state in ("failed", "invalid", "changed"):
            self.progress.console.print(result.summary(), markup=False, highlight=False)
        self.changed(tally)

    def close(self, tally: Tally) -> None:
        """Leave the final bar on screen."""
        self.changed(tally)
        self.progress.stop()


def reporter_for(console: Console) -> Reporter:
    """A live bar on a terminal, plain lines when the output is a file or a pipe."""
    return RichReporter(console) if console.is_terminal else PlainReporter(console)
