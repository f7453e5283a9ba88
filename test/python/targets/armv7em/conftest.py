"""Fixtures for the Arm target tests: skip markers and firmwares built once per session.

Also puts this folder on sys.path, so the tests here and in kernels/ can `from armv7em_testing import ...`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from armv7em_testing import FIRMWARE_SOURCES, STUB_MODEL  # noqa: E402

from qtrain.targets.armv7em import build


@pytest.fixture(scope="session")
def firmware_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("firmware")


@pytest.fixture(scope="session")
def stub_qemu(stub_on: Callable[[str], build.BuildResult]) -> build.BuildResult:
    """The stub model with the harness, for QEMU (the Cortex-M7)."""
    return stub_on("qemu")


@pytest.fixture(scope="session")
def stub_on(firmware_dir: Path) -> Callable[[str], build.BuildResult]:
    """The stub model with the harness for a given target, built on first use."""
    built: dict[str, build.BuildResult] = {}

    def get(target: str) -> build.BuildResult:
        if not build.have_tools("clang", "ld.lld"):
            pytest.skip("clang or ld.lld is not installed (Debian packages 'clang', 'lld')")
        if target not in built:
            built[target] = build.build_firmware([STUB_MODEL], firmware_dir / f"stub-{target}" / "firmware.elf",
                                                 target)  # type: ignore[arg-type]
        return built[target]

    return get


@pytest.fixture(scope="session")
def stub_host(firmware_dir: Path) -> build.BuildResult:
    """The stub model with the harness, as a host executable."""
    if not build.have_tools("clang"):
        pytest.skip("clang is not installed (Debian package 'clang')")
    return build.build_firmware([STUB_MODEL], firmware_dir / "stub-host" / "firmware", "host")


@pytest.fixture(scope="session", params=build.QEMU_TARGETS)
def stack_probe(firmware_dir: Path, request: pytest.FixtureRequest) -> build.BuildResult:
    """stack_probe.c (no harness) for each QEMU target, with an 8 KB application stack."""
    if not build.have_tools("clang", "ld.lld"):
        pytest.skip("clang or ld.lld is not installed (Debian packages 'clang', 'lld')")
    return build.build_firmware([FIRMWARE_SOURCES / "stack_probe.c"], firmware_dir / f"stack_probe-{request.param}.elf",
                                request.param, harness=False, stack_bytes=8192)
