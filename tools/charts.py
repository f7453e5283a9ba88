"""Small PNG charts (numpy + zlib only): the demo's loss / accuracy curves, and the pixel font and PNG
encoder the memory-plan picture (`memory_plan.py`) draws with.

A chart is a stack of panels; each panel draws one or more series as lines against a shared x axis,
with tick labels in a built-in 5x7 pixel font (digits, letters and a few signs), at any integer scale.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# 5x7 glyphs: 7 rows of 5 columns per character ('#' = ink).
_GLYPHS: dict[str, tuple[str, ...]] = {
    '0': (' ### ', '#   #', '#  ##', '# # #', '##  #', '#   #', ' ### '),
    '1': ('  #  ', ' ##  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '),
    '2': (' ### ', '#   #', '    #', '   # ', '  #  ', ' #   ', '#####'),
    '3': ('#####', '   # ', '  #  ', '   # ', '    #', '#   #', ' ### '),
    '4': ('   # ', '  ## ', ' # # ', '#  # ', '#####', '   # ', '   # '),
    '5': ('#####', '#    ', '#### ', '    #', '    #', '#   #', ' ### '),
    '6': ('  ## ', ' #   ', '#    ', '#### ', '#   #', '#   #', ' ### '),
    '7': ('#####', '    #', '   # ', '  #  ', ' #   ', ' #   ', ' #   '),
    '8': (' ### ', '#   #', '#   #', ' ### ', '#   #', '#   #', ' ### '),
    '9': (' ### ', '#   #', '#   #', ' ####', '    #', '   # ', ' ##  '),
    '.': ('     ', '     ', '     ', '     ', '     ', ' ##  ', ' ##  '),
    '%': ('##   ', '##  #', '   # ', '  #  ', ' #   ', '#  ##', '   ##'),
    ':': ('     ', ' ##  ', ' ##  ', '     ', ' ##  ', ' ##  ', '     '),
    '-': ('     ', '     ', '     ', '#####', '     ', '     ', '     '),
    '/': ('     ', '    #', '   # ', '  #  ', ' #   ', '#    ', '     '),
    '(': ('  #  ', ' #   ', '#    ', '#    ', '#    ', ' #   ', '  #  '),
    ')': ('  #  ', '   # ', '    #', '    #', '    #', '   # ', '  #  '),
    '+': ('     ', '  #  ', '  #  ', '#####', '  #  ', '  #  ', '     '),
    '=': ('     ', '     ', '#####', '     ', '#####', '     ', '     '),
    '#': (' # # ', ' # # ', '#####', ' # # ', '#####', ' # # ', ' # # '),
    '_': ('     ', '     ', '     ', '     ', '     ', '     ', '#####'),
    ',': ('     ', '     ', '     ', '     ', ' ##  ', '  #  ', ' #   '),
    '|': ('  #  ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  '),
    '@': (' ### ', '#   #', '# ###', '# # #', '# ###', '#    ', ' ### '),
    '[': (' ### ', ' #   ', ' #   ', ' #   ', ' #   ', ' #   ', ' ### '),
    ']': (' ### ', '   # ', '   # ', '   # ', '   # ', '   # ', ' ### '),
    '<': ('   # ', '  #  ', ' #   ', '#    ', ' #   ', '  #  ', '   # '),
    '>': (' #   ', '  #  ', '   # ', '    #', '   # ', '  #  ', ' #   '),
    '*': ('     ', '# # #', ' ### ', '#####', ' ### ', '# # #', '     '),
    "'": ('  #  ', '  #  ', ' #   ', '     ', '     ', '     ', '     '),
    'a': ('     ', '     ', ' ### ', '    #', ' ####', '#   #', ' ####'),
    'b': ('#    ', '#    ', '# ## ', '##  #', '#   #', '#   #', '#### '),
    'c': ('     ', '     ', ' ### ', '#    ', '#    ', '#   #', ' ### '),
    'd': ('    #', '    #', ' ## #', '#  ##', '#   #', '#   #', ' ####'),
    'e': ('     ', '     ', ' ### ', '#   #', '#####', '#    ', ' ### '),
    'f': ('  ## ', ' #  #', ' #   ', '###  ', ' #   ', ' #   ', ' #   '),
    'g': ('     ', ' ####', '#   #', '#   #', ' ####', '    #', ' ### '),
    'h': ('#    ', '#    ', '# ## ', '##  #', '#   #', '#   #', '#   #'),
    'i': ('  #  ', '     ', ' ##  ', '  #  ', '  #  ', '  #  ', ' ### '),
    'j': ('   # ', '     ', '  ## ', '   # ', '   # ', '#  # ', ' ##  '),
    'k': ('#    ', '#    ', '#  # ', '# #  ', '##   ', '# #  ', '#  # '),
    'l': (' ##  ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '),
    'm': ('     ', '     ', '## # ', '# # #', '# # #', '#   #', '#   #'),
    'n': ('     ', '     ', '# ## ', '##  #', '#   #', '#   #', '#   #'),
    'o': ('     ', '     ', ' ### ', '#   #', '#   #', '#   #', ' ### '),
    'p': ('     ', '     ', '#### ', '#   #', '#### ', '#    ', '#    '),
    'q': ('     ', '     ', ' ####', '#   #', ' ####', '    #', '    #'),
    'r': ('     ', '     ', '# ## ', '##  #', '#    ', '#    ', '#    '),
    's': ('     ', '     ', ' ####', '#    ', ' ### ', '    #', '#### '),
    't': (' #   ', ' #   ', '###  ', ' #   ', ' #   ', ' #  #', '  ## '),
    'u': ('     ', '     ', '#   #', '#   #', '#   #', '#  ##', ' ## #'),
    'v': ('     ', '     ', '#   #', '#   #', '#   #', ' # # ', '  #  '),
    'w': ('     ', '     ', '#   #', '#   #', '# # #', '# # #', ' # # '),
    'x': ('     ', '     ', '#   #', ' # # ', '  #  ', ' # # ', '#   #'),
    'y': ('     ', '     ', '#   #', '#   #', ' ####', '    #', ' ### '),
    'z': ('     ', '     ', '#####', '   # ', '  #  ', ' #   ', '#####'),
    'A': (' ### ', '#   #', '#   #', '#####', '#   #', '#   #', '#   #'),
    'B': ('#### ', '#   #', '#   #', '#### ', '#   #', '#   #', '#### '),
    'C': (' ### ', '#   #', '#    ', '#    ', '#    ', '#   #', ' ### '),
    'D': ('#### ', '#   #', '#   #', '#   #', '#   #', '#   #', '#### '),
    'E': ('#####', '#    ', '#    ', '#### ', '#    ', '#    ', '#####'),
    'F': ('#####', '#    ', '#    ', '#### ', '#    ', '#    ', '#    '),
    'G': (' ### ', '#   #', '#    ', '# ###', '#   #', '#   #', ' ####'),
    'H': ('#   #', '#   #', '#   #', '#####', '#   #', '#   #', '#   #'),
    'I': (' ### ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', ' ### '),
    'J': ('  ###', '   # ', '   # ', '   # ', '   # ', '#  # ', ' ##  '),
    'K': ('#   #', '#  # ', '# #  ', '##   ', '# #  ', '#  # ', '#   #'),
    'L': ('#    ', '#    ', '#    ', '#    ', '#    ', '#    ', '#####'),
    'M': ('#   #', '## ##', '# # #', '# # #', '#   #', '#   #', '#   #'),
    'N': ('#   #', '#   #', '##  #', '# # #', '#  ##', '#   #', '#   #'),
    'O': (' ### ', '#   #', '#   #', '#   #', '#   #', '#   #', ' ### '),
    'P': ('#### ', '#   #', '#   #', '#### ', '#    ', '#    ', '#    '),
    'Q': (' ### ', '#   #', '#   #', '#   #', '# # #', '#  # ', ' ## #'),
    'R': ('#### ', '#   #', '#   #', '#### ', '# #  ', '#  # ', '#   #'),
    'S': (' ####', '#    ', '#    ', ' ### ', '    #', '    #', '#### '),
    'T': ('#####', '  #  ', '  #  ', '  #  ', '  #  ', '  #  ', '  #  '),
    'U': ('#   #', '#   #', '#   #', '#   #', '#   #', '#   #', ' ### '),
    'V': ('#   #', '#   #', '#   #', '#   #', '#   #', ' # # ', '  #  '),
    'W': ('#   #', '#   #', '#   #', '# # #', '# # #', '# # #', ' # # '),
    'X': ('#   #', '#   #', ' # # ', '  #  ', ' # # ', '#   #', '#   #'),
    'Y': ('#   #', '#   #', ' # # ', '  #  ', '  #  ', '  #  ', '  #  '),
    'Z': ('#####', '    #', '   # ', '  #  ', ' #   ', '#    ', '#####'),
    ';': ('     ', ' ##  ', ' ##  ', '     ', ' ##  ', '  #  ', ' #   '),
    ' ': ('     ', '     ', '     ', '     ', '     ', '     ', '     '),
}

WHITE = (255, 255, 255)
INK = (40, 40, 40)
GRID = (225, 225, 225)
PALETTE = [(66, 133, 244), (219, 68, 55), (15, 157, 88), (244, 160, 0), (171, 71, 188)]


def draw_text(img: np.ndarray, x: int, y: int, text: str, colour: tuple[int, int, int] = INK,
              scale: int = 1) -> int:
    """Draws `text` with its top-left at (x, y), each font pixel `scale` x `scale` image pixels; returns
    the x after it (6 * scale per character)."""
    for ch in text:
        glyph = _GLYPHS.get(ch) or _GLYPHS.get(ch.lower(), _GLYPHS[" "])
        for row in range(7):
            for col in range(5):
                if glyph[row][col] == "#":
                    y0, x0 = y + row * scale, x + col * scale
                    y1, x1 = min(y0 + scale, img.shape[0]), min(x0 + scale, img.shape[1])
                    if y1 > max(y0, 0) and x1 > max(x0, 0):
                        img[max(y0, 0):y1, max(x0, 0):x1] = colour
        x += 6 * scale
    return x


def text_width(text: str, scale: int = 1) -> int:
    """The width `draw_text` gives `text` (without the last character's gap)."""
    return max(0, 6 * scale * len(text) - scale)


def draw_line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: tuple[int, int, int]) -> None:
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.linspace(x0, x1, n).round().astype(int)
    ys = np.linspace(y0, y1, n).round().astype(int)
    ok = (xs >= 0) & (xs < img.shape[1]) & (ys >= 0) & (ys < img.shape[0])
    for dy in (0, 1):
        yy = np.clip(ys[ok] + dy, 0, img.shape[0] - 1)
        img[yy, xs[ok]] = colour


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    step = 10 ** np.floor(np.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * step:
            step *= m
            break
    start = np.ceil(lo / step) * step
    return [float(v) for v in np.arange(start, hi + step * 0.5, step)]


def fmt(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:.0f}"
    if float(v).is_integer():
        return f"{int(v)}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


@dataclass
class Panel:
    title: str
    series: list[tuple[str, Sequence[float], Sequence[float]]] = field(default_factory=list)
    y_range: tuple[float, float] | None = None

    def add(self, label: str, xs: Sequence[float], ys: Sequence[float]) -> Panel:
        self.series.append((label, xs, ys))
        return self


def render_chart(panels: list[Panel], x_label: str, width: int = 900, panel_height: int = 260) -> np.ndarray:
    height = panel_height * len(panels) + 30
    img = np.full((height, width, 3), WHITE, dtype=np.uint8)
    left, right, top_pad, bottom_pad = 60, 20, 24, 26
    xs_all = [x for p in panels for _, xs, _ in p.series for x in xs]
    x_lo, x_hi = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    if x_hi <= x_lo:
        x_hi = x_lo + 1
    for i, panel in enumerate(panels):
        y0 = i * panel_height
        top, bottom = y0 + top_pad, y0 + panel_height - bottom_pad
        ys_all = [y for _, _, ys in panel.series for y in ys if np.isfinite(y)]
        lo, hi = panel.y_range or ((min(ys_all), max(ys_all)) if ys_all else (0.0, 1.0))
        if hi <= lo:
            hi = lo + 1
        ticks = nice_ticks(lo, hi)
        lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

        def px(x: float) -> float:
            return left + (x - x_lo) / (x_hi - x_lo) * (width - left - right)

        def py(y: float) -> float:
            return bottom - (y - lo) / (hi - lo) * (bottom - top)  # noqa: B023

        for t in ticks:
            yy = int(round(py(t)))
            img[yy, left:width - right] = GRID
            draw_text(img, 4, yy - 3, fmt(t))
        for t in nice_ticks(x_lo, x_hi, 8):
            xx = int(round(px(t)))
            img[top:bottom, xx] = GRID
            draw_text(img, xx - 3 * len(fmt(t)), bottom + 6, fmt(t))
        img[top:bottom + 1, left] = INK
        img[bottom, left:width - right] = INK
        x = draw_text(img, left, y0 + 6, panel.title)
        for j, (label, xs, ys) in enumerate(panel.series):
            colour = PALETTE[j % len(PALETTE)]
            img[y0 + 8:y0 + 12, x + 12:x + 24] = colour
            x = draw_text(img, x + 28, y0 + 6, label)
            points = [(px(a), py(b)) for a, b in zip(xs, ys, strict=True) if np.isfinite(b)]
            for (a0, b0), (a1, b1) in zip(points, points[1:], strict=False):
                draw_line(img, a0, b0, a1, b1, colour)
            if len(points) == 1:
                a, b = points[0]
                img[int(b) - 2:int(b) + 3, int(a) - 2:int(a) + 3] = colour
    draw_text(img, width // 2 - 3 * len(x_label), height - 12, x_label)
    return img


def write_chart(path: str, panels: list[Panel], x_label: str) -> None:
    with open(path, "wb") as f:
        f.write(encode_png(render_chart(panels, x_label)))


def encode_png(img: np.ndarray) -> bytes:
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


@dataclass(frozen=True)
class HBar:
    """One bar of a horizontal bar chart."""

    label: str
    value: float
    colour: tuple[int, int, int]


def render_hbar_chart(panels: Sequence[tuple[str, Sequence[HBar]]], value_label: str,
                      legend: dict[str, tuple[int, int, int]] | None = None, width: int = 1000,
                      bar_height: int = 9) -> np.ndarray:
    """Horizontal bars, one panel per (title, bars): the label left of each bar, the value after it; every
    panel has its own scale (0 to its largest value) with ticks along its bottom."""
    label_width = 6 * max((len(b.label) for _, bars in panels for b in bars), default=4) + 10
    left, right, title_h, axis_h = label_width, 90, 22, 26
    heights = [title_h + bar_height * len(bars) + axis_h for _, bars in panels]
    legend_h = 18 if legend else 0
    img = np.full((legend_h + sum(heights) + 6, width, 3), WHITE, dtype=np.uint8)
    if legend:
        x = 6
        for name, colour in legend.items():
            img[6:12, x:x + 12] = colour
            x = draw_text(img, x + 16, 5, name) + 14
    y0 = legend_h
    for (title, bars), height in zip(panels, heights, strict=True):
        draw_text(img, 6, y0 + 6, title)
        top = y0 + title_h
        hi = max((b.value for b in bars), default=1.0) or 1.0
        ticks = nice_ticks(0.0, hi)
        hi = max(hi, ticks[-1])

        def px(v: float) -> int:
            return int(round(left + v / hi * (width - left - right)))  # noqa: B023

        bottom = top + bar_height * len(bars)
        for t in ticks:
            img[top:bottom, px(t)] = GRID
            draw_text(img, px(t) - 3 * len(fmt(t)), bottom + 5, fmt(t))
        for i, bar in enumerate(bars):
            yy = top + i * bar_height
            draw_text(img, 4, yy + 1, bar.label)
            x1 = max(px(bar.value), left + 1)
            img[yy + 1:yy + bar_height - 1, left:x1] = bar.colour
            draw_text(img, x1 + 4, yy + 1, fmt(bar.value))
        img[top:bottom, left] = INK
        img[bottom, left:width - right] = INK
        draw_text(img, width - right - 6 * len(value_label), bottom + 15, value_label)
        y0 += height
    return img


def write_hbar_chart(path: str, panels: Sequence[tuple[str, Sequence[HBar]]], value_label: str,
                     legend: dict[str, tuple[int, int, int]] | None = None) -> None:
    with open(path, "wb") as f:
        f.write(encode_png(render_hbar_chart(panels, value_label, legend)))
