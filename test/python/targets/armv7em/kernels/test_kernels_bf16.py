"""The bf16 activation-gradient kernels (qtrain-narrow-gradients) against qtrain.numerics.

Each bf16 kernel computes its fp32 namesake's values in the same fp32 operations and order and rounds
each result once to nearest even, so it must give exactly `numerics.round_bf16` of the fp32 kernel's
(or numerics') result on the widened inputs, bit for bit. `numerics.round_bf16` itself is checked
against an independent reference (the nearer of the two bf16 neighbours, ties to the even one).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
from armv7em_testing import needs_clang
from test_kernels_backward import GRAD_CASES, input_grad_scratch, make_grad

from qtrain import numerics
from qtrain.targets.armv7em import kernels
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import I32, At, Call, Dims, In, Null, Out, Scratch

pytestmark = needs_clang

U16 = np.dtype(np.uint16)
F32 = np.dtype(np.float32)


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


def bits(x: np.ndarray) -> np.ndarray:
    """A bf16-valued float32 array as the uint16 the kernels store."""
    return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def widen(h: np.ndarray) -> np.ndarray:
    return (h.astype(np.uint32) << 16).view(np.float32)


def special_values(rng: np.random.Generator) -> np.ndarray:
    x = (rng.standard_normal(4000) * np.exp2(rng.integers(-140, 120, 4000))).astype(np.float32)
    ties = (rng.integers(0, 1 << 16, 200).astype(np.uint32) << 16) | 0x8000  # exactly halfway
    edge = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38, 1e-45, -1e-45, 1.17549435e-38,
                     np.float32(1 + 2**-8), np.float32(1 + 3 * 2**-8), 65504.0], np.float32)
    return np.concatenate([x, ties.view(np.float32), edge])


def reference_bf16(x: np.ndarray) -> np.ndarray:
    """The nearer of the two bf16 values around each float32 (the truncation and the next one away from
    zero, taken as +-2^128 past the largest: rounding as if the exponent were unbounded, then overflow to
    infinity); ties: the one with an even last bit. Infinities stay, NaN -> NaN."""
    out = np.empty_like(x)
    for i, v in enumerate(x.astype(np.float32)):
        if not np.isfinite(v):
            out[i] = v
            continue
        u = int(np.float32(v).view(np.uint32))
        lo, hi = u & 0xFFFF0000, (u & 0xFFFF0000) + 0x10000
        lo_v = float(np.uint32(lo).view(np.float32))
        hi_v = math.copysign(2.0**128, v) if (hi & 0x7F800000) == 0x7F800000 else float(np.uint32(hi).view(np.float32))
        d_lo, d_hi = abs(float(v) - lo_v), abs(hi_v - float(v))
        pick = lo if d_lo < d_hi or (d_lo == d_hi and not (lo >> 16) & 1) else hi
        out[i] = np.uint32(pick).view(np.float32)
    return out


def test_round_bf16_is_round_to_nearest_even() -> None:
    x = special_values(np.random.default_rng(1))
    got, want = numerics.round_bf16(x), reference_bf16(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    keep = ~np.isnan(want)
    np.testing.assert_array_equal(got[keep].view(np.uint32), want[keep].view(np.uint32))
    assert not (got.view(np.uint32) & 0xFFFF).any()  # representable as bf16


def test_convert_kernels_round_and_widen_exactly(lib: ctypes.CDLL) -> None:
    x = special_values(np.random.default_rng(2))
    _, (h,) = calls.run_host(lib, Call("qtrain_grad_convert_f32_bf16", [In(x), I32(x.size), Out(x.shape, U16)],
                                       returns="void"))
    want = numerics.round_bf16(x)
    keep = ~np.isnan(x)
    np.testing.assert_array_equal(h[keep], bits(want)[keep])
    assert np.isnan(widen(h)[~keep]).all()
    _, (back,) = calls.run_host(lib, Call("qtrain_grad_convert_bf16_f32", [In(h), I32(h.size), Out(h.shape, F32)],
                                          returns="void"))
    np.testing.assert_array_equal(back.view(np.uint32), widen(h).view(np.uint32))


def gradient(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    g = numerics.round_bf16((rng.standard_normal(shape) * rng.uniform(0.01, 2.0, shape[-1])).astype(np.float32))
    g[rng.random(shape) < 0.2] = 0.0
    return g


def arg(g: np.ndarray, fmt: str) -> In:
    return In(bits(g)) if fmt == "bf16" else In(g.astype(np.float32))


def out(shape: tuple[int, ...], fmt: str) -> Out:
    return Out(tuple(shape), U16 if fmt == "bf16" else F32)


def as_f32(y: np.ndarray, fmt: str) -> np.ndarray:
    return widen(y) if fmt == "bf16" else y


def stored(y: np.ndarray, fmt: str) -> np.ndarray:
    return numerics.round_bf16(y) if fmt == "bf16" else y


FORMATS = [("bf16", "bf16"), ("bf16", "f32"), ("f32", "bf16")]


def suffix(fin: str, fout: str) -> str:
    return fin if fin == fout else f"{fin}_{fout}"


@pytest.mark.parametrize(("fin", "fout"), FORMATS)
@pytest.mark.parametrize("per_channel", [True, False])
def test_requant_grad_is_bit_exact(lib: ctypes.CDLL, fin: str, fout: str, per_channel: bool) -> None:
    g = gradient((1, 5, 3, 7), 11)
    mask = np.random.default_rng(3).random(g.shape) < 0.7
    m = np.random.default_rng(4).uniform(0.01, 2, 7 if per_channel else 1).astype(np.float32)
    packed = In(np.packbits(mask.reshape(-1), bitorder="little"))
    _, (y,) = calls.run_host(lib, Call(f"qtrain_requant_grad_{suffix(fin, fout)}", [
        arg(g, fin), packed, I32(g.size), I32(7), In(m), I32(m.size), out(g.shape, fout)], returns="void"))
    want = stored(numerics.requant_grad(g, mask, m), fout)
    np.testing.assert_array_equal(as_f32(y, fout).view(np.uint32), want.view(np.uint32))  # +0.0 where masked


@pytest.mark.parametrize(("fin", "fout"), [("bf16", "bf16"), ("bf16", "f32"), ("f32", "bf16")])
def test_requant_grad_in_place_as_the_registry_places_it(lib: ctypes.CDLL, fin: str, fout: str) -> None:
    """Same format: out == grad. Narrowing: the result at the gradient's first byte ("head"); widening:
    the result ending at the gradient's last byte ("tail"), as registry.py tells the planner."""
    g = gradient((1, 4, 4, 6), 5)
    m = np.full(1, 0.75, np.float32)
    size_in, size_out = g.size * (2 if fin == "bf16" else 4), g.size * (2 if fout == "bf16" else 4)
    buffer = Out((max(size_in, size_out),), np.dtype(np.uint8))
    in_offset = max(0, size_out - size_in)  # tail: the input sits at the end of the larger result
    raw = (bits(g) if fin == "bf16" else g.astype(np.float32)).view(np.uint8).reshape(-1)
    start = np.zeros(buffer.shape, np.uint8)
    start[in_offset:in_offset + size_in] = raw
    buffer = Out(buffer.shape, buffer.dtype, start)
    _, (result,) = calls.run_host(lib, Call(f"qtrain_requant_grad_{suffix(fin, fout)}", [
        At(buffer, in_offset), Null(), I32(g.size), I32(6), In(m), I32(1), At(buffer, 0)], returns="void"))
    y = result[:size_out].view(np.uint16 if fout == "bf16" else np.float32)
    want = stored(numerics.requant_grad(g, None, m), fout).reshape(-1)
    np.testing.assert_array_equal(as_f32(y, fout).view(np.uint32), want.view(np.uint32))


