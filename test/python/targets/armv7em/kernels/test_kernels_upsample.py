"""qtrain_upsample_bilinear_s8 / qtrain_upsample_bilinear_grad_f32 (host build, portable and DSP) against the
golden model of dialects/qtrain/upsample.py: the int8 forward and its mask bit for bit, the gradient within
the fp32 summation bound of DESIGN.md (each input pixel sums at most a few products)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from armv7em_testing import needs_clang

from qtrain.dialects.qtrain.upsample import bilinear_taps, upsample_bilinear, upsample_bilinear_grad
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import F32, I32, Call, Dims, In, Null, Out

pytestmark = needs_clang
ULP = 2.0**-24

# (input NHWC, output H x W): up, down, odd ratios, a 1x1 broadcast, batch 2
SHAPES = [((1, 2, 2, 3), (4, 4)), ((1, 3, 5, 4), (7, 9)), ((1, 6, 7, 2), (3, 4)), ((1, 1, 1, 5), (3, 6)),
          ((2, 4, 4, 8), (8, 8)), ((1, 5, 3, 1), (5, 3))]


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


@pytest.mark.parametrize("shape, out_hw", SHAPES)
@pytest.mark.parametrize("quant", [(0.04, -5, 0.04, -5), (0.04, -5, 0.02, 10), (0.1, 7, 0.3, -20)])
def test_forward_is_bit_exact(lib: ctypes.CDLL, shape: tuple[int, ...], out_hw: tuple[int, int],
                              quant: tuple[float, int, float, int]) -> None:
    sx, zx, sy, zy = quant
    rng = np.random.default_rng(sum(shape) + out_hw[0])
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    y, mask = upsample_bilinear(x, out_hw, input_scale=sx, input_zero_point=zx, output_scale=sy,
                                output_zero_point=zy)
    m = np.float32(np.float32(sx) / np.float32(sy))
    out_shape = (shape[0], *out_hw, shape[3])
    for with_mask in (True, False):
        mask_arg = Out((calls.mask_bytes(y.size),), np.dtype(np.uint8)) if with_mask else Null()
        call = Call("qtrain_upsample_bilinear_s8", [Dims(x.shape), In(x), I32(zx), F32(m), I32(zy), Dims(out_shape),
                                                    Out(out_shape, np.dtype(np.int8)), mask_arg])
        status, outputs = calls.run_host(lib, call)
        assert status == 0
        np.testing.assert_array_equal(outputs[0], y)
        if with_mask:
            np.testing.assert_array_equal(calls.unpack_mask(outputs[1], y.shape), mask)


@pytest.mark.parametrize("shape, out_hw", SHAPES)
def test_gradient_is_within_the_fp32_sum_bound(lib: ctypes.CDLL, shape: tuple[int, ...],
                                               out_hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(7 + sum(shape))
    g = rng.normal(size=(shape[0], *out_hw, shape[3])).astype(np.float32)
    reference = upsample_bilinear_grad(g, shape[1:3])
    abs_terms = upsample_bilinear_grad(np.abs(g).astype(np.float64), shape[1:3])
    call = Call("qtrain_upsample_bilinear_grad_f32", [Dims(g.shape), In(g), Dims(shape),
                                                      Out(shape, np.dtype(np.float32))])
    status, (got,) = calls.run_host(lib, call)
    assert status == 0
    # every input pixel sums at most ceil(OH / H + 1) * ceil(OW / W + 1) products of up to 4 taps each
    terms = 4 * (out_hw[0] // shape[1] + 2) * (out_hw[1] // shape[2] + 2)
    bound = (terms + 1) * ULP * abs_terms + 1e-30
    assert np.all(np.abs(got.astype(np.float64) - reference.astype(np.float64)) <= bound)


def test_taps_of_the_kernel_and_the_golden_model_agree_at_every_size(lib: ctypes.CDLL) -> None:
    """A one-hot input reads back each output's weights: the C taps equal bilinear_taps bit for bit (the
    resize of a unit impulse is the weight it gets), over many size pairs."""
    for size_in in range(1, 9):
        for size_out in range(1, 17):
            i0, i1, l0, l1 = bilinear_taps(size_in, size_out)
            g = np.ones((1, size_out, 1, 1), dtype=np.float32)
            call = Call("qtrain_upsample_bilinear_grad_f32", [Dims(g.shape), In(g), Dims((1, size_in, 1, 1)),
                                                              Out((1, size_in, 1, 1), np.dtype(np.float32))])
            _, (got,) = calls.run_host(lib, call)
            want = np.zeros(size_in, dtype=np.float64)
            for o in range(size_out):
                want[i0[o]] += np.float32(l0[o] * np.float32(1.0))
                want[i1[o]] += np.float32(l1[o] * np.float32(1.0))
            np.testing.assert_allclose(got.reshape(-1), want, rtol=4 * size_out * ULP)


def test_bad_shapes_are_refused(lib: ctypes.CDLL) -> None:
    x = np.zeros((1, 2, 2, 3), dtype=np.int8)
    call = Call("qtrain_upsample_bilinear_s8", [Dims(x.shape), In(x), I32(0), F32(1.0), I32(0), Dims((1, 4, 4, 2)),
                                                Out((1, 4, 4, 2), np.dtype(np.int8)), Null()])
    status, _ = calls.run_host(lib, call)
    assert status == -1
