"""`qtrain-export`: the network a device fine-tuned, as a QOperator ONNX model.

    qtrain-export BUILD_DIR --params OUT.npz -o finetuned.onnx [--verify EVAL.npz] [--debug]

BUILD_DIR is a `qtrain-compile` output folder: its `model.mlir` (the planned IR the firmware came from)
gives the forward network. OUT.npz is what `qtrain-run -o OUT.npz` wrote after training on the device:
its `param/<name>` arrays are the SRAM copies of the trainable tensors (the trained slice, int8 / int32,
or an fp32 master whose weight is saturate(rint(master))). They replace the parameters' values in the
forward network, which is written as ONNX (`lowering/onnx_export.py`: QLinearConv, QLinearAdd,
QLinearGlobalAveragePool, ...) that onnxruntime computes bit for bit like the device. The graph takes
`image` int8 NCHW [1, C, H, W] (quantized with the model's input parameters, in the metadata as
`input_scale` / `input_zero_point`) and returns `output_q` int8 [1, classes].

--verify EVAL.npz runs the exported model on the evaluation images with onnxruntime and checks that
its `output_q` equals the device's `eval_output_q_after` in OUT.npz (which `qtrain-run --eval` writes),
image by image: exit 1 if any differs. The images are EVAL.npz's `test_image` when it has one (a task
file, what `qtrain-run --eval same` evaluates on), else its `image`. Needs onnxruntime.

Exit codes: 0 ok, 1 --verify found a difference, 2 bad input (one line on stderr; --debug for a
traceback). The input files are never overwritten.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from qtrain.errors import UserError
from qtrain.tools.plumbing import ArgumentParser, CheckFailed, NpzError, read_npz, run_tool

PARAM_PREFIX = "param/"


def build_model_path(build_dir: Path) -> Path:
    """BUILD_DIR/model.mlir (or BUILD_DIR itself when it is the .mlir file)."""
    if build_dir.is_file() and build_dir.suffix == ".mlir":
        return build_dir
    path = build_dir / "model.mlir"
    if not build_dir.is_dir():
        raise UserError(f"no such build folder: {build_dir} (a qtrain-compile -o folder)")
    if not path.is_file():
        raise UserError(f"{build_dir} has no model.mlir (is it a qtrain-compile -o folder?)")
    return path


def device_params(arrays: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """The `param/<name>` arrays of a qtrain-run -o file, by parameter name."""
    params = {k.removeprefix(PARAM_PREFIX): v for k, v in arrays.items() if k.startswith(PARAM_PREFIX)}
    if not params:
        raise NpzError(f"{path} has no '{PARAM_PREFIX}<name>' arrays: write it with qtrain-run --steps S -o "
                       f"{path.name} (a training run)")
    return params


def export_finetuned(model_mlir: Path, params: dict[str, np.ndarray], output: Path):  # noqa: ANN201
    """Loads the planned model, installs the learned parameters, writes and returns the ONNX model."""
    from qtrain.interpreter import load_module
    from qtrain.lowering.onnx_export import export_onnx, install_params

    module = load_module(model_mlir)
    try:
        install_params(module, params)
        return export_onnx(module, output)
    except ValueError as e:
        raise UserError(f"{model_mlir}: {e}") from e


def onnx_output_q(model: Path, images: np.ndarray) -> np.ndarray:
    """onnxruntime's `output_q` of the exported model for int8 NHWC images, one row per image."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise UserError("--verify needs onnxruntime (pip install onnxruntime)")
    from qtrain.frontends.onnx.oracle import exact_session

    session = exact_session(model)
    rows = [session.run(["output_q"], {"image": np.ascontiguousarray(image[None].transpose(0, 3, 1, 2))})[0]
            for image in images]
    return np.concatenate(rows).astype(np.int8)


def verification_images(path: Path) -> tuple[np.ndarray, str]:
    """The images qtrain-run evaluated on: a task file's test_image, else image."""
    arrays = read_npz(path, "evaluation")
    key = "test_image" if "test_image" in arrays else "image"
    if key not in arrays:
        raise NpzError(f"{path} has neither 'test_image' nor 'image'")
    return arrays[key], f"{path} ({key})"


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="qtrain-export", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("build", type=Path, help="a qtrain-compile -o folder (its model.mlir)")
    parser.add_argument("--params", type=Path, required=True,
                        help="qtrain-run -o output of a training run (its param/<name> arrays)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the ONNX file to write")
    parser.add_argument("--verify", metavar="EVAL.npz",
                        help="check onnxruntime's output_q against the device's eval_output_q_after on these "
                             "images (the file given to qtrain-run --eval; a task file's test_image)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    args_list = list(sys.argv[1:] if argv is None else argv)
    run_tool("qtrain-export", lambda: export_main(parser.parse_args(args_list)), args_list)


def export_main(args: argparse.Namespace) -> int:
    model_mlir = build_model_path(args.build)
    output: Path = args.output
    for given in (model_mlir, args.params, *([Path(args.verify)] if args.verify else [])):
        if output.exists() and given.exists() and output.resolve() == given.resolve():
            raise UserError(f"-o {output} would overwrite the input {given}")
    if output.suffix.lower() != ".onnx":
        raise UserError(f"-o {output}: the output is an ONNX model; name it *.onnx")
    arrays = read_npz(args.params, "parameters")
    params = device_params(arrays, args.params)
    expected = None
    if args.verify:
        if "eval_output_q_after" not in arrays:
            raise NpzError(f"{args.params} has no 'eval_output_q_after' (run qtrain-run with --eval to have the "
                           f"device's predictions to verify against)")
        images, name = verification_images(Path(args.verify))
        expected = arrays["eval_output_q_after"]
        if len(images) != len(expected):
            raise UserError(f"{name} has {len(images)} images but {args.params} holds the device's output for "
                            f"{len(expected)}: give the file qtrain-run evaluated on")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        export_finetuned(model_mlir, params, output)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from e
    print(f"qtrain-export: {output}: the forward network with {len(params)} learned tensors from {args.params}")
    if expected is not None:
        got = onnx_output_q(output, images)
        differ = np.flatnonzero(np.any(got != expected, axis=1))
        if len(differ):
            raise CheckFailed(f"onnxruntime's output_q differs from the device's on {len(differ)} of {len(got)} "
                              f"images (first: image {differ[0]})")
        print(f"  verified: onnxruntime's output_q equals the device's on all {len(got)} images of {name}")
    return 0


if __name__ == "__main__":
    main()
