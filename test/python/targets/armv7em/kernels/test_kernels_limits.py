"""The limits behind the kernel choices: defined once in qtrain_kernels.h, read from there by the Python mirror.

Header: the mirror's constants are the header's `#define QTRAIN_...` values (a renamed define fails the
import, a new value changes the mirror's choices without a Python edit), and no kernel file keeps a
private copy of one.

Boundaries: for every limit, shapes exactly at it and just past it, built from the constants (so they
follow the header): the Python mirror's choice (`conv2d_kernel`, `conv2d_input_grad_kernel`, the kernel
registry's `limits`) is the C library's (the wrappers' `_kernel` queries; for the kernels without a
wrapper, whether the kernel accepts the call), the mirror's scratch size is the C `*_get_buffer_size`,
and the C call given exactly that scratch computes what the golden model does. Both host builds
(portable and DSP).
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from armv7em_testing import assert_within_sum_bound, needs_clang

from qtrain import numerics
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.targets.armv7em import kernels
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import Call, ConvParams, Dims, Weight
from qtrain.targets.armv7em.kernels.registry import KERNELS

MIRROR = {
    "MAX_DEPTHWISE_KERNEL": "QTRAIN_MAX_DEPTHWISE_KERNEL",
    "SMALL_K_MAX_K": "QTRAIN_SMALL_K_MAX_K",
    "SMALL_K_MAX_CHANNELS": "QTRAIN_SMALL_K_MAX_CHANNELS",
    "SMALL_K_MAX_SCRATCH": "QTRAIN_SMALL_K_MAX_SCRATCH",
    "FUSED_CHANNEL_BLOCK": "QTRAIN_FUSED_CHANNEL_BLOCK",
    "GROUP_NORM_MAX_GROUP_ELEMENTS": "QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS",
    "GROUP_NORM_MAX_CHANNELS_PER_GROUP": "QTRAIN_GROUP_NORM_MAX_CHANNELS",
}
"""Each constant of the Python mirror and the define it comes from."""

D = kernels.MAX_DEPTHWISE_KERNEL
CH = kernels.SMALL_K_MAX_CHANNELS
K = kernels.SMALL_K_MAX_K
B = kernels.FUSED_CHANNEL_BLOCK


# ---------------------------------------------------------------------------------------------------
# the header is the one definition
# ---------------------------------------------------------------------------------------------------


def test_the_header_defines_every_constant_the_mirror_reads() -> None:
    defined = kernels.parse_header_constants(kernels.HEADER.read_text())
    assert set(kernels.HEADER_CONSTANTS) == set(MIRROR.values())
    for attribute, name in MIRROR.items():
        assert name in defined, f"qtrain_kernels.h no longer defines {name}"
        assert getattr(kernels, attribute) == kernels.HEADER_CONSTANTS[name] == defined[name], attribute


def test_no_kernel_file_keeps_a_private_copy() -> None:
    """Every .c takes the limits from the header: none defines one again (or the old private MAX_KERNEL /
    MAX_K), and none compares against a limit's literal value (the small ones, 4 and 8, are too common
    to tell apart)."""
    for source in kernels.sources():
        text = source.read_text()
        assert not set(kernels.parse_header_constants(text)) & set(MIRROR.values()), source.name
        assert not re.search(r"#\s*define\s+MAX_K(ERNEL)?\b", text), source.name
        for name, value in kernels.HEADER_CONSTANTS.items():
            if value >= 10:
                assert not re.search(rf"[<>]=?\s*{value}\b", text), f"{source.name} restates {name}"


def test_the_parser_reads_integer_defines_only() -> None:
    text = """
#define QTRAIN_A 11
  #  define QTRAIN_B   256 /* a comment after the value */
#define QTRAIN_C 8192 // another
#define QTRAIN_GUARD_H
#define QTRAIN_EXPR (QTRAIN_A + 1)
#define OTHER_D 4
 * #define QTRAIN_IN_A_COMMENT 5
