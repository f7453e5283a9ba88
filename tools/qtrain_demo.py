"""`qtrain-demo`: the main job, end to end, with the tools a user would run.

    qtrain-demo [-o demo/] [--budget-kb 24] [--steps 2000] [--eval-every 250] [--target qemu|qemu-m4|qemu-m33]
                [--model MODEL.onnx|.pkl|.mlir --data TASK.npz [--calibration CAL.npz]] [--fresh-analysis]
                [--scheme SCHEME | --lite-residual]

1. the task: by default the project's downstream task (examples/digits/make_task.py): a float CNN
   pre-trained on scikit-learn's digits, imported and quantized by our PTQ, now seeing digits through a
   "new sensor" with inverted contrast; or your model (--model) and data (--data: npz with `image`,
   `label`, `test_image`, `test_label`, images int8 NHWC quantized with the model's input parameters);
2. qtrain-search-scheme: contribution analysis + evolutionary search for a sparse-update scheme under
   --budget-kb (for the digits task the fine-tuning runs of the analysis are read from the cache
   examples/digits/contributions.json, made by the same command; --fresh-analysis redoes them;
   --lite-residual makes TinyTL's lite residual modules candidates too); or, with --scheme, no search:
   that scheme (e.g. tinytl-b, tinytl-l, tinytl-l+b, bias-only, FILE.json#MODEL/BUDGET);
3. qtrain-compile for the emulated device (--target: qemu, the Cortex-M7 on qemu-system-arm -M mps2-an500;
   qemu-m4, the Cortex-M4F on mps2-an386; qemu-m33, the Cortex-M33 on mps2-an505), planned within
   --budget-kb (a given --scheme: within the target's budget);
4. qtrain-run: accuracy on the held-out split before, during and after on-device fine-tuning, with a
   progress bar;
5. qtrain-export: the fine-tuned network out of the device as QOperator ONNX (finetuned.onnx), checked
   against the device: onnxruntime's output_q on the held-out split equals the device's, image by image,
   and so does the accuracy (needs onnxruntime; skipped with a note without it);
6. a summary (accuracy before/after, loss curve, peak SRAM, Flash, instructions per step) and two PNGs:
   training.png (loss and held-out accuracy) and memory_plan.png (the SRAM plan over the training step;
   build/memory.html has it with a tooltip per buffer and a table).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from qtrain.errors import UserError
from qtrain.targets.armv7em.build import BOARDS, QEMU_TARGETS
from qtrain.tools.plumbing import (
    ArgumentParser,
    CheckFailed,
    NpzError,
    UsageError,
    number,
    read_npz,
    run_tool,
    same_file,
)
from qtrain.tools.qtrain_search_scheme import BUDGET_KB
from qtrain.transforms.recipe import FINE_TUNE_RECIPE

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
# what the contribution analysis measured with (lr, bias lr and schedule: FINE_TUNE_RECIPE's constant rate)
LR, BIAS_LR = FINE_TUNE_RECIPE.lr, FINE_TUNE_RECIPE.bias_lr


class DemoError(CheckFailed):
    """A step failed; the message says which and why."""


def step(n: int, text: str) -> None:
    print(f"\n[{n}/6] {text}", flush=True)


def run(cmd: list[str], what: str, capture: bool = False) -> str:
    """Runs a tool; its stderr (progress, messages) goes to the terminal. Returns stdout if captured."""
    shown = " ".join(str(c) for c in cmd).replace(sys.executable, "python")
    print(f"  $ {shown}", flush=True)
    result = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE if capture else None, text=True)
    if result.returncode != 0:
        raise DemoError(f"{what} failed (exit {result.returncode}); see the messages above")
    return result.stdout if capture else ""


def tool(module: str) -> list[str]:
    return [sys.executable, "-m", f"qtrain.tools.{module}"]


def sparkline(values: np.ndarray, width: int = 60) -> str:
    bars = "▁▂▃▄▅▆▇█"
    chunks = np.array_split(np.asarray(values, dtype=np.float64), min(width, len(values)))
    means = np.array([c.mean() for c in chunks])
    lo, hi = means.min(), means.max()
    scale = (means - lo) / (hi - lo) if hi > lo else np.zeros_like(means)
    return "".join(bars[int(round(s * (len(bars) - 1)))] for s in scale)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(values)))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def quantize_task(model: Path, arrays: dict[str, np.ndarray], calibration: Path | None, out: Path) -> Path:
    """Float NCHW task images -> int8 NHWC with the model's input quantization (what the device takes)."""
    from qtrain.frontends.onnx import input_quant, quantize_images
    from qtrain.tools.qtrain_compile import load_any

    module = load_any(model, 10, calibration)
    q = input_quant(module)
    for key in ("image", "test_image"):
        if arrays[key].dtype == np.int8:
            raise UserError("the task's image and test_image must both be float NCHW or both int8 NHWC")
        arrays[key] = quantize_images(arrays[key], q)
    arrays["input_q"] = np.array([q.scale, q.zp], dtype=np.float64)
    np.savez(out, **arrays)
    print(f"  quantized the float NCHW images with the model's input parameters (scale {q.scale:.6g}, "
          f"zero point {q.zp}) into {out}")
    return out


