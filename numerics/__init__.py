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

Where the contract comes from (see test/python/numerics/test_numerics_ort.py): conv2d, global
avgpool, quantize and dequantize follow onnxruntime's CPU kernels exactly; add follows onnxruntime's
x86 AVX2 QLinearAdd kernel (zero points folded into one float32 offset, two fused multiply-adds),
which is both bit-exact with the oracle and cheaper on the M7 than dequantize-add-divide.

Training has two more families, further down:
- backward kernels (`cross_entropy_grad`, `requant_grad`, `conv2d_input_grad`, `conv2d_weight_grad`,
  `bias_grad`, `avgpool_grad`, `grad_accumulate`, `channel_slice`) and the update (`sgd_update`, with
  the learning-rate schedule `lr_schedule_factor` / `scheduled_lr` and `momentum_velocity`).
  Gradients are float32 (the contract) in the integer domain of the tensor they belong to. Element-wise
  steps are exact float32 operations in the documented order. Sums (convolution gradients, bias and
  pooling gradients) are *reference sums*: the exact sum of the float32 products, accumulated here in
  float64 (error far below one float32 ulp) and rounded once to float32. A C kernel accumulating in
  float32 in the order its docstring recommends differs from it by a few ulp, which DESIGN.md's
  gradient tolerance allows; the int8/int32 parameters after an update then differ only where a value
  lands on the other side of a rounding boundary. The linear kernels keep float64 when given float64
  gradients (relaxed mode, below).
- relaxed forward kernels (`conv2d_relaxed`, `add_relaxed`, `avgpool_relaxed`, `quantize_relaxed`,
  `dequantize_relaxed`, `cross_entropy_relaxed`): every op without its `rint`, in float64, clamps kept,
  masks from the unrounded value. The backward kernels compute the exact derivatives of this
  float-relaxed network (rounding is straight-through), so it is what finite differences check them
  against, and with unrounded float parameters it is the "fp32 simulation" training is compared to.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from qtrain.errors import UserError

INT8_MIN, INT8_MAX = -128, 127
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

FloatLike = float | np.floating
IntArray = np.ndarray
FloatArray = np.ndarray


class AccumulatorOverflowError(UserError, OverflowError):
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


def fused_pointwise_depthwise(
    x: np.ndarray,
    pw_weight: np.ndarray,
    pw_bias: np.ndarray | None,
    dw_weight: np.ndarray,
    dw_bias: np.ndarray | None,
    *,
    input_scale: FloatLike,
    input_zero_point: int,
    pw_weight_scales: np.ndarray | Sequence[float] | FloatLike,
    mid_scale: FloatLike,
    mid_zero_point: int,
    dw_weight_scales: np.ndarray | Sequence[float] | FloatLike,
    output_scale: FloatLike,
    output_zero_point: int,
    dw_strides: Sequence[int] = (1, 1),
    dw_padding: Sequence[int] = (0, 0, 0, 0),
    pw_clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
    dw_clamp: tuple[int, int] = (INT8_MIN, INT8_MAX),
) -> IntArray:
    """`qtrain.fused_pointwise_depthwise`: the two convolutions it stands for, through the int8 intermediate.

        mid = conv2d(x, pw_weight, pw_bias)         1x1, stride 1, no padding, groups 1; output mid_q, pw_clamp
        y   = conv2d(mid, dw_weight, dw_bias)       groups = C_mid; input mid_q, output output_q, dw_clamp
    """
    mid = conv2d(x, pw_weight, pw_bias, input_scale=input_scale, input_zero_point=input_zero_point,
                 weight_scales=pw_weight_scales, output_scale=mid_scale, output_zero_point=mid_zero_point,
                 clamp=pw_clamp)
    return conv2d(mid, dw_weight, dw_bias, input_scale=mid_scale, input_zero_point=mid_zero_point,
                  weight_scales=dw_weight_scales, output_scale=output_scale, output_zero_point=output_zero_point,
                  strides=dw_strides, padding=dw_padding, groups=mid.shape[3], clamp=dw_clamp)


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


# -- exp / log: targets/armv7em/runtime_math.c, operation for operation ------------------------------

LOG2E = f32(1.44269502162933349609)  # fp32(1 / ln 2)
LN2_HI = f32_from_bits(0x3F317200)  # ln 2 with 9 trailing zero bits: k * LN2_HI is exact for |k| < 2**9
LN2_LO = f32(1.42860676533018704e-6)  # fp32(ln 2 - LN2_HI)
EXP_OVERFLOW = f32(88.72283172607421875)
EXP_UNDERFLOW = f32(-103.972084045410156)
EXP_TAYLOR = tuple(f32(1.0) / f32(n) for n in (5040.0, 720.0, 120.0, 24.0, 6.0))
LOG_TAYLOR = tuple(f32(2.0) / f32(n) for n in (11.0, 9.0, 7.0, 5.0, 3.0))


def _bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def _from_bits(u: np.ndarray) -> np.ndarray:
    return np.asarray(u, dtype=np.uint32).view(np.float32)


