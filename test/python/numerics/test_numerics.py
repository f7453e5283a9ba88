"""The reference kernels in qtrain.numerics against independent, naive implementations.

The naive references loop over elements with Python integers, exact rationals (fractions) and
float64 where the contract allows it, and Python's `round` (half to even) for the rounding step.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from qtrain import numerics

F32 = np.float32


# -- exact float32 helpers for the references ----------------------------------------------------------


def round_fraction_to_f32(value: Fraction) -> np.float32:
    """Correctly rounded (half to even) float32 of an exact rational, by comparing neighbours exactly."""
    guess = np.float32(float(value))
    candidates = {guess, np.nextafter(guess, F32(np.inf)), np.nextafter(guess, F32(-np.inf))}

    def key(c: np.float32) -> tuple[Fraction, int]:
        return abs(Fraction(float(c)) - value), int(np.array([c]).view(np.uint32)[0]) & 1

    return min(candidates, key=key)


def naive_fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    return round_fraction_to_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


# -- fma -----------------------------------------------------------------------------------------------


def test_fma_f32_matches_exact_rational_reference() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 10, 3000).astype(F32)
    b = rng.normal(0, 1, 3000).astype(F32)
    c = rng.normal(0, 100, 3000).astype(F32)
    got = numerics.fma_f32(a, b, c)
    for i in range(a.size):
        assert got[i] == naive_fma(a[i], b[i], c[i]), (a[i], b[i], c[i])


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        # a*b = 2**-24 - 2**-70: just below the midpoint c + 2**-24 (c has an odd last bit)
        (2.0**-24 - 2.0**-47, 1 + 2.0**-23, 1 + 2.0**-23),
        # a*b = -(2**-24 - 2**-70): just above the midpoint c - 2**-24 (c has an odd last bit)
        (-(2.0**-24 - 2.0**-47), 1 + 3 * 2.0**-23, 1 + 3 * 2.0**-23),
    ],
    ids=["below-midpoint", "above-midpoint"],
)
def test_fma_f32_is_not_double_rounded(b: float, c: float, expected: float) -> None:
    """a*b + c lies within 2**-70 of a float32 midpoint: float64 rounds it onto the midpoint, whose
    float32 rounding (half to even) would then go the wrong way; the emulation must not."""
    a = F32(1 + 2.0**-23)
    got = numerics.fma_f32(a, F32(b), F32(c))[()]
    wrong = F32(float(a) * b + c)  # double rounding through float64
    assert got == naive_fma(a, F32(b), F32(c)) == F32(expected)
    assert wrong != got


# -- requantize ----------------------------------------------------------------------------------------


def naive_requantize(acc: int, multiplier: np.float32, zp: int, lo: int = -128, hi: int = 127) -> int:
    t = F32(acc) * multiplier  # one float32 multiply: float32(acc) * M
    return min(hi, max(lo, round(float(t)) + zp))  # Python's round is half to even


def test_requantize_against_naive() -> None:
    rng = np.random.default_rng(2)
    acc = rng.integers(-200000, 200000, size=(2, 3, 4, 6)).astype(np.int32)
    acc[0, 0, 0, :] = [0, 64, -64, 192, -192, 2**24 + 1]  # ties with M = 2**-7, an inexact int -> float
    m = np.array([2.0**-7, 1.3e-3, 7.7e-4, 2.0**-7, 1e-2, 2.0**-7], dtype=F32)
    for zp, clamp in ((0, (-128, 127)), (-17, (-17, 127)), (5, (-100, 6))):
        got = numerics.requantize(acc, m, zp, clamp)
        assert got.dtype == np.int8
        for idx in itertools.product(*map(range, acc.shape)):
            assert got[idx] == naive_requantize(int(acc[idx]), m[idx[-1]], zp, *clamp), idx


def test_requantize_rounds_ties_to_even() -> None:
    acc = np.array([1, 3, 5, -1, -3, 7], dtype=np.int32)
    assert numerics.requantize(acc, F32(0.5), 0).tolist() == [0, 2, 2, 0, -2, 4]


def test_requantize_rejects_int32_overflow_and_bad_clamp() -> None:
    with pytest.raises(numerics.AccumulatorOverflowError):
        numerics.requantize(np.array([2**31], dtype=np.int64), F32(1e-9), 0)
    with pytest.raises(ValueError, match="clamp"):
        numerics.requantize(np.array([1], dtype=np.int32), F32(1.0), 0, (10, 5))


# -- conv2d --------------------------------------------------------------------------------------------


def naive_conv_acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, zx: int, strides: tuple[int, int],
                   pads: tuple[int, int, int, int], groups: int) -> np.ndarray:
    n, h, wd, cin = x.shape
    cout, kh, kw, cin_g = w.shape
    pt, pl, pb, pr = pads
    oh = (h + pt + pb - kh) // strides[0] + 1
    ow = (wd + pl + pr - kw) // strides[1] + 1
    out = np.zeros((n, oh, ow, cout), dtype=np.int64)
    cout_g = cout // groups
    for b_, y, xo, co in itertools.product(range(n), range(oh), range(ow), range(cout)):
        g = co // cout_g
        total = int(bias[co]) if bias is not None else 0
        for i, j, ci in itertools.product(range(kh), range(kw), range(cin_g)):
            r, c = y * strides[0] + i - pt, xo * strides[1] + j - pl
            v = int(x[b_, r, c, g * cin_g + ci]) if 0 <= r < h and 0 <= c < wd else zx  # pad = zero point
            total += (v - zx) * int(w[co, i, j, ci])
        out[b_, y, xo, co] = total
    return out


NAIVE_CONV_CASES = [
    # (N, H, W, C_in, C_out, KH, KW, strides, pads, groups)
    (1, 5, 6, 3, 4, 3, 3, (1, 1), (1, 1, 1, 1), 1),
    (2, 7, 5, 4, 2, 3, 2, (2, 1), (0, 1, 2, 0), 1),
    (1, 6, 6, 4, 6, 1, 1, (2, 2), (0, 0, 0, 0), 2),
    (1, 7, 7, 5, 5, 3, 3, (2, 2), (1, 1, 1, 1), 5),  # depthwise
    (1, 6, 5, 3, 6, 5, 5, (1, 1), (2, 2, 2, 2), 3),  # depthwise, channel multiplier 2
    (1, 1, 1, 8, 3, 1, 1, (1, 1), (0, 0, 0, 0), 1),  # classifier
]


@pytest.mark.parametrize("case", NAIVE_CONV_CASES, ids=[f"case{i}" for i in range(len(NAIVE_CONV_CASES))])
def test_conv2d_against_naive(case: tuple) -> None:
    n, h, w, cin, cout, kh, kw, strides, pads, groups = case
    rng = np.random.default_rng(h * 31 + cin)
    x = rng.integers(-128, 128, size=(n, h, w, cin), dtype=np.int8)
    weight = rng.integers(-128, 128, size=(cout, kh, kw, cin // groups), dtype=np.int8)
    bias = rng.integers(-5000, 5000, size=cout, dtype=np.int32)
    zx = int(rng.integers(-128, 128))
    acc = numerics.conv2d_accumulate(x, weight, bias, input_zero_point=zx, strides=strides, padding=pads,
                                     groups=groups)
    expected_acc = naive_conv_acc(x, weight, bias, zx, strides, pads, groups)
    assert acc.dtype == np.int32
    assert np.array_equal(acc, expected_acc)

    sx, sy = F32(0.02), F32(0.9)
    sw = rng.uniform(0.001, 0.01, cout).astype(F32)
    y = numerics.conv2d(x, weight, bias, input_scale=sx, input_zero_point=zx, weight_scales=sw, output_scale=sy,
                        output_zero_point=-3, strides=strides, padding=pads, groups=groups, clamp=(-3, 127))
    for idx in itertools.product(*map(range, y.shape)):
        m = (sx * sw[idx[-1]]) / sy  # float32: multiply, then divide
        assert y[idx] == naive_requantize(int(expected_acc[idx]), m, -3, -3, 127), idx


def test_conv2d_multiplier_is_float32_left_to_right() -> None:
    sx, sw, sy = F32(0.1), np.array([0.3, 0.7], F32), F32(0.3)
    m = numerics.conv2d_multiplier(sx, sw, sy)
    assert m.dtype == np.float32
    for c in range(2):
        exact = Fraction(float(round_fraction_to_f32(Fraction(float(sx)) * Fraction(float(sw[c]))))) / Fraction(
            float(sy))
        assert m[c] == round_fraction_to_f32(exact)
    assert numerics.conv2d_multiplier(sx, F32(0.3), sy).shape == (1,)


def test_conv2d_padding_contributes_zero_point() -> None:
    """An all-zero-point input gives acc = bias everywhere, including the padded border."""
    x = np.full((1, 4, 4, 2), 9, dtype=np.int8)
    w = np.ones((3, 3, 3, 2), dtype=np.int8)
    acc = numerics.conv2d_accumulate(x, w, np.array([1, 2, 3], np.int32), input_zero_point=9, padding=(2, 2, 2, 2))
    assert acc.shape == (1, 6, 6, 3)
    assert np.all(acc == np.array([1, 2, 3]))


def test_conv2d_rejects_overflowing_accumulator() -> None:
    x = np.full((1, 1, 1, 1), -128, dtype=np.int8)
    w = np.full((1, 1, 1, 1), -128, dtype=np.int8)
    with pytest.raises(numerics.AccumulatorOverflowError):
        numerics.conv2d_accumulate(x, w, np.array([2**31 - 1000], np.int32), input_zero_point=127)


def test_conv2d_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="groups"):
        numerics.conv2d_accumulate(np.zeros((1, 3, 3, 4), np.int8), np.zeros((4, 1, 1, 3), np.int8),
                                   input_zero_point=0, groups=2)


# -- add -----------------------------------------------------------------------------------------------


def naive_add(a: int, b: int, sa: float, za: int, sb: float, zb: int, sy: float, zy: int, lo: int = -128,
              hi: int = 127) -> int:
    ra, rb = F32(F32(sa) / F32(sy)), F32(F32(sb) / F32(sy))
    offset = F32(F32(zy) - naive_fma(ra, F32(za), F32(rb * F32(zb))))
    t = naive_fma(F32(b), rb, offset)
    t = naive_fma(F32(a), ra, t)
    return min(hi, max(lo, round(float(t))))


def test_add_against_naive() -> None:
    rng = np.random.default_rng(4)
    for _ in range(6):
        sa, sb, sy = (float(F32(v)) for v in rng.uniform(0.01, 0.1, 3))
        za, zb, zy = (int(v) for v in rng.integers(-128, 128, 3))
        a = rng.integers(-128, 128, size=(1, 3, 3, 5), dtype=np.int8)
        b = rng.integers(-128, 128, size=(1, 3, 3, 5), dtype=np.int8)
        clamp = (int(rng.integers(-128, 0)), 127)
        got = numerics.add(a, b, lhs_scale=sa, lhs_zero_point=za, rhs_scale=sb, rhs_zero_point=zb, output_scale=sy,
                           output_zero_point=zy, clamp=clamp)
        for idx in itertools.product(*map(range, a.shape)):
            assert got[idx] == naive_add(int(a[idx]), int(b[idx]), sa, za, sb, zb, sy, zy, *clamp), idx


def test_add_is_within_half_a_unit_of_the_real_sum() -> None:
    """Whatever the float32 details, the result must be the real-valued sum rounded (up to float error)."""
    grid = np.arange(-128, 128, dtype=np.int8)
    a, b = (v.reshape(1, 256, 256, 1) for v in np.meshgrid(grid, grid, indexing="ij"))
    sa, za, sb, zb, sy, zy = 0.031, 5, 0.047, -12, 0.06, 3
    got = numerics.add(a, b, lhs_scale=sa, lhs_zero_point=za, rhs_scale=sb, rhs_zero_point=zb, output_scale=sy,
                       output_zero_point=zy).astype(np.float64)
    real = (float(F32(sa)) * (a.astype(np.float64) - za) + float(F32(sb)) * (b.astype(np.float64) - zb)) / float(
        F32(sy)) + zy
    inside = (real > -127.5) & (real < 126.5)
    assert np.all(np.abs(got - real)[inside] <= 0.5 + 1e-4)
    assert np.all(got[real >= 127.5] == 127) and np.all(got[real <= -128.5] == -128)


def test_add_constants_fold_the_zero_points() -> None:
    ra, rb, c = numerics.add_constants(0.02, 3, 0.05, -4, 0.04, 7)
    assert (ra, rb) == (F32(F32(0.02) / F32(0.04)), F32(F32(0.05) / F32(0.04)))
    assert abs(float(c) - (7 - float(ra) * 3 - float(rb) * -4)) < 1e-5


# -- avgpool -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "kernel", "strides"), [((1, 4, 4, 5), (4, 4), (1, 1)),
                                                          ((2, 7, 6, 3), (3, 2), (2, 2)),
                                                          ((1, 5, 5, 2), (2, 2), (1, 1))])
def test_avgpool_against_naive(shape: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(-128, 128, size=shape, dtype=np.int8)
    sx, zx, sy, zy = F32(0.05), -9, F32(0.04), 6
    got = numerics.avgpool(x, kernel=kernel, strides=strides, input_scale=sx, input_zero_point=zx, output_scale=sy,
                           output_zero_point=zy)
    n, h, w, c = shape
    oh, ow = (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1
    assert got.shape == (n, oh, ow, c)
    m = sx / (sy * F32(kernel[0] * kernel[1]))
    for b_, i, j, ch in itertools.product(range(n), range(oh), range(ow), range(c)):
        total = sum(int(x[b_, i * strides[0] + di, j * strides[1] + dj, ch]) - zx
                    for di in range(kernel[0]) for dj in range(kernel[1]))
        assert got[b_, i, j, ch] == naive_requantize(total, m, zy), (b_, i, j, ch)


# -- quantize / dequantize -----------------------------------------------------------------------------


def test_quantize_against_naive() -> None:
    rng = np.random.default_rng(5)
    scale = F32(0.037)
    x = np.concatenate([rng.normal(0, 4, 400), (rng.integers(-150, 150, 100) + 0.5) * float(scale),
                        [1e30, -1e30, 0.0]]).astype(F32)
    for zp in (0, -20, 90):
        got = numerics.quantize(x, scale=scale, zero_point=zp)
        for v, g in zip(x, got, strict=True):
            t = F32(v) / scale
            expected = min(127, max(-128, round(float(t)) + zp)) if abs(float(t)) < 1e9 else (
                127 if t > 0 else -128)
            assert g == expected, v


def test_dequantize_against_naive() -> None:
    q = np.arange(-128, 128, dtype=np.int8)
    got = numerics.dequantize(q, scale=0.0173, zero_point=-11)
    assert got.dtype == np.float32
    for v, g in zip(q, got, strict=True):
        assert g == F32(int(v) + 11) * F32(0.0173)


# -- exp / log / cross-entropy -------------------------------------------------------------------------


def ulp_error(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    ulp = np.spacing(np.abs(exact).astype(F32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / ulp


def test_exp_f32_accuracy() -> None:
    x = np.concatenate([np.linspace(-103, 88.7, 400001), np.random.default_rng(6).normal(0, 3, 100000),
                        [0.0, -0.0, 1e-30, -1e-30]]).astype(F32)
    got = numerics.exp_f32(x)
    exact = np.exp(x.astype(np.float64))
    normal = exact >= np.finfo(F32).tiny
    assert ulp_error(got[normal], exact[normal]).max() <= 1.0  # runtime_math.c: 0.94 ulp over all float32
    assert numerics.exp_f32(F32(0.0)) == 1.0
    assert np.all(numerics.exp_f32(np.array([-104.0, -1000.0], F32)) == 0.0)
    assert numerics.exp_f32(F32(89.0)) == np.inf and np.isnan(numerics.exp_f32(F32(np.nan)))


def test_log_f32_accuracy() -> None:
    x = np.concatenate([np.exp(np.linspace(-80, 80, 400001)), np.linspace(1, 1000, 100000),
                        1 + np.linspace(-1e-3, 1e-3, 20001), [1e-40, 1e-44]]).astype(F32)
    assert ulp_error(numerics.log_f32(x), np.log(x.astype(np.float64))).max() <= 1.0  # C: 0.89 ulp
    assert numerics.log_f32(F32(1.0)) == 0.0
    powers = np.array([2.0**k for k in range(-100, 100)], F32)
    assert ulp_error(numerics.log_f32(powers)[powers != 1], np.log(powers[powers != 1].astype(np.float64))).max() <= 1
    assert numerics.log_f32(F32(0.0)) == -np.inf and numerics.log_f32(F32(np.inf)) == np.inf
    assert np.isnan(numerics.log_f32(F32(-1.0))) and np.isnan(numerics.log_f32(F32(np.nan)))


def test_exp_log_constants_are_the_documented_values() -> None:
    assert numerics.LOG2E == F32(1 / math.log(2))
    assert float(numerics.LN2_HI) == 0.693145751953125 and numerics.f32_bits(numerics.LN2_HI) & 0x1FF == 0
    assert numerics.LN2_LO == F32(math.log(2) - 0.693145751953125)
    assert numerics.EXP_TAYLOR == tuple(F32(1 / math.factorial(k)) for k in (7, 6, 5, 4, 3))
    assert numerics.LOG_TAYLOR == tuple(F32(2 / k) for k in (11, 9, 7, 5, 3))


def naive_cross_entropy(logits: np.ndarray, label: int) -> float:
    z = logits.astype(np.float64)
    return float(math.log(sum(math.exp(v - z.max()) for v in z)) - (z[label] - z.max()))


def test_cross_entropy_against_float64() -> None:
    rng = np.random.default_rng(8)
    for k in (2, 10, 1000):
        for _ in range(20):
            logits = (rng.normal(0, 5, k)).astype(F32)
            label = int(rng.integers(0, k))
            got = numerics.cross_entropy(logits.reshape(1, 1, 1, k), label)
            assert isinstance(got, np.float32)
            assert abs(float(got) - naive_cross_entropy(logits, label)) <= 1e-5 * max(1.0, float(got))


def test_cross_entropy_is_stable_for_large_logits() -> None:
    logits = np.array([1e4, -1e4, 3e3, 1e4 - 2], F32)
    got = numerics.cross_entropy(logits, 1)
    assert np.isfinite(got) and abs(float(got) - naive_cross_entropy(logits, 1)) < 1e-2
    assert abs(float(numerics.cross_entropy(logits, 0)) - naive_cross_entropy(logits, 0)) < 1e-6


def test_cross_entropy_sums_in_index_order() -> None:
    """The documented order (sequential, not pairwise) is what np.add.accumulate gives."""
    logits = np.random.default_rng(9).normal(0, 3, 300).astype(F32)
    t = logits - logits.max()
    e = numerics.exp_f32(t)
    s = F32(0.0)
    for v in e:
        s = F32(s + v)
    expected = F32(numerics.log_f32(s) - t[7])
    assert numerics.cross_entropy(logits, 7) == expected


def test_cross_entropy_rejects_bad_label() -> None:
    with pytest.raises(ValueError, match="label"):
        numerics.cross_entropy(np.zeros(10, F32), 10)


# -- saturation masks (saved in forward for the backward pass) -----------------------------------------


def test_requantize_mask_marks_values_the_clamp_left_unchanged() -> None:
    rng = np.random.default_rng(10)
    acc = rng.integers(-60000, 60000, size=(3, 50)).astype(np.int32)
    m = np.float32(2.0**-8)  # acc * m in [-234, 234]: plenty on both sides of the clamp
    y, mask = numerics.requantize_with_mask(acc, m, 4, (-20, 100))
    for idx in itertools.product(*map(range, acc.shape)):
        r = round(float(np.float32(acc[idx]) * m)) + 4
        assert mask[idx] == (-20 <= r <= 100), idx
        assert y[idx] == min(100, max(-20, r))
    assert mask.dtype == np.bool_ and mask.any() and not mask.all()


def test_conv_add_avgpool_masks_agree_with_their_outputs() -> None:
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, size=(1, 6, 6, 4), dtype=np.int8)
    w = rng.integers(-128, 128, size=(4, 3, 3, 1), dtype=np.int8)
    kwargs = dict(input_scale=0.05, input_zero_point=1, weight_scales=0.01, output_scale=0.02, output_zero_point=-3,
                  padding=(1, 1, 1, 1), groups=4, clamp=(-3, 60))
    y, mask = numerics.conv2d_with_mask(x, w, **kwargs)  # pyright: ignore[reportArgumentType]
    assert np.array_equal(y, numerics.conv2d(x, w, **kwargs))  # pyright: ignore[reportArgumentType]
    acc = numerics.conv2d_accumulate(x, w, input_zero_point=1, padding=(1, 1, 1, 1), groups=4)
    r = np.rint(acc.astype(np.float32) * numerics.conv2d_multiplier(0.05, 0.01, 0.02)) - 3
    assert np.array_equal(mask, (r >= -3) & (r <= 60)) and mask.any() and not mask.all()

    a, b = (rng.integers(-128, 128, size=(1, 4, 4, 3), dtype=np.int8) for _ in range(2))
    q = dict(lhs_scale=0.1, lhs_zero_point=2, rhs_scale=0.08, rhs_zero_point=-1, output_scale=0.06,
             output_zero_point=-4)
    y2, mask2 = numerics.add_with_mask(a, b, clamp=(-4, 127), **q)  # pyright: ignore[reportArgumentType]
    for idx in itertools.product(*map(range, a.shape)):
        ra, rb = F32(F32(0.1) / F32(0.06)), F32(F32(0.08) / F32(0.06))
        offset = F32(F32(-4) - naive_fma(ra, F32(2), F32(rb * F32(-1))))
        r = round(float(naive_fma(F32(a[idx]), ra, naive_fma(F32(b[idx]), rb, offset))))
        assert mask2[idx] == (-4 <= r <= 127) and y2[idx] == min(127, max(-4, r)), idx
    assert mask2.any() and not mask2.all()

    p, pmask = numerics.avgpool_with_mask(x, kernel=(2, 2), strides=(2, 2), input_scale=0.1, input_zero_point=0,
                                          output_scale=0.004, output_zero_point=0)
    sums = x.astype(np.int32).reshape(1, 3, 2, 3, 2, 4).sum(axis=(2, 4))
    r = np.rint(sums.astype(np.float32) * numerics.avgpool_multiplier(0.1, 0.004, (2, 2)))
    assert np.array_equal(pmask, (r >= -128) & (r <= 127)) and pmask.any() and not pmask.all()
