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
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import (
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerType,
    SymbolRefAttr,
    TensorType,
    f32,
    i8,
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

from qtrain.dialects.qtrain.attrs import F32ArrayAttr, QuantParamsAttr
from qtrain.dialects.qtrain.ops import (
    GetParamOp,
    ParamOp,
    conv_output_size,
    expect_element,
    expect_per_tensor,
    expect_rank,
    i64_array,
    pair,
    tensor_type,
)


def f32_array(values: Sequence[float]) -> F32ArrayAttr:
    return F32ArrayAttr.get(values)


def expect_same_shape(a: TensorType[Attribute], b: TensorType[Attribute], what: str, op: Operation) -> None:
    if a.get_shape() != b.get_shape():
        raise VerifyException(f"{op.name}: {what} must have the same shape, got {a} and {b}")


@irdl_op_definition
class CrossEntropyGradOp(IRDLOperation):
    """dL/dlogits of softmax cross-entropy: softmax(logits) - onehot(label), fp32."""

    name = "qtrain.cross_entropy_grad"
    logits = operand_def(TensorType)
    label = operand_def(i32)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$logits `,` $label attr-dict `:` type($logits) `->` type($result)"

    def __init__(self, logits: SSAValue | Operation, label: SSAValue | Operation):
        super().__init__(operands=[logits, label], result_types=[SSAValue.get(logits).type])

    def verify_(self) -> None:
        x = tensor_type(self.logits, "logits", self)
        y = tensor_type(self.result, "result", self)
        expect_element(x, f32, "logits", self)
        expect_same_shape(x, y, "logits and result", self)


@irdl_op_definition
class RequantGradOp(IRDLOperation):
    """Gradient through a requantization: g_in = g_out * mask * multiplier[c] (c = last axis, or one value)."""

    name = "qtrain.requant_grad"
    grad = operand_def(TensorType)
    mask = opt_operand_def(TensorType)
    result = result_def(TensorType)
    multiplier = prop_def(F32ArrayAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$grad (`mask` $mask^)? attr-dict `:` type($grad) (`,` type($mask)^)? `->` type($result)"
    )

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
        expect_element(g, f32, "grad", self)
        expect_element(y, f32, "result", self)
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


@irdl_op_definition
class Conv2DInputGradOp(IRDLOperation, _ConvGeometry):
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

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        w = tensor_type(self.weight, "weight", self)
        x = tensor_type(self.result, "result", self)
        expect_element(g, f32, "grad", self)
        expect_element(w, i8, "weight", self)
        expect_element(x, f32, "result", self)
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
class Conv2DWeightGradOp(IRDLOperation, _ConvGeometry):
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
    traits = traits_def(Pure())
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
            raise VerifyException(f"{self.name}: only groups = 1 or depthwise (groups = C) are supported, got {groups}")
        elif o != cout or i != c_saved:
            raise VerifyException(
                f"{self.name}: result must be tensor<{cout}x{kh}x{kw}x{c_saved}xf32> "
                f"(output channels x kernel x saved input channels), got {dw}"
            )
        if gn != n or (oh, ow) != (conv_output_size(h, kh, sh, pt, pb), conv_output_size(wd, kw, sw, pl, pr)):
            raise VerifyException(f"{self.name}: grad {g} does not match input {x} with kernel {kh}x{kw}")


@irdl_op_definition
class BiasGradOp(IRDLOperation):
    """dL/db[c] = sum over n, h, w of g_acc[n, h, w, c], fp32."""

    name = "qtrain.bias_grad"
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$grad attr-dict `:` type($grad) `->` type($result)"

    def __init__(self, grad: SSAValue | Operation):
        g = SSAValue.get(grad).type
        assert isinstance(g, TensorType)
        super().__init__(operands=[grad], result_types=[TensorType(f32, [g.get_shape()[-1]])])

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        b = tensor_type(self.result, "result", self)
        expect_element(g, f32, "grad", self)
        expect_element(b, f32, "result", self)
        if b.get_shape() != (g.get_shape()[-1],):
            raise VerifyException(f"{self.name}: result must be tensor<{g.get_shape()[-1]}xf32>, got {b}")


@irdl_op_definition
class AvgPoolGradOp(IRDLOperation):
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

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        x = tensor_type(self.result, "result", self)
        expect_element(g, f32, "grad", self)
        expect_element(x, f32, "result", self)
        kh, kw = pair(self.kernel, 2, "kernel", self)
        sh, sw = pair(self.strides, 2, "strides", self)
        n, h, w, c = x.get_shape()
        expected = (n, (h - kh) // sh + 1, (w - kw) // sw + 1, c)
        if g.get_shape() != expected:
            raise VerifyException(f"{self.name}: grad must be tensor<{'x'.join(map(str, expected))}xf32>, got {g}")


@irdl_op_definition
class GradAccumulateOp(IRDLOperation):
    """Sum of two fp32 gradients of the same value (a value with two uses, e.g. a residual input)."""

    name = "qtrain.grad_accumulate"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    result = result_def(TensorType)
    traits = traits_def(Pure())
    assembly_format = "$lhs `,` $rhs attr-dict `:` type($lhs) `,` type($rhs) `->` type($result)"

    def __init__(self, lhs: SSAValue | Operation, rhs: SSAValue | Operation):
        super().__init__(operands=[lhs, rhs], result_types=[SSAValue.get(lhs).type])

    def verify_(self) -> None:
        a = tensor_type(self.lhs, "lhs", self)
        b = tensor_type(self.rhs, "rhs", self)
        y = tensor_type(self.result, "result", self)
        expect_element(a, f32, "lhs", self)
        if not a == b == y:
            raise VerifyException(f"{self.name}: lhs, rhs and result must have the same type, got {a}, {b}, {y}")


@irdl_op_definition
class ChannelSliceOp(IRDLOperation):
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
class SGDUpdateOp(IRDLOperation):
    """In place: p[c, ...] -= lr * grad_scale[c] * g[c, ...] on @p's SRAM copy (c = output channel).

    grad_scale holds the QAS factors (s_w[c]^-2 for weights, (s_x * s_w[c])^-2 for biases) or 1.0.
    i8 / i32 storage is rounded half to even and saturated; f32 storage (a master copy) is not.
    """

    name = "qtrain.sgd_update"
    param = prop_def(SymbolRefAttr)
    grad = operand_def(TensorType)
    lr = prop_def(FloatAttr[Float32Type])
    grad_scale = prop_def(F32ArrayAttr)
    traits = traits_def(MemoryWriteEffect())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$param `,` $grad attr-dict `:` type($grad)"

    def __init__(self, param: str, grad: SSAValue | Operation, *, lr: float, grad_scale: Sequence[float]):
        super().__init__(
            operands=[grad],
            properties={
                "param": SymbolRefAttr(param),
                "lr": FloatAttr(float(lr), f32),
                "grad_scale": f32_array(grad_scale),
            },
        )

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        expect_element(g, f32, "grad", self)
        if self.get_toplevel_object() is self:
            return
        target = SymbolTable.lookup_symbol(self, self.param)
        if not isinstance(target, ParamOp):
            raise VerifyException(f"{self.name}: no qtrain.param named {self.param}")
        if not target.is_trainable:
            raise VerifyException(f"{self.name}: {self.param} is not marked trainable")
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


GRAD_OPS: list[type[IRDLOperation]] = [
    CrossEntropyGradOp,
    RequantGradOp,
    Conv2DInputGradOp,
    Conv2DWeightGradOp,
    BiasGradOp,
    AvgPoolGradOp,
    GradAccumulateOp,
    ChannelSliceOp,
    SGDUpdateOp,
]
