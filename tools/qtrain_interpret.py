"""`qtrain-interpret`: run a qtrain module in the numpy golden model.

    qtrain-interpret IN.mlir --entry forward --inputs IN.npz -o OUT.npz
        -> OUT.npz: `logits` float32 [N, K] (dequantized), `output_q` int8 [N, K]; one row per image
    qtrain-interpret IN.mlir --entry train_step --steps S --inputs IN.npz -o OUT.npz
        -> OUT.npz: `loss` float32 [S], `param/<name>` for every trainable parameter after the last step:
           its SRAM copy in the storage dtype (fp32 master for `storage(f32)`, else int8 / int32; for a
           weight with `channels [start, stop]`, just that slice), as the device would hold it
    --relaxed: float-relaxed numerics (every op without its rint, float64; `param/<name>` float64):
           the "fp32 simulation" int8 training is compared against

IN.npz holds `image` (int8 NHWC [N, H, W, C], already quantized with the model's input parameters; a
float entry also takes float NCHW) and `label` (int [N], needed by train_step). Exit status: 0 on
success, 2 on bad input or usage with a one-line message on stderr (`--debug` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from xdsl.interpreter import InterpretationError

from qtrain.interpreter import (
    InputError,
    ModelInterpreter,
    load_module,
    run_forward,
    run_train_steps,
)
from qtrain.numerics import AccumulatorOverflowError
from qtrain.tools.plumbing import (
    ArgumentParser,
    NpzError,
    UsageError,
    check_input_q,
    check_labels,
    check_output,
    labels_int32,
    number,
    read_npz,
    run_tool,
    write_npz,
)

PROG = "qtrain-interpret"
TRAIN_ENTRY = "train_step"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description="Run a qtrain module (forward or training steps) in the numpy golden model."
    )
    parser.add_argument("model", metavar="IN.mlir", help="qtrain IR (e.g. from qtrain-import-onnx or qtrain-compile)")
    parser.add_argument("--entry", default="forward", help="function to run: forward (default) or train_step")
    parser.add_argument("--inputs", required=True, metavar="IN.npz", help="npz with `image` (and `label`)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="where to write the results")
    parser.add_argument("--steps", type=number(int, low=1, high=2**31 - 1, what="a number of steps"), default=None,
                        help="training steps for --entry train_step")
    parser.add_argument("--relaxed", action="store_true",
                        help="float-relaxed numerics: no rounding, float64 (the fp32 simulation)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    return parser


def require_key(arrays: dict[str, np.ndarray], key: str, path: Path, why: str) -> np.ndarray:
    if key not in arrays:
        keys = ", ".join(sorted(arrays)) or "none"
        raise NpzError(f"{path} has no '{key}' array ({why}; keys present: {keys})")
    return arrays[key]


def labels_for(arrays: dict[str, np.ndarray], path: Path, n_images: int, classes: int | None) -> np.ndarray:
    labels = np.asarray(require_key(arrays, "label", path, "train_step needs one label per image"))
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"label must be an integer array, got {labels.dtype}")
    if labels.shape != (n_images,):
        raise InputError(f"label must have shape [{n_images}] (one per image), got {list(labels.shape)}")
    labels = labels_int32(labels, path)
    if classes is not None:
        check_labels(labels, classes, path)
    return labels


def classes_of(module: object) -> int | None:
    """The number of classes @forward scores (its output's last dimension), if it says."""
    from xdsl.dialects.builtin import TensorType

    from qtrain.dialects.qtrain.contract import FORWARD, find_func

    forward = find_func(module, FORWARD)  # type: ignore[arg-type]
    if forward is None or not forward.function_type.outputs.data:
        return None
    out = forward.function_type.outputs.data[0]
    return out.get_shape()[-1] if isinstance(out, TensorType) and out.get_shape() else None


def check_model_input_q(module: object, arrays: dict[str, np.ndarray], path: Path) -> None:
    from qtrain.frontends.onnx import input_quant

    try:
        quant = input_quant(module)  # type: ignore[arg-type]
    except ValueError:
        return  # a model without qtrain.input_q: nothing to compare with
    check_input_q(arrays, path, quant.scale, quant.zp)


def run(args: argparse.Namespace) -> None:
    module = load_module(args.model)
    runner = ModelInterpreter(module, relaxed=args.relaxed)
    try:
        runner.entry(args.entry)  # a clear error for a missing entry before touching the inputs
    except InputError as e:
        if args.entry == TRAIN_ENTRY:
            raise InputError(f"{e}; add it with qtrain-opt -p qtrain-autodiff") from None
        raise
    inputs_path = Path(args.inputs)
    output = Path(args.output)
    check_output(output, [args.model, inputs_path])  # before the (long) run; written after it
    arrays = read_npz(inputs_path)
    images = require_key(arrays, "image", inputs_path, "int8 NHWC images")
    if images.ndim < 1 or images.shape[0] < 1:
        raise InputError(f"{inputs_path}: 'image' holds no samples")
    check_model_input_q(module, arrays, inputs_path)
    if args.entry == TRAIN_ENTRY:
        if args.steps is None:
            raise UsageError("--entry train_step needs --steps S with S >= 1")
        labels = labels_for(arrays, inputs_path, images.shape[0], classes_of(module))
        losses, params = run_train_steps(module, images, labels, args.steps, interpreter=runner)
        results = {"loss": losses, **{f"param/{name}": value for name, value in params.items()}}
    else:
        if args.steps is not None:
            raise UsageError(f"--steps only applies to --entry {TRAIN_ENTRY}")
        output_q, logits = run_forward(module, images, entry=args.entry, interpreter=runner)
        results = {"logits": logits, "output_q": output_q}
    write_npz(output, results, [args.model, inputs_path])


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # InterpretationError: an op the golden model cannot run on these inputs (e.g. an int32 accumulator
    # that would overflow): a property of the model and inputs the user gave.
    run_tool(PROG, lambda: run(build_parser().parse_args(args_list)), args_list,
             extra_user_errors=(InterpretationError, AccumulatorOverflowError))


if __name__ == "__main__":
    main()
