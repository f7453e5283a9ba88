"""The int8 forward kernels (targets/armv7em/kernels) against the numpy golden model, bit for bit.

Each kernel runs in two host builds of the library: the portable C path (QTRAIN_USE_DSP=0) and the DSP
path over C definitions of the ARMv7E-M intrinsics (QTRAIN_USE_DSP=1); both must equal
qtrain.numerics exactly, outputs and saturation masks. The Cortex-M7 build is checked by
test_kernels_qemu.py.
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
from qtrain.targets.armv7em.kernels.calls import I32, Call, ConvParams, Dims, In, Null, Out, Weight

pytestmark = needs_clang


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


# ---------------------------------------------------------------------------------------------------
# convolution cases
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvCase:
    name: str
    input_shape: tuple[int, int, int, int]
    cout: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    zx: int = -3
    zy: int = 5
    clamp: tuple[int, int] = (-128, 127)
    bias: bool = True
    slice: tuple[int, int, str] | None = None  # start, stop, "master" | "int8"


CONV_CASES = [
    # pointwise
    ConvCase("1x1", (1, 5, 7, 16), 24, (1, 1)),
    ConvCase("1x1 odd channels and pixels", (1, 5, 7, 19), 7, (1, 1), zx=100, zy=-20),
    ConvCase("1x1 stride 2 batch 2", (2, 7, 9, 8), 8, (1, 1), strides=(2, 2), clamp=(-128, 60)),
    ConvCase("1x1 relu no bias", (1, 3, 3, 40), 10, (1, 1), zy=-128, clamp=(-128, 127), bias=False),
    ConvCase("1x1 three channels", (1, 4, 4, 3), 5, (1, 1)),
    ConvCase("1x1 master slice", (1, 4, 5, 48), 16, (1, 1), slice=(0, 12, "master")),
    ConvCase("1x1 int8 slice in the middle", (1, 3, 5, 20), 9, (1, 1), slice=(4, 13, "int8")),
    ConvCase("1x1 master slice at the end", (1, 3, 3, 24), 6, (1, 1), slice=(17, 24, "master")),
    # depthwise
    ConvCase("dw 3x3/1", (1, 8, 8, 12), 12, (3, 3), padding=(1, 1, 1, 1), groups=12),
    ConvCase("dw 3x3/2 odd size", (1, 9, 9, 8), 8, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1), groups=8),
    ConvCase("dw 3x3/2 tf padding", (1, 8, 8, 5), 5, (3, 3), strides=(2, 2), padding=(0, 0, 1, 1), groups=5),
    ConvCase("dw 5x5/1", (1, 6, 7, 10), 10, (5, 5), padding=(2, 2, 2, 2), groups=10, clamp=(-128, 0)),
    ConvCase("dw 7x7/2", (1, 11, 10, 6), 6, (7, 7), strides=(2, 2), padding=(3, 3, 3, 3), groups=6),
    ConvCase("dw 7x7/1 small image", (2, 4, 4, 4), 4, (7, 7), padding=(3, 3, 3, 3), groups=4),
    ConvCase("dw 3x5 asymmetric", (1, 6, 9, 7), 7, (3, 5), strides=(1, 2), padding=(0, 2, 2, 1), groups=7),
    ConvCase("dw 3x3/1 16 channels", (1, 6, 7, 16), 16, (3, 3), padding=(1, 1, 1, 1), groups=16, zx=7, zy=-9),
    ConvCase("dw 5x5/2 16 channels", (1, 9, 8, 16), 16, (5, 5), strides=(2, 2), padding=(2, 2, 2, 2), groups=16,
             clamp=(-100, 90)),
    ConvCase("dw 7x7/1 8 channels", (2, 8, 8, 8), 8, (7, 7), padding=(3, 3, 3, 3), groups=8, zy=-128,
             clamp=(-128, 40)),
    ConvCase("dw master slice", (1, 6, 6, 12), 12, (3, 3), padding=(1, 1, 1, 1), groups=12,
             slice=(2, 7, "master")),
    ConvCase("dw int8 slice", (1, 5, 5, 9), 9, (5, 5), strides=(2, 2), padding=(2, 2, 2, 2), groups=9,
             slice=(0, 9, "int8")),
    # small K (the stem, thin pointwise layers)
    ConvCase("small-k 3x3/2 rgb", (1, 16, 16, 3), 16, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1), zx=-128),
    ConvCase("small-k 3x3/2 tf padding odd", (1, 15, 13, 3), 8, (3, 3), strides=(2, 2), padding=(0, 0, 1, 1)),
    ConvCase("small-k 5x5 two channels", (1, 9, 9, 2), 5, (5, 5), padding=(2, 2, 2, 2)),
    ConvCase("small-k int8 slice", (1, 8, 8, 3), 6, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1),
             slice=(0, 2, "int8")),
    ConvCase("small-k master slice", (1, 7, 7, 4), 5, (3, 3), padding=(1, 1, 1, 1), slice=(1, 3, "master")),
    # generic
    ConvCase("generic 3x3", (1, 7, 6, 8), 12, (3, 3), padding=(1, 1, 1, 1)),
    ConvCase("generic 3x3 odd channels", (1, 6, 6, 5), 7, (3, 3), strides=(2, 1), padding=(1, 0, 1, 2)),
    ConvCase("generic grouped", (1, 6, 5, 8), 6, (3, 3), padding=(1, 1, 1, 1), groups=2),
    ConvCase("generic depthwise multiplier 2", (1, 6, 6, 4), 8, (3, 3), padding=(1, 1, 1, 1), groups=4),
    ConvCase("generic 1x3", (2, 4, 7, 6), 4, (1, 3), padding=(0, 1, 0, 1)),
    ConvCase("generic master slice", (1, 5, 5, 8), 6, (3, 3), padding=(1, 1, 1, 1), slice=(3, 7, "master")),
    ConvCase("generic 1x1 with padding", (1, 4, 4, 8), 4, (1, 1), padding=(1, 1, 1, 1)),
    ConvCase("1x1 even zero point", (1, 3, 7, 32), 24, (1, 1), zx=9, zy=-128, clamp=(-128, 60)),
    ConvCase("small-k 3x3/2 even zero point", (1, 14, 13, 3), 16, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1),
             zy=-128, clamp=(-128, 30)),
]


@dataclass
class ConvData:
    case: ConvCase
    x: np.ndarray
    weight: Weight
    effective: np.ndarray
    bias: np.ndarray | None
    multiplier: np.ndarray
    params: ConvParams
    output_shape: tuple[int, int, int, int]
    y: np.ndarray
    mask: np.ndarray


def _slice_axis(case: ConvCase) -> int:
    return 0 if case.groups > 1 and case.groups == case.input_shape[3] and case.cout == case.groups else 3


def make_conv(case: ConvCase, seed: int = 0) -> ConvData:
    rng = np.random.default_rng(seed)
    n, h, w, cin = case.input_shape
    kh, kw = case.kernel
    x = rng.integers(-128, 128, case.input_shape, dtype=np.int8)
    frozen = rng.integers(-128, 128, (case.cout, kh, kw, cin // case.groups), dtype=np.int8)
    effective = frozen.copy()
    weight = Weight(frozen)
    if case.slice is not None:
        start, stop, kind = case.slice
        axis = _slice_axis(case)
        index = [slice(None)] * 4
        index[axis] = slice(start, stop)
        shape = list(frozen.shape)
        shape[axis] = stop - start
        if kind == "master":
            master = rng.uniform(-140, 140, shape).astype(np.float32)
            master.flat[::7] = np.round(master.flat[::7]) + 0.5  # ties, rounded half to even
            values = numerics.master_to_param(master, np.int8)
            weight = Weight(frozen, master=master, start=start, stop=stop)
        else:
            values = rng.integers(-128, 128, shape, dtype=np.int8)
            weight = Weight(frozen, slice=values, start=start, stop=stop)
        effective[tuple(index)] = values
    bias = rng.integers(-3000, 3000, case.cout, dtype=np.int32) if case.bias else None
    pt, pl, pb, pr = case.padding
    acc = numerics.conv2d_accumulate(x, effective, bias, input_zero_point=case.zx, strides=case.strides,
                                     padding=case.padding, groups=case.groups)
    # Scales that spread the outputs over the int8 range and beyond: some saturate, most do not.
    s_x = 0.03
    s_w = rng.uniform(0.5, 1.5, case.cout).astype(np.float32) * 0.01
    s_y = float(np.float32(s_x * 0.01 * max(float(np.abs(acc).std()), 1.0) / 70.0))
    y, mask = numerics.conv2d_with_mask(x, effective, bias, input_scale=s_x, input_zero_point=case.zx,
                                        weight_scales=s_w, output_scale=s_y, output_zero_point=case.zy,
                                        strides=case.strides, padding=case.padding, groups=case.groups,
                                        clamp=case.clamp)
    params = ConvParams(case.zx, case.zy, case.strides, (pt, pl), case.groups, case.clamp)
    return ConvData(case, x, weight, effective, bias, numerics.conv2d_multiplier(s_x, s_w, s_y), params,
                    tuple(y.shape), y, mask)  # type: ignore[arg-type]


def kernel_of(case: ConvCase) -> str:
    data = make_conv(case)
    return kernels.conv2d_kernel(data.x.shape, data.effective.shape, data.output_shape, case.strides, case.padding,
                                 case.groups)


def mirror_size(data: ConvData, kernel: str) -> int:
    s = data.case.slice
    return kernels.buffer_size_conv2d(kernel, data.x.shape, data.effective.shape, data.output_shape,
                                      data.case.strides, slice_channels=None if s is None else s[1] - s[0],
                                      master=s is not None and s[2] == "master")


def run_conv(lib: ctypes.CDLL, data: ConvData, kernel: str, scratch: int | None = None,
             mask: bool = True) -> tuple[int, np.ndarray, np.ndarray | None]:
    if scratch is None:
        scratch = mirror_size(data, kernel_of(data.case) if kernel == "wrapper" else kernel)
    call = calls.conv2d(kernel, data.x, data.weight, data.bias, data.multiplier, data.params, data.output_shape,
                        scratch, mask=mask)
    status, outputs = calls.run_host(lib, call)
    packed = outputs[1] if mask else None
    return int(status), outputs[0], None if packed is None else calls.unpack_mask(packed, data.output_shape)


def intended_kernel(case: ConvCase) -> str:
    """The kernel a case is written for (its name's first word)."""
    return {"1x1": "1x1", "dw": "depthwise", "small-k": "small_k", "generic": "generic"}[case.name.split()[0]]


def kernels_for(case: ConvCase) -> list[str]:
    """Every kernel that accepts the case."""
    names = [intended_kernel(case), "wrapper"]
    if case.groups == 1 and case.kernel[0] * case.kernel[1] * case.input_shape[3] <= kernels.SMALL_K_MAX_K:
        names.append("small_k")
    if case.slice is None or case.groups == 1:
        names.append("generic")
    return list(dict.fromkeys(names))


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_conv_kernels_are_bit_exact(lib: ctypes.CDLL, case: ConvCase) -> None:
    data = make_conv(case)
    for kernel in kernels_for(case):
        status, y, mask = run_conv(lib, data, kernel)
        assert status == 0, kernel
        np.testing.assert_array_equal(y, data.y, err_msg=kernel)
        np.testing.assert_array_equal(mask, data.mask, err_msg=kernel)


DEPTHWISE_CASES = [c for c in CONV_CASES if c.groups > 1 and c.groups == c.input_shape[3] == c.cout]


@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("extra", [0, 256, 4096, 65536])
def test_depthwise_with_more_scratch_is_bit_exact(lib: ctypes.CDLL, case: ConvCase, extra: int) -> None:
    """Given more scratch the depthwise kernel takes other schedules (four channels at a time, whole padded
    planes): the same bytes, with and without the mask."""
    data = make_conv(case, seed=3)
    scratch = mirror_size(data, "depthwise") + extra
    for mask in (True, False):
        status, y, got_mask = run_conv(lib, data, "depthwise", scratch=scratch, mask=mask)
        assert status == 0
        np.testing.assert_array_equal(y, data.y)
        if mask:
            np.testing.assert_array_equal(got_mask, data.mask)


BAND_CASES = [
    ConvCase("dw 3x3/1 bands", (1, 30, 28, 8), 8, (3, 3), padding=(1, 1, 1, 1), groups=8, zy=-128),
    ConvCase("dw 3x3/2 bands", (1, 31, 30, 12), 12, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1), groups=12),
    ConvCase("dw 7x7/2 bands", (2, 29, 26, 8), 8, (7, 7), strides=(2, 2), padding=(3, 3, 3, 3), groups=8),
]


