"""`qtrain.group_norm` and its gradients (dialects/qtrain/group_norm.py) against independent references: a
naive per-group GroupNorm from the definition (PyTorch's nn.GroupNorm: biased variance, eps inside the
square root) in float64, hand-computed values, central finite differences of the relaxed op (the existing
gradient-test standard) for the input, gamma and beta, explicit float32 loops for the sequential sums, and
autodiff through a model that holds the op."""

from __future__ import annotations

import numpy as np
import pytest
from testpaths import LIT_INPUTS
from xdsl.dialects.builtin import TensorType, f32, i8
from xdsl.ir import Block
from xdsl.utils.exceptions import VerifyException

from qtrain.dialects.qtrain import QuantParamsAttr
from qtrain.dialects.qtrain.group_norm import (
    GroupNormOp,
    group_norm,
    group_norm_gamma_grad,
    group_norm_input_grad,
    group_norm_relaxed,
    group_statistics,
    integer_epsilon,
)
from qtrain.interpreter import ModelInterpreter, load_module
from qtrain.numerics import bias_grad

# (NHWC shape, groups): 8 channels per group (TinyTL), odd group sizes, one group, batch 2, a 1x1 map
CASES = [((1, 4, 5, 16), 2), ((1, 3, 3, 6), 2), ((1, 2, 7, 5), 1), ((2, 3, 4, 12), 4), ((1, 1, 1, 16), 2)]


def naive_group_norm(d: np.ndarray, gamma: np.ndarray, beta: np.ndarray, groups: int, eps: float) -> np.ndarray:
    """GroupNorm from the definition, one (sample, group) at a time, float64."""
    n, h, w, c = d.shape
    cpg = c // groups
    y = np.empty_like(d, dtype=np.float64)
    for b in range(n):
        for g in range(groups):
            block = d[b, :, :, g * cpg:(g + 1) * cpg].astype(np.float64)
            mean = block.mean()
            var = ((block - mean) ** 2).mean()
            y[b, :, :, g * cpg:(g + 1) * cpg] = (block - mean) / np.sqrt(var + eps)
    return y * gamma + beta


def params(rng: np.random.Generator, c: int) -> tuple[np.ndarray, np.ndarray]:
    return (rng.normal(size=c) * 20).astype(np.float32), (rng.normal(size=c) * 5).astype(np.float32)


@pytest.mark.parametrize("shape, groups", CASES)
def test_relaxed_op_is_group_norm(shape: tuple[int, ...], groups: int):
    rng = np.random.default_rng(sum(shape))
    x = rng.uniform(-100, 100, shape)
    gamma, beta = params(rng, shape[3])
    eps_q = integer_epsilon(1e-5, 0.01)
    y, inside = group_norm_relaxed(x, gamma, beta, groups=groups, epsilon_q=eps_q, input_zero_point=7,
                                   output_zero_point=-3)
    expect = naive_group_norm(x - 7, gamma.astype(np.float64), beta.astype(np.float64), groups, float(eps_q)) - 3
    np.testing.assert_allclose(y, np.clip(expect, -128, 127), atol=1e-9)
    np.testing.assert_array_equal(inside, (expect >= -128) & (expect <= 127))


@pytest.mark.parametrize("shape, groups", CASES)
def test_int8_op_is_the_rounded_group_norm(shape: tuple[int, ...], groups: int):
    rng = np.random.default_rng(3 + sum(shape))
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    gamma, beta = params(rng, shape[3])
    eps_q = integer_epsilon(1e-5, 0.02)
    y, inside = group_norm(x, gamma, beta, groups=groups, epsilon_q=eps_q, input_zero_point=-5, output_zero_point=4,
                           clamp=(-10, 127))
    real = naive_group_norm(x.astype(np.float64) + 5, gamma.astype(np.float64), beta.astype(np.float64), groups,
                            float(eps_q)) + 4
    expect = np.clip(np.rint(real), -10, 127)
    # fp32 statistics vs exact: equal except within float32 rounding of a .5 tie
    assert np.abs(y.astype(np.float64) - expect).max() <= 1
    assert (y == expect).mean() > 0.98
    np.testing.assert_array_equal(inside, (np.rint(real) >= -10) & (np.rint(real) <= 127))


def test_hand_computed_values():
    """One group of four values d = [-3, -1, 1, 3]: mean 0, var 5, xhat = d / sqrt(5 + eps)."""
    x = np.array([-3, -1, 1, 3], dtype=np.int8).reshape(1, 1, 4, 1)
    gamma, beta = np.array([10.0], np.float32), np.array([2.0], np.float32)
    y, _ = group_norm(x, gamma, beta, groups=1, epsilon_q=np.float32(1e-6), input_zero_point=0, output_zero_point=0)
    np.testing.assert_array_equal(y.reshape(-1), np.rint(np.array([-3, -1, 1, 3]) / np.sqrt(5) * 10 + 2))
    assert list(y.reshape(-1)) == [-11, -2, 6, 15]


