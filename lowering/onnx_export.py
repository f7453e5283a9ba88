"""Forward qtrain IR -> an ONNX QOperator model that onnxruntime computes bit for bit like qtrain.

`export_onnx(module)` translates `@forward`: the graph takes `image`, int8 NCHW `[1, C, H, W]`, and returns
`output_q`, int8 `[1, K]`; the model's metadata holds the input quantization (`input_scale`,
`input_zero_point`, from `qtrain.input_q`). Rank-4 values are NHWC in qtrain and NCHW in ONNX.

- `qtrain.conv2d` -> QLinearConv (int8 activations, per-channel int8 weights, int32 bias, pads =
  padding, group = groups); a `clamp` narrower than int8 becomes an int8 Clip.
- `qtrain.fused_pointwise_depthwise` (from `qtrain-fuse-streaming`, in a planned model) -> the two
  QLinearConv it stands for, through its intermediate tensor at `mid_q`.
- `qtrain.add` -> com.microsoft QLinearAdd (A = lhs, B = rhs); its x86 kernel is the contract of
  `qtrain.numerics.add`.
- global `qtrain.avgpool` -> com.microsoft QLinearGlobalAveragePool (the sum of `x - zx` times
  `s_x / (s_y * H * W)`, rounded half to even: `qtrain.avgpool`).
- `qtrain.reshape` -> Reshape (through NHWC order when the spatial size is not 1x1);
  `qtrain.quantize` / `qtrain.dequantize` -> QuantizeLinear / DequantizeLinear.
- parameters (`qtrain.get_param`, the `ParamRead` ops) become initializers where an op reads them.

The quantization of every operand and result comes from the op's `QuantizedOp` interface, in the order
ONNX's QLinear* ops take them; which ONNX node an op becomes is a table by op class, as an exporter to a
foreign format is. Used by `qtrain-import-tiny-training --export-onnx`, by the tests that take
onnxruntime as the oracle of the interpreter, and by `qtrain-export`, which first writes the parameters
a device learned into the IR (`install_params`: the fine-tuned network).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import BytesAttr, DenseIntOrFPElementsAttr, ModuleOp, TensorType, f32, i8, i16, i32
from xdsl.ir import Attribute, Operation, SSAValue

from qtrain import numerics
from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    DequantizeOp,
    FusedPointwiseDepthwiseOp,
    ParamOp,
    QuantizeOp,
    QuantParamsAttr,
    ReshapeOp,
)
from qtrain.dialects.qtrain.contract import FORWARD, INPUT_Q, find_func, param_name, param_ops
from qtrain.dialects.qtrain.interfaces import ParamRead, QuantizedOp
from qtrain.dialects.qtrain.ops import clamp_range

OPSET = 13
"""ai.onnx opset of the exported model (QLinearConv, Clip with int8 bounds, Reshape with a shape input)."""
IR_VERSION = 8
"""onnxruntime 1.2x reads IR <= 10; 8 is what opset 13 needs."""


def export_onnx(module: ModuleOp, path: str | os.PathLike[str] | None = None) -> onnx.ModelProto:
    """The module's `@forward` as an ONNX QOperator model, also written to `path` when given.
    ValueError for an op or element type that has no QOperator counterpart."""
    model = _OnnxExporter(module).export()
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


_NUMPY_OF = {i8: np.dtype("int8"), i16: np.dtype("<i2"), i32: np.dtype("<i4"), f32: np.dtype("<f4")}


def install_params(module: ModuleOp, params: Mapping[str, np.ndarray]) -> list[str]:
    """Writes the parameters a device learned into `module`'s `qtrain.param` values, in place, and
    returns the names written (in module order).

    `params[name]` is trainable parameter @name's SRAM copy as the device keeps it: `qtrain-run -o`'s
    `param/<name>` (the interpreter's `sram_copy`), i.e. the trained part only (a weight's `channels`
    slice) in its storage type: int8 / int32 values, or an fp32 master whose parameter is the int8 value
    the forward pass reads from it, saturate(rint(master)) (`numerics.master_to_param`). The parameter's
    frozen part keeps its value. ValueError (one line) when a trainable parameter is missing, a name is
    not a trainable parameter of the module, or a shape or dtype differs from the SRAM copy's.
    """
    trainable = {name: p for name, p in param_ops(module).items() if p.is_trainable}
    unknown = sorted(set(params) - set(trainable))
    if unknown:
        raise ValueError(f"not a trainable parameter of the model: {', '.join(unknown)}")
    missing = [name for name in trainable if name not in params]
    if missing:
        raise ValueError(f"no learned value for the trainable parameter(s) {', '.join(missing)}")
    for name, p in trainable.items():
        p.value = _trained_value(p, np.asarray(params[name]))
    return list(trainable)


def _trained_value(p: ParamOp, copy: np.ndarray) -> DenseIntOrFPElementsAttr:
    t = p.tensor_type
    element = _NUMPY_OF[t.element_type]
    storage = _NUMPY_OF[p.storage_type]
    name = p.sym_name.data
    if copy.shape != p.trainable_shape() or copy.dtype != storage:
        raise ValueError(f"{name}: the learned value is {copy.dtype}{list(copy.shape)}, but its SRAM copy is "
                         f"{storage}{list(p.trainable_shape())}")
    value = np.frombuffer(p.value.data.data, dtype=element).reshape(t.get_shape()).copy()
    trained = numerics.master_to_param(copy, element) if storage != element else copy
    sl = p.trainable_slice()
    if sl is None:
        value[...] = trained
    else:
        index = [slice(None)] * value.ndim
        index[p.channel_axis] = slice(*sl)
        value[tuple(index)] = trained
    return DenseIntOrFPElementsAttr(t, BytesAttr(value.astype(element.newbyteorder("<")).tobytes()))


class _OnnxExporter:
    """Translates @forward op by op into ONNX nodes and initializers."""

    def __init__(self, module: ModuleOp):
        self.module = module
        self.params = param_ops(module)
        self.names: dict[SSAValue, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.counter = 0

    # -- graph pieces ----------------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, name: str, array: np.ndarray) -> str:
        if name not in self.initializers:
            self.initializers[name] = numpy_helper.from_array(array, name)
        return name

    def quant(self, q: QuantParamsAttr, hint: str) -> tuple[str, str]:
        """Initializers for a (scale, zero point) pair; per-tensor ones are shared by value."""
        if q.per_tensor:
            key = f"q_{np.float32(q.scale).view(np.uint32):08x}_{q.zp}"
            scale = self.const(f"{key}.scale", np.array(q.scale, dtype=np.float32))
            zero = self.const(f"{key}.zero_point", np.array(q.zp, dtype=np.int8))
            return scale, zero
        scales = q.scale_array()
        scale = self.const(f"{hint}.scale", scales)
        zero = self.const(f"{hint}.zero_point", np.full(scales.shape, q.zp, dtype=np.int8))
        return scale, zero

    def quantized_operands(self, op: QuantizedOp, hints: tuple[str, ...]) -> list[str]:
        """`x, x_scale, x_zero_point` for each int8 operand the op reads, in operand order (QLinear*'s)."""
        names: list[str] = []
        for (_, value, q), hint in zip(op.operand_quants(), hints, strict=True):
            names += [self.names[value], *self.quant(q, hint)]
        return names

    def result_quant(self, op: Operation, hint: str) -> list[str]:
        """`y_scale, y_zero_point` of the op's (first) result."""
        assert isinstance(op, QuantizedOp)
        q = op.result_quant(op.results[0])
        if q is None:
            raise ValueError(f"ONNX export: {op.name} has no int8 result")
        return list(self.quant(q, hint))

    def node(self, op_type: str, inputs: list[str], hint: str, domain: str = "", **attrs: Any) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, domain=domain, **attrs))
        return out

    def param_array(self, value: SSAValue) -> tuple[str, np.ndarray]:
        """The parameter `value` reads: its name and its values."""
        name = param_name(value)
        if name is None:
            got = value.owner.name if isinstance(value.owner, Operation) else "a block argument"
            raise ValueError(f"ONNX export: weights and biases must come from qtrain.get_param, got {got}")
        p = self.params[name]
        t = p.tensor_type
        dtype = {i8: np.int8, i32: np.dtype("<i4"), f32: np.dtype("<f4")}[t.element_type]
        return name, np.frombuffer(p.value.data.data, dtype=dtype).reshape(t.get_shape())

    def clip(self, x: str, clamp: Any, hint: str) -> str:
        lo, hi = clamp_range(clamp)
        if (lo, hi) == (-128, 127):
            return x
        lo_name = self.const(f"clip_{lo}", np.array(lo, dtype=np.int8))
        hi_name = self.const(f"clip_{hi}", np.array(hi, dtype=np.int8))
        return self.node("Clip", [x, lo_name, hi_name], f"{hint}_clip")

    # -- the graph -----------------------------------------------------------------------------------------
    def export(self) -> onnx.ModelProto:
        fn = find_func(self.module, FORWARD)
        if fn is None:
            raise ValueError("ONNX export: the module has no func.func @forward")
        inputs = []
        for i, arg in enumerate(fn.args):
            name = "image" if i == 0 else f"input{i}"
            self.names[arg] = name
            inputs.append(_value_info(name, arg))
        outputs = []
        for op in fn.body.block.ops:
            if op.has_trait(ParamRead):
                continue  # a parameter becomes an initializer where an op reads it
            if isinstance(op, func.ReturnOp):
                for i, v in enumerate(op.arguments):
                    name = "output_q" if i == 0 else f"output{i}"
                    self.nodes.append(helper.make_node("Identity", [self.names[v]], [name], name=f"{name}_identity"))
                    outputs.append(_value_info(name, v))
                continue
            translate = _TRANSLATIONS.get(type(op))
            if translate is None:
                raise ValueError(f"ONNX export: {op.name} is not a forward op")
            self.names[op.results[0]] = translate(self, op)
        graph = helper.make_graph(self.nodes, "forward", inputs, outputs, list(self.initializers.values()))
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
            producer_name="qtrain",
            ir_version=IR_VERSION,
        )
        q = fn.attributes.get(INPUT_Q)
        if isinstance(q, QuantParamsAttr):
            helper.set_model_props(model, {"input_scale": repr(q.scale), "input_zero_point": str(q.zp)})
        return model

    # -- one translation per op class ----------------------------------------------------------------------
    def conv(self, op: Conv2DOp) -> str:
        return self.qlinear_conv(self.names[op.input], op.input_q, op.weight, op.bias, op.weight_q, op.output_q,
                                 op.strides, op.padding, op.groups.value.data, op.clamp)

    def fused_pointwise_depthwise(self, op: FusedPointwiseDepthwiseOp) -> str:
        mid = self.qlinear_conv(self.names[op.input], op.input_q, op.pw_weight, op.pw_bias, op.pw_weight_q,
                                op.mid_q, op.pw_strides, op.pw_padding, op.pw_groups.value.data, op.pw_clamp)
        return self.qlinear_conv(mid, op.mid_q, op.dw_weight, op.dw_bias, op.dw_weight_q, op.output_q,
                                 op.dw_strides, op.dw_padding, op.dw_groups.value.data, op.dw_clamp)

    def qlinear_conv(self, x: str, x_q: QuantParamsAttr, weight: SSAValue, bias: SSAValue | None,
                     weight_q: QuantParamsAttr, y_q: QuantParamsAttr, strides: Any, padding: Any, groups: int,
                     clamp: Any) -> str:
        """One QLinearConv (+ Clip for a clamp narrower than int8) of `x` at `x_q` into `y_q`."""
        wname, w = self.param_array(weight)
        hint = wname.removesuffix(".weight")
        w_init = self.const(wname, np.ascontiguousarray(w.transpose(0, 3, 1, 2)))  # OHWI -> OIHW
        ws, wz = self.quant(weight_q, f"{hint}.weight")
        ins = [x, *self.quant(x_q, f"{hint}_x"), w_init, ws, wz, *self.quant(y_q, f"{hint}_y")]
        if bias is not None:
            bname, b = self.param_array(bias)
            ins.append(self.const(bname, b.astype(np.int32)))
        pads = list(padding.get_values())  # [top, left, bottom, right] = ONNX [h_begin, w_begin, h_end, w_end]
        out = self.node(
            "QLinearConv", ins, hint,
            kernel_shape=list(w.shape[1:3]), strides=list(strides.get_values()), pads=pads, group=groups,
        )
        return self.clip(out, clamp, hint)

    def add(self, op: AddOp) -> str:
        ins = [*self.quantized_operands(op, ("add_a", "add_b")), *self.result_quant(op, "add_y")]
        out = self.node("QLinearAdd", ins, "add", domain="com.microsoft")
        return self.clip(out, op.clamp, "add")

    def avgpool(self, op: AvgPoolOp) -> str:
        if not op.is_global:
            raise ValueError("ONNX export: only global qtrain.avgpool is supported")
        ins = [*self.quantized_operands(op, ("pool_x",)), *self.result_quant(op, "pool_y")]
        return self.node("QLinearGlobalAveragePool", ins, "avgpool", domain="com.microsoft", channels_last=0)

    def quantize(self, op: QuantizeOp) -> str:
        return self.node("QuantizeLinear", [self.names[op.input], *self.result_quant(op, "quantize")], "quantize")

    def dequantize(self, op: DequantizeOp) -> str:
        return self.node("DequantizeLinear", self.quantized_operands(op, ("dequantize",)), "dequantize")

    def reshape(self, op: ReshapeOp) -> str:
        x = self.names[op.input]
        xt, yt = op.input.type, op.output.type
        assert isinstance(xt, TensorType) and isinstance(yt, TensorType)
        in_shape, out_shape = list(xt.get_shape()), list(yt.get_shape())
        if len(in_shape) == 4 and in_shape[1] * in_shape[2] != 1:
            x = self.node("Transpose", [x], "to_nhwc", perm=[0, 2, 3, 1])
        target = self.const(f"shape_{'x'.join(map(str, out_shape))}", np.array(out_shape, dtype=np.int64))
        if len(out_shape) == 4:
            y = self.node("Reshape", [x, target], "reshape")
            return self.node("Transpose", [y], "to_nchw", perm=[0, 3, 1, 2])
        return self.node("Reshape", [x, target], "reshape")


_TRANSLATIONS: dict[type[Operation], Callable[[_OnnxExporter, Any], str]] = {
    Conv2DOp: _OnnxExporter.conv,
    FusedPointwiseDepthwiseOp: _OnnxExporter.fused_pointwise_depthwise,
    AddOp: _OnnxExporter.add,
    AvgPoolOp: _OnnxExporter.avgpool,
    ReshapeOp: _OnnxExporter.reshape,
    QuantizeOp: _OnnxExporter.quantize,
    DequantizeOp: _OnnxExporter.dequantize,
}


def _value_info(name: str, value: SSAValue) -> onnx.ValueInfoProto:
    """A graph input or output: the value's element type and shape, NHWC as NCHW."""
    t = value.type
    assert isinstance(t, TensorType)
    shape = list(t.get_shape())
    if len(shape) == 4:
        shape = [shape[0], shape[3], shape[1], shape[2]]
    return helper.make_tensor_value_info(name, _onnx_elem(t.element_type), shape)


def _onnx_elem(t: Attribute) -> int:
    if t == i8:
        return TensorProto.INT8
    if t == f32:
        return TensorProto.FLOAT
    if t == i32:
        return TensorProto.INT32
    raise ValueError(f"ONNX export: unsupported element type {t}")
