"""`qtrain.lut`: an int8 activation through a 256-entry table (HardSwish, HardSigmoid, Sigmoid, SiLU, and the
identity, i.e. a requantization), and its gradient `qtrain.lut_grad`.

An int8 input takes one of 256 values, so any per-element function of it is a table: the usual MCU way to
run HardSwish, Sigmoid or SiLU in int8 (one load per element), and exactly how onnxruntime runs
QLinearSigmoid, QLinearLeakyRelu and the per-input requantization of QLinearConcat
(`QlinearBuildLookupTable`: dequantize the 256 codes, apply the float function, quantize them).

Numerics (computed once, at compile time; the table is a `static const int8_t[256]` in Flash). For each
code q in [-128, 127] (fp32(e): one IEEE float32 operation at a time, no fused multiply-add):

    x = fp32(fp32(q - zx) * s_x)                                  (`numerics.dequantize`)
    v = f(x), in float32:
        identity      v = x
        hardsigmoid   v = min(max(fp32(fp32(x * alpha) + beta), 0), 1)      (params [alpha, beta])
        hardswish     v = fp32(x * hardsigmoid(x; alpha = fp32(1/6), beta = 0.5))
        sigmoid       v = logistic(x): MLAS's rational approximation (onnxruntime's Sigmoid and
                      QLinearSigmoid), `mlas_logistic` below
        silu          v = fp32(x * logistic(x))
    table[q] = clamp(rint(fp32(v / s_y)) + zy, -128, 127)      (`numerics.quantize`)
    y = table[x_q]

Agreement with onnxruntime (test/python/dialects/qtrain/test_activations.py, every code at many scales):
the table is bit-exact with QLinearSigmoid, with QLinearConcat's requantization (identity), and with the
float HardSwish / HardSigmoid / Sigmoid kernels between a DequantizeLinear and a QuantizeLinear (how an
onnxruntime QOperator model runs the ops its quantizer leaves in float). SiLU has no onnxruntime kernel
(exporters write Sigmoid and Mul; quantized models keep the two ops, imported as `qtrain.lut` sigmoid and
`qtrain.mul`); the fused table is what a float model imports to, one rounding instead of two.

Gradient. The relaxed op (what training differentiates) is u = f(s_x (x - zx)) / s_y + zy in float64 with
the exact f (1 / (1 + exp(-x)) for the logistic), clamped to [-128, 127]; its derivative is
f'(s_x (x - zx)) * s_x / s_y where the clamp leaves u unchanged, 0 elsewhere. In int8 the output is a
function of the input code alone, and so is whether the clamp bit; so the gradient needs no mask, only the
saved int8 input and a second table of 256 float32 slopes:

    d[q] = fp32(f'(x) * s_x / s_y) where table[q] was not clamped, +0.0 where it was   (f' in float64)
    `qtrain.lut_grad`:  g_x = fp32(g_y * d[x_q])

with f' = alpha inside (0, 1) for hardsigmoid (0 outside), (2x + 3) / 6 inside (-3, 3) for hardswish (0
below, 1 above), s (1 - s) for sigmoid and s (1 + x (1 - s)) for silu (s = the exact logistic). The
identity's slope is s_x / s_y.

This module is the whole of the op family on the compiler side (classes, verifiers, gradient, golden
numerics, kernel calls); the C kernels are targets/armv7em/kernels/qtrain_lut.c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import StringAttr, TensorType, f32, i8
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from qtrain import numerics
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.attrs import F32ArrayAttr, QuantParamsAttr
from qtrain.dialects.qtrain.interfaces import (
    BackwardBuilder,
    DifferentiableOp,
    ElementwiseInPlace,
    GoldenModelOp,
    GoldenRun,
    KernelCallOp,
    QuantizedOp,
)
from qtrain.dialects.qtrain.ops import INT8_MAX, INT8_MIN, expect_element, expect_per_tensor, shape_of, tensor_type

FUNCTIONS: dict[str, int] = {"identity": 0, "hardsigmoid": 2, "hardswish": 0, "sigmoid": 0, "silu": 0}
"""The table functions and how many `params` each takes."""

CODES = np.arange(INT8_MIN, INT8_MAX + 1, dtype=np.int32)

# -- numerics ---------------------------------------------------------------------------------------------

# MLAS's logistic (onnxruntime/core/mlas/lib/logistic.cpp, the coefficients Eigen uses): clamp to [-18, 18],
# an odd degree-9 numerator over an even degree-10 denominator, + 0.5, clamped to [0, 1].
_LOGISTIC_RANGE = (np.float32(-18.0), np.float32(18.0))
_LOGISTIC_ALPHA = tuple(np.float32(a) for a in (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                                                8.51377133304701e-03, 2.48287947061529e-01))
_LOGISTIC_BETA = tuple(np.float32(b) for b in (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
                                               1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01))
HARDSWISH_ALPHA = np.float32(1.0 / 6.0)


def mlas_logistic(x: np.ndarray) -> np.ndarray:
    """onnxruntime's float32 logistic: v = clamp(x, -18, 18), v2 = fp32(v * v),
    p = fp32(v * (((a9 v2 + a7) v2 + a5) v2 + a3) v2 + a1), q = ((((b10 v2 + b8) v2 + b6) v2 + b4) v2 + b2) v2 + b0
    (Horner, each multiply and add rounded to float32), result clamp(fp32(fp32(p / q) + 0.5), 0, 1)."""
    f = np.float32
    v = np.minimum(_LOGISTIC_RANGE[1], np.maximum(_LOGISTIC_RANGE[0], np.asarray(x, dtype=f)))
    v2 = (v * v).astype(f)

    def horner(coefficients: tuple[np.float32, ...]) -> np.ndarray:
        acc = np.full(v2.shape, coefficients[0], dtype=f)
        for c in coefficients[1:]:
            acc = ((acc * v2).astype(f) + c).astype(f)
        return acc

    p = (horner(_LOGISTIC_ALPHA) * v).astype(f)
    q = horner(_LOGISTIC_BETA)
    return np.clip(((p / q).astype(f) + f(0.5)).astype(f), f(0.0), f(1.0))


def _hardsigmoid_f32(x: np.ndarray, alpha: np.float32, beta: np.float32) -> np.ndarray:
    f = np.float32
    return np.minimum(np.maximum(((x * alpha).astype(f) + beta).astype(f), f(0.0)), f(1.0))


def function_f32(function: str, x: np.ndarray, params: Sequence[float] = ()) -> np.ndarray:
    """v = f(x) in float32, as the module docstring states."""
    x = np.asarray(x, dtype=np.float32)
    if function == "identity":
        return x.copy()
    if function == "hardsigmoid":
        return _hardsigmoid_f32(x, np.float32(params[0]), np.float32(params[1]))
    if function == "hardswish":
        return (x * _hardsigmoid_f32(x, HARDSWISH_ALPHA, np.float32(0.5))).astype(np.float32)
    if function == "sigmoid":
        return mlas_logistic(x)
    if function == "silu":
        return (x * mlas_logistic(x)).astype(np.float32)
    raise ValueError(f"unknown table function {function!r}")


def _logistic64(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # 1 / (1 + exp(-x)) without overflow


def function_f64(function: str, x: np.ndarray, params: Sequence[float] = ()) -> np.ndarray:
    """The exact f in float64 (the relaxed op's)."""
    x = np.asarray(x, dtype=np.float64)
    if function == "identity":
        return x.copy()
    if function == "hardsigmoid":
        return np.clip(x * float(np.float32(params[0])) + float(np.float32(params[1])), 0.0, 1.0)
    if function == "hardswish":
        return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    if function == "sigmoid":
        return _logistic64(x)
    if function == "silu":
        return x * _logistic64(x)
    raise ValueError(f"unknown table function {function!r}")


def derivative_f64(function: str, x: np.ndarray, params: Sequence[float] = ()) -> np.ndarray:
    """f'(x) in float64 (one-sided choices at the kinks of the piecewise functions: 0 outside the open range)."""
    x = np.asarray(x, dtype=np.float64)
    if function == "identity":
        return np.ones_like(x)
    if function == "hardsigmoid":
        alpha, beta = float(np.float32(params[0])), float(np.float32(params[1]))
        t = alpha * x + beta
        return np.where((t > 0.0) & (t < 1.0), alpha, 0.0)
    if function == "hardswish":
        return np.where(x <= -3.0, 0.0, np.where(x >= 3.0, 1.0, (2.0 * x + 3.0) / 6.0))
    if function == "sigmoid":
        s = _logistic64(x)
        return s * (1.0 - s)
    if function == "silu":
        s = _logistic64(x)
        return s * (1.0 + x * (1.0 - s))
    raise ValueError(f"unknown table function {function!r}")


def lut_tables(function: str, params: Sequence[float], input_q: QuantParamsAttr, output_q: QuantParamsAttr
               ) -> tuple[np.ndarray, np.ndarray]:
    """(table int8[256], slope float32[256]) indexed by code + 128: the forward table and the gradient's
    slopes d[q] (0 where the table entry was clamped), as the module docstring states."""
    x = numerics.dequantize(CODES, scale=input_q.scale, zero_point=input_q.zp)
    v = function_f32(function, x, params)
    table = numerics.quantize(v, scale=output_q.scale, zero_point=output_q.zp)
    rounded = np.rint((v / np.float32(output_q.scale)).astype(np.float32)).astype(np.float64) + output_q.zp
    inside = (rounded >= INT8_MIN) & (rounded <= INT8_MAX)
    m = float(np.float32(input_q.scale)) / float(np.float32(output_q.scale))
    slope = np.where(inside, derivative_f64(function, x.astype(np.float64), params) * m, 0.0).astype(np.float32)
    return table, slope


def lut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """`qtrain.lut`: y = table[x + 128]."""
    return table[np.asarray(x).astype(np.int32) - INT8_MIN]


def lut_relaxed(x: np.ndarray, function: str, params: Sequence[float], input_q: QuantParamsAttr,
                output_q: QuantParamsAttr) -> tuple[np.ndarray, np.ndarray]:
    """The relaxed op (float64, exact f, no rint, clamp kept): (clamp(u), inside)."""
    sx, sy = float(np.float32(input_q.scale)), float(np.float32(output_q.scale))
    u = function_f64(function, (np.asarray(x, dtype=np.float64) - input_q.zp) * sx, params) / sy + output_q.zp
    inside = (u >= INT8_MIN) & (u <= INT8_MAX)
    return np.clip(u, float(INT8_MIN), float(INT8_MAX)), inside


def lut_grad(grad: np.ndarray, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """`qtrain.lut_grad` in int8 mode: g_x = fp32(g_y * slope[x + 128])."""
    return (np.asarray(grad, dtype=np.float32) * slope[np.asarray(x).astype(np.int32) - INT8_MIN]).astype(np.float32)


def lut_grad_relaxed(grad: np.ndarray, x: np.ndarray, function: str, params: Sequence[float],
                     input_q: QuantParamsAttr, output_q: QuantParamsAttr) -> np.ndarray:
    """The exact derivative of `lut_relaxed` applied to `grad` (float64)."""
    sx, sy = float(np.float32(input_q.scale)), float(np.float32(output_q.scale))
    real = (np.asarray(x, dtype=np.float64) - input_q.zp) * sx
    _, inside = lut_relaxed(x, function, params, input_q, output_q)
    return np.asarray(grad, dtype=np.float64) * np.where(inside, derivative_f64(function, real, params) * sx / sy, 0.0)


# -- ops --------------------------------------------------------------------------------------------------


class _TableProps:
    """The properties both ops compute the tables from."""

    def table_params(self) -> tuple[float, ...]:
        p = self.params  # type: ignore[attr-defined]
        return tuple(p.get_values()) if p is not None else ()

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        return lut_tables(self.function.data, self.table_params(), self.input_q, self.output_q)  # type: ignore

    def verify_table(self: Any) -> None:
        name = self.function.data
        if name not in FUNCTIONS:
            raise VerifyException(f"{self.name}: unknown function '{name}'; one of {', '.join(FUNCTIONS)}")
        if len(self.table_params()) != FUNCTIONS[name]:
            raise VerifyException(f"{self.name}: {name} takes {FUNCTIONS[name]} params, got {len(self.table_params())}")
        expect_per_tensor(self.input_q, "input_q", self)
        expect_per_tensor(self.output_q, "output_q", self)


def _props(function: str, params: Sequence[float], input_q: QuantParamsAttr, output_q: QuantParamsAttr
           ) -> dict[str, Attribute]:
    props: dict[str, Attribute] = {"function": StringAttr(function), "input_q": input_q, "output_q": output_q}
    if params:
        props["params"] = F32ArrayAttr.get(list(params))
    return props


@irdl_op_definition
class LutOp(IRDLOperation, _TableProps, QuantizedOp, DifferentiableOp, GoldenModelOp, KernelCallOp):
    """int8 -> int8 through a 256-entry table of `function` (same shape): y = table[x]."""

    name = "qtrain.lut"
    input = operand_def(TensorType)
    output = result_def(TensorType)
    function = prop_def(StringAttr)
    params = opt_prop_def(F32ArrayAttr)
    input_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure(), ElementwiseInPlace())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input attr-dict `:` type($input) `->` type($output)"

    def __init__(self, input: SSAValue | Operation, function: str, *, input_q: QuantParamsAttr,
                 output_q: QuantParamsAttr, params: Sequence[float] = ()):
        super().__init__(operands=[input], result_types=[SSAValue.get(input).type],
                         properties=_props(function, params, input_q, output_q))

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        expect_element(x, i8, "input", self)
        if x != y:
            raise VerifyException(f"{self.name}: input and output must have the same type, got {x} and {y}")
        self.verify_table()

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("input_q", self.input, self.input_q),)

    def build_backward(self, builder: BackwardBuilder) -> None:
        g = builder.grad(self.output)
        assert g is not None
        gx = builder.emit(LutGradOp(g, self.input, self.function.data, input_q=self.input_q, output_q=self.output_q,
                                    params=self.table_params()))
        builder.accumulate(self.input, gx.results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if run.relaxed:
            y, inside = lut_relaxed(args[0], self.function.data, self.table_params(), self.input_q, self.output_q)
            run.record_mask(self, inside)
            return (y,)
        return (lut(args[0], self.tables()[0]),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_lut_s8",
            (kc.Tensor(self.input), kc.I32(math.prod(shape_of(self.input))), kc.Ints("lut", self.tables()[0].tolist()),
             kc.Tensor(self.output)),
            returns="void",
        ),)