def test_gamma_zero_writes_exactly_the_zero_point():
    """gamma = beta = 0 (a lite residual module's last norm at initialisation) gives exactly zy everywhere."""
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, 4, 4, 16), dtype=np.int8)
    zeros = np.zeros(16, np.float32)
    y, inside = group_norm(x, zeros, zeros, groups=2, epsilon_q=np.float32(1e-3), input_zero_point=-128,
                           output_zero_point=0)
    assert (y == 0).all() and inside.all()


def test_statistics_of_a_large_group_are_exact_integers_rounded_once():
    """M2 = n S2 - S1^2 far above 2^24: the variance comes from the exact integer, rounded to float32 once."""
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (1, 64, 64, 16), dtype=np.int8)
    mean, inv_std, n = group_statistics(x, 3, 2, np.float32(0.5))
    d = x.astype(np.int64) - 3
    for g in range(2):
        block = d[..., g * 8:(g + 1) * 8].ravel()
        m2 = n * int((block * block).sum()) - int(block.sum()) ** 2
        assert m2 > 2**40
        var = np.float32(np.float32(np.float32(m2) / np.float32(n)) / np.float32(n))
        assert mean[0, g] == np.float32(np.float32(block.sum()) / np.float32(n))
        assert inv_std[0, g] == np.float32(1) / np.sqrt(np.float32(var + np.float32(0.5)))


@pytest.mark.parametrize("shape, groups", CASES[:4])
def test_gradients_match_finite_differences(shape: tuple[int, ...], groups: int):
    """d<r, group_norm_relaxed(x, gamma, beta)>/d(x, gamma, beta) = the three gradient kernels applied to
    r * mask, by central differences on every element (clamped outputs included)."""
    rng = np.random.default_rng(11 + sum(shape))
    x = rng.uniform(-60, 60, shape)
    gamma, beta = params(rng, shape[3])
    gamma, beta = gamma.astype(np.float64) * 0.3, beta.astype(np.float64)
    kwargs = dict(groups=groups, epsilon_q=np.float32(0.25), input_zero_point=2)
    zy, clamp = -4, (-12, 10)
    r = rng.normal(size=shape)

    def f(xv: np.ndarray, gv: np.ndarray, bv: np.ndarray) -> float:
        y, _ = group_norm_relaxed(xv, gv, bv, output_zero_point=zy, clamp=clamp, **kwargs)
        return float((r * y).sum())

    _, inside = group_norm_relaxed(x, gamma, beta, output_zero_point=zy, clamp=clamp, **kwargs)
    assert 0.05 < inside.mean() < 1, "the clamp must bite somewhere for the mask to be checked"
    g = r * inside
    grads = {
        "x": group_norm_input_grad(x, g, gamma, **kwargs),
        "gamma": group_norm_gamma_grad(x, g, **kwargs),
        "beta": bias_grad(g),
    }
    assert all(v.dtype == np.float64 for v in grads.values())
    h = 1e-5
    for which, value in (("x", x), ("gamma", gamma), ("beta", beta)):
        scale = 1 + np.abs(grads[which]).max()
        for idx in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[idx] += h
            down[idx] -= h
            args_up = {"x": x, "gamma": gamma, "beta": beta, which: up}
            args_down = {"x": x, "gamma": gamma, "beta": beta, which: down}
            fd = (f(args_up["x"], args_up["gamma"], args_up["beta"])
                  - f(args_down["x"], args_down["gamma"], args_down["beta"])) / (2 * h)
            assert abs(fd - grads[which][idx]) <= 1e-6 * scale, (which, idx, fd, grads[which][idx])


