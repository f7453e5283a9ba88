"""Reference numerics of qtrain: one pure-numpy function per op (the golden model).

Every backend (this interpreter, the host C build, the Cortex-M7 build) must produce the same int8
values bit for bit, so each function's docstring spells out the exact integer and float32 operations
in order. "fp32(e)" means: evaluate `e` in IEEE-754 single precision, one correctly rounded
operation at a time, round-to-nearest-even, no fused multiply-add unless written `fmaf` (the C
kernels are compiled with `-ffp-contract=off`; `fmaf` is the C99 correctly rounded fused multiply-add,
a single `vfma.f32` on the Cortex-M7). `rint` rounds half to even (`rintf` / `vcvtr` with the default
rounding mode). Integer accumulations are exact: they are computed here in int32/int64 (or in float64
on integer values below 2**53, which BLAS sums exactly in any order) and must fit in int32, as in the
C kernels.

Conventions: activations are NHWC, weights OHWI (`[C_out, KH, KW, C_in / groups]`), biases int32
`[C_out]`, per-channel quantities broadcast along the last (channel) axis. Scales are float32 values
(`#qtrain.quant` stores them as such); Python floats passed in are rounded to float32 first.

Where the contract comes from (see test/python/lowering/test_numerics_ort.py): conv2d, global
avgpool, quantize and dequantize follow onnxruntime's CPU kernels exactly; add follows onnxruntime's
x86 AVX2 QLinearAdd kernel (zero points folded into one float32 offset, two fused multiply-adds),
which is both bit-exact with the oracle and cheaper on the M7 than dequantize-add-divide.

Backward kernels (fp32 transpose convolution, weight gradient on an input-channel slice, ...) belong
in this module too, written in the same style: pure numpy, documented operation order, built on the
padding / tap-slicing helpers below.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

FloatLike = float | np.floating
IntArray = np.ndarray
FloatArray = np.ndarray


class AccumulatorOverflowError(OverflowError):
    """An int32 accumulator of the contract would overflow (the C kernels would silently wrap)."""


# -- float32 building blocks ---------------------------------------------------------------------------


def f32(x: FloatLike) -> np.float32:
    """Round a Python/numpy float to float32 (what `#qtrain.quant` and the C constants hold)."""
    return np.float32(x)


def f32_from_bits(bits: int) -> np.float32:
    """The float32 with the given IEEE-754 bit pattern (constants are pinned by their bits)."""
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def f32_bits(x: FloatLike) -> int:
    """The IEEE-754 bit pattern of float32(x)."""
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def fma_f32(a: np.ndarray | FloatLike, b: np.ndarray | FloatLike, c: np.ndarray | FloatLike) -> FloatArray:
    """C's `fmaf(a, b, c)`: a*b + c with a single rounding to float32 (finite inputs and results).

    Emulated exactly: a*b of two float32 values is exact in float64; s = p + c is rounded once in
    float64 and its rounding error recovered with TwoSum. Rounding s to float32 can only go wrong when s
    lands exactly on a float32 rounding midpoint (float32 midpoints are float64 numbers, so the float64
    rounding cannot cross one); then the sign of the error decides the direction.
    """
    a64 = np.asarray(a, dtype=np.float32).astype(np.float64)
    b64 = np.asarray(b, dtype=np.float32).astype(np.float64)
    c64 = np.asarray(c, dtype=np.float32).astype(np.float64)
    p = a64 * b64
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    toward = np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)).astype(np.float32)
    other = np.nextafter(r, toward)
    midpoint = (r64 + other.astype(np.float64)) * 0.5
    on_midpoint = (s == midpoint) & (s != r64) & (err != 0)
    if np.any(on_midpoint):
        upper = np.maximum(r, other)
        lower = np.minimum(r, other)
        r = np.where(on_midpoint, np.where(err > 0, upper, lower), r)
    return np.asarray(r, dtype=np.float32)


def _round_and_clamp(t: FloatArray, lo: int, hi: int) -> tuple[FloatArray, np.ndarray]:
    """(rint(t) clamped to [lo, hi] as float32, mask of the elements the clamp left unchanged).

    NaN goes to `lo` (like MAXPS/fmaxf-based clamps) and counts as clamped.
    """
    r = np.rint(np.asarray(t, dtype=np.float32))
    inside = (r >= np.float32(lo)) & (r <= np.float32(hi))
    r = np.where(np.isnan(r), np.float32(lo), r)
    return np.clip(r, np.float32(lo), np.float32(hi)), inside


def _check_clamp(clamp: tuple[int, int]) -> tuple[int, int]:
    lo, hi = int(clamp[0]), int(clamp[1])
    if not INT8_MIN <= lo <= hi <= INT8_MAX:
        raise ValueError(f"clamp [{lo}, {hi}] must satisfy -128 <= lo <= hi <= 127")
    return lo, hi


def _to_int32(acc: np.ndarray, what: str) -> IntArray:
    """Exact integer accumulator -> int32, refusing values an int32 C accumulator cannot hold."""
    acc = np.asarray(acc)
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise AccumulatorOverflowError(
            f"{what}: accumulator range [{acc.min()}, {acc.max()}] does not fit in int32"
        )
    return acc.astype(np.int32)


# -- requantization ------------------------------------------------------------------------------------


def requantize_with_mask(
    acc: np.ndarray,
    multiplier: np.ndarray | FloatLike,
    zero_point: int,
    clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
) -> tuple[IntArray, np.ndarray]:
    """int32 accumulator -> int8 with a float32 multiplier (per tensor, or per channel = last axis).

        y = clamp(rint(fp32(acc) * M) + zp, lo, hi)

    in this order: `fp32(acc)` converts the int32 to float32 (round to nearest even; exact while
    |acc| <= 2**24), one float32 multiply by `M`, `rint` half to even, add the zero point as an
    integer, clamp to [lo, hi] (the fused activation range; [-128, 127] by default). Clamping the
    float to [lo - zp, hi - zp] before `rint` gives the same result (the bounds are integers), which is
    what onnxruntime's MlasRequantizeOutput does.

    Also returns the saturation mask used by training: True where lo <= rint(...) + zp <= hi, i.e.
    where the clamp left the value unchanged (the gradient flows only there).
    """
    lo, hi = _check_clamp(clamp)
    acc32 = _to_int32(acc, "requantize")
    m = np.asarray(multiplier, dtype=np.float32)
    t = acc32.astype(np.float32) * m
    r, inside = _round_and_clamp(t, lo - int(zero_point), hi - int(zero_point))
    return (r.astype(np.int32) + int(zero_point)).astype(np.int8), inside


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray | FloatLike,
    zero_point: int,
    clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
) -> IntArray:
    """`requantize_with_mask` without the mask."""
    return requantize_with_mask(acc, multiplier, zero_point, clamp)[0]


# -- convolution ---------------------------------------------------------------------------------------


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    return (size + pad_before + pad_after - kernel) // stride + 1


def pad_nhwc(x: np.ndarray, padding: Sequence[int], value: int | float = 0) -> np.ndarray:
    """Pad H and W of an NHWC tensor by [top, left, bottom, right] with a constant."""
    pt, pl, pb, pr = (int(p) for p in padding)
    if pt == pl == pb == pr == 0:
        return x
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=value)


def conv_taps(
    x_padded: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int]
) -> Iterator[tuple[int, int, np.ndarray]]:
    """For each kernel tap (i, j): the strided view x_padded[:, i + sh*oh, j + sw*ow, :] over all outputs.

    Shared by forward and backward kernels: a convolution is a sum over taps of these views, each
    multiplied by the tap's weights.
    """
    kh, kw = kernel
    sh, sw = strides
    oh, ow = out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, x_padded[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]


def conv2d_multiplier(
    input_scale: FloatLike, weight_scales: np.ndarray | Sequence[float] | FloatLike, output_scale: FloatLike
) -> FloatArray:
    """Per-output-channel requantization multiplier M[c] = fp32(fp32(s_x * s_w[c]) / s_y).

    Left to right in float32: multiply, then divide (onnxruntime's QLinearConv computes
    `X_scale * W_scale[c] / Y_scale` in float the same way). A per-tensor weight scale gives a
    length-1 array that broadcasts over the channels.
    """
    sw = np.atleast_1d(np.asarray(weight_scales, dtype=np.float32))
    return (f32(input_scale) * sw) / f32(output_scale)


def conv2d_accumulate(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    input_zero_point: int,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    groups: int = 1,
) -> IntArray:
    """The exact int32 accumulator of a quantized convolution.

        acc[n, oh, ow, co] = b[co] + sum_{i < KH, j < KW, ci < C_in/groups}
                             (xp[n, oh*sh + i, ow*sw + j, g*C_in/groups + ci] - zx) * w[co, i, j, ci]

    with g = co // (C_out / groups) and xp the input padded by [top, left, bottom, right] with its
    zero point zx (so padded taps contribute exactly 0). The sum is exact in any order; the result
    must fit in int32 (AccumulatorOverflowError otherwise). Depthwise convolutions (groups = C_in,
    channel multiplier C_out / C_in) are accumulated tap by tap in int32; other convolutions as one
    float64 matrix product per group (exact: integer operands, partial sums far below 2**53).
    """
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d: expected NHWC input and OHWI weight, got shapes {x.shape}, {weight.shape}")
    n, h, w, cin = x.shape
    cout, kh, kw, cin_g = weight.shape
    sh, sw = (int(s) for s in strides)
    pt, pl, pb, pr = (int(p) for p in padding)
    if groups < 1 or cin % groups or cout % groups or cin_g != cin // groups:
        raise ValueError(
            f"conv2d: groups = {groups} does not fit input channels {cin}, weight shape {weight.shape}"
        )
    if bias is not None and bias.shape != (cout,):
        raise ValueError(f"conv2d: bias must have shape ({cout},), got {bias.shape}")
    oh = conv_output_size(h, kh, sh, pt, pb)
    ow = conv_output_size(w, kw, sw, pl, pr)
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: kernel {kh}x{kw} is larger than the padded input")

    xs = pad_nhwc(x.astype(np.int32) - int(input_zero_point), (pt, pl, pb, pr), 0)
    if groups == cin and cin_g == 1:
        multiplier = cout // cin
        if multiplier > 1:
            xs = np.repeat(xs, multiplier, axis=3)
        taps = weight[..., 0].astype(np.int32)  # [C_out, KH, KW]
        acc32 = np.zeros((n, oh, ow, cout), dtype=np.int32)
        for i, j, view in conv_taps(xs, (kh, kw), (sh, sw), (oh, ow)):
            acc32 += view * taps[:, i, j]
        acc = acc32.astype(np.int64)
    else:
        xf = xs.astype(np.float64)
        cout_g = cout // groups
        accf = np.empty((n, oh, ow, cout), dtype=np.float64)
        for g in range(groups):
            xg = xf[..., g * cin_g : (g + 1) * cin_g]
            wg = weight[g * cout_g : (g + 1) * cout_g].astype(np.float64).reshape(cout_g, kh * kw * cin_g)
            patches = np.empty((n, oh, ow, kh, kw, cin_g), dtype=np.float64)
            for i, j, view in conv_taps(xg, (kh, kw), (sh, sw), (oh, ow)):
                patches[:, :, :, i, j, :] = view
            accf[..., g * cout_g : (g + 1) * cout_g] = (
                patches.reshape(n * oh * ow, kh * kw * cin_g) @ wg.T
            ).reshape(n, oh, ow, cout_g)
        acc = accf.astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    return _to_int32(acc, "conv2d")


def conv2d_with_mask(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    input_scale: FloatLike,
    input_zero_point: int,
    weight_scales: np.ndarray | Sequence[float] | FloatLike,
    output_scale: FloatLike,
    output_zero_point: int,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    groups: int = 1,
    clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
) -> tuple[IntArray, np.ndarray]:
    """`qtrain.conv2d`: int8 NHWC x int8 OHWI (+ int32 bias) -> int8 NHWC, and its saturation mask.

    1. acc = conv2d_accumulate(...)                         exact int32, see there
    2. M[c] = fp32(fp32(s_x * s_w[c]) / s_y)                conv2d_multiplier
    3. y = clamp(rint(fp32(acc) * M[c]) + zy, lo, hi)        requantize_with_mask

    Weights are symmetric (zero point 0). Bit-exact with onnxruntime's QLinearConv (int8, per-tensor
    or per-channel weight scales, depthwise, strides, padding, with or without bias).
    """
    acc = conv2d_accumulate(
        x, weight, bias, input_zero_point=input_zero_point, strides=strides, padding=padding, groups=groups
    )
    m = conv2d_multiplier(input_scale, weight_scales, output_scale)
    return requantize_with_mask(acc, m, output_zero_point, clamp)


def conv2d(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    input_scale: FloatLike,
    input_zero_point: int,
    weight_scales: np.ndarray | Sequence[float] | FloatLike,
    output_scale: FloatLike,
    output_zero_point: int,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    groups: int = 1,
    clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
) -> IntArray:
    """`qtrain.conv2d` (see `conv2d_with_mask`)."""
    return conv2d_with_mask(
        x, weight, bias, input_scale=input_scale, input_zero_point=input_zero_point, weight_scales=weight_scales,
        output_scale=output_scale, output_zero_point=output_zero_point, strides=strides, padding=padding,
        groups=groups, clamp=clamp,
    )[0]


# -- elementwise add -----------------------------------------------------------------------------------


class AddConstants(NamedTuple):
    """The three float32 constants an add kernel needs (computed once, at compile time)."""

    lhs_multiplier: np.float32
    rhs_multiplier: np.float32
    offset: np.float32


def add_constants(
    lhs_scale: FloatLike,
    lhs_zero_point: int,
    rhs_scale: FloatLike,
    rhs_zero_point: int,
    output_scale: FloatLike,
    output_zero_point: int,
) -> AddConstants:
    """r_a = fp32(s_a / s_y); r_b = fp32(s_b / s_y); c = fp32(fp32(zy) - fmaf(r_a, fp32(za), fp32(r_b * fp32(zb)))).

    The offset folds all three zero points: c = zy - (r_a*za + r_b*zb), with the first product fused
    into the add (this is how onnxruntime's AVX2 kernel, built with FMA contraction, computes its
    `VectorFixedPart`).
    """
    ra = f32(lhs_scale) / f32(output_scale)
    rb = f32(rhs_scale) / f32(output_scale)
    zb_term = rb * f32(rhs_zero_point)
    offset = f32(output_zero_point) - fma_f32(ra, f32(lhs_zero_point), zb_term)[()]
    return AddConstants(np.float32(ra), np.float32(rb), np.float32(offset))


def add_with_mask(
    lhs: np.ndarray,
    rhs: np.ndarray,
    *,
    lhs_scale: FloatLike,
    lhs_zero_point: int,
    rhs_scale: FloatLike,
    rhs_zero_point: int,
    output_scale: FloatLike,
    output_zero_point: int,
    clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
) -> tuple[IntArray, np.ndarray]:
    """`qtrain.add`: requantizing int8 + int8 -> int8 (same shapes), and its saturation mask.

    With (r_a, r_b, c) = add_constants(...):

        t = fmaf(fp32(b), r_b, c)
        t = fmaf(fp32(a), r_a, t)
        y = clamp(rint(t), lo, hi)            mask = lo <= rint(t) <= hi

    `fp32(a)` is the raw int8 value (the zero points live in c). lhs is the first operand (ONNX
    QLinearAdd's A); the operand order matters for rounding. Mathematically
    y = (s_a (a - za) + s_b (b - zb)) / s_y + zy. Bit-exact with onnxruntime's x86 AVX2 QLinearAdd
    (which saturates after rounding; for |t| >= 2**31 it would wrap, we clamp).
    """
    if lhs.shape != rhs.shape:
        raise ValueError(f"add: operand shapes differ: {lhs.shape} vs {rhs.shape}")
    lo, hi = _check_clamp(clamp)
    ra, rb, c = add_constants(lhs_scale, lhs_zero_point, rhs_scale, rhs_zero_point, output_scale, output_zero_point)
    t = fma_f32(rhs.astype(np.float32), rb, c)
    t = fma_f32(lhs.astype(np.float32), ra, t)
    r, inside = _round_and_clamp(t, lo, hi)
    return r.astype(np.int8), inside


def add(
    lhs: np.ndarray,
    rhs: np.ndarray,
    *,
    lhs_scale: FloatLike,
    lhs_zero_point: int,
    rhs_scale: FloatLike,
    rhs_zero_point: int,
    output_scale: FloatLike,
    output_zero_point: int,
    clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
) -> IntArray:
    """`qtrain.add` (see `add_with_mask`)."""
    return add_with_mask(
        lhs, rhs, lhs_scale=lhs_scale, lhs_zero_point=lhs_zero_point, rhs_scale=rhs_scale,
        rhs_zero_point=rhs_zero_point, output_scale=output_scale, output_zero_point=output_zero_point, clamp=clamp,
    )[0]


# -- average pooling -----------------------------------------------------------------------------------


def avgpool_multiplier(input_scale: FloatLike, output_scale: FloatLike, kernel: Sequence[int]) -> np.float32:
    """M = fp32(s_x / fp32(s_y * fp32(kh * kw))): the integer window size is converted to float32
    first, multiplied into s_y, then s_x is divided by that (onnxruntime's QLinearGlobalAveragePool)."""
    kh, kw = (int(k) for k in kernel)
    return np.float32(f32(input_scale) / (f32(output_scale) * f32(kh * kw)))


def avgpool(
    x: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int],
    input_scale: FloatLike,
    input_zero_point: int,
    output_scale: FloatLike,
    output_zero_point: int,
) -> IntArray:
    """`qtrain.avgpool` (see `avgpool_with_mask`)."""
    return avgpool_with_mask(
        x, kernel=kernel, strides=strides, input_scale=input_scale, input_zero_point=input_zero_point,
        output_scale=output_scale, output_zero_point=output_zero_point,
    )[0]


def avgpool_with_mask(
    x: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int],
    input_scale: FloatLike,
    input_zero_point: int,
    output_scale: FloatLike,
    output_zero_point: int,
) -> tuple[IntArray, np.ndarray]:
    """`qtrain.avgpool`: k x k average pool without padding (global when the kernel is H x W), and
    its saturation mask (see `requantize_with_mask`).

        acc[n, oh, ow, c] = sum_{i < kh, j < kw} (x[n, oh*sh + i, ow*sw + j, c] - zx)     exact int32
        y = clamp(rint(fp32(acc) * M) + zy, -128, 127),  M = avgpool_multiplier(s_x, s_y, kernel)

    Bit-exact with onnxruntime's QLinearGlobalAveragePool. onnxruntime's QLinearAveragePool (k x k)
    instead sums dequantized float values and divides; it differs from this contract by at most one
    unit in rare ties (bounded in the tests).
    """
    if x.ndim != 4:
        raise ValueError(f"avgpool: expected an NHWC input, got shape {x.shape}")
    n, h, w, c = x.shape
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in strides)
    if not (1 <= kh <= h and 1 <= kw <= w and sh >= 1 and sw >= 1):
        raise ValueError(f"avgpool: kernel {kh}x{kw}, strides {sh}x{sw} do not fit input {h}x{w}")
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    xs = x.astype(np.int32) - int(input_zero_point)
    if (kh, kw) == (h, w):
        acc = xs.sum(axis=(1, 2), dtype=np.int64).reshape(n, 1, 1, c)
    else:
        acc = np.zeros((n, oh, ow, c), dtype=np.int64)
        for _, _, view in conv_taps(xs, (kh, kw), (sh, sw), (oh, ow)):
            acc += view
    m = avgpool_multiplier(input_scale, output_scale, (kh, kw))
    return requantize_with_mask(acc, m, output_zero_point)


