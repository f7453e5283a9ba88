"""Shared by the Cortex-M7 target tests: where the test programs are, and skip markers."""

from __future__ import annotations

from pathlib import Path

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