def export_and_check(out: Path, data: Path) -> str:
    """qtrain-export --verify, then the held-out accuracy of the exported model under onnxruntime; the
    summary line (also written to export.json)."""
    model = out / "finetuned.onnx"
    run([*tool("qtrain_export"), out / "build", "--params", out / "result.npz", "-o", model], "exporting")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return f"exported {model} (onnxruntime is not installed: not checked against the device)"
    from qtrain.tools.qtrain_export import onnx_output_q

    with np.load(data) as task, np.load(out / "result.npz") as result:
        images, labels, device = task["test_image"], task["test_label"], result["eval_output_q_after"]
    onnx = onnx_output_q(model, images)
    same = int(np.sum(np.all(onnx == device, axis=1)))
    onnx_accuracy = float(np.mean(np.argmax(onnx, axis=1) == labels))
    device_accuracy = float(np.mean(np.argmax(device, axis=1) == labels))
    (out / "export.json").write_text(json.dumps({
        "onnx": str(model), "images": len(images), "output_q_identical": same,
        "onnx_accuracy": onnx_accuracy, "device_accuracy": device_accuracy}, indent=2) + "\n")
    print(f"  onnxruntime on {model.name}: output_q equal to the device's on {same} of {len(images)} held-out images")
    if same != len(images):
        raise DemoError(f"the exported model differs from the device on {len(images) - same} images")
    return (f"exported {model}: onnxruntime gives the device's output_q on all {len(images)} held-out images, "
            f"accuracy {100 * onnx_accuracy:.1f}% (device {100 * device_accuracy:.1f}%)")


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="qtrain-demo", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("demo"), help="output folder (default demo/)")
    parser.add_argument("--budget-kb", type=BUDGET_KB, default=24.0, help="SRAM budget for the scheme search (24)")
    parser.add_argument("--steps", type=number(int, low=1, high=2**32 - 1, what="a number of steps"), default=2000,
                        help="on-device training steps (2000)")
    parser.add_argument("--eval-every", type=number(int, low=1, high=2**32 - 1, what="a number of steps"),
                        default=250, help="held-out evaluation every K steps (250)")
    parser.add_argument("--target", choices=QEMU_TARGETS, default="qemu",
                        help="the emulated device: qemu (Cortex-M7, default), qemu-m4 (Cortex-M4F), qemu-m33")
    parser.add_argument("--model", type=Path, help="your model (.onnx, .pkl or forward-only .mlir)")
    parser.add_argument("--data", type=Path, help="your task npz: image, label, test_image, test_label")
    parser.add_argument("--calibration", type=Path, help="float NCHW images (npz `image`) for an ONNX float model")
    parser.add_argument("--model-name", default=None, help="name of the model in scheme.json")
    parser.add_argument("--fresh-analysis", action="store_true", help="redo the contribution analysis runs")
    parser.add_argument("--analysis-steps", type=number(int, low=1, high=10**9, what="a number of steps"),
                        default=None,
                        help="steps per fine-tuning run of the contribution analysis (default: the search's 2000)")
    parser.add_argument("--jobs", type=number(int, low=1, high=256, what="a number of processes"), default=2,
                        help="parallel fine-tuning runs in the analysis (2)")
    parser.add_argument("--scheme", default=None,
                        help="train this scheme instead of searching one (full, bias-only, last-k=K, tinytl-b, "
                             "tinytl-l, tinytl-l+b, FILE.json#MODEL/BUDGET)")
    parser.add_argument("--lite-residual", action="store_true",
                        help="the search may choose TinyTL lite residual modules too")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    args_list = list(sys.argv[1:] if argv is None else argv)
    run_tool("qtrain-demo", lambda: print(demo(parser.parse_args(args_list))), args_list)


