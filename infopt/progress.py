"""Progress that shows on a terminal AND in a log: a rich bar on a TTY, periodic plain lines otherwise.

Long steps (training epochs, benchmark sweeps, pre-training) must not be silent when their output goes to
a file or a CI log, where rich's live bar prints nothing until it ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

LOG_EVERY_S = 15.0  # one line per task at most this often when the output is not a terminal


@dataclass
class Tracker:
    """advance()/update() like rich's Progress, for one task."""

    description: str
    total: int
    _bar: Any = None
    _task: Any = None
    done: int = 0
    info: str = ""
    _began: float = field(default_factory=time.monotonic)
    _last_line: float = field(default_factory=time.monotonic)

    def advance(self, steps: int = 1, info: str | None = None) -> None:
        self.done += steps
        if info is not None:
            self.info = info
        if self._bar is not None:
            self._bar.update(self._task, advance=steps, info=self.info, description=self.description)
            return
        now = time.monotonic()
        if now - self._last_line >= LOG_EVERY_S or self.done >= self.total:
            self._last_line = now
            print(
                f"{self.description}: {self.done}/{self.total} {self.info} ({now - self._began:.0f}s)".rstrip(),
                flush=True,
            )

    def describe(self, description: str) -> None:
        self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=description)


@contextmanager
def progress(description: str, total: int, *, transient: bool = True) -> Iterator[Tracker]:
    """A progress tracker: a live bar when stdout is a terminal, else a line every LOG_EVERY_S seconds."""
    tracker = Tracker(description=description, total=total)
    if not sys.stdout.isatty():
        print(f"{description}: 0/{total}", flush=True)
        yield tracker
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=transient) as bar:
        tracker._bar, tracker._task = bar, bar.add_task(description, total=total, info="")
        yield tracker
