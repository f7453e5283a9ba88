"""The import table of torchvision's mobile CNNs: every model, exporter and form imports; QOperator (and QDQ)
forward against onnxruntime; our PTQ's top-1 agreement with onnxruntime's float model against onnxruntime's
own static quantization's; bias-only training of the host build against the interpreter.

    .venv-torch/bin/python examples/torchvision/export_models.py -o out/torchvision     # torch needed here only
    python -m qtrain.tools.bench_imports out/torchvision [--images 100] [--exact-images 5] [--steps 3]
                                         [--models M ...] [--exporters legacy dynamo] [--no-train] [--json F]
                                         [--eval task|heldout]

Reads what export_models.py wrote (DIR/MODEL/{legacy,dynamo}{,.qdq,.qop}.onnx, DIR/calibration.npz,
DIR/task.npz, and with `--eval heldout` DIR/heldout.npz). The held-out images of the columns below are the
task's (inverted-contrast digits, `test_image`; the default) or, with `--eval heldout`, the held-out
upright digits: the distribution the calibration images come from and a pre-trained model
(`export_models.py --pretrain-epochs N`) learned. Columns:

- import: the float model (our PTQ, calibrated on calibration.npz), the QDQ and the QOperator model import;
- qop exact / qdq exact: of the first --exact-images held-out task images, how many give onnxruntime's
  logits bit for bit (compared as int8 codes; where onnxruntime's quantizer left the model's last op in
  float, its float output rounded to our output grid); qdq max: the largest difference in output
  quantization steps;
- float acc: the float model's top-1 accuracy (onnxruntime) on the --images held-out images;
- top-1 agree: on --images held-out images, how often the argmax equals onnxruntime's float model's,
  for our int8 import of the float model (ours), and for onnxruntime running its own static quantization
  of it (ort qop, ort qdq; per-channel int8 weights, int8 activations, the same calibration images);
- rms: the same three int8 models' logit error against the float model's logits (RMS over those images,
  divided by the float logits' standard deviation);
- train: the float import compiled for the host with the bias-only scheme; the interpreter and the host
  build run --steps training steps on task images and must agree (DESIGN.md's allowance: losses within
  1e-4 relative, int32 biases off by at most one unit on at most 0.1% of elements).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from qtrain.frontends.onnx.oracle import exact_session
from qtrain.tools.plumbing import UsageError, run_tool

MODELS = ("mobilenet_v3_small", "efficientnet_b0", "mnasnet0_5", "shufflenet_v2_x0_5", "squeezenet1_1", "resnet18")
EXPORTERS = ("legacy", "dynamo")


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = exact_session(path)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def training_agreement(module_text: str, images: np.ndarray, labels: np.ndarray, steps: int, work: Path) -> str:
    """'agree' or what differs, for `steps` bias-only training steps on the host build vs the interpreter."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "model.mlir").write_text(module_text)
    np.savez(work / "inputs.npz", image=images, label=labels)

    def tool(name: str, *args: str) -> None:
        result = subprocess.run([sys.executable, "-m", f"qtrain.tools.{name}", *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{name}: {result.stderr.strip().splitlines()[-1] if result.stderr else 'failed'}")

    tool("qtrain_compile", str(work / "model.mlir"), "--scheme", "bias-only", "--target", "host", "--sram-kb",
         "65536", "-o", str(work / "build"))
    tool("qtrain_interpret", str(work / "build" / "model.mlir"), "--entry", "train_step", "--steps", str(steps),
         "--inputs", str(work / "inputs.npz"), "-o", str(work / "ref.npz"))
    tool("qtrain_run", str(work / "build" / "firmware"), "--entry", "train_step", "--steps", str(steps),
         "--inputs", str(work / "inputs.npz"), "-o", str(work / "dev.npz"))
    ref, dev = dict(np.load(work / "ref.npz")), dict(np.load(work / "dev.npz"))
    problems = []
    loss_err = float(np.abs(dev["loss"] / ref["loss"] - 1).max())
    if loss_err > 1e-4:
        problems.append(f"loss {loss_err:.1e}")
    flips = elements = 0
    for key in (k for k in ref if k.startswith("param/")):
        diff = np.abs(ref[key].astype(np.int64) - dev[key].astype(np.int64))
        if diff.max(initial=0) > 1:
            problems.append(f"{key} off by {diff.max()}")
        flips += int((diff > 0).sum())
        elements += diff.size
    if elements and flips > 1e-3 * elements:
        problems.append(f"{flips}/{elements} flips")
    return "; ".join(problems) or f"agree ({elements} biases, loss {float(ref['loss'][-1]):.3f})"


def measure(folder: Path, exporter: str, calibration: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
            args: argparse.Namespace, eval_x: np.ndarray, eval_y: np.ndarray) -> dict[str, Any]:
    from qtrain.frontends.onnx import import_onnx, quantize_images
    from qtrain.interpreter import run_forward

    row: dict[str, Any] = {"model": folder.name, "exporter": exporter}
    paths = {form: folder / f"{exporter}{suffix}.onnx" for form, suffix in (("float", ""), ("qdq", ".qdq"),
                                                                            ("qop", ".qop"))}
    modules = {}
    for form, path in paths.items():
        start = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            modules[form] = import_onnx(path, calibration if form == "float" else None)
        row[f"import_{form}_s"] = round(time.time() - start, 1)
    exact = test_x[:args.exact_images]
    for form in ("qop", "qdq"):
        ref = ort_logits(paths[form], exact)
        _, got = run_forward(modules[form], quantize_images(exact, modules[form]))
        scale = float(modules[form].body.block.ops.last.attributes["qtrain.output_q"].scale)  # type: ignore
        # Compared as codes on the output grid: the same thing as bit for bit when onnxruntime's output is a
        # DequantizeLinear; where its quantizer left the tail in float (the dynamo SqueezeNet's final mean),
        # its float output rounded to the grid.
        same = np.round(ref / scale) == np.round(got / scale)
        row[f"{form}_exact"] = int(sum(bool(same[i].all()) for i in range(len(exact))))
        row[f"{form}_max_steps"] = round(float(np.abs(ref - got).max()) / scale, 2)
    x = eval_x[:args.images]
    float_logits = ort_logits(paths["float"], x)
    reference = float_logits.argmax(1)
    row["images"] = len(x)
    row["acc_float"] = float(np.mean(reference == eval_y[:args.images]))
    _, ours = run_forward(modules["float"], quantize_images(x, modules["float"]))
    row["agree_ours"] = float(np.mean(ours.argmax(1) == reference))
    # The logits' RMS error against the float model, relative to their spread: with random weights the
    # top-2 gap is often below int8 noise, so this says more than the argmax agreement on few images.
    spread = float(float_logits.std())
    row["rms_ours"] = float(np.sqrt(np.mean((ours - float_logits) ** 2))) / spread
    for form in ("qop", "qdq"):
        logits = ort_logits(paths[form], x)
        row[f"agree_ort_{form}"] = float(np.mean(logits.argmax(1) == reference))
        row[f"rms_ort_{form}"] = float(np.sqrt(np.mean((logits - float_logits) ** 2))) / spread
    if not args.no_train:
        images = quantize_images(test_x[:args.steps], modules["float"])
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row["train"] = training_agreement(str(modules["float"]) + "\n", images, test_y[:args.steps],
                                                  args.steps, Path(tmp))
            except RuntimeError as e:
                row["train"] = f"failed: {e}"
    return row


def print_row(row: dict[str, Any], args: argparse.Namespace) -> None:
    imports = "/".join(f"{row[f'import_{f}_s']:.0f}s" for f in ("float", "qdq", "qop"))
    print(f"{row['model']:<19} {row['exporter']:<7} {imports:>13} {row['qop_exact']:>3}/{args.exact_images:<2} "
          f"{row['qdq_exact']:>3}/{args.exact_images:<2} {row['qdq_max_steps']:>7.2f} "
          f"{100 * row['acc_float']:>5.1f} "
          f"{100 * row['agree_ours']:>6.1f} {100 * row['agree_ort_qop']:>7.1f} {100 * row['agree_ort_qdq']:>7.1f} "
          f"{row['rms_ours']:>6.3f} {row['rms_ort_qop']:>7.3f} {row['rms_ort_qdq']:>7.3f}  "
          f"{row.get('train', '-')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="what examples/torchvision/export_models.py wrote")
    parser.add_argument("--images", type=int, default=100, help="held-out images for top-1 agreement (default 100)")
    parser.add_argument("--exact-images", type=int, default=5, help="images for the bit-exactness check (default 5)")
    parser.add_argument("--steps", type=int, default=3, help="training steps compared (default 3)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--exporters", nargs="+", choices=EXPORTERS, default=list(EXPORTERS))
    parser.add_argument("--no-train", action="store_true", help="skip the host-build training comparison")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--eval", choices=("task", "heldout"), default="task",
                        help="images for accuracy and agreement: the task's held-out (inverted) images or the "
                             "held-out upright digits of DIR/heldout.npz (default task)")
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("calibration.npz", "task.npz", *(("heldout.npz",) if args.eval == "heldout" else ())):
        if not (args.folder / name).is_file():
            raise UsageError(f"{args.folder}: no {name} (run examples/torchvision/export_models.py -o {args.folder})")
    calibration = np.load(args.folder / "calibration.npz")["image"]
    task = np.load(args.folder / "task.npz")
    test_x, test_y = task["test_image"], task["test_label"]
    if args.eval == "heldout":
        heldout = np.load(args.folder / "heldout.npz")
        eval_x, eval_y = heldout["image"], heldout["label"]
    else:
        eval_x, eval_y = test_x, test_y
    print(f"{'model':<19} {'export':<7} {'import f/qdq/qop':>13} {'qop':>6} {'qdq':>6} {'qdq max':>7} "
          f"{'float acc %':>5} {'top-1 agree %: ours':>6} {'ort qop':>7} {'ort qdq':>7} "
          f"{'rms: ours':>6} {'ort qop':>7} {'ort qdq':>7}  train (bias-only, host vs interpreter)")
    rows = []
    for model in args.models:
        for exporter in args.exporters:
            if not (args.folder / model / f"{exporter}.onnx").is_file():
                raise UsageError(f"{args.folder / model / f'{exporter}.onnx'} is missing")
            rows.append(measure(args.folder / model, exporter, calibration, test_x, test_y, args, eval_x, eval_y))
            print_row(rows[-1], args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_tool("bench_imports", lambda: main(sys.argv[1:]), sys.argv[1:])