def exp_f32(x: np.ndarray | FloatLike) -> FloatArray:
    """`qtrain_expf` (runtime_math.c), bit for bit: every step below is one float32 operation.

        k   = rint(x * LOG2E)                        (the C adds and subtracts 1.5 * 2**23: the same)
        r_hi = x - k * LN2_HI (exact);  r_lo = k * LN2_LO;  r = r_hi - r_lo;  r_err = (r_hi - r) - r_lo
        q   = 1/5040;  q = c + r * q  for c = 1/720, 1/120, 1/24, 1/6, 0.5   (separate multiply and add)
        p   = r + ((r * r) * q + r_err);  y = 1 + p
        y * 2**k (2**k from its bits; k = 128 and subnormal results in two exact steps)
        +inf above 88.72283, +0 below -103.97208, NaN stays NaN.
    Within 0.94 ulp of e**x over all float32 inputs (tested on the C against libm).
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        kf = np.rint(x * LOG2E).astype(np.float32)
        r_hi = x - kf * LN2_HI
        r_lo = kf * LN2_LO
        r = r_hi - r_lo
        r_err = (r_hi - r) - r_lo
        q = np.full_like(r, EXP_TAYLOR[0])
        for c in (*EXP_TAYLOR[1:], f32(0.5)):
            q = c + r * q
        p = r + ((r * r) * q + r_err)
        y = (f32(1.0) + p).astype(np.float32)
        k = np.nan_to_num(kf, nan=0.0).astype(np.int64)
        normal = y * _from_bits(((np.clip(k, -126, 127) + 127) << 23).astype(np.uint32))
        big = (y * f32(2.0**127)) * _from_bits((np.clip(k, 0, 255) << 23).astype(np.uint32))
        small = (y * _from_bits(((np.clip(k, -150, -103) + 24 + 127) << 23).astype(np.uint32))) * f32(2.0**-24)
        out = np.where(k > 127, big, np.where(k < -126, small, normal)).astype(np.float32)
        out = np.where(x > EXP_OVERFLOW, np.float32(np.inf), out)
        out = np.where(x < EXP_UNDERFLOW, np.float32(0.0), out)
        return np.where(np.isnan(x), x + x, out).astype(np.float32)


def log_f32(x: np.ndarray | FloatLike) -> FloatArray:
    """`qtrain_logf` (runtime_math.c), bit for bit, for positive finite inputs (subnormals included):

        k, m = exponent and mantissa (m in [1, 2)); if m > sqrt 2: m = m / 2, k = k + 1   (bit ops)
        f = m - 1 (exact);  s = f / (2 + f);  z = s * s
        R = 2/11;  R = c + z * R  for c = 2/9, 2/7, 2/5, 2/3;  R = z * R
        h = 0.5 * f * f
        y = k * LN2_HI + (f - ((h - s * (h + R)) - k * LN2_LO))
    Within 0.89 ulp of ln x. Zero gives -inf, +inf gives +inf, negative and NaN give NaN.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        ix = _bits(x).astype(np.int64)
        sub = ix < 0x00800000
        ix = np.where(sub, _bits(x * f32(2.0**23)).astype(np.int64), ix)
        k = np.where(sub, -23, 0) + (ix >> 23) - 127
        ix = (ix & 0x007FFFFF) | 0x3F800000
        above = ix > 0x3FB504F3
        ix = np.where(above, ix - 0x00800000, ix)
        k = k + above
        f = _from_bits(ix.astype(np.uint32)) - f32(1.0)
        s = f / (f32(2.0) + f)
        z = s * s
        big_r = np.full_like(z, LOG_TAYLOR[0])
        for c in LOG_TAYLOR[1:]:
            big_r = c + z * big_r
        big_r = z * big_r
        half_f2 = f32(0.5) * f * f
        kf = k.astype(np.float32)
        y = (kf * LN2_HI + (f - ((half_f2 - s * (half_f2 + big_r)) - kf * LN2_LO))).astype(np.float32)
        raw = _bits(x)
        y = np.where((raw == 0) | (raw == 0x80000000), np.float32(-np.inf), y)
        y = np.where(raw == 0x7F800000, np.float32(np.inf), y)
        y = np.where((raw > 0x80000000) | ((raw > 0x7F800000) & (raw < 0x80000000)), np.float32(np.nan), y)
        return y.astype(np.float32)


# cos(pi x) = sum_k C_k (x^2)^k and sin(pi u) = u sum_k S_k (u^2)^k, C_k = (-1)^k pi^2k / (2k)!,
# S_k = (-1)^k pi^(2k+1) / (2k+1)!, rounded to float32 (pinned by their bits, as runtime_math.c's hex floats).
COSPI_TAYLOR = tuple(f32_from_bits(b) for b in (0xBCD368F9, 0x3E70FA83, 0xBFAAE9E4, 0x4081E0F8, 0xC09DE9E6))
SINPI_TAYLOR = tuple(f32_from_bits(b) for b in (0xBBF183A8, 0x3DA83C1A, 0xBF196966, 0x402335E3, 0xC0A55DE7,
                                                 0x40490FDB))


def cospi_f32(x: np.ndarray | FloatLike) -> FloatArray:
    """`qtrain_cospif` (runtime_math.c), bit for bit: cos(pi * x) for x in [0, 1] (the cosine decay of the
    learning-rate schedule; outside [0, 1] the result is unspecified). Every step is one float32 operation:

        neg = x > 0.5;  if neg: x = 1 - x                      (exact: Sterbenz)     now x in [0, 0.5]
        x <= 0.25:  z = x * x;  q = C5;  q = c + z * q  for c = C4 .. C1;  y = 1 + z * q
        x >  0.25:  u = 0.5 - x (exact);  z = u * u;  q = S5;  q = c + z * q  for c = S4 .. S0;  y = u * q
        neg: y = -y
    with C_k = (-1)^k pi^2k / (2k)! and S_k = (-1)^k pi^(2k+1) / (2k+1)! in float32 (Taylor; truncation
    below 2e-9). Within 2e-7 of cos(pi x) (tested); cospi_f32(0) = 1 and cospi_f32(1) = -1 exactly.
    """
    x = np.asarray(x, dtype=np.float32)
    neg = x > f32(0.5)
    x = np.where(neg, f32(1.0) - x, x).astype(np.float32)
    z = (x * x).astype(np.float32)
    q = np.full_like(z, COSPI_TAYLOR[0])
    for c in COSPI_TAYLOR[1:]:
        q = (c + z * q).astype(np.float32)
    near = (f32(1.0) + z * q).astype(np.float32)
    u = (f32(0.5) - x).astype(np.float32)
    z = (u * u).astype(np.float32)
    q = np.full_like(z, SINPI_TAYLOR[0])
    for c in SINPI_TAYLOR[1:]:
        q = (c + z * q).astype(np.float32)
    far = (u * q).astype(np.float32)
    y = np.where(x <= f32(0.25), near, far).astype(np.float32)
    return np.where(neg, -y, y).astype(np.float32)


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


