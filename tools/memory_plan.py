"""The memory-plan picture: memory.json's SRAM plan over the training step, as a PNG and in memory.html.

Like the reference engine's buffer-lifecycle plot: x = position in the schedule of the planned entry
point (@train_step; its kernel calls in order, parameter reads left out), with the forward / backward
boundary (the loss) marked; y = SRAM offset in KB. Each arena buffer is a rectangle over its
lifetime at its offset, coloured by what it holds (the image, an activation used only in the forward
pass, an activation saved for backward, a 1-bit saturation mask, an fp32 gradient) and labelled with
its layer where it has room; above the arena sit the SRAM copies of the trainable tensors and the
kernel scratch, which live throughout. Their top is the planner's peak (`peak_sram_bytes`); the
budget (`budget_bytes`) is a dashed line, the op where the arena peaks a marker, and a legend names
the colours. Everything comes from memory.json (`qtrain-plan-memory` exports the data; it draws
nothing).

One layout (`layout`: rectangles, lines and text in pixels) feeds both backends, so the PNG
(`render_png`, numpy and zlib only) and the SVG inside memory.html (`render_svg`; one tooltip per
buffer, a table of every buffer; plain HTML, no scripts) are the same picture.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qtrain.tools.charts import draw_text, encode_png, nice_ticks, text_width

Colour = tuple[int, int, int]

KIND_COLOURS: dict[str, Colour] = {
    "input": (170, 170, 170),
    "activation": (166, 206, 227),
    "saved": (31, 120, 180),
    "mask": (51, 160, 44),
    "gradient": (253, 141, 60),
    "trainable": (190, 174, 212),
    "scratch": (251, 154, 153),
}
KIND_NAMES: dict[str, str] = {
    "input": "the image (input)",
    "activation": "activation, forward only",
    "saved": "activation saved for backward",
    "mask": "saturation mask (1 bit each)",
    "gradient": "gradient (fp32)",
    "trainable": "trainable copies (whole step)",
    "scratch": "kernel scratch (whole step)",
}
BUDGET = (200, 30, 30)
PEAK = (40, 40, 40)
INK = (40, 40, 40)
GRID = (232, 232, 232)
WHITE = (255, 255, 255)


@dataclass
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float
    fill: Colour
    label: str = ""
    tooltip: str = ""
    outline: Colour = (90, 90, 90)
    buffer: int | None = None
    """The index of the memory.json buffer it draws, if it draws one."""


@dataclass
class Line:
    x0: float
    y0: float
    x1: float
    y1: float
    colour: Colour
    dashed: bool = False
    width: int = 1


@dataclass
class Text:
    x: float
    y: float
    text: str
    colour: Colour = INK
    scale: int = 2
    anchor: str = "start"
    """start | middle | end: where x is along the text."""


@dataclass
class Picture:
    width: int
    height: int
    items: list[Rect | Line | Text] = field(default_factory=list)


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KB"


def buffer_kind(b: dict[str, Any]) -> str:
    """The colour class of a memory.json buffer: `saved` for an activation live into the backward pass."""
    kind = str(b["kind"])
    if kind == "activation" and b.get("saved_for_backward"):
        return "saved"
    return kind if kind in KIND_COLOURS else "activation"


def _positions(report: dict[str, Any]) -> tuple[list[int], int, list[dict[str, Any]]]:
    """Schedule index -> x position (parameter reads take no room), the number of positions, the ops."""
    schedule = report.get("schedule") or {}
    ops: list[dict[str, Any]] = list(schedule.get("ops") or [])
    last = max([len(ops), *(int(b["end"]) + 1 for b in report.get("buffers", []))])
    position, at = [], 0
    for i in range(last + 1):
        position.append(at)
        if i >= len(ops) or ops[i].get("phase") != "param":
            at += 1
    return position, max(1, position[-1]), ops


def _op_text(ops: list[dict[str, Any]], index: int) -> str:
    if index >= len(ops):
        return f"#{index} (return)"
    op = ops[index]
    layer = f" {op['layer']}" if op.get("layer") else ""
    return f"#{index} {str(op['op']).removeprefix('qtrain.')}{layer}"


def layout(report: dict[str, Any], title: str | None = None, width: int = 1600, height: int = 860) -> Picture:
    """The picture of one memory.json report in pixel coordinates (see the module docstring)."""
    pic = Picture(width, height)
    add = pic.items.append
    left, right, top, bottom = 110, 330, 96, 92
    x_end, y_end = width - right, height - bottom
    arena, trainable, scratch = (int(report[k]) for k in ("arena_bytes", "trainable_bytes", "scratch_bytes"))
    peak = arena + trainable + scratch
    budget = report.get("budget_bytes")
    schedule = report.get("schedule") or {}
    position, n, ops = _positions(report)
    # The budget is drawn when it is at most 1.6x the peak; further up it would squash the plan.
    budget_shown = bool(budget) and budget <= 1.6 * peak
    y_max = max(peak, budget if budget_shown else 0, 1) * (1.06 if budget_shown else 1.12)

    def px(p: float) -> float:
        return left + p / n * (x_end - left)

    def py(offset: float) -> float:
        return y_end - offset / y_max * (y_end - top)

    # grid and ticks
    y_ticks = nice_ticks(0, y_max / 1024, 8)
    for t in y_ticks:
        if t * 1024 > y_max:
            continue
        y = py(t * 1024)
        add(Line(left, y, x_end, y, GRID))
        add(Text(left - 10, y - 7, f"{t:g}", anchor="end"))
    for t in nice_ticks(0, n, 10):
        if t > n:
            continue
        x = px(t)
        add(Line(x, top, x, y_end, GRID))
        add(Line(x, y_end, x, y_end + 6, INK))
        add(Text(x, y_end + 12, f"{t:g}", anchor="middle"))

    # static regions above the arena
    function = f"@{schedule['function']}" if schedule.get("function") else "the planned function"
    for kind, base, size in (("trainable", arena, trainable), ("scratch", arena + trainable, scratch)):
        if size:
            add(Rect(left, py(base + size), x_end, py(base), KIND_COLOURS[kind], f"{KIND_NAMES[kind].split(' (')[0]} "
                     f"{kib(size)}", f"{KIND_NAMES[kind]}: {size} B at {base}..{base + size}"))
    # arena buffers
    buffers = list(report.get("buffers", []))
    for i in sorted(range(len(buffers)), key=lambda i: -int(buffers[i]["bytes"])):
        b = buffers[i]
        offset, size, start, end = int(b["offset"]), int(b["bytes"]), int(b["start"]), int(b["end"])
        if offset < 0:
            continue
        kind = buffer_kind(b)
        layer = b.get("layer") or ""
        label = {"mask": f"{layer} mask", "input": "image"}.get(kind, str(layer))
        tooltip = (f"{b['name']}{' of ' + layer if layer else ''}: {KIND_NAMES[kind]}, {size} B at offset "
                   f"{offset}..{offset + size}; live from {_op_text(ops, start)} to {_op_text(ops, end)}")
        add(Rect(px(position[start]), py(offset + size), px(position[end] + 1), py(offset), KIND_COLOURS[kind],
                 label.strip(), tooltip, buffer=i))

    # forward / backward boundary, peak op
    boundary = schedule.get("backward_start")
    if boundary is not None and boundary < len(position):
        x = px(position[boundary])
        add(Line(x, top - 30, x, y_end, INK, dashed=True, width=2))
        add(Text(x - 10, top - 28, "<- forward", anchor="end"))
        add(Text(x + 10, top - 28, "backward and updates ->"))
    peak_index = schedule.get("peak_index")
    if peak_index is not None and peak_index < len(position):
        x = (px(position[peak_index]) + px(position[peak_index] + 1)) / 2
        add(Line(x, py(arena) - 8, x, y_end, PEAK, width=1))
        text = f"the arena peaks at {_op_text(ops, peak_index)}"
        anchor = "end" if x > (left + x_end) / 2 else "start"
        add(Text(x + (-6 if anchor == "end" else 6), py(arena) - 14, text, PEAK, scale=1, anchor=anchor))
    add(Line(left - 6, py(arena), left, py(arena), INK, width=2))
    add(Text(left - 10, py(arena) - 3, "arena top", INK, scale=1, anchor="end"))

    # peak and budget
    add(Line(left, py(peak), x_end, py(peak), PEAK, dashed=True, width=2))
    crowded = budget_shown and py(peak) - py(budget or 0) < 24  # the two labels would overlap: peak's goes below
    add(Text(x_end - 8, py(peak) + (6 if crowded else -20), f"peak {kib(peak)}", PEAK, anchor="end"))
    if budget_shown:
        add(Line(left, py(budget), x_end, py(budget), BUDGET, dashed=True, width=2))
        add(Text(x_end - 8, py(budget) - 20, f"budget {kib(budget)}", BUDGET, anchor="end"))
    elif budget:
        add(Text(x_end - 8, top + 6, f"budget {kib(budget)}: above this chart ({budget / peak:.1f}x the peak)",
                 BUDGET, anchor="end"))

    # axes, labels, title
    add(Line(left, top, left, y_end, INK, width=2))
    add(Line(left, y_end, x_end, y_end, INK, width=2))
    add(Text(left - 100, top - 60, "SRAM offset (KB)"))
    add(Text((left + x_end) / 2, y_end + 44,
             f"schedule position in {function} (kernel calls in order; parameter reads left out)", anchor="middle"))
    budget_text = f" of a {kib(budget)} budget" if budget else ""
    add(Text(left - 100, 12, title or f"SRAM plan of {function}: peak {kib(peak)} = arena {kib(arena)} + trainable "
                                      f"{kib(trainable)} + scratch {kib(scratch)}{budget_text}"))

    # legend
    lx, ly = x_end + 24, top
    add(Text(lx, ly, "legend"))
    ly += 30
    present = {buffer_kind(b) for b in report.get("buffers", [])} | {"trainable", "scratch"}
    for kind in KIND_COLOURS:
        if kind not in present:
            continue
        add(Rect(lx, ly, lx + 26, ly + 16, KIND_COLOURS[kind]))
        add(Text(lx + 34, ly + 5, KIND_NAMES[kind], scale=1))
        ly += 26
    for colour, name, shown in ((PEAK, "peak static SRAM", True), (BUDGET, "budget (--sram-kb)", budget_shown)):
        if shown:
            add(Line(lx, ly + 8, lx + 26, ly + 8, colour, dashed=True, width=2))
            add(Text(lx + 34, ly + 5, name, scale=1))
            ly += 26
    if boundary is not None:
        add(Line(lx + 13, ly, lx + 13, ly + 16, INK, dashed=True, width=2))
        add(Text(lx + 34, ly + 5, "the loss: forward | backward", scale=1))
        ly += 26
    if peak_index is not None:
        add(Line(lx + 13, ly, lx + 13, ly + 16, PEAK))
        add(Text(lx + 34, ly + 5, "the op where the arena peaks", scale=1))
        ly += 26
    ly += 14
    notes = [f"arena {kib(arena)}: {len(report.get('buffers', []))} buffers,",
             "each a box from the op that writes",
             "it to its last reader; boxes never",
             "overlap, except in-place kernels'",
             "output over their dying input.",
             "hover in memory.html: every box."]
    for note in notes:
        add(Text(lx, ly, note, scale=1))
        ly += 14
    return pic


# -- raster backend -------------------------------------------------------------------------------------------


def _dashed(n: int) -> np.ndarray:
    return (np.arange(n) // 6) % 2 == 0


def render_png(pic: Picture) -> np.ndarray:
    img = np.full((pic.height, pic.width, 3), WHITE, dtype=np.uint8)
    h, w = pic.height, pic.width
    for item in pic.items:
        if isinstance(item, Rect):
            x0, x1 = int(round(item.x0)), max(int(round(item.x0)) + 1, int(round(item.x1)))
            y0, y1 = int(round(item.y0)), max(int(round(item.y0)) + 1, int(round(item.y1)))
            x0, x1, y0, y1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
            img[y0:y1, x0:x1] = item.fill
            if x1 - x0 >= 3 and y1 - y0 >= 3:
                img[y0:y1, [x0, x1 - 1]] = item.outline
                img[[y0, y1 - 1], x0:x1] = item.outline
            if item.label and x1 - x0 >= text_width(item.label) + 6 and y1 - y0 >= 11:
                draw_text(img, x0 + 3, (y0 + y1) // 2 - 3, item.label, INK if sum(item.fill) > 300 else WHITE)
        elif isinstance(item, Line):
            x0, y0, x1, y1 = (int(round(v)) for v in (item.x0, item.y0, item.x1, item.y1))
            if y0 == y1:
                xs = np.arange(min(x0, x1), max(x0, x1) + 1)
                xs = xs[_dashed(len(xs))] if item.dashed else xs
                for d in range(item.width):
                    if 0 <= y0 + d < h:
                        img[y0 + d, np.clip(xs, 0, w - 1)] = item.colour
            else:
                ys = np.arange(min(y0, y1), max(y0, y1) + 1)
                ys = ys[_dashed(len(ys))] if item.dashed else ys
                for d in range(item.width):
                    if 0 <= x0 + d < w:
                        img[np.clip(ys, 0, h - 1), x0 + d] = item.colour
        else:
            width = text_width(item.text, item.scale)
            x = item.x - {"start": 0, "middle": width / 2, "end": width}[item.anchor]
            draw_text(img, int(round(x)), int(round(item.y)), item.text, item.colour, item.scale)
    return img


def write_memory_plan(report: dict[str, Any], path: str | Path, title: str | None = None) -> None:
    """memory_plan.png: the picture of a memory.json report."""
    Path(path).write_bytes(encode_png(render_png(layout(report, title))))


# -- SVG and HTML ---------------------------------------------------------------------------------------------


def _rgb(c: Colour) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def render_svg(pic: Picture) -> str:
    """The same picture as inline SVG; each buffer's <title> is its tooltip."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{pic.width}" height="{pic.height}" '
           f'viewBox="0 0 {pic.width} {pic.height}" font-family="monospace">',
           f'<rect width="{pic.width}" height="{pic.height}" fill="white"/>']
    for item in pic.items:
        if isinstance(item, Rect):
            w, h = max(item.x1 - item.x0, 1.0), max(item.y1 - item.y0, 1.0)
            tip = f"<title>{html.escape(item.tooltip)}</title>" if item.tooltip else ""
            out.append(f'<g><rect x="{item.x0:.1f}" y="{item.y0:.1f}" width="{w:.1f}" height="{h:.1f}" '
                       f'fill="{_rgb(item.fill)}" stroke="{_rgb(item.outline)}" stroke-width="0.6"/>{tip}')
            if item.label and w >= 6.2 * len(item.label) + 6 and h >= 11:
                out.append(f'<text x="{item.x0 + 3:.1f}" y="{(item.y0 + item.y1) / 2 + 4:.1f}" font-size="10" '
                           f'fill="{"#282828" if sum(item.fill) > 300 else "white"}">{html.escape(item.label)}</text>')
            out.append("</g>")
        elif isinstance(item, Line):
            dash = ' stroke-dasharray="6,6"' if item.dashed else ""
            out.append(f'<line x1="{item.x0:.1f}" y1="{item.y0:.1f}" x2="{item.x1:.1f}" y2="{item.y1:.1f}" '
                       f'stroke="{_rgb(item.colour)}" stroke-width="{item.width}"{dash}/>')
        else:
            size = 7 * item.scale + 3
            out.append(f'<text x="{item.x:.1f}" y="{item.y + 7 * item.scale:.1f}" font-size="{size}" '
                       f'text-anchor="{item.anchor}" fill="{_rgb(item.colour)}">{html.escape(item.text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(report: dict[str, Any], title: str | None = None) -> str:
    """memory.html: the summary, the picture (a tooltip per buffer) and a table of every arena buffer."""
    pic = layout(report, title)
    schedule = report.get("schedule") or {}
    ops: list[dict[str, Any]] = list(schedule.get("ops") or [])
    arena, trainable, scratch = (int(report[k]) for k in ("arena_bytes", "trainable_bytes", "scratch_bytes"))
    budget = report.get("budget_bytes")
    rows = []
    for i, b in enumerate(sorted(report.get("buffers", []), key=lambda b: (int(b["start"]), int(b["offset"])))):
        kind = buffer_kind(b)
        swatch = f'<span class="sw" style="background:{_rgb(KIND_COLOURS[kind])}"></span>'
        cells = [str(i), html.escape(str(b["name"])), html.escape(str(b.get("layer") or "")),
                 f"{swatch}{html.escape(KIND_NAMES[kind])}", f"{int(b['bytes'])}", f"{int(b['offset'])}",
                 f"{int(b['offset']) + int(b['bytes'])}", html.escape(_op_text(ops, int(b["start"]))),
                 html.escape(_op_text(ops, int(b["end"])))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    trained = "".join(
        f"<tr><td>{html.escape(str(t['name']))}</td><td>{t.get('layer', '')}</td><td>{t['kind']}</td>"
        f"<td>{html.escape(str(t['shape']))}</td><td>{html.escape(str(t.get('channels')))}</td>"
        f"<td>{html.escape(str(t.get('storage', '')))}</td><td>{t['bytes']}</td></tr>"
        for t in report.get("trainable", []))
    budget_text = f" of the {kib(budget)} budget ({budget} B)" if budget else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qtrain memory plan</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #282828; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 0.5em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
th {{ background: #f0f0f0; }} td:nth-child(2), td:nth-child(3), td:nth-child(4) {{ text-align: left; }}
.sw {{ display: inline-block; width: 12px; height: 12px; margin-right: 6px; vertical-align: middle;
      border: 1px solid #777; }}
svg rect:hover {{ stroke: black; stroke-width: 2; }}
</style></head><body>
<h1>Memory plan of @{html.escape(str(schedule.get('function', '')))}</h1>
<p>Static SRAM: <b>{kib(arena + trainable + scratch)}</b> ({arena + trainable + scratch} B){budget_text}
= arena {arena} B + trainable copies {trainable} B + kernel scratch {scratch} B.
The arena peaks at {html.escape(str(report.get('peak_op', '')))}. Hover over a box for the buffer it is.</p>
{render_svg(pic)}
<h2>Arena buffers ({len(rows)})</h2>
<p>Each lives from the op that writes it to its last reader (schedule positions as in the picture's
tooltips, parameter reads included); offsets are bytes into the arena.</p>
<table><tr><th>#</th><th>buffer</th><th>layer</th><th>holds</th><th>bytes</th><th>offset</th><th>end</th>
<th>from</th><th>to</th></tr>
{chr(10).join(rows)}
</table>
<h2>Trainable tensors ({len(report.get('trainable', []))}): SRAM copies, {trainable} B</h2>
<table><tr><th>name</th><th>layer</th><th>kind</th><th>shape</th><th>channels</th><th>storage</th><th>bytes</th></tr>
{trained}
</table>
</body></html>
"""


def write_memory_html(report: dict[str, Any], path: str | Path, title: str | None = None) -> None:
    Path(path).write_text(render_html(report, title))
