"""The C kernel library (qtrain_kernels.h): where it is, and the scratch sizes its kernels need.

`buffer_size_*` mirror the C `*_get_buffer_size()` functions so a code generator (or the memory
planner) can size the QTRAIN_SCRATCH buffer at compile time (`buffer_size_conv2d_wrapper`,
`buffer_size_conv2d_input_grad_wrapper` and `buffer_size_depthwise_weight_grad` for the calls the
generator emits; the other kernels need none, the fused weight-gradient update included);
test_kernels_forward.py / test_kernels_backward.py check them against the C. Shapes are NHWC / OHWI
tuples; `slice_channels` is stop - start of a trained weight slice (None when the weight has none)
and `master` whether that slice is an fp32 master copy (which the kernels convert to int8 in
scratch; an int8 slice is read in place).

`buffer_size_fused_pointwise_depthwise` mirrors the streaming kernel of `qtrain.fused_pointwise_depthwise`
(qtrain_fused_pointwise_depthwise_s8_get_buffer_size); test_kernels_fused.py checks it against the C.

`in_place_alignment` (and `small_k_in_place_gap`) mirror which forward convolutions may write their
output over their input (see "In place" in qtrain_kernels.h); test_kernels_inplace.py checks them
against the C.

`input_grad_in_place_alignment` mirrors which input-gradient kernels may write dL/dx over dL/dy (the
backward paragraph of "In place" in qtrain_kernels.h); test_kernels_inplace_backward.py checks it
against the C.

The limits behind the kernel choices (the largest depthwise kernel, the small-K thresholds, the fused
kernel's channel block) are not restated here: they are read from their `#define QTRAIN_...` lines in
qtrain_kernels.h when this module is imported (`HEADER_CONSTANTS`), so the C and its mirror cannot
disagree about them; a header without one of them fails the import.

`calls` describes kernel calls once and runs them through ctypes on the host (`host`) or emits them
as C for a target test program; `host` builds the library as a host shared object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

KERNEL_DIR = Path(__file__).resolve().parent
HEADER = KERNEL_DIR / "qtrain_kernels.h"

Shape = Sequence[int]


class HeaderConstantError(RuntimeError):
    """qtrain_kernels.h lacks a constant this mirror reads (renamed or removed define): the two are out of
    step, which is a bug of the installation, not of the user's input."""


_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(QTRAIN_\w+)[ \t]+(\d+)[ \t]*(?:/\*.*?\*/[ \t]*|//.*)?$",
                     re.MULTILINE)


def parse_header_constants(text: str) -> dict[str, int]:
    """Every `#define QTRAIN_NAME <decimal integer>` line of a C header's text (a comment may follow on
    the line); other defines (expressions, flags without a value) are not constants and are left out."""
    return {name: int(value) for name, value in _DEFINE.findall(text)}


def read_header_constants(names: Iterable[str], header: Path = HEADER) -> dict[str, int]:
    """The values of `names` in `header`; HeaderConstantError naming every one it does not define."""
    defined = parse_header_constants(header.read_text())
    missing = [name for name in names if name not in defined]
    if missing:
        raise HeaderConstantError(f"{header} has no '#define <name> <integer>' line for {', '.join(missing)} "
                                  f"(qtrain.targets.armv7em.kernels reads them from there)")
    return {name: defined[name] for name in names}


HEADER_CONSTANTS = read_header_constants((
    "QTRAIN_MAX_DEPTHWISE_KERNEL", "QTRAIN_SMALL_K_MAX_K", "QTRAIN_SMALL_K_MAX_CHANNELS",
    "QTRAIN_SMALL_K_MAX_SCRATCH", "QTRAIN_FUSED_CHANNEL_BLOCK", "QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS",
    "QTRAIN_GROUP_NORM_MAX_CHANNELS"))
"""Every constant this module takes from qtrain_kernels.h, by its C name (the module-level names below)."""

MAX_DEPTHWISE_KERNEL = HEADER_CONSTANTS["QTRAIN_MAX_DEPTHWISE_KERNEL"]
"""The largest KH / KW of the depthwise kernels (forward, both gradients, fused); the wrappers pick the
generic kernels beyond it."""