def test_bias_grad_sums_a_bf16_gradient_in_row_order(lib: ctypes.CDLL) -> None:
    g = gradient((1, 9, 7, 13), 12)
    _, (db,) = calls.run_host(lib, Call("qtrain_bias_grad_bf16", [In(bits(g)), I32(63), I32(13), Out((13,), F32)],
                                        returns="void"))
    _, (f32,) = calls.run_host(lib, Call("qtrain_bias_grad_f32", [In(g), I32(63), I32(13), Out((13,), F32)],
                                         returns="void"))
    expected = np.zeros(13, np.float32)
    for row in g.reshape(63, 13):
        expected = (expected + row).astype(np.float32)
    np.testing.assert_array_equal(db, expected)
    np.testing.assert_array_equal(db, f32)


def test_grad_accumulate_and_cross_entropy_grad_round_once(lib: ctypes.CDLL) -> None:
    a, b = gradient((301,), 13), gradient((301,), 14)
    _, (s,) = calls.run_host(lib, Call("qtrain_grad_accumulate_bf16", [In(bits(a)), In(bits(b)), I32(301),
                                                                       Out((301,), U16)], returns="void"))
    np.testing.assert_array_equal(s, bits(numerics.round_bf16(numerics.grad_accumulate(a, b))))
    for classes in (2, 10, 1000):
        rng = np.random.default_rng(classes)
        logits = (rng.standard_normal(classes) * 4).astype(np.float32)
        label = int(rng.integers(classes))
        _, (g,) = calls.run_host(lib, Call("qtrain_cross_entropy_grad_bf16", [
            In(logits), I32(classes), I32(label), Out((classes,), U16)], returns="void"))
        np.testing.assert_array_equal(g, bits(numerics.round_bf16(numerics.cross_entropy_grad(logits, label))))


