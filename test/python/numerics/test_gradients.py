"""Backward kernels and the update in qtrain.numerics, against independent references.

1. Finite differences: each gradient kernel is the exact derivative of its float-relaxed forward op
   (`*_relaxed`: no rint, clamp kept). For a random readout r, f(inputs) = <r, op(inputs)> is checked
   by central differences on every coordinate. The relaxed ops are piecewise linear (the loss is
   smooth), so away from a clamp kink a central difference is exact up to float64 rounding:
   tolerance |fd - grad| <= FD_RTOL * (1 + max|grad|) with FD_RTOL = 1e-7 (the observed error is
   ~1e-10). A coordinate whose +-h perturbation changes any saturation mask straddles a kink, where
   the derivative is one-sided; it is skipped (counted, and the count is asserted small). Inputs are
   continuous random values, so exact ties with a clamp bound have probability zero.
2. Adjoint identities against the int8 forward kernel (`conv2d_accumulate`, bit-exact with
   onnxruntime): <conv(x, w), G> = <x - zx, input_grad(G, w)> = <w, weight_grad(x, G)>, exactly, with
   integer G (every sum is an integer below 2**53).
3. The float32 contract: gradients given as float32 are float64 reference sums rounded once, so the
   float32 result equals the float64 result rounded to float32 bit for bit; the element-wise kernels
   (requant_grad, cross_entropy_grad, grad_accumulate, sgd_update) against their documented float32
   operation order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from qtrain import numerics

FD_STEP = 1e-4
FD_RTOL = 1e-7
MAX_KINK_FRACTION = 0.05

Function = Callable[[list[np.ndarray]], tuple[float, list[np.ndarray]]]
"""f(inputs) -> (scalar, saturation masks): the masks tell when a perturbation crossed a clamp kink."""


def fd_check(f: Function, inputs: list[np.ndarray], grads: Sequence[np.ndarray], *, step: float = FD_STEP) -> int:
    """Central differences of f on every coordinate of every input vs `grads`; returns coordinates skipped."""
    _, base_masks = f(inputs)
    skipped = total = 0
    for k, (x, g) in enumerate(zip(inputs, grads, strict=True)):
        assert g.shape == x.shape, (k, g.shape, x.shape)
        tol = FD_RTOL * (1.0 + float(np.abs(g).max()))
        for idx in np.ndindex(x.shape):
            values = []
            crossed = False
            for sign in (1.0, -1.0):
                moved = [a.copy() for a in inputs]
                moved[k][idx] += sign * step
                value, masks = f(moved)
                crossed |= any(not np.array_equal(a, b) for a, b in zip(masks, base_masks, strict=True))
                values.append(value)
            total += 1
            if crossed:
                skipped += 1
                continue
            fd = (values[0] - values[1]) / (2 * step)
            assert abs(fd - g[idx]) <= tol, f"input {k} at {idx}: finite difference {fd}, gradient {g[idx]}"
    assert skipped <= MAX_KINK_FRACTION * total, f"{skipped} of {total} coordinates straddle a clamp kink"
    return skipped


def continuous(rng: np.random.Generator, shape: Sequence[int], lo: float = -120.0, hi: float = 120.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=tuple(shape))


# -- convolution: finite differences -------------------------------------------------------------------

# (name, x shape NHWC, weight shape OHWI, strides, padding [t, l, b, r], groups)
CONV_CASES = [
    ("pointwise-1x1", (1, 5, 5, 6), (4, 1, 1, 6), (1, 1), (0, 0, 0, 0), 1),
    ("dense-3x3-s1-pad1", (1, 6, 6, 3), (5, 3, 3, 3), (1, 1), (1, 1, 1, 1), 1),
    ("dense-3x3-s2-asym-pad", (1, 7, 7, 3), (4, 3, 3, 3), (2, 2), (0, 0, 1, 1), 1),
    ("dense-3x3-s2-uncovered-rows", (2, 6, 6, 2), (3, 3, 3, 2), (2, 2), (0, 0, 0, 0), 1),
    ("depthwise-3x3-s1", (1, 6, 6, 4), (4, 3, 3, 1), (1, 1), (1, 1, 1, 1), 4),
    ("depthwise-5x5-s2", (1, 9, 9, 3), (3, 5, 5, 1), (2, 2), (2, 2, 2, 2), 3),
    ("depthwise-7x7-s1", (1, 8, 8, 2), (2, 7, 7, 1), (1, 1), (3, 3, 3, 3), 2),
    ("depthwise-7x7-s2-asym-pad", (1, 9, 9, 2), (2, 7, 7, 1), (2, 2), (2, 2, 3, 3), 2),
    ("depthwise-multiplier-2", (1, 5, 5, 2), (4, 3, 3, 1), (1, 1), (1, 1, 1, 1), 2),
    ("groups-2", (1, 5, 5, 4), (6, 3, 3, 2), (1, 1), (1, 1, 1, 1), 2),
    ("asym-stride-kernel", (1, 6, 7, 3), (2, 3, 1, 3), (2, 1), (1, 0, 1, 0), 1),
]
CONV_IDS = [c[0] for c in CONV_CASES]


def conv_quant(rng: np.random.Generator, cout: int) -> dict[str, object]:
    return dict(
        input_scale=0.05, input_zero_point=-3, weight_scales=rng.uniform(0.004, 0.02, cout).astype(np.float32),
        output_scale=0.1, output_zero_point=5,
    )


def conv_backward(x: np.ndarray, w: np.ndarray, r: np.ndarray, mask: np.ndarray, q: dict[str, object],
                  strides: tuple[int, int], padding: tuple[int, ...], groups: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db) of <r, conv2d_relaxed(x, w, b)> through requant_grad + the three linear kernels."""
    m = numerics.conv2d_multiplier(q["input_scale"], q["weight_scales"], q["output_scale"])  # type: ignore[arg-type]
    g_acc = numerics.requant_grad(r, mask, m)
    dx = numerics.conv2d_input_grad(g_acc, w, x.shape, strides=strides, padding=padding, groups=groups)
    dw = numerics.conv2d_weight_grad(x, g_acc, input_zero_point=q["input_zero_point"], kernel=w.shape[1:3],  # type: ignore[arg-type]
                                     strides=strides, padding=padding, groups=groups)
    return dx, dw, numerics.bias_grad(g_acc)


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv_gradients_match_finite_differences(case: tuple) -> None:
    _, xs, ws, strides, padding, groups = case
    rng = np.random.default_rng(zlib.crc32(case[0].encode()))
    x, w = continuous(rng, xs), continuous(rng, ws, -100, 100)
    b = continuous(rng, (ws[0],), -3000, 3000)
    q = conv_quant(rng, ws[0])
    # A clamp that bites on part of the outputs, so the mask is exercised.
    clamp = (-60, 70)

    def f(inputs: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        y, mask = numerics.conv2d_relaxed(*inputs, strides=strides, padding=padding, groups=groups, clamp=clamp,
                                          **q)  # type: ignore[arg-type]
        return float(np.sum(r * y)), [mask]

    y, mask = numerics.conv2d_relaxed(x, w, b, strides=strides, padding=padding, groups=groups, clamp=clamp, **q)  # type: ignore[arg-type]
    r = rng.normal(size=y.shape)
    assert 0.1 < mask.mean() < 0.95, f"the clamp should bite on some outputs only (mask mean {mask.mean()})"
    dx, dw, db = conv_backward(x, w, r, mask, q, strides, padding, groups)
    fd_check(f, [x, w, b], [dx, dw, db])


# -- convolution: adjoint identities against the int8 forward kernel -----------------------------------


@pytest.mark.parametrize("case", CONV_CASES, ids=CONV_IDS)
def test_conv_gradients_are_adjoints_of_the_int8_convolution(case: tuple) -> None:
    _, xs, ws, strides, padding, groups = case
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=xs, dtype=np.int8)
    w = rng.integers(-127, 128, size=ws, dtype=np.int8)
    zx = 9
    acc = numerics.conv2d_accumulate(x, w, None, input_zero_point=zx, strides=strides, padding=padding,
                                     groups=groups).astype(np.float64)
    g = rng.integers(-50, 51, size=acc.shape).astype(np.float64)
    dx = numerics.conv2d_input_grad(g, w, x.shape, strides=strides, padding=padding, groups=groups)
    dw = numerics.conv2d_weight_grad(x, g, input_zero_point=zx, kernel=ws[1:3], strides=strides, padding=padding,
                                     groups=groups)
    lhs = float(np.sum(acc * g))
    assert lhs == float(np.sum((x.astype(np.float64) - zx) * dx))
    assert lhs == float(np.sum(w.astype(np.float64) * dw))
    assert lhs != 0.0


