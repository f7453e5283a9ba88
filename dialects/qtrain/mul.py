"""`qtrain.mul`: requantizing int8 multiply, same shapes or a per-channel broadcast (squeeze-and-excitation's
N x H x W x C by N x 1 x 1 x C), and its operand gradient `qtrain.mul_grad`.

Numerics (onnxruntime's QLinearMul as its x86 kernel computes it, MLAS `MlasQLinearMulKernel` for SSE2 /
AVX: integer product, one float multiply, the zero point added in float before rounding; bit-exact;
fp32(e): one IEEE float32 operation):

    k = fp32(fp32(s_a * s_b) / s_y)                                   (a compile-time constant)
    p = (a - za) * (b - zb)                                            (exact int32; b broadcast over H, W)
    t = fp32(fp32(fp32(p) * k) + fp32(zy))
    y = clamp(rint(t), -128, 127)                mask = the clamp left rint(t) unchanged

(MLAS's portable C path instead computes fp32(fp32(va * vb) / s_y) from the dequantized operands and adds
zy after rounding; the two differ by one unit on rare ties. The x86 path is the oracle's and the cheaper
one on the Cortex-M: one integer multiply, one float multiply and one add per element.)

The relaxed op (what training differentiates, float64, no rint, clamp kept) is u = k (a - za)(b - zb) + zy
with k = fp32(fp32(s_a * s_b) / s_y). Backward: `qtrain.requant_grad` applies the mask and k (g_t =
fp32(g * k)), then per operand `qtrain.mul_grad` multiplies by the other operand:

    g_a = fp32(g_t * fp32(b - zb))                                  (b broadcast)
    g_b = sum over H, W of fp32(g_t * fp32(a - za))                 (for a broadcast b: a reference sum,
                                                                     float64 here, fp32 adds in raster order in C)

The C kernels are targets/armv7em/kernels/qtrain_mul.c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import I64, IntegerAttr, TensorType, f32, i8, i64
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


def broadcast_rhs(shape: Sequence[int], rhs_shape: Sequence[int]) -> bool:
    """Whether an rhs of `rhs_shape` is the N x 1 x 1 x C broadcast of an NHWC `shape` (False: same shape)."""
    return tuple(rhs_shape) != tuple(shape)


def mul_multiplier(lhs_q: QuantParamsAttr, rhs_q: QuantParamsAttr, output_q: QuantParamsAttr) -> np.float32:
    """k = fp32(fp32(s_a * s_b) / s_y): d(output code) / d((a - za)(b - zb)) of the relaxed op."""
    return np.float32(np.float32(np.float32(lhs_q.scale) * np.float32(rhs_q.scale)) / np.float32(output_q.scale))


def mul_with_mask(a: np.ndarray, b: np.ndarray, lhs_q: QuantParamsAttr, rhs_q: QuantParamsAttr,
                  output_q: QuantParamsAttr) -> tuple[np.ndarray, np.ndarray]:
    """`qtrain.mul` in int8 (the module docstring's order): (output, mask)."""
    k = mul_multiplier(lhs_q, rhs_q, output_q)
    p = (np.asarray(a).astype(np.int32) - lhs_q.zp) * (np.asarray(b).astype(np.int32) - rhs_q.zp)
    t = ((p.astype(np.float32) * k).astype(np.float32) + np.float32(output_q.zp)).astype(np.float32)
    r = np.rint(t).astype(np.float64)
    inside = (r >= INT8_MIN) & (r <= INT8_MAX)
    return np.clip(r, INT8_MIN, INT8_MAX).astype(np.int8), inside


def mul_relaxed(a: np.ndarray, b: np.ndarray, lhs_q: QuantParamsAttr, rhs_q: QuantParamsAttr,
                output_q: QuantParamsAttr) -> tuple[np.ndarray, np.ndarray]:
    """The relaxed op: u = k (a - za)(b - zb) + zy in float64, clamped; (clamp(u), inside)."""
    k = float(mul_multiplier(lhs_q, rhs_q, output_q))
    u = k * (np.asarray(a, np.float64) - lhs_q.zp) * (np.asarray(b, np.float64) - rhs_q.zp) + output_q.zp
    inside = (u >= INT8_MIN) & (u <= INT8_MAX)
    return np.clip(u, float(INT8_MIN), float(INT8_MAX)), inside


def mul_grad(grad: np.ndarray, other: np.ndarray, other_zero_point: int, result_shape: Sequence[int]) -> np.ndarray:
    """`qtrain.mul_grad`: g * (other - z) broadcast to the gradient's shape, summed over H and W when the
    result is N x 1 x 1 x C (reference sum). float32 in, float32 out (float64 in relaxed mode)."""
    g = np.asarray(grad)
    if g.dtype == np.float64:
        product = g * (np.asarray(other, dtype=np.float64) - other_zero_point)
        out_dtype: type[np.floating] = np.float64
    else:
        centred = (np.asarray(other).astype(np.int32) - other_zero_point).astype(np.float32)
        product = (g.astype(np.float32) * centred).astype(np.float32)
        out_dtype = np.float32
    if tuple(result_shape) != product.shape:
        product = product.astype(np.float64).sum(axis=(1, 2), keepdims=True)
    return product.astype(out_dtype)


# -- ops --------------------------------------------------------------------------------------------------


@irdl_op_definition
class MulOp(IRDLOperation, QuantizedOp, SaturatingOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """Requantizing int8 multiply of an NHWC lhs by a same-shape or N x 1 x 1 x C rhs (onnxruntime's QLinearMul)."""

    name = "qtrain.mul"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)
    mask = opt_result_def(TensorType)
    """Training only: i1 per output element, 1 where the clamp left the rounded value unchanged."""
    lhs_q = prop_def(QuantParamsAttr)
    rhs_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$lhs `,` $rhs attr-dict `:` `(` type($lhs) `,` type($rhs) `)` `->` type($output) (`,` type($mask)^)?"
    )

    def __init__(self, lhs: SSAValue | Operation, rhs: SSAValue | Operation, *, lhs_q: QuantParamsAttr,
                 rhs_q: QuantParamsAttr, output_q: QuantParamsAttr, with_mask: bool = False):
        out_type = SSAValue.get(lhs).type
        super().__init__(operands=[lhs, rhs], result_types=[out_type, mask_type(out_type) if with_mask else []],
                         properties={"lhs_q": lhs_q, "rhs_q": rhs_q, "output_q": output_q})

    @property
    def is_broadcast(self) -> bool:
        return broadcast_rhs(shape_of(self.lhs), shape_of(self.rhs))

    def verify_(self) -> None:
        a = tensor_type(self.lhs, "lhs", self)
        b = tensor_type(self.rhs, "rhs", self)
        y = tensor_type(self.output, "output", self)
        for t, what in ((a, "lhs"), (b, "rhs"), (y, "output")):
            expect_element(t, i8, what, self)
            expect_rank(t, 4, what, self, "NHWC")
        n, _, _, c = a.get_shape()
        if b.get_shape() not in (a.get_shape(), (n, 1, 1, c)) or y.get_shape() != a.get_shape():
            raise VerifyException(f"{self.name}: rhs must be {a} or tensor<{n}x1x1x{c}xi8> and the output {a}; "
                                  f"got {b} and {y}")
        for q, what in ((self.lhs_q, "lhs_q"), (self.rhs_q, "rhs_q"), (self.output_q, "output_q")):
            expect_per_tensor(q, what, self)
        verify_mask(self, self.output, self.mask)

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q if result is self.output else None

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("lhs_q", self.lhs, self.lhs_q), ("rhs_q", self.rhs, self.rhs_q))

    def can_saturate(self) -> bool:
        k = float(mul_multiplier(self.lhs_q, self.rhs_q, self.output_q))
        ends = (INT8_MIN, INT8_MAX)
        extremes = [(a - self.lhs_q.zp) * (b - self.rhs_q.zp) for a in ends for b in ends]
        lo, hi = k * min(extremes) + self.output_q.zp, k * max(extremes) + self.output_q.zp
        return not (np.rint(lo) >= INT8_MIN and np.rint(hi) <= INT8_MAX)

    def build_backward(self, builder: BackwardBuilder) -> None:
        from qtrain.dialects.qtrain.grad_ops import RequantGradOp

        g = builder.grad(self.output)
        assert g is not None
        if not (builder.needs_grad(self.lhs) or builder.needs_grad(self.rhs)):
            return
        g_t = builder.emit(RequantGradOp(g, self.mask, [float(mul_multiplier(self.lhs_q, self.rhs_q, self.output_q))]))
        for operand, other, other_q in ((self.lhs, self.rhs, self.rhs_q), (self.rhs, self.lhs, self.lhs_q)):
            if builder.needs_grad(operand):
                grad = MulGradOp(g_t.results[0], other, TensorType(f32, shape_of(operand)), other_zero_point=other_q.zp)
                builder.accumulate(operand, builder.emit(grad).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kernel = mul_relaxed if run.relaxed else mul_with_mask
        y, mask = kernel(args[0], args[1], self.lhs_q, self.rhs_q, self.output_q)
        run.record_mask(self, mask)
        return with_mask_if(self, y, mask)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_mul_s8",
            (kc.Shape(shape_of(self.lhs)), kc.Tensor(self.lhs), kc.I32(self.lhs_q.zp), kc.Tensor(self.rhs),
             kc.I32(int(self.is_broadcast)), kc.I32(self.rhs_q.zp),
             kc.F32(float(mul_multiplier(self.lhs_q, self.rhs_q, self.output_q))), kc.I32(self.output_q.zp),
             kc.Tensor(self.output), kc.Tensor(self.mask)),
            macs=math.prod(shape_of(self.output)),
        ),)