SMALL_K_MAX_K = HEADER_CONSTANTS["QTRAIN_SMALL_K_MAX_K"]
"""The largest K = KH * KW * C_in of the small-K kernel."""

SMALL_K_MAX_CHANNELS = HEADER_CONSTANTS["QTRAIN_SMALL_K_MAX_CHANNELS"]
"""The most input channels for which the forward wrapper picks the small-K kernel."""

SMALL_K_MAX_SCRATCH = HEADER_CONSTANTS["QTRAIN_SMALL_K_MAX_SCRATCH"]
"""The largest scratch the forward wrapper spends on the small-K kernel."""

FUSED_CHANNEL_BLOCK = HEADER_CONSTANTS["QTRAIN_FUSED_CHANNEL_BLOCK"]
"""Intermediate channels per block of the fused pointwise-depthwise kernel at its smallest scratch."""


GROUP_NORM_MAX_GROUP_ELEMENTS = HEADER_CONSTANTS["QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS"]
"""The most elements one group of the group-norm kernels may hold."""

GROUP_NORM_MAX_CHANNELS_PER_GROUP = HEADER_CONSTANTS["QTRAIN_GROUP_NORM_MAX_CHANNELS"]
"""The most channels per group of the group-norm kernels."""


def group_norm_fits(shape: Shape, groups: int) -> bool:
    """Whether the group-norm kernels take an NHWC tensor of this shape in `groups` groups."""
    _, h, w, c = shape
    return h * w * (c // groups) <= GROUP_NORM_MAX_GROUP_ELEMENTS and c // groups <= GROUP_NORM_MAX_CHANNELS_PER_GROUP


def depthwise_kernel_fits(filter_shape: Shape) -> bool:
    """Whether the depthwise kernels take a [C, KH, KW, 1] filter of this size."""
    return filter_shape[1] <= MAX_DEPTHWISE_KERNEL and filter_shape[2] <= MAX_DEPTHWISE_KERNEL


def sources() -> list[Path]:
    """The library's C files (one per kernel, plus qtrain_kernels_support.c)."""
    return sorted(KERNEL_DIR.glob("*.c"))


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _slice_bytes(master: bool, elements: int) -> int:
    return _align4(elements) if master else 0


def conv2d_kernel(input_shape: Shape, filter_shape: Shape, output_shape: Shape, strides: Sequence[int],
                  padding: Sequence[int], groups: int) -> str:
    """The kernel `qtrain_conv2d_wrapper_s8` picks: "small_k", "1x1", "depthwise" or "generic".
    `padding` is [top, left, bottom, right] (or just [top, left])."""
    cout, kh, kw, cin_g = filter_shape
    _, h, w, cin = input_shape
    k = kh * kw * cin
    if (groups == 1 and k <= SMALL_K_MAX_K and cin <= SMALL_K_MAX_CHANNELS
            and buffer_size_conv2d("small_k", input_shape, filter_shape, output_shape, strides) <= SMALL_K_MAX_SCRATCH):
        return "small_k"
    if (kh == 1 and kw == 1 and groups == 1 and padding[0] == 0 and padding[1] == 0
            and output_shape[1] == (h - 1) // strides[0] + 1 and output_shape[2] == (w - 1) // strides[1] + 1):
        return "1x1"
    if groups == cin and cout == cin and cin_g == 1 and depthwise_kernel_fits(filter_shape):
        return "depthwise"
    return "generic"


Alignment = Literal["head", "tail", "gap"]


def in_place_alignment(input_shape: Shape, filter_shape: Shape, output_shape: Shape, strides: Sequence[int],
                       padding: Sequence[int], groups: int) -> Alignment | None:
    """How `qtrain_conv2d_wrapper_s8` (and the kernel it picks) lets the output of this convolution lie on
    its input, word for word the "In place" contract of qtrain_kernels.h:

    - "head": output == input (same first byte) is allowed;
    - "tail": output + output bytes == input + input bytes (same end) is allowed;
    - "gap": output + G <= input, G = `small_k_in_place_gap(...)` (the output starts at least G bytes
      before the input; the small-K kernel, i.e. the stem writing over the image rows it has read);
    - None: the two must not overlap at all (the wrapper refuses an overlapping call).

    1x1 kernel: "head" when C_out <= C_in (any stride), "tail" when C_out > C_in and the stride is 1
    (C_out == C_in at stride 1 is both; "head" is returned). Depthwise kernel: "head" when OH <= H,
    OW <= W and padding top < KH. The small-K kernel: "gap". The generic kernel: None. Arguments as
    `conv2d_kernel`.
    Masks are separate buffers either way; a trained weight slice (int8 or fp32 master) changes nothing.
    """
    kernel = conv2d_kernel(input_shape, filter_shape, output_shape, strides, padding, groups)
    _, h, w, cin = input_shape
    _, oh, ow, cout = output_shape
    if kernel == "1x1":
        if cout <= cin:
            return "head"
        if strides[0] == 1 and strides[1] == 1:
            return "tail"
        return None
    if kernel == "depthwise":
        kh = filter_shape[1]
        if oh <= h and ow <= w and padding[0] < kh:
            return "head"
        return None
    if kernel == "small_k":
        return "gap"
    return None


def small_k_in_place_gap(input_shape: Shape, output_shape: Shape, strides: Sequence[int],
                         padding: Sequence[int]) -> int:
    """G of the small-K kernel's "gap" placement (qtrain_conv2d_small_k_s8_in_place_gap): the smallest
    input - output, in bytes, at which its output may overlap its input. Pixel pairs are computed in
    raster order, each pair's windows gathered before its outputs are stored; when the pair ending at
    pixel q - 1 (q even) is stored, q * C_out output bytes are written while pixels q.. still read from
    the smallest window start (top-left tap clamped to the image) among them."""
    import numpy as np

    n, h, w, cin = input_shape
    _, oh, ow, cout = output_shape
    q = np.arange(n * oh * ow, dtype=np.int64)
    ox, oy, b = q % ow, (q // ow) % oh, q // (ow * oh)
    iy = np.maximum(oy * strides[0] - padding[0], 0)
    ix = np.maximum(ox * strides[1] - padding[1], 0)
    start = ((b * h + iy) * w + ix) * cin
    suffix_min = np.minimum.accumulate(start[::-1])[::-1]
    even = q[2::2]
    if even.size == 0:
        return -n * h * w * cin
    return int(max(-n * h * w * cin, int(np.max(even * cout - suffix_min[even]))))


def buffer_size_conv2d(kernel: str, input_shape: Shape, filter_shape: Shape, output_shape: Shape,
                       strides: Sequence[int], *, slice_channels: int | None = None, master: bool = False) -> int:
    """Scratch bytes of forward convolution `kernel` ("small_k", "1x1", "depthwise" or "generic")."""
    cout, kh, kw, cin_g = filter_shape
    if kernel == "1x1":
        return 8 * input_shape[3] + _slice_bytes(master, cout * (slice_channels or 0))
    if kernel == "depthwise":
        columns = (output_shape[2] - 1) * strides[1] + kw
        return _align4(4 * kh * columns) + _slice_bytes(master, (slice_channels or 0) * kh * kw)
    if kernel == "small_k":
        k_pad = (kh * kw * cin_g + 1) & ~1
        return 2 * k_pad * (((cout + 1) & ~1) + 2)
    if kernel == "generic":
        k = kh * kw * cin_g
        size = 4 * _align4(k)
        if slice_channels is not None:
            size += _align4(cout * k) + _slice_bytes(master, cout * kh * kw * slice_channels)
        return size
    raise ValueError(f"unknown convolution kernel '{kernel}'")


def buffer_size_conv2d_input_grad(kernel: str, filter_shape: Shape, *, slice_channels: int | None = None,
                                  master: bool = False) -> int:
    """Scratch bytes of input-gradient `kernel` ("1x1", "depthwise" or "generic")."""
    cout, kh, kw, cin_g = filter_shape
    if kernel == "1x1":
        # the master slice as int8, then one block's four gradient rows (copied there when in place)
        return _slice_bytes(master, cout * (slice_channels or 0)) + 16 * cout
    if kernel == "depthwise":
        raise ValueError("the depthwise input gradient's scratch depends on the shapes: use "
                         "buffer_size_depthwise_input_grad")
    if kernel == "generic":
        if slice_channels is None:
            return 0
        return _align4(cout * kh * kw * cin_g) + _slice_bytes(master, cout * kh * kw * slice_channels)
    raise ValueError(f"unknown input-gradient kernel '{kernel}'")


def conv2d_input_grad_kernel(input_shape: Shape, filter_shape: Shape, grad_shape: Shape, strides: Sequence[int],
                             padding: Sequence[int], groups: int) -> str:
    """The kernel `qtrain_conv2d_input_grad_wrapper_f32` picks: "1x1", "depthwise" or "generic"."""
    cout, kh, kw, cin_g = filter_shape
    _, h, w, cin = input_shape
    if (kh == 1 and kw == 1 and groups == 1 and padding[0] == 0 and padding[1] == 0
            and grad_shape[1] == (h - 1) // strides[0] + 1 and grad_shape[2] == (w - 1) // strides[1] + 1):
        return "1x1"
    if groups == cin and cout == cin and cin_g == 1 and depthwise_kernel_fits(filter_shape):
        return "depthwise"
    return "generic"


def buffer_size_conv2d_1x1_input_grad_bf16(filter_shape: Shape, *, slice_channels: int | None = None,
                                           master: bool = False) -> int:
    """Scratch bytes of `qtrain_conv2d_1x1_input_grad_bf16` (and its _bf16_f32, _f32_bf16): one gradient
    row as fp32 (C_out floats), then a master slice converted to int8."""
    cout = filter_shape[0]
    return _align4(4 * cout) + _slice_bytes(master, cout * (slice_channels or 0))


def buffer_size_streamed_expansion_input_grad(mid_shape: Shape) -> int:
    """Scratch bytes of `qtrain_streamed_expansion_input_grad_*`: one row of the expanded tensor as fp32."""
    return _align4(4 * mid_shape[2] * mid_shape[3])


def buffer_size_depthwise_input_grad_bf16(filter_shape: Shape, input_shape: Shape) -> int:
    """Scratch bytes of `qtrain_depthwise_conv2d_input_grad_bf16`: a ring of KH bf16 gradient rows of up to
    eight channels (the kernel's block)."""
    return _align4(2 * filter_shape[1] * input_shape[2] * min(input_shape[3], 8))


def input_grad_in_place_alignment(input_shape: Shape, filter_shape: Shape, grad_shape: Shape,
                                  strides: Sequence[int], padding: Sequence[int],
                                  groups: int) -> Literal["head", "tail"] | None:
    """How `qtrain_conv2d_input_grad_wrapper_f32` (and the kernel it picks) lets its fp32 output dL/dx
    (`input_shape`) lie on its fp32 input dL/dy (`grad_shape`), word for word the backward paragraph of
    "In place" in qtrain_kernels.h:

    - "head": input_grad == grad (same first byte) is allowed;
    - "tail": input_grad + its bytes == grad + its bytes (same end) is allowed;
    - None: the two must not overlap at all (the wrapper refuses an overlapping call).

    1x1 kernel: only at stride 1, "head" when C_in < C_out, "tail" when C_in > C_out (C_in == C_out: the
    two are the same placement, input_grad == grad; "head" is returned). Depthwise kernel: "head" when
    `grad_shape` equals `input_shape` in N, H, W and C (in practice stride 1, "same" padding). The generic
    kernel: None. Arguments as `conv2d_input_grad_kernel`; a trained weight slice (int8 or fp32 master)
    changes nothing.
    """
    kernel = conv2d_input_grad_kernel(input_shape, filter_shape, grad_shape, strides, padding, groups)
    cin, cout = input_shape[3], grad_shape[3]
    if kernel == "1x1":
        if strides[0] != 1 or strides[1] != 1:
            return None
        return "head" if cin <= cout else "tail"
    if kernel == "depthwise":
        return "head" if tuple(grad_shape) == tuple(input_shape) else None
    return None


def buffer_size_depthwise_input_grad(input_shape: Shape, filter_shape: Shape, strides: Sequence[int],
                                     padding: Sequence[int], *, slice_channels: int | None = None,
                                     master: bool = False) -> int:
    """Scratch bytes of qtrain_depthwise_conv2d_input_grad_f32: a zero-bordered fp32 plane holding every
    output position any tap of any input pixel reaches (+ the master slice's int8 conversion)."""
    _, h, w, _ = input_shape
    _, kh, kw, _ = filter_shape

    def reach(size: int, kernel: int, stride: int, pad: int) -> int:
        return (size - 1 + pad) // stride - (pad - (kernel - 1)) // stride + 1

    plane = reach(h, kh, strides[0], padding[0]) * reach(w, kw, strides[1], padding[1])
    return 4 * plane + _slice_bytes(master, (slice_channels or 0) * kh * kw)


def buffer_size_depthwise_weight_grad(input_shape: Shape, grad_shape: Shape, filter_shape: Shape,
                                      strides: Sequence[int]) -> int:
    """Scratch bytes of qtrain_depthwise_conv2d_weight_grad_f32: one channel's padded fp32 input plane and
    its gathered gradient column, per batch."""
    rows = (grad_shape[1] - 1) * strides[0] + filter_shape[1]
    cols = (grad_shape[2] - 1) * strides[1] + filter_shape[2]
    return 4 * input_shape[0] * (rows * cols + grad_shape[1] * grad_shape[2])


def buffer_size_conv2d_wrapper(input_shape: Shape, filter_shape: Shape, output_shape: Shape, strides: Sequence[int],
                               padding: Sequence[int], groups: int, *, slice_channels: int | None = None,
                               master: bool = False) -> int:
    """Scratch bytes of `qtrain_conv2d_wrapper_s8` for a `qtrain.conv2d` (what a memory planner needs).
    `slice_channels`: stop - start of the weight's trained slice (None: no slice); `master`: stored fp32."""
    kernel = conv2d_kernel(input_shape, filter_shape, output_shape, strides, padding, groups)
    return buffer_size_conv2d(kernel, input_shape, filter_shape, output_shape, strides,
                              slice_channels=slice_channels, master=master)


def buffer_size_conv2d_input_grad_wrapper(input_shape: Shape, filter_shape: Shape, grad_shape: Shape,
                                          strides: Sequence[int], padding: Sequence[int], groups: int, *,
                                          slice_channels: int | None = None, master: bool = False) -> int:
    """Scratch bytes of `qtrain_conv2d_input_grad_wrapper_f32` for a `qtrain.conv2d_input_grad`."""
    kernel = conv2d_input_grad_kernel(input_shape, filter_shape, grad_shape, strides, padding, groups)
    if kernel == "depthwise":
        return buffer_size_depthwise_input_grad(input_shape, filter_shape, strides, padding,
                                                slice_channels=slice_channels, master=master)
    return buffer_size_conv2d_input_grad(kernel, filter_shape, slice_channels=slice_channels, master=master)


def buffer_size_fused_pointwise_depthwise(input_shape: Shape, pw_filter_shape: Shape, dw_filter_shape: Shape,
                                          output_shape: Shape, dw_strides: Sequence[int]) -> int:
    """Scratch bytes of `qtrain_fused_pointwise_depthwise_s8` (a 1x1 conv streamed into a depthwise conv),
    with B = min(C_mid, FUSED_CHANNEL_BLOCK) intermediate channels per block:

    - one pixel quad of the pointwise input unpacked (8 * C_in bytes, as the 1x1 kernel);
    - the depthwise weight pairs of the block (B * KW * ceil(KH / 2) words);
    - one channel's window of KH padded intermediate rows as int16, in the depthwise kernel's layout
      (2 * KH slots per column, (OW - 1) * sw + KW columns), rounded up to 4;
    - the ring: KH intermediate rows of W x B int8, rounded up to 4.
    The same size whether the DSP path is compiled or not.
    """
    _, _, w, cin = input_shape
    block = min(pw_filter_shape[0], FUSED_CHANNEL_BLOCK)
    _, kh, kw, _ = dw_filter_shape
    columns = (output_shape[2] - 1) * dw_strides[1] + kw
    return 8 * cin + 4 * block * kw * ((kh + 1) // 2) + _align4(4 * kh * columns) + _align4(kh * w * block)