# -- quantize / dequantize -----------------------------------------------------------------------------


def quantize(x: np.ndarray, *, scale: FloatLike, zero_point: int) -> IntArray:
    """`qtrain.quantize`: float32 -> int8.  y = clamp(rint(fp32(x / s)) + zp, -128, 127).

    One float32 division (not a multiplication by 1/s), clamp to [-128 - zp, 127 - zp] in float,
    `rint` half to even, add zp. NaN gives -128. Bit-exact with onnxruntime's QuantizeLinear.
    """
    with np.errstate(over="ignore"):  # |x / s| overflowing to inf is clamped like any large value
        t = np.asarray(x, dtype=np.float32) / f32(scale)
    r, _ = _round_and_clamp(t, INT8_MIN - int(zero_point), INT8_MAX - int(zero_point))
    return (r.astype(np.int32) + int(zero_point)).astype(np.int8)


def dequantize(q: np.ndarray, *, scale: FloatLike, zero_point: int) -> FloatArray:
    """`qtrain.dequantize`: int8 -> float32.  y = fp32(q - zp) * s (exact integer difference, one
    float32 multiply). Bit-exact with onnxruntime's DequantizeLinear."""
    return (np.asarray(q).astype(np.int32) - int(zero_point)).astype(np.float32) * f32(scale)


