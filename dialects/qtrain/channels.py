"""Channel moves without arithmetic: `qtrain.concat` (channel concatenation), `qtrain.gather_channels` (a
channel selection or permutation: ONNX Slice / Split on the channel axis, ShuffleNet's channel shuffle) and
the gradient of the latter, `qtrain.scatter_channels`.

All three copy values unchanged, so their int8 operands and results share one quantization (the importer
requantizes a concat input with another quantization first, through a `qtrain.lut` identity table: how
onnxruntime's QLinearConcat does it). Gradients are copies too: a concat's inputs get their channel ranges
of the gradient (`qtrain.channel_slice`), a gather's input gets its gradient scattered back,

    gather:   y[..., k] = x[..., indices[k]]
    scatter:  gx[..., c] = sum of g[..., k] over the k with indices[k] = c   (+0 for channels not gathered)

(indices are distinct in what the importer builds, so the sum has at most one term and is exact.)

The C kernels are targets/armv7em/kernels/qtrain_channels.c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import DenseArrayBase, TensorType, f32, i8, i64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
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
)
from qtrain.dialects.qtrain.ops import expect_element, expect_per_tensor, i64_array, shape_of, tensor_type


def gather_channels(x: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    return np.asarray(x)[..., list(indices)].copy()


def scatter_channels(grad: np.ndarray, indices: Sequence[int], channels: int) -> np.ndarray:
    g = np.asarray(grad)
    out = np.zeros((*g.shape[:-1], channels), dtype=np.float64 if g.dtype == np.float64 else np.float32)
    out[..., list(indices)] = g  # distinct indices (the verifier's rule): a copy, no sum
    return out


@irdl_op_definition
class ConcatOp(IRDLOperation, QuantizedOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """Concatenation of int8 NHWC tensors along the channel axis; inputs and output share `q`."""

    name = "qtrain.concat"
    inputs = var_operand_def(TensorType)
    output = result_def(TensorType)
    q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$inputs attr-dict `:` type($inputs) `->` type($output)"

    def __init__(self, inputs: Sequence[SSAValue | Operation], q: QuantParamsAttr):
        shapes = [shape_of(SSAValue.get(v)) for v in inputs]
        out = TensorType(i8, [*shapes[0][:-1], sum(s[-1] for s in shapes)])
        super().__init__(operands=[list(inputs)], result_types=[out], properties={"q": q})

    def verify_(self) -> None:
        y = tensor_type(self.output, "output", self)
        expect_element(y, i8, "output", self)
        if len(self.inputs) < 1:
            raise VerifyException(f"{self.name}: needs at least one input")
        channels = 0
        for k, v in enumerate(self.inputs):
            x = tensor_type(v, f"input {k}", self)
            expect_element(x, i8, f"input {k}", self)
            if x.get_shape()[:-1] != y.get_shape()[:-1]:
                raise VerifyException(f"{self.name}: input {k} {x} differs from the output {y} in more than channels")
            channels += x.get_shape()[-1]
        if channels != y.get_shape()[-1]:
            raise VerifyException(f"{self.name}: the inputs hold {channels} channels, the output {y.get_shape()[-1]}")
        expect_per_tensor(self.q, "q", self)

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.q

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return tuple(("q", v, self.q) for v in self.inputs)

    def channel_ranges(self) -> list[tuple[int, int]]:
        ranges, start = [], 0
        for v in self.inputs:
            c = shape_of(v)[-1]
            ranges.append((start, start + c))
            start += c
        return ranges

    def build_backward(self, builder: BackwardBuilder) -> None:
        from qtrain.dialects.qtrain.grad_ops import ChannelSliceOp

        g = builder.grad(self.output)
        assert g is not None
        for v, (start, stop) in zip(self.inputs, self.channel_ranges(), strict=True):
            if builder.needs_grad(v):
                builder.accumulate(v, builder.emit(ChannelSliceOp(g, start, stop)).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (np.concatenate([np.asarray(a) for a in args], axis=-1),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        shape = shape_of(self.output)
        pixels = math.prod(shape[:-1])
        return tuple(kc.KernelCall(
            "qtrain_copy_channels_s8",
            (kc.Tensor(v), kc.I32(pixels), kc.I32(stop - start), kc.Tensor(self.output), kc.I32(shape[-1]),
             kc.I32(start)),
            returns="void",
        ) for v, (start, stop) in zip(self.inputs, self.channel_ranges(), strict=True))


@irdl_op_definition
class GatherChannelsOp(IRDLOperation, QuantizedOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """y[..., k] = x[..., indices[k]] on int8 NHWC (distinct indices): a channel slice, split or shuffle."""

    name = "qtrain.gather_channels"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    indices = prop_def(DenseArrayBase.constr(i64))
    q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, input: SSAValue | Operation, indices: Sequence[int], q: QuantParamsAttr):
        shape = shape_of(SSAValue.get(input))
        super().__init__(operands=[input], result_types=[TensorType(i8, [*shape[:-1], len(indices)])],
                         properties={"indices": i64_array(indices), "q": q})

    def index_list(self) -> list[int]:
        return list(self.indices.get_values())

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        expect_element(x, i8, "input", self)
        expect_element(y, i8, "output", self)
        idx = self.index_list()
        c = x.get_shape()[-1]
        if y.get_shape() != (*x.get_shape()[:-1], len(idx)):
            raise VerifyException(f"{self.name}: output must have {len(idx)} channels and the input's other sizes")
        if not idx or len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= c:
            raise VerifyException(f"{self.name}: indices must be distinct channels in [0, {c})")
        expect_per_tensor(self.q, "q", self)

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.q

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("q", self.input, self.q),)

    def build_backward(self, builder: BackwardBuilder) -> None:
        g = builder.grad(self.output)
        assert g is not None
        gx = ScatterChannelsOp(g, self.index_list(), TensorType(f32, shape_of(self.input)))
        builder.accumulate(self.input, builder.emit(gx).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (gather_channels(args[0], self.index_list()),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        x = shape_of(self.input)
        return (kc.KernelCall(
            "qtrain_gather_channels_s8",
            (kc.Tensor(self.input), kc.I32(math.prod(x[:-1])), kc.I32(x[-1]),
             kc.Ints("channel_indices", self.index_list(), "int32_t"), kc.I32(len(self.index_list())),
             kc.Tensor(self.output)),
            returns="void",
        ),)


@irdl_op_definition
class ScatterChannelsOp(IRDLOperation, GoldenModelOp, KernelCallOp):
    """The gradient of `qtrain.gather_channels` (fp32): gx[..., indices[k]] = g[..., k], +0 elsewhere."""

    name = "qtrain.scatter_channels"
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    indices = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$grad attr-dict `:` type($grad) `->` type($result)"

    def __init__(self, grad: SSAValue | Operation, indices: Sequence[int], result_type: Attribute):
        super().__init__(operands=[grad], result_types=[result_type], properties={"indices": i64_array(indices)})

    def index_list(self) -> list[int]:
        return list(self.indices.get_values())

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        r = tensor_type(self.result, "result", self)
        expect_element(g, f32, "grad", self)
        expect_element(r, f32, "result", self)
        idx = self.index_list()
        c = r.get_shape()[-1]
        if g.get_shape() != (*r.get_shape()[:-1], len(idx)) or len(set(idx)) != len(idx) or \
                (idx and (min(idx) < 0 or max(idx) >= c)):
            raise VerifyException(f"{self.name}: grad must have one channel per distinct index in [0, {c})")

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (scatter_channels(args[0], self.index_list(), shape_of(self.result)[-1]),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        r = shape_of(self.result)
        return (kc.KernelCall(
            "qtrain_scatter_channels_f32",
            (kc.Tensor(self.grad), kc.I32(math.prod(r[:-1])), kc.I32(len(self.index_list())),
             kc.Ints("channel_indices", self.index_list(), "int32_t"), kc.I32(r[-1]), kc.Tensor(self.result)),
            returns="void",
        ),)


OPS: list[type[IRDLOperation]] = [ConcatOp, GatherChannelsOp, ScatterChannelsOp]
