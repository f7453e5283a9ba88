"""`qtrain.upsample` (bilinear, align_corners = False, int8) and its gradient `qtrain.upsample_grad`.

TinyTL's lite residual branch upsamples its small feature map back to the block output's size; this is
that resize, as PyTorch's `F.interpolate(mode="bilinear", align_corners=False)` defines the sampling:
for output row o of O from an input of I rows, src = max(0, (o + 0.5) * I / O - 0.5), the taps are
rows i0 = floor(src) and i1 = min(i0 + 1, I - 1) with weights 1 - l and l = src - i0; columns alike.
Any sizes work (a 1x1 input broadcasts).

Numerics (the contract the C kernel `qtrain_upsample_bilinear_s8` reproduces bit for bit; fp32(e): one
IEEE float32 operation at a time, no fused multiply-add):

    scale = fp32(fp32(I) / fp32(O));  src = fp32(fp32(scale * fp32(o + 0.5)) - 0.5), negative -> 0
    i0 = trunc(src);  l1 = fp32(src - fp32(i0));  l0 = fp32(1 - l1)            (rows; columns alike)
    a, b, c, d = fp32(x - zx) at (i0y, i0x), (i0y, i1x), (i1y, i0x), (i1y, i1x)
    top = fp32(fp32(l0x * a) + fp32(l1x * b));  bottom = fp32(fp32(l0x * c) + fp32(l1x * d))
    t = fp32(fp32(l0y * top) + fp32(l1y * bottom))
    y = clamp(rint(fp32(t * M)) + zy, -128, 127),  M = fp32(s_x / s_y)

The gradient (`qtrain.upsample_grad`, after `qtrain.requant_grad` has applied the mask and M) scatters
each output gradient to its four taps with weights fp32(ly * lx): gx[tap] += fp32(fp32(ly * lx) * g).
The golden model takes these sums as float64 reference sums of the float32 products (rounded once);
the C kernel adds them in float32, output pixels in raster order and the four taps in the order above.

This module is the whole of the op on the compiler side: its classes, their verifiers, gradient,
golden-model numerics and kernel calls (the dialect picks up the `OPS` of every module of this package).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import TensorType, f32, i8
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.attrs import QuantParamsAttr
from qtrain.dialects.qtrain.interfaces import (
    BackwardBuilder,
    DifferentiableOp,
    GoldenModelOp,
    GoldenRun,
    KernelCallOp,
    QuantizedOp,
    SaturatingOp,
)
from qtrain.dialects.qtrain.ops import (
    INT8_MAX,
    INT8_MIN,
    affine_range_saturates,
    expect_element,
    expect_per_tensor,
    expect_rank,
    mask_type,
    shape_of,
    tensor_type,
    verify_mask,
    with_mask_if,
)

# -- numerics ---------------------------------------------------------------------------------------------


def bilinear_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, l0, l1) per output index along one axis: the two source indices and their float32 weights."""
    f = np.float32
    scale = f(size_in) / f(size_out)
    centre = np.arange(size_out, dtype=np.float32) + f(0.5)
    src = (scale * centre).astype(np.float32) - f(0.5)
    src = np.where(src < 0, f(0.0), src).astype(np.float32)
    i0 = src.astype(np.int32)
    i1 = np.where(i0 < size_in - 1, i0 + 1, i0).astype(np.int32)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    l0 = (f(1.0) - l1).astype(np.float32)
    return i0, i1, l0, l1


def _interpolate(x: np.ndarray, out_hw: tuple[int, int], dtype: type[np.floating]) -> np.ndarray:
    """The nested interpolation `t` of the module docstring, each step rounded to `dtype`."""
    (y0, y1, l0y, l1y), (x0, x1, l0x, l1x) = (bilinear_taps(x.shape[1], out_hw[0]),
                                              bilinear_taps(x.shape[2], out_hw[1]))
    cast = lambda v: v.astype(dtype)  # noqa: E731
    l0x, l1x = cast(l0x)[None, None, :, None], cast(l1x)[None, None, :, None]
    l0y, l1y = cast(l0y)[None, :, None, None], cast(l1y)[None, :, None, None]
    rows0, rows1 = x[:, y0], x[:, y1]
    top = cast(cast(l0x * rows0[:, :, x0]) + cast(l1x * rows0[:, :, x1]))
    bottom = cast(cast(l0x * rows1[:, :, x0]) + cast(l1x * rows1[:, :, x1]))
    return cast(cast(l0y * top) + cast(l1y * bottom))


