"""Forward and parameter operations of the qtrain dialect.

Layouts: activations are int8 NHWC tensors (batch 1 in practice, any N accepted by the verifiers),
weights int8 OHWI (`[C_out, KH, KW, C_in / groups]`), biases int32 `[C_out]` with scale
`s_x * s_w[c]`. Quantization parameters live on the op that consumes or produces a tensor
(`input_q`, `weight_q`, `output_q`, ...), as `#qtrain.quant` properties.

Numerics (the contract every backend obeys, see DESIGN.md "Numerics"): every requantization is
computed in float32 with precomputed float32 constants and rounded half to even, then the zero
point is added (add folds it into its constant offset) and the result clamped to the op's `clamp`
range (default [-128, 127]). `qtrain.numerics` spells out each op's exact operation order.

Parameter state: every weight and bias is a module-level `qtrain.param` symbol holding its initial
value (Flash). Functions read one with `qtrain.get_param`. Parameters marked `trainable` get an SRAM
copy that update ops (added by the autodiff pass) modify in place; keeping state in symbols rather
than threading it through function arguments is what lets the C lowering place frozen tensors in
Flash and trainable ones in SRAM without copying them around every step.

Classifier: a fully-connected layer is a 1x1 `qtrain.conv2d` on a `1x1xC` input (as in the reference
models), so every learnable layer is one op kind and the schemes' layer numbering applies to it too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    I64,
    DenseArrayBase,
    DenseIntOrFPElementsAttr,
    Float32Type,
    IntegerAttr,
    IntegerType,
    ModuleOp,
    SymbolNameConstraint,
    SymbolRefAttr,
    TensorType,
    UnitAttr,
    f32,
    i8,
    i16,
    i32,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue, TypeAttribute
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    opt_result_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import MemoryReadEffect, Pure, SymbolOpInterface, SymbolTable
from xdsl.utils.exceptions import VerifyException

from qtrain import numerics
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.attrs import QuantParamsAttr
from qtrain.dialects.qtrain.interfaces import (
    BackwardBuilder,
    DifferentiableOp,
    GoldenModelOp,
    GoldenRun,
    KernelCallOp,
    LayerOp,
    LayerSpec,
    ParamConsumerOp,
    ParamRead,
    QuantizedOp,
    SaturatingOp,
    TrainedParamRole,
    ViewOfOperand,
)

INT8_MIN, INT8_MAX = -128, 127


# -- verification helpers ----------------------------------------------------------------------------


def tensor_type(value: SSAValue, what: str, op: Operation) -> TensorType[Attribute]:
    t = value.type
    if not isinstance(t, TensorType):
        raise VerifyException(f"{op.name}: {what} must be a tensor, got {t}")
    return t  # pyright: ignore[reportUnknownVariableType]


def expect_element(t: TensorType[Attribute], elem: Attribute, what: str, op: Operation) -> None:
    if t.element_type != elem:
        raise VerifyException(f"{op.name}: {what} must have element type {elem}, got {t}")


def expect_rank(t: TensorType[Attribute], rank: int, what: str, op: Operation, layout: str) -> None:
    if t.get_num_dims() != rank:
        raise VerifyException(f"{op.name}: {what} must be rank {rank} ({layout}), got {t}")


def expect_per_tensor(q: QuantParamsAttr, what: str, op: Operation) -> None:
    if not q.per_tensor:
        raise VerifyException(f"{op.name}: {what} must be per-tensor (one scale, no axis)")


def pair(attr: DenseArrayBase[IntegerType], n: int, what: str, op: Operation) -> tuple[int, ...]:
    values = attr.get_values()
    if len(values) != n:
        raise VerifyException(f"{op.name}: {what} needs {n} values, got {len(values)}")
    return values


def verify_clamp(op: Operation, clamp: DenseArrayBase[IntegerType] | None) -> None:
    if clamp is None:
        return
    lo, hi = pair(clamp, 2, "clamp", op)
    if not INT8_MIN <= lo <= hi <= INT8_MAX:
        raise VerifyException(
            f"{op.name}: clamp [{lo}, {hi}] must satisfy -128 <= lo <= hi <= 127"
        )


def mask_type(output_type: Attribute) -> TensorType[Attribute]:
    """The i1 saturation-mask type matching an int8 output type."""
    assert isinstance(output_type, TensorType)
    return TensorType(IntegerType(1), output_type.get_shape())


def verify_mask(op: Operation, output: SSAValue, mask: SSAValue | None) -> None:
    if mask is None:
        return
    m = tensor_type(mask, "mask", op)
    y = tensor_type(output, "output", op)
    if m.element_type != IntegerType(1) or m.get_shape() != y.get_shape():
        raise VerifyException(
            f"{op.name}: mask must be tensor<{'x'.join(map(str, y.get_shape()))}xi1> (one bit per output), got {m}"
        )


def clamp_range(clamp: DenseArrayBase[IntegerType] | None) -> tuple[int, int]:
    """The fused output range; the whole int8 range when the op has no clamp."""
    if clamp is None:
        return INT8_MIN, INT8_MAX
    lo, hi = clamp.get_values()
    return lo, hi


def i64_array(values: Sequence[int]) -> DenseArrayBase[IntegerType]:
    return DenseArrayBase.from_list(i64, list(values))


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int) -> int:
    return (size + pad_before + pad_after - kernel) // stride + 1


def shape_of(value: SSAValue) -> tuple[int, ...]:
    """The static shape of a tensor value."""
    t = value.type
    assert isinstance(t, TensorType)
    return tuple(t.get_shape())


def with_mask_if(op: Operation, output: Any, mask: Any) -> tuple[Any, ...]:
    """An op's golden-model results: its output, plus the saturation mask when the op has a mask result."""
    return (output, mask) if len(op.results) == 2 else (output,)