@pytest.mark.parametrize(("fin", "fout"), FORMATS)
@pytest.mark.parametrize(("shape", "kernel", "strides"), [
    ((1, 4, 4, 160), (4, 4), (1, 1)), ((2, 5, 6, 3), (3, 3), (1, 1)), ((1, 7, 6, 4), (3, 2), (2, 2)),
    ((1, 5, 5, 2), (2, 2), (3, 3))])
def test_avgpool_grad_is_the_fp32_kernel_rounded(lib: ctypes.CDLL, fin: str, fout: str, shape: tuple[int, ...],
                                                  kernel: tuple[int, int], strides: tuple[int, int]) -> None:
    n, h, w, c = shape
    out_shape = (n, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1, c)
    g = gradient(out_shape, 15)
    pool = [I32(kernel[0]), I32(kernel[1]), I32(strides[0]), I32(strides[1]), Dims(shape)]
    status, (y,) = calls.run_host(lib, Call(f"qtrain_avgpool_grad_{suffix(fin, fout)}", [
        Dims(out_shape), arg(g, fin), *pool, out(shape, fout)]))
    assert status == 0
    _, (f32,) = calls.run_host(lib, Call("qtrain_avgpool_grad_f32", [Dims(out_shape), In(g), *pool, Out(shape, F32)]))
    np.testing.assert_array_equal(as_f32(y, fout).view(np.uint32), stored(f32, fout).view(np.uint32))


def run_input_grad(lib: ctypes.CDLL, function: str, data, grad: np.ndarray, fin: str, fout: str,  # type: ignore[no-untyped-def]
                   scratch: int) -> np.ndarray:
    case = data.case
    status, (gx,) = calls.run_host(lib, Call(function, [
        Scratch(scratch), data.params, Dims(grad.shape), arg(grad, fin), Dims(data.weight.data.shape), data.weight,
        Dims(case.input_shape), out(case.input_shape, fout)]))
    assert status == 0, function
    return as_f32(gx, fout)