@irdl_op_definition
class LutGradOp(IRDLOperation, _TableProps, GoldenModelOp, KernelCallOp):
    """dL/dx of `qtrain.lut` (fp32): g_x = g_y * slope[x], the slope table of the same function and quantization."""

    name = "qtrain.lut_grad"
    grad = operand_def(TensorType)
    input = operand_def(TensorType)
    result = result_def(TensorType)
    function = prop_def(StringAttr)
    params = opt_prop_def(F32ArrayAttr)
    input_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure(), ElementwiseInPlace())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$grad `,` $input attr-dict `:` `(` type($grad) `,` type($input) `)` `->` type($result)"

    def __init__(self, grad: SSAValue | Operation, input: SSAValue | Operation, function: str, *,
                 input_q: QuantParamsAttr, output_q: QuantParamsAttr, params: Sequence[float] = ()):
        super().__init__(operands=[grad, input], result_types=[SSAValue.get(grad).type],
                         properties=_props(function, params, input_q, output_q))

    def verify_(self) -> None:
        g = tensor_type(self.grad, "grad", self)
        x = tensor_type(self.input, "input", self)
        r = tensor_type(self.result, "result", self)
        expect_element(g, f32, "grad", self)
        expect_element(x, i8, "input", self)
        if g != r or g.get_shape() != x.get_shape():
            raise VerifyException(f"{self.name}: grad {g}, input {x} and result {r} must have the same shape")
        self.verify_table()

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        grad, x = args
        if run.relaxed:
            return (lut_grad_relaxed(grad, x, self.function.data, self.table_params(), self.input_q, self.output_q),)
        return (lut_grad(grad, x, self.tables()[1]),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_lut_grad_f32",
            (kc.Tensor(self.grad), kc.Tensor(self.input), kc.I32(math.prod(shape_of(self.grad))),
             kc.Floats("lut_slope", self.tables()[1].tolist()), kc.Tensor(self.result)),
            returns="void",
        ),)


OPS: list[type[IRDLOperation]] = [LutOp, LutGradOp]

__all__ = ["FUNCTIONS", "OPS", "LutGradOp", "LutOp", "lut_tables", "mlas_logistic"]
