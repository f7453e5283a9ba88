"""Gradient and update operations of the qtrain dialect (built by `qtrain-autodiff`).

Gradients are fp32 and live in the *integer domain* of the tensor they belong to: the gradient of
an int8 activation `q` is dL/dq, of an int8 weight dL/dq_w, of an int32 bias dL/dq_b. Backward of
a requantizing op `y = clamp(rint(m * acc) + zy)` is split in two:

  `qtrain.requant_grad`   g_acc = g_y * mask * m[c]        (the clamp mask saved 1 bit/element in forward)
  then the linear part:   `qtrain.conv2d_input_grad` / `qtrain.conv2d_weight_grad` / `qtrain.bias_grad`
                          / `qtrain.avgpool_grad`, or nothing for add (each operand has its own m).

Rounding is treated as identity (straight-through), so these are the exact derivatives of the
float-relaxed network: every op without its rint, with the clamp kept.

Updates are in place on module-level parameters: `qtrain.sgd_update @p, %g` changes the SRAM copy of
`@p`. A `qtrain.get_param @p` result is a value, but lowerings read it from the same storage, so the
verifier requires every use of such a value to come before the update in the block.

Activation gradients (the `grad`/`result` of cross_entropy_grad, requant_grad, conv2d_input_grad,
avgpool_grad, grad_accumulate, and the `grad` bias_grad reads) may be held as bf16 in the arena
(`qtrain-narrow-gradients`): the kernels widen each element to fp32 on read, compute in fp32 exactly
as for f32, and round the fp32 result to nearest even once on write (`numerics.round_bf16`), which the
golden model reproduces. Parameter gradients and everything an update reads stay fp32;
`qtrain.grad_convert` widens or narrows a gradient between an op that reads one format and a producer of
the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerType,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    bf16,
    f32,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import MemoryWriteEffect, Pure, SymbolTable
from xdsl.utils.exceptions import VerifyException

from qtrain import numerics
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.attrs import F32ArrayAttr, QuantParamsAttr
from qtrain.dialects.qtrain.contract import FUSED_UPDATE
from qtrain.dialects.qtrain.interfaces import (
    DeviceState,
    DeviceStateOp,
    ElementwiseInPlace,
    GoldenModelOp,
    GoldenRun,
    KernelCallOp,
    ParamGradient,
    ParamUpdate,
    ParamUpdateOp,
)
from qtrain.dialects.qtrain.ops import (
    GetParamOp,
    ParamOp,
    conv_output_size,
    expect_element,
    expect_per_tensor,
    expect_rank,
    i64_array,
    pair,
    shape_of,
    tensor_type,
)
from qtrain.dialects.qtrain.schedule import STEP_COUNTER


def f32_array(values: Sequence[float]) -> F32ArrayAttr:
    return F32ArrayAttr.get(values)


GRAD_ELEMENTS = (f32, bf16)
"""Element types an activation gradient may have in the arena."""


def expect_gradient(t: TensorType[Attribute], what: str, op: Operation) -> None:
    """An activation gradient: f32, or bf16 (see the module docstring)."""
    if t.element_type not in GRAD_ELEMENTS:
        raise VerifyException(f"{op.name}: {what} must have element type f32 or bf16, got {t}")


def grad_format(value: SSAValue | None) -> str:
    """The kernel-name suffix of a gradient value's format: "f32" or "bf16"."""
    t = value.type if value is not None else None
    return "bf16" if isinstance(t, TensorType) and t.element_type == bf16 else "f32"


def format_suffix(grad: SSAValue, result: SSAValue) -> str:
    """Kernel-name suffix of a gradient kernel reading `grad` and writing `result`: "f32", "bf16", or
    "IN_OUT" when the two formats differ (e.g. "bf16_f32")."""
    a, b = grad_format(grad), grad_format(result)
    return a if a == b else f"{a}_{b}"


def stored(run: GoldenRun, value: SSAValue, array: Any) -> Any:
    """A golden-model result as the arena holds it: bf16 values are the fp32 result rounded to nearest even
    (relaxed mode, float64 throughout, keeps it)."""
    return numerics.round_bf16(array) if grad_format(value) == "bf16" and not run.relaxed else array


def expect_same_shape(a: TensorType[Attribute], b: TensorType[Attribute], what: str, op: Operation) -> None:
    if a.get_shape() != b.get_shape():
        raise VerifyException(f"{op.name}: {what} must have the same shape, got {a} and {b}")


