"""`qtrain.maxpool` (int8, k x k windows, strides, padding that is never read) and its gradient
`qtrain.maxpool_grad`.

Forward: y[n, oh, ow, c] = max of x[n, oh*sh - pt + i, ow*sw - pl + j, c] over the window taps (i, j) that
fall inside the input; padded taps are never read (ONNX MaxPool, onnxruntime's int8 MaxPool: no
requantization, the output has the input's quantization). Every window must hold at least one input
pixel; the output size is the result type's (ceil_mode is extra bottom / right padding).

Backward through the argmax, recomputed from the saved int8 input (no index tensor: the input costs one
byte per element and the planner counts it as any saved activation): each window's gradient goes to its
first maximal tap in row-major window order,

    gx[n, h, w, c] = sum over the windows whose argmax is (h, w) of g[n, oh, ow, c]

(a reference sum, float64 here; the C kernel adds in float32, windows in raster order). The relaxed op is
the same max on real values; its derivative is this scatter wherever the maximum is unique.

The C kernels are targets/armv7em/kernels/qtrain_maxpool.c.
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
from qtrain.dialects.qtrain.ops import (
    expect_element,
    expect_per_tensor,
    expect_rank,
    i64_array,
    pair,
    shape_of,
    tensor_type,
)

# -- numerics ---------------------------------------------------------------------------------------------


def window_taps(input_hw: tuple[int, int], output_hw: tuple[int, int], kernel: Sequence[int],
                strides: Sequence[int], pads: Sequence[int]) -> list[tuple[int, int, np.ndarray, np.ndarray,
                                                                            np.ndarray, np.ndarray]]:
    """Per tap (i, j): (i, j, rows, cols, valid_rows, valid_cols) with the input row / column each output
    reads (clipped into range) and whether it lies inside the input."""
    (h, w), (oh, ow) = input_hw, output_hw
    kh, kw = kernel
    sh, sw = strides
    pt, pl = pads
    taps = []
    for i in range(kh):
        rows = np.arange(oh) * sh - pt + i
        for j in range(kw):
            cols = np.arange(ow) * sw - pl + j
            taps.append((i, j, np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1), (rows >= 0) & (rows < h),
                         (cols >= 0) & (cols < w)))
    return taps


def maxpool(x: np.ndarray, output_hw: tuple[int, int], kernel: Sequence[int], strides: Sequence[int],
            pads: Sequence[int]) -> np.ndarray:
    """`qtrain.maxpool` (any dtype: int8, or float64 in relaxed mode); pads = (top, left)."""
    x = np.asarray(x)
    n, h, w, c = x.shape
    best: np.ndarray | None = None
    for _, _, rows, cols, vr, vc in window_taps((h, w), output_hw, kernel, strides, pads):
        view = x[:, rows][:, :, cols]
        valid = (vr[:, None] & vc[None, :])[None, :, :, None]
        if best is None:
            best = np.where(valid, view, view.dtype.type(np.iinfo(view.dtype).min) if view.dtype.kind == "i"
                            else -np.inf)
        else:
            best = np.where(valid & (view > best), view, best)
    assert best is not None
    return best.astype(x.dtype)


def maxpool_grad(x: np.ndarray, grad: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
                 pads: Sequence[int]) -> np.ndarray:
    """`qtrain.maxpool_grad`: each window's g to its first maximal valid tap (row-major), summed per input
    pixel (float64 accumulation; float32 result for float32 g, float64 for float64)."""
    x = np.asarray(x)
    g = np.asarray(grad)
    n, h, w, c = x.shape
    oh, ow = g.shape[1:3]
    taps = window_taps((h, w), (oh, ow), kernel, strides, pads)
    y = maxpool(x.astype(np.float64), (oh, ow), kernel, strides, pads)
    taken = np.zeros(g.shape, dtype=bool)
    gx = np.zeros(x.shape, dtype=np.float64)
    for _, _, rows, cols, vr, vc in taps:
        view = x.astype(np.float64)[:, rows][:, :, cols]
        hit = (vr[:, None] & vc[None, :])[None, :, :, None] & (view == y) & ~taken
        taken |= hit
        nn, hh, ww, cc = np.nonzero(hit)
        np.add.at(gx, (nn, rows[hh], cols[ww], cc), g[nn, hh, ww, cc].astype(np.float64))
    return gx.astype(np.float64 if g.dtype == np.float64 else np.float32)


def maxpool_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                        ceil_mode: bool = False) -> int:
    """ONNX's output size: floor (or ceil) of (size + pads - kernel) / stride + 1; with ceil_mode a last
    window that would start in the bottom / right padding is dropped."""
    span = size + pad_before + pad_after - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_before:
        out -= 1
    return out


# -- ops --------------------------------------------------------------------------------------------------


class _PoolGeometry:
    def geometry(self: Any) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
        kh, kw = pair(self.kernel, 2, "kernel", self)
        sh, sw = pair(self.strides, 2, "strides", self)
        pt, pl, pb, pr = pair(self.padding, 4, "padding [top, left, bottom, right]", self)
        return (kh, kw), (sh, sw), (pt, pl, pb, pr)

    def verify_geometry(self: Any, x: TensorType[Attribute], y: TensorType[Attribute]) -> None:
        (kh, kw), (sh, sw), (pt, pl, pb, pr) = self.geometry()
        if min(kh, kw, sh, sw) < 1 or min(pt, pl, pb, pr) < 0 or max(pt, pb) >= kh or max(pl, pr) >= kw:
            raise VerifyException(f"{self.name}: kernel and strides must be >= 1 and padding in [0, kernel)")
        n, h, w, c = x.get_shape()
        expected = (n, (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1, c)
        if y.get_shape() != expected:
            raise VerifyException(f"{self.name}: the pooled tensor must be tensor<{'x'.join(map(str, expected))}>, "
                                  f"got {y}")
        if (expected[1] - 1) * sh - pt >= h or (expected[2] - 1) * sw - pl >= w:
            raise VerifyException(f"{self.name}: the last window lies in the padding")


@irdl_op_definition
class MaxPoolOp(IRDLOperation, _PoolGeometry, QuantizedOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """k x k max pool of an int8 NHWC tensor; padded taps are never read; the output keeps the input's quantization."""

    name = "qtrain.maxpool"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    kernel = prop_def(DenseArrayBase.constr(i64))
    strides = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    """[top, left, bottom, right]"""
    q = prop_def(QuantParamsAttr)
    """the quantization of the input, and so of the output"""
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, input: SSAValue | Operation, output_type: Attribute, *, kernel: Sequence[int],
                 strides: Sequence[int], padding: Sequence[int], q: QuantParamsAttr):
        super().__init__(operands=[input], result_types=[output_type],
                         properties={"kernel": i64_array(kernel), "strides": i64_array(strides),
                                     "padding": i64_array(padding), "q": q})

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        for t, what in ((x, "input"), (y, "output")):
            expect_element(t, i8, what, self)
            expect_rank(t, 4, what, self, "NHWC")
        self.verify_geometry(x, y)
        expect_per_tensor(self.q, "q", self)

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.q

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("q", self.input, self.q),)

    def build_backward(self, builder: BackwardBuilder) -> None:
        g = builder.grad(self.output)
        assert g is not None
        kernel, strides, padding = self.geometry()
        gx = MaxPoolGradOp(self.input, g, TensorType(f32, shape_of(self.input)), kernel=kernel, strides=strides,
                           padding=padding)
        builder.accumulate(self.input, builder.emit(gx).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kernel, strides, padding = self.geometry()
        return (maxpool(args[0], shape_of(self.output)[1:3], kernel, strides, padding[:2]),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        (kh, kw), (sh, sw), (pt, pl, _, _) = self.geometry()
        return (kc.KernelCall(
            "qtrain_maxpool_s8",
            (kc.Shape(shape_of(self.input)), kc.Tensor(self.input), kc.I32(kh), kc.I32(kw), kc.I32(sh), kc.I32(sw),
             kc.I32(pt), kc.I32(pl), kc.Shape(shape_of(self.output)), kc.Tensor(self.output)),
        ),)


@irdl_op_definition
class MaxPoolGradOp(IRDLOperation, _PoolGeometry, GoldenModelOp, KernelCallOp):
    """dL/dx of `qtrain.maxpool`: each window's gradient to its first maximal tap of the saved int8 input."""

    name = "qtrain.maxpool_grad"
    input = operand_def(TensorType)
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    kernel = prop_def(DenseArrayBase.constr(i64))
    strides = prop_def(DenseArrayBase.constr(i64))
    padding = prop_def(DenseArrayBase.constr(i64))
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input `,` $grad attr-dict `:` `(` type($input) `,` type($grad) `)` `->` type($result)"

    def __init__(self, input: SSAValue | Operation, grad: SSAValue | Operation, result_type: Attribute, *,
                 kernel: Sequence[int], strides: Sequence[int], padding: Sequence[int]):
        super().__init__(operands=[input, grad], result_types=[result_type],
                         properties={"kernel": i64_array(kernel), "strides": i64_array(strides),
                                     "padding": i64_array(padding)})

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        g = tensor_type(self.grad, "grad", self)
        r = tensor_type(self.result, "result", self)
        expect_element(g, f32, "grad", self)
        expect_element(r, f32, "result", self)
        if r.get_shape() != x.get_shape():
            raise VerifyException(f"{self.name}: result {r} must have the input's shape {x.get_shape()}")
        self.verify_geometry(x, g)

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        kernel, strides, padding = self.geometry()
        return (maxpool_grad(args[0], args[1], kernel, strides, padding[:2]),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        (kh, kw), (sh, sw), (pt, pl, _, _) = self.geometry()
        return (kc.KernelCall(
            "qtrain_maxpool_grad_f32",
            (kc.Shape(shape_of(self.input)), kc.Tensor(self.input), kc.Shape(shape_of(self.grad)),
             kc.Tensor(self.grad), kc.I32(kh), kc.I32(kw), kc.I32(sh), kc.I32(sw), kc.I32(pt), kc.I32(pl),
             kc.Tensor(self.result)),
            macs=math.prod(shape_of(self.grad)) * kh * kw,
        ),)


OPS: list[type[IRDLOperation]] = [MaxPoolOp, MaxPoolGradOp]