# == training ===========================================================================================
#
# Shapes and domains: a gradient has the shape of the value it belongs to and lives in that value's
# integer domain (dL/dq for an int8 activation q, dL/dq_w for an int8 weight, dL/dq_b for an int32 bias).
# Reference sums: see the module docstring (exact float64 accumulation of the float32 products, one
# rounding to float32 at the end; float64 in, float64 out for the relaxed mode).


def round_bf16(x: np.ndarray) -> FloatArray:
    """An fp32 gradient held as bf16 (`grad-precision=bf16`): the top 16 bits of its float32 pattern after
    round-to-nearest-even on the dropped 16 (NaN stays a quiet NaN). Returned as float32 values, which a
    bf16 represents exactly; the kernels do the same integer arithmetic (qtrain_f32_to_bf16)."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    top = np.where(nan, (bits >> 16) | 0x40, rounded).astype(np.uint32) << 16
    return top.astype(np.uint32).view(np.float32)


def _grad_dtype(*arrays: np.ndarray) -> np.dtype:
    """float32 for the contract's float32 gradients, float64 when any input is float64 (relaxed mode)."""
    return np.result_type(np.float32, *(np.asarray(a).dtype for a in arrays if np.asarray(a).dtype.kind == "f"))


def _conv_geometry(
    input_hw: tuple[int, int], kernel: tuple[int, int], strides: Sequence[int], padding: Sequence[int], what: str
) -> tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]:
    """(strides, padding, output H x W), checked."""
    sh, sw = (int(s) for s in strides)
    pt, pl, pb, pr = (int(p) for p in padding)
    if min(sh, sw) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"{what}: strides must be >= 1 and padding >= 0, got {strides}, {padding}")
    oh = conv_output_size(input_hw[0], kernel[0], sh, pt, pb)
    ow = conv_output_size(input_hw[1], kernel[1], sw, pl, pr)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: kernel {kernel[0]}x{kernel[1]} is larger than the padded input")
    return (sh, sw), (pt, pl, pb, pr), (oh, ow)