@pytest.mark.parametrize("case", BAND_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("extra", [3000, 6000, 12000])
def test_depthwise_bands_are_bit_exact(lib: ctypes.CDLL, case: ConvCase, extra: int) -> None:
    """Planes too big for the scratch but bands of output rows that fit: four channels at a time through a
    ring of input rows (the same bytes and masks)."""
    data = make_conv(case, seed=4)
    for mask in (True, False):
        status, y, got_mask = run_conv(lib, data, "depthwise", scratch=mirror_size(data, "depthwise") + extra,
                                       mask=mask)
        assert status == 0
        np.testing.assert_array_equal(y, data.y)
        if mask:
            np.testing.assert_array_equal(got_mask, data.mask)


def test_wrapper_picks_the_specialised_kernels() -> None:
    chosen = {c.name: kernel_of(c) for c in CONV_CASES}
    assert chosen["1x1 master slice"] == "1x1"  # C_in = 48
    assert chosen["1x1"] == "1x1"
    assert chosen["dw 7x7/2"] == "depthwise"
    assert chosen["small-k 3x3/2 rgb"] == "small_k"
    assert chosen["generic grouped"] == "generic"
    assert chosen["generic 1x1 with padding"] == "generic"
    assert chosen["small-k 5x5 two channels"] == "small_k"
    # mcunet-5fps's stem and two of its pointwise layers
    assert kernels.conv2d_kernel((1, 128, 128, 3), (16, 3, 3, 3), (1, 64, 64, 16), (2, 2), (1, 1, 1, 1), 1) == "small_k"
    assert kernels.conv2d_kernel((1, 4, 4, 576), (160, 1, 1, 576), (1, 4, 4, 160), (1, 1), (0, 0, 0, 0), 1) == "1x1"
    assert kernels.conv2d_kernel((1, 8, 8, 40), (160, 1, 1, 40), (1, 8, 8, 160), (1, 1), (0, 0, 0, 0), 1) == "1x1"


def test_conv_cases_saturate_some_outputs() -> None:
    """The cases exercise both sides of the clamp (so the masks are actually tested)."""
    inside = np.concatenate([make_conv(c).mask.reshape(-1) for c in CONV_CASES])
    assert 0.05 < inside.mean() < 0.98


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_buffer_sizes_match_the_python_mirror(lib: ctypes.CDLL, case: ConvCase) -> None:
    data = make_conv(case)
    for kernel in kernels_for(case):
        call = Call(calls.CONV2D_FUNCTIONS[kernel] + "_get_buffer_size", [
            data.params, Dims(data.x.shape), Dims(data.effective.shape), Dims(data.output_shape), data.weight])
        size, _ = calls.run_host(lib, call)
        assert size == mirror_size(data, kernel_of(case) if kernel == "wrapper" else kernel), kernel
    s = case.slice
    assert kernels.buffer_size_conv2d_wrapper(
        data.x.shape, data.effective.shape, data.output_shape, case.strides, case.padding, case.groups,
        slice_channels=None if s is None else s[1] - s[0], master=s is not None and s[2] == "master",
    ) == mirror_size(data, kernel_of(case))


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_too_small_scratch_is_refused(lib: ctypes.CDLL, case: ConvCase) -> None:
    data = make_conv(case)
    kernel = intended_kernel(case)
    needed = mirror_size(data, kernel)
    if needed == 0:
        pytest.skip("needs no scratch")
    status, y, _ = run_conv(lib, data, kernel, scratch=needed - 4)
    assert status == -1
    assert not y.any()  # nothing written


def test_wrong_shapes_are_refused(lib: ctypes.CDLL) -> None:
    data = make_conv(CONV_CASES[0])
    bad = ConvData(**{**data.__dict__, "output_shape": (1, 5, 6, 24)})
    status, _, _ = run_conv(lib, bad, "1x1", scratch=4096)
    assert status == -1
    depthwise = make_conv(CONV_CASES[8])
    assert depthwise.case.name == "dw 3x3/1"
    status, _, _ = run_conv(lib, depthwise, "1x1", scratch=4096)  # a 3x3 kernel given to the 1x1 kernel
    assert status == -1


# ---------------------------------------------------------------------------------------------------
# element-wise forward kernels
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "clamp"), [(1000, (-128, 127)), (37, (-20, 90)), (8, (0, 127))])
def test_add_is_bit_exact(lib: ctypes.CDLL, count: int, clamp: tuple[int, int]) -> None:
    rng = np.random.default_rng(count)
    a = rng.integers(-128, 128, count, dtype=np.int8)
    b = rng.integers(-128, 128, count, dtype=np.int8)
    q = {"lhs_scale": 0.071, "lhs_zero_point": -7, "rhs_scale": 0.043, "rhs_zero_point": 12, "output_scale": 0.09,
         "output_zero_point": -3}
    y, mask = numerics.add_with_mask(a, b, **q, clamp=clamp)
    ra, rb, c = numerics.add_constants(*q.values())
    call = Call("qtrain_add_s8", [In(a), In(b), I32(count), calls.F32(ra), calls.F32(rb), calls.F32(c),
                                  I32(clamp[0]), I32(clamp[1]), Out((count,), np.dtype(np.int8)),
                                  Out((calls.mask_bytes(count),), np.dtype(np.uint8))], returns="void")
    _, (out, packed) = calls.run_host(lib, call)
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(calls.unpack_mask(packed, (count,)), mask)
    assert packed[-1] >> (count - 8 * (len(packed) - 1)) == 0  # unused high bits are 0


