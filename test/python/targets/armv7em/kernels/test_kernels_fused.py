"""The fused pointwise -> depthwise kernel (qtrain_fused_pointwise_depthwise_s8) against the golden model.

Bit for bit, in the portable and the DSP host builds: equal to numerics.fused_pointwise_depthwise (the
two convolutions through the int8 intermediate) and to the two separate kernels it replaces
(qtrain_conv2d_1x1_s8 into a buffer, then qtrain_depthwise_conv2d_s8), on random shapes: strides 1 and
2, kernels 3/5/7 (and asymmetric, and 1x1), symmetric, TF-style and large paddings, with and without
biases, batch 2, odd widths, channel counts below, at and across the kernel's channel block, clamps.
Also: the scratch size against the Python mirror, and the refusals (scratch too small, overlapping
output, inconsistent parameters). The Cortex-M7 build runs a case in test_kernels_qemu.py.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import pytest
from armv7em_testing import needs_clang

from qtrain import numerics
from qtrain.targets.armv7em import kernels
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import Call, ConvParams, Dims, Weight

pytestmark = needs_clang


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


@dataclass(frozen=True)
class FusedCase:
    name: str
    input_shape: tuple[int, int, int, int]
    c_mid: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    pw_bias: bool = True
    dw_bias: bool = True
    pw_clamp: tuple[int, int] = (-128, 127)
    dw_clamp: tuple[int, int] = (-128, 127)
    zx: int = -7
    zmid: int = 11
    zy: int = -3


CASES = [
    FusedCase("3x3/2 mcunet-like", (1, 16, 16, 8), 32, (3, 3), (2, 2), (1, 1, 1, 1), pw_clamp=(-128, 40)),
    FusedCase("3x3/1", (1, 9, 12, 8), 24, (3, 3), (1, 1), (1, 1, 1, 1)),
    FusedCase("3x3/2 tf padding odd size", (1, 11, 9, 5), 12, (3, 3), (2, 2), (0, 0, 1, 1), zmid=-128,
              pw_clamp=(-128, 127)),
    FusedCase("5x5/1 no biases", (1, 8, 7, 16), 20, (5, 5), (1, 1), (2, 2, 2, 2), pw_bias=False, dw_bias=False),
    FusedCase("5x5/2", (1, 10, 10, 6), 16, (5, 5), (2, 2), (2, 2, 2, 2), dw_clamp=(-128, 0)),
    FusedCase("7x7/2 odd block", (1, 13, 11, 8), 13, (7, 7), (2, 2), (3, 3, 3, 3)),
    FusedCase("7x7/1 small image", (1, 4, 5, 3), 9, (7, 7), (1, 1), (3, 3, 3, 3), pw_bias=False),
    FusedCase("3x3/1 batch 2", (2, 6, 6, 4), 10, (3, 3), (1, 1), (1, 1, 1, 1), dw_bias=False),
    FusedCase("3x5 asymmetric stride 1x2", (1, 7, 9, 7), 11, (3, 5), (1, 2), (0, 2, 2, 1)),
    FusedCase("3x3 no padding", (1, 8, 8, 12), 4, (3, 3), (1, 1), (0, 0, 0, 0), zx=0, zmid=0, zy=0),
    FusedCase("1x1 depthwise stride 2", (1, 6, 7, 5), 8, (1, 1), (2, 2), (0, 0, 0, 0)),
    FusedCase("3x3/2 large padding", (1, 5, 6, 9), 17, (3, 3), (2, 2), (2, 2, 2, 2), dw_clamp=(-20, 90)),
    FusedCase("5x5/2 relu6-like clamps", (1, 12, 12, 16), 48, (5, 5), (2, 2), (2, 2, 2, 2), pw_clamp=(-128, 20),
              dw_clamp=(-128, 20), zmid=-128, zy=-128),
]


@dataclass
class FusedData:
    case: FusedCase
    x: np.ndarray
    pw_weight: np.ndarray
    pw_bias: np.ndarray | None
    pw_multiplier: np.ndarray
    pw_params: ConvParams
    mid: np.ndarray
    dw_weight: np.ndarray
    dw_bias: np.ndarray | None
    dw_multiplier: np.ndarray
    dw_params: ConvParams
    y: np.ndarray

    @property
    def scratch(self) -> int:
        return kernels.buffer_size_fused_pointwise_depthwise(self.x.shape, self.pw_weight.shape, self.dw_weight.shape,
                                                             self.y.shape, self.case.strides)


def _output_scale(acc: np.ndarray, s_in: float) -> float:
    """An output scale that spreads the requantized values over the int8 range and a bit beyond."""
    return float(np.float32(s_in * 0.01 * max(float(np.abs(acc).std()), 1.0) / 70.0))


def make_fused(case: FusedCase, seed: int = 0) -> FusedData:
    rng = np.random.default_rng(seed)
    c = case
    cin = c.input_shape[3]
    kh, kw = c.kernel
    x = rng.integers(-128, 128, c.input_shape, dtype=np.int8)
    pw_weight = rng.integers(-128, 128, (c.c_mid, 1, 1, cin), dtype=np.int8)
    dw_weight = rng.integers(-128, 128, (c.c_mid, kh, kw, 1), dtype=np.int8)
    pw_bias = rng.integers(-3000, 3000, c.c_mid, dtype=np.int32) if c.pw_bias else None
    dw_bias = rng.integers(-3000, 3000, c.c_mid, dtype=np.int32) if c.dw_bias else None
    s_x = 0.03
    s_pw = (rng.uniform(0.5, 1.5, c.c_mid) * 0.01).astype(np.float32)
    s_dw = (rng.uniform(0.5, 1.5, c.c_mid) * 0.01).astype(np.float32)
    acc = numerics.conv2d_accumulate(x, pw_weight, pw_bias, input_zero_point=c.zx)
    s_mid = _output_scale(acc, s_x)
    mid = numerics.conv2d(x, pw_weight, pw_bias, input_scale=s_x, input_zero_point=c.zx, weight_scales=s_pw,
                          output_scale=s_mid, output_zero_point=c.zmid, clamp=c.pw_clamp)
    acc = numerics.conv2d_accumulate(mid, dw_weight, dw_bias, input_zero_point=c.zmid, strides=c.strides,
                                     padding=c.padding, groups=c.c_mid)
    s_y = _output_scale(acc, s_mid)
    y = numerics.fused_pointwise_depthwise(
        x, pw_weight, pw_bias, dw_weight, dw_bias, input_scale=s_x, input_zero_point=c.zx, pw_weight_scales=s_pw,
        mid_scale=s_mid, mid_zero_point=c.zmid, dw_weight_scales=s_dw, output_scale=s_y, output_zero_point=c.zy,
        dw_strides=c.strides, dw_padding=c.padding, pw_clamp=c.pw_clamp, dw_clamp=c.dw_clamp)
    expected = numerics.conv2d(mid, dw_weight, dw_bias, input_scale=s_mid, input_zero_point=c.zmid,
                               weight_scales=s_dw, output_scale=s_y, output_zero_point=c.zy, strides=c.strides,
                               padding=c.padding, groups=c.c_mid, clamp=c.dw_clamp)
    np.testing.assert_array_equal(y, expected)  # the golden model is the two convolutions
    pw_params = ConvParams(c.zx, c.zmid, (1, 1), (0, 0), 1, c.pw_clamp)
    dw_params = ConvParams(c.zmid, c.zy, c.strides, (c.padding[0], c.padding[1]), c.c_mid, c.dw_clamp)
    return FusedData(c, x, pw_weight, pw_bias, numerics.conv2d_multiplier(s_x, s_pw, s_mid), pw_params, mid,
                     dw_weight, dw_bias, numerics.conv2d_multiplier(s_mid, s_dw, s_y), dw_params, y)


def fused_call(data: FusedData, scratch: int | None = None, dw_params: ConvParams | None = None) -> Call:
    return calls.fused_pointwise_depthwise(
        data.x, data.pw_weight, data.pw_bias, data.pw_multiplier, data.pw_params, data.dw_weight, data.dw_bias,
        data.dw_multiplier, dw_params or data.dw_params, data.y.shape, data.scratch if scratch is None else scratch)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fused_kernel_is_bit_exact(lib: ctypes.CDLL, case: FusedCase) -> None:
    data = make_fused(case)
    status, outputs = calls.run_host(lib, fused_call(data))
    assert status == 0
    np.testing.assert_array_equal(outputs[0], data.y)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_fused_kernel_equals_the_two_separate_kernels(lib: ctypes.CDLL, case: FusedCase) -> None:
    data = make_fused(case, seed=1)
    mid_shape = data.mid.shape
    pw = calls.conv2d("1x1", data.x, Weight(data.pw_weight), data.pw_bias, data.pw_multiplier, data.pw_params,
                      mid_shape, kernels.buffer_size_conv2d("1x1", data.x.shape, data.pw_weight.shape, mid_shape,
                                                            (1, 1)), mask=False)
    status, (mid,) = calls.run_host(lib, pw)
    assert status == 0
    np.testing.assert_array_equal(mid, data.mid)
    dw = calls.conv2d("depthwise", mid, Weight(data.dw_weight), data.dw_bias, data.dw_multiplier, data.dw_params,
                      data.y.shape, kernels.buffer_size_conv2d("depthwise", mid_shape, data.dw_weight.shape,
                                                               data.y.shape, case.strides), mask=False)
    status, (separate,) = calls.run_host(lib, dw)
    assert status == 0
    status, (fused,) = calls.run_host(lib, fused_call(data))
    assert status == 0
    np.testing.assert_array_equal(fused, separate)


def layout_bytes(data: FusedData, block: int, band: int) -> int:
    """Scratch of the kernel's schedule with `block` channels per block and `band` output rows per band (the
    layout its header documents; with block = min(C_mid, 8) and band = 1, the minimum)."""
    _, _, w, cin = data.x.shape
    _, kh, kw, _ = data.dw_weight.shape
    sh, sw = data.case.strides
    columns = (data.y.shape[2] - 1) * sw + kw
    align4 = lambda n: (n + 3) // 4 * 4  # noqa: E731
    ring_rows = (band - 1) * sh + kh
    return 8 * cin + 4 * block * kw * ((kh + 1) // 2) + align4(4 * kh * columns) + align4(ring_rows * w * block)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_more_scratch_changes_the_schedule_not_the_bytes(lib: ctypes.CDLL, case: FusedCase) -> None:
    """Given more scratch the kernel takes fewer channel blocks and bands of output rows; same output. The
    scratch sizes are those of every (block, band) schedule, so each is run (or one at least as good)."""
    data = make_fused(case, seed=2)
    assert layout_bytes(data, min(case.c_mid, kernels.FUSED_CHANNEL_BLOCK), 1) == data.scratch
    max_band = (case.kernel[0] - 1) // case.strides[0] + 1
    sizes = {layout_bytes(data, block, band) for block in range(1, case.c_mid + 1) for band in (1, max_band)}
    for size in sorted(s for s in sizes if s >= data.scratch):
        status, (y,) = calls.run_host(lib, fused_call(data, scratch=size))
        assert status == 0
        np.testing.assert_array_equal(y, data.y, err_msg=f"scratch {size}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_any_scratch_gives_the_same_bytes(lib: ctypes.CDLL, case: FusedCase) -> None:
    """Scratch beyond the minimum picks other schedules (among them, on the DSP path, the depthwise stage four
    channels at a time over bands of several output rows); the bytes never change."""
    for seed in range(2):
        data = make_fused(case, seed=seed)
        for extra in (0, 512, 2048, 8192, 32768):
            status, outputs = calls.run_host(lib, fused_call(data, scratch=data.scratch + extra))
            assert status == 0
            np.testing.assert_array_equal(outputs[0], data.y, err_msg=f"seed {seed}, scratch +{extra}")


def test_cases_cross_the_channel_block_and_saturate() -> None:
    """The cases cover C_mid below, at a multiple of and across the kernel's channel block, and both
    sides of the clamps (so the requantization's saturation is exercised)."""
    block = kernels.FUSED_CHANNEL_BLOCK
    mids = {c.c_mid for c in CASES}
    assert any(m < block for m in mids) and any(m % block == 0 and m > block for m in mids)
    assert any(m > block and m % block for m in mids)
    ys = np.concatenate([make_fused(c).y.reshape(-1) for c in CASES])
    assert (ys == -128).mean() > 0.01 and (ys == 127).mean() > 0.01


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_buffer_size_matches_the_python_mirror(lib: ctypes.CDLL, case: FusedCase) -> None:
    data = make_fused(case)
    call = Call("qtrain_fused_pointwise_depthwise_s8_get_buffer_size", [
        data.pw_params, Dims(data.x.shape), Dims(data.pw_weight.shape), data.dw_params, Dims(data.dw_weight.shape),
        Dims(data.y.shape)])
    size, _ = calls.run_host(lib, call)
    assert size == data.scratch


def test_ring_is_much_smaller_than_the_intermediate_tensor() -> None:
    """mbv2-w0.35's expansion (64x64x8 -> 48, then 3x3/2): 192 KB intermediate, a few KB of scratch."""
    size = kernels.buffer_size_fused_pointwise_depthwise((1, 64, 64, 8), (48, 1, 1, 8), (48, 3, 3, 1),
                                                         (1, 32, 32, 48), (2, 2))
    assert size < 4096 < 64 * 64 * 48


def test_too_small_scratch_is_refused(lib: ctypes.CDLL) -> None:
    data = make_fused(CASES[0])
    status, (y,) = calls.run_host(lib, fused_call(data, scratch=data.scratch - 4))
    assert status == -1 and not y.any()


def test_inconsistent_parameters_are_refused(lib: ctypes.CDLL) -> None:
    data = make_fused(CASES[0])
    d = data.dw_params
    bad = [
        ConvParams(d.input_zero_point + 1, d.output_zero_point, d.strides, d.padding, d.groups, d.clamp),  # zp differs
        ConvParams(d.input_zero_point, d.output_zero_point, d.strides, d.padding, 1, d.clamp),  # not depthwise
        ConvParams(d.input_zero_point, d.output_zero_point, d.strides, d.padding, d.groups, (10, 0)),  # bad clamp
    ]
    for params in bad:
        status, (y,) = calls.run_host(lib, fused_call(data, dw_params=params))
        assert status == -1 and not y.any(), params
    strided = FusedData(**{**data.__dict__, "pw_params": ConvParams(data.case.zx, data.case.zmid, (2, 2), (0, 0), 1,
                                                                      data.case.pw_clamp)})
    status, (y,) = calls.run_host(lib, fused_call(strided))
    assert status == -1 and not y.any()


def test_overlapping_output_is_refused(lib: ctypes.CDLL) -> None:
    data = make_fused(CASES[0])
    size = max(data.x.size, data.y.size)
    buffer = calls.Out((size,), np.dtype(np.int8), np.resize(data.x.reshape(-1), size))
    call = fused_call(data)
    args = list(call.args)
    args[3] = calls.At(buffer, 0)  # the input
    args[-1] = calls.At(buffer, 0)  # the output over it (head-aligned)
    status, (after,) = calls.run_host(lib, Call(call.function, args))
    assert status == -1
    np.testing.assert_array_equal(after, np.resize(data.x.reshape(-1), size))
