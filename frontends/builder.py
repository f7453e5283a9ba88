"""Helpers that build forward-only qtrain IR, shared by the importers.

A forward-only qtrain module is

    qtrain.param @conv0.weight = dense<...> : tensor<O x KH x KW x I x i8>     (OHWI, symmetric per channel)
    qtrain.param @conv0.bias = dense<...> : tensor<O x i32>                    (scale s_x * s_w[c])
    ...
    func.func @forward(%image: tensor<1xHxWxCxi8>) -> tensor<1xKxi8>
        attributes {qtrain.input_q = #qtrain.quant<...>, qtrain.output_q = #qtrain.quant<...>}

`qtrain.input_q` is how a caller quantizes a real-valued image into `%image`
(`q = clamp(rint(x / s) + zp, -128, 127)`), `qtrain.output_q` how the int8 result dequantizes into
logits. Every learnable layer (the classifier too, as a 1x1 conv on a `1x1xC` tensor) is a
`qtrain.conv2d` whose parameters are named `conv{L}.weight` / `conv{L}.bias`, L counting convs in
forward order from 0.

`ForwardBuilder` tracks the quantization each SSA value was produced with, so the consumers' `*_q`
properties always equal their producers' `output_q` (what `qtrain-verify-quant-chain` checks).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from xdsl.builder import Builder, InsertPoint
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    Float32Type,
    FunctionType,
    IntegerType,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i8,
    i32,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    GetParamOp,
    ParamOp,
    QuantParamsAttr,
    ReshapeOp,
)
from qtrain.dialects.qtrain.contract import INPUT_Q, OUTPUT_Q, SOURCE
from qtrain.dialects.qtrain.group_norm import GroupNormOp
from qtrain.dialects.qtrain.ops import INT8_MAX, INT8_MIN, conv_output_size

INPUT_Q_ATTR = INPUT_Q
OUTPUT_Q_ATTR = OUTPUT_Q
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def dense_attr(array: np.ndarray, element_type: IntegerType | Float32Type) -> DenseIntOrFPElementsAttr:
    """A dense elements attribute holding `array` (int8, int32 or float32), stored as raw little-endian bytes."""
    if isinstance(element_type, Float32Type):
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        return DenseIntOrFPElementsAttr(TensorType(element_type, list(array.shape)), BytesAttr(data))
    dtype = {8: "<i1", 32: "<i4"}[element_type.width.data]
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(f"values out of range for {element_type}")
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return DenseIntOrFPElementsAttr(TensorType(element_type, list(array.shape)), BytesAttr(data))


def quant_params(scale: float, zero_point: int) -> QuantParamsAttr:
    """A per-tensor `#qtrain.quant`."""
    return QuantParamsAttr.get(float(scale), int(zero_point))


def range_quant(lo: float, hi: float) -> QuantParamsAttr:
    """Asymmetric int8 quantization covering [lo, hi] (widened to include 0, so 0 is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(hi - lo):
        raise ValueError(f"cannot quantize the non-finite range [{lo}, {hi}]")
    if hi == lo:  # a tensor that is always 0: any scale represents it exactly
        return quant_params(1.0, 0)
    scale = float(np.float32((hi - lo) / 255.0))
    zero_point = int(np.clip(np.rint(INT8_MIN - lo / scale), INT8_MIN, INT8_MAX))
    return quant_params(scale, zero_point)


def quantize_real(x: np.ndarray, q: QuantParamsAttr) -> np.ndarray:
    """`clamp(rint(x / s) + zp, -128, 127)` in float32 (per-tensor), as int8."""
    scaled = np.asarray(x, dtype=np.float32) / np.float32(q.scale)
    return np.clip(np.rint(scaled) + q.zp, INT8_MIN, INT8_MAX).astype(np.int8)


def clamp_for_range(q: QuantParamsAttr, lo: float, hi: float) -> tuple[int, int] | None:
    """The int8 output clamp that implements the real range [lo, hi] under `q`; None if it is a no-op."""
    qlo = INT8_MIN if lo == -np.inf else int(np.clip(np.rint(lo / q.scale) + q.zp, INT8_MIN, INT8_MAX))
    qhi = INT8_MAX if hi == np.inf else int(np.clip(np.rint(hi / q.scale) + q.zp, INT8_MIN, INT8_MAX))
    if (qlo, qhi) == (INT8_MIN, INT8_MAX):
        return None
    return qlo, qhi


class ForwardBuilder:
    """Builds `func.func @forward` and its module-level `qtrain.param`s, one op at a time."""

    def __init__(
        self,
        input_shape: Sequence[int],
        input_q: QuantParamsAttr,
        *,
        func_name: str = "forward",
        arg_name: str | None = "image",
    ):
        """`arg_name`: the name hint of the input argument; None leaves it unnamed (it prints as `%0`)."""
        if len(input_shape) != 4:
            raise ValueError(f"the forward input is NHWC, got shape {tuple(input_shape)}")
        self.func_name = func_name
        self.input_q = input_q
        self.block = Block(arg_types=[TensorType(i8, list(input_shape))])
        self.image: SSAValue = self.block.args[0]
        if arg_name is not None:
            self.image.name_hint = arg_name
        self.builder = Builder(InsertPoint.at_end(self.block))
        self.params: list[ParamOp] = []
        self.num_convs = 0
        self.num_group_norms = 0
        self.quant: dict[SSAValue, QuantParamsAttr] = {self.image: input_q}

    # -- parameters ------------------------------------------------------------------------------
    def param(self, name: str, array: np.ndarray, element_type: IntegerType | Float32Type) -> SSAValue:
        """Declares `qtrain.param @name` and reads it in the function body."""
        value = dense_attr(array, element_type)
        self.params.append(ParamOp(name, value))
        return self.builder.insert(GetParamOp(name, value.type)).result

    # -- forward ops -----------------------------------------------------------------------------
    def conv2d(
        self,
        x: SSAValue,
        weight_ohwi: np.ndarray,
        weight_scales: Sequence[float] | np.ndarray,
        bias: np.ndarray | None,
        *,
        strides: Sequence[int] = (1, 1),
        padding: Sequence[int] = (0, 0, 0, 0),
        groups: int = 1,
        output_q: QuantParamsAttr,
        clamp: Sequence[int] | None = None,
        source: str = "",
    ) -> SSAValue:
        """A `qtrain.conv2d` with params `conv{L}.weight` (OHWI int8) and `conv{L}.bias` (int32); `source`: the
        ONNX node it comes from, kept on the weight (`contract.SOURCE`) for diagnostics."""
        layer = self.num_convs
        self.num_convs += 1
        x_type = x.type
        assert isinstance(x_type, TensorType)
        n, h, w, _ = x_type.get_shape()
        cout, kh, kw, _ = weight_ohwi.shape
        pt, pl, pb, pr = padding
        out_shape = [
            n,
            conv_output_size(h, kh, strides[0], pt, pb),
            conv_output_size(w, kw, strides[1], pl, pr),
            cout,
        ]
        weight = self.param(f"conv{layer}.weight", weight_ohwi, i8)
        if source:
            self.params[-1].attributes[SOURCE] = StringAttr(source)
        bias_value = None if bias is None else self.param(f"conv{layer}.bias", bias, i32)
        op = Conv2DOp(
            x,
            weight,
            bias_value,
            TensorType(i8, out_shape),
            strides=strides,
            padding=padding,
            groups=groups,
            input_q=self.quant[x],
            weight_q=QuantParamsAttr.get([float(s) for s in weight_scales], 0, 0),
            output_q=output_q,
            clamp=clamp,
        )
        return self._insert(op.output, op, output_q)

    def add(
        self, lhs: SSAValue, rhs: SSAValue, *, output_q: QuantParamsAttr, clamp: Sequence[int] | None = None
    ) -> SSAValue:
        op = AddOp(lhs, rhs, lhs_q=self.quant[lhs], rhs_q=self.quant[rhs], output_q=output_q, clamp=clamp)
        return self._insert(op.output, op, output_q)

    def avgpool(
        self, x: SSAValue, *, kernel: Sequence[int], strides: Sequence[int], output_q: QuantParamsAttr
    ) -> SSAValue:
        x_type = x.type
        assert isinstance(x_type, TensorType)
        n, h, w, c = x_type.get_shape()
        out_shape = [n, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1, c]
        op = AvgPoolOp(
            x, TensorType(i8, out_shape), kernel=kernel, strides=strides, input_q=self.quant[x], output_q=output_q
        )
        return self._insert(op.output, op, output_q)

    def group_norm(
        self, x: SSAValue, gamma: np.ndarray, beta: np.ndarray, *, groups: int, epsilon: float,
        output_q: QuantParamsAttr, clamp: Sequence[int] | None = None,
    ) -> SSAValue:
        """A `qtrain.group_norm` with real per-channel `gamma` / `beta`, stored as fp32 params `gn{G}.gamma` /
        `gn{G}.beta` in the output's integer domain (divided by s_y), G counting group norms from 0."""
        index = self.num_group_norms
        self.num_group_norms += 1
        sy = float(np.float32(output_q.scale))
        gamma_value = self.param(f"gn{index}.gamma", (np.asarray(gamma, np.float64) / sy).astype(np.float32), f32)
        beta_value = self.param(f"gn{index}.beta", (np.asarray(beta, np.float64) / sy).astype(np.float32), f32)
        op = GroupNormOp(x, gamma_value, beta_value, groups=groups, epsilon=epsilon, input_q=self.quant[x],
                         output_q=output_q, clamp=clamp)
        return self._insert(op.output, op, output_q)

    def reshape(self, x: SSAValue, shape: Sequence[int]) -> SSAValue:
        x_type = x.type
        assert isinstance(x_type, TensorType)
        if tuple(x_type.get_shape()) == tuple(shape):
            return x
        op = ReshapeOp(x, TensorType(x_type.element_type, list(shape)))
        return self._insert(op.output, op, self.quant[x])

    def insert(self, op: Operation, q: QuantParamsAttr) -> SSAValue:
        """Appends any single-result forward op whose int8 result has quantization `q`; returns the result."""
        return self._insert(op.results[0], op, q)

    def _insert(self, result: SSAValue, op: Operation, q: QuantParamsAttr) -> SSAValue:
        self.builder.insert(op)
        self.quant[result] = q
        return result

    # -- finishing -------------------------------------------------------------------------------
    def finish(
        self, output: SSAValue, extra_attrs: dict[str, Attribute] | None = None, *, record_output_q: bool = True
    ) -> ModuleOp:
        """Returns `output` flattened to [N, K] (row-major NHWC) and wraps everything in a module.
        `record_output_q`: put the result's quantization on the function as `qtrain.output_q`."""
        out_type = output.type
        assert isinstance(out_type, TensorType)
        shape = out_type.get_shape()
        flat = self.reshape(output, [shape[0], int(np.prod(shape[1:]))])
        self.builder.insert(func.ReturnOp(flat))
        function = func.FuncOp(
            self.func_name,
            FunctionType.from_lists([self.image.type], [flat.type]),
            Region(self.block),
        )
        function.attributes[INPUT_Q_ATTR] = self.input_q
        if record_output_q:
            function.attributes[OUTPUT_Q_ATTR] = self.quant[flat]
        for key, attr in (extra_attrs or {}).items():
            function.attributes[key] = attr
        module = ModuleOp([*self.params, function])
        module.verify()
        return module