"""
    assert kernels.parse_header_constants(text) == {"QTRAIN_A": 11, "QTRAIN_B": 256, "QTRAIN_C": 8192}


def _mirror_with_header(tmp_path: Path, changes: dict[str, str]) -> ModuleType:
    """The mirror's module source, imported afresh next to a copy of qtrain_kernels.h whose `#define`
    lines for `changes` (name -> replacement line) are replaced: what an edit of the header does."""
    header = kernels.HEADER.read_text()
    for name, line in changes.items():
        header, count = re.subn(rf"^#define {name} .*$", line, header, flags=re.MULTILINE)
        assert count == 1, name
    folder = tmp_path / "kernels"
    folder.mkdir()
    shutil.copy(Path(kernels.__file__), folder / "__init__.py")
    (folder / "qtrain_kernels.h").write_text(header)
    spec = importlib.util.spec_from_file_location("qtrain_kernels_mirror_copy", folder / "__init__.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_value_in_the_header_changes_the_mirror(tmp_path: Path) -> None:
    changed = {"QTRAIN_MAX_DEPTHWISE_KERNEL": D + 2, "QTRAIN_SMALL_K_MAX_K": K + 50,
               "QTRAIN_SMALL_K_MAX_CHANNELS": CH + 1, "QTRAIN_SMALL_K_MAX_SCRATCH": 2 * kernels.SMALL_K_MAX_SCRATCH,
               "QTRAIN_FUSED_CHANNEL_BLOCK": B // 2, "QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS": 4096,
               "QTRAIN_GROUP_NORM_MAX_CHANNELS": 16}
    mirror = _mirror_with_header(tmp_path, {name: f"#define {name} {value}" for name, value in changed.items()})
    assert mirror.HEADER_CONSTANTS == changed
    assert kernels.group_norm_fits((1, 16, 16, 32), 1) and not mirror.group_norm_fits((1, 16, 16, 32), 1)
    for conv, _ in FORWARD:  # every shape past a forward limit is now within it
        assert mirror.conv2d_kernel(*conv.choice_args) == ("depthwise" if conv.groups > 1 else "small_k"), conv.name
    grad = depthwise_conv(D + 1, D + 1)
    assert kernels.conv2d_input_grad_kernel(*grad.choice_args) == "generic"
    assert mirror.conv2d_input_grad_kernel(*grad.choice_args) == "depthwise"
    fused = ((1, 8, 8, 4), (B, 1, 1, 4), (B, 3, 3, 1), (1, 8, 8, B), (1, 1))
    assert mirror.buffer_size_fused_pointwise_depthwise(*fused) < kernels.buffer_size_fused_pointwise_depthwise(*fused)


def test_a_renamed_define_fails_the_import(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="QTRAIN_SMALL_K_MAX_K") as error:
        _mirror_with_header(tmp_path, {"QTRAIN_SMALL_K_MAX_K": f"#define QTRAIN_SMALL_K_LARGEST_K {K}"})
    assert type(error.value).__name__ == "HeaderConstantError"


# ---------------------------------------------------------------------------------------------------
# boundary shapes
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv:
    name: str
    input_shape: tuple[int, int, int, int]
    filter_shape: tuple[int, int, int, int]  # OHWI
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    strides: tuple[int, int] = (1, 1)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        n, h, w, _ = self.input_shape
        cout, kh, kw, _ = self.filter_shape
        pt, pl, pb, pr = self.padding
        return (n, numerics.conv_output_size(h, kh, self.strides[0], pt, pb),
                numerics.conv_output_size(w, kw, self.strides[1], pl, pr), cout)

    @property
    def choice_args(self) -> tuple[object, ...]:
        """The arguments of kernels.conv2d_kernel / conv2d_input_grad_kernel (the output is the gradient)."""
        return (self.input_shape, self.filter_shape, self.output_shape, self.strides, self.padding, self.groups)

    @property
    def params(self) -> ConvParams:
        return ConvParams(-3, 5, self.strides, self.padding[:2], self.groups)


def depthwise_conv(kh: int, kw: int, channels: int = 3) -> Conv:
    """A KH x KW depthwise convolution with "same" padding."""
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    return Conv(f"depthwise {kh}x{kw}", (1, kh + 1, kw + 2, channels), (channels, kh, kw, 1),
                (pt, pl, kh - 1 - pt, kw - 1 - pl), groups=channels)


def small_k_scratch(k: int, cout: int) -> int:
    return kernels.buffer_size_conv2d("small_k", (1, 2, k + 1, 1), (cout, 1, k, 1), (1, 2, 2, cout), (1, 1))


def small_k_scratch_boundary() -> tuple[Conv, Conv]:
    """Two small-K shapes (one input channel, a 1 x K kernel, K <= SMALL_K_MAX_K) whose small-K scratch is
    the largest within SMALL_K_MAX_SCRATCH and the smallest above it, over every K and C_out. The size
    is 2 * K_pad * (C_out_pad + 2) with both pads even, a multiple of 8: with the limit 8192 the two are
    exactly 8192 and 8200 (no shape needs 8193)."""
    limit = kernels.SMALL_K_MAX_SCRATCH
    at: tuple[int, int, int] | None = None  # (size, K, C_out)
    past: tuple[int, int, int] | None = None
    for k in range(K, 0, -1):
        for cout in itertools.count(1):
            size = small_k_scratch(k, cout)
            if size > limit:
                past = (size, k, cout) if past is None or size < past[0] else past
                break
            at = (size, k, cout) if at is None or size > at[0] else at
    assert at is not None and past is not None

    def conv(found: tuple[int, int, int], where: str) -> Conv:
        size, k, cout = found
        return Conv(f"small-K scratch {size} ({where})", (1, 2, k + 1, 1), (cout, 1, k, 1))

    return conv(at, "at the limit"), conv(past, "past it")


SCRATCH_AT, SCRATCH_PAST = small_k_scratch_boundary()

FORWARD: list[tuple[Conv, str]] = [
    (depthwise_conv(D, D), "depthwise"),
    (depthwise_conv(D + 1, D + 1), "generic"),
    (depthwise_conv(D, D + 1), "generic"),
    (depthwise_conv(D + 1, D), "generic"),
    (Conv(f"3x3 C_in {CH}", (1, 7, 7, CH), (8, 3, 3, CH), (1, 1, 1, 1)), "small_k"),
    (Conv(f"3x3 C_in {CH + 1}", (1, 7, 7, CH + 1), (8, 3, 3, CH + 1), (1, 1, 1, 1)), "generic"),
    (Conv(f"1x1 C_in {CH}", (1, 5, 6, CH), (8, 1, 1, CH)), "small_k"),
    (Conv(f"1x1 C_in {CH + 1}", (1, 5, 6, CH + 1), (8, 1, 1, CH + 1)), "1x1"),
    (Conv(f"K {K}", (1, 2, K + 2, 1), (2, 1, K, 1)), "small_k"),
    (Conv(f"K {K + 1}", (1, 2, K + 2, 1), (2, 1, K + 1, 1)), "generic"),
    (SCRATCH_AT, "small_k"),
    (SCRATCH_PAST, "generic"),
]
"""Forward convolutions at and just past each limit of qtrain_conv2d_wrapper_s8, and the kernel it picks."""

INPUT_GRAD: list[tuple[Conv, str]] = [
    (depthwise_conv(D, D), "depthwise"),
    (depthwise_conv(D + 1, D + 1), "generic"),
    (depthwise_conv(D, D + 1), "generic"),
    (depthwise_conv(D + 1, D), "generic"),
]
"""Input gradients at and just past the depthwise limit of qtrain_conv2d_input_grad_wrapper_f32."""

DEPTHWISE_KERNELS = [((D, D), True), ((D + 1, D + 1), False), ((D, D + 1), False), ((D + 1, D), False)]
"""Kernel sizes of the depthwise weight gradient and the fused kernel, and whether the kernel takes them."""


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


def _output_scale(acc: np.ndarray, s_in: float) -> float:
    """An output scale that spreads the requantized values over the int8 range and a bit beyond."""
    return float(np.float32(s_in * 0.01 * max(float(np.abs(acc).std()), 1.0) / 70.0))


def test_the_shapes_sit_on_the_limits() -> None:
    """The boundary shapes are where the docstrings say (so the tests below cross each limit by one)."""
    at, past = (small_k_scratch(c.filter_shape[2], c.filter_shape[0]) for c in (SCRATCH_AT, SCRATCH_PAST))
    assert at <= kernels.SMALL_K_MAX_SCRATCH < past
    if kernels.SMALL_K_MAX_SCRATCH % 8 == 0:
        assert (at, past) == (kernels.SMALL_K_MAX_SCRATCH, kernels.SMALL_K_MAX_SCRATCH + 8)
    for conv, _ in FORWARD:
        cout, kh, kw, cin = conv.filter_shape
        if conv.name.startswith(("K ", "small-K")):
            assert cin == 1 and kh == 1  # only K (or only the scratch) differs within each pair
        if conv.name.startswith("K "):
            assert kw in (K, K + 1) and small_k_scratch(kw, cout) <= kernels.SMALL_K_MAX_SCRATCH


# ---------------------------------------------------------------------------------------------------
# forward convolution: qtrain_conv2d_wrapper_s8
# ---------------------------------------------------------------------------------------------------


@needs_clang
@pytest.mark.parametrize(("conv", "expected"), FORWARD, ids=[c.name for c, _ in FORWARD])
def test_forward_wrapper_at_the_limits(lib: ctypes.CDLL, conv: Conv, expected: str) -> None:
    chosen, _ = calls.run_host(lib, calls.conv2d_wrapper_kernel(conv.params, conv.input_shape, conv.filter_shape,
                                                                conv.output_shape))
    assert (kernels.conv2d_kernel(*conv.choice_args), calls.CONV_KERNELS[int(chosen)]) == (expected, expected)

    rng = np.random.default_rng(sum(conv.filter_shape))
    x = rng.integers(-128, 128, conv.input_shape, dtype=np.int8)
    w = rng.integers(-128, 128, conv.filter_shape, dtype=np.int8)
    bias = rng.integers(-3000, 3000, conv.filter_shape[0], dtype=np.int32)
    scratch = kernels.buffer_size_conv2d_wrapper(*conv.choice_args)
    size, _ = calls.run_host(lib, Call("qtrain_conv2d_wrapper_s8_get_buffer_size", [
        conv.params, Dims(conv.input_shape), Dims(conv.filter_shape), Dims(conv.output_shape), Weight(w)]))
    assert size == scratch

    p = conv.params
    acc = numerics.conv2d_accumulate(x, w, bias, input_zero_point=p.input_zero_point, strides=conv.strides,
                                     padding=conv.padding, groups=conv.groups)
    s_x, s_w = 0.03, (rng.uniform(0.5, 1.5, conv.filter_shape[0]) * 0.01).astype(np.float32)
    s_y = _output_scale(acc, s_x)
    y, mask = numerics.conv2d_with_mask(x, w, bias, input_scale=s_x, input_zero_point=p.input_zero_point,
                                        weight_scales=s_w, output_scale=s_y, output_zero_point=p.output_zero_point,
                                        strides=conv.strides, padding=conv.padding, groups=conv.groups)
    status, (out, packed) = calls.run_host(lib, calls.conv2d("wrapper", x, Weight(w), bias,
                                                             numerics.conv2d_multiplier(s_x, s_w, s_y), p,
                                                             conv.output_shape, scratch))
    assert status == 0
    np.testing.assert_array_equal(out, y)
    np.testing.assert_array_equal(calls.unpack_mask(packed, conv.output_shape), mask)


@needs_clang
def test_small_k_scratch_at_the_limit_is_the_c_size(lib: ctypes.CDLL) -> None:
    """The C small-K kernel sizes the two scratch boundary shapes as the mirror does, on both sides of
    the limit: the wrapper's choice above turns on exactly these bytes."""
    sizes = []
    for conv in (SCRATCH_AT, SCRATCH_PAST):
        size, _ = calls.run_host(lib, Call("qtrain_conv2d_small_k_s8_get_buffer_size", [
            conv.params, Dims(conv.input_shape), Dims(conv.filter_shape), Dims(conv.output_shape),
            Weight(np.zeros(conv.filter_shape, np.int8))]))
        assert size == small_k_scratch(conv.filter_shape[2], conv.filter_shape[0])
        sizes.append(size)
    assert sizes[0] <= kernels.SMALL_K_MAX_SCRATCH < sizes[1]


