"""`qtrain.upsample` / `qtrain.upsample_grad` (dialects/qtrain/upsample.py) against independent references:
a naive per-pixel bilinear resize from the definition (PyTorch's align_corners = False sampling) in
float64, hand-computed values, central finite differences of the relaxed op (the existing gradient-test
standard), the adjoint identity, and autodiff through a model that holds the op."""

from __future__ import annotations

import math

import numpy as np
import pytest
from testpaths import LIT_INPUTS
from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, ModuleOp, TensorType, f32, i8
from xdsl.ir import Block
from xdsl.utils.exceptions import VerifyException

from qtrain.dialects.qtrain import ParamOp, QuantParamsAttr
from qtrain.dialects.qtrain.upsample import (
    UpsampleGradOp,
    UpsampleOp,
    bilinear_taps,
    upsample_bilinear,
    upsample_bilinear_grad,
    upsample_bilinear_relaxed,
)
from qtrain.interpreter import ModelInterpreter, load_module

SIZES = [(2, 4), (3, 7), (4, 8), (1, 5), (5, 2), (7, 3), (6, 6)]


def naive_bilinear(x: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize, align_corners = False, from the definition, one output pixel at a time (float64)."""
    n, h, w, c = x.shape
    oh, ow = out_hw
    y = np.zeros((n, oh, ow, c))

    def source(o: int, size_in: int, size_out: int) -> tuple[int, int, float]:
        s = max((o + 0.5) * size_in / size_out - 0.5, 0.0)
        i0 = math.floor(s)
        return i0, min(i0 + 1, size_in - 1), s - i0

    for oy in range(oh):
        y0, y1, ly = source(oy, h, oh)
        for ox in range(ow):
            x0, x1, lx = source(ox, w, ow)
            y[:, oy, ox] = ((1 - ly) * ((1 - lx) * x[:, y0, x0] + lx * x[:, y0, x1])
                            + ly * ((1 - lx) * x[:, y1, x0] + lx * x[:, y1, x1]))
    return y


@pytest.mark.parametrize("size_in, size_out", SIZES)
def test_taps_follow_the_half_pixel_definition(size_in: int, size_out: int):
    i0, i1, l0, l1 = bilinear_taps(size_in, size_out)
    for o in range(size_out):
        s = max((o + 0.5) * size_in / size_out - 0.5, 0.0)
        assert i0[o] == math.floor(s) and i1[o] == min(math.floor(s) + 1, size_in - 1)
        assert abs(float(l1[o]) - (s - math.floor(s))) < 1e-6 and l0[o] + l1[o] == np.float32(1.0)


@pytest.mark.parametrize("size_in, size_out", SIZES)
def test_relaxed_op_is_the_bilinear_resize(size_in: int, size_out: int):
    rng = np.random.default_rng(size_in * 10 + size_out)
    x = rng.uniform(-60, 60, (2, size_in, size_in + 1, 3))
    out_hw = (size_out, size_out + 2)
    y, inside = upsample_bilinear_relaxed(x, out_hw, input_scale=0.5, input_zero_point=3, output_scale=0.5,
                                          output_zero_point=-4)
    np.testing.assert_allclose(y, naive_bilinear(x - 3, out_hw) - 4, atol=1e-4)
    assert inside.all()


def test_int8_op_is_the_rounded_resize_and_saturates():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 3, 5, 4), dtype=np.int8)
    y, inside = upsample_bilinear(x, (7, 9), input_scale=0.04, input_zero_point=-5, output_scale=0.02,
                                  output_zero_point=10)
    real = naive_bilinear(x.astype(np.float64) + 5, (7, 9)) * 2.0 + 10
    expect = np.clip(np.rint(real), -128, 127)
    # fp32 interpolation vs exact: equal except within float32 rounding of a .5 tie
    assert np.abs(y.astype(np.float64) - expect).max() <= 1
    assert (y == expect).mean() > 0.99
    np.testing.assert_array_equal(inside, (np.rint(real) >= -128) & (np.rint(real) <= 127))
    assert not inside.all(), "M = 2 must saturate somewhere for this test to mean anything"


def test_hand_computed_values():
    x = np.array([0, 100, 40, -40], dtype=np.int8).reshape(1, 2, 2, 1)
    y, _ = upsample_bilinear(x, (4, 4), input_scale=1.0, input_zero_point=0, output_scale=1.0, output_zero_point=0)
    # rows: taps at src -0.25 -> 0 (clamped), 0.25, 0.75, 1.25 -> (1, 1) ; columns alike
    expected_row0 = [0, 25, 75, 100]
    expected_row3 = [40, 20, -20, -40]
    np.testing.assert_array_equal(y[0, 0, :, 0], expected_row0)
    np.testing.assert_array_equal(y[0, 3, :, 0], expected_row3)
    np.testing.assert_array_equal(y[0, 1, :, 0], np.rint(0.75 * np.array(expected_row0) + 0.25 * np.array(
        expected_row3)))


def test_a_1x1_input_broadcasts():
    x = np.array([[[[7, -9]]]], dtype=np.int8)
    y, _ = upsample_bilinear(x, (3, 5), input_scale=0.1, input_zero_point=1, output_scale=0.1, output_zero_point=1)
    assert (y[..., 0] == 7).all() and (y[..., 1] == -9).all()


@pytest.mark.parametrize("size_in, size_out", [(2, 4), (3, 5), (4, 2), (1, 3)])
def test_gradient_matches_finite_differences(size_in: int, size_out: int):
    """d<r, upsample_relaxed(x)>/dx = upsample_grad(r * mask * M), by central differences on every input."""
    rng = np.random.default_rng(size_in + 7 * size_out)
    x = rng.uniform(-40, 40, (1, size_in, size_in + 1, 2))
    out_hw = (size_out, size_out + 1)
    m, zx, zy = 1.5, 2, -3
    kwargs = dict(input_scale=0.3, input_zero_point=zx, output_scale=0.2, output_zero_point=zy)
    r = rng.normal(size=(1, *out_hw, 2))

    def f(values: np.ndarray) -> float:
        return float((r * upsample_bilinear_relaxed(values, out_hw, **kwargs)[0]).sum())

    _, inside = upsample_bilinear_relaxed(x, out_hw, **kwargs)
    grad = upsample_bilinear_grad(r * inside * m, x.shape[1:3])
    assert grad.dtype == np.float64
    h = 1e-4
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        fd = (f(up) - f(down)) / (2 * h)
        assert abs(fd - grad[idx]) <= 1e-7 * (1 + np.abs(grad).max()), idx


def test_gradient_is_the_adjoint_of_the_resize():
    """<resize(x), g> = <x, upsample_grad(g)> for the relaxed resize (the same float32 taps, no clamp)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4, 5))
    g = rng.normal(size=(2, 7, 6, 5))
    y, inside = upsample_bilinear_relaxed(x, (7, 6), input_scale=1.0, input_zero_point=0, output_scale=1.0,
                                          output_zero_point=0)
    assert inside.all()
    assert abs((y * g).sum() - (x * upsample_bilinear_grad(g, (3, 4))).sum()) < 1e-12
    # and the taps' float32 weights are the exact resize's to float32 precision
    np.testing.assert_allclose(y, naive_bilinear(x, (7, 6)), atol=1e-6)