@pytest.mark.parametrize(("fin", "fout"), FORMATS)
@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.name)
def test_input_grad_is_the_fp32_kernel_rounded(lib: ctypes.CDLL, case, fin: str, fout: str) -> None:  # type: ignore[no-untyped-def]
    """The generic bf16 kernel (any geometry) and the 1x1 one (stride 1, unpadded, groups 1) give the fp32
    kernels' sums (same documented order) rounded once."""
    data = make_grad(case)
    grad = numerics.round_bf16(data.grad)
    f32 = run_input_grad(lib, "qtrain_conv2d_input_grad_wrapper_f32", data, grad, "f32", "f32",
                         input_grad_scratch(data, kernels.conv2d_input_grad_kernel(
                             case.input_shape, data.effective.shape, case.output_shape, case.strides, case.padding,
                             case.groups)))
    want = stored(f32, fout).view(np.uint32)
    if not (case.slice is not None and case.depthwise):  # the generic kernel's weights: groups = 1 slices
        got = run_input_grad(lib, f"qtrain_conv2d_input_grad_{suffix(fin, fout)}", data, grad, fin, fout,
                             input_grad_scratch(data, "generic"))
        np.testing.assert_array_equal(got.view(np.uint32), want)
    pointwise = (case.kernel == (1, 1) and case.strides == (1, 1) and case.padding == (0, 0, 0, 0)
                 and case.groups == 1)
    if pointwise:
        s = case.slice
        scratch = kernels.buffer_size_conv2d_1x1_input_grad_bf16(
            data.effective.shape, slice_channels=None if s is None else s[1] - s[0],
            master=s is not None and s[2] == "master")
        got = run_input_grad(lib, f"qtrain_conv2d_1x1_input_grad_{suffix(fin, fout)}", data, grad, fin, fout, scratch)
        np.testing.assert_array_equal(got.view(np.uint32), want)
        size, _ = calls.run_host(lib, Call("qtrain_conv2d_1x1_input_grad_bf16_get_buffer_size", [
            Dims(data.effective.shape), data.weight], returns="i32"))
        assert size == scratch


@pytest.mark.parametrize(("fin", "fout", "cin", "cout"), [
    ("bf16", "bf16", 8, 24), ("bf16", "bf16", 24, 8), ("f32", "bf16", 24, 8), ("bf16", "f32", 8, 24),
    ("bf16", "f32", 12, 8), ("f32", "bf16", 40, 12)])
def test_1x1_input_grad_in_place_as_the_registry_places_it(lib: ctypes.CDLL, fin: str, fout: str, cin: int,
                                                            cout: int) -> None:
    """Result over the gradient in one buffer: the same first byte when a result pixel is not larger
    than a gradient pixel, else the same last byte (registry.py's "head" / "tail")."""
    from qtrain.targets.armv7em.kernels.calls import ConvParams, Weight

    rng = np.random.default_rng(cin * cout)
    pixels = (1, 5, 3)
    g = gradient((*pixels, cout), 21)
    w = rng.integers(-128, 128, (cout, 1, 1, cin), dtype=np.int8)
    size_in, size_out = g.size * (2 if fin == "bf16" else 4), 15 * cin * (2 if fout == "bf16" else 4)
    in_offset = max(0, size_out - size_in)
    raw = (bits(g) if fin == "bf16" else g.astype(np.float32)).view(np.uint8).reshape(-1)
    start = np.zeros(max(size_in, size_out), np.uint8)
    start[in_offset:in_offset + size_in] = raw
    buffer = Out(start.shape, np.dtype(np.uint8), start)
    params = ConvParams(0, 0, (1, 1), (0, 0), 1)
    status, (result,) = calls.run_host(lib, Call(f"qtrain_conv2d_1x1_input_grad_{suffix(fin, fout)}", [
        Scratch(4 * cout), params, Dims(g.shape), At(buffer, in_offset), Dims(w.shape), Weight(w),
        Dims((*pixels, cin)), At(buffer, 0)]))
    assert status == 0
    y = as_f32(result[:size_out].view(np.uint16 if fout == "bf16" else np.float32), fout)
    reference = numerics.conv2d_input_grad(g, w, (*pixels, cin))
    np.testing.assert_allclose(y.reshape(reference.shape), stored(reference, fout), rtol=2**-7, atol=1e-30)
    # and bit for bit what the out-of-place call gives
    status, (separate,) = calls.run_host(lib, Call(f"qtrain_conv2d_1x1_input_grad_{suffix(fin, fout)}", [
        Scratch(4 * cout), params, Dims(g.shape), arg(g, fin), Dims(w.shape), Weight(w), Dims((*pixels, cin)),
        out((*pixels, cin), fout)]))
    np.testing.assert_array_equal(y.reshape(-1).view(np.uint32), as_f32(separate, fout).reshape(-1).view(np.uint32))


