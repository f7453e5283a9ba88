"""ONNX nodes -> qtrain IR: `OnnxImporter`, one handler per supported op, and `import_onnx`.

Each handler maps its node's outputs to `Value`s: constants (`Const`, folded at import) or run-time
tensors (`Act`) over the intermediate graph's edges (`graph.py`). Layers are emitted through
`frontends/builder.py` once every edge is quantized (by the model, or by `ptq.calibrate`).

Layout: NCHW tensors become NHWC (OIHW weights become OHWI); a Gemm/MatMul on a flattened `[1, C*H*W]`
tensor becomes a conv with an HxW kernel on the NHWC tensor (weights reordered from CHW), so no data
moves. The batch dimension (static or symbolic) is fixed to 1. A rank-2 input `[N, F]` becomes a
`1x1xF` image. The result is the graph output flattened to `[1, K]` in NHWC order (for a classifier,
the `[1, K]` logits themselves).

Quantized models (QOperator / QDQ): scales and zero points come from the model (uint8 tensors are
shifted to int8: q - 128 with zero point zp - 128, which is the same real value). Weights stay the
model's integers when they are int8-representable after removing the zero point (otherwise they are
rescaled by the channel's common divisor, or re-quantized with a warning); biases stay the model's int32
when their scale is s_x * s_w[c]. A float op between a quantized producer and the next QuantizeLinear
(BatchNormalization, Relu, Clip, Add of a constant) is folded into that producer, dropping the
intermediate quantization (one rounding fewer than onnxruntime; run onnxruntime's `quant_pre_process`
before quantizing to keep the model bit-exact). Measured against onnxruntime: preprocessed QOperator
and QDQ CNNs are bit-exact; a QDQ AveragePool is not always, because onnxruntime computes it in float
and breaks exact .5 ties either way where `qtrain.avgpool` rounds half to even. Float models get their
missing quantization from `ptq.py`.

Activation functions are never separate ops: Relu/Clip fold into the producing conv/add as an int8
`clamp` (the real range [lo, hi] mapped through the output quantization); elsewhere they become a 1x1
requantizing `qtrain.avgpool` whose output quantization's saturation is the range (always the case
for ReLU/ReLU6 with calibrated ranges), or an error if it is not.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import ModuleOp, TensorType, i8
from xdsl.ir import SSAValue

from qtrain.dialects.qtrain import QuantParamsAttr
from qtrain.dialects.qtrain.activations import LutOp
from qtrain.dialects.qtrain.channels import ConcatOp, GatherChannelsOp
from qtrain.dialects.qtrain.maxpool import MaxPoolOp, maxpool_output_size
from qtrain.dialects.qtrain.mul import MulOp
from qtrain.frontends.builder import ForwardBuilder, clamp_for_range, quant_params
from qtrain.frontends.onnx.graph import (
    Act,
    AddLayer,
    ConcatLayer,
    Const,
    ConvLayer,
    Edge,
    GatherLayer,
    GroupedView,
    GroupNormLayer,
    Layer,
    LutLayer,
    MaxPoolLayer,
    MulLayer,
    PoolLayer,
    QuantizedConst,
    RequantLayer,
    Value,
    reachable,
)
from qtrain.frontends.onnx.model import (
    OnnxImportError,
    OnnxImportWarning,
    check_model,
    first_line,
    graph_input,
    load_calibration,
    load_model,
)
from qtrain.frontends.onnx.ptq import calibrate, conv_integers

# -- small helpers ------------------------------------------------------------------------------------


def _node_label(node: onnx.NodeProto) -> str:
    name = f" '{node.name}'" if node.name else f" (output '{node.output[0]}')" if node.output else ""
    return f"{node.op_type}{name}"


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _int8_shift(zero_point: np.ndarray) -> tuple[np.ndarray, bool]:
    """Zero points as int64, and whether they were uint8 (then the int8 twin is zp - 128)."""
    if zero_point.dtype == np.uint8:
        return zero_point.astype(np.int64), True
    if zero_point.dtype == np.int8:
        return zero_point.astype(np.int64), False
    raise ValueError(f"zero point of type {zero_point.dtype}; only int8 and uint8 are supported")


def _dequantize(q: QuantizedConst) -> np.ndarray:
    """The real values of a quantized constant (float64)."""
    scale = q.scale.astype(np.float64)
    if q.axis is not None:
        shape = [1] * q.centered.ndim
        shape[q.axis] = scale.size
        scale = scale.reshape(shape)
    return q.centered.astype(np.float64) * scale


def _auto_pad(node: onnx.NodeProto, attrs: dict[str, Any]) -> str:
    """The node's auto_pad; refused together with explicit pads (ONNX: "pads" only with NOTSET)."""
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad != "NOTSET" and "pads" in attrs:
        raise OnnxImportError(f"{_node_label(node)}: auto_pad {auto_pad} together with pads {list(attrs['pads'])} "
                              f"(ONNX allows pads only with auto_pad NOTSET)")
    return auto_pad


def _same_pads(size: int, kernel: int, stride: int, mode: str) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    small, big = total // 2, total - total // 2
    return (small, big) if mode == "SAME_UPPER" else (big, small)


