"""qtrain_expf / qtrain_logf: accuracy against libm on the host; they and qtrain_cospif bit-identical on QEMU and
the host (qtrain_cospif against the golden model: test_kernels_schedule.py); rintf, floorf, fminf, fmaxf
(runtime_math.c's on the Cortex-M4, instructions elsewhere) bit-identical on every target.

Over all 2^32 inputs (math_accuracy 1, run once by hand, ~3 minutes): expf max 0.94 ulp, logf max
0.89 ulp; 99.58% / 99.69% of the results correctly rounded. The test samples every 257th bit pattern.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from armv7em_testing import FIRMWARE_SOURCES, needs_clang, needs_qemu

from qtrain.targets.armv7em import build


@needs_clang
def test_within_one_ulp_of_libm(tmp_path: Path) -> None:
    program = build.build_firmware([FIRMWARE_SOURCES / "math_accuracy.c"], tmp_path / "math_accuracy", "host",
                                   harness=False)
    output = subprocess.run([str(program.path), "257"], capture_output=True, text=True, check=True).stdout
    for name in ("expf", "logf"):
        match = re.search(rf"^{name} max_ulp=([0-9.]+) at=\S+ incorrectly_rounded=([0-9.]+)%$", output, re.MULTILINE)
        assert match, output
        max_ulp, incorrect_percent = float(match.group(1)), float(match.group(2))
        assert max_ulp < 1.0, output
        assert incorrect_percent < 1.0, output
    assert "special failures=0" in output


@needs_qemu
def test_target_and_host_results_are_bit_identical(tmp_path: Path) -> None:
    outputs = {}
    for target in (*build.QEMU_TARGETS, "host"):
        name = "math_probe" if target == "host" else f"math_probe-{target}.elf"
        program = build.build_firmware([FIRMWARE_SOURCES / "math_probe.c"], tmp_path / name, target,  # type: ignore[arg-type]
                                       harness=False)
        process = build.run_firmware(program.path, timeout=60)
        assert process.returncode == 0, process.stderr
        assert re.fullmatch(r"expf=0x[0-9a-f]{8} logf=0x[0-9a-f]{8} cospif=0x[0-9a-f]{8} rintf=0x[0-9a-f]{8} "
                            r"floorf=0x[0-9a-f]{8} fminmax=0x[0-9a-f]{8}\n",
                            process.stderr)
        outputs[target] = process.stderr
    assert len(set(outputs.values())) == 1, outputs
    # The Cortex-M4 build really calls runtime_math.c's functions (FPv4-SP has no VRINTX, VRINTM, VMINNM, VMAXNM).
    symbols = {line.split()[-1] for line in (tmp_path / "math_probe-qemu-m4.map").read_text().splitlines() if line}
    assert {"rintf", "floorf", "fminf", "fmaxf"} <= symbols
    assert "rintf" not in {line.split()[-1] for line in (tmp_path / "math_probe-qemu.map").read_text().splitlines()
                           if line}