# -- convolution: channel slices ------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "stop"), [(0, 3), (2, 5), (5, 6)])
def test_weight_grad_of_an_input_channel_slice_is_that_slice_of_the_full_gradient(start: int, stop: int) -> None:
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, size=(1, 6, 6, 6), dtype=np.int8)
    g = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)
    kw = dict(input_zero_point=-7, kernel=(3, 3), strides=(2, 2), padding=(1, 1, 0, 0))
    full = numerics.conv2d_weight_grad(x, g, groups=1, **kw)  # type: ignore[arg-type]
    saved = numerics.channel_slice(x, start, stop)
    sliced = numerics.conv2d_weight_grad(saved, g, groups=1, channels=(start, stop), **kw)  # type: ignore[arg-type]
    assert sliced.shape == (4, 3, 3, stop - start) and sliced.dtype == np.float32
    assert np.array_equal(sliced, full[..., start:stop])


@pytest.mark.parametrize(("start", "stop"), [(0, 2), (1, 4), (3, 5)])
def test_depthwise_weight_grad_slice_reads_the_matching_gradient_channels(start: int, stop: int) -> None:
    rng = np.random.default_rng(12)
    x = rng.integers(-128, 128, size=(1, 7, 7, 5), dtype=np.int8)
    g = rng.normal(size=(1, 4, 4, 5)).astype(np.float32)
    kw = dict(input_zero_point=4, kernel=(5, 5), strides=(2, 2), padding=(2, 2, 2, 2), groups=5)
    full = numerics.conv2d_weight_grad(x, g, **kw)  # type: ignore[arg-type]
    assert full.shape == (5, 5, 5, 1)
    sliced = numerics.conv2d_weight_grad(x[..., start:stop], g, channels=(start, stop), **kw)  # type: ignore[arg-type]
    assert sliced.shape == (stop - start, 5, 5, 1)
    assert np.array_equal(sliced, full[start:stop])
    # it really reads gradient channels start..stop: changing the others changes nothing, these do
    g2 = g.copy()
    g2[..., [c for c in range(5) if not start <= c < stop]] = 0
    assert np.array_equal(numerics.conv2d_weight_grad(x[..., start:stop], g2, channels=(start, stop), **kw), sliced)  # type: ignore[arg-type]
    g2[..., start] += 1
    assert not np.array_equal(numerics.conv2d_weight_grad(x[..., start:stop], g2, channels=(start, stop), **kw),  # type: ignore[arg-type]
                              sliced)


