"""A PNG of the memory plan: each arena buffer is a box, x = schedule position, y = arena offset.

Written with numpy + zlib only (no plotting dependency on the device-side toolchain machine).
Colour says what a buffer holds: int8 activations (blue), fp32 gradients (orange), 1-bit masks and
saved slices (green), the image (grey).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.ir import BlockArgument

from qtrain.transforms.liveness import Liveness, aligned

COLOURS = {
    "int8": (66, 133, 244),
    "fp32": (244, 160, 36),
    "bits": (52, 168, 83),
    "input": (150, 150, 150),
}


def _kind(buffer) -> str:  # noqa: ANN001
    v = buffer.values[0]
    if isinstance(v, BlockArgument):
        return "input"
    t = v.type
    if isinstance(t, TensorType) and isinstance(t.element_type, IntegerType):
        return "bits" if t.element_type.width.data == 1 else "int8"
    return "fp32"


def render(liveness: Liveness, arena_bytes: int, width: int = 1000, height: int = 500) -> np.ndarray:
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    n = max(1, len(liveness.ops))
    scale_y = (height - 1) / max(1, arena_bytes)
    for b in liveness.buffers:
        if b.offset < 0:
            continue
        x0 = int(b.start / n * (width - 1))
        x1 = max(x0 + 1, int((b.end + 1) / n * (width - 1)))
        y1 = height - 1 - int(b.offset * scale_y)
        y0 = max(0, height - 1 - int((b.offset + aligned(b.size)) * scale_y))
        colour = COLOURS[_kind(b)]
        img[y0:y1 + 1, x0:x1] = colour
        img[y0:y1 + 1, [x0, x1 - 1]] = (0, 0, 0)
        img[[y0, y1], x0:x1] = (0, 0, 0)
    return img


def encode_png(img: np.ndarray) -> bytes:
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[row].tobytes() for row in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def write_lifetime_png(liveness: Liveness, arena_bytes: int, path: str) -> None:
    with open(path, "wb") as f:
        f.write(encode_png(render(liveness, arena_bytes)))
