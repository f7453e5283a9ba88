"""The fp32 backward and update kernels (targets/armv7em/kernels) against qtrain.numerics.

Element-wise kernels (requant_grad, grad_accumulate, channel_slice, sgd_update, the fused update)
must match bit for bit. Sums (convolution, bias and pooling gradients) are compared with numerics'
reference sums (exact, rounded once) within the fp32 summation bound of DESIGN.md: for an output made
of n terms, |kernel - reference| <= (n + 1) * 2^-24 * sum of |terms| (the kernels accumulate in fp32
with one fused multiply-add per term, so each step rounds once).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import pytest
from armv7em_testing import assert_within_sum_bound, needs_clang

from qtrain import numerics
from qtrain.targets.armv7em import kernels
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import F32, I32, Call, ConvParams, Dims, In, Null, Out, Weight

pytestmark = needs_clang
@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


# ---------------------------------------------------------------------------------------------------
# convolution gradients
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradCase:
    name: str
    input_shape: tuple[int, int, int, int]
    cout: int
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    slice: tuple[int, int, str] | None = None  # start, stop, "master" | "int8"

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.input_shape[3] == self.cout

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        n, h, w, _ = self.input_shape
        pt, pl, pb, pr = self.padding
        return (n, numerics.conv_output_size(h, self.kernel[0], self.strides[0], pt, pb),
                numerics.conv_output_size(w, self.kernel[1], self.strides[1], pl, pr), self.cout)


GRAD_CASES = [
    GradCase("1x1", (1, 4, 4, 24), 40, (1, 1)),
    GradCase("1x1 odd", (1, 3, 5, 7), 9, (1, 1)),
    GradCase("1x1 stride 2 batch 2", (2, 5, 6, 8), 12, (1, 1), strides=(2, 2)),
    GradCase("1x1 master slice", (1, 4, 4, 48), 16, (1, 1), slice=(0, 12, "master")),
    GradCase("1x1 int8 slice middle", (1, 3, 3, 20), 6, (1, 1), slice=(5, 14, "int8")),
    GradCase("classifier", (1, 1, 1, 160), 10, (1, 1)),
    GradCase("dw 3x3/1", (1, 6, 6, 10), 10, (3, 3), padding=(1, 1, 1, 1), groups=10),
    GradCase("dw 3x3/2", (1, 9, 8, 6), 6, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1), groups=6),
    GradCase("dw 5x5/1", (1, 4, 4, 8), 8, (5, 5), padding=(2, 2, 2, 2), groups=8),
    GradCase("dw 7x7/2", (1, 8, 8, 5), 5, (7, 7), strides=(2, 2), padding=(3, 3, 3, 3), groups=5),
    GradCase("dw 3x3/2 tf padding", (2, 8, 7, 4), 4, (3, 3), strides=(2, 2), padding=(0, 0, 1, 1), groups=4),
    GradCase("dw 3x5 mixed strides", (1, 7, 9, 3), 3, (3, 5), strides=(2, 1), padding=(1, 2, 0, 2), groups=3),
    GradCase("dw master slice", (1, 5, 5, 9), 9, (3, 3), padding=(1, 1, 1, 1), groups=9, slice=(3, 8, "master")),
    GradCase("dw int8 slice 7x7", (1, 6, 6, 6), 6, (7, 7), padding=(3, 3, 3, 3), groups=6, slice=(0, 4, "int8")),
    GradCase("dw 3x3/1 16 channels", (1, 5, 6, 16), 16, (3, 3), padding=(1, 1, 1, 1), groups=16),
    GradCase("dw 7x7/2 8 channels", (2, 8, 7, 8), 8, (7, 7), strides=(2, 2), padding=(3, 3, 3, 3), groups=8),
    GradCase("dw 5x5/1 20 channels", (1, 4, 4, 20), 20, (5, 5), padding=(2, 2, 2, 2), groups=20),
    GradCase("generic 3x3", (1, 5, 6, 6), 8, (3, 3), padding=(1, 1, 1, 1)),
    GradCase("generic 3x3/2 stem", (1, 9, 9, 3), 8, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1)),
    GradCase("generic grouped", (1, 5, 5, 6), 9, (3, 3), padding=(1, 0, 1, 2), groups=3),
    GradCase("generic master slice", (1, 5, 5, 8), 5, (3, 3), padding=(1, 1, 1, 1), slice=(2, 6, "master")),
    GradCase("generic 1x1 padded", (1, 3, 3, 4), 5, (1, 1), padding=(1, 1, 1, 1)),
    # a lite residual module's trained grouped conv: its whole weight as an fp32 master
    GradCase("generic grouped whole master", (1, 6, 6, 8), 8, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1), groups=2,
             slice=(0, 4, "master")),
]


@dataclass
class GradData:
    case: GradCase
    x: np.ndarray
    weight: Weight
    effective: np.ndarray
    grad: np.ndarray
    params: ConvParams
    zx: int


def make_grad(case: GradCase, seed: int = 0) -> GradData:
    rng = np.random.default_rng(seed)
    kh, kw = case.kernel
    cin = case.input_shape[3]
    frozen = rng.integers(-128, 128, (case.cout, kh, kw, cin // case.groups), dtype=np.int8)
    effective = frozen.copy()
    weight = Weight(frozen)
    if case.slice is not None:
        start, stop, kind = case.slice
        axis = 0 if case.depthwise else 3
        shape = list(frozen.shape)
        shape[axis] = stop - start
        index = [slice(None)] * 4
        index[axis] = slice(start, stop)
        if kind == "master":
            master = rng.uniform(-140, 140, shape).astype(np.float32)
            values = numerics.master_to_param(master, np.int8)
            weight = Weight(frozen, master=master, start=start, stop=stop)
        else:
            values = rng.integers(-128, 128, shape, dtype=np.int8)
            weight = Weight(frozen, slice=values, start=start, stop=stop)
        effective[tuple(index)] = values
    zx = -7
    x = rng.integers(-128, 128, case.input_shape, dtype=np.int8)
    grad = (rng.standard_normal(case.output_shape) * rng.uniform(0.01, 2.0, case.cout)).astype(np.float32)
    grad[rng.random(grad.shape) < 0.2] = 0.0  # masked elements
    params = ConvParams(zx, 0, case.strides, case.padding[:2], case.groups)
    return GradData(case, x, weight, effective, grad, params, zx)


def input_grad_kernel(case: GradCase) -> str:
    filter_shape = (case.cout, *case.kernel, case.input_shape[3] // case.groups)
    return kernels.conv2d_input_grad_kernel(case.input_shape, filter_shape, case.output_shape, case.strides,
                                            case.padding, case.groups)


def input_grad_scratch(data: GradData, kernel: str) -> int:
    s = data.case.slice
    sliced = {"slice_channels": None if s is None else s[1] - s[0], "master": s is not None and s[2] == "master"}
    if kernel == "depthwise":
        return kernels.buffer_size_depthwise_input_grad(data.case.input_shape, data.effective.shape,
                                                        data.case.strides, data.case.padding, **sliced)
    return kernels.buffer_size_conv2d_input_grad(kernel, data.effective.shape, **sliced)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.name)
def test_input_grad_within_the_sum_bound(lib: ctypes.CDLL, case: GradCase) -> None:
    data = make_grad(case)
    args = {"strides": case.strides, "padding": case.padding, "groups": case.groups}
    reference = numerics.conv2d_input_grad(data.grad, data.effective, case.input_shape, **args)
    abs_terms = numerics.conv2d_input_grad(np.abs(data.grad).astype(np.float64),
                                           np.abs(data.effective.astype(np.int16)), case.input_shape, **args)
    terms = case.kernel[0] * case.kernel[1] * case.cout // case.groups
    special = input_grad_kernel(case)
    kernels_to_run = [special, "wrapper"]
    if case.slice is None or not case.depthwise:
        kernels_to_run.append("generic")
    for kernel in dict.fromkeys(kernels_to_run):
        scratch = input_grad_scratch(data, special if kernel == "wrapper" else kernel)
        status, (gx,) = calls.run_host(lib, calls.conv2d_input_grad(kernel, data.grad, data.weight, data.params,
                                                                      case.input_shape, scratch))
        assert status == 0, kernel
        assert_within_sum_bound(gx, reference, abs_terms, terms)
        # pixels no window reaches are exactly +0
        np.testing.assert_array_equal(np.signbit(gx[abs_terms == 0]), False)
        np.testing.assert_array_equal(gx[abs_terms == 0], 0.0)
        # C get_buffer_size agrees with the Python mirror
        function = calls.INPUT_GRAD_FUNCTIONS[kernel] + "_get_buffer_size"
        size, _ = calls.run_host(lib, Call(function, [data.params, Dims(case.output_shape),
                                                      Dims(data.effective.shape), Dims(case.input_shape),
                                                      data.weight]))
        assert size == scratch, kernel
    s = case.slice
    assert kernels.buffer_size_conv2d_input_grad_wrapper(
        case.input_shape, data.effective.shape, case.output_shape, case.strides, case.padding, case.groups,
        slice_channels=None if s is None else s[1] - s[0], master=s is not None and s[2] == "master",
    ) == input_grad_scratch(data, special)


def test_input_grad_kernels_match_each_other_bit_for_bit(lib: ctypes.CDLL) -> None:
    """They document the same accumulation order (taps row-major, then output channels), so the
    specialised kernels and the generic one give identical bits."""
    for case in GRAD_CASES:
        if case.slice is not None and case.depthwise:
            continue
        data = make_grad(case, seed=3)
        results = []
        for kernel in dict.fromkeys([input_grad_kernel(case), "generic"]):
            status, (gx,) = calls.run_host(lib, calls.conv2d_input_grad(
                kernel, data.grad, data.weight, data.params, case.input_shape, input_grad_scratch(data, kernel)))
            assert status == 0
            results.append(gx)
        for other in results[1:]:
            np.testing.assert_array_equal(other.view(np.uint32), results[0].view(np.uint32), err_msg=case.name)


@pytest.mark.parametrize("case", [c for c in GRAD_CASES if c.depthwise], ids=lambda c: c.name)
def test_depthwise_input_grad_with_more_scratch_gives_the_same_bits(lib: ctypes.CDLL, case: GradCase) -> None:
    """With room for eight channels' planes (a channel count that is a multiple of 8, or its first
    multiple of 8 channels) the kernel takes eight channels at a time: the same bits as one at a time."""
    data = make_grad(case, seed=4)
    results = []
    for extra in (0, 8192, 65536):
        status, (gx,) = calls.run_host(lib, calls.conv2d_input_grad(
            "depthwise", data.grad, data.weight, data.params, case.input_shape,
            input_grad_scratch(data, "depthwise") + extra))
        assert status == 0
        results.append(gx)
    for other in results[1:]:
        np.testing.assert_array_equal(other.view(np.uint32), results[0].view(np.uint32))


def saved_input(data: GradData) -> tuple[np.ndarray, tuple[int, int] | None]:
    case = data.case
    if case.slice is None or (case.groups > 1 and not case.depthwise):  # a grouped weight trains whole
        return data.x, None
    start, stop, _ = data.case.slice
    return np.ascontiguousarray(data.x[..., start:stop]), (start, stop)


def weight_grad_reference(data: GradData) -> tuple[np.ndarray, np.ndarray]:
    case = data.case
    saved, channels = saved_input(data)
    args = {"kernel": case.kernel, "strides": case.strides, "padding": case.padding, "groups": case.groups,
            "channels": channels}
    reference = numerics.conv2d_weight_grad(saved, data.grad, input_zero_point=data.zx, **args)
    centred = np.abs(saved.astype(np.int32) - data.zx)
    abs_terms = numerics.conv2d_weight_grad(centred, np.abs(data.grad).astype(np.float64), input_zero_point=0, **args)
    return reference, abs_terms


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.name)
def test_weight_grad_within_the_sum_bound(lib: ctypes.CDLL, case: GradCase) -> None:
    data = make_grad(case, seed=1)
    saved, _ = saved_input(data)
    reference, abs_terms = weight_grad_reference(data)
    terms = int(np.prod(case.output_shape[:3]))
    if case.depthwise:
        start = case.slice[0] if case.slice else 0
        scratch = kernels.buffer_size_depthwise_weight_grad(saved.shape, case.output_shape, reference.shape,
                                                            case.strides)
        call = calls.depthwise_weight_grad(saved, data.grad, data.params, start, reference.shape, scratch)
        size, _ = calls.run_host(lib, Call("qtrain_depthwise_conv2d_weight_grad_f32_get_buffer_size", [
            data.params, Dims(saved.shape), Dims(case.output_shape), Dims(reference.shape)]))
        assert size == scratch
    else:
        call = calls.conv2d_weight_grad(saved, data.grad, data.params, reference.shape)
    status, (dw,) = calls.run_host(lib, call)
    assert status == 0
    assert_within_sum_bound(dw, reference, abs_terms, terms)


@pytest.mark.parametrize("storage", [np.int8, np.float32])
@pytest.mark.parametrize("case", [c for c in GRAD_CASES if c.groups == 1], ids=lambda c: c.name)
def test_fused_weight_grad_update_equals_grad_then_update(lib: ctypes.CDLL, case: GradCase, storage: type) -> None:
    data = make_grad(case, seed=2)
    saved, _ = saved_input(data)
    filter_shape = (case.cout, *case.kernel, saved.shape[3])
    rng = np.random.default_rng(7)
    if storage is np.int8:
        param = rng.integers(-128, 128, filter_shape, dtype=np.int8)
        scale = rng.uniform(20, 400, case.cout).astype(np.float32)  # QAS: s_w^-2, steps of several units
    else:
        param = rng.uniform(-100, 100, filter_shape).astype(np.float32)
        scale = rng.uniform(1, 10, case.cout).astype(np.float32)
    lr = 0.02
    status, (dw,) = calls.run_host(lib, calls.conv2d_weight_grad(saved, data.grad, data.params, filter_shape))
    assert status == 0
    status, (fused,) = calls.run_host(lib, calls.conv2d_weight_grad_sgd_update(saved, data.grad, data.params, param,
                                                                                lr, scale))
    assert status == 0
    _, (separate,) = calls.run_host(lib, calls.sgd_update(param, dw, lr, scale))
    expected = numerics.sgd_update(param, dw, lr=lr, grad_scale=scale)
    np.testing.assert_array_equal(fused.view(np.uint8), separate.view(np.uint8))
    np.testing.assert_array_equal(fused.view(np.uint8), expected.view(np.uint8))
    assert (fused != param).mean() > 0.3  # the update did something


def test_fused_update_refuses_grouped_convolutions(lib: ctypes.CDLL) -> None:
    data = make_grad(GRAD_CASES[16])
    param = np.zeros((9, 3, 3, 2), dtype=np.int8)
    status, _ = calls.run_host(lib, calls.conv2d_weight_grad_sgd_update(data.x, data.grad, data.params, param, 0.1,
                                                                       np.ones(1, np.float32)))
    assert status == -1


# ---------------------------------------------------------------------------------------------------
# element-wise and small kernels
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("with_mask", "per_channel", "in_place"), [
    (True, True, False), (True, False, True), (False, True, True), (False, False, False)])
def test_requant_grad_is_bit_exact(lib: ctypes.CDLL, with_mask: bool, per_channel: bool, in_place: bool) -> None:
    rng = np.random.default_rng(11)
    g = rng.standard_normal((1, 5, 3, 7)).astype(np.float32)
    g[0, 0, 0, :3] = [-1.0, np.float32(-0.0), 3e-39]
    mask = rng.random(g.shape) < 0.7 if with_mask else None
    m = rng.uniform(0.01, 2, 7 if per_channel else 1).astype(np.float32)
    expected = numerics.requant_grad(g, mask, m)
    call = calls.requant_grad(g, mask, m)
    if in_place:  # the output buffer starts as the gradient and is passed as both
        out = Out(g.shape, np.dtype(np.float32), g)
        call = Call(call.function, [out, *call.args[1:-1], out], returns="void")
    _, outputs = calls.run_host(lib, call)
    np.testing.assert_array_equal(outputs[-1].view(np.uint32), expected.view(np.uint32))  # +0.0 where masked


def test_requant_grad_in_place_really_aliases(lib: ctypes.CDLL) -> None:
    g = np.arange(1, 17, dtype=np.float32).reshape(1, 2, 2, 4)
    buffer = g.copy()
    address = ctypes.c_void_p(buffer.ctypes.data)
    m = np.full(1, 0.5, np.float32)
    packed = np.packbits((np.arange(16) % 3 != 0), bitorder="little")
    fn = lib.qtrain_requant_grad_f32
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32,
                   ctypes.c_void_p]
    fn.restype = None
    fn(address, ctypes.c_void_p(packed.ctypes.data), 16, 4, ctypes.c_void_p(m.ctypes.data), 1, address)
    np.testing.assert_array_equal(buffer, numerics.requant_grad(g, (np.arange(16) % 3 != 0).reshape(g.shape), m))


def test_bias_grad_within_the_sum_bound(lib: ctypes.CDLL) -> None:
    g = np.random.default_rng(12).standard_normal((1, 9, 7, 13)).astype(np.float32)
    call = Call("qtrain_bias_grad_f32", [In(g), I32(63), I32(13), Out((13,), np.dtype(np.float32))], returns="void")
    _, (db,) = calls.run_host(lib, call)
    assert_within_sum_bound(db, numerics.bias_grad(g), np.abs(g.astype(np.float64)).sum(axis=(0, 1, 2)), 63)
    # the documented order: fp32 adds from +0, pixels in row order
    expected = np.zeros(13, np.float32)
    for row in g.reshape(63, 13):
        expected = (expected + row).astype(np.float32)
    np.testing.assert_array_equal(db, expected)


@pytest.mark.parametrize(("shape", "kernel", "strides"), [
    ((1, 4, 4, 160), (4, 4), (1, 1)), ((2, 5, 6, 3), (3, 3), (1, 1)), ((1, 7, 6, 4), (3, 2), (2, 2)),
    ((1, 5, 5, 2), (2, 2), (3, 3))])
def test_avgpool_grad(lib: ctypes.CDLL, shape: tuple[int, ...], kernel: tuple[int, int],
                      strides: tuple[int, int]) -> None:
    n, h, w, c = shape
    out_shape = (n, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1, c)
    g = np.random.default_rng(13).standard_normal(out_shape).astype(np.float32)
    call = Call("qtrain_avgpool_grad_f32", [Dims(out_shape), In(g), I32(kernel[0]), I32(kernel[1]), I32(strides[0]),
                                            I32(strides[1]), Dims(shape), Out(shape, np.dtype(np.float32))])
    status, (gx,) = calls.run_host(lib, call)
    assert status == 0
    reference = numerics.avgpool_grad(g, shape, kernel=kernel, strides=strides)
    abs_terms = numerics.avgpool_grad(np.abs(g).astype(np.float64), shape, kernel=kernel, strides=strides)
    assert_within_sum_bound(gx, reference, abs_terms, kernel[0] * kernel[1])
    if out_shape[1:3] == (1, 1) and kernel == shape[1:3]:
        np.testing.assert_array_equal(gx, reference)  # a broadcast is exact


def test_grad_accumulate_and_channel_slice_are_exact(lib: ctypes.CDLL) -> None:
    rng = np.random.default_rng(14)
    a = rng.standard_normal(301).astype(np.float32)
    b = rng.standard_normal(301).astype(np.float32)
    _, (s,) = calls.run_host(lib, Call("qtrain_grad_accumulate_f32", [In(a), In(b), I32(301),
                                                                      Out((301,), np.dtype(np.float32))],
                                       returns="void"))
    np.testing.assert_array_equal(s, numerics.grad_accumulate(a, b))
    x8 = rng.integers(-128, 128, (1, 3, 5, 48), dtype=np.int8)
    for start, stop in ((0, 12), (5, 11), (47, 48), (0, 48)):
        _, (out,) = calls.run_host(lib, Call("qtrain_channel_slice_s8", [
            In(x8), I32(15), I32(48), I32(start), I32(stop), Out((1, 3, 5, stop - start), np.dtype(np.int8))],
            returns="void"))
        np.testing.assert_array_equal(out, numerics.channel_slice(x8, start, stop))
        xf = x8.astype(np.float32) * 0.5
        _, (out,) = calls.run_host(lib, Call("qtrain_channel_slice_f32", [
            In(xf), I32(15), I32(48), I32(start), I32(stop), Out((1, 3, 5, stop - start), np.dtype(np.float32))],
            returns="void"))
        np.testing.assert_array_equal(out, numerics.channel_slice(xf, start, stop))


@pytest.mark.parametrize("classes", [2, 10, 1000])
def test_cross_entropy_and_its_gradient(lib: ctypes.CDLL, classes: int) -> None:
    rng = np.random.default_rng(classes)
    logits = (rng.standard_normal(classes) * 4).astype(np.float32)
    label = int(rng.integers(classes))
    call = Call("qtrain_cross_entropy_f32", [In(logits), I32(classes), I32(label),
                                             Out((classes,), np.dtype(np.float32))], returns="f32")
    loss, (grad,) = calls.run_host(lib, call)
    loss_only, _ = calls.run_host(lib, Call("qtrain_cross_entropy_f32", [In(logits), I32(classes), I32(label),
                                                                         Null()], returns="f32"))
    _, (grad_only,) = calls.run_host(lib, Call("qtrain_cross_entropy_grad_f32", [
        In(logits), I32(classes), I32(label), Out((classes,), np.dtype(np.float32))], returns="void"))
    assert np.float32(loss) == np.float32(loss_only)
    np.testing.assert_array_equal(grad, grad_only)
    # numerics.exp_f32 / log_f32 are runtime_math.c's qtrain_expf / qtrain_logf operation for operation,
    # and the loss sums in the same order: the golden model's loss and gradient are the kernel's bits.
    exact = numerics.cross_entropy_relaxed(logits, label)
    np.testing.assert_allclose(loss, exact, rtol=1e-5, atol=1e-6)
    assert np.float32(loss) == numerics.cross_entropy(logits, label)
    np.testing.assert_array_equal(grad, numerics.cross_entropy_grad(logits, label))
    np.testing.assert_allclose(grad, numerics.cross_entropy_grad_relaxed(logits, label), rtol=1e-5, atol=1e-7)
    assert abs(float(grad.astype(np.float64).sum())) < 1e-5


def test_exp_log_are_the_runtime_shims_bit_for_bit(lib: ctypes.CDLL) -> None:
    lib.qtrain_expf.restype = lib.qtrain_logf.restype = ctypes.c_float
    lib.qtrain_expf.argtypes = lib.qtrain_logf.argtypes = [ctypes.c_float]
    rng = np.random.default_rng(21)
    xs = np.concatenate([rng.uniform(-110, 90, 4000), rng.normal(0, 5, 4000),
                         [0.0, -0.0, 88.72283, 88.7229, -103.97208, -103.9721, -87.5, 1e-30, np.nan, np.inf]])
    ls = np.concatenate([np.abs(rng.normal(0, 10, 4000)), 10.0 ** rng.uniform(-44, 38, 4000),
                         [0.0, 1.0, 2.0, np.inf, -1.0, np.nan, 1e-45, 3e-39]])
    for fn, ref, values in ((lib.qtrain_expf, numerics.exp_f32, xs), (lib.qtrain_logf, numerics.log_f32, ls)):
        x = values.astype(np.float32)
        c = np.array([fn(float(v)) for v in x], dtype=np.float32)
        py = ref(x)
        same = (c.view(np.uint32) == py.view(np.uint32)) | (np.isnan(c) & np.isnan(py))
        assert same.all(), (x[~same][:5], c[~same][:5], py[~same][:5])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float32])
@pytest.mark.parametrize("per_channel", [True, False])
def test_sgd_update_is_bit_exact(lib: ctypes.CDLL, dtype: type, per_channel: bool) -> None:
    rng = np.random.default_rng(15)
    shape = (6, 3, 3, 5) if dtype is not np.int32 else (40,)
    channels = shape[0]
    if dtype is np.int8:
        param = rng.integers(-128, 128, shape, dtype=np.int8)
    elif dtype is np.int32:
        param = rng.integers(-(2**31), 2**31, shape, dtype=np.int64).astype(np.int32)
        param[:4] = [2**31 - 1, -(2**31), 0, 2**31 - 5]
    else:
        param = rng.uniform(-130, 130, shape).astype(np.float32)
    grad = (rng.standard_normal(shape) * 50).astype(np.float32)
    grad.flat[:6] = [0.5, 1.5, -2.5, 1e12, -1e12, 3e9]  # ties (step 1) and huge steps
    scale = rng.uniform(0.5, 3, channels if per_channel else 1).astype(np.float32)
    scale[0] = 1.0
    lr = 1.0 if dtype is np.int32 else 0.7
    _, (out,) = calls.run_host(lib, calls.sgd_update(param, grad, lr, scale))
    expected = numerics.sgd_update(param, grad, lr=lr, grad_scale=scale)
    np.testing.assert_array_equal(out.view(np.uint8), expected.view(np.uint8))


def test_f32_scalars_reach_the_kernel_as_float32(lib: ctypes.CDLL) -> None:
    """ctypes passes F32 as C float (a bare Python float would be a double): lr = 0.1 must act as fp32(0.1)."""
    param = np.zeros((1, 1), np.float32)
    _, (out,) = calls.run_host(lib, calls.sgd_update(param, np.ones((1, 1), np.float32), 0.1, np.ones(1)))
    assert out[0, 0] == -np.float32(0.1)
    assert isinstance(F32(0.1).value, float)


# -- stochastic rounding (numerics.sgd_update with a noise key) -------------------------------------------


def test_noise_key_is_the_golden_models(lib: ctypes.CDLL) -> None:
    lib.qtrain_noise_key.restype = ctypes.c_uint32
    lib.qtrain_noise_key.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
    for seed, step in ((0, 0), (1, 1), (numerics.noise_seed("conv3.weight"), 7), (2**31 - 1, 2**32 - 1)):
        assert lib.qtrain_noise_key(seed, step) == numerics.noise_key(seed, step)


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("per_channel", [True, False])
def test_stochastic_sgd_update_is_bit_exact(lib: ctypes.CDLL, dtype: type, per_channel: bool) -> None:
    rng = np.random.default_rng(16)
    shape = (6, 3, 3, 5)
    if dtype is np.int8:
        param = rng.integers(-128, 128, shape, dtype=np.int8)
    else:
        param = rng.integers(numerics.FIXED16_MIN, numerics.FIXED16_MAX + 1, shape).astype(np.int16)
        param.flat[:2] = [numerics.FIXED16_MIN, numerics.FIXED16_MAX]
    grad = (rng.standard_normal(shape) * (2 if dtype is np.int8 else 0.05)).astype(np.float32)
    grad.flat[2:6] = [1e12, -1e12, 0.0, -0.0]  # saturating steps and none at all
    scale = rng.uniform(0.5, 3, shape[0] if per_channel else 1).astype(np.float32)
    key = numerics.noise_key(numerics.noise_seed("w"), 3)
    _, (out,) = calls.run_host(lib, calls.sgd_update_stochastic(param, grad, 0.7, scale, key))
    expected = numerics.sgd_update(param, grad, lr=0.7, grad_scale=scale, noise_key=key)
    if dtype is np.int16:
        out = calls.from_planes(out)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)
    assert (out != param).mean() > 0.5  # the update did something


@pytest.mark.parametrize("storage", [np.int8, np.int16])
@pytest.mark.parametrize("case", [c for c in GRAD_CASES if c.groups == 1][:4], ids=lambda c: c.name)
def test_fused_stochastic_update_equals_grad_then_update(lib: ctypes.CDLL, case: GradCase, storage: type) -> None:
    data = make_grad(case, seed=2)
    saved, _ = saved_input(data)
    filter_shape = (case.cout, *case.kernel, saved.shape[3])
    rng = np.random.default_rng(8)
    if storage is np.int8:
        param = rng.integers(-128, 128, filter_shape, dtype=np.int8)
    else:
        param = rng.integers(-30000, 30000, filter_shape).astype(np.int16)
    scale = rng.uniform(0.5, 4, case.cout).astype(np.float32)
    key = numerics.noise_key(12345, 2)
    status, (dw,) = calls.run_host(lib, calls.conv2d_weight_grad(saved, data.grad, data.params, filter_shape))
    assert status == 0
    status, (fused,) = calls.run_host(lib, calls.conv2d_weight_grad_sgd_update_stochastic(
        saved, data.grad, data.params, param, 0.02, scale, key))
    assert status == 0
    if storage is np.int16:
        fused = calls.from_planes(fused)
    expected = numerics.sgd_update(param, dw, lr=0.02, grad_scale=scale, noise_key=key)
    np.testing.assert_array_equal(fused, expected)
    assert (fused != param).mean() > 0.2