@irdl_op_definition
class CrossEntropyGradOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """dL/dlogits of softmax cross-entropy: softmax(logits) - onehot(label), fp32."""

    name = "qtrain.cross_entropy_grad"
    logits = operand_def(TensorType)
    label = operand_def(i32)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$logits `,` $label attr-dict `:` type($logits) `->` type($result)"

    def __init__(self, logits: SSAValue | Operation, label: SSAValue | Operation):
        super().__init__(operands=[logits, label], result_types=[SSAValue.get(logits).type])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        logits, label = args
        kernel = numerics.cross_entropy_grad_relaxed if run.relaxed else numerics.cross_entropy_grad
        return (stored(run, self.result, kernel(logits, int(label))),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        k = shape_of(self.logits)[-1]
        return (kc.KernelCall(f"qtrain_cross_entropy_grad_{grad_format(self.result)}",
                              (kc.Tensor(self.logits), kc.I32(k), kc.Label(), kc.Tensor(self.result)), returns="void"),)

    def verify_(self) -> None:
        x = tensor_type(self.logits, "logits", self)
        y = tensor_type(self.result, "result", self)
        expect_element(x, f32, "logits", self)
        expect_gradient(y, "result", self)
        if x.get_shape() != y.get_shape():
            raise VerifyException(f"{self.name}: logits and result must have the same shape, got {x} and {y}")


@irdl_op_definition
class RequantGradOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """Gradient through a requantization: g_in = g_out * mask * multiplier[c] (c = last axis, or one value)."""

    name = "qtrain.requant_grad"
    grad = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)
    multiplier = prop_def(F32ArrayAttr)
    traits = traits_def(Pure(), ElementwiseInPlace())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$grad (`mask` $mask^)? attr-dict `:` type($grad) (`,` type($mask)^)? `->` type($result)"
    )

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        grad, *rest = args
        return (stored(run, self.result, numerics.requant_grad(grad, rest[0] if rest else None,
                                                                self.multiplier.as_array())),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        shape = shape_of(self.grad)
        m = self.multiplier.get_values()
        return (kc.KernelCall(
            f"qtrain_requant_grad_{format_suffix(self.grad, self.result)}",
            (kc.Tensor(self.grad), kc.Tensor(self.mask), kc.I32(math.prod(shape)), kc.I32(shape[-1]),
             kc.Floats("grad_multiplier", m), kc.I32(len(m)), kc.Tensor(self.result)),
            returns="void",
        ),)

    def __init__(
        self, grad: SSAValue | Operation, mask: SSAValue | Operation | None, multiplier: Sequence[float]
    ):
        super().__init__(
            operands=[grad, mask if mask is not None else []],
            result_types=[SSAValue.get(grad).type],
            properties={"multiplier": f32_array(multiplier)},
        )

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        y = tensor_type(self.result, "result", self)
        expect_gradient(g, "grad", self)
        expect_gradient(y, "result", self)
        expect_same_shape(g, y, "grad and result", self)
        if self.mask is not None:
            m = tensor_type(self.mask, "mask", self)
            expect_element(m, IntegerType(1), "mask", self)
            expect_same_shape(g, m, "grad and mask", self)
        n = len(self.multiplier.get_values())
        channels = g.get_shape()[-1]
        if n not in (1, channels):
            raise VerifyException(
                f"{self.name}: multiplier has {n} values, need 1 or one per channel of the last axis ({channels})"
            )


class _ConvGeometry:
    """strides/padding/groups shared by the two convolution gradients."""

    def conv_geometry(self: IRDLOperation) -> tuple[tuple[int, int], tuple[int, int, int, int], int]:
        strides = pair(self.strides, 2, "strides", self)  # type: ignore[attr-defined]
        padding = pair(self.padding, 4, "padding [top, left, bottom, right]", self)  # type: ignore[attr-defined]
        groups = self.groups.value.data  # type: ignore[attr-defined]
        if min(strides) < 1 or min(padding) < 0 or groups < 1:
            raise VerifyException(f"{self.name}: strides and groups must be >= 1 and padding >= 0")
        return (strides[0], strides[1]), (padding[0], padding[1], padding[2], padding[3]), groups

    def kernel_geometry(self: IRDLOperation, input_zero_point: int = 0) -> kc.ConvGeometry:
        strides, padding, groups = self.conv_geometry()  # type: ignore[attr-defined]
        return kc.ConvGeometry(input_zero_point, 0, strides, padding, groups)


@irdl_op_definition
class Conv2DInputGradOp(IRDLOperation, _ConvGeometry, GoldenModelOp, KernelCallOp):
    """dL/dx of a conv (transposed conv of g_acc with the int8 weight), fp32 NHWC; the result type fixes H x W."""

    name = "qtrain.conv2d_input_grad"
    grad = operand_def(TensorType)
    weight = operand_def(TensorType)
    result = result_def(TensorType)
    strides = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    groups = prop_def(Attribute)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$grad `,` $weight attr-dict `:` `(` type($grad) `,` type($weight) `)` `->` type($result)"
    )

    def __init__(
        self,
        grad: SSAValue | Operation,
        weight: SSAValue | Operation,
        result_type: Attribute,
        *,
        strides: Sequence[int],
        padding: Sequence[int],
        groups: int,
    ):
        from xdsl.dialects.builtin import IntegerAttr

        super().__init__(
            operands=[grad, weight],
            result_types=[result_type],
            properties={
                "strides": i64_array(strides),
                "padding": i64_array(padding),
                "groups": IntegerAttr(groups, i64),
            },
        )

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        grad, weight = args
        strides, padding, groups = self.conv_geometry()
        return (stored(run, self.result, numerics.conv2d_input_grad(
            grad, weight, shape_of(self.result), strides=strides, padding=padding, groups=groups)),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        g, w, x = shape_of(self.grad), shape_of(self.weight), shape_of(self.result)
        suffix = format_suffix(self.grad, self.result)
        strides, padding, groups = self.conv_geometry()
        if suffix == "f32":
            function = "qtrain_conv2d_input_grad_wrapper_f32"  # picks the fastest kernel for the shapes
        elif w[1:3] == (1, 1) and strides == (1, 1) and padding == (0, 0, 0, 0) and groups == 1:
            function = f"qtrain_conv2d_1x1_input_grad_{suffix}"
        elif suffix == "bf16" and strides == (1, 1) and g == x and groups == x[3] == w[0] and w[3] == 1 \
                and self._frozen_weight():
            # same shape in and out: in place over the gradient (a ring of KH rows in scratch)
            return (kc.KernelCall(
                "qtrain_depthwise_conv2d_input_grad_bf16",
                (kc.Scratch(), self.kernel_geometry(), kc.Shape(g), kc.Tensor(self.grad), kc.Shape(w),
                 kc.FrozenWeight(self.weight), kc.Shape(x), kc.Tensor(self.result)),
                macs=math.prod(g) * math.prod(w[1:]),
            ),)
        else:
            function = f"qtrain_conv2d_input_grad_{suffix}"  # the generic gather kernel
        return (kc.KernelCall(
            function,
            (kc.Scratch(), self.kernel_geometry(), kc.Shape(g), kc.Tensor(self.grad), kc.Shape(w),
             kc.Weight(self.weight), kc.Shape(x), kc.Tensor(self.result)),
            macs=math.prod(g) * math.prod(w[1:]),
        ),)

    def takes_bf16(self) -> bool:
        """Whether a bf16 kernel computes this input gradient: every conv but a grouped one whose weight
        trains (a depthwise weight's trained channel slice is merged only by the fp32 kernels)."""
        return self.groups.value.data == 1 or self._frozen_weight()  # type: ignore[attr-defined]

    def _frozen_weight(self) -> bool:
        """Whether the weight is a read of a parameter that does not train (its Flash array is the weight)."""
        owner = self.weight.owner
        if not isinstance(owner, GetParamOp) or self.get_toplevel_object() is self:
            return False
        param = SymbolTable.lookup_symbol(self, owner.param)
        return isinstance(param, ParamOp) and not param.is_trainable

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        w = tensor_type(self.weight, "weight", self)
        x = tensor_type(self.result, "result", self)
        expect_gradient(g, "grad", self)
        expect_element(w, i8, "weight", self)
        expect_gradient(x, "result", self)
        for t, what, layout in ((g, "grad", "NHWC"), (w, "weight", "OHWI"), (x, "result", "NHWC")):
            expect_rank(t, 4, what, self, layout)
        (sh, sw), (pt, pl, pb, pr), groups = self.conv_geometry()
        n, h, wd, cin = x.get_shape()
        cout, kh, kw, cin_g = w.get_shape()
        if cin % groups or cin_g != cin // groups:
            raise VerifyException(f"{self.name}: weight {w} does not match {cin} input channels in {groups} groups")
        expected = (n, conv_output_size(h, kh, sh, pt, pb), conv_output_size(wd, kw, sw, pl, pr), cout)
        if g.get_shape() != expected:
            raise VerifyException(
                f"{self.name}: grad must be tensor<{'x'.join(map(str, expected))}xf32> for this result, weight, "
                f"stride and padding, got {g}"
            )


@irdl_op_definition
class Conv2DWeightGradOp(IRDLOperation, _ConvGeometry, GoldenModelOp, KernelCallOp):
    """dL/dW[o,kh,kw,i] = sum over n,oh,ow of g_acc[n,oh,ow,o] * (x_pad[n, oh*s+kh, ow*s+kw, i] - zx), fp32.

    `input` holds the layer input channels `channels = [start, stop]` (all of them when absent), as
    saved in forward; the result covers exactly those channels (for a depthwise layer, the matching
    output channels: result `[stop - start, KH, KW, 1]`).
    """

    name = "qtrain.conv2d_weight_grad"
    input = operand_def(TensorType)
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    strides = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    groups = prop_def(Attribute)
    input_q = prop_def(QuantParamsAttr)
    channels = opt_prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure(), ParamGradient())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$input `,` $grad attr-dict `:` `(` type($input) `,` type($grad) `)` `->` type($result)"
    )

    def __init__(
        self,
        input: SSAValue | Operation,
        grad: SSAValue | Operation,
        result_type: Attribute,
        *,
        strides: Sequence[int],
        padding: Sequence[int],
        groups: int,
        input_q: QuantParamsAttr,
        channels: Sequence[int] | None = None,
    ):
        from xdsl.dialects.builtin import IntegerAttr

        props: dict[str, Attribute] = {
            "strides": i64_array(strides),
            "padding": i64_array(padding),
            "groups": IntegerAttr(groups, i64),
            "input_q": input_q,
        }
        if channels is not None:
            props["channels"] = i64_array(channels)
        super().__init__(operands=[input, grad], result_types=[result_type], properties=props)

    def channel_range(self) -> tuple[int, int]:
        if self.channels is None:
            return 0, tensor_type(self.input, "input", self).get_shape()[3]
        start, stop = self.channels.get_values()
        return start, stop

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, grad = args
        strides, padding, groups = self.conv_geometry()
        dw = numerics.conv2d_weight_grad(
            x, grad, input_zero_point=self.input_q.zp, kernel=shape_of(self.result)[1:3], strides=strides,
            padding=padding, groups=groups, channels=self.channel_range() if self.channels is not None else None,
        )
        if dw.shape != shape_of(self.result):
            raise ValueError(f"{self.name}: kernel result {dw.shape} differs from the result type {self.result.type}")
        return (dw,)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        """Unfused: the gradient into the arena. Fused (`qtrain.fused_update`): a groups = 1 gradient is
        computed output channel by output channel straight into the update (one kernel); a depthwise one
        into the start of scratch (its kernel's scratch after it), then updated from there."""
        x, g, dw = shape_of(self.input), shape_of(self.grad), shape_of(self.result)
        geometry = self.kernel_geometry(self.input_q.zp)
        macs = math.prod(g) * math.prod(dw[1:])
        groups = self.groups.value.data  # type: ignore[attr-defined]
        depthwise = groups > 1 and dw[3] == 1 and groups == g[3]
        update = fused_update_of(self)
        if update is not None and groups == 1:
            scales = update.grad_scale.get_values()
            momentum = update.momentum_args()
            if update.is_stochastic:
                return (kc.KernelCall(
                    "qtrain_conv2d_weight_grad_sgd_update_stochastic",
                    (geometry, kc.Shape(x), kc.Tensor(self.input), kc.Shape(g), kc.Tensor(self.grad), kc.Shape(dw),
                     update.lr_arg(), kc.Floats("grad_scale", scales), kc.I32(len(scales)),
                     kc.ParamStorage(update.updated_param), kc.ParamCopy(update.updated_param),
                     update.noise_key_arg()),
                    macs=macs,
                ),)
            return (kc.KernelCall(
                "qtrain_conv2d_weight_grad_sgd_momentum_update" if momentum else "qtrain_conv2d_weight_grad_sgd_update",
                (geometry, kc.Shape(x), kc.Tensor(self.input), kc.Shape(g), kc.Tensor(self.grad), kc.Shape(dw),
                 update.lr_arg(), kc.Floats("grad_scale", scales), kc.I32(len(scales)),
                 kc.ParamStorage(update.updated_param), kc.ParamCopy(update.updated_param), *momentum),
                macs=macs,
            ),)
        out: kc.CallArg = kc.Tensor(self.result) if update is None else kc.FusedGradient(math.prod(dw))
        if depthwise:
            start, _ = self.channel_range()
            scratch = kc.Scratch() if update is None else kc.Scratch(offset=(4 * math.prod(dw) + 3) // 4 * 4)
            grad_call = kc.KernelCall(
                "qtrain_depthwise_conv2d_weight_grad_f32",
                (scratch, geometry, kc.Shape(x), kc.Tensor(self.input), kc.Shape(g), kc.Tensor(self.grad),
                 kc.I32(start), kc.Shape(dw), out),
                macs=macs,
            )
        else:
            grad_call = kc.KernelCall(
                "qtrain_conv2d_weight_grad_f32",
                (geometry, kc.Shape(x), kc.Tensor(self.input), kc.Shape(g), kc.Tensor(self.grad), kc.Shape(dw), out),
                macs=macs,
            )
        return (grad_call,) if update is None else (grad_call, update.update_call(out))

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        g = tensor_type(self.grad, "grad", self)
        dw = tensor_type(self.result, "result", self)
        expect_element(x, i8, "input", self)
        expect_element(g, f32, "grad", self)
        expect_element(dw, f32, "result", self)
        for t, what, layout in ((x, "input", "NHWC"), (g, "grad", "NHWC"), (dw, "result", "OHWI")):
            expect_rank(t, 4, what, self, layout)
        expect_per_tensor(self.input_q, "input_q", self)
        (sh, sw), (pt, pl, pb, pr), groups = self.conv_geometry()
        n, h, wd, c_saved = x.get_shape()
        gn, oh, ow, cout = g.get_shape()
        o, kh, kw, i = dw.get_shape()
        start, stop = self.channel_range()
        if not 0 <= start < stop or stop - start != c_saved:
            raise VerifyException(
                f"{self.name}: channels [{start}, {stop}] must be a non-empty range of {c_saved} channels "
                f"(the channels the input holds)"
            )
        depthwise = groups > 1 and i == 1 and groups == cout
        if depthwise:
            if stop > cout or o != c_saved:
                raise VerifyException(
                    f"{self.name}: depthwise weight gradient of channels [{start}, {stop}] must be "
                    f"tensor<{c_saved}x{kh}x{kw}x1xf32> within {cout} channels, got {dw}"
                )
        elif groups != 1:
            # A grouped conv (e.g. a lite residual module's groups = 2) trains all of its input channels.
            if self.channels is not None or c_saved % groups or cout % groups or o != cout or i != c_saved // groups:
                raise VerifyException(
                    f"{self.name}: a grouped (groups = {groups}) weight gradient covers every input channel: "
                    f"result tensor<{cout}x{kh}x{kw}x{c_saved // groups}xf32> without a channel slice, got {dw}"
                )
        elif o != cout or i != c_saved:
            raise VerifyException(
                f"{self.name}: result must be tensor<{cout}x{kh}x{kw}x{c_saved}xf32> "
                f"(output channels x kernel x saved input channels), got {dw}"
            )
        if gn != n or (oh, ow) != (conv_output_size(h, kh, sh, pt, pb), conv_output_size(wd, kw, sw, pl, pr)):
            raise VerifyException(f"{self.name}: grad {g} does not match input {x} with kernel {kh}x{kw}")


@irdl_op_definition
class BiasGradOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """dL/db[c] = sum over n, h, w of g_acc[n, h, w, c], fp32."""

    name = "qtrain.bias_grad"
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), ParamGradient())
    assembly_format = "$grad attr-dict `:` type($grad) `->` type($result)"

    def __init__(self, grad: SSAValue | Operation):
        g = SSAValue.get(grad).type
        assert isinstance(g, TensorType)
        super().__init__(operands=[grad], result_types=[TensorType(f32, [g.get_shape()[-1]])])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (numerics.bias_grad(args[0]),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        """Fused (`qtrain.fused_update`): the gradient goes to the start of scratch, then into the update."""
        shape = shape_of(self.grad)
        update = fused_update_of(self)
        out: kc.CallArg = kc.Tensor(self.result) if update is None else kc.FusedGradient(shape[-1])
        grad_call = kc.KernelCall(f"qtrain_bias_grad_{grad_format(self.grad)}",
                                  (kc.Tensor(self.grad), kc.I32(math.prod(shape[:-1])), kc.I32(shape[-1]), out),
                                  returns="void")
        return (grad_call,) if update is None else (grad_call, update.update_call(out))

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        b = tensor_type(self.result, "result", self)
        expect_gradient(g, "grad", self)
        expect_element(b, f32, "result", self)
        if b.get_shape() != (g.get_shape()[-1],):
            raise VerifyException(f"{self.name}: result must be tensor<{g.get_shape()[-1]}xf32>, got {b}")


@irdl_op_definition
class AvgPoolGradOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """dL/dx of a k x k pool's window sum: each input element gets the sum of the g of the windows holding it."""

    name = "qtrain.avgpool_grad"
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    kernel = prop_def(DenseArrayBase.constr(i64))
    strides = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$grad attr-dict `:` type($grad) `->` type($result)"

    def __init__(self, grad: SSAValue | Operation, result_type: Attribute, *, kernel: Sequence[int],
                 strides: Sequence[int]):
        super().__init__(
            operands=[grad],
            result_types=[result_type],
            properties={"kernel": i64_array(kernel), "strides": i64_array(strides)},
        )

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (stored(run, self.result, numerics.avgpool_grad(
            args[0], shape_of(self.result), kernel=self.kernel.get_values(), strides=self.strides.get_values())),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        kh, kw = self.kernel.get_values()
        sh, sw = self.strides.get_values()
        return (kc.KernelCall(
            f"qtrain_avgpool_grad_{format_suffix(self.grad, self.result)}",
            (kc.Shape(shape_of(self.grad)), kc.Tensor(self.grad), kc.I32(kh), kc.I32(kw), kc.I32(sh), kc.I32(sw),
             kc.Shape(shape_of(self.result)), kc.Tensor(self.result)),
        ),)

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        x = tensor_type(self.result, "result", self)
        expect_gradient(g, "grad", self)
        expect_gradient(x, "result", self)
        kh, kw = pair(self.kernel, 2, "kernel", self)
        sh, sw = pair(self.strides, 2, "strides", self)
        n, h, w, c = x.get_shape()
        expected = (n, (h - kh) // sh + 1, (w - kw) // sw + 1, c)
        if g.get_shape() != expected:
            raise VerifyException(f"{self.name}: grad must be tensor<{'x'.join(map(str, expected))}xf32>, got {g}")


@irdl_op_definition
class GradAccumulateOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """Sum of two fp32 gradients of the same value (a value with two uses, e.g. a residual input)."""

    name = "qtrain.grad_accumulate"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure(), ElementwiseInPlace())
    assembly_format = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)"

    def __init__(self, lhs: SSAValue | Operation, rhs: SSAValue | Operation):
        super().__init__(operands=[lhs, rhs], result_types=[SSAValue.get(lhs).type])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (stored(run, self.result, numerics.grad_accumulate(*args)),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            f"qtrain_grad_accumulate_{grad_format(self.result)}",
            (kc.Tensor(self.lhs), kc.Tensor(self.rhs), kc.I32(math.prod(shape_of(self.result))),
             kc.Tensor(self.result)),
            returns="void",
        ),)

    def verify_(self) -> None:
        a = tensor_type(self.lhs, "lhs", self)
        b = tensor_type(self.rhs, "rhs", self)
        y = tensor_type(self.result, "result", self)
        expect_gradient(a, "lhs", self)
        if not a == b == y:
            raise VerifyException(f"{self.name}: lhs, rhs and result must have the same type, got {a}, {b}, {y}")