DEPTHWISE_SAME = [((1, 6, 5, 10), (3, 3), (1, 1, 1, 1)), ((2, 4, 7, 16), (3, 3), (1, 1, 1, 1)),
                  ((1, 6, 6, 19), (5, 5), (2, 2, 2, 2)), ((1, 5, 4, 3), (3, 3), (2, 0, 0, 2))]


def depthwise_f32(lib: ctypes.CDLL, g: np.ndarray, w: np.ndarray, shape: tuple[int, ...],
                  padding: tuple[int, ...], strides: tuple[int, int] = (1, 1)) -> np.ndarray:
    """The generic fp32 gather kernel (the documented order every input gradient follows)."""
    from qtrain.targets.armv7em.kernels.calls import ConvParams, Weight

    params = ConvParams(0, 0, strides, padding[:2], shape[3])
    status, (gx,) = calls.run_host(lib, Call("qtrain_conv2d_input_grad_f32", [
        Scratch(0), params, Dims(g.shape), In(g), Dims(w.shape), Weight(w), Dims(shape), Out(shape, F32)]))
    assert status == 0
    return gx


@pytest.mark.parametrize(("shape", "kernel", "padding"), DEPTHWISE_SAME)
@pytest.mark.parametrize("in_place", [False, True])
def test_depthwise_bf16_input_grad_is_the_fp32_kernel_rounded(lib: ctypes.CDLL, shape: tuple[int, ...],
                                                              kernel: tuple[int, int], padding: tuple[int, ...],
                                                              in_place: bool) -> None:
    from qtrain.targets.armv7em.kernels.calls import ConvParams

    c = shape[3]
    g = gradient(shape, 31)
    w = np.random.default_rng(32).integers(-128, 128, (c, *kernel, 1), dtype=np.int8)
    scratch = kernels.buffer_size_depthwise_input_grad_bf16(w.shape, shape)
    params = ConvParams(0, 0, (1, 1), padding[:2], c)
    if in_place:  # one buffer, passed as gradient and result: the registry's "head"
        buffer = Out(shape, U16, bits(g))
        args = [At(buffer), Dims(w.shape), In(w), Dims(shape), At(buffer)]
    else:
        args = [In(bits(g)), Dims(w.shape), In(w), Dims(shape), out(shape, "bf16")]
    status, (y,) = calls.run_host(lib, Call("qtrain_depthwise_conv2d_input_grad_bf16", [
        Scratch(scratch), params, Dims(shape), *args]))
    assert status == 0
    want = numerics.round_bf16(depthwise_f32(lib, g, w, shape, padding))
    np.testing.assert_array_equal(widen(y).view(np.uint32), want.view(np.uint32))
    size, _ = calls.run_host(lib, Call("qtrain_depthwise_conv2d_input_grad_bf16_get_buffer_size", [
        Dims(w.shape), Dims(shape)], returns="i32"))
    assert size == scratch
    status, _ = calls.run_host(lib, Call("qtrain_depthwise_conv2d_input_grad_bf16", [
        Scratch(scratch - 4), params, Dims(shape), In(bits(g)), Dims(w.shape), In(w), Dims(shape),
        out(shape, "bf16")]))
    assert status != 0  # too little scratch is refused


STREAMED = [  # (expanded shape, C_in, depthwise kernel, strides, padding, with mask, per-channel multiplier)
    ((1, 8, 8, 12), 4, (3, 3), (2, 2), (1, 1, 1, 1), True, True),
    ((1, 6, 7, 16), 8, (3, 3), (1, 1), (1, 1, 1, 1), True, False),
    ((2, 9, 9, 6), 3, (5, 5), (2, 2), (2, 2, 2, 2), False, True),
    ((1, 8, 8, 10), 5, (3, 3), (2, 2), (0, 0, 1, 1), True, True),
]


