"""Instructions per training step and per inference of the three reference models on QEMU's Cortex-M7
(mps2-an500, `-icount shift=0`), each with its 49 KB sparse-update scheme: the per-model totals that go
with bench_kernels' per-kernel table.

    python -m qtrain.tools.bench_speed [--models DIR] [--only NAME] [--keep DIR] [--json]

Each model is compiled twice with qtrain-compile's defaults (fp32 master copies, reorder, streaming
fusion): as is, for the step and inference counts, and with `--profile`, to check that the per-op
counts add up to the call's measured total (the rest is the entry's prologue and epilogue). Inputs are
random int8 images (128 x 128 x 3) with random labels out of 10 classes; the count of a step does not
depend on the data beyond a few instructions, and the last of two steps is reported (the first
one's caches are the same; the figure is QEMU's instruction count, not cycles).

Columns: instructions of one training step, its MACs and instructions per MAC; the step against its
figure when issue 16 started (the same method on the code of that time) and, for mcunet-5fps, against
the reference engine (tiny-training's C engine, clang -O2, the same emulator); the same figures for one
inference (forward only); the profiled firmware's per-op counts summed, as a share of its measured step
and inference totals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"]
DEFAULT_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models" / "tiny-training"
START = {"mcunet-5fps": 95_197_320, "mbv2-w0.35": 74_319_840, "proxyless-w0.3": 79_489_760}
"""Instructions per 49 KB training step when issue 16 started (before its first kernel change)."""
REFERENCE_ENGINE = {"mcunet-5fps": 167_992_975}
"""tiny-training's engine, clang -O2, the same emulator (issue 16)."""
IMAGE = (128, 128, 3)
CLASSES = 10


def _tool(name: str, *args: str | Path) -> dict[str, Any] | None:
    command = [sys.executable, "-m", f"qtrain.tools.{name}", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return json.loads(result.stdout) if "--json" in args else None


def measure(pkl: Path, scheme: str, workdir: Path) -> dict[str, Any]:
    """The step / inference counts of one model (plain firmware) and its profile's sums."""
    rng = np.random.default_rng(0)
    npz = workdir / "inputs.npz"
    np.savez(npz, image=rng.integers(-128, 128, (2, *IMAGE), dtype=np.int8),
             label=rng.integers(0, CLASSES, 2).astype(np.int64))
    for name, extra in (("plain", ()), ("profiled", ("--profile",))):
        _tool("qtrain_compile", pkl, "--scheme", scheme, "-o", workdir / name, *extra)
    plain = workdir / "plain" / "firmware.elf"
    step = _tool("qtrain_run", plain, "--inputs", npz, "--steps", "2", "-o", workdir / "step.npz", "--json")
    infer = _tool("qtrain_run", plain, "--entry", "forward", "--inputs", npz, "-o", workdir / "infer.npz", "--json")
    profiled = _tool("qtrain_run", workdir / "profiled" / "firmware.elf", "--inputs", npz, "--steps", "1",
                     "--profile", "-o", workdir / "profiled.npz", "--json")
    assert step is not None and infer is not None and profiled is not None
    profile = profiled["profile"]
    return {
        "step_instructions": int(step["instructions_per_step"][-1]),
        "step_macs": int(step["macs_per_step"]),
        "inference_instructions": int(infer["instructions_per_step"][-1]),
        "inference_macs": int(infer["macs_per_step"]),
        "profile_step_share": profile["train_step"]["ops_total"] / profile["train_step"]["total"],
        "profile_inference_share": profile["forward"]["ops_total"] / profile["forward"]["total"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS,
                        help="folder with the .pkl models and schemes.json (default: ../shared/models/tiny-training)")
    parser.add_argument("--only", choices=MODELS, default=None, help="measure only this model")
    parser.add_argument("--keep", type=Path, default=None, help="keep the builds in this folder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    if not (args.models / "schemes.json").is_file():
        parser.error(f"{args.models} has no schemes.json (give the reference models' folder with --models)")
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-speed-") as tmp:
        root = args.keep or Path(tmp)
        for model in [args.only] if args.only else MODELS:
            workdir = root / model
            workdir.mkdir(parents=True, exist_ok=True)
            print(f"measuring {model} ...", file=sys.stderr)
            rows[model] = measure(args.models / f"{model}.pkl", f"{args.models / 'schemes.json'}#{model}/49kb",
                                  workdir)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'model (49kb)':<16}{'step instr':>13}{'MACs':>12}{'/MAC':>6}{'vs start':>10}{'vs engine':>10}"
          f"{'infer instr':>13}{'MACs':>12}{'/MAC':>6}{'ops/step':>10}{'ops/infer':>10}")
    for model, r in rows.items():
        engine = r["step_instructions"] / REFERENCE_ENGINE[model] if model in REFERENCE_ENGINE else None
        print(f"{model:<16}{r['step_instructions']:>13,}{r['step_macs']:>12,}"
              f"{r['step_instructions'] / r['step_macs']:>6.2f}{r['step_instructions'] / START[model]:>9.3f}x"
              + (f"{engine:>9.3f}x" if engine is not None else f"{'-':>10}")
              + f"{r['inference_instructions']:>13,}{r['inference_macs']:>12,}"
              f"{r['inference_instructions'] / r['inference_macs']:>6.2f}"
              f"{100 * r['profile_step_share']:>9.2f}%{100 * r['profile_inference_share']:>9.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