def _patches(xp: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """im2col of a padded NHWC tensor: [N*OH*OW, KH*KW*C], columns ordered (tap i, tap j, channel) like OHWI."""
    n, c = xp.shape[0], xp.shape[3]
    (kh, kw), (oh, ow) = kernel, out_hw
    cols = np.empty((n, oh, ow, kh, kw, c), dtype=xp.dtype)
    for i, j, view in conv_taps(xp, kernel, strides, out_hw):
        cols[:, :, :, i, j, :] = view
    return cols.reshape(n * oh * ow, kh * kw * c)


def _window_view(buffer: np.ndarray, i: int, j: int, strides: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """buffer[:, i + sh*oh, j + sw*ow, :] as a writable strided view (the scatter form of `conv_taps`)."""
    (sh, sw), (oh, ow) = strides, out_hw
    return buffer[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw, :]


def _is_depthwise(cin: int, weight_shape: Sequence[int], groups: int) -> bool:
    """groups = C_in with one input channel per group (channel multiplier C_out / C_in)."""
    return groups == cin and int(weight_shape[3]) == 1


def _check_groups(cin: int, weight_shape: Sequence[int], groups: int, what: str) -> None:
    cout, _, _, cin_g = (int(d) for d in weight_shape)
    if groups < 1 or cin % groups or cout % groups or cin_g != cin // groups:
        raise ValueError(
            f"{what}: groups = {groups} does not fit input channels {cin}, weight shape {tuple(weight_shape)}"
        )


def _conv_float(xp: np.ndarray, weight: np.ndarray, strides: tuple[int, int], out_hw: tuple[int, int],
                groups: int) -> np.ndarray:
    """sum over taps and input channels of xp * w in float64 (xp already centred and padded)."""
    n, _, _, cin = xp.shape
    cout, kh, kw, cin_g = weight.shape
    oh, ow = out_hw
    w = np.asarray(weight, dtype=np.float64)
    if _is_depthwise(cin, weight.shape, groups):
        multiplier = cout // cin
        xs = np.repeat(xp, multiplier, axis=3) if multiplier > 1 else xp
        acc = np.zeros((n, oh, ow, cout), dtype=np.float64)
        for i, j, view in conv_taps(xs, (kh, kw), strides, out_hw):
            acc += view * w[:, i, j, 0]
        return acc
    cout_g = cout // groups
    acc = np.empty((n, oh, ow, cout), dtype=np.float64)
    for g in range(groups):
        cols = _patches(xp[..., g * cin_g : (g + 1) * cin_g], (kh, kw), strides, out_hw)
        wg = w[g * cout_g : (g + 1) * cout_g].reshape(cout_g, kh * kw * cin_g)
        acc[..., g * cout_g : (g + 1) * cout_g] = (cols @ wg.T).reshape(n, oh, ow, cout_g)
    return acc


# -- float-relaxed forward (the network the gradients are exact for) -----------------------------------


def _relaxed_clamp(u: np.ndarray, lo: int, hi: int) -> tuple[FloatArray, np.ndarray]:
    """(clamp(u, lo, hi), mask lo <= u <= hi): the relaxed op's output and its saturation mask."""
    inside = (u >= lo) & (u <= hi)
    return np.clip(u, float(lo), float(hi)), inside


def conv2d_relaxed(
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
) -> tuple[FloatArray, np.ndarray]:
    """`qtrain.conv2d` without its rint, in float64 (input, weight and bias may hold any real values):

        acc = sum((xp - zx) * w) + b         xp padded with zx, as in `conv2d_accumulate`
        u = acc * M[c] + zy                  M = conv2d_multiplier(...) (the same float32 constants)
        y = clamp(u, lo, hi),  mask = lo <= u <= hi
    """
    x = np.asarray(x)
    if x.ndim != 4 or np.ndim(weight) != 4:
        raise ValueError(f"conv2d: expected NHWC input and OHWI weight, got shapes {x.shape}, {np.shape(weight)}")
    lo, hi = _check_clamp(clamp)
    _check_groups(x.shape[3], weight.shape, groups, "conv2d")
    st, pads, out_hw = _conv_geometry(x.shape[1:3], weight.shape[1:3], strides, padding, "conv2d")
    xp = pad_nhwc(x.astype(np.float64) - float(input_zero_point), pads, 0.0)
    acc = _conv_float(xp, weight, st, out_hw, groups)
    if bias is not None:
        acc = acc + np.asarray(bias, dtype=np.float64)
    m = conv2d_multiplier(input_scale, weight_scales, output_scale).astype(np.float64)
    return _relaxed_clamp(acc * m + float(output_zero_point), lo, hi)


def add_relaxed(
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
) -> tuple[FloatArray, np.ndarray]:
    """`qtrain.add` without its rint, in float64: u = a * r_a + b * r_b + c with (r_a, r_b, c) =
    add_constants(...); y = clamp(u, lo, hi), mask = lo <= u <= hi."""
    lhs, rhs = np.asarray(lhs), np.asarray(rhs)
    if lhs.shape != rhs.shape:
        raise ValueError(f"add: operand shapes differ: {lhs.shape} vs {rhs.shape}")
    lo, hi = _check_clamp(clamp)
    ra, rb, c = add_constants(lhs_scale, lhs_zero_point, rhs_scale, rhs_zero_point, output_scale, output_zero_point)
    u = lhs.astype(np.float64) * float(ra) + rhs.astype(np.float64) * float(rb) + float(c)
    return _relaxed_clamp(u, lo, hi)


def avgpool_relaxed(
    x: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int],
    input_scale: FloatLike,
    input_zero_point: int,
    output_scale: FloatLike,
    output_zero_point: int,
) -> tuple[FloatArray, np.ndarray]:
    """`qtrain.avgpool` without its rint, in float64: u = sum_window(x - zx) * M + zy,
    M = avgpool_multiplier(...); y = clamp(u, -128, 127), mask = -128 <= u <= 127."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"avgpool: expected an NHWC input, got shape {x.shape}")
    n, h, w, c = x.shape
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in strides)
    if not (1 <= kh <= h and 1 <= kw <= w and sh >= 1 and sw >= 1):
        raise ValueError(f"avgpool: kernel {kh}x{kw}, strides {sh}x{sw} do not fit input {h}x{w}")
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    xs = x.astype(np.float64) - float(input_zero_point)
    acc = np.zeros((n, oh, ow, c), dtype=np.float64)
    for _, _, view in conv_taps(xs, (kh, kw), (sh, sw), (oh, ow)):
        acc += view
    m = float(avgpool_multiplier(input_scale, output_scale, (kh, kw)))
    return _relaxed_clamp(acc * m + float(output_zero_point), INT8_MIN, INT8_MAX)


def quantize_relaxed(x: np.ndarray, *, scale: FloatLike, zero_point: int) -> FloatArray:
    """`qtrain.quantize` without its rint, in float64: clamp(x / s + zp, -128, 127)."""
    u = np.asarray(x, dtype=np.float64) / float(f32(scale)) + float(zero_point)
    return np.clip(u, float(INT8_MIN), float(INT8_MAX))


def dequantize_relaxed(q: np.ndarray, *, scale: FloatLike, zero_point: int) -> FloatArray:
    """`qtrain.dequantize` on real-valued codes, in float64: (q - zp) * s."""
    return (np.asarray(q, dtype=np.float64) - float(zero_point)) * float(f32(scale))


def _check_label(k: int, label: int, what: str) -> int:
    if not 0 <= int(label) < k:
        raise ValueError(f"{what}: label {label} is outside [0, {k})")
    return int(label)


def cross_entropy_relaxed(logits: np.ndarray, label: int) -> np.float64:
    """Softmax cross-entropy in float64 with numpy's exp/log (the relaxed loss): log(sum(exp(x - max)))
    - (x[label] - max)."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    label = _check_label(x.shape[0], label, "cross_entropy")
    t = x - x.max()
    return np.float64(np.log(np.exp(t).sum()) - t[label])


def cross_entropy_grad_relaxed(logits: np.ndarray, label: int) -> FloatArray:
    """softmax(x) - onehot(label) in float64 (the derivative of `cross_entropy_relaxed`)."""
    x = np.asarray(logits, dtype=np.float64)
    flat = x.reshape(-1)
    label = _check_label(flat.shape[0], label, "cross_entropy_grad")
    e = np.exp(flat - flat.max())
    g = e / e.sum()
    g[label] -= 1.0
    return g.reshape(x.shape)


# -- backward kernels ----------------------------------------------------------------------------------


def cross_entropy_grad(logits: np.ndarray, label: int) -> FloatArray:
    """`qtrain.cross_entropy_grad`: dL/dlogits of `cross_entropy`, float32, same shape as the logits.

        mx, t[i], e[i], s                        exactly as in `cross_entropy` (s summed in index order)
        g[i] = fp32(e[i] / s)                    one float32 division per class
        g[label] = fp32(g[label] - 1)
    """
    x = np.asarray(logits, dtype=np.float32)
    flat = x.reshape(-1)
    label = _check_label(flat.shape[0], label, "cross_entropy_grad")
    t = flat - flat.max()
    e = exp_f32(t)
    s = np.add.accumulate(e, dtype=np.float32)[-1]
    g = (e / s).astype(np.float32)
    g[label] = g[label] - np.float32(1.0)
    return g.reshape(x.shape)


def requant_grad(grad: np.ndarray, mask: np.ndarray | None, multiplier: np.ndarray | Sequence[float] | FloatLike
                 ) -> FloatArray:
    """`qtrain.requant_grad`: g_in = mask ? fp32(g * m[c]) : +0.0 (c = last axis, or one multiplier).

    One float32 multiply per element, then the mask selects (a masked element is +0.0, never the
    product with 0). `m` are the op's float32 constants (the forward multiplier, dy/dacc).
    """
    g = np.asarray(grad)
    dtype = _grad_dtype(g)
    m = np.atleast_1d(np.asarray(multiplier, dtype=np.float32))
    if m.size not in (1, g.shape[-1]):
        raise ValueError(f"requant_grad: {m.size} multipliers for {g.shape[-1]} channels")
    out = g.astype(dtype) * m.astype(dtype)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != g.shape:
            raise ValueError(f"requant_grad: mask shape {mask.shape} differs from the gradient's {g.shape}")
        out = np.where(mask, out, dtype.type(0.0))
    return out


def conv2d_input_grad(
    grad: np.ndarray,
    weight: np.ndarray,
    input_shape: Sequence[int],
    *,
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    groups: int = 1,
) -> FloatArray:
    """`qtrain.conv2d_input_grad`: dL/dx of a conv, the transposed convolution of g_acc with the int8 weight.

        gx[n, h, w, ci] = sum over taps (i, j), outputs (oh, ow) with oh*sh + i = h + pt and
                          ow*sw + j = w + pl, and output channels co of ci's group, of
                          g[n, oh, ow, co] * w[co, i, j, ci - group_start]

    Input pixels no window reaches (bottom/right rows a stride skips) and padding get nothing.
    Reference sum (exact float64, one rounding to float32). Recommended C order (scatter form): zero
    gx; for each output pixel (n, oh, ow) in row-major order, each tap (i, j) row-major, each output
    channel co ascending: gx[...] = fp32(gx[...] + fp32(g * w)); depthwise: the same with the channel
    multiplier's co = ci*mult .. ci*mult + mult - 1.
    """
    g = np.asarray(grad)
    dtype = _grad_dtype(g)
    n, h, wd, cin = (int(d) for d in input_shape)
    cout, kh, kw, cin_g = weight.shape
    _check_groups(cin, weight.shape, groups, "conv2d_input_grad")
    st, pads, out_hw = _conv_geometry((h, wd), (kh, kw), strides, padding, "conv2d_input_grad")
    if g.shape != (n, *out_hw, cout):
        raise ValueError(f"conv2d_input_grad: grad shape {g.shape}, expected {(n, *out_hw, cout)}")
    pt, pl, pb, pr = pads
    gd = g.astype(np.float64)
    w = np.asarray(weight, dtype=np.float64)
    buf = np.zeros((n, h + pt + pb, wd + pl + pr, cin), dtype=np.float64)
    if _is_depthwise(cin, weight.shape, groups):
        multiplier = cout // cin
        for i in range(kh):
            for j in range(kw):
                contrib = gd * w[:, i, j, 0]
                if multiplier > 1:
                    contrib = contrib.reshape(n, *out_hw, cin, multiplier).sum(axis=-1)
                _window_view(buf, i, j, st, out_hw)[...] += contrib
    else:
        cout_g = cout // groups
        for grp in range(groups):
            gg = gd[..., grp * cout_g : (grp + 1) * cout_g].reshape(-1, cout_g)
            wg = w[grp * cout_g : (grp + 1) * cout_g].reshape(cout_g, kh * kw * cin_g)
            cols = (gg @ wg).reshape(n, *out_hw, kh, kw, cin_g)
            target = buf[..., grp * cin_g : (grp + 1) * cin_g]
            for i in range(kh):
                for j in range(kw):
                    _window_view(target, i, j, st, out_hw)[...] += cols[:, :, :, i, j, :]
    return buf[:, pt : pt + h, pl : pl + wd, :].astype(dtype)


def conv2d_weight_grad(
    x: np.ndarray,
    grad: np.ndarray,
    *,
    input_zero_point: int,
    kernel: Sequence[int],
    strides: Sequence[int] = (1, 1),
    padding: Sequence[int] = (0, 0, 0, 0),
    groups: int = 1,
    channels: Sequence[int] | None = None,
) -> FloatArray:
    """`qtrain.conv2d_weight_grad`: dL/dW of a conv, in OHWI.

        dW[o, i, j, c] = sum over n, oh, ow of g[n, oh, ow, o] * (xp[n, oh*sh + i, ow*sw + j, c] - zx)

    `x` is the layer input as saved in forward: channels [start, stop) = `channels` of it (all when
    None), and xp that tensor padded with zx (padded taps contribute 0). Result, by kind of layer:
    - groups = 1: [C_out, KH, KW, stop - start], the gradient of the trained input-channel slice;
    - depthwise (groups = C_out > 1, one input channel per group): [stop - start, KH, KW, 1], reading
      the gradient channels start .. stop - 1 (the output channel of input channel c is c);
    - other groups (no slice): [C_out, KH, KW, C_in / groups].
    (x - zx) is an integer for int8 inputs, so every product is exact in float64. Reference sum (exact
    float64, one rounding to float32). Recommended C order: for each weight element, outputs (n, oh, ow)
    row-major, acc = fp32(acc + fp32(g * fp32(x - zx))).
    """
    x = np.asarray(x)
    g = np.asarray(grad)
    dtype = _grad_dtype(g)
    if x.ndim != 4 or g.ndim != 4 or x.shape[0] != g.shape[0]:
        raise ValueError(f"conv2d_weight_grad: expected NHWC input and gradient, got {x.shape}, {g.shape}")
    kh, kw = (int(k) for k in kernel)
    saved = x.shape[3]
    cout = g.shape[3]
    start, stop = (0, saved) if channels is None else (int(channels[0]), int(channels[1]))
    if not 0 <= start < stop or stop - start != saved:
        raise ValueError(f"conv2d_weight_grad: channels [{start}, {stop}) do not match the {saved} saved channels")
    st, pads, out_hw = _conv_geometry(x.shape[1:3], (kh, kw), strides, padding, "conv2d_weight_grad")
    if g.shape[1:3] != out_hw:
        raise ValueError(f"conv2d_weight_grad: grad {g.shape} does not match input {x.shape} with kernel {kh}x{kw}")
    xp = pad_nhwc(x.astype(np.float64) - float(input_zero_point), pads, 0.0)
    gd = g.astype(np.float64)
    depthwise = groups > 1 and groups == cout and (channels is not None or saved == groups)
    if depthwise:
        if stop > cout:
            raise ValueError(f"conv2d_weight_grad: depthwise channels [{start}, {stop}) exceed {cout} channels")
        gs = gd[..., start:stop]
        dw = np.empty((saved, kh, kw, 1), dtype=np.float64)
        for i, j, view in conv_taps(xp, (kh, kw), st, out_hw):
            dw[:, i, j, 0] = np.einsum("nhwc,nhwc->c", view, gs)
        return dw.astype(dtype)
    if groups != 1 and channels is not None:
        raise ValueError("conv2d_weight_grad: a channel slice needs groups = 1 or a depthwise layer")
    if groups < 1 or saved % groups or cout % groups:
        raise ValueError(f"conv2d_weight_grad: groups = {groups} does not fit {saved} inputs, {cout} outputs")
    cin_g, cout_g = saved // groups, cout // groups
    dw = np.empty((cout, kh * kw * cin_g), dtype=np.float64)
    for grp in range(groups):
        cols = _patches(xp[..., grp * cin_g : (grp + 1) * cin_g], (kh, kw), st, out_hw)
        gg = gd[..., grp * cout_g : (grp + 1) * cout_g].reshape(-1, cout_g)
        dw[grp * cout_g : (grp + 1) * cout_g] = gg.T @ cols
    return dw.reshape(cout, kh, kw, cin_g).astype(dtype)


def bias_grad(grad: np.ndarray) -> FloatArray:
    """`qtrain.bias_grad`: db[c] = sum over n, h, w of g_acc[n, h, w, c], float32 adds from +0 with the
    pixels in row-major order, as the C kernels take it (DESIGN.md: a sum the C takes sequentially in fp32,
    the golden model takes in the same order and precision; a float64 sum parted the stem's bias of a
    bias-only proxyless-w0.3 by one unit in the first step). Relaxed mode (float64 input): float64."""
    g = np.asarray(grad)
    dtype = _grad_dtype(g)
    rows = g.reshape(-1, g.shape[-1]).astype(dtype)
    if dtype == np.float64 or rows.shape[0] == 0:
        return rows.sum(axis=0, dtype=dtype)
    return np.add.accumulate(np.concatenate([np.zeros((1, rows.shape[1]), dtype), rows]), axis=0,
                             dtype=dtype)[-1]


def avgpool_grad(grad: np.ndarray, input_shape: Sequence[int], *, kernel: Sequence[int], strides: Sequence[int]
                 ) -> FloatArray:
    """`qtrain.avgpool_grad`: gradient of the window sums acc[n, oh, ow, c] = sum_window(x - zx).

        gx[n, h, w, c] = sum over the windows (oh, ow) holding (h, w) of g[n, oh, ow, c]

    (the 1 / (kh * kw) and the requantization are in the preceding `requant_grad`'s multiplier). A
    global pool is a broadcast (exact); overlapping windows give a reference sum (recommended C order:
    windows row-major). Pixels no window covers get 0.
    """
    g = np.asarray(grad)
    dtype = _grad_dtype(g)
    n, h, w, c = (int(d) for d in input_shape)
    kh, kw = (int(k) for k in kernel)
    sh, sw = (int(s) for s in strides)
    if not (1 <= kh <= h and 1 <= kw <= w and sh >= 1 and sw >= 1):
        raise ValueError(f"avgpool_grad: kernel {kh}x{kw}, strides {sh}x{sw} do not fit input {h}x{w}")
    out_hw = ((h - kh) // sh + 1, (w - kw) // sw + 1)
    if g.shape != (n, *out_hw, c):
        raise ValueError(f"avgpool_grad: grad shape {g.shape}, expected {(n, *out_hw, c)}")
    if out_hw == (1, 1) and (kh, kw) == (h, w):
        return np.broadcast_to(g.astype(dtype), (n, h, w, c)).copy()
    buf = np.zeros((n, h, w, c), dtype=np.float64)
    gd = g.astype(np.float64)
    for i in range(kh):
        for j in range(kw):
            _window_view(buf, i, j, (sh, sw), out_hw)[...] += gd
    return buf.astype(dtype)


def grad_accumulate(lhs: np.ndarray, rhs: np.ndarray) -> FloatArray:
    """`qtrain.grad_accumulate`: fp32(lhs + rhs), one float32 add per element."""
    a, b = np.asarray(lhs), np.asarray(rhs)
    if a.shape != b.shape:
        raise ValueError(f"grad_accumulate: shapes differ: {a.shape} vs {b.shape}")
    dtype = _grad_dtype(a, b)
    return a.astype(dtype) + b.astype(dtype)


def channel_slice(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """`qtrain.channel_slice`: a copy of channels [start, stop) (last axis), element type unchanged."""
    x = np.asarray(x)
    if not 0 <= start < stop <= x.shape[-1]:
        raise ValueError(f"channel_slice: [{start}, {stop}) is not a non-empty range within {x.shape[-1]} channels")
    return x[..., start:stop].copy()


# -- parameter update ----------------------------------------------------------------------------------


def sgd_steps(lr: FloatLike, grad_scale: np.ndarray | Sequence[float] | FloatLike) -> FloatArray:
    """The per-output-channel step sizes step[c] = fp32(lr * grad_scale[c]) (constants, computed once)."""
    return (f32(lr) * np.atleast_1d(np.asarray(grad_scale, dtype=np.float32))).astype(np.float32)


def sgd_update(
    value: np.ndarray, grad: np.ndarray, *, lr: FloatLike, grad_scale: np.ndarray | Sequence[float] | FloatLike,
    noise_key: int | None = None,
) -> np.ndarray:
    """`qtrain.sgd_update` on one SRAM copy: the new value, same dtype and shape (c = index along axis 0).

        step[c] = fp32(lr * grad_scale[c])                           `sgd_steps`, per update
        delta   = fp32(step[c] * g)                                  one float32 multiply
        float32 storage (fp32 master copy):  p = fp32(p - delta)
        int8 / int32 storage (in place):     p = saturate(p - rint(delta))

    The integer update rounds the step (half to even) and subtracts it exactly before saturating to the
    storage type's range, rather than rounding p - delta in float32: an int32 bias can exceed float32's
    24-bit mantissa. (C: `r = rintf(delta)` clamped to +-2**32, then a 64-bit subtraction and a
    saturating narrow.) A float64 value is the relaxed mode's parameter: p - step[c] * g in float64,
    same float32 step constants, no rounding, no saturation. NaN gradients are outside the contract.

    Stochastic rounding (`noise_key` given: `noise_key(seed, step)`; u[i] = `rounding_noise(key, n)[i]`,
    i the flat index into the copy) replaces rint by floor(x + u), which is unbiased (E = x):
        int8 storage:                        p = saturate(p + floor(fp32(u - delta)))
        int16 storage (16-bit fixed-point master m = 256 * value + fraction, `FIXED16_*`):
                                             m = clamp(m + floor(fp32(u - fp32(256 * delta))), FIXED16_MIN, FIXED16_MAX)
    (floor(p - delta + u) = p + floor(u - delta) for an integer p; 256 * delta is exact.)

    A scheduled update (`qtrain.sgd_update ... factor %f`) passes `lr = scheduled_lr(lr, factor)`, so
    step[c] = fp32(fp32(lr * factor) * grad_scale[c]); a factor of 1 gives today's steps bit for bit. With
    momentum, g is the velocity `momentum_velocity(v, g, momentum)` instead of the gradient.
    """
    p = np.asarray(value)
    g = np.asarray(grad)
    if p.shape != g.shape:
        raise ValueError(f"sgd_update: gradient shape {g.shape} differs from the parameter's {p.shape}")
    step = sgd_steps(lr, grad_scale)
    if step.size not in (1, p.shape[0]):
        raise ValueError(f"sgd_update: {step.size} grad_scale values for {p.shape[0]} output channels")
    step = step.reshape(-1, *([1] * (p.ndim - 1)))
    if p.dtype == np.float64:
        return p - step.astype(np.float64) * g.astype(np.float64)
    delta = (step * g.astype(np.float32)).astype(np.float32)
    if p.dtype == np.float32:
        return (p - delta).astype(np.float32)
    if p.dtype == np.int16:
        if noise_key is None:
            raise ValueError("sgd_update: an int16 fixed-point master is only updated with stochastic rounding")
        u = rounding_noise(noise_key, p.size).reshape(p.shape)
        r = np.floor((u - (delta * np.float32(FIXED16_ONE)).astype(np.float32)).astype(np.float32))
        r = np.clip(r.astype(np.float64), -(2.0**17), 2.0**17).astype(np.int64)
        return np.clip(p.astype(np.int64) + r, FIXED16_MIN, FIXED16_MAX).astype(np.int16)
    if noise_key is not None:
        if p.dtype != np.int8:
            raise ValueError(f"sgd_update: stochastic rounding applies to int8 / int16 storage, not {p.dtype}")
        u = rounding_noise(noise_key, p.size).reshape(p.shape)
        r = np.clip(np.floor((u - delta).astype(np.float32)).astype(np.float64), -256.0, 256.0).astype(np.int64)
        return np.clip(p.astype(np.int64) + r, -128, 127).astype(np.int8)
    if p.dtype not in (np.int8, np.int32):
        raise ValueError(f"sgd_update: unsupported storage dtype {p.dtype}")
    info = np.iinfo(p.dtype)
    r = np.clip(np.rint(delta).astype(np.float64), -(2.0**32), 2.0**32).astype(np.int64)
    return np.clip(p.astype(np.int64) - r, info.min, info.max).astype(p.dtype)


# -- stochastic rounding: a counter-based PRNG and the 16-bit fixed-point master -----------------------

FIXED16_ONE = 256
"""An int16 master m holds an int8 weight with 8 fractional bits: m = 256 * value + fraction."""
FIXED16_MIN = -128 * FIXED16_ONE
FIXED16_MAX = 127 * FIXED16_ONE + 127
"""m's range: the value it stands for, floor((m + 128) / 256), stays within int8 (fraction in [-128, 127])."""

_GOLDEN32 = 0x9E3779B9


def mix32(x: int | np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (`qtrain_mix32`): a bijection of uint32 with full avalanche."""
    h = np.asarray(x, dtype=np.uint64) & 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h.astype(np.uint32)


def noise_seed(param: str) -> int:
    """The stochastic-rounding seed of parameter @param: a compile-time constant (31 bits: a C int literal)."""
    return zlib.crc32(param.encode()) & 0x7FFFFFFF


def noise_key(seed: int, step: int) -> int:
    """The key of one update's noise (`qtrain_noise_key`): mix32(seed ^ mix32(step)); `step` is the device's
    step counter as the update reads it (already advanced by this step's `qtrain.lr_schedule`)."""
    return int(mix32(int(seed) ^ int(mix32(int(step) & 0xFFFFFFFF))))


def rounding_noise(key: int, count: int) -> FloatArray:
    """u[i] in [0, 1) for i < count (`qtrain_noise_u`): the top 24 bits of mix32(key + i * 0x9E3779B9), times
    2^-24 (exact in float32). Counter-based: no state, any element computable on its own."""
    i = np.arange(count, dtype=np.uint64)
    h = mix32((int(key) + i * _GOLDEN32) & 0xFFFFFFFF)
    return ((h >> 8).astype(np.float32) * np.float32(2.0**-24)).astype(np.float32)


def fixed16_value(master: np.ndarray) -> np.ndarray:
    """The int8 weight an int16 fixed-point master m stands for: floor((m + 128) / 256), m / 256 rounded half
    up (the device keeps it as the int8 copy the forward reads; m - 256 * value is the fraction plane)."""
    m = np.asarray(master).astype(np.int32)
    return ((m + FIXED16_ONE // 2) >> 8).astype(np.int8)


def fixed16_master(value: np.ndarray, fraction: np.ndarray | None = None) -> np.ndarray:
    """The int16 master of an int8 value plane and its int8 fraction plane (zeros: the Flash value exactly)."""
    v = np.asarray(value).astype(np.int32)
    f = np.zeros_like(v) if fraction is None else np.asarray(fraction).astype(np.int32)
    return (v * FIXED16_ONE + f).astype(np.int16)


def scheduled_lr(lr: FloatLike, factor: FloatLike) -> np.float32:
    """The learning rate of one scheduled step: fp32(lr * factor), factor from `lr_schedule_factor`."""
    return np.float32(f32(lr) * f32(factor))


def momentum_velocity(velocity: np.ndarray, grad: np.ndarray, momentum: FloatLike) -> np.ndarray:
    """SGD momentum's new velocity (PyTorch's `v = momentum * v + g`, dampening 0, not Nesterov), which the
    update then applies instead of the gradient: v = fp32(fp32(momentum * v) + g). The QAS factors and the
    learning rate scale the velocity in the update (`sgd_update`), so this is PyTorch's SGD with momentum
    on the QAS-scaled gradient, up to rounding. A float64 velocity (relaxed mode) is updated in float64."""
    v = np.asarray(velocity)
    g = np.asarray(grad)
    if v.shape != g.shape:
        raise ValueError(f"momentum_velocity: gradient shape {g.shape} differs from the velocity's {v.shape}")
    if v.dtype == np.float64:
        return float(f32(momentum)) * v + g.astype(np.float64)
    return (f32(momentum) * v.astype(np.float32) + g.astype(np.float32)).astype(np.float32)


def lr_schedule_factor(step: int | np.ndarray, *, warmup_steps: int, steps: int, final_ratio: FloatLike
                       ) -> FloatArray:
    """`qtrain.lr_schedule`: the learning-rate factor of training step `step` (0 for the first step after
    qtrain_init), as `qtrain_lr_schedule_f32` computes it (W = warmup_steps, T = steps, the horizon; r =
    final_ratio; each line one float32 operation at a time):

        t < W:               f = fp32(t + 1) / fp32(W)                           linear warm-up to 1
        W <= t < T:          p = fp32(t - W) / fp32(T - W);  c = cospi_f32(p)    cosine decay from 1 to r
                             d = 0.5 - 0.5 * c;  f = 1 - fp32(1 - r) * d
        t >= T (T > 0):      f = r                                                held after the horizon
        t >= W (T = 0):      f = 1                                                no decay
    The warm-up reaches exactly 1 at t = W - 1 and the decay starts at exactly 1 (cospi_f32(0) = 1).
    Integers convert exactly (the op's verifier keeps W and T at most 2**24). Vectorised over `step`.
    """
    t = np.asarray(step, dtype=np.int64)
    w, horizon, r = int(warmup_steps), int(steps), f32(final_ratio)
    warm = (t + 1).astype(np.float32) / np.float32(max(w, 1))
    p = (t - w).astype(np.float32) / np.float32(max(horizon - w, 1))
    d = (f32(0.5) - f32(0.5) * cospi_f32(np.clip(p, 0, 1).astype(np.float32))).astype(np.float32)
    decay = (f32(1.0) - (f32(1.0) - r) * d).astype(np.float32)
    held = r if horizon > 0 else f32(1.0)
    out = np.where(t < w, warm, np.where((horizon > 0) & (t < horizon), decay, held))
    return out.astype(np.float32)


def master_to_param(master: np.ndarray, dtype: np.dtype | type[np.generic]) -> np.ndarray:
    """The integer parameter a master copy stands for. float32: saturate(rint(master)) to `dtype`'s range
    (round half to even; NaN gives the minimum, like `_round_and_clamp`). int16 (a fixed-point master of an
    int8 weight): `fixed16_value`."""
    if np.asarray(master).dtype == np.int16:
        return fixed16_value(master)
    info = np.iinfo(dtype)
    m = np.rint(np.asarray(master, dtype=np.float32)).astype(np.float64)
    m = np.where(np.isnan(m), float(info.min), m)
    return np.clip(m, info.min, info.max).astype(dtype)
