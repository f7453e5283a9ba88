"""`qtrain.group_norm` (int8 in, fp32 statistics, int8 out, trainable gamma / beta) and its gradients.

GroupNorm (Wu & He, 2018; TinyTL's lite residual modules use it with 8 channels per group): per sample
and per group of C / groups consecutive channels, over the group's H x W x (C / groups) elements,

    y = (x - mean) / sqrt(var + eps) * gamma[c] + beta[c]

with the biased variance, as PyTorch's `nn.GroupNorm` and ONNX `GroupNormalization` (opset 21: gamma
and beta per channel) define it.

Storage of the parameters (a documented choice): gamma and beta are fp32 tensors `[C]` in the
*integer domain of the output*, gamma_q = gamma / s_y and beta_q = beta / s_y, so the op writes
y_q = clamp(rint(xhat * gamma_q[c] + beta_q[c]) + zy) without a further requantization, and their
gradients, like every gradient of qtrain, are taken in the integer domain (dL/dgamma_q, dL/dbeta_q).
Trainable, they get an fp32 SRAM copy updated in place (`qtrain.sgd_update`, f32 storage). The input
scale only enters through eps: xhat is invariant to the input scale, so in the integer domain of x it
is xhat = (d - mean_d) / sqrt(var_d + eps_q), d = x - zx, eps_q = fp32(eps / fp32(s_x * s_x)).

QAS-like scaling (`ParamConsumerOp.trained_param_role`): an SGD step on gamma_q that equals the float
step on gamma = s_y * gamma_q needs dL/dgamma_q / s_y^2 (dL/dgamma = dL/dgamma_q / s_y, and
delta gamma_q = delta gamma / s_y), exactly as QAS scales a weight stored in units of s_w by s_w^-2.
Both gamma and beta therefore get grad_scale = s_y^-2; gamma trains as a "weight" (the weight
learning rate), beta as a "bias" (the bias learning rate).

Forward numerics (the contract the C kernel `qtrain_group_norm_s8` reproduces bit for bit; fp32(e): one
IEEE float32 operation at a time, no fused multiply-add; n = H * W * C / groups elements per group):

    S1 = sum d,  S2 = sum d^2   (exact integers, int64),   d = x - zx
    M2 = n * S2 - S1 * S1       (exact, int64, >= 0)
    mean = fp32(fp32(S1) / fp32(n));  var = fp32(fp32(fp32(M2) / fp32(n)) / fp32(n))
    inv_std = fp32(1 / fp32(sqrt(fp32(var + eps_q))))      (sqrt correctly rounded)
    a[c] = fp32(inv_std * gamma_q[c]);  b[c] = fp32(beta_q[c] - fp32(mean * a[c]))
    y = clamp(rint(fp32(fp32(fp32(d) * a[c]) + b[c])) + zy, lo, hi)      mask: the clamp left it unchanged

`clamp` [lo, hi] fuses a following ReLU (lo = zy) as for conv2d. The float-relaxed op (float64, no
rint, clamp kept) computes y = (d - mean) / sqrt(var + eps_q) * gamma_q + beta_q + zy on real-valued
codes; the gradients below are its exact derivatives (rounding straight-through).

Backward (after `qtrain.requant_grad` has applied the mask; the multiplier is 1: the op's output is
already in integer units), with xhat = fp32(fp32(fp32(d) - mean) * inv_std) recomputed from the saved
int8 input, per group (sums over its n elements, in memory order: pixels row-major, then the group's
channels ascending; one fp32 accumulator from +0, `acc = fp32(acc + v)`):

    `qtrain.bias_grad`            dbeta_q[c]  = sum over pixels of g                (existing op)
    `qtrain.group_norm_gamma_grad` dgamma_q[c] = sum over pixels of fp32(g * xhat)  (pixels row-major)
    `qtrain.group_norm_input_grad` dxhat = fp32(g * gamma_q[c]);  A = sum dxhat;  B = sum fp32(dxhat * xhat)
                                  mA = fp32(A / fp32(n));  mB = fp32(B / fp32(n))
                                  dx = fp32(inv_std * fp32(fp32(dxhat - mA) - fp32(xhat * mB)))

The golden model takes these sums sequentially in float32, in the same order as the C kernels (DESIGN.md:
a per-channel reduction the C takes sequentially, the golden model takes in the same order and precision).

This module is the whole of the op family on the compiler side: its classes, verifiers, gradient,
golden-model numerics and kernel calls (the dialect picks up the `OPS` of every module of this package).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import (
    I64,
    DenseArrayBase,
    Float32Type,
    FloatAttr,
    IntegerAttr,
    TensorType,
    f32,
    i8,
    i64,
)
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    opt_result_def,
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
    ElementwiseInPlace,
    GoldenModelOp,
    GoldenRun,
    KernelCallOp,
    ParamConsumerOp,
    ParamGradient,
    QuantizedOp,
    SaturatingOp,
    TrainedParamRole,
)
from qtrain.dialects.qtrain.ops import (
    INT8_MAX,
    INT8_MIN,
    clamp_range,
    expect_element,
    expect_per_tensor,
    expect_rank,
    i64_array,
    mask_type,
    shape_of,
    tensor_type,
    verify_clamp,
    verify_mask,
    with_mask_if,
)

# -- numerics -----------------------------------------------------------------------------------------------


def integer_epsilon(epsilon: float, input_scale: float) -> np.float32:
    """eps_q = fp32(eps / fp32(s_x * s_x)): GroupNorm's epsilon in the integer domain of its input."""
    sx = np.float32(input_scale)
    return np.float32(np.float32(epsilon) / np.float32(sx * sx))


