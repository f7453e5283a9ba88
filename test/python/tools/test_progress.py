"""The tools' one progress bar (tools/plumbing.ProgressBar) as the search and the benchmarks drive it: the
`StageBars` callback they report to (`on_progress(done, total, text)`), with a fake clock."""

from __future__ import annotations

import io
import re

from qtrain.tools.plumbing import StageBars, stage_bars

LINE = re.compile(r"^tool: \[(?P<bar>[#-]{24})\] (?P<label>[a-z ]+) (?P<done>\d+)/(?P<total>\d+)  elapsed \d+s  "
                  r"ETA (\?|\d+s)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_a_second_and_the_last_one():
    now = [0.0]
    out = io.StringIO()
    bars = StageBars("tool", out, clock=lambda: now[0])
    for done in range(21):
        now[0] = 0.25 * done  # 4 reports a second
        bars(done, 20, "contribution analysis")
    lines = out.getvalue().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [int(m["done"]) for m in parsed] == [0, 4, 8, 12, 16, 20]  # first, then a line a second, the last
    assert [m["bar"].count("#") for m in parsed] == [24 * d // 20 for d in (0, 4, 8, 12, 16, 20)]
    assert lines[0].endswith("ETA ?") and {m["label"] for m in parsed} == {"contribution analysis"}
    assert lines[-1].endswith("ETA 0s")


def test_each_stage_gets_its_own_bar_also_when_it_repeats():
    now = [0.0]
    out = Terminal()
    bars = StageBars("tool", out, clock=lambda: now[0])
    for label, total in [("contribution analysis", 3), ("evolutionary search", 2), ("evolutionary search", 2),
                         ("empty", 0)]:
        for done in range(total + 1):
            now[0] += 1
            bars(done, total, label)
    text = out.getvalue()
    finished = [line for line in text.split("\n") if line]
    # every stage ends its line once, with its last state
    assert len(finished) == 3 and all(re.search(r"(\d+)/\1  ", line) for line in finished)
    assert text.count("evolutionary search 0/2") == 2 and "empty" not in text
    assert text.count("\r") >= 7


def test_quiet_means_no_callback():
    assert stage_bars("tool", False) is None and isinstance(stage_bars("tool", True), StageBars)