# ---------------------------------------------------------------------------------------------------
# input gradient: qtrain_conv2d_input_grad_wrapper_f32
# ---------------------------------------------------------------------------------------------------


@needs_clang
@pytest.mark.parametrize(("conv", "expected"), INPUT_GRAD, ids=[c.name for c, _ in INPUT_GRAD])
def test_input_grad_wrapper_at_the_limits(lib: ctypes.CDLL, conv: Conv, expected: str) -> None:
    chosen, _ = calls.run_host(lib, calls.conv2d_input_grad_wrapper_kernel(conv.params, conv.output_shape,
                                                                           conv.filter_shape, conv.input_shape))
    assert (kernels.conv2d_input_grad_kernel(*conv.choice_args), calls.CONV_KERNELS[int(chosen)]) == (expected,
                                                                                                      expected)
    rng = np.random.default_rng(sum(conv.filter_shape))
    w = rng.integers(-128, 128, conv.filter_shape, dtype=np.int8)
    grad = rng.standard_normal(conv.output_shape).astype(np.float32)
    scratch = kernels.buffer_size_conv2d_input_grad_wrapper(*conv.choice_args)
    size, _ = calls.run_host(lib, Call("qtrain_conv2d_input_grad_wrapper_f32_get_buffer_size", [
        conv.params, Dims(conv.output_shape), Dims(conv.filter_shape), Dims(conv.input_shape), Weight(w)]))
    assert size == scratch

    status, (gx,) = calls.run_host(lib, calls.conv2d_input_grad("wrapper", grad, Weight(w), conv.params,
                                                                conv.input_shape, scratch))
    assert status == 0
    args = {"strides": conv.strides, "padding": conv.padding, "groups": conv.groups}
    reference = numerics.conv2d_input_grad(grad, w, conv.input_shape, **args)
    abs_terms = numerics.conv2d_input_grad(np.abs(grad).astype(np.float64), np.abs(w.astype(np.int16)),
                                           conv.input_shape, **args)
    assert_within_sum_bound(gx, reference, abs_terms, conv.filter_shape[1] * conv.filter_shape[2])


