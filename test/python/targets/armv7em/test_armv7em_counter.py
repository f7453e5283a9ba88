"""Instruction counting on QEMU: the CMSDK APB timer under `-icount shift=0` ticks once per 40 instructions
(25 MHz: mps2-an500, mps2-an386) or 50 (20 MHz: mps2-an505), `Board.instructions_per_tick`.

calibrate.c runs loops of exactly 2n instructions (subs + bne) between two timer reads. Measured on
QEMU 7.2: every loop length from 2 000 to 20 000 000 instructions reads back as floor(2n / tick)
ticks, i.e. exact to the tick's resolution; through qtrain_counter_read() the count is 2n plus the
call overhead, rounded to a multiple of the tick (2n + 0 or 2n + one tick).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from armv7em_testing import FIRMWARE_SOURCES, needs_qemu

from qtrain.targets.armv7em import build


@needs_qemu
@pytest.mark.parametrize("target", build.QEMU_TARGETS)
def test_timer_counts_one_tick_per_40_or_50_instructions(target: str, tmp_path: Path) -> None:
    tick = build.BOARDS[target].instructions_per_tick
    assert tick in (40, 50)
    firmware = build.build_firmware([FIRMWARE_SOURCES / "calibrate.c"], tmp_path / "calibrate.elf", target,
                                    harness=False)  # type: ignore[arg-type]
    process = build.run_firmware(firmware.path, timeout=60)
    assert process.returncode == 0, process.stderr
    raw = [(int(n), int(t)) for n, t in re.findall(r"^n=(\d+) ticks=(\d+)$", process.stderr, re.MULTILINE)]
    api = [(int(n), int(c)) for n, c in re.findall(r"^api n=(\d+) count=(\d+)$", process.stderr, re.MULTILINE)]
    assert len(raw) == 5 and len(api) == 5, process.stderr
    for n, ticks in raw:
        instructions = 2 * n
        # The loop lies between the two loads, so the tick count is the loop length to within one tick.
        assert abs(ticks * tick - instructions) < tick, (n, ticks)
    for n, count in api:
        assert count % tick == 0
        # qtrain_counter_read() adds a call and a few loads around the loop: less than one more tick.
        assert 2 * n - tick < count <= 2 * n + 2 * tick, (n, count)