def _grouped(x: np.ndarray, groups: int) -> np.ndarray:
    """NHWC [N, H, W, C] -> [N, groups, H * W * C / groups] in memory order within each group (pixels
    row-major, then the group's channels)."""
    n, h, w, c = x.shape
    return x.reshape(n, h * w, groups, c // groups).transpose(0, 2, 1, 3).reshape(n, groups, -1)


def _per_channel(v: np.ndarray, shape: tuple[int, ...], groups: int) -> np.ndarray:
    """A per-(sample, group) array [N, groups] broadcast to NHWC `shape`."""
    n, _, _, c = shape
    return np.repeat(v, c // groups, axis=1).reshape(n, 1, 1, c)


def group_statistics(x: np.ndarray, zero_point: int, groups: int, epsilon_q: np.float32
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, inv_std) float32 [N, groups] of int8 NHWC `x` as the module docstring computes them, and n."""
    d = _grouped(np.asarray(x).astype(np.int64) - int(zero_point), groups)
    n = d.shape[2]
    s1 = d.sum(axis=2)
    s2 = (d * d).sum(axis=2)
    m2 = n * s2 - s1 * s1
    fn = np.float32(n)
    mean = (s1.astype(np.float32) / fn).astype(np.float32)
    var = ((m2.astype(np.float32) / fn).astype(np.float32) / fn).astype(np.float32)
    std = np.sqrt((var + np.float32(epsilon_q)).astype(np.float32)).astype(np.float32)
    inv_std = (np.float32(1.0) / std).astype(np.float32)
    return mean, inv_std, n


def group_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, groups: int, epsilon_q: np.float32,
               input_zero_point: int, output_zero_point: int, clamp: tuple[int, int] = (INT8_MIN, INT8_MAX)
               ) -> tuple[np.ndarray, np.ndarray]:
    """`qtrain.group_norm` on int8 NHWC `x` with fp32 gamma_q / beta_q: (int8 output, saturation mask)."""
    x = np.asarray(x)
    mean, inv_std, _ = group_statistics(x, input_zero_point, groups, epsilon_q)
    g32 = np.asarray(gamma, dtype=np.float32)
    b32 = np.asarray(beta, dtype=np.float32)
    a = (_per_channel(inv_std, x.shape, groups) * g32).astype(np.float32)
    b = (b32 - (_per_channel(mean, x.shape, groups) * a).astype(np.float32)).astype(np.float32)
    d = (x.astype(np.int32) - int(input_zero_point)).astype(np.float32)
    t = ((d * a).astype(np.float32) + b).astype(np.float32)
    r = np.rint(t)
    zy = int(output_zero_point)
    lo, hi = clamp[0] - zy, clamp[1] - zy
    inside = (r >= lo) & (r <= hi)
    r = np.where(np.isnan(r), np.float32(lo), r)
    y = np.clip(r, lo, hi).astype(np.int32) + zy
    return y.astype(np.int8), inside


def _relaxed_statistics(x: np.ndarray, zero_point: int, groups: int, epsilon_q: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(xhat float64 NHWC, inv_std [N, groups]) of real-valued codes `x` (the relaxed op)."""
    d = np.asarray(x, dtype=np.float64) - float(zero_point)
    grouped = _grouped(d, groups)
    mean = grouped.mean(axis=2)
    var = ((grouped - mean[..., None]) ** 2).mean(axis=2)
    inv_std = 1.0 / np.sqrt(var + float(epsilon_q))
    xhat = (d - _per_channel(mean, d.shape, groups)) * _per_channel(inv_std, d.shape, groups)
    return xhat, inv_std


def group_norm_relaxed(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, groups: int, epsilon_q: np.float32,
                       input_zero_point: int, output_zero_point: int,
                       clamp: tuple[int, int] = (INT8_MIN, INT8_MAX)) -> tuple[np.ndarray, np.ndarray]:
    """The float-relaxed op (float64, no rint, clamp kept): what the gradients are the exact derivative of."""
    xhat, _ = _relaxed_statistics(x, input_zero_point, groups, float(epsilon_q))
    u = xhat * np.asarray(gamma, dtype=np.float64) + np.asarray(beta, dtype=np.float64) + float(output_zero_point)
    inside = (u >= clamp[0]) & (u <= clamp[1])
    return np.clip(u, float(clamp[0]), float(clamp[1])), inside


def _xhat_f32(x: np.ndarray, zero_point: int, groups: int, epsilon_q: np.float32) -> tuple[np.ndarray, np.ndarray, int]:
    """(xhat float32 NHWC, inv_std [N, groups], n): xhat = fp32(fp32(fp32(d) - mean) * inv_std)."""
    mean, inv_std, n = group_statistics(x, zero_point, groups, epsilon_q)
    d = (np.asarray(x).astype(np.int32) - int(zero_point)).astype(np.float32)
    centred = (d - _per_channel(mean, d.shape, groups)).astype(np.float32)
    return (centred * _per_channel(inv_std, d.shape, groups)).astype(np.float32), inv_std, n


def _sequential_sum(v: np.ndarray, axis: int) -> np.ndarray:
    """Sum along `axis` one float32 add at a time from +0, in index order (what the C kernels do)."""
    v = np.asarray(v, dtype=np.float32)
    if v.shape[axis] == 0:
        return np.zeros(np.delete(v.shape, axis), dtype=np.float32)
    return np.take(np.cumsum(v, axis=axis, dtype=np.float32), -1, axis=axis) + np.float32(0.0)


def group_norm_gamma_grad(x: np.ndarray, grad: np.ndarray, *, groups: int, epsilon_q: np.float32,
                          input_zero_point: int) -> np.ndarray:
    """`qtrain.group_norm_gamma_grad`: dgamma_q[c] = sum over pixels of fp32(g * xhat) (float32, sequential in
    pixel order); float64 `grad` (relaxed mode): the exact float64 sum with the relaxed xhat."""
    g = np.asarray(grad)
    c = g.shape[3]
    if g.dtype == np.float64:
        xhat, _ = _relaxed_statistics(x, input_zero_point, groups, float(epsilon_q))
        return (g * xhat).reshape(-1, c).sum(axis=0)
    xhat, _, _ = _xhat_f32(x, input_zero_point, groups, epsilon_q)
    products = (g.astype(np.float32) * xhat).astype(np.float32).reshape(-1, c)
    return _sequential_sum(products, 0)


def group_norm_input_grad(x: np.ndarray, grad: np.ndarray, gamma: np.ndarray, *, groups: int,
                          epsilon_q: np.float32, input_zero_point: int) -> np.ndarray:
    """`qtrain.group_norm_input_grad` as the module docstring computes it (float32, sums sequential in each
    group's memory order); float64 `grad` (relaxed mode): the exact derivative in float64."""
    g = np.asarray(grad)
    if g.dtype == np.float64:
        xhat, inv_std = _relaxed_statistics(x, input_zero_point, groups, float(epsilon_q))
        dxhat = g * np.asarray(gamma, dtype=np.float64)
        mean_a = _grouped(dxhat, groups).mean(axis=2)
        mean_b = _grouped(dxhat * xhat, groups).mean(axis=2)
        shape = g.shape
        return _per_channel(inv_std, shape, groups) * (
            dxhat - _per_channel(mean_a, shape, groups) - xhat * _per_channel(mean_b, shape, groups))
    xhat, inv_std, n = _xhat_f32(x, input_zero_point, groups, epsilon_q)
    dxhat = (g.astype(np.float32) * np.asarray(gamma, dtype=np.float32)).astype(np.float32)
    fn = np.float32(n)
    mean_a = (_sequential_sum(_grouped(dxhat, groups), 2) / fn).astype(np.float32)
    mean_b = (_sequential_sum(_grouped((dxhat * xhat).astype(np.float32), groups), 2) / fn).astype(np.float32)
    shape = g.shape
    inner = ((dxhat - _per_channel(mean_a, shape, groups)).astype(np.float32)
             - (xhat * _per_channel(mean_b, shape, groups)).astype(np.float32)).astype(np.float32)
    return (_per_channel(inv_std, shape, groups) * inner).astype(np.float32)


# -- ops --------------------------------------------------------------------------------------------------------


class _GroupNormGeometry:
    """The properties the forward op and its gradients share: groups, epsilon and the input quantization."""

    def group_count(self) -> int:
        return self.groups.value.data  # type: ignore[attr-defined]

    def epsilon_q(self) -> np.float32:
        return integer_epsilon(self.epsilon.value.data, self.input_q.scale)  # type: ignore[attr-defined]

    def verify_geometry(self: Any, x: TensorType[Attribute]) -> None:
        expect_element(x, i8, "input", self)
        expect_rank(x, 4, "input", self, "NHWC")
        groups, channels = self.group_count(), x.get_shape()[3]
        if groups < 1 or channels % groups:
            raise VerifyException(f"{self.name}: groups = {groups} must divide the {channels} input channels")
        expect_per_tensor(self.input_q, "input_q", self)
        eps = self.epsilon.value.data
        if not (eps > 0 and math.isfinite(eps)) or not (self.epsilon_q() > 0 and np.isfinite(self.epsilon_q())):
            raise VerifyException(f"{self.name}: epsilon must be positive and stay positive and finite in the "
                                  f"input's integer domain (eps / s_x^2), got {eps}")

    def kernel_prefix(self) -> tuple[kc.CallArg, ...]:
        """The arguments every group-norm kernel starts with: shape, saved input, its zero point, groups, eps_q."""
        return (kc.Shape(shape_of(self.input)), kc.Tensor(self.input), kc.I32(self.input_q.zp),  # type: ignore
                kc.I32(self.group_count()), kc.F32(float(self.epsilon_q())))


def _channel_vector(op: Operation, value: SSAValue, channels: int, what: str) -> None:
    t = tensor_type(value, what, op)
    expect_element(t, f32, what, op)
    if t.get_shape() != (channels,):
        raise VerifyException(f"{op.name}: {what} must be tensor<{channels}xf32> (one per channel), got {t}")


@irdl_op_definition
class GroupNormOp(IRDLOperation, _GroupNormGeometry, QuantizedOp, SaturatingOp, DifferentiableOp, ParamConsumerOp,
                  GoldenModelOp, KernelCallOp):
    """GroupNorm of an int8 NHWC tensor, fp32 statistics: y = clamp(rint(xhat * gamma_q[c] + beta_q[c]) + zy)."""

    name = "qtrain.group_norm"
    input = operand_def(TensorType)
    gamma = operand_def(TensorType)
    beta = operand_def(TensorType)
    output = result_def(TensorType)
    mask = opt_result_def(TensorType)
    """Training only: i1 per output element, 1 where the clamp left the rounded value unchanged."""
    groups = prop_def(IntegerAttr[I64])
    epsilon = prop_def(FloatAttr[Float32Type])
    """eps of the real-valued op (added to the variance of the real input)"""
    input_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    clamp = opt_prop_def(DenseArrayBase.constr(i64))
    """[lo, hi]: a fused ReLU as an int8 output range; absent = [-128, 127]."""
    traits = traits_def(Pure())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$input `,` $gamma `,` $beta attr-dict `:` `(` type($input) `,` type($gamma) `,` type($beta) `)` "
        "`->` type($output) (`,` type($mask)^)?"
    )

    def __init__(self, input: SSAValue | Operation, gamma: SSAValue | Operation, beta: SSAValue | Operation, *,
                 groups: int, epsilon: float, input_q: QuantParamsAttr, output_q: QuantParamsAttr,
                 clamp: Sequence[int] | None = None, with_mask: bool = False):
        out_type = SSAValue.get(input).type
        props: dict[str, Attribute] = {"groups": IntegerAttr(groups, i64), "epsilon": FloatAttr(float(epsilon), f32),
                                       "input_q": input_q, "output_q": output_q}
        if clamp is not None:
            props["clamp"] = i64_array(clamp)
        super().__init__(operands=[input, gamma, beta],
                         result_types=[out_type, mask_type(out_type) if with_mask else []], properties=props)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        y = tensor_type(self.output, "output", self)
        self.verify_geometry(x)
        expect_element(y, i8, "output", self)
        if y.get_shape() != x.get_shape():
            raise VerifyException(f"{self.name}: output must have the input's shape {x}, got {y}")
        channels = x.get_shape()[3]
        _channel_vector(self, self.gamma, channels, "gamma")
        _channel_vector(self, self.beta, channels, "beta")
        expect_per_tensor(self.output_q, "output_q", self)
        verify_clamp(self, self.clamp)
        verify_mask(self, self.output, self.mask)

    # -- interfaces ---------------------------------------------------------------------------------------

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q if result is self.output else None

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("input_q", self.input, self.input_q),)

    def can_saturate(self) -> bool:
        return True  # gamma and beta are unbounded: any output can reach the clamp

    def trained_param_role(self, operand: SSAValue, qas: bool) -> TrainedParamRole | None:
        """gamma trains as a weight, beta as a bias; QAS: both x s_y^-2 (module docstring)."""
        if operand is self.gamma:
            kind = "weight"
        elif operand is self.beta:
            kind = "bias"
        else:
            return None
        if not qas:
            return TrainedParamRole(kind, [1.0])
        sy = float(np.float32(self.output_q.scale))
        return TrainedParamRole(kind, [float(np.float32(1.0 / (sy * sy)))])

    def build_backward(self, builder: BackwardBuilder) -> None:
        from qtrain.dialects.qtrain.grad_ops import BiasGradOp, RequantGradOp

        g = builder.grad(self.output)
        assert g is not None
        g_y = builder.emit(RequantGradOp(g, self.mask, [1.0])).results[0]
        g_y.name_hint = "g_norm"
        if builder.needs_grad(self.beta):
            builder.accumulate(self.beta, builder.emit(BiasGradOp(g_y)).results[0])
        if builder.needs_grad(self.gamma):
            builder.accumulate(self.gamma, builder.emit(GroupNormGammaGradOp(self.input, g_y, self)).results[0])
        if builder.needs_grad(self.input):
            builder.accumulate(self.input,
                               builder.emit(GroupNormInputGradOp(g_y, self.input, self.gamma, self)).results[0])

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, gamma, beta = args
        kernel = group_norm_relaxed if run.relaxed else group_norm
        y, mask = kernel(x, gamma, beta, groups=self.group_count(), epsilon_q=self.epsilon_q(),
                         input_zero_point=self.input_q.zp, output_zero_point=self.output_q.zp,
                         clamp=clamp_range(self.clamp))
        run.record_mask(self, mask)
        return with_mask_if(self, y, mask)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        lo, hi = clamp_range(self.clamp)
        return (kc.KernelCall(
            "qtrain_group_norm_s8",
            (*self.kernel_prefix(), kc.ParamData(self.gamma), kc.ParamData(self.beta), kc.I32(self.output_q.zp),
             kc.I32(lo), kc.I32(hi), kc.Tensor(self.output), kc.Tensor(self.mask)),
            macs=math.prod(shape_of(self.input)),
        ),)