# ---------------------------------------------------------------------------------------------------
# depthwise weight gradient (no wrapper: the kernel takes the size or refuses the call)
# ---------------------------------------------------------------------------------------------------


def _no_trained_weights(value: object) -> tuple[int | None, bool]:
    return None, False


@needs_clang
@pytest.mark.parametrize(("kernel", "fits"), DEPTHWISE_KERNELS, ids=[f"{k[0]}x{k[1]}" for k, _ in DEPTHWISE_KERNELS])
def test_depthwise_weight_grad_at_the_limit(lib: ctypes.CDLL, kernel: tuple[int, int], fits: bool) -> None:
    conv = depthwise_conv(*kernel, channels=4)
    g = conv.params
    call = kc.KernelCall("qtrain_depthwise_conv2d_weight_grad_f32", (
        kc.Scratch(), kc.ConvGeometry(g.input_zero_point, 0, conv.strides, conv.padding, conv.groups),
        kc.Shape(conv.input_shape), kc.Tensor(None), kc.Shape(conv.output_shape), kc.Tensor(None), kc.I32(0),
        kc.Shape(conv.filter_shape), kc.Tensor(None)))
    entry = KERNELS[call.function]
    assert entry.limits is not None and entry.scratch is not None
    scratch = entry.scratch(call, _no_trained_weights)
    size, _ = calls.run_host(lib, Call("qtrain_depthwise_conv2d_weight_grad_f32_get_buffer_size", [
        g, Dims(conv.input_shape), Dims(conv.output_shape), Dims(conv.filter_shape)]))
    assert size == scratch

    rng = np.random.default_rng(kernel[0] * 100 + kernel[1])
    x = rng.integers(-128, 128, conv.input_shape, dtype=np.int8)
    grad = rng.standard_normal(conv.output_shape).astype(np.float32)
    status, (dw,) = calls.run_host(lib, calls.depthwise_weight_grad(x, grad, g, 0, conv.filter_shape, scratch))
    assert (entry.limits(call), status == 0) == (fits, fits)
    if not fits:
        assert status == -1 and not dw.any()  # refused, nothing written
        return
    args = {"kernel": kernel, "strides": conv.strides, "padding": conv.padding, "groups": conv.groups}
    reference = numerics.conv2d_weight_grad(x, grad, input_zero_point=g.input_zero_point, **args)
    abs_terms = numerics.conv2d_weight_grad(np.abs(x.astype(np.int32) - g.input_zero_point),
                                            np.abs(grad).astype(np.float64), input_zero_point=0, **args)
    assert_within_sum_bound(dw, reference, abs_terms, int(np.prod(conv.output_shape[:3])))


