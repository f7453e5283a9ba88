"""Every board, two models: does it fit, does the device agree with the golden model, what does a step cost.

    python -m qtrain.tools.bench_targets [--targets qemu,qemu-m4,qemu-m33,nucleo-f446re] [--models digits,mcunet]
                                         [--images 2] [--steps 3] [--json OUT.json]

Models: the digits CNN of the demo (examples/digits, imported with our PTQ; every tensor trained, with
the demo's learning rates, on the task's own images: on random images its losses explode within two
steps and the contract's rounding allowance no longer applies) and mcunet-5fps with the reference's
49 KB scheme on random images (../shared/models/tiny-training; skipped when absent).
Each is compiled with `qtrain.compile` for each target with the target's default budget. On a QEMU
target the firmware then runs --images random images forward and --steps training steps, and the
results are held to DESIGN.md's agreement contract against the numpy interpreter on the planned IR:
int8 forward outputs bit for bit; the loss within 1e-4 relative; int8/int32 parameters after the steps
equal except for at most 0.1% one-unit flips; fp32 master copies within 1e-4 relative. The table gives,
per target and model: whether it fits (the plan within the budget, the firmware within the board's
Flash and SRAM; a board that runs only on hardware is linked, not run), SRAM measured on the device
(static + painted stack) against the board's SRAM, Flash against the board's Flash, instructions per
training step and per MAC, and the agreement verdict. Real boards (nucleo-f446re) are linked only.

This is the heavy part of the new targets' agreement checks; the test suite runs the small models on
every QEMU target (test_qtrain_compile.py) and mcunet-5fps on the Cortex-M7 only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO.parent / "shared" / "models" / "tiny-training"
MODELS = {"digits": "full", "mcunet": "schemes.json#mcunet-5fps/49kb"}


def agreement_problems(reference: dict[str, np.ndarray], device: dict[str, np.ndarray]) -> list[str]:
    """DESIGN.md's agreement contract for a training run: what is violated (empty: it holds)."""
    problems: list[str] = []
    loss_err = float(np.abs(device["loss"] / reference["loss"] - 1).max())
    if loss_err > 1e-4:
        problems.append(f"loss differs by {loss_err:.2e} relative")
    flips = elements = 0
    for key in (k for k in reference if k.startswith("param/")):
        ref, dev = reference[key], device.get(key)
        if dev is None or ref.dtype != dev.dtype or ref.shape != dev.shape:
            problems.append(f"{key}: missing or of another type")
        elif ref.dtype == np.float32:
            scale = max(float(np.abs(ref).max()), 1e-6)
            if float(np.abs(ref - dev).max()) / scale > 1e-4:
                problems.append(f"{key}: fp32 master differs by more than 1e-4 relative")
        else:
            diff = np.abs(ref.astype(np.int64) - dev.astype(np.int64))
            if diff.max() > 1:
                problems.append(f"{key}: differs by up to {diff.max()} units")
            flips += int((diff > 0).sum())
            elements += diff.size
    if elements and flips > 1e-3 * elements:
        problems.append(f"{flips} of {elements} int8/int32 elements differ (more than 0.1%)")
    return problems


def model_source(name: str, work: Path, n: int) -> tuple[Path, dict[str, np.ndarray]] | None:
    """The model file and n training images with labels (the digits task's, or random for mcunet)."""
    if name == "digits":
        sys.path.insert(0, str(REPO / "examples" / "digits"))
        try:
            import make_task  # type: ignore[import-not-found]
        finally:
            sys.path.pop(0)
        module = make_task.import_model()
        path = work / "digits.mlir"
        path.write_text(str(module) + "\n")
        task = make_task.build_task(module)
        return path, {"image": task["image"][:n], "label": task["label"][:n]}
    path = MODELS_DIR / "mcunet-5fps.pkl"
    if not path.is_file():
        return None
    rng = np.random.default_rng(0)
    return path, {"image": rng.integers(-128, 128, (n, 128, 128, 3), dtype=np.int8), "label": rng.integers(0, 10, n)}


