"""`qtrain-import-tiny-training`: a reference .pkl model of the MCUNetV3 paper -> forward qtrain IR.

    qtrain-import-tiny-training MODEL.pkl [--num-classes N] [--head new|imagenet] [-o OUT.mlir]
                                [--export-onnx OUT.onnx]

The N-class head starts at zero (`--head new`, the default: what fine-tuning on a new task starts from;
frontends/tiny_training.py says why) or is the first N rows of the ImageNet classifier (`--head imagenet`).
The model's input quantization is printed on `@forward` as `qtrain.input_q`. Bad input (missing,
truncated or corrupt file, not a model pickle, N out of range) prints one line on stderr and exits with
status 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence

from xdsl.printer import Printer

from qtrain.frontends.tiny_training import DEFAULT_HEAD, HEADS, import_tiny_training
from qtrain.tools.plumbing import (
    ArgumentParser,
    UsageError,
    check_output,
    run_tool,
    same_file,
    write_bytes,
    write_text,
)

PROG = "qtrain-import-tiny-training"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=PROG, description="Import an int8 tiny-training reference model (.pkl) as forward-only qtrain IR."
    )
    parser.add_argument("model", help="the model pickle, e.g. ../shared/models/tiny-training/mcunet-5fps.pkl")
    parser.add_argument(
        "--num-classes", type=int, default=10, metavar="N", help="classes of the head; 10"
    )
    parser.add_argument(
        "--head", choices=HEADS, default=DEFAULT_HEAD,
        help="the classifier: 'new' (zero weights and biases on the first N ImageNet rows' scales, what "
             "fine-tuning on a new task starts from) or 'imagenet' (the first N ImageNet rows); default new",
    )
    parser.add_argument("-o", "--output", default="-", metavar="OUT.mlir", help="output IR file (default: stdout)")
    parser.add_argument("--export-onnx", metavar="OUT.onnx", help="also write the network as a QOperator ONNX model")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    outputs = [o for o in (args.output, args.export_onnx) if o not in (None, "-")]
    for output in outputs:
        check_output(output, [args.model])
    if len(outputs) == 2 and same_file(*outputs):
        raise UsageError("-o and --export-onnx name the same file")
    module = import_tiny_training(args.model, args.num_classes, args.head)
    if args.output == "-":
        Printer(stream=sys.stdout).print_op(module)
        sys.stdout.write("\n")
    else:
        text = io.StringIO()
        Printer(stream=text).print_op(module)
        write_text(args.output, text.getvalue() + "\n", [args.model])
    if args.export_onnx:
        from qtrain.lowering.onnx_export import export_onnx  # imports onnx, which takes a second

        write_bytes(args.export_onnx, export_onnx(module).SerializeToString(), [args.model])


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    run_tool(PROG, lambda: run(parse_args(args_list)), args_list)


if __name__ == "__main__":
    main()