# ---------------------------------------------------------------------------------------------------
# fused pointwise -> depthwise: the depthwise limit and the channel block
# ---------------------------------------------------------------------------------------------------


@dataclass
class Fused:
    x: np.ndarray
    pw: np.ndarray
    dw: np.ndarray
    pw_params: ConvParams
    dw_params: ConvParams
    dw_padding: tuple[int, int, int, int]
    pw_multiplier: np.ndarray
    dw_multiplier: np.ndarray
    y: np.ndarray

    def kernel_call(self) -> kc.KernelCall:
        """The call as the op describes it to the planner (the registry reads the shapes and geometries)."""
        pw, dw = self.pw_params, self.dw_params
        floats = kc.Floats("m", [1.0])
        return kc.KernelCall("qtrain_fused_pointwise_depthwise_s8", (
            kc.Scratch(), kc.ConvGeometry(pw.input_zero_point, pw.output_zero_point, (1, 1), (0, 0, 0, 0), 1),
            kc.Shape(self.x.shape), kc.Tensor(None), kc.Shape(self.pw.shape), kc.Null(), kc.Null(), floats,
            kc.ConvGeometry(dw.input_zero_point, dw.output_zero_point, dw.strides, self.dw_padding, dw.groups),
            kc.Shape(self.dw.shape), kc.Null(), kc.Null(), floats, kc.Shape(self.y.shape), kc.Tensor(None)))

    def call(self, scratch: int) -> Call:
        return calls.fused_pointwise_depthwise(self.x, self.pw, None, self.pw_multiplier, self.pw_params, self.dw,
                                               None, self.dw_multiplier, self.dw_params, self.y.shape, scratch)


