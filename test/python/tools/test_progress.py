"""The tools' progress bars: `Progress` and the `ProgressBars` callback the search reports to."""

from __future__ import annotations

import io
import re

from qtrain.tools.progress import Progress, ProgressBars, progress_bars

LINE = re.compile(r"^(?P<label>[a-z ]+) \[(?P<bar>[#.]{30})\] (?P<done>\d+)/(?P<total>\d+), \d+s elapsed, "
                  r"ETA (\?|\d+s)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_per_tenth() -> None:
    out = io.StringIO()
    bars = ProgressBars(out)
    for done in range(21):
        bars(done, 20, "contribution analysis")
    lines = out.getvalue().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m["done"]) for m in parsed] == list(range(0, 21, 2))  # one per decile, 0% and 100% included
    assert [m["bar"].count("#") for m in parsed] == [30 * d // 20 for d in range(0, 21, 2)]
    assert lines[0].endswith("ETA ?") and {m["label"] for m in parsed} == {"contribution analysis"}


def test_the_callback_draws_what_a_bar_draws() -> None:
    """The search's reports, drawn: the same output as driving `Progress` by hand (what the tools did before
    the search reported through a callback), a new bar for each stage, also when a stage repeats."""
    stages = [("contribution analysis", 7), ("evolutionary search", 3), ("evolutionary search", 3), ("empty", 0)]
    for stream_type in (io.StringIO, Terminal):
        by_hand, by_callback = stream_type(), stream_type()
        bars = ProgressBars(by_callback)
        for label, total in stages:
            bar = Progress(label, total, by_hand)
            bars(0, total, label)
            for done in range(1, total + 1):
                bar.advance()
                bars(done, total, label)
        assert by_callback.getvalue() == by_hand.getvalue()
        text = by_hand.getvalue()
        assert text.count("evolutionary search [") >= 2 and "empty" not in text
    terminal = Terminal()
    ProgressBars(terminal)(0, 2, "x")
    assert terminal.getvalue().startswith("\rx [") and not terminal.getvalue().endswith("\n")


def test_quiet_means_no_callback() -> None:
    assert progress_bars(False) is None and isinstance(progress_bars(True), ProgressBars)