@irdl_op_definition
class GradConvertOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """A gradient in the other format: f32 -> bf16 rounds to nearest even, bf16 -> f32 is exact."""

    name = "qtrain.grad_convert"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: SSAValue | Operation, element_type: Attribute):
        x = SSAValue.get(input).type
        assert isinstance(x, TensorType)
        super().__init__(operands=[input], result_types=[TensorType(element_type, x.get_shape())])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (stored(run, self.result, np.asarray(args[0])),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            f"qtrain_grad_convert_{grad_format(self.input)}_{grad_format(self.result)}",
            (kc.Tensor(self.input), kc.I32(math.prod(shape_of(self.input))), kc.Tensor(self.result)),
            returns="void",
        ),)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.result, "result", self)
        expect_gradient(x, "input", self)
        expect_gradient(y, "result", self)
        if x.element_type == y.element_type or x.get_shape() != y.get_shape():
            raise VerifyException(f"{self.name}: result must be the input's shape in the other format, got "
                                  f"{x} -> {y}")


@irdl_op_definition
class ChannelSliceOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """Copies channels [start, stop) of an NHWC tensor: what forward saves of a partially trained layer's input."""

    name = "qtrain.channel_slice"
    input = operand_def(TensorType)
    result = result_def(TensorType)
    start = prop_def(Attribute)
    stop = prop_def(Attribute)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($result)"

    def __init__(self, input: SSAValue | Operation, start: int, stop: int):
        from xdsl.dialects.builtin import IntegerAttr

        x = SSAValue.get(input).type
        assert isinstance(x, TensorType)
        shape = [*x.get_shape()[:-1], stop - start]
        super().__init__(
            operands=[input],
            result_types=[TensorType(x.element_type, shape)],
            properties={"start": IntegerAttr(start, i64), "stop": IntegerAttr(stop, i64)},
        )

    def bounds(self) -> tuple[int, int]:
        return self.start.value.data, self.stop.value.data  # type: ignore[attr-defined]

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (numerics.channel_slice(args[0], *self.bounds()),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        shape = shape_of(self.input)
        start, stop = self.bounds()
        kind = "f32" if tensor_type(self.input, "input", self).element_type == f32 else "s8"
        return (kc.KernelCall(
            f"qtrain_channel_slice_{kind}",
            (kc.Tensor(self.input), kc.I32(math.prod(shape[:-1])), kc.I32(shape[-1]), kc.I32(start), kc.I32(stop),
             kc.Tensor(self.result)),
            returns="void",
        ),)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.result, "result", self)
        start, stop = self.bounds()
        c = x.get_shape()[-1]
        if not 0 <= start < stop <= c:
            raise VerifyException(f"{self.name}: [{start}, {stop}) must be a non-empty range within {c} channels")
        if x.element_type != y.element_type or y.get_shape() != (*x.get_shape()[:-1], stop - start):
            raise VerifyException(
                f"{self.name}: result must be {x.element_type} with shape {(*x.get_shape()[:-1], stop - start)}, "
                f"got {y}"
            )


