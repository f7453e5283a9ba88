"""qtrain_group_norm_s8 / _input_grad_f32 / _gamma_grad_f32 (host build, portable and DSP paths) against the
golden model of dialects/qtrain/group_norm.py: the int8 forward and its mask bit for bit, and both gradients
bit for bit too (the golden model takes its float32 sums in the kernels' order)."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from armv7em_testing import needs_clang

from qtrain.dialects.qtrain.group_norm import group_norm, group_norm_gamma_grad, group_norm_input_grad
from qtrain.targets.armv7em.kernels import GROUP_NORM_MAX_GROUP_ELEMENTS, calls, host
from qtrain.targets.armv7em.kernels.calls import F32, I32, At, Call, Dims, In, Null, Out

pytestmark = needs_clang

# (NHWC, groups): 8 channels per group (the DSP path's four-at-a-time sums), 3 and 6 (the portable
# remainder), one channel per group, batch 2, a 1x1 map, and a 64x64 group whose M2 needs the hand-rounded
# 64-bit conversion (above 2^24) and rows long enough for several 32-bit flushes.
SHAPES = [((1, 4, 5, 16), 2), ((1, 3, 3, 6), 2), ((1, 5, 2, 12), 2), ((1, 4, 4, 4), 4), ((2, 3, 4, 16), 2),
          ((1, 1, 1, 16), 2), ((1, 64, 64, 16), 2), ((1, 8, 600, 128), 1)]


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


def setup(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    gamma = (rng.normal(size=shape[3]) * 25).astype(np.float32)
    beta = (rng.normal(size=shape[3]) * 6).astype(np.float32)
    return x, gamma, beta, np.float32(rng.uniform(0.01, 2.0))


QUANTS = [(0, 0, (-128, 127)), (-7, -128, (-128, 127)), (13, -20, (-20, 90))]
# every quantization on the small shapes, one (zero points on both sides, a clamp) on the two large ones
FORWARD_CASES = [(*shape, *q) for shape in SHAPES[:-2] for q in QUANTS]
FORWARD_CASES += [(*shape, *QUANTS[2]) for shape in SHAPES[-2:]]


@pytest.mark.parametrize("shape, groups, zx, zy, clamp", FORWARD_CASES)
def test_forward_is_bit_exact(lib: ctypes.CDLL, shape: tuple[int, ...], groups: int, zx: int, zy: int,
                              clamp: tuple[int, int]) -> None:
    x, gamma, beta, eps_q = setup(shape, sum(shape) + zx)
    y, mask = group_norm(x, gamma, beta, groups=groups, epsilon_q=eps_q, input_zero_point=zx, output_zero_point=zy,
                         clamp=clamp)
    for with_mask in (True, False):
        mask_arg = Out((calls.mask_bytes(y.size),), np.dtype(np.uint8)) if with_mask else Null()
        call = Call("qtrain_group_norm_s8", [Dims(x.shape), In(x), I32(zx), I32(groups), F32(eps_q), In(gamma),
                                             In(beta), I32(zy), I32(clamp[0]), I32(clamp[1]),
                                             Out(shape, np.dtype(np.int8)), mask_arg])
        status, outputs = calls.run_host(lib, call)
        assert status == 0
        np.testing.assert_array_equal(outputs[0], y)
        if with_mask:
            np.testing.assert_array_equal(calls.unpack_mask(outputs[1], y.shape), mask)
    assert 0 < mask.mean() <= 1


def test_forward_in_place(lib: ctypes.CDLL) -> None:
    """output == input: every group's statistics are taken before its outputs overwrite it."""
    shape, groups = (1, 4, 5, 16), 2
    x, gamma, beta, eps_q = setup(shape, 4)
    y, _ = group_norm(x, gamma, beta, groups=groups, epsilon_q=eps_q, input_zero_point=3, output_zero_point=-2)
    buffer = Out(shape, np.dtype(np.int8), initial=x)
    call = Call("qtrain_group_norm_s8", [Dims(shape), At(buffer), I32(3), I32(groups), F32(eps_q), In(gamma),
                                         In(beta), I32(-2), I32(-128), I32(127), At(buffer), Null()])
    status, (got,) = calls.run_host(lib, call)
    assert status == 0
    np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("shape, groups", SHAPES[:7])
def test_gradients_are_bit_exact(lib: ctypes.CDLL, shape: tuple[int, ...], groups: int) -> None:
    x, gamma, _, eps_q = setup(shape, 21 + sum(shape))
    g = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
    zx = -9
    want_x = group_norm_input_grad(x, g, gamma, groups=groups, epsilon_q=eps_q, input_zero_point=zx)
    want_gamma = group_norm_gamma_grad(x, g, groups=groups, epsilon_q=eps_q, input_zero_point=zx)
    prefix = [Dims(shape), In(x), I32(zx), I32(groups), F32(eps_q)]
    status, (got_x,) = calls.run_host(lib, Call("qtrain_group_norm_input_grad_f32",
                                                [*prefix, In(gamma), In(g), Out(shape, np.dtype(np.float32))]))
    assert status == 0
    np.testing.assert_array_equal(got_x, want_x)
    status, (got_gamma,) = calls.run_host(lib, Call("qtrain_group_norm_gamma_grad_f32",
                                                    [*prefix, In(g), Out((shape[3],), np.dtype(np.float32))]))
    assert status == 0
    np.testing.assert_array_equal(got_gamma, want_gamma)
    # in place: the input gradient written over dL/dy
    buffer = Out(shape, np.dtype(np.float32), initial=g)
    status, (in_place,) = calls.run_host(lib, Call("qtrain_group_norm_input_grad_f32",
                                                   [*prefix, In(gamma), At(buffer), At(buffer)]))
    assert status == 0
    np.testing.assert_array_equal(in_place, want_x)


@pytest.mark.parametrize("shape, groups, eps", [
    ((1, 2, 2, 6), 4, 0.5),      # groups do not divide the channels
    ((1, 2, 2, 8), 2, 0.0),      # eps_q must be positive
    ((1, 2048, 1024, 1), 1, 0.5),  # a group above QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS
])
def test_bad_arguments_are_refused(lib: ctypes.CDLL, shape: tuple[int, ...], groups: int, eps: float) -> None:
    if shape[3] % groups == 0 and eps > 0:
        assert shape[1] * shape[2] * shape[3] // groups > GROUP_NORM_MAX_GROUP_ELEMENTS
    x = np.zeros(shape, np.int8)
    ones = np.ones(shape[3], np.float32)
    call = Call("qtrain_group_norm_s8", [Dims(shape), In(x), I32(0), I32(groups), F32(eps), In(ones), In(ones),
                                         I32(0), I32(-128), I32(127), Out(shape, np.dtype(np.int8)), Null()])
    status, _ = calls.run_host(lib, call)
    assert status == -1