# -- exp / log (the runtime's expf/logf shims) ---------------------------------------------------------

EXP_MIN = f32(-86.0)
"""exp_f32(x) is +0 below this (the result would be < 2**-124; softmax terms that small do not count)."""
EXP_MAX = f32(88.0)
"""exp_f32 is only specified up to here (2**127 range); cross-entropy only evaluates it on x <= 0."""
LOG2E = f32_from_bits(0x3FB8AA3B)  # fp32(1 / ln 2)
LN2_HI = f32_from_bits(0x3F317200)  # ln 2 truncated to 15 significant bits: k * LN2_HI is exact
LN2_LO = f32_from_bits(0x35BFBE8E)  # fp32(ln 2 - LN2_HI)
EXP_POLY = tuple(
    f32_from_bits(b)
    for b in (0x3F800000, 0x3F800000, 0x3F000000, 0x3E2AAAAB, 0x3D2AAAAB, 0x3C088889, 0x3AB60B61, 0x39500D01)
)
"""fp32(1/k!) for k = 0..7: Taylor coefficients of e**r on |r| <= ln(2)/2."""
SQRT2 = f32_from_bits(0x3FB504F3)  # fp32(sqrt 2)
LOG_POLY = tuple(f32_from_bits(b) for b in (0x3F2AAAAB, 0x3ECCCCCD, 0x3E924925, 0x3E638E39))
"""fp32(2/3), fp32(2/5), fp32(2/7), fp32(2/9): log(m) = 2s + s*z*(2/3 + z*(2/5 + z*(2/7 + z*2/9)))."""