def make_fused(c_mid: int, kernel: tuple[int, int], cin: int = 5) -> Fused:
    rng = np.random.default_rng(c_mid * 1000 + kernel[0] * 10 + kernel[1])
    kh, kw = kernel
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    padding = (pt, pl, kh - 1 - pt, kw - 1 - pl)
    x = rng.integers(-128, 128, (1, kh + 2, kw + 1, cin), dtype=np.int8)
    pw = rng.integers(-128, 128, (c_mid, 1, 1, cin), dtype=np.int8)
    dw = rng.integers(-128, 128, (c_mid, kh, kw, 1), dtype=np.int8)
    zx, zmid, zy = -7, 11, -3
    s_x = 0.03
    s_pw = (rng.uniform(0.5, 1.5, c_mid) * 0.01).astype(np.float32)
    s_dw = (rng.uniform(0.5, 1.5, c_mid) * 0.01).astype(np.float32)
    s_mid = _output_scale(numerics.conv2d_accumulate(x, pw, None, input_zero_point=zx), s_x)
    mid = numerics.conv2d(x, pw, None, input_scale=s_x, input_zero_point=zx, weight_scales=s_pw, output_scale=s_mid,
                          output_zero_point=zmid)
    s_y = _output_scale(numerics.conv2d_accumulate(mid, dw, None, input_zero_point=zmid, padding=padding,
                                                   groups=c_mid), s_mid)
    y = numerics.fused_pointwise_depthwise(
        x, pw, None, dw, None, input_scale=s_x, input_zero_point=zx, pw_weight_scales=s_pw, mid_scale=s_mid,
        mid_zero_point=zmid, dw_weight_scales=s_dw, output_scale=s_y, output_zero_point=zy, dw_strides=(1, 1),
        dw_padding=padding)
    return Fused(x, pw, dw, ConvParams(zx, zmid, (1, 1), (0, 0), 1), ConvParams(zmid, zy, (1, 1), (pt, pl), c_mid),
                 padding, numerics.conv2d_multiplier(s_x, s_pw, s_mid), numerics.conv2d_multiplier(s_mid, s_dw, s_y),
                 y)


