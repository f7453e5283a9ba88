"""Shared by the Cortex-M7 target tests: where the test programs are, and skip markers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qtrain.targets.armv7em import build

FIRMWARE_SOURCES = Path(__file__).resolve().parent / "firmware"
STUB_MODEL = FIRMWARE_SOURCES / "stub_model.c"

needs_clang = pytest.mark.skipif(not build.have_tools("clang"),
                                 reason="clang is not installed (Debian package 'clang')")
needs_arm_link = pytest.mark.skipif(not build.have_tools("clang", "ld.lld"),
                                    reason="clang or ld.lld is not installed (Debian packages 'clang', 'lld')")
needs_qemu = pytest.mark.skipif(
    not build.have_tools("clang", "ld.lld", "qemu-system-arm"),
    reason="clang, ld.lld or qemu-system-arm is not installed (Debian packages 'clang', 'lld', 'qemu-system-arm')")


ULP = 2.0**-24


def assert_within_sum_bound(got: np.ndarray, reference: np.ndarray, abs_terms: np.ndarray, terms: int) -> None:
    """|got - reference| <= (terms + 1) * 2^-24 * sum|terms| elementwise (abs_terms: the reference sum of
    the absolute values of the terms, float64): the fp32 summation bound of DESIGN.md."""
    assert got.shape == reference.shape
    assert got.dtype == np.float32
    bound = (terms + 1) * ULP * np.asarray(abs_terms, dtype=np.float64) + 1e-30
    error = np.abs(got.astype(np.float64) - reference.astype(np.float64))
    worst = np.max(error / bound)
    assert worst <= 1.0, f"error {worst:.3g} x the bound"