OUTPUTS = ("digits.mlir", "task.npz", "contributions.json", "scheme.json", "build", "result.npz", "result.json",
           "training.png", "memory_plan.png")
"""What the demo writes into its output folder."""


def demo(args: argparse.Namespace) -> str:
    started = time.monotonic()
    out: Path = args.output
    for name in OUTPUTS:
        for source in (args.model, args.data, args.calibration):
            if source is not None and same_file(out / name, source):
                raise UserError(f"the demo would write {out / name} over the input {source}; use another -o folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror or e}") from e
    if (args.model is None) != (args.data is None):
        raise UsageError("--model and --data go together (your model and its task); give both or neither")
    if args.scheme is not None and args.lite_residual:
        raise UsageError("--lite-residual is for the search; with --scheme there is no search")

    # 1. task and model
    if args.model is None:
        step(1, "the task: digits through an inverted-contrast sensor; the pre-trained int8 model")
        model, data = out / "digits.mlir", out / "task.npz"
        run([sys.executable, DIGITS / "make_task.py", "-o", data, "--model-out", model], "building the task")
        name = args.model_name or "digits"
    else:
        step(1, f"the task: {args.data} with {args.model}")
        model, data = args.model, args.data
        if not model.is_file():
            raise UserError(f"no such model file: {model}")
        arrays = read_npz(data, "task")
        missing = [k for k in ("image", "label", "test_image", "test_label") if k not in arrays]
        if missing:
            raise NpzError(f"{data}: missing keys {', '.join(missing)} (need image, label, test_image, test_label)")
        if arrays["image"].dtype != np.int8 or arrays["test_image"].dtype != np.int8:
            data = quantize_task(model, arrays, args.calibration, out / "task.npz")
        name = args.model_name or model.stem
    task = read_npz(data, "task")
    n_train, n_test = len(task["label"]), len(task["test_label"])
    print(f"  {n_train} training images (fine-tuning data), {n_test} held-out test images")

    # 2. scheme search
    if args.scheme is not None:
        step(2, f"the scheme: {args.scheme} (given with --scheme: no search)")
        scheme = args.scheme
    else:
        scheme = search_scheme(args, out, model, data, name)

    # 3. compile
    step(3, "qtrain-compile: autodiff, sparse update, dead-gradient elimination, reorder, memory plan, C, firmware")
    compile_cmd = [*tool("qtrain_compile"), model, "--scheme", scheme, "--lr", str(LR), "--bias-lr", str(BIAS_LR),
                   "--warmup-steps", str(FINE_TUNE_RECIPE.warmup_steps), "--steps", str(FINE_TUNE_RECIPE.steps),
                   "--final-lr-ratio", str(FINE_TUNE_RECIPE.final_lr_ratio),
                   "--momentum", str(FINE_TUNE_RECIPE.momentum), "--target", args.target, "--data", data,
                   "--lifetime-plot", out / "memory_plan.png", "-o", out / "build", "--json"]
    if args.scheme is None:  # the searched scheme's budget; a given scheme gets the target's
        compile_cmd += ["--sram-kb", f"{max(1, int(np.ceil(args.budget_kb)))}"]
    if args.calibration:
        compile_cmd += ["--calibration", args.calibration]
    built = json.loads(run(compile_cmd, "compiling", capture=True))
    return finish(args, out, data, scheme, built, started)


def search_scheme(args: argparse.Namespace, out: Path, model: Path, data: Path, name: str) -> str:
    """Step 2: qtrain-search-scheme under the budget; returns the found scheme's spec."""
    step(2, f"qtrain-search-scheme: the sparse update that helps most within {args.budget_kb:g} KB of SRAM")
    cache = out / "contributions.json"
    shipped = args.model is None and not args.fresh_analysis and (DIGITS / "contributions.json").is_file()
    if shipped:
        shutil.copyfile(DIGITS / "contributions.json", cache)
        print(f"  (contribution-analysis runs from {DIGITS.relative_to(REPO) / 'contributions.json'}; "
              "--fresh-analysis redoes them, about 3 minutes on 2 cores)")
    search = [*tool("qtrain_search_scheme"), model, "--data", data, "--budget-kb", f"{args.budget_kb:g}",
              "-o", out / "scheme.json", "--model-name", name, "--lr", str(LR), "--bias-lr", str(BIAS_LR),
              "--jobs", str(args.jobs), "--cache", cache]
    if shipped:
        # The shipped runs were measured by the golden model; host-engine runs are cached apart (an fp32 sum
        # in another order may differ by a unit), so only the interpreter engine reuses them.
        search += ["--engine", "interpreter"]
    if args.calibration:
        search += ["--calibration", args.calibration]
    if args.analysis_steps:
        search += ["--steps", str(args.analysis_steps)]
    if args.lite_residual:
        search += ["--lite-residual"]
    run(search, "the scheme search")
    key = f"{args.budget_kb:g}kb"
    return f"{out / 'scheme.json'}#{name}/{key}"