def test_weight_grad_rejects_inconsistent_slices() -> None:
    x = np.zeros((1, 4, 4, 2), np.int8)
    g = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="do not match the 2 saved channels"):
        numerics.conv2d_weight_grad(x, g, input_zero_point=0, kernel=(1, 1), channels=(0, 3))
    with pytest.raises(ValueError, match="depthwise channels"):
        numerics.conv2d_weight_grad(x, g, input_zero_point=0, kernel=(1, 1), groups=3, channels=(2, 4))


def test_channel_slice_copies_the_last_axis() -> None:
    x = np.arange(2 * 3 * 5, dtype=np.int8).reshape(1, 2, 3, 5)
    s = numerics.channel_slice(x, 1, 4)
    assert s.dtype == np.int8 and np.array_equal(s, x[..., 1:4])
    s[...] = 0
    assert x[0, 0, 0, 1] == 1  # a copy, not a view
    with pytest.raises(ValueError, match="non-empty range"):
        numerics.channel_slice(x, 3, 3)


# -- add, avgpool, dequantize, loss: finite differences ------------------------------------------------


def test_add_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(2)
    a, b = continuous(rng, (1, 4, 5, 3), -128, 127), continuous(rng, (1, 4, 5, 3), -128, 127)
    q = dict(lhs_scale=0.03, lhs_zero_point=-10, rhs_scale=0.05, rhs_zero_point=6, output_scale=0.06,
             output_zero_point=-100)
    clamp = (-128, 60)

    def f(inputs: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        y, mask = numerics.add_relaxed(*inputs, clamp=clamp, **q)  # type: ignore[arg-type]
        return float(np.sum(r * y)), [mask]

    y, mask = numerics.add_relaxed(a, b, clamp=clamp, **q)  # type: ignore[arg-type]
    assert 0.1 < mask.mean() < 0.95
    r = rng.normal(size=y.shape)
    ra, rb, _ = numerics.add_constants(*q.values())  # type: ignore[arg-type]
    fd_check(f, [a, b], [numerics.requant_grad(r, mask, ra), numerics.requant_grad(r, mask, rb)])


AVGPOOL_CASES = [
    ("2x2-s2", (1, 4, 6, 3), (2, 2), (2, 2)),
    ("3x3-s1-overlapping", (1, 5, 5, 2), (3, 3), (1, 1)),
    ("3x3-s2-overlapping-uncovered", (2, 6, 6, 2), (3, 3), (2, 2)),
    ("global", (1, 4, 4, 5), (4, 4), (1, 1)),
    ("global-rectangular", (1, 3, 5, 2), (3, 5), (1, 1)),
]


@pytest.mark.parametrize("case", AVGPOOL_CASES, ids=[c[0] for c in AVGPOOL_CASES])
def test_avgpool_gradient_matches_finite_differences(case: tuple) -> None:
    _, shape, kernel, strides = case
    rng = np.random.default_rng(5)
    x = continuous(rng, shape, -128, 127)
    # the output scale is smaller than the input's, so the int8 range clamps some averages
    q = dict(input_scale=0.05, input_zero_point=-20, output_scale=0.03, output_zero_point=10)

    def f(inputs: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        y, mask = numerics.avgpool_relaxed(inputs[0], kernel=kernel, strides=strides, **q)  # type: ignore[arg-type]
        return float(np.sum(r * y)), [mask]

    y, mask = numerics.avgpool_relaxed(x, kernel=kernel, strides=strides, **q)  # type: ignore[arg-type]
    r = rng.normal(size=y.shape)
    m = numerics.avgpool_multiplier(q["input_scale"], q["output_scale"], kernel)
    gx = numerics.avgpool_grad(numerics.requant_grad(r, mask, m), x.shape, kernel=kernel, strides=strides)
    fd_check(f, [x], [gx])


def test_avgpool_gradient_reaches_every_covered_pixel_and_no_other() -> None:
    g = np.ones((1, 2, 2, 1), np.float32)
    gx = numerics.avgpool_grad(g, (1, 6, 6, 1), kernel=(3, 3), strides=(2, 2))
    expected = np.zeros((6, 6))
    for oh in range(2):
        for ow in range(2):
            expected[2 * oh : 2 * oh + 3, 2 * ow : 2 * ow + 3] += 1
    assert np.array_equal(gx[0, :, :, 0], expected)
    assert expected[5].sum() == 0 and expected[2, 2] == 4


def test_cross_entropy_gradients_match_finite_differences() -> None:
    rng = np.random.default_rng(9)
    logits = rng.normal(0, 3, size=(1, 10))
    label = 4

    def f(inputs: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        return float(numerics.cross_entropy_relaxed(inputs[0], label)), []

    fd_check(f, [logits], [numerics.cross_entropy_grad_relaxed(logits, label)], step=1e-5)


def test_dequantize_gradient_is_the_scale() -> None:
    rng = np.random.default_rng(10)
    q = continuous(rng, (1, 7), -128, 127)
    r = rng.normal(size=q.shape)

    def f(inputs: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        return float(np.sum(r * numerics.dequantize_relaxed(inputs[0], scale=0.07, zero_point=3))), []

    fd_check(f, [q], [numerics.requant_grad(r, None, np.float32(0.07))])


def test_loss_through_a_requantized_classifier_matches_finite_differences() -> None:
    """The top of every train_step: conv (1x1 classifier) -> dequantize -> cross-entropy."""
    rng = np.random.default_rng(13)
    x = continuous(rng, (1, 1, 1, 8), -128, 127)
    w = continuous(rng, (5, 1, 1, 8), -127, 127)
    b = continuous(rng, (5,), -2000, 2000)
    q = conv_quant(rng, 5)
    label = 2

    def f(inputs: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
        y, mask = numerics.conv2d_relaxed(*inputs, **q)  # type: ignore[arg-type]
        logits = numerics.dequantize_relaxed(y.reshape(1, 5), scale=q["output_scale"], zero_point=5)  # type: ignore[arg-type]
        return float(numerics.cross_entropy_relaxed(logits, label)), [mask]

    y, mask = numerics.conv2d_relaxed(x, w, b, **q)  # type: ignore[arg-type]
    logits = numerics.dequantize_relaxed(y.reshape(1, 5), scale=q["output_scale"], zero_point=5)  # type: ignore[arg-type]
    g_logits = numerics.cross_entropy_grad_relaxed(logits, label)
    r = numerics.requant_grad(g_logits, None, np.float32(q["output_scale"])).reshape(y.shape)  # type: ignore[arg-type]
    dx, dw, db = conv_backward(x, w, r, mask, q, (1, 1), (0, 0, 0, 0), 1)
    fd_check(f, [x, w, b], [dx, dw, db], step=1e-5)


# -- relaxed forward kernels vs the int8 kernels -------------------------------------------------------


def test_relaxed_ops_round_to_the_int8_ops() -> None:
    """A relaxed output is within half a unit (+ a few float32 ulp of the int8 kernel's float32
    arithmetic) of the int8 output, and rounds to it almost everywhere."""
    rng = np.random.default_rng(14)
    x = rng.integers(-128, 128, size=(1, 7, 7, 4), dtype=np.int8)
    w = rng.integers(-127, 128, size=(6, 3, 3, 4), dtype=np.int8)
    b = rng.integers(-5000, 5000, size=6).astype(np.int32)
    q = conv_quant(rng, 6)
    kw = dict(strides=(2, 2), padding=(1, 1, 1, 1), clamp=(-128, 100), **q)
    y8, m8 = numerics.conv2d_with_mask(x, w, b, **kw)  # type: ignore[arg-type]
    yr, mr = numerics.conv2d_relaxed(x, w, b, **kw)  # type: ignore[arg-type]
    assert np.all(np.abs(yr - y8) <= 0.5 + 1e-4)
    assert np.mean(np.rint(yr) == y8) > 0.99
    assert np.mean(mr == m8) > 0.95
    a, c = x[..., :3], x[..., 1:]
    qa = dict(lhs_scale=0.03, lhs_zero_point=-10, rhs_scale=0.05, rhs_zero_point=6, output_scale=0.06,
              output_zero_point=-100)
    ya8 = numerics.add(a, c, **qa)  # type: ignore[arg-type]
    yar, _ = numerics.add_relaxed(a, c, **qa)  # type: ignore[arg-type]
    assert np.all(np.abs(yar - ya8) <= 0.5 + 1e-4)
    qp = dict(input_scale=0.05, input_zero_point=-20, output_scale=0.03, output_zero_point=10)
    yp8 = numerics.avgpool(x, kernel=(7, 7), strides=(1, 1), **qp)  # type: ignore[arg-type]
    ypr, _ = numerics.avgpool_relaxed(x, kernel=(7, 7), strides=(1, 1), **qp)  # type: ignore[arg-type]
    assert np.all(np.abs(ypr - yp8) <= 0.5 + 1e-4)
    assert np.array_equal(np.rint(numerics.quantize_relaxed(np.array([0.123, -9.0, 9.0]), scale=0.01, zero_point=3)),
                          numerics.quantize(np.array([0.123, -9.0, 9.0]), scale=0.01, zero_point=3))


def test_relaxed_cross_entropy_matches_the_fp32_loss() -> None:
    logits = np.random.default_rng(15).normal(0, 4, size=(1, 10)).astype(np.float32)
    assert abs(numerics.cross_entropy_relaxed(logits, 3) - numerics.cross_entropy(logits, 3)) < 2e-6


# -- the float32 contract -------------------------------------------------------------------------------


def test_float32_sums_are_the_float64_reference_rounded_once() -> None:
    rng = np.random.default_rng(16)
    x = rng.integers(-128, 128, size=(1, 9, 9, 8), dtype=np.int8)
    w = rng.integers(-127, 128, size=(8, 3, 3, 1), dtype=np.int8)
    g32 = rng.normal(size=(1, 5, 5, 8)).astype(np.float32)
    g64 = g32.astype(np.float64)
    geom = dict(strides=(2, 2), padding=(1, 1, 1, 1), groups=8)
    pairs = [
        (numerics.conv2d_input_grad(g32, w, x.shape, **geom), numerics.conv2d_input_grad(g64, w, x.shape, **geom)),  # type: ignore[arg-type]
        (numerics.conv2d_weight_grad(x, g32, input_zero_point=3, kernel=(3, 3), **geom),  # type: ignore[arg-type]
         numerics.conv2d_weight_grad(x, g64, input_zero_point=3, kernel=(3, 3), **geom)),  # type: ignore[arg-type]
        (numerics.avgpool_grad(g32, (1, 11, 11, 8), kernel=(3, 3), strides=(2, 2)),
         numerics.avgpool_grad(g64, (1, 11, 11, 8), kernel=(3, 3), strides=(2, 2))),
    ]
    for got32, got64 in pairs:
        assert got32.dtype == np.float32 and got64.dtype == np.float64
        assert np.array_equal(got32, got64.astype(np.float32))
        # and a float32 accumulation in some order is a few ulp away (what a C kernel may do)
        assert np.allclose(got32, got64, rtol=1e-6, atol=1e-5)
    # bias_grad is the one sum the C takes sequentially: the golden model takes it in the same order and
    # precision (DESIGN.md), a few ulp from the float64 reference
    sequential = np.zeros(8, np.float32)
    for row in g32.reshape(-1, 8):
        sequential = (sequential + row).astype(np.float32)
    np.testing.assert_array_equal(numerics.bias_grad(g32), sequential)
    assert numerics.bias_grad(g64).dtype == np.float64
    assert np.allclose(numerics.bias_grad(g32), numerics.bias_grad(g64), rtol=1e-6, atol=1e-5)


def test_requant_grad_is_one_float32_multiply_then_the_mask() -> None:
    rng = np.random.default_rng(17)
    g = rng.normal(size=(1, 3, 3, 4)).astype(np.float32)
    mask = rng.random(size=g.shape) < 0.6
    m = np.array([0.1, 0.2, 0.3, 1e-3], np.float32)
    out = numerics.requant_grad(g, mask, m)
    assert out.dtype == np.float32
    for idx in np.ndindex(g.shape):
        if mask[idx]:
            assert out[idx] == np.float32(g[idx] * m[idx[-1]])
        else:
            assert out[idx] == 0 and not np.signbit(out[idx])  # +0.0, not g * 0
    assert np.array_equal(numerics.requant_grad(g, None, np.float32(0.5)), g * np.float32(0.5))
    with pytest.raises(ValueError, match="multipliers for 4 channels"):
        numerics.requant_grad(g, None, [1.0, 2.0])


def test_cross_entropy_grad_follows_the_loss_kernel() -> None:
    rng = np.random.default_rng(18)
    logits = rng.normal(0, 5, size=(1, 10)).astype(np.float32)
    g = numerics.cross_entropy_grad(logits, 7)
    assert g.dtype == np.float32 and g.shape == (1, 10)
    t = logits[0] - logits.max()
    e = numerics.exp_f32(t)
    s = np.float32(0.0)
    for v in e:
        s = np.float32(s + v)
    expected = (e / s).astype(np.float32)
    expected[7] = np.float32(expected[7] - np.float32(1.0))
    assert np.array_equal(g[0], expected)
    assert np.allclose(g, numerics.cross_entropy_grad_relaxed(logits.astype(np.float64), 7), atol=1e-6)
    assert abs(float(g.sum())) < 1e-6


def test_grad_accumulate_is_one_float32_add() -> None:
    a = np.array([1.0, 1e8, -3.5], np.float32)
    b = np.array([2.0**-30, 1.0, 3.5], np.float32)
    assert np.array_equal(numerics.grad_accumulate(a, b), np.array([1.0, 1e8, 0.0], np.float32))
    with pytest.raises(ValueError, match="shapes differ"):
        numerics.grad_accumulate(a, b[:2])


# -- sgd_update -----------------------------------------------------------------------------------------


def test_sgd_update_fp32_master_copy() -> None:
    rng = np.random.default_rng(19)
    p = rng.normal(0, 50, size=(3, 2, 2, 4)).astype(np.float32)
    g = rng.normal(size=p.shape).astype(np.float32)
    scale = np.array([1e4, 2.5e3, 4444.4448], np.float32)
    out = numerics.sgd_update(p, g, lr=0.05, grad_scale=scale)
    assert out.dtype == np.float32
    for idx in np.ndindex(p.shape):
        step = np.float32(np.float32(0.05) * scale[idx[0]])
        assert out[idx] == np.float32(p[idx] - np.float32(step * g[idx]))


def test_sgd_update_int8_rounds_the_step_half_to_even_and_saturates() -> None:
    p = np.array([[0], [0], [0], [0], [5], [120], [-120], [7]], np.int8)
    # deltas lr * g: 0.5, 1.5, -2.5, 0.49999997, -0.5, -10, 10, 1e30 (huge)
    g = np.array([[0.5], [1.5], [-2.5], [0.49999997], [-0.5], [-10.0], [10.0], [1e30]], np.float32)
    out = numerics.sgd_update(p, g, lr=1.0, grad_scale=[1.0])
    assert out.dtype == np.int8
    assert out[:, 0].tolist() == [0, -2, 2, 0, 5, 127, -128, -128]


def test_sgd_update_int32_is_exact_beyond_float32_precision() -> None:
    p = np.array([2**30 + 1, 2**31 - 10, -(2**31) + 3, 123456789], np.int32)
    g = np.array([1.0, -20.0, 20.0, 0.25], np.float32)
    out = numerics.sgd_update(p, g, lr=1.0, grad_scale=[1.0, 1.0, 1.0, 4.0])
    assert out.dtype == np.int32
    assert out.tolist() == [2**30, 2**31 - 1, -(2**31), 123456788]


def test_sgd_update_float64_is_the_relaxed_unrounded_update() -> None:
    p = np.array([[1.25], [-3.0]])
    g = np.array([[0.1], [0.2]])
    out = numerics.sgd_update(p, g, lr=0.05, grad_scale=[1e4, 2.0])
    steps = numerics.sgd_steps(0.05, [1e4, 2.0]).astype(np.float64)
    assert out.dtype == np.float64
    assert np.array_equal(out[:, 0], [1.25 - steps[0] * 0.1, -3.0 - steps[1] * 0.2])
    with pytest.raises(ValueError, match="grad_scale values for 2 output channels"):
        numerics.sgd_update(p, g, lr=0.05, grad_scale=[1.0, 2.0, 3.0])


def test_master_to_param_rounds_half_to_even_and_saturates() -> None:
    m = np.array([0.5, 1.5, -2.5, 126.7, 300.0, -1e9, np.nan], np.float32)
    assert numerics.master_to_param(m, np.int8).tolist() == [0, 2, -2, 127, 127, -128, -128]
    assert numerics.master_to_param(np.array([3e9, -3e9], np.float32), np.int32).tolist() == [2**31 - 1, -(2**31)]
