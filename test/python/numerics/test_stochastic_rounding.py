"""Stochastic rounding of weight updates (`weight-storage` i8 / i16): the counter-based PRNG against an
independent plain-Python MurmurHash3 finalizer, and the statistics the storages exist for: stochastic
rounding is unbiased, round-to-nearest loses every update below half a unit."""

from __future__ import annotations

import numpy as np
import pytest

from qtrain import numerics

M32 = 0xFFFFFFFF


def fmix32(h: int) -> int:
    """MurmurHash3's fmix32 (Appleby's reference code), written out on Python ints."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    h ^= h >> 16
    return h


def test_mix32_is_murmur3_fmix32() -> None:
    xs = [0, 1, 2, 0x80000000, M32, 0x9E3779B9, 123456789]
    assert numerics.mix32(np.array(xs)).tolist() == [fmix32(x) for x in xs]
    assert fmix32(0) == 0 and fmix32(1) == 0x514E28B7  # the finalizer's published fixed point and first value


@pytest.mark.parametrize(("seed", "step"), [(0, 1), (numerics.noise_seed("conv0.weight"), 42), (2**31 - 1, M32)])
def test_noise_is_the_documented_hash(seed: int, step: int) -> None:
    key = fmix32(seed ^ fmix32(step))
    assert numerics.noise_key(seed, step) == key
    u = numerics.rounding_noise(key, 1000)
    expected = [(fmix32((key + i * 0x9E3779B9) & M32) >> 8) / 2**24 for i in range(1000)]
    assert u.dtype == np.float32
    assert u.tolist() == expected  # 24-bit values: exact in float32


def test_noise_seed_is_a_31_bit_constant_per_parameter() -> None:
    seeds = {numerics.noise_seed(f"conv{i}.weight") for i in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**31 for s in seeds)


def test_noise_is_uniform_and_differs_between_steps() -> None:
    a = numerics.rounding_noise(numerics.noise_key(7, 1), 100_000)
    b = numerics.rounding_noise(numerics.noise_key(7, 2), 100_000)
    assert 0 <= a.min() and a.max() < 1
    counts = np.histogram(a, bins=16, range=(0, 1))[0]
    assert np.abs(counts / 100_000 * 16 - 1).max() < 0.05
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.02  # neighbouring elements


def test_stochastic_int8_update_is_unbiased_and_nearest_loses_small_updates() -> None:
    """One step of 10^5 weights with the same sub-unit update: the mean move is the exact update."""
    p = np.zeros(100_000, np.int8)
    key = numerics.noise_key(numerics.noise_seed("w"), 1)
    for delta in (0.3, -0.05, 0.7, 2.25):
        g = np.full(p.shape, delta, np.float32)
        moved = numerics.sgd_update(p, g, lr=1.0, grad_scale=1.0, noise_key=key).astype(np.float64)
        # Bernoulli(frac) per element: std error <= 0.5 / sqrt(1e5) = 0.0016
        assert abs(moved.mean() + delta) < 0.01, delta
        assert set(np.unique(moved)) <= {np.floor(-delta), np.ceil(-delta)}
    nearest = numerics.sgd_update(p, np.full(p.shape, 0.3, np.float32), lr=1.0, grad_scale=1.0)
    assert not nearest.any()


def test_many_small_updates_accumulate_in_expectation() -> None:
    """2000 steps of one update of 0.01 unit each on 1000 weights (a step counter advancing as on the device):
    stochastic int8 and the i16 master move by ~20 units as fp32 masters do, round-to-nearest never moves."""
    steps, n, delta = 2000, 1000, 0.01
    g = np.full(n, delta, np.float32)
    i8, i16, nearest = np.zeros(n, np.int8), np.zeros(n, np.int16), np.zeros(n, np.int8)
    f32 = np.zeros(n, np.float32)
    seed = numerics.noise_seed("conv1.weight")
    for t in range(1, steps + 1):
        key = numerics.noise_key(seed, t)
        i8 = numerics.sgd_update(i8, g, lr=1.0, grad_scale=1.0, noise_key=key)
        i16 = numerics.sgd_update(i16, g, lr=1.0, grad_scale=1.0, noise_key=key)
        nearest = numerics.sgd_update(nearest, g, lr=1.0, grad_scale=1.0)
        f32 = numerics.sgd_update(f32, g, lr=1.0, grad_scale=1.0)
    exact = -steps * delta
    assert abs(float(f32.mean()) - exact) < 0.01
    # i8: a sum of 2000 Bernoulli(0.01) per weight, std sqrt(19.8) = 4.4 each, 0.14 for the mean of 1000
    assert abs(i8.astype(np.float64).mean() - exact) < 0.6
    assert abs(i16.astype(np.float64).mean() / 256 - exact) < 0.01  # 2.56 fraction units a step: ~exact
    assert not nearest.any()


def test_i16_update_below_its_resolution_is_still_unbiased() -> None:
    """0.001 unit = 0.256 fraction units: nearest rounding at 1/256 would lose it, stochastic does not."""
    m = np.zeros(100_000, np.int16)
    out = numerics.sgd_update(m, np.full(m.shape, 0.001, np.float32), lr=1.0, grad_scale=1.0,
                              noise_key=numerics.noise_key(3, 9))
    assert abs(out.astype(np.float64).mean() / 256 + 0.001) < 2e-5


def test_fixed16_master_value_and_saturation() -> None:
    m = np.array([numerics.FIXED16_MIN, -129, -128, 127, 128, numerics.FIXED16_MAX], np.int16)
    value = numerics.fixed16_value(m)
    assert value.tolist() == [-128, -1, 0, 0, 1, 127]  # m / 256 rounded half up
    fraction = m.astype(np.int32) - 256 * value.astype(np.int32)
    assert fraction.min() >= -128 and fraction.max() <= 127
    assert np.array_equal(numerics.fixed16_master(value, fraction), m)
    assert np.array_equal(numerics.master_to_param(m, np.int8), value)
    huge = numerics.sgd_update(m, np.array([1e30, -1e30, 0, 0, 1e30, -1e30], np.float32), lr=1.0, grad_scale=1.0,
                               noise_key=1)
    assert huge.tolist() == [numerics.FIXED16_MIN, numerics.FIXED16_MAX, -128, 127, numerics.FIXED16_MIN,
                             numerics.FIXED16_MAX]
    with pytest.raises(ValueError, match="stochastic"):
        numerics.sgd_update(m, np.zeros(6, np.float32), lr=1.0, grad_scale=1.0)