@irdl_op_definition
class MulGradOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """dL/d(operand) of `qtrain.mul` from g_t = requant_grad(g): g_t * (other - z), summed over H, W for an
    N x 1 x 1 x C result; `other` (int8) is the other operand, broadcast when it is N x 1 x 1 x C."""

    name = "qtrain.mul_grad"
    grad = operand_def(TensorType)
    other = operand_def(TensorType)
    result = result_def(TensorType)
    other_zero_point = prop_def(IntegerAttr[I64])
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$grad `,` $other attr-dict `:` `(` type($grad) `,` type($other) `)` `->` type($result)"

    def __init__(self, grad: SSAValue | Operation, other: SSAValue | Operation, result_type: Attribute, *,
                 other_zero_point: int):
        super().__init__(operands=[grad, other], result_types=[result_type],
                         properties={"other_zero_point": IntegerAttr(other_zero_point, i64)})

    @property
    def zero_point(self) -> int:
        return self.other_zero_point.value.data  # type: ignore[no-any-return]

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        o = tensor_type(self.other, "other", self)
        r = tensor_type(self.result, "result", self)
        expect_element(g, f32, "grad", self)
        expect_element(o, i8, "other", self)
        expect_element(r, f32, "result", self)
        for t, what in ((g, "grad"), (o, "other"), (r, "result")):
            expect_rank(t, 4, what, self, "NHWC")
        n, _, _, c = g.get_shape()
        small = (n, 1, 1, c)
        ok = (o.get_shape() == g.get_shape() and r.get_shape() in (g.get_shape(), small)) or (
            o.get_shape() == small and r.get_shape() == g.get_shape())
        if not ok:
            raise VerifyException(f"{self.name}: other {o} and result {r} must be the gradient's shape "
                                  f"{g.get_shape()} or N x 1 x 1 x C, not both N x 1 x 1 x C")

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (mul_grad(args[0], args[1], self.zero_point, shape_of(self.result)),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        g, o, r = shape_of(self.grad), shape_of(self.other), shape_of(self.result)
        return (kc.KernelCall(
            "qtrain_mul_grad_f32",
            (kc.Shape(g), kc.Tensor(self.grad), kc.Tensor(self.other), kc.I32(int(o != g)), kc.I32(self.zero_point),
             kc.I32(int(r != g)), kc.Tensor(self.result)),
            returns="void",
            macs=math.prod(g),
        ),)


OPS: list[type[IRDLOperation]] = [MulOp, MulGradOp]
