"""The sweep the recipe's defaults are chosen by: learning rates x models x data orders, on the device's numerics.

    python -m qtrain.tools.sweep_recipe [--models mcunet-5fps,mbv2-w0.35,proxyless-w0.3,digits]
                                        [--grid 0.01/0.001,0.02/0.002,0.05/0.005,0.05/0.05] [--orders 1,2]
                                        [--steps 1000] [--eval-every 100] [--jobs 2] [--json OUT.json]

Each (model, lr / bias lr, order) is compiled for the host (`qtrain-compile --target host`: the generated
C, bit-exact with QEMU) with the recipe's schedule (warm-up, cosine horizon = `--steps`) and trained with
`qtrain-run --eval same --steps S --eval-every K`, as a user would. The paper's models use their 49kb
schemes on examples/transfer/make_task.py's 128x128 task; `digits` is the project's digits CNN with
last-k=3 (bench_accuracy's scheme) on examples/digits/make_task.py's task. Order k reorders the train
split with seed k (make_task.py `--order`).

Printed per (model, setting): final held-out accuracy mean +- s.d. over the orders, the best evaluation,
the largest drop of a second-half evaluation below the best ("drop"), and "diverged" when the final
accuracy is at chance (<= 1.5 / classes). Needs clang (the host build) and ../shared's models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models" / "tiny-training"
REFERENCE = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")


def _load_script(path: Path, name: str):  # noqa: ANN202 (an example script as a module)
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare(model: str, order: int, work: Path) -> tuple[Path, Path, str]:
    """(model file, task npz, scheme spec) of one sweep row, written into `work`."""
    task = work / f"{model}-order{order}.npz"
    if model == "digits":
        maker = _load_script(ROOT / "examples" / "digits" / "make_task.py", "digits_make_task")
        module_path = work / "digits.mlir"
        if not module_path.exists():
            module_path.write_text(str(maker.import_model()))
        from qtrain.dialects import load_module

        arrays = maker.build_task(load_module(module_path))
        if order:
            perm = np.random.default_rng(1000 + order).permutation(len(arrays["label"]))
            arrays["image"], arrays["label"] = arrays["image"][perm], arrays["label"][perm]
        np.savez(task, **arrays)
        return module_path, task, "last-k=3"
    maker = _load_script(ROOT / "examples" / "transfer" / "make_task.py", "transfer_make_task")
    pkl = MODELS / f"{model}.pkl"
    scale, zp = maker.model_input_q(pkl)
    np.savez(task, **maker.build_task(scale, zp, 128, order))
    return pkl, task, f"{MODELS / 'schemes.json'}#{model}/49kb"


def run_one(model_path: Path, task: Path, scheme: str, lr: float, bias_lr: float, steps: int, every: int,
            build: Path) -> list[float]:
    """The held-out accuracy curve of one compiled-and-trained run."""
    subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_compile", str(model_path), "--scheme", scheme,
                    "--target", "host", "--lr", str(lr), "--bias-lr", str(bias_lr), "--steps", str(steps),
                    "--sram-kb", "1024", "-o", str(build)], check=True, capture_output=True, text=True)
    out = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_run", str(build / "firmware"), "--inputs",
                          str(task), "--eval", "same", "--steps", str(steps), "--eval-every", str(every), "--json",
                          "--quiet"], check=True, capture_output=True, text=True)
    return [acc for _, acc in json.loads(out.stdout)["eval_accuracy_curve"]]


def summarise(curves: list[list[float]], classes: int = 10) -> dict[str, float]:
    finals = [c[-1] for c in curves]
    drops = [max(c) - min(c[len(c) // 2:]) for c in curves]
    return {"mean": float(np.mean(finals)), "sd": float(np.std(finals)), "best": float(max(max(c) for c in curves)),
            "drop": float(max(drops)), "diverged": bool(min(finals) <= 1.5 / classes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join((*REFERENCE, "digits")))
    parser.add_argument("--grid", default="0.01/0.001,0.02/0.002,0.05/0.005,0.05/0.05",
                        help="comma-separated LR/BIAS_LR pairs")
    parser.add_argument("--orders", default="1,2")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    grid = [tuple(float(x) for x in pair.split("/")) for pair in args.grid.split(",")]
    orders = [int(o) for o in args.orders.split(",")]
    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="qtrain-sweep-") as tmp:
        work = Path(tmp)
        prepared = {(m, o): prepare(m, o, work) for m in models for o in orders}
        jobs = [(m, lr, blr, o) for m in models for lr, blr in grid for o in orders]

        def job(j: tuple[str, float, float, int]) -> list[float]:
            m, lr, blr, o = j
            path, task, scheme = prepared[(m, o)]
            return run_one(path, task, scheme, lr, blr, args.steps, args.eval_every,
                           work / f"b-{m}-{lr}-{blr}-{o}")

        curves: dict[tuple[str, float, float, int], list[float]] = {}
        with ThreadPoolExecutor(args.jobs) as pool:
            for j, curve in zip(jobs, pool.map(job, jobs), strict=True):
                curves[j] = curve  # each run as it ends, so a long sweep shows its progress
                print(f"  {j[0]} lr {j[1]:g}/{j[2]:g} order {j[3]}: " + " ".join(f"{100 * a:.1f}" for a in curve),
                      flush=True)
    rows = []
    print(f"{'model':16} {'lr/bias lr':>13}  final acc %      best   drop  (orders {args.orders}, {args.steps} steps)")
    for m in models:
        for lr, blr in grid:
            s = summarise([curves[(m, lr, blr, o)] for o in orders])
            rows.append({"model": m, "lr": lr, "bias_lr": blr, **s,
                         "curves": [curves[(m, lr, blr, o)] for o in orders]})
            print(f"{m:16} {f'{lr:g}/{blr:g}':>13}  {100 * s['mean']:5.1f} +- {100 * s['sd']:4.1f}  "
                  f"{100 * s['best']:6.1f} {100 * s['drop']:6.1f}{'  diverged' if s['diverged'] else ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