def test_float32_gradients_are_sequential_float32_sums():
    """The float32 kernels: each sum is taken one float32 add at a time in the documented order."""
    rng = np.random.default_rng(8)
    shape, groups, zx = (1, 3, 4, 8), 2, 5
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    g = rng.normal(size=shape).astype(np.float32)
    gamma = rng.normal(size=8).astype(np.float32)
    eps_q = np.float32(0.1)
    mean, inv_std, n = group_statistics(x, zx, groups, eps_q)
    d = (x.astype(np.int32) - zx).astype(np.float32)
    xhat = np.empty(shape, np.float32)
    for c in range(8):
        xhat[..., c] = ((d[..., c] - mean[0, c // 4]).astype(np.float32) * inv_std[0, c // 4]).astype(np.float32)
    want_gamma = np.zeros(8, np.float32)
    for p in np.ndindex(shape[:3]):
        want_gamma = (want_gamma + (g[p] * xhat[p]).astype(np.float32)).astype(np.float32)
    got_gamma = group_norm_gamma_grad(x, g, groups=groups, epsilon_q=eps_q, input_zero_point=zx)
    np.testing.assert_array_equal(got_gamma, want_gamma)
    want_x = np.empty(shape, np.float32)
    for grp in range(groups):
        sl = slice(4 * grp, 4 * grp + 4)
        a = b = np.float32(0)
        for p in np.ndindex(shape[:3]):
            for c in range(sl.start, sl.stop):
                dxh = np.float32(g[p][c] * gamma[c])
                a = np.float32(a + dxh)
                b = np.float32(b + np.float32(dxh * xhat[p][c]))
        ma, mb = np.float32(a / np.float32(n)), np.float32(b / np.float32(n))
        for p in np.ndindex(shape[:3]):
            for c in range(sl.start, sl.stop):
                dxh = np.float32(g[p][c] * gamma[c])
                inner = np.float32(np.float32(dxh - ma) - np.float32(xhat[p][c] * mb))
                want_x[p][c] = np.float32(inv_std[0, grp] * inner)
    got_x = group_norm_input_grad(x, g, gamma, groups=groups, epsilon_q=eps_q, input_zero_point=zx)
    np.testing.assert_array_equal(got_x, want_x)


def test_qas_scales_both_parameters_by_the_output_scale_squared():
    block = Block(arg_types=[TensorType(i8, [1, 2, 2, 8]), TensorType(f32, [8]), TensorType(f32, [8])])
    op = GroupNormOp(*block.args, groups=1, epsilon=1e-5, input_q=QuantParamsAttr.get(0.1, 0),
                     output_q=QuantParamsAttr.get(0.25, 0))
    gamma = op.trained_param_role(op.gamma, qas=True)
    beta = op.trained_param_role(op.beta, qas=True)
    assert gamma is not None and beta is not None
    assert (gamma.kind, beta.kind) == ("weight", "bias")
    assert gamma.grad_scale == beta.grad_scale == [16.0]
    assert op.trained_param_role(op.gamma, qas=False).grad_scale == [1.0]  # type: ignore[union-attr]
    assert op.trained_param_role(op.input, qas=True) is None


@pytest.mark.parametrize("change, message", [
    (dict(groups=3), "must divide the 8 input channels"),
    (dict(epsilon=0.0), "epsilon must be positive"),
    (dict(gamma_shape=[4]), "gamma must be tensor<8xf32>"),
])
def test_verifier_names_the_rule(change: dict, message: str):
    gamma_shape = change.pop("gamma_shape", [8])
    block = Block(arg_types=[TensorType(i8, [1, 2, 2, 8]), TensorType(f32, gamma_shape), TensorType(f32, [8])])
    kwargs = dict(groups=2, epsilon=1e-5, input_q=QuantParamsAttr.get(0.1, 0), output_q=QuantParamsAttr.get(0.1, 0))
    kwargs.update(change)
    op = GroupNormOp(*block.args, **kwargs)  # type: ignore[arg-type]
    block.add_op(op)
    with pytest.raises(VerifyException, match=message):
        op.verify()


BRANCH_MODEL = LIT_INPUTS / "group_norm_model.mlir"


@pytest.mark.parametrize("param", ["gn0.gamma", "gn0.beta", "conv0.bias", "conv0.weight"])
def test_autodiff_differentiates_through_the_group_norm(param: str):
    """The train_step autodiff builds for a model holding the op computes, in the relaxed mode, the exact
    gradient of the loss w.r.t. GroupNorm's parameters and, through group_norm_input_grad, a conv before it."""
    from qtrain.transforms.autodiff import AutodiffPass

    module = load_module(BRANCH_MODEL)
    AutodiffPass(qas=False).apply(None, module)  # type: ignore[arg-type]
    module.verify()
    text = str(module)
    assert "qtrain.group_norm_input_grad" in text and "qtrain.group_norm_gamma_grad" in text
    rng = np.random.default_rng(0)
    image = rng.integers(-100, 100, (1, 3, 4, 4)).astype(np.int8)
    runner = ModelInterpreter(module, relaxed=True, apply_updates=False)
    runner.call("train_step", image, 1)
    grad = runner.gradients[param]
    assert np.abs(grad).max() > 0
    value = runner.params[param].astype(np.float64)

    def loss(v: np.ndarray) -> float:
        probe = ModelInterpreter(module, relaxed=True, apply_updates=False)
        probe.params[param] = v
        return float(probe.call("train_step", image, 1)[0])

    for idx in list(np.ndindex(value.shape))[:6]:
        up, down = value.copy(), value.copy()
        up[idx] += 1e-4
        down[idx] -= 1e-4
        fd = (loss(up) - loss(down)) / 2e-4
        assert abs(fd - grad[idx]) <= 1e-5 * (1 + np.abs(grad).max()), (idx, fd, grad[idx])


def test_the_model_round_trips_through_the_printer():
    module = load_module(BRANCH_MODEL)
    assert "qtrain.group_norm" in str(module)
    assert str(load_module(str(module) + "\n")) == str(module)
