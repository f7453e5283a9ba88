"""How the search reports progress: a callback the caller passes, so the library never draws anything.

The search calls `on_progress(0, total, text)` when a stage starts (`text` names it: "contribution
analysis", "evolutionary search", or the label given to `FineTuneRunner.run`) and
`on_progress(done, total, text)` after each of its `total` units of work (fine-tuning runs,
generations). A stage may start again with the same text (one evolutionary search per budget).
The command-line tools draw progress bars from these calls (`qtrain.tools.plumbing.StageBars`).
"""

from __future__ import annotations

from typing import Protocol


class ProgressCallback(Protocol):
    def __call__(self, done: int, total: int, text: str) -> None: ...


def report(on_progress: ProgressCallback | None, done: int, total: int, text: str) -> None:
    """Calls `on_progress` if there is one."""
    if on_progress is not None:
        on_progress(done, total, text)