@irdl_op_definition
class GroupNormInputGradOp(IRDLOperation, _GroupNormGeometry, GoldenModelOp, KernelCallOp):
    """dL/dx of a GroupNorm (fp32 NHWC), from dL/dy (mask applied), the saved int8 input and gamma_q."""

    name = "qtrain.group_norm_input_grad"
    grad = operand_def(TensorType)
    input = operand_def(TensorType)
    gamma = operand_def(TensorType)
    result = result_def(TensorType)
    groups = prop_def(IntegerAttr[I64])
    epsilon = prop_def(FloatAttr[Float32Type])
    input_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure(), ElementwiseInPlace())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = (
        "$grad `,` $input `,` $gamma attr-dict `:` `(` type($grad) `,` type($input) `,` type($gamma) `)` "
        "`->` type($result)"
    )

    def __init__(self, grad: SSAValue | Operation, input: SSAValue | Operation, gamma: SSAValue | Operation,
                 forward: GroupNormOp):
        super().__init__(operands=[grad, input, gamma], result_types=[SSAValue.get(grad).type],
                         properties={"groups": forward.groups, "epsilon": forward.epsilon, "input_q": forward.input_q})

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        self.verify_geometry(x)
        for value, what in ((self.grad, "grad"), (self.result, "result")):
            t = tensor_type(value, what, self)
            expect_element(t, f32, what, self)
            if t.get_shape() != x.get_shape():
                raise VerifyException(f"{self.name}: {what} must have the input's shape {x.get_shape()}, got {t}")
        _channel_vector(self, self.gamma, x.get_shape()[3], "gamma")

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        grad, x, gamma = args
        return (group_norm_input_grad(x, grad, gamma, groups=self.group_count(), epsilon_q=self.epsilon_q(),
                                      input_zero_point=self.input_q.zp),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        return (kc.KernelCall(
            "qtrain_group_norm_input_grad_f32",
            (*self.kernel_prefix(), kc.ParamData(self.gamma), kc.Tensor(self.grad), kc.Tensor(self.result)),
            macs=3 * math.prod(shape_of(self.input)),
        ),)


@irdl_op_definition
class GroupNormGammaGradOp(IRDLOperation, _GroupNormGeometry, GoldenModelOp, KernelCallOp):
    """dL/dgamma_q[c] = sum over pixels of g * xhat, fp32 [C], from the saved int8 input and dL/dy."""

    name = "qtrain.group_norm_gamma_grad"
    input = operand_def(TensorType)
    grad = operand_def(TensorType)
    result = result_def(TensorType)
    groups = prop_def(IntegerAttr[I64])
    epsilon = prop_def(FloatAttr[Float32Type])
    input_q = prop_def(QuantParamsAttr)
    traits = traits_def(Pure(), ParamGradient())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "$input `,` $grad attr-dict `:` `(` type($input) `,` type($grad) `)` `->` type($result)"

    def __init__(self, input: SSAValue | Operation, grad: SSAValue | Operation, forward: GroupNormOp):
        channels = shape_of(SSAValue.get(input))[3]
        super().__init__(operands=[input, grad], result_types=[TensorType(f32, [channels])],
                         properties={"groups": forward.groups, "epsilon": forward.epsilon, "input_q": forward.input_q})

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        self.verify_geometry(x)
        g = tensor_type(self.grad, "grad", self)
        expect_element(g, f32, "grad", self)
        if g.get_shape() != x.get_shape():
            raise VerifyException(f"{self.name}: grad must have the input's shape {x.get_shape()}, got {g}")
        _channel_vector(self, self.result, x.get_shape()[3], "result")

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, grad = args
        return (group_norm_gamma_grad(x, grad, groups=self.group_count(), epsilon_q=self.epsilon_q(),
                                      input_zero_point=self.input_q.zp),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        """Fused (`qtrain.fused_update`): the gradient goes to the start of scratch, then into the update."""
        from qtrain.dialects.qtrain.grad_ops import fused_update_of

        update = fused_update_of(self)
        channels = shape_of(self.input)[3]
        out: kc.CallArg = kc.Tensor(self.result) if update is None else kc.FusedGradient(channels)
        arguments = (*self.kernel_prefix(), kc.Tensor(self.grad), out)
        grad_call = kc.KernelCall("qtrain_group_norm_gamma_grad_f32", arguments, macs=math.prod(shape_of(self.input)))
        return (grad_call,) if update is None else (grad_call, update.update_call(out))


OPS: list[type[IRDLOperation]] = [GroupNormOp, GroupNormInputGradOp, GroupNormGammaGradOp]
