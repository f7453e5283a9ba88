"""The streamed backward of an inverted-residual block's expansion (introduced by `qtrain-stream-backward`).

`qtrain.streamed_expansion_input_grad` stands for the backward ops between the depthwise conv's g_acc and
the block input's gradient, where neither conv's weight trains:

    g_mid = conv2d_input_grad(grad, dw_weight)            the gradient at the expanded resolution
    g_acc = requant_grad(g_mid, mask, multiplier)          through the expansion's requantization
    [bias_grad = bias_grad(g_acc)]                         the expansion's bias gradient, if it trains
    result = conv2d_input_grad(g_acc, pw_weight)           through the 1x1 expansion (stride 1)

The kernel computes g_mid and g_acc one row of the expanded tensor at a time, in fp32 in scratch (the
depthwise gradient in gather form needs only `grad`, which stays whole), adds the row to the bias
gradient (pixels in row order, as `qtrain_bias_grad_f32`) and runs the 1x1 input gradient on it: the
expanded-resolution gradient never exists in the arena. The sums are those of the unfused kernels, in
the same order; g_mid and g_acc stay fp32 (they are never stored), the result is rounded once when it is
bf16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from xdsl.dialects.builtin import DenseArrayBase, IntegerType, TensorType, f32, i8, i64
from xdsl.ir import Attribute, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from qtrain import numerics
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.attrs import F32ArrayAttr
from qtrain.dialects.qtrain.grad_ops import expect_gradient, f32_array, format_suffix, stored
from qtrain.dialects.qtrain.interfaces import GoldenModelOp, GoldenRun, KernelCallOp
from qtrain.dialects.qtrain.ops import (
    conv_output_size,
    expect_element,
    expect_rank,
    i64_array,
    pair,
    shape_of,
    tensor_type,
)


@irdl_op_definition
class StreamedExpansionInputGradOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """dL/dx of a 1x1 expansion + depthwise conv pair from the depthwise g_acc, one expanded row at a time."""

    name = "qtrain.streamed_expansion_input_grad"
    grad = operand_def(TensorType)
    dw_weight = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    pw_weight = operand_def(TensorType)
    result = result_def(TensorType)
    bias_grad = opt_result_def(TensorType)
    dw_strides = prop_def(DenseArrayBase.constr(i64))
    dw_padding = prop_def(DenseArrayBase.constr(i64))
    multiplier = prop_def(F32ArrayAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$grad `,` $dw_weight (`mask` $mask^)? `,` $pw_weight attr-dict `:` functional-type(operands, results)"
    )

    def __init__(self, grad: SSAValue, dw_weight: SSAValue, mask: SSAValue | None, pw_weight: SSAValue,
                 result_type: Attribute, *, dw_strides: Sequence[int], dw_padding: Sequence[int],
                 multiplier: Sequence[float], bias_grad: bool):
        channels = shape_of(dw_weight)[0]
        super().__init__(
            operands=[grad, dw_weight, [] if mask is None else [mask], pw_weight],
            result_types=[result_type, [TensorType(f32, [channels])] if bias_grad else []],
            properties={"dw_strides": i64_array(dw_strides), "dw_padding": i64_array(dw_padding),
                        "multiplier": f32_array(multiplier)},
        )

    def mid_shape(self) -> tuple[int, int, int, int]:
        """The expanded tensor's shape: the result's N, H, W with the depthwise conv's channels."""
        n, h, w, _ = shape_of(self.result)
        return n, h, w, shape_of(self.dw_weight)[0]

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        grad, dw_weight, *rest = args
        mask, pw_weight = (rest[0], rest[1]) if self.mask is not None else (None, rest[0])
        channels = shape_of(self.dw_weight)[0]
        g_mid = numerics.conv2d_input_grad(grad, dw_weight, self.mid_shape(), strides=self.dw_strides.get_values(),
                                           padding=self.dw_padding.get_values(), groups=channels)
        g_acc = numerics.requant_grad(g_mid, mask, self.multiplier.as_array())
        result = stored(run, self.result, numerics.conv2d_input_grad(g_acc, pw_weight, shape_of(self.result)))
        return (result, numerics.bias_grad(g_acc)) if self.bias_grad is not None else (result,)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        g, dw, pw, x = shape_of(self.grad), shape_of(self.dw_weight), shape_of(self.pw_weight), shape_of(self.result)
        mid = self.mid_shape()
        m = self.multiplier.get_values()
        strides, padding = self.dw_strides.get_values(), self.dw_padding.get_values()
        geometry = kc.ConvGeometry(0, 0, (strides[0], strides[1]), (padding[0], padding[1], padding[2], padding[3]),
                                   mid[3])
        return (kc.KernelCall(
            f"qtrain_streamed_expansion_input_grad_{format_suffix(self.grad, self.result)}",
            (kc.Scratch(), geometry, kc.Shape(g), kc.Tensor(self.grad), kc.Shape(dw), kc.FrozenWeight(self.dw_weight),
             kc.Shape(mid), kc.Tensor(self.mask), kc.Floats("grad_multiplier", m), kc.I32(len(m)), kc.Shape(pw),
             kc.FrozenWeight(self.pw_weight), kc.Shape(x), kc.Tensor(self.result), kc.Tensor(self.bias_grad)),
            macs=math.prod(g) * dw[1] * dw[2] + math.prod(mid) * pw[3],
        ),)

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        x = tensor_type(self.result, "result", self)
        dw = tensor_type(self.dw_weight, "dw_weight", self)
        pw = tensor_type(self.pw_weight, "pw_weight", self)
        expect_gradient(g, "grad", self)
        expect_gradient(x, "result", self)
        for t, what in ((dw, "dw_weight"), (pw, "pw_weight")):
            expect_element(t, i8, what, self)
        for t, what, layout in ((g, "grad", "NHWC"), (x, "result", "NHWC"), (dw, "dw_weight", "OHWI"),
                                (pw, "pw_weight", "OHWI")):
            expect_rank(t, 4, what, self, layout)
        (sh, sw) = pair(self.dw_strides, 2, "dw_strides", self)
        pt, pl, pb, pr = pair(self.dw_padding, 4, "dw_padding [top, left, bottom, right]", self)
        c, kh, kw, one = dw.get_shape()
        n, h, w, cin = x.get_shape()
        if one != 1 or pw.get_shape() != (c, 1, 1, cin):
            raise VerifyException(f"{self.name}: need a depthwise weight [C, KH, KW, 1] and a 1x1 weight "
                                  f"[C, 1, 1, C_in] for a {cin}-channel result, got {dw} and {pw}")
        expected = (n, conv_output_size(h, kh, sh, pt, pb), conv_output_size(w, kw, sw, pl, pr), c)
        if g.get_shape() != expected:
            raise VerifyException(f"{self.name}: grad must be {'x'.join(map(str, expected))} for this result and "
                                  f"depthwise geometry, got {g}")
        if self.mask is not None:
            mt = tensor_type(self.mask, "mask", self)
            expect_element(mt, IntegerType(1), "mask", self)
            if mt.get_shape() != self.mid_shape():
                raise VerifyException(f"{self.name}: mask must have the expanded shape {self.mid_shape()}, got {mt}")
        if len(self.multiplier.get_values()) not in (1, c):
            raise VerifyException(f"{self.name}: multiplier needs 1 or {c} values")
        if self.bias_grad is not None:
            b = tensor_type(self.bias_grad, "bias_grad", self)
            expect_element(b, f32, "bias_grad", self)
            if b.get_shape() != (c,):
                raise VerifyException(f"{self.name}: bias_grad must be tensor<{c}xf32>, got {b}")


OPS: list[type[IRDLOperation]] = [StreamedExpansionInputGradOp]