def upsample_bilinear(x: np.ndarray, out_hw: tuple[int, int], *, input_scale: float, input_zero_point: int,
                      output_scale: float, output_zero_point: int) -> tuple[np.ndarray, np.ndarray]:
    """`qtrain.upsample` on int8 NHWC `x`: (int8 output, saturation mask), as the module docstring says."""
    centred = (np.asarray(x).astype(np.int32) - int(input_zero_point)).astype(np.float32)
    t = _interpolate(centred, out_hw, np.float32)
    m = np.float32(np.float32(input_scale) / np.float32(output_scale))
    r = np.rint((t * m).astype(np.float32))
    zy = int(output_zero_point)
    inside = (r >= INT8_MIN - zy) & (r <= INT8_MAX - zy)
    y = np.clip(r, INT8_MIN - zy, INT8_MAX - zy).astype(np.int32) + zy
    return y.astype(np.int8), inside


def upsample_bilinear_relaxed(x: np.ndarray, out_hw: tuple[int, int], *, input_scale: float, input_zero_point: int,
                              output_scale: float, output_zero_point: int) -> tuple[np.ndarray, np.ndarray]:
    """The float-relaxed op (float64, no rint, clamp kept): what `upsample_grad` is the exact derivative of."""
    t = _interpolate(np.asarray(x, dtype=np.float64) - float(input_zero_point), out_hw, np.float64)
    m = float(np.float32(np.float32(input_scale) / np.float32(output_scale)))
    u = t * m + float(output_zero_point)
    inside = (u >= INT8_MIN) & (u <= INT8_MAX)
    return np.clip(u, float(INT8_MIN), float(INT8_MAX)), inside