# -- parameters ----------------------------------------------------------------------------------------


@irdl_op_definition
class ParamOp(IRDLOperation):
    """A named model parameter with its initial value (Flash); `trainable` ones get an SRAM copy.

    `storage` is the element type of that SRAM copy: the parameter's own type (i8 weights / i32
    biases updated in place, rounded half to even and saturated, or stochastically: see
    `qtrain.sgd_update`), f32 (an fp32 master copy in the integer domain, from which the int8 weights
    read by the forward pass are rint + saturate) or, for an i8 weight, i16 (a 16-bit fixed-point
    master m = 256 * w + f, kept on the device as two int8 planes: w, which the forward reads as it
    reads an int8 copy, then the fraction f in [-128, 127]; `numerics.fixed16_value`).
    `channels = [start, stop]` narrows a trainable weight to a slice of its layer's input channels:
    axis 3 of OHWI, or, marked `depthwise`, axis 0 of a depthwise weight (`[C, KH, KW, 1]`, one input
    channel per group). Only that slice has an SRAM copy and is updated; the rest stays in Flash.
    """

    name = "qtrain.param"
    sym_name = prop_def(SymbolNameConstraint())
    value = prop_def(DenseIntOrFPElementsAttr)
    trainable = opt_prop_def(UnitAttr)
    storage = opt_prop_def(TypeAttribute)
    channels = opt_prop_def(DenseArrayBase.constr(i64))
    depthwise = opt_prop_def(UnitAttr)
    traits = traits_def(SymbolOpInterface())
    assembly_format = (
        "$sym_name (`trainable` $trainable^)? (`storage` `(` $storage^ `)`)? (`channels` $channels^)? "
        "(`depthwise` $depthwise^)? `=` $value attr-dict"
    )

    def __init__(
        self,
        name: str,
        value: DenseIntOrFPElementsAttr,
        trainable: bool = False,
        storage: Attribute | None = None,
        channels: Sequence[int] | None = None,
        depthwise: bool = False,
    ):
        props: dict[str, Attribute] = {"sym_name": _string_attr(name), "value": value}
        if trainable:
            props["trainable"] = UnitAttr()
        if storage is not None:
            props["storage"] = storage
        if channels is not None:
            props["channels"] = i64_array(channels)
        if depthwise:
            props["depthwise"] = UnitAttr()
        super().__init__(properties=props)

    @property
    def tensor_type(self) -> TensorType[Attribute]:
        t = self.value.type
        assert isinstance(t, TensorType)
        return t  # pyright: ignore[reportUnknownVariableType]

    @property
    def is_trainable(self) -> bool:
        return self.trainable is not None

    @property
    def storage_type(self) -> Attribute:
        """Element type of the SRAM copy (the parameter's own element type unless `storage` says f32 / i16)."""
        return self.storage if self.storage is not None else self.tensor_type.element_type

    @property
    def channel_axis(self) -> int:
        """The axis `channels` slices: 3 (OHWI input channels), or 0 for a `depthwise` weight."""
        return 0 if self.depthwise is not None else 3

    def trainable_slice(self) -> tuple[int, int] | None:
        """[start, stop) of the trained channel slice along `channel_axis`, or None when all of it trains."""
        if self.channels is None:
            return None
        start, stop = self.channels.get_values()
        return start, stop

    def trainable_shape(self) -> tuple[int, ...]:
        """Shape of the SRAM copy and of the gradient its update consumes."""
        shape = list(self.tensor_type.get_shape())
        if (sl := self.trainable_slice()) is not None:
            shape[self.channel_axis] = sl[1] - sl[0]
        return tuple(shape)

    def verify_(self) -> None:
        where = f"{self.name} @{self.sym_name.data}"
        t = self.value.type
        if not isinstance(t, TensorType):
            raise VerifyException(f"{where}: value must be a tensor, got {t}")
        if t.element_type not in (i8, i32, f32):
            raise VerifyException(f"{where}: element type must be i8, i32 or f32, got {t.element_type}")
        if not isinstance(self.parent_op(), ModuleOp):
            raise VerifyException(f"{where}: must be at module level")
        if (self.storage is not None or self.channels is not None) and self.trainable is None:
            raise VerifyException(f"{where}: storage and channels only apply to a trainable parameter")
        if self.depthwise is not None and (self.channels is None or t.get_shape()[-1] != 1):
            raise VerifyException(f"{where}: depthwise marks the channel slice of a [C, KH, KW, 1] weight")
        if self.storage is not None and self.storage not in (t.element_type, f32) and \
                not (self.storage == i16 and t.element_type == i8):
            raise VerifyException(
                f"{where}: storage must be the parameter's element type ({t.element_type}), f32 or (an i8 "
                f"weight) i16, got {self.storage}"
            )
        if self.channels is not None:
            if t.get_num_dims() != 4:
                raise VerifyException(f"{where}: a channel slice needs an OHWI weight, got {t}")
            start, stop = pair(self.channels, 2, "channels", self)
            size = t.get_shape()[self.channel_axis]
            if not 0 <= start < stop <= size:
                raise VerifyException(
                    f"{where}: channels [{start}, {stop}] must satisfy 0 <= start < stop <= {size}"
                )


