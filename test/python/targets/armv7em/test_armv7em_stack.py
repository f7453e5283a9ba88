"""Stack painting, the stack guard (MPU on ARMv7-M, PSPLIM on ARMv8-M) and the fault handlers (stack_probe.c
on every QEMU target: the `stack_probe` fixture is parametrized over them)."""

from __future__ import annotations

import re

import pytest
from armv7em_testing import needs_qemu

from qtrain.targets.armv7em import build


@needs_qemu
def test_high_water_mark_follows_the_deepest_frame(stack_probe: build.BuildResult) -> None:
    process = build.run_firmware(stack_probe.path, ["measure"], timeout=30)
    assert process.returncode == 0, process.stderr
    match = re.search(r"baseline=(\d+) small=(\d+) large=(\d+) size=(\d+)", process.stderr)
    assert match, process.stderr
    baseline, small, large, size = map(int, match.groups())
    assert size == 8192  # as linked
    assert 0 < baseline < 512  # main's frame and the probe's own call
    assert 16 <= small - baseline <= 256  # a function with a 64-byte local array
    assert 4096 <= large - baseline <= 4096 + 256  # ... with a 4096-byte one
    assert large < size


@needs_qemu
def test_stack_overflow_hits_the_guard_and_is_reported(stack_probe: build.BuildResult) -> None:
    process = build.run_firmware(stack_probe.path, ["recurse"], timeout=30)
    assert process.returncode == 5  # QTRAIN_EXIT_STACK_OVERFLOW
    assert process.stderr.strip() == ("qtrain: stack overflow: the application stack (8192 bytes) ran into its "
                                      "guard; link with a larger stack")


@needs_qemu
@pytest.mark.parametrize(("mode", "cfsr"), [("undefined", 0x00010000), ("divide", 0x02000000)])
def test_faults_are_reported_and_exit_nonzero(stack_probe: build.BuildResult, mode: str, cfsr: int) -> None:
    process = build.run_firmware(stack_probe.path, [mode], timeout=30)
    assert process.returncode == 4  # QTRAIN_EXIT_FAULT
    match = re.fullmatch(r"qtrain: UsageFault at pc=0x([0-9a-f]{8}) lr=0x[0-9a-f]{8} cfsr=0x([0-9a-f]{8}) "
                         r"hfsr=0x00000000", process.stderr.strip())
    assert match, process.stderr
    text = next(s for s in build.elf_sections(stack_probe.path) if s.name == ".text")
    assert text.address <= int(match.group(1), 16) < text.address + text.size
    assert int(match.group(2), 16) == cfsr  # UNDEFINSTR / DIVBYZERO
