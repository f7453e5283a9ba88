"""The kernels of the mobile-CNN op families (host build, portable and DSP defines) against their golden models:
qtrain_lut_s8 / qtrain_lut_grad_f32 (dialects/qtrain/activations.py), qtrain_mul_s8 / qtrain_mul_grad_f32
(mul.py), qtrain_maxpool_s8 / qtrain_maxpool_grad_f32 (maxpool.py) and the channel moves (channels.py).
int8 outputs and masks bit for bit; element-wise fp32 gradients bit for bit; sums within the fp32
summation bound of DESIGN.md."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from armv7em_testing import assert_within_sum_bound, needs_clang

from qtrain.dialects.qtrain import QuantParamsAttr
from qtrain.dialects.qtrain.activations import FUNCTIONS, lut, lut_grad, lut_tables
from qtrain.dialects.qtrain.channels import gather_channels, scatter_channels
from qtrain.dialects.qtrain.maxpool import maxpool, maxpool_grad
from qtrain.dialects.qtrain.mul import mul_grad, mul_multiplier, mul_with_mask
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import F32, I32, Call, Dims, In, Null, Out

pytestmark = needs_clang


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


def q(scale: float, zp: int) -> QuantParamsAttr:
    return QuantParamsAttr.get(scale, zp)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_lut_forward_and_gradient_are_bit_exact(lib: ctypes.CDLL, function: str) -> None:
    params = (1 / 6, 0.5) if function == "hardsigmoid" else ()
    rng = np.random.default_rng(len(function))
    x = rng.integers(-128, 128, (2, 5, 7, 3), dtype=np.int8)
    table, slope = lut_tables(function, params, q(0.05, -7), q(0.02, 20))
    status, (y,) = calls.run_host(lib, Call("qtrain_lut_s8", [In(x), I32(x.size), In(table),
                                                              Out(x.shape, np.dtype(np.int8))], returns="void"))
    np.testing.assert_array_equal(y, lut(x, table))
    g = rng.normal(size=x.shape).astype(np.float32)
    _, (gx,) = calls.run_host(lib, Call("qtrain_lut_grad_f32", [In(g), In(x), I32(x.size), In(slope),
                                                                Out(x.shape, np.dtype(np.float32))], returns="void"))
    np.testing.assert_array_equal(gx, lut_grad(g, x, slope))


@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("quants", [((0.05, -3), (0.02, 10), (0.01, -20)), ((0.2, 100), (0.004, -128), (0.3, 5)),
                                    ((0.03, 0), (0.03, 0), (0.0005, 0))])
def test_mul_forward_is_bit_exact(lib: ctypes.CDLL, broadcast: bool, quants) -> None:  # noqa: ANN001
    (sa, za), (sb, zb), (sy, zy) = quants
    rng = np.random.default_rng(int(broadcast) + za + 200)
    a = rng.integers(-128, 128, (2, 4, 5, 6), dtype=np.int8)
    b = rng.integers(-128, 128, (2, 1, 1, 6) if broadcast else a.shape, dtype=np.int8)
    y, mask = mul_with_mask(a, b, q(sa, za), q(sb, zb), q(sy, zy))
    k = mul_multiplier(q(sa, za), q(sb, zb), q(sy, zy))
    for with_mask in (True, False):
        mask_arg = Out((calls.mask_bytes(y.size),), np.dtype(np.uint8)) if with_mask else Null()
        status, outputs = calls.run_host(lib, Call("qtrain_mul_s8", [
            Dims(a.shape), In(a), I32(za), In(b), I32(int(broadcast)), I32(zb), F32(float(k)), I32(zy),
            Out(a.shape, np.dtype(np.int8)), mask_arg]))
        assert status == 0
        np.testing.assert_array_equal(outputs[0], y)
        if with_mask:
            np.testing.assert_array_equal(calls.unpack_mask(outputs[1], y.shape), mask)


@pytest.mark.parametrize("mode", ["full-by-full", "full-by-broadcast", "broadcast-result"])
def test_mul_grad_matches_the_golden_model(lib: ctypes.CDLL, mode: str) -> None:
    rng = np.random.default_rng(len(mode))
    shape, small = (2, 4, 5, 6), (2, 1, 1, 6)
    g = rng.normal(size=shape).astype(np.float32)
    other = rng.integers(-128, 128, small if mode == "full-by-broadcast" else shape, dtype=np.int8)
    result_shape = small if mode == "broadcast-result" else shape
    reference = mul_grad(g, other, 7, result_shape)
    _, (got,) = calls.run_host(lib, Call("qtrain_mul_grad_f32", [
        Dims(shape), In(g), In(other), I32(int(mode == "full-by-broadcast")), I32(7),
        I32(int(mode == "broadcast-result")), Out(result_shape, np.dtype(np.float32))], returns="void"))
    if mode == "broadcast-result":
        abs_terms = mul_grad(np.abs(g).astype(np.float64), np.abs(other.astype(np.int32) - 7), 0, result_shape)
        assert_within_sum_bound(got, reference, abs_terms, 20)
    else:
        np.testing.assert_array_equal(got, reference)


# (input NHWC, kernel, strides, padding top, left, bottom, right): ResNet's, SqueezeNet's (ceil mode), odd ones
POOLS = [((1, 8, 8, 3), (3, 3), (2, 2), (1, 1, 1, 1)), ((1, 7, 7, 4), (3, 3), (2, 2), (0, 0, 0, 0)),
         ((2, 6, 5, 2), (3, 3), (2, 2), (0, 0, 1, 0)), ((1, 5, 6, 3), (2, 2), (1, 1), (0, 0, 0, 0)),
         ((1, 4, 4, 1), (4, 4), (1, 1), (0, 0, 0, 0))]


@pytest.mark.parametrize("shape, kernel, strides, pads", POOLS)
def test_maxpool_forward_and_gradient(lib: ctypes.CDLL, shape, kernel, strides, pads) -> None:  # noqa: ANN001
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    x[0, 0, 0, 0] = x[0, 0, 1, 0]  # a tie: the first maximal tap takes the gradient
    oh = (shape[1] + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
    ow = (shape[2] + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
    out_shape = (shape[0], oh, ow, shape[3])
    geometry = [I32(kernel[0]), I32(kernel[1]), I32(strides[0]), I32(strides[1]), I32(pads[0]), I32(pads[1])]
    status, (y,) = calls.run_host(lib, Call("qtrain_maxpool_s8", [Dims(shape), In(x), *geometry, Dims(out_shape),
                                                                  Out(out_shape, np.dtype(np.int8))]))
    assert status == 0
    np.testing.assert_array_equal(y, maxpool(x, (oh, ow), kernel, strides, pads[:2]))
    g = rng.normal(size=out_shape).astype(np.float32)
    reference = maxpool_grad(x, g, kernel, strides, pads[:2])
    status, (gx,) = calls.run_host(lib, Call("qtrain_maxpool_grad_f32", [
        Dims(shape), In(x), Dims(out_shape), In(g), *geometry, Out(shape, np.dtype(np.float32))]))
    assert status == 0
    abs_terms = maxpool_grad(x, np.abs(g).astype(np.float64), kernel, strides, pads[:2])
    assert_within_sum_bound(gx, reference, abs_terms, kernel[0] * kernel[1])


def test_maxpool_refuses_a_window_in_the_padding(lib: ctypes.CDLL) -> None:
    x = np.zeros((1, 4, 4, 1), dtype=np.int8)
    status, _ = calls.run_host(lib, Call("qtrain_maxpool_s8", [
        Dims(x.shape), In(x), I32(2), I32(2), I32(2), I32(2), I32(1), I32(1), Dims((1, 4, 4, 1)),
        Out((1, 4, 4, 1), np.dtype(np.int8))]))
    assert status == -1


def test_channel_moves(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (1, 3, 4, 6), dtype=np.int8)
    z = rng.integers(-128, 128, (1, 3, 4, 2), dtype=np.int8)
    out = np.zeros((1, 3, 4, 8), dtype=np.int8)
    for part, offset in ((x, 0), (z, 6)):
        _, (out,) = calls.run_host(lib, Call("qtrain_copy_channels_s8", [
            In(part), I32(12), I32(part.shape[3]), Out(out.shape, np.dtype(np.int8), out), I32(8), I32(offset)],
            returns="void"))
    np.testing.assert_array_equal(out, np.concatenate([x, z], axis=-1))
    shuffle = np.array([0, 3, 1, 4, 2, 5], dtype=np.int32)  # ShuffleNet's, two groups of three
    _, (y,) = calls.run_host(lib, Call("qtrain_gather_channels_s8", [
        In(x), I32(12), I32(6), In(shuffle), I32(6), Out(x.shape, np.dtype(np.int8))], returns="void"))
    np.testing.assert_array_equal(y, gather_channels(x, shuffle))
    g = rng.normal(size=(1, 3, 4, 3)).astype(np.float32)
    picked = np.array([5, 0, 2], dtype=np.int32)
    _, (gx,) = calls.run_host(lib, Call("qtrain_scatter_channels_f32", [
        In(g), I32(12), I32(3), In(picked), I32(6), Out(x.shape, np.dtype(np.float32))], returns="void"))
    np.testing.assert_array_equal(gx, scatter_channels(g, picked, 6))
