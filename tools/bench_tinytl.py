"""TinyTL vs sparse update at equal memory: the comparison MCUNetV3 draws, on the device's numerics.

    python -m qtrain.tools.bench_tinytl --data TASK.npz [--model MODEL] [--searched FILE.json#MODEL/BUDGET]
                                        [--steps 1000] [--seeds 3] [--lr 0.01] [--bias-lr 0.001] [--jobs 2]
                                        [--work DIR] [--json OUT.json] [--only LABEL,...]

Rows: TinyTL-B (`tinytl-b`), TinyTL-L (`tinytl-l`), TinyTL-L+B (`tinytl-l+b`), the MCUNetV3 reference's
49 KB scheme (`schemes.json#MODEL/49kb`, for the reference models) and, with `--searched`, a scheme from
`qtrain-search-scheme` (e.g. `--lite-residual` under a 256 KB budget). Each is compiled by `qtrain-compile`
(the modules calibrated on the task's training images) and:

- memory: the planned peak SRAM (memory.json), and the firmware running 3 steps on QEMU (Cortex-M7,
  mps2-an500) for the measured SRAM (static + painted stack), Flash and instructions per step. A plan
  above the STM32F746's 320 KB does not link for the board; it is measured on a QEMU build whose SRAM
  region is the emulated AN500's full 4 MB instead (marked "lifted": it would not fit the chip);
- accuracy: the host build of the same C (bit-exact with QEMU on the forward pass, DESIGN.md) trains
  `--steps` steps of batch 1 on the training split in a seeded random order (epochs of permutations),
  then classifies the held-out `test_image`s; mean +- s.d. over `--seeds` sample orders (seeds 1000+i).

TASK.npz: `image`, `label`, `test_image`, `test_label`; images int8 NHWC quantized with the model's input
quantization (`qtrain.input_q`), e.g. the project's 128x128 transfer task (examples/transfer/make_task.py).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qtrain.transforms.recipe import FINE_TUNE_RECIPE

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO.parent / "shared" / "models" / "tiny-training"
BOARD_SRAM = 320 * 1024
"""The emulated board's SRAM (the QEMU linker script's region); plans above it are not linked for QEMU."""
LIFTED_LINKER_SCRIPT = """/* bench_tinytl: QEMU mps2-an500 with its full 4 MB memories (measurement only) */
MEMORY
{
    FLASH (rx)  : ORIGIN = 0x00000000, LENGTH = 4096K
    SRAM  (rwx) : ORIGIN = 0x20000000, LENGTH = 4096K
}

