"""Instruction counting on QEMU: the CMSDK APB timer under `-icount shift=0` ticks once per 40 instructions.

calibrate.c runs loops of exactly 2n instructions (subs + bne) between two timer reads. Measured on
QEMU 7.2: every loop length from 2 000 to 20 000 000 instructions reads back as floor(2n / 40) ticks,
i.e. exact to the 40-instruction resolution; through qtrain_counter_read() the count is 2n plus the
call overhead, rounded to a multiple of 40 (2n + 0 or 2n + 40).
"""

from __future__ import annotations

import re
from pathlib import Path

from armv7em_testing import FIRMWARE_SOURCES, needs_qemu

from qtrain.targets.armv7em import build

INSTRUCTIONS_PER_TICK = 40


@needs_qemu
def test_timer_counts_one_tick_per_40_instructions(tmp_path: Path) -> None:
    firmware = build.build_firmware([FIRMWARE_SOURCES / "calibrate.c"], tmp_path / "calibrate.elf", harness=False)
    process = build.run_firmware(firmware.path, timeout=60)
    assert process.returncode == 0, process.stderr
    raw = [(int(n), int(t)) for n, t in re.findall(r"^n=(\d+) ticks=(\d+)$", process.stderr, re.MULTILINE)]
    api = [(int(n), int(c)) for n, c in re.findall(r"^api n=(\d+) count=(\d+)$", process.stderr, re.MULTILINE)]
    assert len(raw) == 5 and len(api) == 5, process.stderr
    for n, ticks in raw:
        instructions = 2 * n
        # The loop lies between the two loads, so the tick count is the loop length to within one tick.
        assert abs(ticks * INSTRUCTIONS_PER_TICK - instructions) < INSTRUCTIONS_PER_TICK, (n, ticks)
    for n, count in api:
        assert count % INSTRUCTIONS_PER_TICK == 0
        # qtrain_counter_read() adds a call and a few loads around the loop: less than one more tick.
        assert 2 * n - INSTRUCTIONS_PER_TICK < count <= 2 * n + 2 * INSTRUCTIONS_PER_TICK, (n, count)