def _string_attr(name: str) -> Attribute:
    from xdsl.dialects.builtin import StringAttr

    return StringAttr(name)


@irdl_op_definition
class GetParamOp(IRDLOperation, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """Reads the current value of the parameter `@name`."""

    name = "qtrain.get_param"
    param = prop_def(SymbolRefAttr)
    result = result_def(TensorType)
    traits = traits_def(MemoryReadEffect(), ParamRead())
    assembly_format = "$param attr-dict `:` type($result)"

    def __init__(self, name: str, result_type: Attribute):
        super().__init__(properties={"param": SymbolRefAttr(name)}, result_types=[result_type])

    @property
    def param_name(self) -> str:
        return self.param.root_reference.data

    def build_backward(self, builder: BackwardBuilder) -> None:
        """A leaf: the gradient of a parameter read is what `qtrain-autodiff` hands to the update."""

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (run.read_param(self.param_name),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return ()  # the lowering reads the parameter's Flash array or SRAM copy directly

    def verify_(self) -> None:
        module = self.get_toplevel_object()
        if not isinstance(module, ModuleOp):
            return  # a detached op; checked again once inserted in a module
        target = SymbolTable.lookup_symbol(self, self.param)
        if target is None:
            raise VerifyException(f"{self.name}: no qtrain.param named {self.param}")
        if not isinstance(target, ParamOp):
            raise VerifyException(f"{self.name}: {self.param} is a {target.name}, not a qtrain.param")
        if target.value.type != self.result.type:
            raise VerifyException(
                f"{self.name}: {self.param} has type {target.value.type}, but the result is {self.result.type}"
            )


# -- forward ops ---------------------------------------------------------------------------------------


@irdl_op_definition
class Conv2DOp(IRDLOperation, QuantizedOp, SaturatingOp, DifferentiableOp, ParamConsumerOp, LayerOp, GoldenModelOp,
               KernelCallOp):
    """int8 NHWC x OHWI convolution: y = clamp(rint(fp32(sum((x - zx) * w) + b) * fp32(s_x*s_w[c]/s_y)) + zy)."""

    name = "qtrain.conv2d"
    input = operand_def(TensorType)
    weight = operand_def(TensorType)
    bias = opt_operand_def(TensorType)
    output = result_def(TensorType)
    mask = opt_result_def(TensorType)
    """Training only: i1 per output element, 1 where the clamp left the rounded value unchanged."""
    strides = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    """[top, left, bottom, right], in pixels, padded with the input zero point."""
    groups = prop_def(IntegerAttr[I64])
    input_q = prop_def(QuantParamsAttr)
    weight_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    clamp = opt_prop_def(DenseArrayBase.constr(i64))
    """[lo, hi]: fused activation (ReLU/ReLU6) as an int8 output range; absent = [-128, 127]."""
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$input `,` $weight (`,` $bias^)? attr-dict `:` `(` type($input) `,` type($weight) "
        "(`,` type($bias)^)? `)` `->` type($output) (`,` type($mask)^)?"
    )

    def __init__(
        self,
        input: SSAValue | Operation,
        weight: SSAValue | Operation,
        bias: SSAValue | Operation | None,
        output_type: Attribute,
        *,
        strides: Sequence[int],
        padding: Sequence[int],
        groups: int,
        input_q: QuantParamsAttr,
        weight_q: QuantParamsAttr,
        output_q: QuantParamsAttr,
        clamp: Sequence[int] | None = None,
        with_mask: bool = False,
    ):
        props: dict[str, Attribute] = {
            "strides": i64_array(strides),
            "padding": i64_array(padding),
            "groups": IntegerAttr(groups, i64),
            "input_q": input_q,
            "weight_q": weight_q,
            "output_q": output_q,
        }
        if clamp is not None:
            props["clamp"] = i64_array(clamp)
        super().__init__(
            operands=[input, weight, bias if bias is not None else []],
            result_types=[output_type, mask_type(output_type) if with_mask else []],
            properties=props,
        )

    @property
    def is_depthwise(self) -> bool:
        cin = tensor_type(self.input, "input", self).get_shape()[3]
        return self.groups.value.data == cin and cin > 1

    def multipliers(self) -> np.ndarray:
        """dy_q/dacc per output channel: M[c] = fp32(fp32(s_x * s_w[c]) / s_y), the forward requantization's."""
        m = numerics.conv2d_multiplier(self.input_q.scale, self.weight_q.scale_array(), self.output_q.scale)
        return np.broadcast_to(m, (shape_of(self.output)[3],))

    def conv_geometry(self, input_zero_point: int, output_zero_point: int,
                      clamp: tuple[int, int] = (INT8_MIN, INT8_MAX)) -> kc.ConvGeometry:
        sh, sw = self.strides.get_values()
        pt, pl, pb, pr = self.padding.get_values()
        return kc.ConvGeometry(input_zero_point, output_zero_point, (sh, sw), (pt, pl, pb, pr),
                               self.groups.value.data, clamp)

    # -- interfaces ------------------------------------------------------------------------------------

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q if result is self.output else None

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("input_q", self.input, self.input_q),)

    def trained_param_role(self, operand: SSAValue, qas: bool) -> TrainedParamRole | None:
        """QAS (MCUNetV3): weight gradients x s_w[c]^-2, bias gradients x (s_x * s_w[c])^-2."""
        if operand is self.weight:
            kind, sw = "weight", self.weight_q.scale_array().astype(np.float64)
        elif operand is self.bias:
            kind = "bias"
            sw = self.weight_q.scale_array().astype(np.float64) * float(np.float32(self.input_q.scale))
        else:
            return None
        if not qas:
            return TrainedParamRole(kind, [1.0])
        return TrainedParamRole(kind, [float(v) for v in (1.0 / (sw * sw)).astype(np.float32)])

    def learnable_layers(self) -> Sequence[LayerSpec]:
        return (LayerSpec(self.weight, self.bias, shape_of(self.input)[3], self.is_depthwise),)

    def build_backward(self, builder: BackwardBuilder) -> None:
        from qtrain.dialects.qtrain.grad_ops import BiasGradOp, Conv2DInputGradOp, Conv2DWeightGradOp, RequantGradOp

        g = builder.grad(self.output)
        assert g is not None
        g_acc = builder.emit(RequantGradOp(g, self.mask, self.multipliers().tolist())).results[0]
        g_acc.name_hint = "g_acc"
        strides, padding = self.strides.get_values(), self.padding.get_values()
        groups = self.groups.value.data
        if self.bias is not None and builder.needs_grad(self.bias):
            builder.accumulate(self.bias, builder.emit(BiasGradOp(g_acc)).results[0])
        if builder.needs_grad(self.weight):
            gw = Conv2DWeightGradOp(self.input, g_acc, TensorType(f32, shape_of(self.weight)), strides=strides,
                                    padding=padding, groups=groups, input_q=self.input_q)
            builder.accumulate(self.weight, builder.emit(gw).results[0])
        if builder.needs_grad(self.input):
            gx = Conv2DInputGradOp(g_acc, self.weight, TensorType(f32, shape_of(self.input)), strides=strides,
                                   padding=padding, groups=groups)
            builder.accumulate(self.input, builder.emit(gx).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, w, *rest = args
        kernel = numerics.conv2d_relaxed if run.relaxed else numerics.conv2d_with_mask
        y, mask = kernel(
            x, w, rest[0] if rest else None,
            input_scale=np.float32(self.input_q.scale), input_zero_point=self.input_q.zp,
            weight_scales=self.weight_q.scale_array(), output_scale=np.float32(self.output_q.scale),
            output_zero_point=self.output_q.zp, strides=self.strides.get_values(),
            padding=self.padding.get_values(), groups=self.groups.value.data, clamp=clamp_range(self.clamp),
        )
        run.record_mask(self, mask)
        return with_mask_if(self, y, mask)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        x, w, y = shape_of(self.input), shape_of(self.weight), shape_of(self.output)
        geometry = self.conv_geometry(self.input_q.zp, self.output_q.zp, clamp_range(self.clamp))
        return (kc.KernelCall(
            "qtrain_conv2d_wrapper_s8",
            (kc.Scratch(), geometry, kc.Shape(x), kc.Tensor(self.input), kc.Shape(w), kc.Weight(self.weight),
             kc.Bias(self.bias), kc.Floats("multiplier", self.multipliers().tolist()), kc.Shape(y),
             kc.Tensor(self.output), kc.Tensor(self.mask)),
            macs=math.prod(y) * math.prod(w[1:]),
        ),)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        w = tensor_type(self.weight, "weight", self)
        y = tensor_type(self.output, "output", self)
        expect_element(x, i8, "input", self)
        expect_element(w, i8, "weight", self)
        expect_element(y, i8, "output", self)
        expect_rank(x, 4, "input", self, "NHWC")
        expect_rank(w, 4, "weight", self, "OHWI")
        expect_rank(y, 4, "output", self, "NHWC")
        n, h, wd, cin = x.get_shape()
        cout, kh, kw, cin_g = w.get_shape()
        groups = self.groups.value.data
        if groups < 1:
            raise VerifyException(f"{self.name}: groups must be >= 1, got {groups}")
        if cin % groups or cout % groups:
            raise VerifyException(
                f"{self.name}: groups = {groups} must divide input channels ({cin}) and output channels ({cout})"
            )
        if cin_g != cin // groups:
            raise VerifyException(
                f"{self.name}: weight input-channel dim is {cin_g}, expected C_in / groups = {cin} / {groups}"
            )
        if self.bias is not None:
            b = tensor_type(self.bias, "bias", self)
            expect_element(b, i32, "bias", self)
            if b.get_shape() != (cout,):
                raise VerifyException(f"{self.name}: bias must be tensor<{cout}xi32> (one per output channel), got {b}")
        sh, sw = pair(self.strides, 2, "strides", self)
        pt, pl, pb, pr = pair(self.padding, 4, "padding [top, left, bottom, right]", self)
        if sh < 1 or sw < 1:
            raise VerifyException(f"{self.name}: strides must be >= 1, got [{sh}, {sw}]")
        if min(pt, pl, pb, pr) < 0:
            raise VerifyException(f"{self.name}: padding must be >= 0")
        if h + pt + pb < kh or wd + pl + pr < kw:
            raise VerifyException(f"{self.name}: kernel {kh}x{kw} is larger than the padded input {h}x{wd}")
        oh = conv_output_size(h, kh, sh, pt, pb)
        ow = conv_output_size(wd, kw, sw, pl, pr)
        if y.get_shape() != (n, oh, ow, cout):
            raise VerifyException(
                f"{self.name}: output must be tensor<{n}x{oh}x{ow}x{cout}xi8> for this input, kernel, "
                f"stride and padding, got {y}"
            )
        expect_per_tensor(self.input_q, "input_q", self)
        expect_per_tensor(self.output_q, "output_q", self)
        wq = self.weight_q
        if wq.zp != 0:
            raise VerifyException(f"{self.name}: weights are symmetric, weight_q zero point must be 0, got {wq.zp}")
        if not wq.per_tensor:
            if wq.axis.data != 0:
                raise VerifyException(f"{self.name}: per-channel weight_q must use axis = 0 (output channels, OHWI)")
            if len(wq.scales) != cout:
                raise VerifyException(
                    f"{self.name}: weight_q has {len(wq.scales)} scales, need one per output channel ({cout})"
                )
        verify_clamp(self, self.clamp)
        verify_mask(self, self.output, self.mask)


@irdl_op_definition
class AddOp(IRDLOperation, QuantizedOp, SaturatingOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """Requantizing add, y = (s_a*(a - za) + s_b*(b - zb)) / s_y + zy, computed as onnxruntime does:

    r_a = fp32(s_a / s_y), r_b = fp32(s_b / s_y), c = fp32(zy) - fmaf(r_a, fp32(za), fp32(r_b * fp32(zb)));
    y = clamp(rint(fmaf(fp32(a), r_a, fmaf(fp32(b), r_b, c))))   (lhs = ONNX QLinearAdd's A)
    """

    name = "qtrain.add"
    lhs = operand_def(TensorType)
    rhs = operand_def(TensorType)
    output = result_def(TensorType)
    mask = opt_result_def(TensorType)
    """Training only: i1 per output element, 1 where the clamp left the rounded value unchanged."""
    lhs_q = prop_def(QuantParamsAttr)
    rhs_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    clamp = opt_prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$lhs `,` $rhs attr-dict `:` `(` type($lhs) `,` type($rhs) `)` `->` type($output) (`,` type($mask)^)?"
    )

    def __init__(
        self,
        lhs: SSAValue | Operation,
        rhs: SSAValue | Operation,
        *,
        lhs_q: QuantParamsAttr,
        rhs_q: QuantParamsAttr,
        output_q: QuantParamsAttr,
        clamp: Sequence[int] | None = None,
        with_mask: bool = False,
    ):
        props: dict[str, Attribute] = {"lhs_q": lhs_q, "rhs_q": rhs_q, "output_q": output_q}
        if clamp is not None:
            props["clamp"] = i64_array(clamp)
        out_type = SSAValue.get(lhs).type
        super().__init__(
            operands=[lhs, rhs],
            result_types=[out_type, mask_type(out_type) if with_mask else []],
            properties=props,
        )

    def constants(self) -> numerics.AddConstants:
        q = (self.lhs_q, self.rhs_q, self.output_q)
        return numerics.add_constants(q[0].scale, q[0].zp, q[1].scale, q[1].zp, q[2].scale, q[2].zp)

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q if result is self.output else None

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("lhs_q", self.lhs, self.lhs_q), ("rhs_q", self.rhs, self.rhs_q))

    def can_saturate(self) -> bool:
        c = self.constants()
        terms = [(float(c.lhs_multiplier), self.lhs_q.zp), (float(c.rhs_multiplier), self.rhs_q.zp)]
        return affine_range_saturates(terms, self.output_q.zp, clamp_range(self.clamp))

    def build_backward(self, builder: BackwardBuilder) -> None:
        """Each operand's gradient is g * mask * fp32(s_operand / s_y) (the add's own multipliers)."""
        from qtrain.dialects.qtrain.grad_ops import RequantGradOp

        g = builder.grad(self.output)
        assert g is not None
        c = self.constants()
        for operand, multiplier in ((self.lhs, c.lhs_multiplier), (self.rhs, c.rhs_multiplier)):
            if builder.needs_grad(operand):
                r = builder.emit(RequantGradOp(g, self.mask, [float(multiplier)])).results[0]
                builder.accumulate(operand, r)

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        lhs, rhs = args
        kernel = numerics.add_relaxed if run.relaxed else numerics.add_with_mask
        y, mask = kernel(
            lhs, rhs, lhs_scale=np.float32(self.lhs_q.scale), lhs_zero_point=self.lhs_q.zp,
            rhs_scale=np.float32(self.rhs_q.scale), rhs_zero_point=self.rhs_q.zp,
            output_scale=np.float32(self.output_q.scale), output_zero_point=self.output_q.zp,
            clamp=clamp_range(self.clamp),
        )
        run.record_mask(self, mask)
        return with_mask_if(self, y, mask)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        c = self.constants()
        lo, hi = clamp_range(self.clamp)
        return (kc.KernelCall(
            "qtrain_add_s8",
            (kc.Tensor(self.lhs), kc.Tensor(self.rhs), kc.I32(math.prod(shape_of(self.output))),
             kc.F32(float(c.lhs_multiplier)), kc.F32(float(c.rhs_multiplier)), kc.F32(float(c.offset)),
             kc.I32(lo), kc.I32(hi), kc.Tensor(self.output), kc.Tensor(self.mask)),
            returns="void",
        ),)

    def verify_(self) -> None:
        a = tensor_type(self.lhs, "lhs", self)
        b = tensor_type(self.rhs, "rhs", self)
        y = tensor_type(self.output, "output", self)
        for t, what in ((a, "lhs"), (b, "rhs"), (y, "output")):
            expect_element(t, i8, what, self)
        if not a.get_shape() == b.get_shape() == y.get_shape():
            raise VerifyException(f"{self.name}: lhs, rhs and output must have the same shape, got {a}, {b}, {y}")
        for q, what in ((self.lhs_q, "lhs_q"), (self.rhs_q, "rhs_q"), (self.output_q, "output_q")):
            expect_per_tensor(q, what, self)
        verify_clamp(self, self.clamp)
        verify_mask(self, self.output, self.mask)