def c_fused_buffer_size(lib: ctypes.CDLL, data: Fused) -> int:
    size, _ = calls.run_host(lib, Call("qtrain_fused_pointwise_depthwise_s8_get_buffer_size", [
        data.pw_params, Dims(data.x.shape), Dims(data.pw.shape), data.dw_params, Dims(data.dw.shape),
        Dims(data.y.shape)]))
    return int(size)


FUSED = [(4, kernel, fits) for kernel, fits in DEPTHWISE_KERNELS] + [(B, (3, 3), True), (B + 1, (3, 3), True)]
"""(C_mid, depthwise kernel, whether the fused kernel takes it): its depthwise limit, then C_mid at and just
past its channel block."""


@needs_clang
@pytest.mark.parametrize(("c_mid", "kernel", "fits"), FUSED,
                         ids=[f"C_mid {m} {k[0]}x{k[1]}" for m, k, _ in FUSED])
def test_fused_kernel_at_the_limits(lib: ctypes.CDLL, c_mid: int, kernel: tuple[int, int], fits: bool) -> None:
    data = make_fused(c_mid, kernel)
    call = data.kernel_call()
    entry = KERNELS[call.function]
    assert entry.limits is not None and entry.scratch is not None
    scratch = entry.scratch(call, _no_trained_weights)
    assert c_fused_buffer_size(lib, data) == scratch
    status, (y,) = calls.run_host(lib, data.call(scratch))
    assert (entry.limits(call), status == 0) == (fits, fits)
    if fits:
        np.testing.assert_array_equal(y, data.y)
    else:
        assert status == -1 and not y.any()


@needs_clang
def test_fused_channel_block_is_the_header_s(lib: ctypes.CDLL) -> None:
    """The smallest scratch grows with C_mid up to the channel block and stays there past it: the C kernel
    blocks C_mid = FUSED_CHANNEL_BLOCK + 1 in blocks of FUSED_CHANNEL_BLOCK, as the mirror says."""
    below, at, past = (make_fused(c_mid, (3, 3)) for c_mid in (B - 1, B, B + 1))
    c_sizes = [c_fused_buffer_size(lib, d) for d in (below, at, past)]
    mirror = [kernels.buffer_size_fused_pointwise_depthwise(d.x.shape, d.pw.shape, d.dw.shape, d.y.shape, (1, 1))
              for d in (below, at, past)]
    assert c_sizes == mirror
    assert c_sizes[0] < c_sizes[1] == c_sizes[2]