def test_add_uses_fused_multiply_adds(lib: ctypes.CDLL) -> None:
    """Quantization parameters for which one of the 65536 operand pairs rounds differently with fmaf than
    with a separate multiply and add (found by search): the kernel must give the fused result, i.e.
    numerics.add (and onnxruntime)."""
    q = {"lhs_scale": 0.06551136076450348, "lhs_zero_point": -17, "rhs_scale": 0.030629737302660942,
         "rhs_zero_point": -20, "output_scale": 0.008892484940588474, "output_zero_point": -13}
    ra, rb, c = numerics.add_constants(*q.values())
    a, b = (v.reshape(-1).astype(np.int8) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    fused = numerics.fma_f32(a.astype(np.float32), ra, numerics.fma_f32(b.astype(np.float32), rb, c))
    unfused = (a.astype(np.float32) * ra) + ((b.astype(np.float32) * rb) + c)
    differ = np.rint(fused) != np.rint(unfused)
    assert differ.any()
    a, b = np.concatenate([a[differ], a[:100]]), np.concatenate([b[differ], b[:100]])
    call = Call("qtrain_add_s8", [In(a), In(b), I32(a.size), calls.F32(ra), calls.F32(rb), calls.F32(c),
                                  I32(-128), I32(127), Out((a.size,), np.dtype(np.int8)), Null()], returns="void")
    _, (out,) = calls.run_host(lib, call)
    np.testing.assert_array_equal(out, numerics.add(a, b, **q))


@pytest.mark.parametrize(("shape", "kernel", "strides"), [
    ((1, 4, 4, 160), (4, 4), (1, 1)),  # global, the classifier's input
    ((2, 3, 5, 7), (3, 5), (1, 1)),
    ((1, 6, 7, 5), (2, 2), (2, 2)),
    ((1, 5, 5, 3), (3, 3), (1, 1)),
])
def test_avgpool_is_bit_exact(lib: ctypes.CDLL, shape: tuple[int, ...], kernel: tuple[int, int],
                              strides: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, shape, dtype=np.int8)
    q = {"input_scale": 0.05, "input_zero_point": -11, "output_scale": 0.011, "output_zero_point": 4}
    y, mask = numerics.avgpool_with_mask(x, kernel=kernel, strides=strides, **q)
    m = numerics.avgpool_multiplier(q["input_scale"], q["output_scale"], kernel)
    call = Call("qtrain_avgpool_s8", [Dims(x.shape), In(x), I32(kernel[0]), I32(kernel[1]), I32(strides[0]),
                                      I32(strides[1]), I32(-11), calls.F32(m), I32(4), Dims(y.shape),
                                      Out(y.shape, np.dtype(np.int8)), Out((calls.mask_bytes(y.size),),
                                                                          np.dtype(np.uint8))])
    status, (out, packed) = calls.run_host(lib, call)
    assert status == 0
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(calls.unpack_mask(packed, y.shape), mask)


def test_quantize_and_dequantize_are_bit_exact(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(3)
    scale, zp = np.float32(0.037), 9
    x = rng.normal(0, 3, 500).astype(np.float32)
    ties = ((np.arange(-140, 140) + 0.5) * np.float64(scale)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, -0.0], dtype=np.float32)
    x = np.concatenate([x, ties, special])
    call = Call("qtrain_quantize_f32_s8", [In(x), I32(x.size), calls.F32(scale), I32(zp),
                                           Out(x.shape, np.dtype(np.int8))], returns="void")
    _, (q,) = calls.run_host(lib, call)
    np.testing.assert_array_equal(q, numerics.quantize(x, scale=scale, zero_point=zp))
    codes = np.arange(-128, 128, dtype=np.int8)
    call = Call("qtrain_dequantize_s8_f32", [In(codes), I32(codes.size), calls.F32(scale), I32(zp),
                                             Out(codes.shape, np.dtype(np.float32))], returns="void")
    _, (f,) = calls.run_host(lib, call)
    np.testing.assert_array_equal(f.view(np.uint32),
                                  numerics.dequantize(codes, scale=scale, zero_point=zp).view(np.uint32))


@pytest.mark.parametrize("per_channel", [True, False])
def test_requantize_is_bit_exact(lib: ctypes.CDLL, per_channel: bool) -> None:
    rng = np.random.default_rng(4)
    acc = rng.integers(-40000, 40000, (3, 5, 6), dtype=np.int32)
    acc.flat[:4] = [2**31 - 1, -(2**31), 2**24 + 1, -(2**24) - 3]  # conversions that round
    m = rng.uniform(0.001, 0.004, 6 if per_channel else 1).astype(np.float32)
    y, mask = numerics.requantize_with_mask(acc, m, -5, (-100, 120))
    call = Call("qtrain_requantize_s32_s8", [In(acc), I32(acc.size), I32(6), In(m), I32(m.size), I32(-5), I32(-100),
                                             I32(120), Out(acc.shape, np.dtype(np.int8)),
                                             Out((calls.mask_bytes(acc.size),), np.dtype(np.uint8))],
                returns="void")
    _, (out, packed) = calls.run_host(lib, call)
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(calls.unpack_mask(packed, acc.shape), mask)


def test_master_to_s8_rounds_half_to_even_and_saturates(lib: ctypes.CDLL) -> None:
    master = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 126.5, 127.5, 200.0, -128.5, -129.0, -1e9, np.nan, 3.4999998],
                      dtype=np.float32)
    call = Call("qtrain_master_to_s8", [In(master), I32(master.size), Out(master.shape, np.dtype(np.int8))],
                returns="void")
    _, (out,) = calls.run_host(lib, call)
    np.testing.assert_array_equal(out, numerics.master_to_param(master, np.int8))