def test_float32_gradient_is_the_reference_sum_of_float32_products():
    rng = np.random.default_rng(4)
    g = rng.normal(size=(1, 5, 5, 2)).astype(np.float32)
    got = upsample_bilinear_grad(g, (2, 3))
    assert got.dtype == np.float32
    (y0, y1, l0y, l1y), (x0, x1, l0x, l1x) = bilinear_taps(2, 5), bilinear_taps(3, 5)
    want = np.zeros((1, 2, 3, 2))
    for oy in range(5):
        for ox in range(5):
            for row, ly in ((y0[oy], l0y[oy]), (y1[oy], l1y[oy])):
                for col, lx in ((x0[ox], l0x[ox]), (x1[ox], l1x[ox])):
                    w = np.float32(ly * lx)
                    want[0, row, col] += (w * g[0, oy, ox]).astype(np.float32)
    np.testing.assert_array_equal(got, want.astype(np.float32))


def q(scale: float, zp: int = 0) -> QuantParamsAttr:
    return QuantParamsAttr.get(scale, zp)


def test_verifier_names_the_rule():
    block = Block(arg_types=[TensorType(i8, [1, 2, 2, 3])])
    bad = UpsampleOp(block.args[0], TensorType(i8, [1, 4, 4, 2]), input_q=q(0.1), output_q=q(0.1))
    block.add_op(bad)
    with pytest.raises(VerifyException, match="keep the input's batch and channels"):
        bad.verify()
    grad_block = Block(arg_types=[TensorType(f32, [1, 4, 4, 3])])
    bad_grad = UpsampleGradOp(grad_block.args[0], TensorType(f32, [2, 2, 2, 3]))
    grad_block.add_op(bad_grad)
    with pytest.raises(VerifyException, match="differ in batch or channels"):
        bad_grad.verify()