def _common_divisor_rescale(centered: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per output channel, divide the integers by their gcd (and multiply the scale) when that makes them
    fit in int8 exactly; None when some channel still does not fit."""
    out_w = centered.copy()
    out_s = scale.astype(np.float64).copy()
    for c in range(centered.shape[0]):
        row = centered[c]
        if np.abs(row).max(initial=0) <= 127:
            continue
        g = int(np.gcd.reduce(np.abs(row).ravel()))
        if g <= 1 or np.abs(row // g).max() > 127:
            return None
        out_w[c] = row // g
        out_s[c] *= g
    return out_w, out_s.astype(np.float32)



CONSTANT_FOLDED = frozenset({"Add", "Cast", "Concat", "Div", "Gather", "Mul", "Range", "Reshape", "Slice", "Squeeze",
                             "Sub", "Unsqueeze"})
"""Ops evaluated at import when every input is a constant (the shape arithmetic exporters write)."""


# -- the importer ------------------------------------------------------------------------------------


class OnnxImporter:
    """Translates one validated ONNX model; `run()` returns the qtrain module."""

    def __init__(self, model: onnx.ModelProto, calibration: np.ndarray | None = None, *, classifier: bool = False):
        self.model = model
        self.classifier = classifier
        self.graph = model.graph
        self.calibration = calibration
        self.values: dict[str, Value] = {}
        self.layers: list[Layer] = []
        self.consumers: dict[str, int] = {}
        self.producer_node: dict[str, onnx.NodeProto] = {}
        self.graph_outputs = {o.name for o in self.graph.output}
        self.input_edge: Edge | None = None
        self.input_name = ""
        self.input_flat = False
        self.model_batch: int | None = None
        self.opset = 0

    # -- validation --------------------------------------------------------------------------------
    def validate(self) -> None:
        self.opset = check_model(self.model)

    # -- driver ------------------------------------------------------------------------------------
    def run(self) -> ModuleOp:
        self.validate()
        for init in self.graph.initializer:
            try:
                self.values[init.name] = Const(numpy_helper.to_array(init))
            except Exception as e:  # external data, unsupported element types, inconsistent sizes
                raise OnnxImportError(f"cannot read initializer '{init.name}': {first_line(str(e))}") from e
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers[name] = self.consumers.get(name, 0) + 1
            for name in node.output:
                self.producer_node[name] = node
        for name in self.graph_outputs:
            self.consumers[name] = self.consumers.get(name, 0) + 1
        self._read_input()
        for node in self.graph.node:
            handler: Callable[[onnx.NodeProto], list[Value]] = getattr(self, f"_op_{node.op_type}")
            if node.op_type in CONSTANT_FOLDED and self._all_constant(node):
                handler = self._fold_constants
            try:
                results = handler(node)
            except (ValueError, KeyError, IndexError) as e:  # numpy's and onnx's complaints about this node
                raise OnnxImportError(f"{_node_label(node)}: {first_line(str(e))}") from e
            for name, value in zip(node.output, results, strict=False):
                if name:
                    self.values[name] = value
        out = self.values.get(self.graph.output[0].name)
        if not isinstance(out, Act):
            raise OnnxImportError(
                f"graph output '{self.graph.output[0].name}' is a constant, not computed from the input"
            )
        h, w, classes = out.edge.shape
        if self.classifier and ((h, w) != (1, 1) or classes < 2):
            raise OnnxImportError(f"graph output '{self.graph.output[0].name}' is {list(out.onnx_shape())}, not "
                                  f"logits: qtrain trains classifiers, whose output scores K >= 2 classes ([N, K] or "
                                  f"[N, K, 1, 1])")
        layers = reachable(self.layers, out.edge)
        assert self.input_edge is not None
        calibrate(layers, self.input_edge, self.input_flat, self.calibration)
        return self._emit(layers, out.edge)

    def _read_input(self) -> None:
        info = graph_input(self.graph)
        self.input_name = info.name
        self.model_batch = info.batch
        if len(info.sizes) == 4:
            _, c, h, w = info.sizes
            self.input_flat = False
        else:
            h, w, c = 1, 1, info.sizes[1]
            self.input_flat = True
        edge = self._edge(info.name, (h, w, c))
        self.input_edge = edge
        is_int = info.elem_type != TensorProto.FLOAT
        self.values[info.name] = Act(
            edge, is_int=is_int, unsigned=info.elem_type == TensorProto.UINT8, flat=self.input_flat
        )

    def _edge(self, name: str, shape: tuple[int, int, int], quant: QuantParamsAttr | None = None) -> Edge:
        return Edge(name, shape, quant)

    def _add_layer(self, layer: Layer) -> Edge:
        layer.output.producer = layer
        self.layers.append(layer)
        return layer.output

    # -- value access --------------------------------------------------------------------------------
    def _value(self, node: onnx.NodeProto, index: int) -> Value | None:
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.values:
            raise OnnxImportError(f"{_node_label(node)}: input '{name}' is not defined")
        return self.values[name]

    def _const(self, node: onnx.NodeProto, index: int, what: str, *, optional: bool = False) -> Const | None:
        value = self._value(node, index)
        if value is None:
            if optional:
                return None
            raise OnnxImportError(f"{_node_label(node)}: missing {what}")
        if not isinstance(value, Const):
            raise OnnxImportError(
                f"{_node_label(node)}: {what} '{node.input[index]}' must be a constant (initializer or Constant); "
                "qtrain parameters are fixed at import"
            )
        return value

    def _act(self, node: onnx.NodeProto, index: int, what: str = "input") -> Act:
        value = self._value(node, index)
        if isinstance(value, GroupedView):
            raise OnnxImportError(
                f"{_node_label(node)}: {what} '{node.input[index]}' is a [N, groups, -1] view of an activation; "
                "only InstanceNormalization (PyTorch's GroupNorm export) and the Reshape back take one"
            )
        if not isinstance(value, Act):
            raise OnnxImportError(
                f"{_node_label(node)}: {what} '{node.input[index] if index < len(node.input) else ''}' must be "
                "computed from the graph input"
            )
        return value

    def _float_act(self, node: onnx.NodeProto, index: int = 0) -> Act:
        act = self._act(node, index)
        if act.is_int:
            raise OnnxImportError(f"{_node_label(node)}: input '{node.input[index]}' holds quantized integers")
        return act

    def _image_act(self, node: onnx.NodeProto, act: Act) -> None:
        if act.flat and act.edge.shape[:2] != (1, 1):
            raise OnnxImportError(f"{_node_label(node)}: input is a flattened [N, C*H*W] tensor, expected NCHW")

    # -- quantization parameters ---------------------------------------------------------------------
    def _act_quant(
        self, node: onnx.NodeProto, scale_index: int, zp_index: int, *, default_unsigned: bool = True
    ) -> tuple[QuantParamsAttr, bool]:
        """Per-tensor (scale, zero point) inputs -> int8 quant and whether the ONNX integers are uint8."""
        scale = self._const(node, scale_index, "scale")
        assert scale is not None
        zp = self._const(node, zp_index, "zero point", optional=True)
        if scale.value.size != 1 or (zp is not None and zp.value.size != 1):
            raise OnnxImportError(
                f"{_node_label(node)}: activations must be quantized per tensor (one scale and zero point)"
            )
        if zp is None:
            zero, unsigned = 0, default_unsigned
        else:
            try:
                zeros, unsigned = _int8_shift(zp.value)
            except ValueError as e:
                raise OnnxImportError(f"{_node_label(node)}: {e}") from None
            zero = int(zeros.reshape(-1)[0])
        if scale.value.dtype != np.float32:
            raise OnnxImportError(f"{_node_label(node)}: scale must be float32, got {scale.value.dtype}")
        s = float(scale.value.reshape(-1)[0])
        if not (s > 0 and np.isfinite(s)):
            raise OnnxImportError(f"{_node_label(node)}: scale {s} must be positive and finite")
        return quant_params(s, zero - 128 if unsigned else zero), unsigned

    def _quantized_const(
        self, node: onnx.NodeProto, value: np.ndarray, scale_index: int, zp_index: int, axis: int
    ) -> QuantizedConst:
        scale = self._const(node, scale_index, "scale")
        zp = self._const(node, zp_index, "zero point", optional=True)
        assert scale is not None
        if scale.value.dtype != np.float32:
            raise OnnxImportError(f"{_node_label(node)}: scale must be float32, got {scale.value.dtype}")
        if value.dtype not in (np.int8, np.uint8, np.int32):
            raise OnnxImportError(
                f"{_node_label(node)}: quantized constants must be int8, uint8 or int32, got {value.dtype}"
            )
        s = scale.value.astype(np.float32).reshape(-1) if scale.value.ndim else scale.value.astype(np.float32)
        z = np.zeros(s.shape, np.int64) if zp is None else zp.value.astype(np.int64).reshape(s.shape)
        if s.size == 1:
            return QuantizedConst(value.astype(np.int64) - int(z.reshape(-1)[0]), s.reshape(()), None)
        if scale.value.ndim != 1:
            raise OnnxImportError(f"{_node_label(node)}: blocked quantization is not supported")
        axis = axis % value.ndim
        if value.shape[axis] != s.size:
            raise OnnxImportError(f"{_node_label(node)}: {s.size} scales for axis {axis} of size {value.shape[axis]}")
        shape = [1] * value.ndim
        shape[axis] = s.size
        return QuantizedConst(value.astype(np.int64) - z.reshape(shape), s, axis)

    def _check_q_attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        attrs = _attrs(node)
        if attrs.get("block_size", 0):
            raise OnnxImportError(f"{_node_label(node)}: blocked quantization (block_size) is not supported")
        if attrs.get("precision", 0) not in (0, TensorProto.FLOAT):
            raise OnnxImportError(f"{_node_label(node)}: precision attribute is not supported")
        dtype = attrs.get("output_dtype", 0)
        if dtype not in (0, TensorProto.INT8, TensorProto.UINT8):
            raise OnnxImportError(
                f"{_node_label(node)}: output_dtype {TensorProto.DataType.Name(dtype)} is not supported (int8/uint8)"
            )
        return attrs

    def _bind_quant(self, node: onnx.NodeProto, edge: Edge, quant: QuantParamsAttr, what: str) -> None:
        """The integers of `edge` are read with `quant`: fix it, or check it matches."""
        if edge.quant is None:
            edge.quant = quant
        elif edge.quant != quant:
            raise OnnxImportError(
                f"{_node_label(node)}: reads {what} with {quant}, but it was quantized with {edge.quant}"
            )

    def _requantized(self, act: Act, quant: QuantParamsAttr, label: str) -> Edge:
        """`act.edge` expressed with `quant` (the edge itself when it has no quantization yet)."""
        edge = act.edge
        if edge.quant is None:
            edge.quant = quant
            return edge
        if edge.quant == quant:
            return edge
        out = self._edge(f"{edge.name}.requant", edge.shape, quant)
        return self._add_layer(RequantLayer(out, edge, source=label))

    # -- folding into producers ------------------------------------------------------------------------
    ALIAS_OPS = ("QuantizeLinear", "DequantizeLinear", "Identity", "Dropout", "Flatten", "Reshape")

    def _exclusive(self, name: str, producer: Layer) -> bool:
        """True when the tensor `name` reaches back to `producer`'s output only through single-use aliases
        (Q/DQ, Identity, Flatten, ...), so rewriting the producer changes nothing else."""
        while True:
            if self.consumers.get(name, 0) != 1:  # graph outputs count as a consumer
                return False
            node = self.producer_node.get(name)
            if node is None:
                return False
            if node.op_type not in self.ALIAS_OPS:
                value = self.values.get(name)
                if isinstance(value, GroupedView):  # PyTorch's GroupNorm: InstanceNormalization, Reshape back
                    value = value.act
                return isinstance(value, Act) and value.edge.producer is producer
            name = node.input[0]

    def _foldable(self, name: str, act: Act, kinds: tuple[type, ...]) -> Layer | None:
        """The producer of `act` (the value of ONNX tensor `name`) if it is one of `kinds` and `name`
        is its exclusive use; its output quantization is then dropped (the fold changes the values)."""
        producer = act.edge.producer
        if isinstance(producer, kinds) and self._exclusive(name, producer):
            act.edge.quant = None  # the intermediate quantization (if any) disappears with the fold
            return producer
        return None

    # -- op handlers ---------------------------------------------------------------------------------
    def _op_Constant(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        if "value" in attrs:
            return [Const(numpy_helper.to_array(attrs["value"]))]
        for key, dtype in (
            ("value_float", np.float32),
            ("value_floats", np.float32),
            ("value_int", np.int64),
            ("value_ints", np.int64),
        ):
            if key in attrs:
                return [Const(np.array(attrs[key], dtype=dtype))]
        raise OnnxImportError(f"{_node_label(node)}: only tensor and numeric Constant values are supported")

    def _op_Identity(self, node: onnx.NodeProto) -> list[Value]:
        value = self._value(node, 0)
        assert value is not None
        return [value]

    def _op_Dropout(self, node: onnx.NodeProto) -> list[Value]:
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise OnnxImportError(f"{_node_label(node)}: the dropout mask output is not supported")
        return self._op_Identity(node)

    def _op_QuantizeLinear(self, node: onnx.NodeProto) -> list[Value]:
        attrs = self._check_q_attrs(node)
        default_unsigned = attrs.get("output_dtype", 0) != TensorProto.INT8
        value = self._value(node, 0)
        if isinstance(value, Const):
            scale = self._const(node, 1, "scale")
            zp = self._const(node, 2, "zero point", optional=True)
            assert scale is not None
            axis = attrs.get("axis", 1) % max(value.value.ndim, 1)
            shape = [1] * value.value.ndim
            s = scale.value.astype(np.float32)
            if s.size > 1:
                shape[axis] = s.size
                s = s.reshape(shape)
            dtype = (
                np.uint8
                if (zp is None and default_unsigned) or (zp is not None and zp.value.dtype == np.uint8)
                else np.int8
            )
            z = np.zeros((), np.int64) if zp is None else zp.value.astype(np.int64).reshape(s.shape)
            info = np.iinfo(dtype)
            q = np.clip(np.rint(value.value.astype(np.float32) / s) + z, info.min, info.max).astype(dtype)
            return [Const(q)]
        act = self._float_act(node)
        quant, unsigned = self._act_quant(node, 1, 2, default_unsigned=default_unsigned)
        edge = self._requantized(act, quant, _node_label(node))
        return [Act(edge, is_int=True, unsigned=unsigned, flat=act.flat, groups=act.groups, transposed=act.transposed)]

    def _op_DequantizeLinear(self, node: onnx.NodeProto) -> list[Value]:
        attrs = self._check_q_attrs(node)
        value = self._value(node, 0)
        if isinstance(value, Const):
            exact = self._quantized_const(node, value.value, 1, 2, attrs.get("axis", 1))
            return [Const(_dequantize(exact), exact)]
        act = self._act(node, 0)
        if not act.is_int:
            raise OnnxImportError(f"{_node_label(node)}: input '{node.input[0]}' is not quantized")
        quant, _ = self._act_quant(node, 1, 2, default_unsigned=act.unsigned)
        self._bind_quant(node, act.edge, quant, f"'{node.input[0]}'")
        return [Act(act.edge, flat=act.flat, groups=act.groups, transposed=act.transposed)]

    # conv-like ops
    def _conv_geometry(
        self, node: onnx.NodeProto, edge: Edge, kernel: tuple[int, int]
    ) -> tuple[tuple[int, int], tuple[int, int, int, int], int]:
        attrs = _attrs(node)
        strides = tuple(attrs.get("strides", [1, 1]))
        dilations = tuple(attrs.get("dilations", [1, 1]))
        if len(strides) != 2 or len(dilations) != 2:
            raise OnnxImportError(f"{_node_label(node)}: only 2-D convolutions are supported")
        if dilations != (1, 1):
            raise OnnxImportError(f"{_node_label(node)}: dilations {list(dilations)} are not supported (only 1)")
        if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != tuple(kernel):
            raise OnnxImportError(f"{_node_label(node)}: kernel_shape {list(attrs['kernel_shape'])} contradicts the "
                                  f"weight's {list(kernel)}")
        auto_pad = _auto_pad(node, attrs)
        h, w, _ = edge.shape
        if auto_pad in ("NOTSET", "VALID"):
            pads = tuple(attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else (0, 0, 0, 0)
            if len(pads) != 4:
                raise OnnxImportError(f"{_node_label(node)}: pads must have 4 values")
            pt, pl, pb, pr = pads[0], pads[1], pads[2], pads[3]
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pt, pb = _same_pads(h, kernel[0], strides[0], auto_pad)
            pl, pr = _same_pads(w, kernel[1], strides[1], auto_pad)
        else:
            raise OnnxImportError(f"{_node_label(node)}: auto_pad {auto_pad} is not supported")
        if min(strides) < 1 or min(pt, pl, pb, pr) < 0:
            raise OnnxImportError(f"{_node_label(node)}: strides must be >= 1 and pads >= 0")
        if h + pt + pb < kernel[0] or w + pl + pr < kernel[1]:
            raise OnnxImportError(f"{_node_label(node)}: kernel {kernel[0]}x{kernel[1]} larger than the padded input")
        return (int(strides[0]), int(strides[1])), (int(pt), int(pl), int(pb), int(pr)), int(attrs.get("group", 1))

    def _make_conv(
        self,
        node: onnx.NodeProto,
        act: Act,
        weight: Const | QuantizedConst,
        bias: Const | QuantizedConst | None,
        *,
        strides: tuple[int, int],
        pads: tuple[int, int, int, int],
        groups: int,
        output_quant: QuantParamsAttr | None,
        bias_scale: np.ndarray | None = None,
    ) -> Edge:
        """A ConvLayer from OIHW weights (real `Const`, or the model's integers) and an optional bias."""
        edge = act.edge
        h, w, c = edge.shape
        if isinstance(weight, Const):
            w_real = weight.value.astype(np.float64)
            exact = weight.exact
        else:
            exact = weight
            w_real = (
                weight.centered * (weight.scale if weight.axis is None else weight.scale.reshape(-1, 1, 1, 1))
            ).astype(np.float64)
        if w_real.ndim != 4:
            raise OnnxImportError(f"{_node_label(node)}: weight must be 4-D OIHW, got shape {list(w_real.shape)}")
        if not np.all(np.isfinite(w_real)):
            raise OnnxImportError(f"{_node_label(node)}: the weight holds NaN or infinite values")
        o, cg, kh, kw = w_real.shape
        if groups < 1 or c % groups or o % groups or cg != c // groups:
            raise OnnxImportError(
                f"{_node_label(node)}: weight {list(w_real.shape)} with group={groups} does not fit {c} input channels"
            )
        w_int = w_scale = None
        if exact is not None and exact.axis in (None, 0):
            scale = np.broadcast_to(exact.scale.astype(np.float32).reshape(-1), (o,)).copy()
            centered = exact.centered
            if np.abs(centered).max(initial=0) > 127:
                rescaled = _common_divisor_rescale(centered, scale)
                if rescaled is None:
                    warnings.warn(
                        f"{_node_label(node)}: weights do not fit int8 after removing the zero point; "
                        "re-quantized symmetric per channel (not bit-exact)",
                        OnnxImportWarning,
                        stacklevel=2,
                    )
                else:
                    centered, scale = rescaled
            if np.abs(centered).max(initial=0) <= 127 and np.all(scale > 0):
                w_int, w_scale = centered.astype(np.int64), scale
        elif exact is not None:
            warnings.warn(
                f"{_node_label(node)}: weights quantized along axis {exact.axis}, not per output channel; "
                "re-quantized per output channel (not bit-exact)",
                OnnxImportWarning,
                stacklevel=2,
            )
        b_real = np.zeros(o)
        b_int = b_scale = None
        if bias is not None:
            if isinstance(bias, Const):
                b_real = np.broadcast_to(bias.value.astype(np.float64).reshape(-1), (o,)).copy()
                if bias.exact is not None and bias.value.size == o:
                    b_int = bias.exact.centered.reshape(-1).astype(np.int64)
                    b_scale = np.broadcast_to(bias.exact.scale.astype(np.float64).reshape(-1), (o,)).copy()
            else:
                assert bias_scale is not None
                b_int = np.broadcast_to(bias.centered.reshape(-1), (o,)).astype(np.int64)
                b_scale = bias_scale
                b_real = b_int * b_scale
            if b_real.shape != (o,):
                raise OnnxImportError(f"{_node_label(node)}: bias must have {o} values")
            if not np.all(np.isfinite(b_real)):
                raise OnnxImportError(f"{_node_label(node)}: the bias holds NaN or infinite values")
        out_h = (h + pads[0] + pads[2] - kh) // strides[0] + 1
        out_w = (w + pads[1] + pads[3] - kw) // strides[1] + 1
        out = self._edge(node.output[0], (out_h, out_w, o), output_quant)
        layer = ConvLayer(
            out,
            edge,
            w_real,
            b_real,
            strides,
            pads,
            groups,
            w_int=w_int,
            w_scale=w_scale,
            b_int=b_int,
            b_scale=b_scale,
            source=_node_label(node),
        )
        return self._add_layer(layer)

    def _op_Conv(self, node: onnx.NodeProto) -> list[Value]:
        act = self._float_act(node)
        self._image_act(node, act)
        weight = self._const(node, 1, "weight")
        assert weight is not None
        bias = self._const(node, 2, "bias", optional=True)
        if weight.value.ndim != 4:
            raise OnnxImportError(f"{_node_label(node)}: only 2-D convolutions are supported")
        strides, pads, groups = self._conv_geometry(node, act.edge, weight.value.shape[2:])
        edge = self._make_conv(node, act, weight, bias, strides=strides, pads=pads, groups=groups, output_quant=None)
        return [Act(edge)]

    def _op_QLinearConv(self, node: onnx.NodeProto) -> list[Value]:
        act = self._act(node, 0)
        self._image_act(node, act)
        x_quant, _ = self._act_quant(node, 1, 2, default_unsigned=act.unsigned)
        self._bind_quant(node, act.edge, x_quant, f"'{node.input[0]}'")
        w = self._const(node, 3, "weight")
        assert w is not None
        if w.value.ndim != 4:
            raise OnnxImportError(f"{_node_label(node)}: only 2-D convolutions are supported")
        weight = self._quantized_const(node, w.value, 4, 5, 0)
        y_quant, unsigned = self._act_quant(node, 6, 7)
        bias_const = self._const(node, 8, "bias", optional=True)
        bias = None
        bias_scale = None
        if bias_const is not None:
            if bias_const.value.dtype != np.int32:
                raise OnnxImportError(f"{_node_label(node)}: bias must be int32")
            bias = QuantizedConst(bias_const.value.astype(np.int64), np.float32(1), None)
            o = w.value.shape[0]
            bias_scale = np.float64(x_quant.scale) * np.broadcast_to(weight.scale.astype(np.float64).reshape(-1), (o,))
        strides, pads, groups = self._conv_geometry(node, act.edge, w.value.shape[2:])
        edge = self._make_conv(
            node,
            act,
            weight,
            bias,
            strides=strides,
            pads=pads,
            groups=groups,
            output_quant=y_quant,
            bias_scale=bias_scale,
        )
        return [Act(edge, is_int=True, unsigned=unsigned)]

    def _fc_source(self, node: onnx.NodeProto, act: Act) -> tuple[int, int, int]:
        """The (C, H, W) a `[1, F]` operand flattens (F = C*H*W)."""
        if not act.flat and act.edge.shape[:2] != (1, 1):
            raise OnnxImportError(f"{_node_label(node)}: input must be a [N, F] matrix (flatten the NCHW tensor first)")
        h, w, c = act.edge.shape
        return c, h, w

    def _fc_weight(
        self, node: onnx.NodeProto, act: Act, b: Const, trans_b: bool, alpha: float
    ) -> tuple[Const | QuantizedConst, int]:
        """[F, K] (or [K, F] with trans_b) weights -> OIHW `[K, C, H, W]` matching the NHWC source."""
        c, h, w = self._fc_source(node, act)
        if b.value.ndim != 2:
            raise OnnxImportError(
                f"{_node_label(node)}: weight must be a 2-D constant, got shape {list(b.value.shape)}"
            )
        mat = b.value if trans_b else b.value.T  # [K, F]
        if mat.shape[1] != c * h * w:
            raise OnnxImportError(f"{_node_label(node)}: weight has {mat.shape[1]} inputs, the operand has {c * h * w}")
        k = mat.shape[0]
        real = (mat.astype(np.float64) * alpha).reshape(k, c, h, w)
        exact = None
        if b.exact is not None:
            out_axis = 0 if trans_b else 1
            if b.exact.axis in (None, out_axis):
                centered = b.exact.centered if trans_b else b.exact.centered.T
                scale = b.exact.scale.astype(np.float64) * abs(alpha)
                exact = QuantizedConst(
                    (centered * (1 if alpha >= 0 else -1)).reshape(k, c, h, w),
                    scale.astype(np.float32),
                    None if b.exact.axis is None else 0,
                )
        return Const(real, exact), k

    def _fc_bias(self, node: onnx.NodeProto, bias: Const | None, k: int, beta: float) -> Const | None:
        if bias is None or beta == 0:
            return None
        if bias.value.size not in (1, k) or (bias.value.ndim == 2 and bias.value.shape[0] != 1):
            raise OnnxImportError(
                f"{_node_label(node)}: bias of shape {list(bias.value.shape)}; only a per-output vector [K] or [1, K] "
                "(or a scalar) is supported"
            )
        real = np.broadcast_to(bias.value.astype(np.float64).reshape(-1) * beta, (k,)).copy()
        exact = bias.exact if beta == 1 and bias.value.size == k else None
        return Const(real, exact)

    def _op_Gemm(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        if attrs.get("transA", 0):
            raise OnnxImportError(f"{_node_label(node)}: transA=1 is not supported (the input must be [N, F])")
        act = self._float_act(node)
        b = self._const(node, 1, "weight")
        assert b is not None
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        weight, k = self._fc_weight(node, act, b, bool(attrs.get("transB", 0)), alpha)
        bias = self._fc_bias(node, self._const(node, 2, "bias", optional=True), k, beta)
        edge = self._make_conv(node, act, weight, bias, strides=(1, 1), pads=(0, 0, 0, 0), groups=1, output_quant=None)
        return [Act(edge, flat=True)]

    def _op_MatMul(self, node: onnx.NodeProto) -> list[Value]:
        act = self._float_act(node)
        b = self._const(node, 1, "weight")
        assert b is not None
        weight, _ = self._fc_weight(node, act, b, False, 1.0)
        edge = self._make_conv(node, act, weight, None, strides=(1, 1), pads=(0, 0, 0, 0), groups=1, output_quant=None)
        return [Act(edge, flat=True)]

    def _quantized_fc(
        self,
        node: onnx.NodeProto,
        a_index: int,
        b_index: int,
        trans_b: bool,
        bias: Const | None,
        y_quant: QuantParamsAttr | None,
        unsigned: bool,
    ) -> list[Value]:
        act = self._act(node, a_index)
        x_quant, _ = self._act_quant(node, a_index + 1, a_index + 2, default_unsigned=act.unsigned)
        self._bind_quant(node, act.edge, x_quant, f"'{node.input[a_index]}'")
        b = self._const(node, b_index, "weight")
        assert b is not None
        if b.value.ndim != 2:
            raise OnnxImportError(f"{_node_label(node)}: weight must be a 2-D constant")
        out_axis = 0 if trans_b else 1
        exact = self._quantized_const(node, b.value, b_index + 1, b_index + 2, out_axis)
        if exact.axis is not None and exact.axis != out_axis:
            raise OnnxImportError(f"{_node_label(node)}: weights must be quantized per output column")
        b_const = Const(
            exact.centered
            * (exact.scale if exact.axis is None else exact.scale.reshape([-1, 1] if trans_b else [1, -1])),
            exact,
        )
        weight, k = self._fc_weight(node, act, b_const, trans_b, 1.0)
        bias_q = None
        bias_scale = None
        if bias is not None:
            if bias.value.dtype != np.int32 or bias.value.size != k:
                raise OnnxImportError(f"{_node_label(node)}: bias must be int32 with one value per output")
            bias_q = QuantizedConst(bias.value.reshape(-1).astype(np.int64), np.float32(1), None)
            bias_scale = np.float64(x_quant.scale) * np.broadcast_to(exact.scale.astype(np.float64).reshape(-1), (k,))
        edge = self._make_conv(
            node,
            act,
            weight,
            bias_q,
            strides=(1, 1),
            pads=(0, 0, 0, 0),
            groups=1,
            output_quant=y_quant,
            bias_scale=bias_scale,
        )
        return [Act(edge, is_int=y_quant is not None, unsigned=unsigned, flat=True)]

    def _op_QLinearMatMul(self, node: onnx.NodeProto) -> list[Value]:
        y_quant, unsigned = self._act_quant(node, 6, 7)
        return self._quantized_fc(node, 0, 3, False, None, y_quant, unsigned)

    def _op_QGemm(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        if attrs.get("transA", 0) or float(attrs.get("alpha", 1.0)) != 1.0:
            raise OnnxImportError(f"{_node_label(node)}: only transA=0 and alpha=1 are supported")
        y_quant, unsigned = None, False
        if len(node.input) > 7 and node.input[7]:
            y_quant, unsigned = self._act_quant(node, 7, 8)
        bias = self._const(node, 6, "bias", optional=True)
        return self._quantized_fc(node, 0, 3, bool(attrs.get("transB", 0)), bias, y_quant, unsigned)

    # normalization and activations
    def _op_BatchNormalization(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        if attrs.get("training_mode", 0):
            raise OnnxImportError(f"{_node_label(node)}: training_mode=1 is not supported")
        if any(name and self.consumers.get(name) for name in node.output[1:]):
            raise OnnxImportError(f"{_node_label(node)}: running statistics outputs are not supported")
        act = self._float_act(node)
        consts = [self._const(node, i, what) for i, what in enumerate(("scale", "B", "mean", "var"), start=1)]
        gamma, beta, mean, var = (np.asarray(cst.value, np.float64).reshape(-1) for cst in consts if cst is not None)
        conv = self._foldable(node.input[0], act, (ConvLayer,))
        if not isinstance(conv, ConvLayer):
            raise OnnxImportError(
                f"{_node_label(node)}: BatchNormalization must directly follow a Conv whose output it alone uses "
                "(it is folded into that conv's weights)"
            )
        o = conv.w_real.shape[0]
        if not gamma.size == beta.size == mean.size == var.size == o:
            raise OnnxImportError(f"{_node_label(node)}: scale, B, mean and var must have {o} values (the conv's "
                                  f"channels), got {gamma.size}, {beta.size}, {mean.size}, {var.size}")
        epsilon = float(attrs.get("epsilon", 1e-5))
        if not all(np.all(np.isfinite(v)) for v in (gamma, beta, mean, var)) or not math.isfinite(epsilon):
            raise OnnxImportError(f"{_node_label(node)}: NaN or infinite statistics or epsilon")
        if np.any(var + epsilon <= 0):
            raise OnnxImportError(f"{_node_label(node)}: var + epsilon must be positive")
        factor = gamma / np.sqrt(var + epsilon)
        conv.scale_channels(factor)
        conv.shift_bias(beta - mean * factor)
        return [Act(act.edge, flat=act.flat)]

    def _activation(self, node: onnx.NodeProto, lo: float, hi: float) -> list[Value]:
        act = self._float_act(node)
        producer = self._foldable(node.input[0], act, (ConvLayer, AddLayer, RequantLayer, GroupNormLayer))
        if isinstance(producer, ConvLayer | AddLayer | RequantLayer | GroupNormLayer):
            producer.act = (max(producer.act[0], lo), min(producer.act[1], hi))
            return [Act(act.edge, flat=act.flat)]
        out = self._edge(node.output[0], act.edge.shape)
        edge = self._add_layer(RequantLayer(out, act.edge, (lo, hi), source=_node_label(node)))
        return [Act(edge, flat=act.flat)]

    def _op_Relu(self, node: onnx.NodeProto) -> list[Value]:
        return self._activation(node, 0.0, math.inf)

    def _op_Clip(self, node: onnx.NodeProto) -> list[Value]:
        if self.opset < 11:
            attrs = _attrs(node)
            lo, hi = float(attrs.get("min", -math.inf)), float(attrs.get("max", math.inf))
        else:
            lo_c = self._const(node, 1, "min", optional=True)
            hi_c = self._const(node, 2, "max", optional=True)
            for bound, what in ((lo_c, "min"), (hi_c, "max")):
                if bound is not None and bound.value.size != 1:
                    raise OnnxImportError(f"{_node_label(node)}: {what} must be a scalar, got shape "
                                          f"{list(bound.value.shape)}")
            lo = -math.inf if lo_c is None else float(lo_c.value.reshape(-1)[0])
            hi = math.inf if hi_c is None else float(hi_c.value.reshape(-1)[0])
            for value, what, given in ((lo, "min", lo_c), (hi, "max", hi_c)):
                if given is not None and not math.isfinite(value):
                    raise OnnxImportError(f"{_node_label(node)}: {what} is {value}; a Clip bound must be a finite "
                                          f"number (leave it out for no bound)")
        if math.isnan(lo) or math.isnan(hi):
            raise OnnxImportError(f"{_node_label(node)}: a Clip bound is NaN")
        if lo > hi:
            raise OnnxImportError(f"{_node_label(node)}: min {lo} > max {hi}")
        return self._activation(node, lo, hi)

    # add
    def _per_channel_const(self, node: onnx.NodeProto, act: Act, real: np.ndarray, what: str) -> np.ndarray:
        """A constant operand of an element-wise op on `act` as one value per channel ([C] real)."""
        o = act.edge.shape[2]
        if real.shape not in {(o,), (1, o), (o, 1, 1), (1, o, 1, 1), (), (1,)}:
            raise OnnxImportError(f"{_node_label(node)}: {what} must hold one value per channel, got shape "
                                  f"{list(real.shape)}")
        if not act.flat and real.shape in ((o,), (1, o)) and act.edge.shape[:2] != (1, 1):
            raise OnnxImportError(f"{_node_label(node)}: constant {list(real.shape)} broadcasts along W, not channels")
        return np.broadcast_to(real.reshape(-1), (o,)).astype(np.float64)

    def _fold_constant_add(self, node: onnx.NodeProto, name: str, act: Act, real: np.ndarray) -> list[Value]:
        """`act` (ONNX tensor `name`) + a per-channel constant, folded into the producing conv's bias (or a
        GroupNorm's beta)."""
        producer = self._foldable(name, act, (ConvLayer, GroupNormLayer))
        if not isinstance(producer, ConvLayer | GroupNormLayer):
            raise OnnxImportError(
                f"{_node_label(node)}: adding a constant is only supported right after a Conv/Gemm/MatMul (or a "
                "normalization) whose output it alone uses, with one value per channel (folded into the bias); got "
                f"shape {list(real.shape)}"
            )
        delta = self._per_channel_const(node, act, real, "the constant")
        if isinstance(producer, GroupNormLayer):
            producer.beta = producer.beta + delta
        else:
            producer.shift_bias(delta)
        return [Act(act.edge, flat=act.flat)]

    def _fold_norm_mul(self, node: onnx.NodeProto, norm: GroupNormLayer, act: Act, real: np.ndarray) -> list[Value]:
        """act x a per-channel constant, folded into the GroupNorm producing `act` (its gamma and beta): the affine
        part of PyTorch's GroupNorm export."""
        factor = self._per_channel_const(node, act, real, "the constant")
        norm.gamma, norm.beta = norm.gamma * factor, norm.beta * factor
        return [Act(act.edge, flat=act.flat)]

    # normalization
    def _group_norm(self, node: onnx.NodeProto, act: Act, groups: int, gamma: np.ndarray, beta: np.ndarray,
                    epsilon: float) -> Act:
        self._image_act(node, act)
        c = act.edge.shape[2]
        if groups < 1 or c % groups:
            raise OnnxImportError(f"{_node_label(node)}: {groups} groups do not divide {c} channels")
        out = self._edge(node.output[0], act.edge.shape)
        layer = GroupNormLayer(out, act.edge, groups, epsilon, gamma, beta, source=_node_label(node))
        return Act(self._add_layer(layer))

    def _norm_params(self, node: onnx.NodeProto, sizes: tuple[int, ...], repeat: int) -> tuple[np.ndarray, np.ndarray]:
        """The scale and bias inputs (1 and 2), `sizes` values each, repeated `repeat` times (per channel)."""
        params = []
        for index, what in ((1, "scale"), (2, "bias")):
            cst = self._const(node, index, what)
            assert cst is not None
            value = np.asarray(cst.value, np.float64).reshape(-1)
            if value.size not in sizes:
                raise OnnxImportError(f"{_node_label(node)}: {what} has {value.size} values, expected {sizes[0]}")
            params.append(np.repeat(value, repeat) if value.size == sizes[0] and repeat > 1 else value)
        return params[0], params[1]

    def _op_GroupNormalization(self, node: onnx.NodeProto) -> list[Value]:
        """Opset 18-20: scale and bias per group; opset 21: per channel."""
        act = self._float_act(node)
        attrs = _attrs(node)
        groups = int(attrs["num_groups"])
        c = act.edge.shape[2]
        if groups < 1 or c % groups:
            raise OnnxImportError(f"{_node_label(node)}: num_groups = {groups} does not divide {c} channels")
        per_group = self.opset < 21
        gamma, beta = self._norm_params(node, (groups,) if per_group else (c,), c // groups if per_group else 1)
        return [self._group_norm(node, act, groups, gamma, beta, float(attrs.get("epsilon", 1e-5)))]

    def _op_InstanceNormalization(self, node: onnx.NodeProto) -> list[Value]:
        """Per channel (a GroupNorm of C groups), or per group of a `[N, G, -1]` view (PyTorch's GroupNorm)."""
        value = self._value(node, 0)
        eps = float(_attrs(node).get("epsilon", 1e-5))
        if isinstance(value, GroupedView):
            act, groups = value.act, value.groups
            c = act.edge.shape[2]
            gamma, beta = self._norm_params(node, (groups,), c // groups)
            return [GroupedView(self._group_norm(node, act, groups, gamma, beta, eps), groups)]
        act = self._float_act(node)
        c = act.edge.shape[2]
        gamma, beta = self._norm_params(node, (c,), 1)
        return [self._group_norm(node, act, c, gamma, beta, eps)]

    def _op_Add(self, node: onnx.NodeProto) -> list[Value]:
        a, b = self._value(node, 0), self._value(node, 1)
        for act_index, act, cst in ((0, a, b), (1, b, a)):
            if isinstance(act, Act) and isinstance(cst, Const):
                self._float_act(node, act_index)
                return self._fold_constant_add(node, node.input[act_index], act, cst.value.astype(np.float64))
        lhs, rhs = self._float_act(node, 0), self._float_act(node, 1)
        return [Act(self._add(node, lhs, rhs, None), flat=lhs.flat)]

    def _add(self, node: onnx.NodeProto, lhs: Act, rhs: Act, quant: QuantParamsAttr | None) -> Edge:
        if lhs.edge.shape != rhs.edge.shape or lhs.onnx_shape() != rhs.onnx_shape():
            raise OnnxImportError(
                f"{_node_label(node)}: operands of shapes {list(lhs.onnx_shape())} and {list(rhs.onnx_shape())}; "
                "only same-shape adds are supported (no broadcasting)"
            )
        out = self._edge(node.output[0], lhs.edge.shape, quant)
        return self._add_layer(AddLayer(out, lhs.edge, rhs.edge))

    def _op_QLinearAdd(self, node: onnx.NodeProto) -> list[Value]:
        a, b = self._value(node, 0), self._value(node, 3)
        y_quant, unsigned = self._act_quant(node, 6, 7)
        if isinstance(a, Const) or isinstance(b, Const):
            act_index, const_index = (3, 0) if isinstance(a, Const) else (0, 3)
            act = self._act(node, act_index)
            cst = self._const(node, const_index, "operand")
            assert cst is not None
            x_quant, _ = self._act_quant(node, act_index + 1, act_index + 2, default_unsigned=act.unsigned)
            self._bind_quant(node, act.edge, x_quant, f"'{node.input[act_index]}'")
            exact = self._quantized_const(node, cst.value, const_index + 1, const_index + 2, 1)
            self._fold_constant_add(node, node.input[act_index], act, _dequantize(exact))
            act.edge.quant = y_quant
            warnings.warn(
                f"{_node_label(node)}: constant operand folded into the producer's bias (not bit-exact)",
                OnnxImportWarning,
                stacklevel=2,
            )
            return [Act(act.edge, is_int=True, unsigned=unsigned, flat=act.flat)]
        lhs, rhs = self._act(node, 0), self._act(node, 3)
        for act, index in ((lhs, 0), (rhs, 3)):
            quant, _ = self._act_quant(node, index + 1, index + 2, default_unsigned=act.unsigned)
            self._bind_quant(node, act.edge, quant, f"'{node.input[index]}'")
        return [Act(self._add(node, lhs, rhs, y_quant), is_int=True, unsigned=unsigned, flat=lhs.flat)]

    # pooling
    def _pool(
        self,
        node: onnx.NodeProto,
        act: Act,
        kernel: tuple[int, int],
        strides: tuple[int, int],
        quant: QuantParamsAttr | None,
    ) -> Edge:
        self._image_act(node, act)
        h, w, c = act.edge.shape
        out = self._edge(
            node.output[0], ((h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1, c), quant
        )
        return self._add_layer(PoolLayer(out, act.edge, kernel, strides))

    def _pool_geometry(self, node: onnx.NodeProto, edge: Edge) -> tuple[tuple[int, int], tuple[int, int]]:
        attrs = _attrs(node)
        if attrs.get("channels_last", 0):
            raise OnnxImportError(f"{_node_label(node)}: channels_last=1 is not supported")
        kernel = tuple(attrs.get("kernel_shape", []))
        if len(kernel) != 2:
            raise OnnxImportError(f"{_node_label(node)}: only 2-D pooling is supported")
        strides = tuple(attrs.get("strides", [1, 1]))
        if tuple(attrs.get("dilations", [1, 1])) != (1, 1):
            raise OnnxImportError(f"{_node_label(node)}: dilations are not supported")
        auto_pad = _auto_pad(node, attrs)
        h, w, _ = edge.shape
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = (*_same_pads(h, kernel[0], strides[0], auto_pad), *_same_pads(w, kernel[1], strides[1], auto_pad))
        elif auto_pad in ("NOTSET", "VALID"):
            pads = tuple(attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else (0, 0, 0, 0)
        else:
            raise OnnxImportError(f"{_node_label(node)}: auto_pad {auto_pad} is not supported")
        if any(pads):
            raise OnnxImportError(
                f"{_node_label(node)}: padded average pooling is not supported (qtrain.avgpool has "
                f"no padding), pads {list(pads)}"
            )
        if kernel[0] > h or kernel[1] > w:
            raise OnnxImportError(f"{_node_label(node)}: kernel {list(kernel)} larger than the input {h}x{w}")
        if attrs.get("ceil_mode", 0) and any(
            (size - k) % s for size, k, s in zip((h, w), kernel, strides, strict=True)
        ):
            raise OnnxImportError(f"{_node_label(node)}: ceil_mode=1 with a partial last window is not supported")
        return (int(kernel[0]), int(kernel[1])), (int(strides[0]), int(strides[1]))

    def _op_GlobalAveragePool(self, node: onnx.NodeProto) -> list[Value]:
        act = self._float_act(node)
        h, w, _ = act.edge.shape
        return [Act(self._pool(node, act, (h, w), (1, 1), None))]

    def _op_AveragePool(self, node: onnx.NodeProto) -> list[Value]:
        act = self._float_act(node)
        kernel, strides = self._pool_geometry(node, act.edge)
        return [Act(self._pool(node, act, kernel, strides, None))]

    def _quantized_pool(self, node: onnx.NodeProto, kernel: tuple[int, int] | None) -> list[Value]:
        act = self._act(node, 0)
        x_quant, _ = self._act_quant(node, 1, 2, default_unsigned=act.unsigned)
        self._bind_quant(node, act.edge, x_quant, f"'{node.input[0]}'")
        y_quant, unsigned = self._act_quant(node, 3, 4)
        if kernel is None:
            k, s = self._pool_geometry(node, act.edge)
        else:
            k, s = kernel, (1, 1)
        return [Act(self._pool(node, act, k, s, y_quant), is_int=True, unsigned=unsigned)]

    def _op_QLinearGlobalAveragePool(self, node: onnx.NodeProto) -> list[Value]:
        if _attrs(node).get("channels_last", 0):
            raise OnnxImportError(f"{_node_label(node)}: channels_last=1 is not supported")
        act = self._act(node, 0)
        return self._quantized_pool(node, act.edge.shape[:2])

    def _op_QLinearAveragePool(self, node: onnx.NodeProto) -> list[Value]:
        return self._quantized_pool(node, None)

    # shape arithmetic (what exporters write around a chunk or a view): folded at import
    def _all_constant(self, node: onnx.NodeProto) -> bool:
        return all(isinstance(self._value(node, i), Const) for i, name in enumerate(node.input) if name)

    def _fold_constants(self, node: onnx.NodeProto) -> list[Value]:
        """A node of constants, evaluated by onnx's reference implementation at the model's opset."""
        from onnx.reference import ReferenceEvaluator

        names = [name for name in node.input if name]
        feeds = {name: self.values[name].value for name in names}  # type: ignore[union-attr]
        graph = helper.make_graph(
            [node], "fold", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(feeds[n].dtype), None)
                             for n in names],
            [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as e:  # the reference implementation's complaints about this node
            raise OnnxImportError(f"{_node_label(node)}: cannot fold constants: {first_line(str(e))}") from e
        return [Const(np.asarray(r)) for r in results]

    def _op_Shape(self, node: onnx.NodeProto) -> list[Value]:
        act = self._act(node, 0)
        attrs = _attrs(node)
        shape = np.array(act.onnx_shape(), dtype=np.int64)
        shape[0] = self.model_batch or 1
        return [Const(shape[int(attrs.get("start", 0)):attrs.get("end", None)])]

    def _constant_only(self, node: onnx.NodeProto) -> list[Value]:
        raise OnnxImportError(f"{_node_label(node)}: supported on constants only (shape arithmetic), but an input is "
                              "computed from the graph input")

    _op_Gather = _op_Div = _op_Sub = _op_Cast = _op_Unsqueeze = _op_Squeeze = _op_Range = _constant_only

    # table activations (qtrain.lut)
    def _table_activation(self, node: onnx.NodeProto, function: str, params: tuple[float, ...] = ()) -> list[Value]:
        act = self._float_act(node)
        if act.groups is not None:
            raise OnnxImportError(f"{_node_label(node)}: input is a 5-D channel view")
        out = self._edge(node.output[0], act.edge.shape)
        edge = self._add_layer(LutLayer(out, act.edge, function, params, source=_node_label(node)))
        return [Act(edge, flat=act.flat)]

    def _op_HardSwish(self, node: onnx.NodeProto) -> list[Value]:
        return self._table_activation(node, "hardswish")

    def _op_HardSigmoid(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        return self._table_activation(node, "hardsigmoid",
                                      (float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))))

    def _op_Sigmoid(self, node: onnx.NodeProto) -> list[Value]:
        return self._table_activation(node, "sigmoid")

    def _op_QLinearSigmoid(self, node: onnx.NodeProto) -> list[Value]:
        act = self._act(node, 0)
        x_quant, _ = self._act_quant(node, 1, 2, default_unsigned=act.unsigned)
        self._bind_quant(node, act.edge, x_quant, f"'{node.input[0]}'")
        y_quant, unsigned = self._act_quant(node, 3, 4)
        out = self._edge(node.output[0], act.edge.shape, y_quant)
        edge = self._add_layer(LutLayer(out, act.edge, "sigmoid", source=_node_label(node)))
        return [Act(edge, is_int=True, unsigned=unsigned, flat=act.flat)]

    # multiply
    SELF_GATED = {"sigmoid": "silu"}
    """x * f(x) with the table of f fused into one table (float models only: a quantized model keeps both)."""

    def _fused_gate(self, node: onnx.NodeProto, x: Act, gate: Act, gate_name: str) -> Edge | None:
        layer = gate.edge.producer
        if not (isinstance(layer, LutLayer) and layer.input is x.edge and gate.edge.quant is None
                and x.flat == gate.flat and self._exclusive(gate_name, layer)):
            return None
        if layer.function in self.SELF_GATED:
            layer.function = self.SELF_GATED[layer.function]
        elif layer.function == "hardsigmoid" and np.allclose(layer.params, (1.0 / 6.0, 0.5), rtol=1e-6):
            layer.function, layer.params = "hardswish", ()  # x * HardSigmoid(x, 1/6, 1/2): opsets before 14
        else:
            return None
        layer.source = f"{layer.source} * {_node_label(node)}"
        return layer.output

    def _op_Mul(self, node: onnx.NodeProto) -> list[Value]:
        a, b = self._value(node, 0), self._value(node, 1)
        for act_index, act, cst in ((0, a, b), (1, b, a)):
            if isinstance(act, Act) and isinstance(cst, Const):
                self._float_act(node, act_index)
                norm = self._foldable(node.input[act_index], act, (GroupNormLayer,))
                if isinstance(norm, GroupNormLayer):
                    return self._fold_norm_mul(node, norm, act, cst.value.astype(np.float64))
                return self._fold_constant_mul(node, node.input[act_index], act, cst.value.astype(np.float64))
        lhs, rhs = self._float_act(node, 0), self._float_act(node, 1)
        for x, gate, name in ((lhs, rhs, node.input[1]), (rhs, lhs, node.input[0])):
            fused = self._fused_gate(node, x, gate, name)
            if fused is not None:
                return [Act(fused, flat=x.flat)]
        return [Act(self._mul(node, lhs, rhs, None), flat=lhs.flat and rhs.flat)]

    def _fold_constant_mul(self, node: onnx.NodeProto, name: str, act: Act, real: np.ndarray) -> list[Value]:
        """`act` times a per-channel (or scalar) constant, folded into the producing conv's output channels."""
        conv = self._foldable(name, act, (ConvLayer,))
        o = act.edge.shape[2]
        if not isinstance(conv, ConvLayer) or real.size not in (1, o) or (
                real.size == o and real.shape not in ((o,), (1, o), (o, 1, 1), (1, o, 1, 1))):
            raise OnnxImportError(
                f"{_node_label(node)}: multiplying by a constant is only supported right after a Conv/Gemm/MatMul "
                f"whose output it alone uses, with one value per channel; got shape {list(real.shape)}")
        conv.scale_channels(np.broadcast_to(real.reshape(-1), (o,)))
        return [Act(act.edge, flat=act.flat)]

    def _mul(self, node: onnx.NodeProto, lhs: Act, rhs: Act, quant: QuantParamsAttr | None) -> Edge:
        (ha, wa, ca), (hb, wb, cb) = lhs.edge.shape, rhs.edge.shape
        if (hb, wb) != (1, 1) and (ha, wa) == (1, 1):
            lhs, rhs = rhs, lhs
            (ha, wa, ca), (hb, wb, cb) = (hb, wb, cb), (ha, wa, ca)
        if ca != cb or (hb, wb) not in ((ha, wa), (1, 1)) or lhs.groups is not None or rhs.groups is not None:
            raise OnnxImportError(
                f"{_node_label(node)}: operands of shapes {list(lhs.onnx_shape())} and {list(rhs.onnx_shape())}; "
                "only same-shape products and a per-channel [N, C, 1, 1] factor are supported")
        out = self._edge(node.output[0], lhs.edge.shape, quant)
        return self._add_layer(MulLayer(out, lhs.edge, rhs.edge))

    def _op_QLinearMul(self, node: onnx.NodeProto) -> list[Value]:
        lhs, rhs = self._act(node, 0), self._act(node, 3)
        for act, index in ((lhs, 0), (rhs, 3)):
            quant, _ = self._act_quant(node, index + 1, index + 2, default_unsigned=act.unsigned)
            self._bind_quant(node, act.edge, quant, f"'{node.input[index]}'")
        y_quant, unsigned = self._act_quant(node, 6, 7)
        return [Act(self._mul(node, lhs, rhs, y_quant), is_int=True, unsigned=unsigned, flat=lhs.flat and rhs.flat)]

    # reductions and max pooling
    def _op_ReduceMean(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        act = self._float_act(node)
        self._image_act(node, act)
        if self.opset >= 18:
            axes_const = self._const(node, 1, "axes", optional=True)
            axes = [] if axes_const is None else [int(a) for a in axes_const.value.reshape(-1)]
        else:
            axes = [int(a) for a in attrs.get("axes", [])]
        if sorted(a % 4 for a in axes) != [2, 3] or attrs.get("noop_with_empty_axes", 0):
            raise OnnxImportError(f"{_node_label(node)}: only a mean over H and W (axes [2, 3], a global average "
                                  f"pool) is supported, got axes {axes}")
        h, w, _ = act.edge.shape
        edge = self._pool(node, act, (h, w), (1, 1), None)
        return [Act(edge, flat=not attrs.get("keepdims", 1))]

    def _op_MaxPool(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        act = self._act(node, 0)
        self._image_act(node, act)
        if len(node.output) > 1 and node.output[1] and self.consumers.get(node.output[1]):
            raise OnnxImportError(f"{_node_label(node)}: the Indices output is not supported")
        if attrs.get("storage_order", 0) or tuple(attrs.get("dilations", [1, 1])) != (1, 1):
            raise OnnxImportError(f"{_node_label(node)}: dilations and storage_order are not supported")
        kernel = tuple(int(k) for k in attrs.get("kernel_shape", []))
        strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
        if len(kernel) != 2 or len(strides) != 2:
            raise OnnxImportError(f"{_node_label(node)}: only 2-D pooling is supported")
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        h, w, c = act.edge.shape
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            (pt, pb), (pl, pr) = _same_pads(h, kernel[0], strides[0], auto_pad), _same_pads(w, kernel[1], strides[1],
                                                                                           auto_pad)
        elif auto_pad in ("NOTSET", "VALID"):
            pt, pl, pb, pr = (int(p) for p in attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else (0,) * 4
        else:
            raise OnnxImportError(f"{_node_label(node)}: auto_pad {auto_pad} is not supported")
        ceil = bool(attrs.get("ceil_mode", 0))
        oh = maxpool_output_size(h, kernel[0], strides[0], pt, pb, ceil)
        ow = maxpool_output_size(w, kernel[1], strides[1], pl, pr, ceil)
        # ceil_mode: the extra windows read fewer taps; as extra bottom / right padding (never read)
        pb = max(pb, (oh - 1) * strides[0] + kernel[0] - h - pt)
        pr = max(pr, (ow - 1) * strides[1] + kernel[1] - w - pl)
        if min(pt, pl, pb, pr) < 0 or max(pt, pb) >= kernel[0] or max(pl, pr) >= kernel[1] or min(oh, ow) < 1:
            raise OnnxImportError(f"{_node_label(node)}: pads {[pt, pl, pb, pr]} must be in [0, kernel) "
                                  f"for kernel {list(kernel)}")
        quant = act.edge.quant if act.is_int else None
        out = self._edge(node.output[0], (oh, ow, c), quant)
        edge = self._add_layer(MaxPoolLayer(out, act.edge, (kernel[0], kernel[1]), (strides[0], strides[1]),
                                            (pt, pl, pb, pr)))
        return [Act(edge, is_int=act.is_int, unsigned=act.unsigned)]

    # channel moves
    def _channel_axis(self, node: onnx.NodeProto, act: Act, axis: int) -> None:
        rank = len(act.onnx_shape())
        if act.groups is not None or axis % rank != 1:
            raise OnnxImportError(f"{_node_label(node)}: only the channel axis (1) of an [N, C, H, W] or [N, F] "
                                  f"tensor is supported, got axis {axis} of a rank-{rank} tensor")

    def _gather(self, node: onnx.NodeProto, index: int, act: Act, indices: list[int]) -> Act:
        h, w, c = act.edge.shape
        if indices == list(range(c)):
            return act
        quant = act.edge.quant if act.is_int else None
        out = self._edge(node.output[index], (h, w, len(indices)), quant)
        edge = self._add_layer(GatherLayer(out, act.edge, tuple(indices)))
        return Act(edge, is_int=act.is_int, unsigned=act.unsigned, flat=act.flat)

    def _concat(self, node: onnx.NodeProto, parts: list[Act], quant: QuantParamsAttr | None) -> Edge:
        h, w, _ = parts[0].edge.shape
        flat = parts[0].flat
        for part in parts:
            if part.edge.shape[:2] != (h, w) or part.groups is not None or (part.flat != flat and (h, w) != (1, 1)):
                raise OnnxImportError(f"{_node_label(node)}: inputs differ in height or width "
                                      f"({[list(p.onnx_shape()) for p in parts]})")
        out = self._edge(node.output[0], (h, w, sum(p.edge.shape[2] for p in parts)), quant)
        return self._add_layer(ConcatLayer(out, [p.edge for p in parts]))

    def _op_Concat(self, node: onnx.NodeProto) -> list[Value]:
        parts = [self._float_act(node, i) for i in range(len(node.input))]
        self._channel_axis(node, parts[0], int(_attrs(node).get("axis", 1)))
        return [Act(self._concat(node, parts, None), flat=parts[0].flat)]

    def _op_QLinearConcat(self, node: onnx.NodeProto) -> list[Value]:
        y_quant, unsigned = self._act_quant(node, 0, 1)
        parts = []
        for i in range(2, len(node.input), 3):
            act = self._act(node, i)
            quant, _ = self._act_quant(node, i + 1, i + 2, default_unsigned=act.unsigned)
            self._bind_quant(node, act.edge, quant, f"'{node.input[i]}'")
            parts.append(act)
        self._channel_axis(node, parts[0], int(_attrs(node).get("axis", 1)))
        return [Act(self._concat(node, parts, y_quant), is_int=True, unsigned=unsigned, flat=parts[0].flat)]

    def _op_Split(self, node: onnx.NodeProto) -> list[Value]:
        attrs = _attrs(node)
        act = self._act(node, 0)
        self._channel_axis(node, act, int(attrs.get("axis", 0)))
        c = act.edge.shape[2]
        sizes_const = self._const(node, 1, "split", optional=True) if self.opset >= 13 else None
        if sizes_const is not None:
            sizes = [int(v) for v in sizes_const.value.reshape(-1)]
        elif "split" in attrs:
            sizes = [int(v) for v in attrs["split"]]
        else:
            n = int(attrs.get("num_outputs", len(node.output)))
            step = -(-c // n)
            sizes = [min(step, c - k * step) for k in range(n)]
        if sum(sizes) != c or len(sizes) != len(node.output) or min(sizes) < 1:
            raise OnnxImportError(f"{_node_label(node)}: split sizes {sizes} do not divide {c} channels into "
                                  f"{len(node.output)} outputs")
        starts = np.cumsum([0, *sizes[:-1]])
        return [self._gather(node, k, act, list(range(int(start), int(start) + size)))
                for k, (start, size) in enumerate(zip(starts, sizes, strict=True))]

    def _op_Slice(self, node: onnx.NodeProto) -> list[Value]:
        act = self._act(node, 0)
        shape = act.onnx_shape()
        if act.groups is not None:
            raise OnnxImportError(f"{_node_label(node)}: input is a 5-D channel view")
        starts_c, ends_c = self._const(node, 1, "starts"), self._const(node, 2, "ends")
        axes_c = self._const(node, 3, "axes", optional=True)
        steps_c = self._const(node, 4, "steps", optional=True)
        assert starts_c is not None and ends_c is not None
        starts = [int(v) for v in starts_c.value.reshape(-1)]
        ends = [int(v) for v in ends_c.value.reshape(-1)]
        axes = list(range(len(starts))) if axes_c is None else [int(v) % len(shape) for v in axes_c.value.reshape(-1)]
        steps = [1] * len(starts) if steps_c is None else [int(v) for v in steps_c.value.reshape(-1)]
        indices = list(range(act.edge.shape[2]))
        for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
            picked = list(range(shape[axis]))[slice(start, end, step)]
            if axis == 1 and picked:
                indices = picked
            elif picked != list(range(shape[axis])):
                raise OnnxImportError(f"{_node_label(node)}: only slicing the channel axis is supported "
                                      f"(axis {axis} of {list(shape)} from {start} to {end} by {step})")
        return [self._gather(node, 0, act, indices)]

    def _op_Transpose(self, node: onnx.NodeProto) -> list[Value]:
        act = self._act(node, 0)
        perm = tuple(int(p) for p in _attrs(node).get("perm", []))
        if act.groups is not None and perm == (0, 2, 1, 3, 4):
            return [Act(act.edge, act.is_int, act.unsigned, groups=act.groups, transposed=not act.transposed)]
        if perm == tuple(range(len(act.onnx_shape()))):
            return [act]
        raise OnnxImportError(f"{_node_label(node)}: only the channel shuffle's transpose (perm [0, 2, 1, 3, 4] of "
                              f"a [N, g, C/g, H, W] view) is supported, got perm {list(perm)} of "
                              f"{list(act.onnx_shape())}")

    def _channel_shuffle(self, node: onnx.NodeProto, act: Act) -> Act:
        """The [N, C/g, g, H, W] view read back as [N, C, H, W]: channel j * g + i = input channel i * (C/g) + j."""
        assert act.groups is not None
        g, k = act.groups
        indices = [i * k + j for j in range(k) for i in range(g)]
        return self._gather(node, 0, Act(act.edge, act.is_int, act.unsigned), indices)

    # views
    def _op_Flatten(self, node: onnx.NodeProto) -> list[Value]:
        act = self._act(node, 0)
        rank = 2 if act.flat else 4
        axis = _attrs(node).get("axis", 1)
        if axis % rank != 1:
            raise OnnxImportError(f"{_node_label(node)}: only axis=1 (flatten to [N, C*H*W]) is supported")
        return [Act(act.edge, act.is_int, act.unsigned, flat=True)]

    def _op_Reshape(self, node: onnx.NodeProto) -> list[Value]:
        shape_const = self._const(node, 1, "shape")
        assert shape_const is not None
        target = [int(d) for d in shape_const.value.reshape(-1)]
        view = self._value(node, 0)
        if isinstance(view, GroupedView):  # PyTorch's GroupNorm: back from [N, G, -1] to the activation's shape
            expected = list(view.act.onnx_shape())
            if len(target) != len(expected) or any(d not in (e, 0, -1) for d, e in zip(target[1:], expected[1:],
                                                                                      strict=True)):
                raise OnnxImportError(f"{_node_label(node)}: a [N, groups, -1] view may only be reshaped back to "
                                      f"{expected}, got {target}")
            return [view.act]
        act = self._act(node, 0)
        allow_zero = _attrs(node).get("allowzero", 0)
        current = act.onnx_shape()
        if not target or target[0] not in (1, -1, 0, self.model_batch or 1):
            raise OnnxImportError(f"{_node_label(node)}: the first dimension of {target} must be the batch")
        dims = [current[i] if d == 0 and not allow_zero and i < len(current) else d for i, d in enumerate(target)]
        dims[0] = 1
        total = int(np.prod(current))
        if dims.count(-1) == 1:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = total // known if known else 0
        h, w, c = act.edge.shape
        if act.groups is not None:  # the end of a channel shuffle (or its first reshape undone)
            if tuple(dims[1:]) == (c, h, w):
                return [self._channel_shuffle(node, act) if act.transposed else Act(act.edge, act.is_int, act.unsigned)]
            raise OnnxImportError(f"{_node_label(node)}: reshape of the channel view {list(current)} to {target}")
        if len(dims) == 5 and not act.flat and tuple(dims[3:]) == (h, w) and dims[1] * dims[2] == c and dims[1] > 0:
            return [Act(act.edge, act.is_int, act.unsigned, groups=(dims[1], dims[2]))]
        if len(dims) == 2 and dims[1] == c * h * w:
            return [Act(act.edge, act.is_int, act.unsigned, flat=True)]
        if len(dims) == 4 and tuple(dims[1:]) == (c, h, w) and (not act.flat or (h, w) == (1, 1)):
            return [Act(act.edge, act.is_int, act.unsigned, flat=False)]
        if len(dims) == 3 and not act.flat and not act.is_int and 1 <= dims[1] and c % dims[1] == 0 \
                and dims[2] == c // dims[1] * h * w:
            return [GroupedView(act, dims[1])]  # PyTorch's GroupNorm export, undone by the InstanceNormalization
        raise OnnxImportError(
            f"{_node_label(node)}: reshape of {list(current)} to {target} changes the layout; only flattening "
            "[N, C, H, W] to [N, C*H*W] (and back) is supported"
        )

    # -- emission ------------------------------------------------------------------------------------
    def _emit(self, layers: list[Layer], output: Edge) -> ModuleOp:
        assert self.input_edge is not None and self.input_edge.quant is not None
        b = ForwardBuilder(self.input_edge.nhwc, self.input_edge.quant)
        ssa: dict[int, SSAValue] = {id(self.input_edge): b.image}
        for layer in layers:
            out_q = layer.output.quant
            assert out_q is not None
            if isinstance(layer, ConvLayer):
                result = self._emit_conv(b, layer, ssa[id(layer.input)])
            elif isinstance(layer, AddLayer):
                result = b.add(
                    ssa[id(layer.lhs)], ssa[id(layer.rhs)], output_q=out_q, clamp=clamp_for_range(out_q, *layer.act)
                )
            elif isinstance(layer, PoolLayer):
                result = b.avgpool(ssa[id(layer.input)], kernel=layer.kernel, strides=layer.strides, output_q=out_q)
            elif isinstance(layer, GroupNormLayer):
                result = b.group_norm(ssa[id(layer.input)], layer.gamma, layer.beta, groups=layer.groups,
                                      epsilon=layer.epsilon, output_q=out_q, clamp=clamp_for_range(out_q, *layer.act))
            elif isinstance(layer, RequantLayer):
                if clamp_for_range(out_q, *layer.act) is not None:
                    raise OnnxImportError(
                        f"{layer.source}: the range [{layer.act[0]}, {layer.act[1]}] after a "
                        f"{type(layer.input.producer).__name__ if layer.input.producer else 'graph input'} needs an "
                        f"int8 clamp, but its output quantization {out_q} does not saturate there and qtrain has no "
                        "standalone clamp op (only conv2d/add carry one)"
                    )
                result = b.avgpool(ssa[id(layer.input)], kernel=(1, 1), strides=(1, 1), output_q=out_q)
            elif isinstance(layer, LutLayer):
                x = ssa[id(layer.input)]
                result = b.insert(LutOp(x, layer.function, input_q=b.quant[x], output_q=out_q, params=layer.params),
                                  out_q)
            elif isinstance(layer, MulLayer):
                x, y = ssa[id(layer.lhs)], ssa[id(layer.rhs)]
                result = b.insert(MulOp(x, y, lhs_q=b.quant[x], rhs_q=b.quant[y], output_q=out_q), out_q)
            elif isinstance(layer, MaxPoolLayer):
                x = ssa[id(layer.input)]
                h, w, c = layer.output.shape
                op = MaxPoolOp(x, TensorType(i8, [1, h, w, c]), kernel=layer.kernel, strides=layer.strides,
                               padding=layer.pads, q=b.quant[x])
                result = self._requant(b, b.insert(op, b.quant[x]), out_q)
            elif isinstance(layer, ConcatLayer):
                parts = [self._requant(b, ssa[id(e)], out_q) for e in layer.parts]
                result = b.insert(ConcatOp(parts, out_q), out_q)
            elif isinstance(layer, GatherLayer):
                x = ssa[id(layer.input)]
                result = self._requant(b, b.insert(GatherChannelsOp(x, layer.indices, b.quant[x]), b.quant[x]), out_q)
            else:
                raise AssertionError(layer)
            ssa[id(layer.output)] = result
        return b.finish(ssa[id(output)])

    @staticmethod
    def _requant(b: ForwardBuilder, x: SSAValue, quant: QuantParamsAttr) -> SSAValue:
        """`x` expressed with `quant`: itself, or through an identity table (onnxruntime's requantization of a
        QLinearConcat input: dequantize, quantize)."""
        if b.quant[x] == quant:
            return x
        return b.insert(LutOp(x, "identity", input_q=b.quant[x], output_q=quant), quant)

    def _emit_conv(self, b: ForwardBuilder, layer: ConvLayer, x: SSAValue) -> SSAValue:
        out_q = layer.output.quant
        assert out_q is not None
        w_q, w_scale, b_q = conv_integers(layer)
        return b.conv2d(
            x,
            w_q.transpose(0, 2, 3, 1),
            w_scale,
            b_q,
            strides=layer.strides,
            padding=layer.pads,
            groups=layer.groups,
            output_q=out_q,
            clamp=clamp_for_range(out_q, *layer.act),
            source=layer.source,
        )


def import_onnx(
    model: onnx.ModelProto | str | os.PathLike[str],
    calibration: np.ndarray | str | os.PathLike[str] | None = None,
    *,
    classifier: bool = False,
) -> ModuleOp:
    """Imports an ONNX model (a path or a ModelProto) into forward-only qtrain IR.

    `calibration`: float NCHW images (or an `.npz` path with key `image`) for the activation ranges a
    float model needs; without them the ranges come from the documented random fallback (with an
    `OnnxImportWarning`). `classifier`: the graph output must be logits ([N, K] or [N, K, 1, 1], K >= 2),
    what training needs (the tools ask for it; any single-output graph imports for the interpreter).
    Raises `OnnxImportError` for anything outside the supported subset."""
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    images = load_calibration(calibration) if isinstance(calibration, str | os.PathLike) else calibration
    return OnnxImporter(proto, images, classifier=classifier).run()