def finish(args: argparse.Namespace, out: Path, data: Path, scheme: str, built: dict, started: float) -> str:
    """Steps 4 and 5: the run on the emulated device and the report."""
    # 4. run on the emulated device
    core = BOARDS[args.target].summary.split(":")[1].split(",")[0].strip()
    step(4, f"qtrain-run: fine-tune on the emulated {core} for {args.steps} steps, evaluating the held-out split")
    report = json.loads(run([*tool("qtrain_run"), out / "build" / "firmware.elf", "--inputs", data, "--eval", "same",
                             "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--progress",
                             "-o", out / "result.npz", "--json"], "running on QEMU", capture=True))
    (out / "result.json").write_text(json.dumps(report, indent=2) + "\n")

    # 5. the fine-tuned model out of the device
    step(5, "qtrain-export: the fine-tuned network as ONNX, checked against the device with onnxruntime")
    exported = export_and_check(out, data)

    # 6. report
    step(6, "results")
    with np.load(out / "result.npz") as result:
        loss = result["loss"].astype(np.float64)
        curve = result["eval_accuracy_curve"] if "eval_accuracy_curve" in result else np.zeros((0, 2))
    from qtrain.tools.charts import Panel, write_chart

    steps_axis = np.arange(1, len(loss) + 1)
    smooth = moving_average(loss, 50)
    write_chart(str(out / "training.png"), [
        Panel("training loss on the device (mean of 50 steps)").add("loss", steps_axis, smooth),
        Panel("held-out accuracy % on the device", y_range=(0.0, 100.0)).add(
            "accuracy", curve[:, 0].tolist(), (100 * curve[:, 1]).tolist()),
    ], "training step")
    instr = np.asarray(report["instructions_per_step"], dtype=np.float64)
    macs = report["macs_per_step"]
    before, after = report["eval_accuracy_before"], report["eval_accuracy_after"]
    mhz = BOARDS[args.target].clock_mhz
    kb = lambda n: f"{n / 1024:.1f} KB"  # noqa: E731
    lines = [
        "",
        f"  held-out accuracy on the device: {100 * before:.1f}% before -> {100 * after:.1f}% after "
        f"{args.steps} steps ({100 * (after - before):+.1f} points)",
        "  accuracy curve: " + ", ".join(f"{int(s)}: {100 * a:.1f}%" for s, a in curve),
        f"  loss: {loss[:50].mean():.3f} (first 50 steps) -> {loss[-50:].mean():.3f} (last 50)   {sparkline(smooth)}",
        f"  scheme: {scheme} ({built['trainable_tensors']} trainable tensors)",
        f"  SRAM: {kb(report['sram_bytes'])} in use = planned {kb(built['peak_sram_bytes'])} (arena "
        f"{kb(built['arena_bytes'])} + trainable {kb(built['trainable_bytes'])} + scratch "
        f"{kb(built['scratch_bytes'])}) + stack {report['stack_bytes']} B",
        f"  Flash: {kb(report['flash_bytes'])}",
        f"  {exported}",
        f"  per training step: {instr.mean() / 1e6:.2f} M instructions for {macs / 1e6:.2f} M MACs "
        f"({instr.mean() / macs:.2f} instructions/MAC; {instr.mean() / (mhz * 1e6) * 1e3:.1f} ms at {mhz} MHz "
        f"if 1 IPC)",
        f"  wrote {out / 'training.png'}, {out / 'memory_plan.png'}, {out / 'finetuned.onnx'}, "
        f"{out / 'result.npz'}, {out / 'build'}/ (memory.html: the SRAM plan)",
        f"  total time {time.monotonic() - started:.0f} s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
