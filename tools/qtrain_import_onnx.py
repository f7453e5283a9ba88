"""`qtrain-import-onnx`: an ONNX CNN (float, QDQ or QOperator) -> forward-only qtrain IR.

    qtrain-import-onnx MODEL.onnx [--calibration DATA.npz] [-o OUT.mlir]

Float models are quantized post-training; `--calibration` gives the images for the activation ranges
(key `image`, float NCHW `[N, C, H, W]`, preprocessed like the model's input). Without it the ranges
come from random images, with a warning (see `qtrain.frontends.onnx`). The input quantization is
printed on `@forward` as `qtrain.input_q`, the output's as `qtrain.output_q`.

The graph's one output must be logits (`[N, K]` or `[N, K, 1, 1]`, K >= 2 classes): qtrain trains
classifiers. Bad input (unreadable, truncated or corrupt file; unsupported op, opset or attribute; an
attribute or tensor type that contradicts the graph; dynamic or missing input shape; an output that is
not logits; bad calibration data) prints one line on stderr and exits with status 2;
`--debug` shows the traceback instead. Warnings print as one line each on stderr.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

from xdsl.printer import Printer

from qtrain.frontends.onnx import import_onnx, load_calibration
from qtrain.tools.plumbing import ArgumentParser, check_output, run_tool, write_text

PROG = "qtrain-import-onnx"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=PROG, description="Import an ONNX CNN (float, QDQ or QOperator) as forward-only qtrain IR."
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model")
    parser.add_argument(
        "--calibration",
        metavar="DATA.npz",
        help="calibration images for a float model: key 'image', float NCHW [N, C, H, W]",
    )
    parser.add_argument("-o", "--output", default="-", metavar="OUT.mlir", help="output IR file (default: stdout)")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    return parser.parse_args(argv)


def _print_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = str(message).splitlines()[0] if str(message) else category.__name__
    print(f"{PROG}: warning: {text}", file=sys.stderr)


def run(args: argparse.Namespace) -> None:
    if args.output != "-":
        check_output(args.output, [args.model, args.calibration])
    calibration = load_calibration(args.calibration) if args.calibration else None
    module = import_onnx(args.model, calibration, classifier=True)
    if args.output == "-":
        Printer(stream=sys.stdout).print_op(module)
        sys.stdout.write("\n")
        return
    text = io.StringIO()
    Printer(stream=text).print_op(module)
    write_text(args.output, text.getvalue() + "\n", [args.model, args.calibration])


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(args_list)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _print_warning
        run_tool(PROG, lambda: run(args), args_list)


if __name__ == "__main__":
    main()