@irdl_op_definition
class SGDUpdateOp(IRDLOperation, ParamUpdateOp, DeviceStateOp, GoldenModelOp, KernelCallOp):
    """In place: p[c, ...] -= lr * grad_scale[c] * g[c, ...] on @p's SRAM copy (c = output channel).

    grad_scale holds the QAS factors (s_w[c]^-2 for weights, (s_x * s_w[c])^-2 for biases) or 1.0.
    i8 / i32 storage is rounded half to even and saturated; f32 storage (a master copy) is not.
    `stochastic` (i8 weights, and always for an i16 master): rounded stochastically instead, floor(x + u)
    with u in [0, 1) from a counter-based PRNG keyed by (this parameter's seed, the step counter,
    element index): unbiased, so updates smaller than one unit still move the weight in expectation.
    The golden model draws the same u (`numerics.rounding_noise`), so no PRNG state is planned.
    `factor %f` (optional, a `qtrain.lr_schedule` result): this step's learning rate is fp32(lr * f).
    `momentum` (optional, in (0, 1)): SGD momentum, v = momentum * v + g applied instead of g, with the
    velocity v as device state (`velocity/<param>`, fp32, the trainable shape). `numerics.sgd_update`,
    `scheduled_lr` and `momentum_velocity` state the float32 operations.
    """

    name = "qtrain.sgd_update"
    param = prop_def(SymbolRefAttr)
    grad = operand_def(TensorType)
    lr_factor = opt_operand_def(f32)
    lr = prop_def(FloatAttr[Float32Type])
    grad_scale = prop_def(F32ArrayAttr)
    momentum = opt_prop_def(FloatAttr[Float32Type])
    stochastic = opt_prop_def(UnitAttr)
    traits = traits_def(MemoryWriteEffect(), ParamUpdate())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$param `,` $grad (`factor` $lr_factor^)? attr-dict `:` type($grad)"

    def __init__(self, param: str, grad: SSAValue | Operation, *, lr: float, grad_scale: Sequence[float],
                 lr_factor: SSAValue | Operation | None = None, momentum: float = 0.0, stochastic: bool = False):
        properties: dict[str, Attribute] = {
            "param": SymbolRefAttr(param),
            "lr": FloatAttr(float(lr), f32),
            "grad_scale": f32_array(grad_scale),
        }
        if momentum:
            properties["momentum"] = FloatAttr(float(momentum), f32)
        if stochastic:
            properties["stochastic"] = UnitAttr()
        super().__init__(operands=[grad, [] if lr_factor is None else [lr_factor]], properties=properties)

    def with_gradient(self, grad: SSAValue | Operation, grad_scale: Sequence[float]) -> SGDUpdateOp:
        """A detached copy updating the same parameter from another gradient (same lr, factor, momentum)."""
        return SGDUpdateOp(self.updated_param, grad, lr=self.lr.value.data, grad_scale=grad_scale,
                           lr_factor=self.lr_factor, momentum=self.momentum_value, stochastic=self.is_stochastic)

    @property
    def is_stochastic(self) -> bool:
        return self.stochastic is not None

    def noise_key_arg(self) -> kc.CallArg:
        """The stochastic kernels' `noise_key`: numerics.noise_key(this parameter's seed, the step counter)."""
        return kc.NoiseKey(numerics.noise_seed(self.updated_param), STEP_COUNTER.name)

    @property
    def updated_param(self) -> str:
        return self.param.root_reference.data

    @property
    def momentum_value(self) -> float:
        return self.momentum.value.data if self.momentum is not None else 0.0

    def velocity(self) -> DeviceState | None:
        """The momentum velocity this update keeps (None without momentum)."""
        if self.momentum is None:
            return None
        return DeviceState(f"velocity/{self.updated_param}", "f32", math.prod(shape_of(self.grad)))

    def device_state(self) -> Sequence[DeviceState]:
        velocity = self.velocity()
        return () if velocity is None else (velocity,)

    def lr_arg(self) -> kc.CallArg:
        """The kernels' `lr` argument: the literal, times this step's factor when the update is scheduled."""
        return kc.ScaledF32(self.lr.value.data, self.lr_factor)

    def momentum_args(self) -> tuple[kc.CallArg, ...]:
        """The momentum kernels' extra arguments (velocity, momentum); none without momentum."""
        velocity = self.velocity()
        return () if velocity is None else (kc.State(velocity.name), kc.F32(self.momentum_value))

    def target(self) -> ParamOp:
        target = SymbolTable.lookup_symbol(self, self.param)
        assert isinstance(target, ParamOp), f"{self.name}: no qtrain.param named {self.param}"
        return target

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        grad, *factor = args
        name = self.updated_param
        run.record_gradient(name, grad)
        if run.apply_updates:
            lr = numerics.scheduled_lr(self.lr.value.data, factor[0]) if factor else self.lr.value.data
            velocity = self.velocity()
            if velocity is not None:
                v = run.device_state(velocity).reshape(np.shape(grad))
                v[...] = numerics.momentum_velocity(v, grad, self.momentum_value)
                grad = v.copy()
            key = None
            if self.is_stochastic and not run.relaxed:
                step = int(run.device_state(STEP_COUNTER)[0])  # already advanced by this step's schedule
                key = numerics.noise_key(numerics.noise_seed(name), step)
            new = numerics.sgd_update(run.sram_copy(name), grad, lr=lr, grad_scale=self.grad_scale.as_array(),
                                      noise_key=key)
            run.write_sram_copy(name, new)
        return ()

    def update_call(self, grad: kc.CallArg) -> kc.KernelCall:
        """The update of the SRAM copy from a gradient `grad` (an arena tensor or a fused gradient)."""
        param = self.target()
        shape = param.trainable_shape()
        kind = {f32: "f32", i8: "s8", i16: "s16", i32: "s32"}[param.storage_type]
        scales = self.grad_scale.get_values()
        momentum = self.momentum_args()
        if self.is_stochastic:
            return kc.KernelCall(
                f"qtrain_sgd_update_{kind}_stochastic",
                (kc.ParamCopy(self.updated_param), grad, kc.I32(shape[0]), kc.I32(math.prod(shape[1:])),
                 self.lr_arg(), kc.Floats("grad_scale", scales), kc.I32(len(scales)), self.noise_key_arg()),
                returns="void",
            )
        return kc.KernelCall(
            f"qtrain_sgd_momentum_update_{kind}" if momentum else f"qtrain_sgd_update_{kind}",
            (kc.ParamCopy(self.updated_param), grad, *momentum, kc.I32(shape[0]), kc.I32(math.prod(shape[1:])),
             self.lr_arg(), kc.Floats("grad_scale", scales), kc.I32(len(scales))),
            returns="void",
        )

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        producer = self.grad.owner
        if isinstance(producer, Operation) and FUSED_UPDATE in producer.attributes:
            return ()  # lowered with its gradient (see the gradient op's kernel_calls)
        return (self.update_call(kc.Tensor(self.grad)),)

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        expect_element(g, f32, "grad", self)
        mu = self.momentum_value
        if self.momentum is not None and not (math.isfinite(mu) and 0.0 < mu < 1.0):
            raise VerifyException(f"{self.name}: momentum must be within (0, 1) (omit it for plain SGD), got {mu}")
        if self.get_toplevel_object() is self:
            return
        target = SymbolTable.lookup_symbol(self, self.param)
        if not isinstance(target, ParamOp):
            raise VerifyException(f"{self.name}: no qtrain.param named {self.param}")
        if not target.is_trainable:
            raise VerifyException(f"{self.name}: {self.param} is not marked trainable")
        storage = target.storage_type
        if self.is_stochastic and storage not in (i8, i16):
            raise VerifyException(f"{self.name}: stochastic rounding applies to i8 or i16 storage, {self.param} "
                                  f"is stored as {storage}")
        if storage == i16 and not self.is_stochastic:
            raise VerifyException(f"{self.name}: the i16 master of {self.param} is updated with stochastic rounding")
        if self.is_stochastic and (self.lr_factor is None or self.momentum is not None):
            raise VerifyException(f"{self.name}: stochastic rounding needs the step counter (a `factor` from "
                                  f"qtrain.lr_schedule) and no momentum")
        expected = target.trainable_shape()
        if g.get_shape() != expected:
            raise VerifyException(
                f"{self.name}: grad must have the trainable shape of {self.param}, "
                f"{'x'.join(map(str, expected))}, got {g}"
            )
        n = len(self.grad_scale.get_values())
        if n not in (1, expected[0]):
            raise VerifyException(
                f"{self.name}: grad_scale has {n} values, need 1 or one per output channel ({expected[0]})"
            )
        self._verify_reads_come_first()

    def _verify_reads_come_first(self) -> None:
        block = self.parent_block()
        if block is None:
            return
        position = {op: i for i, op in enumerate(block.ops)}
        mine = position[self]
        for op in block.ops:
            if isinstance(op, GetParamOp) and op.param == self.param:
                for use in op.result.uses:
                    user = block.find_ancestor_op_in_block(use.operation)
                    if user is not None and position[user] > mine:
                        raise VerifyException(
                            f"{self.name}: {self.param} is read by {user.name} after this in-place update; "
                            f"updates must follow every use of the parameter's value"
                        )


def fused_update_of(gradient: Operation) -> SGDUpdateOp | None:
    """The update a `qtrain.fused_update` gradient op is computed into; None when it is not fused."""
    if FUSED_UPDATE not in gradient.attributes:
        return None
    users = [u.operation for u in gradient.results[0].uses]
    if len(users) != 1 or not isinstance(users[0], SGDUpdateOp):
        raise VerifyException(f"{gradient.name} is marked {FUSED_UPDATE} but does not feed exactly one sgd_update")
    return users[0]


GRAD_OPS: list[type[IRDLOperation]] = [
    CrossEntropyGradOp,
    RequantGradOp,
    Conv2DInputGradOp,
    Conv2DWeightGradOp,
    BiasGradOp,
    AvgPoolGradOp,
    GradAccumulateOp,
    GradConvertOp,
    ChannelSliceOp,
    SGDUpdateOp,
]