@irdl_op_definition
class AvgPoolOp(IRDLOperation, QuantizedOp, SaturatingOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """k x k average pool, no padding (global when k = H x W).

    y = clamp(rint(fp32(sum(x - zx)) * fp32(s_x / fp32(s_y * fp32(kh * kw)))) + zy), sum exact in int32
    """

    name = "qtrain.avgpool"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    mask = opt_result_def(TensorType)
    """Training only: i1 per output element, 1 where the clamp left the rounded value unchanged."""
    kernel = prop_def(DenseArrayBase.constr(i64))
    strides = prop_def(DenseArrayBase.constr(i64))
    input_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output) (`,` type($mask)^)?"

    def __init__(
        self,
        input: SSAValue | Operation,
        output_type: Attribute,
        *,
        kernel: Sequence[int],
        strides: Sequence[int],
        input_q: QuantParamsAttr,
        output_q: QuantParamsAttr,
        with_mask: bool = False,
    ):
        super().__init__(
            operands=[input],
            result_types=[output_type, mask_type(output_type) if with_mask else []],
            properties={
                "kernel": i64_array(kernel),
                "strides": i64_array(strides),
                "input_q": input_q,
                "output_q": output_q,
            },
        )

    @property
    def is_global(self) -> bool:
        x = tensor_type(self.input, "input", self)
        return tuple(self.kernel.get_values()) == tuple(x.get_shape()[1:3])

    def multiplier(self) -> np.float32:
        """M = fp32(s_x / fp32(s_y * fp32(kh * kw))): the window sum's requantization multiplier."""
        return numerics.avgpool_multiplier(self.input_q.scale, self.output_q.scale, self.kernel.get_values())

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q if result is self.output else None

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("input_q", self.input, self.input_q),)

    def can_saturate(self) -> bool:
        window = math.prod(self.kernel.get_values())
        return affine_range_saturates([(float(self.multiplier()) * window, self.input_q.zp)], self.output_q.zp,
                                      (INT8_MIN, INT8_MAX))

    def build_backward(self, builder: BackwardBuilder) -> None:
        from qtrain.dialects.qtrain.grad_ops import AvgPoolGradOp, RequantGradOp

        g = builder.grad(self.output)
        assert g is not None
        g_sum = builder.emit(RequantGradOp(g, self.mask, [float(self.multiplier())])).results[0]
        gx = builder.emit(AvgPoolGradOp(g_sum, TensorType(f32, shape_of(self.input)),
                                        kernel=self.kernel.get_values(), strides=self.strides.get_values()))
        builder.accumulate(self.input, gx.results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        kernel = numerics.avgpool_relaxed if run.relaxed else numerics.avgpool_with_mask
        y, mask = kernel(
            x, kernel=self.kernel.get_values(), strides=self.strides.get_values(),
            input_scale=np.float32(self.input_q.scale), input_zero_point=self.input_q.zp,
            output_scale=np.float32(self.output_q.scale), output_zero_point=self.output_q.zp,
        )
        run.record_mask(self, mask)
        return with_mask_if(self, y, mask)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        kh, kw = self.kernel.get_values()
        sh, sw = self.strides.get_values()
        return (kc.KernelCall(
            "qtrain_avgpool_s8",
            (kc.Shape(shape_of(self.input)), kc.Tensor(self.input), kc.I32(kh), kc.I32(kw), kc.I32(sh), kc.I32(sw),
             kc.I32(self.input_q.zp), kc.F32(float(self.multiplier())), kc.I32(self.output_q.zp),
             kc.Shape(shape_of(self.output)), kc.Tensor(self.output), kc.Tensor(self.mask)),
        ),)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        expect_element(x, i8, "input", self)
        expect_element(y, i8, "output", self)
        expect_rank(x, 4, "input", self, "NHWC")
        expect_rank(y, 4, "output", self, "NHWC")
        kh, kw = pair(self.kernel, 2, "kernel", self)
        sh, sw = pair(self.strides, 2, "strides", self)
        if min(kh, kw, sh, sw) < 1:
            raise VerifyException(f"{self.name}: kernel and strides must be >= 1")
        n, h, w, c = x.get_shape()
        if kh > h or kw > w:
            raise VerifyException(f"{self.name}: kernel {kh}x{kw} is larger than the input {h}x{w}")
        expected = (n, (h - kh) // sh + 1, (w - kw) // sw + 1, c)
        if y.get_shape() != expected:
            raise VerifyException(
                f"{self.name}: output must be tensor<{'x'.join(map(str, expected))}xi8>, got {y}"
            )
        expect_per_tensor(self.input_q, "input_q", self)
        expect_per_tensor(self.output_q, "output_q", self)
        verify_mask(self, self.output, self.mask)


@irdl_op_definition
class QuantizeOp(IRDLOperation, QuantizedOp, GoldenModelOp, KernelCallOp):
    """fp32 -> int8: y = clamp(rint(x / s) + zp, -128, 127)."""

    name = "qtrain.quantize"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    output_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kernel = numerics.quantize_relaxed if run.relaxed else numerics.quantize
        return (kernel(args[0], scale=np.float32(self.output_q.scale), zero_point=self.output_q.zp),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_quantize_f32_s8",
            (kc.Tensor(self.input), kc.I32(math.prod(shape_of(self.output))), kc.F32(self.output_q.scale),
             kc.I32(self.output_q.zp), kc.Tensor(self.output)),
            returns="void",
        ),)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        expect_element(x, f32, "input", self)
        expect_element(y, i8, "output", self)
        if x.get_shape() != y.get_shape():
            raise VerifyException(f"{self.name}: input and output shapes differ: {x} vs {y}")
        expect_per_tensor(self.output_q, "output_q", self)


@irdl_op_definition
class DequantizeOp(IRDLOperation, QuantizedOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """int8 -> fp32: y = fp32(x - zp) * s."""

    name = "qtrain.dequantize"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    input_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, input: SSAValue | Operation, input_q: QuantParamsAttr):
        t = SSAValue.get(input).type
        assert isinstance(t, TensorType)
        super().__init__(
            operands=[input], result_types=[TensorType(f32, t.get_shape())], properties={"input_q": input_q}
        )

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("input_q", self.input, self.input_q),)

    def build_backward(self, builder: BackwardBuilder) -> None:
        from qtrain.dialects.qtrain.grad_ops import RequantGradOp

        g = builder.grad(self.output)
        assert g is not None
        builder.accumulate(self.input, builder.emit(RequantGradOp(g, None, [self.input_q.scale])).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        run.record_dequantized(self, x)
        kernel = numerics.dequantize_relaxed if run.relaxed else numerics.dequantize
        return (kernel(x, scale=np.float32(self.input_q.scale), zero_point=self.input_q.zp),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_dequantize_s8_f32",
            (kc.Tensor(self.input), kc.I32(math.prod(shape_of(self.output))), kc.F32(self.input_q.scale),
             kc.I32(self.input_q.zp), kc.Tensor(self.output)),
            returns="void",
        ),)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        expect_element(x, i8, "input", self)
        expect_element(y, f32, "output", self)
        if x.get_shape() != y.get_shape():
            raise VerifyException(f"{self.name}: input and output shapes differ: {x} vs {y}")
        expect_per_tensor(self.input_q, "input_q", self)