def bench_one(model: Path, scheme: str, task: dict[str, np.ndarray], target: str, out: Path, lr: dict[str, float],
              steps: int) -> dict[str, Any]:
    from xdsl.utils.exceptions import PassFailedException

    import qtrain
    from qtrain.errors import UserError
    from qtrain.interpreter import load_module, run_forward, run_train_steps
    from qtrain.targets.armv7em import build as boards

    row: dict[str, Any] = {"target": target, "budget_kb": boards.default_budget_kb(target)}
    board = boards.BOARDS[target]
    row.update(sram_limit=board.sram_bytes, flash_limit=board.flash_bytes)
    started = time.monotonic()
    try:
        build = qtrain.compile(model, scheme=scheme, target=target, output=out, **lr)
    except (UserError, PassFailedException) as e:  # a firmware too large, or a plan over the budget
        row.update(fits=False, why=str(e).splitlines()[0])
        return row
    row.update(fits=True, planned=build.peak_sram_bytes, flash=build.flash_bytes,
               elf_sram=build.static_sram_bytes_in_elf, compile_s=round(time.monotonic() - started, 1))
    if not board.emulated:
        return row
    module = load_module(build.model_mlir)
    forward = build.run({"image": task["image"]})
    reference_q, _ = run_forward(module, task["image"])
    forward_ok = bool(np.array_equal(forward.arrays["output_q"], reference_q))
    train = build.run(task, steps=steps)
    loss, params = run_train_steps(load_module(build.model_mlir), task["image"], task["label"], steps)
    problems = agreement_problems({"loss": loss, **{f"param/{k}": v for k, v in params.items()}}, train.arrays)
    instructions = float(np.mean(train.instructions_per_step))  # type: ignore[arg-type]
    row.update(forward_bit_exact=forward_ok, train_agrees=not problems, problems=problems,
               sram=train.sram_bytes, stack=train.stack_bytes, flash=train.flash_bytes,
               instructions_per_step=instructions, macs_per_step=train.macs_per_step,
               instructions_per_mac=instructions / train.macs_per_step)
    return row


def main(argv: list[str] | None = None) -> None:
    from qtrain.targets.armv7em import build as boards
    from qtrain.transforms.recipe import FINE_TUNE_RECIPE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="qemu,qemu-m4,qemu-m33,nucleo-f446re")
    parser.add_argument("--models", default="digits,mcunet")
    parser.add_argument("--images", type=int, default=2, help="images compared forward and trained on (2)")
    parser.add_argument("--steps", type=int, default=3, help="training steps compared (3)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    targets = args.targets.split(",")
    unknown = [t for t in targets if t not in boards.BOARDS]
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)} (boards: {', '.join(boards.BOARDS)})")
    rows: list[dict[str, Any]] = []
    kb = lambda n: "-" if n is None else f"{n / 1024:.1f}"  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-targets-") as tmp:
        for name in args.models.split(","):
            scheme = MODELS[name]
            source = model_source(name, Path(tmp), args.images)
            if source is None:
                print(f"{name}: skipped ({MODELS_DIR} is absent)")
                continue
            model, task = source
            scheme = scheme if name == "digits" else f"{MODELS_DIR / scheme}"
            lr = {"lr": FINE_TUNE_RECIPE.lr, "bias_lr": FINE_TUNE_RECIPE.bias_lr} if name == "digits" else {}
            print(f"\n{name} ({scheme.split('/')[-1]}): forward {args.images} images, {args.steps} training steps "
                  f"against the interpreter")
            print(f"{'target':<15}{'fits':<6}{'SRAM KB (limit)':>17}{'Flash KB (limit)':>18}{'M instr/step':>14}"
                  f"{'instr/MAC':>11}  agreement")
            for target in targets:
                row = bench_one(model, scheme, task, target, Path(tmp) / f"{name}-{target}", lr, args.steps)
                row["model"] = name
                rows.append(row)
                if not row["fits"]:
                    print(f"{target:<15}{'no':<6}  {row['why']}")
                    continue
                sram = row.get("sram") or row.get("elf_sram")
                agreement = "linked (runs on the board)" if "train_agrees" not in row else (
                    "holds" if row["forward_bit_exact"] and row["train_agrees"] else
                    f"VIOLATED: forward bit-exact {row['forward_bit_exact']}; {'; '.join(row['problems'])}")
                instr = row.get("instructions_per_step")
                print(f"{target:<15}{'yes':<6}{kb(sram) + ' (' + kb(row['sram_limit']) + ')':>17}"
                      f"{kb(row['flash']) + ' (' + kb(row['flash_limit']) + ')':>18}"
                      f"{'-' if instr is None else f'{instr / 1e6:.2f}':>14}"
                      f"{'-' if instr is None else format(row['instructions_per_mac'], '.2f'):>11}  {agreement}")
    print("\nSRAM: measured on the device (planned static + painted stack) on QEMU, the ELF's sections (with the "
          "16 KB reserved stack) on a board;\nFlash: the firmware's Flash sections; limits: the board's "
          "(targets/armv7em/build.py BOARDS).")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