def upsample_bilinear_grad(grad: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """`qtrain.upsample_grad`: each output gradient scattered to its taps with weights fp32(ly * lx), as a
    reference sum (float64 accumulation of the float32 products, rounded once; float64 in, float64 out)."""
    g = np.asarray(grad)
    out_dtype = np.float64 if g.dtype == np.float64 else np.float32
    (y0, y1, l0y, l1y), (x0, x1, l0x, l1x) = (bilinear_taps(input_hw[0], g.shape[1]),
                                              bilinear_taps(input_hw[1], g.shape[2]))
    gx = np.zeros((g.shape[0], input_hw[0], input_hw[1], g.shape[3]), dtype=np.float64)
    for ys, ly in ((y0, l0y), (y1, l1y)):
        for xs, lx in ((x0, l0x), (x1, l1x)):
            if out_dtype == np.float64:  # relaxed: the exact weights ly * lx (a float64 product of float32s)
                w64 = ly.astype(np.float64)[:, None] * lx.astype(np.float64)[None, :]
                products = w64[None, :, :, None] * g
            else:
                w = (ly[:, None] * lx[None, :]).astype(np.float32)  # [OH, OW]
                products = (w[None, :, :, None] * g.astype(np.float32)).astype(np.float32).astype(np.float64)
            rows = np.repeat(ys, len(xs))
            cols = np.tile(xs, len(ys))
            np.add.at(gx, (slice(None), rows, cols), products.reshape(g.shape[0], -1, g.shape[3]))
    return gx.astype(out_dtype)


# -- ops --------------------------------------------------------------------------------------------------


@irdl_op_definition
class UpsampleOp(IRDLOperation, QuantizedOp, SaturatingOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """Bilinear resize of an int8 NHWC tensor to the result's H x W (align_corners = False), requantized."""

    name = "qtrain.upsample"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    mask = opt_result_def(TensorType)
    """Training only: i1 per output element, 1 where the clamp left the rounded value unchanged."""
    input_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output) (`,` type($mask)^)?"

    def __init__(self, input: SSAValue | Operation, output_type: Attribute, *, input_q: QuantParamsAttr,
                 output_q: QuantParamsAttr, with_mask: bool = False):
        super().__init__(operands=[input], result_types=[output_type, mask_type(output_type) if with_mask else []],
                         properties={"input_q": input_q, "output_q": output_q})

    def multiplier(self) -> np.float32:
        """M = fp32(s_x / s_y)."""
        return np.float32(np.float32(self.input_q.scale) / np.float32(self.output_q.scale))

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        for t, what in ((x, "input"), (y, "output")):
            expect_element(t, i8, what, self)
            expect_rank(t, 4, what, self, "NHWC")
        (n, _, _, c), (yn, oh, ow, yc) = x.get_shape(), y.get_shape()
        if (yn, yc) != (n, c) or oh < 1 or ow < 1:
            raise VerifyException(f"{self.name}: output must keep the input's batch and channels ({n}, {c}), got {y}")
        expect_per_tensor(self.input_q, "input_q", self)
        expect_per_tensor(self.output_q, "output_q", self)
        verify_mask(self, self.output, self.mask)

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q if result is self.output else None

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("input_q", self.input, self.input_q),)

    def can_saturate(self) -> bool:
        # t is a convex combination of the taps, so it stays within the input's range.
        return affine_range_saturates([(float(self.multiplier()), self.input_q.zp)], self.output_q.zp,
                                      (INT8_MIN, INT8_MAX))

    def build_backward(self, builder: BackwardBuilder) -> None:
        from qtrain.dialects.qtrain.grad_ops import RequantGradOp

        g = builder.grad(self.output)
        assert g is not None
        g_t = builder.emit(RequantGradOp(g, self.mask, [float(self.multiplier())])).results[0]
        gx = builder.emit(UpsampleGradOp(g_t, TensorType(f32, shape_of(self.input))))
        builder.accumulate(self.input, gx.results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kernel = upsample_bilinear_relaxed if run.relaxed else upsample_bilinear
        y, mask = kernel(args[0], shape_of(self.output)[1:3], input_scale=self.input_q.scale,
                         input_zero_point=self.input_q.zp, output_scale=self.output_q.scale,
                         output_zero_point=self.output_q.zp)
        run.record_mask(self, mask)
        return with_mask_if(self, y, mask)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_upsample_bilinear_s8",
            (kc.Shape(shape_of(self.input)), kc.Tensor(self.input), kc.I32(self.input_q.zp),
             kc.F32(float(self.multiplier())), kc.I32(self.output_q.zp), kc.Shape(shape_of(self.output)),
             kc.Tensor(self.output), kc.Tensor(self.mask)),
            macs=4 * math.prod(shape_of(self.output)),
        ),)


@irdl_op_definition
class UpsampleGradOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """dL/dx of a bilinear resize: each output gradient scattered to its four taps, fp32 NHWC."""

    name = "qtrain.upsample_grad"
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$grad attr-dict `:` type($grad) `->` type($result)"

    def __init__(self, grad: SSAValue | Operation, result_type: Attribute):
        super().__init__(operands=[grad], result_types=[result_type])

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        x = tensor_type(self.result, "result", self)
        for t, what in ((g, "grad"), (x, "result")):
            expect_element(t, f32, what, self)
            expect_rank(t, 4, what, self, "NHWC")
        if (g.get_shape()[0], g.get_shape()[3]) != (x.get_shape()[0], x.get_shape()[3]):
            raise VerifyException(f"{self.name}: grad {g} and result {x} differ in batch or channels")

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (upsample_bilinear_grad(args[0], shape_of(self.result)[1:3]),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_upsample_bilinear_grad_f32",
            (kc.Shape(shape_of(self.grad)), kc.Tensor(self.grad), kc.Shape(shape_of(self.result)),
             kc.Tensor(self.result)),
            macs=4 * math.prod(shape_of(self.grad)),
        ),)


OPS: list[type[IRDLOperation]] = [UpsampleOp, UpsampleGradOp]