@irdl_op_definition
class ReshapeOp(IRDLOperation, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """Reinterprets a tensor with another shape of the same element count (row-major; no data movement)."""

    name = "qtrain.reshape"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    traits = traits_def(Pure(), ViewOfOperand())
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, input: SSAValue | Operation, output_type: Attribute):
        super().__init__(operands=[input], result_types=[output_type])

    def build_backward(self, builder: BackwardBuilder) -> None:
        g = builder.grad(self.output)
        assert g is not None
        builder.accumulate(self.input, builder.emit(ReshapeOp(g, TensorType(f32, shape_of(self.input)))).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (np.reshape(args[0], shape_of(self.output)),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return ()  # a view: the planner gives it its input's buffer

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        if x.element_type != y.element_type:
            raise VerifyException(f"{self.name}: element types differ: {x} vs {y}")
        if x.element_count() != y.element_count():
            raise VerifyException(
                f"{self.name}: element counts differ ({x.element_count()} vs {y.element_count()})"
            )


@irdl_op_definition
class CrossEntropyOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """Softmax cross-entropy of fp32 logits [N=1, K] (or [1, 1, 1, K]) against an integer label in [0, K)."""

    name = "qtrain.cross_entropy"
    logits = operand_def(TensorType)
    label = operand_def(i32)
    loss = result_def(Float32Type)
    traits = traits_def(Pure())
    assembly_format = "$logits `,` $label attr-dict `:` type($logits) `->` type($loss)"

    def __init__(self, logits: SSAValue | Operation, label: SSAValue | Operation):
        super().__init__(operands=[logits, label], result_types=[f32])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        logits, label = args
        kernel = numerics.cross_entropy_relaxed if run.relaxed else numerics.cross_entropy
        return (kernel(logits, int(label)),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        k = shape_of(self.logits)[-1]
        return (kc.KernelCall("qtrain_cross_entropy_f32", (kc.Tensor(self.logits), kc.I32(k), kc.Label(), kc.Null()),
                              returns="loss"),)

    def verify_(self) -> None:
        x = tensor_type(self.logits, "logits", self)
        expect_element(x, f32, "logits", self)
        shape = x.get_shape()
        if len(shape) < 1 or any(d != 1 for d in shape[:-1]):
            raise VerifyException(
                f"{self.name}: logits must have every dimension but the last equal to 1 (batch 1), got {x}"
            )
        if shape[-1] < 2:
            raise VerifyException(f"{self.name}: logits need at least 2 classes, got {x}")


def affine_range_saturates(terms: Sequence[tuple[float, int]], zero_point: int, clamp: tuple[int, int]) -> bool:
    """Whether clamp(rint(zy + sum(m * (q - z)))) can change a value for some int8 operands q, for terms
    (m, z): if the whole unclamped range rounds inside the clamp, the op never saturates (no mask needed)."""
    lo = hi = float(zero_point)
    for m, z in terms:
        a, b = m * (INT8_MIN - z), m * (INT8_MAX - z)
        lo += min(a, b)
        hi += max(a, b)
    return not (np.rint(lo) >= clamp[0] and np.rint(hi) <= clamp[1])


FORWARD_OPS: list[type[IRDLOperation]] = [
    ParamOp,
    GetParamOp,
    Conv2DOp,
    AddOp,
    AvgPoolOp,
    QuantizeOp,
    DequantizeOp,
    ReshapeOp,
    CrossEntropyOp,
]