def exp_f32(x: np.ndarray | FloatLike) -> FloatArray:
    """The runtime's `expf`, defined operation by operation (max error about 1.2 ulp on [-86, 88]):

        k = rint(x * LOG2E)                       fp32 multiply, round half to even
        r = (x - k * LN2_HI) - k * LN2_LO         four fp32 ops in this order (k * LN2_HI is exact)
        p = EXP_POLY[7]
        p = p * r + EXP_POLY[i]   for i = 6 .. 0  (Horner; separate multiply and add, no fma)
        y = p * 2**k                              2**k built from its bits ((k + 127) << 23)
        y = +0 if x < EXP_MIN

    Inputs above EXP_MAX are outside the contract.
    """
    x = np.asarray(x, dtype=np.float32)
    k = np.rint(x * LOG2E)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = EXP_POLY[7]
    for c in EXP_POLY[6::-1]:
        p = p * r + c
    ki = np.clip(k, -126, 127).astype(np.int32)
    two_k = ((ki + 127).astype(np.uint32) << np.uint32(23)).view(np.float32)
    y = np.asarray(p * two_k, dtype=np.float32)
    return np.where(x < EXP_MIN, np.float32(0.0), y).astype(np.float32)


def log_f32(x: np.ndarray | FloatLike) -> FloatArray:
    """The runtime's `logf` for positive normal float32 inputs (max error about 1.9 ulp):

        e = biased exponent of x - 127;  m = x with its exponent set to 0, so m in [1, 2)  (bit ops)
        if m > SQRT2: m = m * 0.5, e = e + 1      (exact)
        f = m - 1                                 (exact)
        s = f / (2 + f)                           two fp32 ops
        z = s * s
        R = LOG_POLY[3]
        R = R * z + LOG_POLY[i]   for i = 2 .. 0
        R = R * z
        log_m = (s + s) + s * R
        y = fp32(e) * LN2_HI + (log_m + fp32(e) * LN2_LO)

    Zero, negative, subnormal, infinite and NaN inputs are outside the contract.
    """
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    e = (bits >> np.uint32(23)).astype(np.int32) - 127
    m = ((bits & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000)).view(np.float32)
    above = m > SQRT2
    m = np.where(above, m * np.float32(0.5), m)
    ef = (e + above.astype(np.int32)).astype(np.float32)
    f = m - np.float32(1.0)
    s = f / (np.float32(2.0) + f)
    z = s * s
    r = LOG_POLY[3]
    for c in LOG_POLY[2::-1]:
        r = r * z + c
    r = r * z
    log_m = (s + s) + s * r
    return np.asarray(ef * LN2_HI + (log_m + ef * LN2_LO), dtype=np.float32)


# -- loss ----------------------------------------------------------------------------------------------


def cross_entropy(logits: np.ndarray, label: int) -> np.float32:
    """`qtrain.cross_entropy`: softmax cross-entropy of float32 logits [..., K] (batch 1) and a label.

        mx = max_i x[i]                          (exact)
        t[i] = x[i] - mx                         fp32
        e[i] = exp_f32(t[i])
        s = e[0]; s = s + e[i] for i = 1 .. K-1  fp32, in index order
        loss = log_f32(s) - t[label]             fp32

    Numerically stable (every t <= 0, s >= 1). The gradient with respect to the logits is
    e[i] / s - (i == label), built from the same e and s.
    """
    x = np.asarray(logits, dtype=np.float32).reshape(-1)
    k = x.shape[0]
    if not 0 <= int(label) < k:
        raise ValueError(f"cross_entropy: label {label} is outside [0, {k})")
    t = x - x.max()
    e = exp_f32(t)
    s = np.add.accumulate(e, dtype=np.float32)[-1]
    return np.float32(log_f32(s) - t[int(label)])
