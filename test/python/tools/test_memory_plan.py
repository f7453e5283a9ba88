"""The memory-plan picture (tools/memory_plan.py) and the data the planner exports for it (memory.json).

The PNG is decoded back and probed where the layout put things: a buffer's box has its kind's colour,
the budget and peak lines are where the figures say, the legend has every colour. memory.html holds the
same picture with one tooltip per buffer and a table row per buffer, and no script or remote resource.
"""

from __future__ import annotations

import json
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from testpaths import LIT_INPUTS

from qtrain.interpreter import load_module
from qtrain.tools.memory_plan import (
    BUDGET,
    KIND_COLOURS,
    PEAK,
    Line,
    Rect,
    buffer_kind,
    layout,
    render_html,
    render_png,
    write_memory_plan,
)
from qtrain.transforms.pipeline import apply_passes, training_passes


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """memory.json of the tiny model with every tensor trainable, under a 16 KB budget."""
    path = tmp_path_factory.mktemp("plan") / "memory.json"
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    apply_passes(module, training_passes("full", sram_kb=16, memory_report=str(path)))
    return json.loads(path.read_text())


def decode_png(data: bytes) -> np.ndarray:
    """RGB8 PNG without interlace, every row with filter 0 (what charts.encode_png writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, size = 8, b"", (0, 0)
    while at < len(data):
        (length,), kind = struct.unpack(">I", data[at:at + 4]), data[at + 4:at + 8]
        body = data[at + 8:at + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(rows[:, 0] == 0)
    return rows[:, 1:].reshape(h, w, 3)


def test_the_schedule_marks_the_loss_phases_and_saved_activations(report: dict) -> None:
    schedule = report["schedule"]
    ops = schedule["ops"]
    boundary = schedule["backward_start"]
    assert schedule["function"] == "train_step" and report["budget_bytes"] == 16 * 1024
    assert ops[boundary - 1]["op"] == "qtrain.cross_entropy"  # the loss ends the forward pass
    assert {o["phase"] for o in ops[:boundary]} <= {"param", "forward"}
    assert {o["phase"] for o in ops[boundary:]} <= {"param", "backward", "update"}
    assert all((o["phase"] == "param") == (o["op"] == "qtrain.get_param") for o in ops)
    assert all((o["phase"] == "update") == (o["op"] == "qtrain.sgd_update") for o in ops)
    assert {o["layer"] for o in ops if o["phase"] == "update"} == {"conv0", "conv1", "conv2", "conv3"}
    assert 0 <= schedule["peak_index"] < len(ops) and report["peak_op"].startswith(f"@train_step "
                                                                                    f"#{schedule['peak_index']} ")
    for b in report["buffers"]:
        crosses = b["start"] < boundary <= b["end"]
        assert b["saved_for_backward"] == (crosses and b["kind"] in ("activation", "input")), b
        assert b["op"] == ("argument" if b["kind"] == "input" else ops[b["start"]]["op"])
    # with every weight trained, every conv's input is saved for its weight gradient
    assert sum(b["saved_for_backward"] for b in report["buffers"]) >= 3


def test_the_png_draws_each_buffer_where_the_plan_puts_it(report: dict, tmp_path: Path) -> None:
    write_memory_plan(report, tmp_path / "plan.png")
    img = decode_png((tmp_path / "plan.png").read_bytes())
    pic = layout(report)
    assert img.shape == (pic.height, pic.width, 3)
    boxes = {item.buffer: item for item in pic.items if isinstance(item, Rect) and item.buffer is not None}
    assert sorted(boxes) == list(range(len(report["buffers"])))
    scale = None
    for i, b in enumerate(report["buffers"]):
        box, colour = boxes[i], KIND_COLOURS[buffer_kind(b)]
        assert box.fill == colour and f"{b['bytes']} B at offset {b['offset']}.." in box.tooltip
        # height proportional to the bytes, bottom edge at the offset (y grows down as the offset grows up)
        scale = scale or (box.y1 - box.y0) / b["bytes"]
        assert box.y1 - box.y0 == pytest.approx(scale * b["bytes"], rel=1e-6)
        assert box.x1 > box.x0
        drawn = [r for r in boxes.values() if r.x0 < box.x1 and box.x0 < r.x1 and r.y0 < box.y1 and box.y0 < r.y1
                 and r is not box]
        if box.x1 - box.x0 >= 6 and box.y1 - box.y0 >= 6 and not drawn:  # its inside has its colour
            y, x = int((box.y0 + box.y1) / 2), int(box.x0 + 2)
            assert tuple(img[y, x]) == colour, b
    # x follows the schedule (parameter reads take no room): a later start is not further left, a later
    # end is further right
    for i, a in enumerate(report["buffers"]):
        for j, b in enumerate(report["buffers"]):
            if a["start"] < b["start"]:
                assert boxes[i].x0 <= boxes[j].x0
            if a["end"] < b["end"]:
                assert boxes[i].x1 < boxes[j].x1
    # the peak, the budget (16 KB is 7x the peak: a note instead of a line), the boundary, the legend
    texts = " ".join(getattr(item, "text", "") for item in pic.items)
    peak = report["peak_sram_bytes"]
    assert f"peak {peak / 1024:.1f} KB" in texts
    assert f"budget 16.0 KB: above this chart ({16384 / peak:.1f}x the peak)" in texts
    assert "<- forward" in texts and "backward and updates ->" in texts
    near = dict(report, budget_bytes=int(peak * 1.25))  # a budget close to the peak is a red dashed line
    close = layout(near)
    across = [i for i in close.items if isinstance(i, Line) and i.y0 == i.y1 and i.x1 - i.x0 > 500 and i.dashed]
    budget_line = [i for i in across if i.colour == BUDGET]
    peak_line = [i for i in across if i.colour == PEAK]
    assert len(budget_line) == len(peak_line) == 1
    assert budget_line[0].y0 < peak_line[0].y0  # higher on the page
    bottom = max(r.y1 for r in close.items if isinstance(r, Rect) and r.buffer is not None)  # offset 0
    assert (bottom - budget_line[0].y0) / (bottom - peak_line[0].y0) == pytest.approx(1.25, rel=1e-3)
    drawn = render_png(close)
    y = int(round(budget_line[0].y0))
    assert np.sum(np.all(drawn[y] == BUDGET, axis=1)) > 0.3 * (budget_line[0].x1 - budget_line[0].x0)
    for kind in {buffer_kind(b) for b in report["buffers"]} | {"trainable", "scratch"}:
        assert np.any(np.all(img[:, pic.width - 330:] == KIND_COLOURS[kind], axis=2)), kind


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.titles_in_rect_groups = 0
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "title" and self.stack[-2:] == ["g", "rect"] or tag == "title" and self.stack[-1:] == ["g"]:
            self.titles_in_rect_groups += 1
        if tag == "tr":
            self.rows += 1
        if tag not in ("rect", "line", "meta"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag):]


def test_memory_html_has_a_tooltip_and_a_row_per_buffer_and_no_script(report: dict) -> None:
    text = render_html(report)
    parser = _Html()
    parser.feed(text)
    n = len(report["buffers"])
    assert parser.titles_in_rect_groups == n + 2  # every buffer, the trainable copies, the scratch
    assert parser.rows == 1 + n + 1 + len(report["trainable"])  # two header rows
    assert "script" not in parser.tags and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    for b in report["buffers"]:
        assert f"{b['bytes']} B at offset {b['offset']}..{b['offset'] + b['bytes']}" in text