@pytest.mark.parametrize(("fin", "fout"), [("f32", "f32"), *FORMATS])
@pytest.mark.parametrize("case", STREAMED, ids=lambda c: "x".join(map(str, c[0])))
@pytest.mark.parametrize("bias", [True, False])
def test_streamed_expansion_input_grad_is_the_unfused_kernels(lib: ctypes.CDLL, case, fin: str, fout: str,  # type: ignore[no-untyped-def]
                                                               bias: bool) -> None:
    """One expanded row at a time gives the unfused fp32 kernels' bits (depthwise input gradient,
    requant_grad, bias_grad, 1x1 input gradient, in their documented orders), the result rounded once."""
    from qtrain.targets.armv7em.kernels.calls import ConvParams, Weight

    mid, cin, kernel, strides, padding, with_mask, per_channel = case
    n, h, w, c = mid
    oh = numerics.conv_output_size(h, kernel[0], strides[0], padding[0], padding[2])
    ow = numerics.conv_output_size(w, kernel[1], strides[1], padding[1], padding[3])
    rng = np.random.default_rng(sum(mid))
    g = gradient((n, oh, ow, c), 41)
    dw = rng.integers(-128, 128, (c, *kernel, 1), dtype=np.int8)
    pw = rng.integers(-128, 128, (c, 1, 1, cin), dtype=np.int8)
    mask = rng.random(mid) < 0.7 if with_mask else None
    m = rng.uniform(0.01, 0.1, c if per_channel else 1).astype(np.float32)
    x_shape = (n, h, w, cin)
    # the unfused fp32 kernels
    g_mid = depthwise_f32(lib, g, dw, mid, padding, strides)
    _, (g_acc,) = calls.run_host(lib, calls.requant_grad(g_mid, mask, m))
    _, (db,) = calls.run_host(lib, Call("qtrain_bias_grad_f32", [In(g_acc), I32(n * h * w), I32(c), Out((c,), F32)],
                                        returns="void"))
    status, (gx,) = calls.run_host(lib, Call("qtrain_conv2d_input_grad_f32", [
        Scratch(0), ConvParams(0, 0, (1, 1), (0, 0), 1), Dims(g_acc.shape), In(g_acc), Dims(pw.shape), Weight(pw),
        Dims(x_shape), Out(x_shape, F32)]))
    assert status == 0
    scratch = kernels.buffer_size_streamed_expansion_input_grad(mid)
    packed = In(np.packbits(mask.reshape(-1), bitorder="little")) if mask is not None else Null()
    bias_out = Out((c,), F32) if bias else Null()
    status, outputs = calls.run_host(lib, Call(f"qtrain_streamed_expansion_input_grad_{suffix(fin, fout)}", [
        Scratch(scratch), ConvParams(0, 0, strides, padding[:2], c), Dims(g.shape), arg(g, fin), Dims(dw.shape),
        In(dw), Dims(mid), packed, In(m), I32(m.size), Dims(pw.shape), In(pw), Dims(x_shape), out(x_shape, fout),
        bias_out]))
    assert status == 0
    np.testing.assert_array_equal(as_f32(outputs[0], fout).view(np.uint32), stored(gx, fout).view(np.uint32))
    if bias:
        np.testing.assert_array_equal(outputs[1].view(np.uint32), db.view(np.uint32))
    # and the unfused golden model's values (numpy sums, exact then rounded) within the fp32 bound
    reference = numerics.conv2d_input_grad(
        numerics.requant_grad(numerics.conv2d_input_grad(g, dw, mid, strides=strides, padding=padding, groups=c),
                              mask, m), pw, x_shape)
    np.testing.assert_allclose(as_f32(outputs[0], fout), stored(reference, fout), rtol=2**-7, atol=1e-6)