def test_scratch_of_an_int8_slice_is_not_needed_by_the_1x1_kernel() -> None:
    """An int8 slice is read in place; only an fp32 master needs conversion space."""
    shape_in, shape_w, shape_out = (1, 4, 4, 48), (16, 1, 1, 48), (1, 4, 4, 16)
    plain = kernels.buffer_size_conv2d("1x1", shape_in, shape_w, shape_out, (1, 1))
    assert kernels.buffer_size_conv2d("1x1", shape_in, shape_w, shape_out, (1, 1), slice_channels=12) == plain
    assert kernels.buffer_size_conv2d("1x1", shape_in, shape_w, shape_out, (1, 1), slice_channels=12,
                                      master=True) == plain + 16 * 12


def test_mask_argument_may_be_null(lib: ctypes.CDLL) -> None:
    x = np.arange(-8, 8, dtype=np.int8).reshape(1, 2, 2, 4)
    q = {"input_scale": 0.5, "input_zero_point": 1, "output_scale": 0.25, "output_zero_point": -2}
    m = numerics.avgpool_multiplier(q["input_scale"], q["output_scale"], (2, 2))
    call = Call("qtrain_avgpool_s8", [Dims(x.shape), In(x), I32(2), I32(2), I32(1), I32(1), I32(1), calls.F32(m),
                                      I32(-2), Dims((1, 1, 1, 4)), Out((1, 1, 1, 4), np.dtype(np.int8)), Null()])
    status, (out,) = calls.run_host(lib, call)
    assert status == 0
    np.testing.assert_array_equal(out, numerics.avgpool(x, kernel=(2, 2), strides=(1, 1), **q))


def test_misaligned_scratch_is_refused(lib: ctypes.CDLL) -> None:
    """The DSP loops read scratch with LDRD, which faults on a misaligned address: refuse it instead."""
    data = make_conv(CONV_CASES[0])
    needed = mirror_size(data, "1x1")
    call = calls.conv2d("1x1", data.x, data.weight, data.bias, data.multiplier, data.params, data.output_shape, needed)
    for misalign, expected in ((0, 0), (4, 0), (2, -1), (1, -1)):
        patched = Call(call.function, [calls.Scratch(needed, misalign=misalign), *call.args[1:]])
        status, _ = calls.run_host(lib, patched)
        assert status == expected, misalign