def test_mask_only_where_the_clamp_can_bite():
    block = Block(arg_types=[TensorType(i8, [1, 2, 2, 3])])
    same = UpsampleOp(block.args[0], TensorType(i8, [1, 4, 4, 3]), input_q=q(0.1, 5), output_q=q(0.1, 5))
    louder = UpsampleOp(block.args[0], TensorType(i8, [1, 4, 4, 3]), input_q=q(0.1, 5), output_q=q(0.05, 5))
    assert not same.can_saturate() and louder.can_saturate()


BRANCH_MODEL = LIT_INPUTS / "upsample_branch.mlir"


def test_autodiff_differentiates_through_the_upsample():
    """The train_step autodiff builds for a model holding the op computes, in the relaxed mode, the
    exact gradient of the loss: conv0's bias gradient flows back through upsample_grad (FD check)."""
    from qtrain.transforms.autodiff import AutodiffPass

    module = load_module(BRANCH_MODEL)
    assert "qtrain.upsample" in str(module)
    AutodiffPass(qas=False).apply(None, module)  # type: ignore[arg-type]
    module.verify()
    assert "qtrain.upsample_grad" in str(module)
    rng = np.random.default_rng(0)
    image = rng.integers(-100, 100, (1, 2, 3, 2)).astype(np.int8)
    runner = ModelInterpreter(module, relaxed=True, apply_updates=False)
    runner.call("train_step", image, 1)
    grad = runner.gradients["conv0.bias"]
    assert np.abs(grad).max() > 0
    bias = runner.params["conv0.bias"].astype(np.float64)

    def loss(b: np.ndarray) -> float:
        probe = ModelInterpreter(module, relaxed=True, apply_updates=False)
        probe.params["conv0.bias"] = b
        return float(probe.call("train_step", image, 1)[0])

    for i in range(2):
        up, down = bias.copy(), bias.copy()
        up[i] += 1e-3
        down[i] -= 1e-3
        fd = (loss(up) - loss(down)) / 2e-3
        assert abs(fd - grad[i]) <= 1e-6 * (1 + abs(grad[i])), (i, fd, grad[i])


def test_the_model_round_trips_through_the_printer():
    module = load_module(BRANCH_MODEL)
    again = load_module(str(module) + "\n")
    assert str(again) == str(module)
    assert isinstance(module, ModuleOp) and any(isinstance(o, ParamOp) for o in module.ops)
    assert any(isinstance(o, func.FuncOp) and o.function_type == FunctionType.from_lists(
        [TensorType(i8, [1, 2, 3, 2])], [TensorType(i8, [1, 3])]) for o in module.ops)