INCLUDE sections.ld
"""


def tool(name: str) -> list[str]:
    return [sys.executable, "-m", f"qtrain.tools.{name}"]


def run(cmd: list[object], what: str) -> str:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}")
    return result.stdout


# -- one scheme ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    spec: str
    planned: dict = field(default_factory=dict)
    device: dict | None = None
    accuracies: list[float] = field(default_factory=list)
    before: float | None = None
    host_ns_per_step: float | None = None
    note: str = ""

    def as_json(self) -> dict:
        return {"label": self.label, "scheme": self.spec, "planned": self.planned, "device": self.device,
                "accuracies": self.accuracies, "accuracy_before": self.before,
                "host_ns_per_step": self.host_ns_per_step, "note": self.note}


def compile_scheme(args: argparse.Namespace, row: Row, target: str, folder: Path) -> dict:
    run([*tool("qtrain_compile"), args.model, "--scheme", row.spec, "--target", target, "--sram-kb", "65536",
         "--data", args.data, "--lr", args.lr, "--bias-lr", args.bias_lr, "-o", folder, "--json"],
        f"qtrain-compile {row.spec} ({target})")
    return json.loads((folder / "memory.json").read_text())


def progress(line: str) -> None:
    """One line per finished measurement on stderr: a long run shows where it is, and what it measured
    so far survives an interruption."""
    print(line, file=sys.stderr, flush=True)


def seed_task(task: dict[str, np.ndarray], steps: int, seed: int, path: Path) -> None:
    n = len(task["label"])
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps // n))])[:steps]
    np.savez(path, image=task["image"][order], label=task["label"][order], test_image=task["test_image"],
             test_label=task["test_label"])


def measure(args: argparse.Namespace, row: Row, task: dict[str, np.ndarray]) -> Row:
    work = args.work / row.label.replace(" ", "_").replace("+", "p")
    work.mkdir(parents=True, exist_ok=True)
    row.planned = compile_scheme(args, row, "host", work / "host")
    for key in ("buffers",):
        row.planned.pop(key, None)
    lifted = row.planned["peak_sram_bytes"] > BOARD_SRAM
    if lifted:
        from qtrain.targets.armv7em.build import build_firmware
        from qtrain.targets.armv7em.kernels import sources

        (work / "qemu").mkdir(exist_ok=True)
        script = work / "qemu" / "lifted.ld"
        script.write_text(LIFTED_LINKER_SCRIPT)
        build_firmware([work / "host" / "model.c", *sources()], work / "qemu" / "firmware.elf", "qemu",
                       include_dirs=[work / "host"], linker_script=script)
        row.note = f"plan above the board's {BOARD_SRAM // 1024} KB: measured on QEMU with the SRAM limit lifted"
    else:
        compile_scheme(args, row, "qemu", work / "qemu")
    probe = work / "probe.npz"
    np.savez(probe, image=task["image"][:3], label=task["label"][:3])
    report = json.loads(run([*tool("qtrain_run"), work / "qemu" / "firmware.elf", "--inputs", probe, "--steps", "3",
                             "--json", "--quiet", "--timeout", "7200"], f"qtrain-run {row.spec} (QEMU)"))
    row.device = {"sram_bytes": report["sram_bytes"], "stack_bytes": report["stack_bytes"],
                  "flash_bytes": report["flash_bytes"],
                  "instructions_per_step": float(np.mean(report["instructions_per_step"])),
                  "macs_per_step": report["macs_per_step"], "lifted": lifted}
    progress(f"{row.label}: planned {row.planned['peak_sram_bytes']} B, QEMU {row.device}")
    for s in range(args.seeds):
        data = work / f"seed{s}.npz"
        seed_task(task, args.steps, 1000 + s, data)
        report = json.loads(run([*tool("qtrain_run"), work / "host" / "firmware", "--inputs", data, "--eval", "same",
                                 "--steps", str(args.steps), "--json", "--quiet"], f"training {row.spec} seed {s}"))
        row.accuracies.append(float(report["eval_accuracy_after"]))
        progress(f"{row.label} seed {s}: test accuracy {report['eval_accuracy_after']:.4f} "
                 f"(before {report['eval_accuracy_before']:.4f})")
        row.before = float(report["eval_accuracy_before"])
        ns = report.get("host_ns_per_step")
        if ns is not None:
            row.host_ns_per_step = float(np.mean(ns))
        data.unlink()
    return row


def table(rows: list[Row], args: argparse.Namespace, n_train: int, n_test: int) -> str:
    kb = lambda b: f"{b / 1024:.1f}"  # noqa: E731
    lines = [
        f"{args.model.name} on {args.data.name}: {n_train} training / {n_test} test images, {args.steps} steps of "
        f"batch 1 (lr {args.lr:g}, bias lr {args.bias_lr:g}), test accuracy mean +- s.d. over {args.seeds} "
        "sample orders (host build of the firmware's C)",
        f"{'scheme':<24} {'planned KB':>10} {'QEMU SRAM KB':>12} {'Flash KB':>9} {'M instr/step':>12} "
        f"{'trainable KB':>12} {'test acc %':>10} {'s.d.':>5}   (*: above the STM32F746, QEMU limit lifted)",
    ]
    for r in sorted(rows, key=lambda r: r.planned.get("peak_sram_bytes", 0)):
        d = r.device or {}
        lines.append(
            f"{r.label:<24} {kb(r.planned['peak_sram_bytes']):>10} "
            f"{(kb(d['sram_bytes']) + ('*' if d.get('lifted') else '')) if d else '-':>12} "
            f"{kb(d['flash_bytes']) if d else '-':>9} "
            f"{d['instructions_per_step'] / 1e6 if d else float('nan'):>12.2f} {kb(r.planned['trainable_bytes']):>12} "
            f"{100 * np.mean(r.accuracies):>10.1f} {100 * np.std(r.accuracies):>5.1f}")
    before = next((r.before for r in rows if r.before is not None), None)
    if before is not None:
        lines.append(f"(before fine-tuning: {100 * before:.1f}% test accuracy)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=MODELS / "mcunet-5fps.pkl", help="(mcunet-5fps.pkl)")
    parser.add_argument("--data", type=Path, help="the task npz (module docstring)")
    parser.add_argument("--searched", action="append", default=[], metavar="FILE.json#MODEL/BUDGET",
                        help="a searched scheme to compare (repeatable)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps per run (1000)")
    parser.add_argument("--seeds", type=int, default=3, help="sample orders per scheme (3)")
    parser.add_argument("--lr", type=float, default=FINE_TUNE_RECIPE.lr)
    parser.add_argument("--bias-lr", type=float, default=FINE_TUNE_RECIPE.bias_lr)
    parser.add_argument("--jobs", type=int, default=2, help="schemes measured in parallel (2)")
    parser.add_argument("--work", type=Path, default=Path("bench_tinytl"), help="build folder (bench_tinytl/)")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    parser.add_argument("--only", metavar="LABEL,...",
                        help="measure only these rows (labels as in the table, e.g. 'TinyTL-L+B,MCUNetV3 49kb')")
    args = parser.parse_args(argv)
    if args.data is None:
        parser.error("--data TASK.npz is needed")
    with np.load(args.data) as npz:
        task = {k: npz[k] for k in ("image", "label", "test_image", "test_label")}
    rows = [Row("TinyTL-B", "tinytl-b"), Row("TinyTL-L", "tinytl-l"), Row("TinyTL-L+B", "tinytl-l+b")]
    schemes = MODELS / "schemes.json"
    stem = args.model.stem
    if schemes.is_file() and stem in json.loads(schemes.read_text()):
        rows.append(Row("MCUNetV3 49kb", f"{schemes}#{stem}/49kb"))
    # named by file and budget: two searches at one budget (with and without modules) are two rows
    rows += [Row(f"searched {Path(spec.split('#')[0]).stem} {spec.rsplit('/', 1)[-1]}", spec)
             for spec in args.searched]
    if args.only is not None:
        wanted = {label.strip() for label in args.only.split(",")}
        unknown = wanted - {r.label for r in rows}
        if unknown:
            parser.error(f"--only: no row {sorted(unknown)} (rows: {', '.join(r.label for r in rows)})")
        rows = [r for r in rows if r.label in wanted]
    args.work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda r: measure(args, r, task), rows))
    print(table(rows, args, len(task["label"]), len(task["test_label"])))
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "data": str(args.data), "steps": args.steps,
                                         "seeds": args.seeds, "lr": args.lr, "bias_lr": args.bias_lr,
                                         "rows": [r.as_json() for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
