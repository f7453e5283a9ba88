"""Progress bars on stderr for the tools that drive long searches and benchmarks.

`Progress` draws one bar; `ProgressBars` is the `on_progress(done, total, text)` callback of
`qtrain.search` (`qtrain.search.progress`) drawing a bar per stage the search reports.
"""

from __future__ import annotations

import math
import sys
import time
from typing import IO


class Progress:
    """A text progress bar on stderr: `label [#####.....] done/total, elapsed, ETA`.

    On a terminal it redraws one line; otherwise it prints a line every 10% (logs stay readable).
    """

    def __init__(self, label: str, total: int, stream: IO[str] | None = None, enabled: bool = True):
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_decile = -1
        if self.enabled:
            self._draw()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.enabled:
            self._draw()

    def _draw(self) -> None:
        elapsed = time.perf_counter() - self.start
        width = 30
        filled = int(width * self.done / self.total)
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}, "
                f"{_duration(elapsed)} elapsed, ETA {_duration(eta) if self.done else '?'}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
            self.stream.flush()
            return
        decile = 10 * self.done // self.total
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(line + "\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressBars:
    """An `on_progress(done, total, text)` callback that draws a `Progress` bar per stage: a report with
    done = 0 (or a new text) starts a bar labelled `text`, later reports move it to `done`."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream
        self.bar: Progress | None = None

    def __call__(self, done: int, total: int, text: str) -> None:
        if done == 0 or self.bar is None or self.bar.label != text:
            self.bar = Progress(text, total, self.stream)
        if done > self.bar.done:
            self.bar.advance(done - self.bar.done)


def progress_bars(enabled: bool, stream: IO[str] | None = None) -> ProgressBars | None:
    """The callback for a tool's `--quiet` (enabled = not quiet): bars on `stream`, or none."""
    return ProgressBars(stream) if enabled else None
