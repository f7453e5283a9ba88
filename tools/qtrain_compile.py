"""`qtrain-compile`: a model in, a training firmware out.

    qtrain-compile MODEL(.onnx|.pkl|.mlir) [--scheme S] [--sram-kb 256] [--target qemu|stm32f746|host]
                   [--no-reorder] [--no-fuse] [--lr 0.05] [--bias-lr LR] [--no-qas] [--weight-storage f32|i8]
                   [--num-classes 10] [--calibration DATA.npz] [--data TASK.npz] [--memory-report FILE.json]
                   [--lifetime-plot FILE.png] [--emit-llvm] -o DIR

Writes DIR/model.mlir (the planned IR the C came from; `qtrain-interpret` runs it), DIR/model.c,
DIR/model.h, DIR/memory.json and DIR/firmware.elf (or DIR/firmware for --target host), and with
--emit-llvm DIR/model.ll (the model's LLVM IR for thumbv7em, from clang on the C). Prints the
memory figures. Exit codes: 0 ok, 2 bad input or a plan over budget (one line on stderr; --debug for
a traceback).

Schemes that train TinyTL lite residual modules (`tinytl-l`, `tinytl-l+b`, a schemes.json entry with
`lite_residual_blocks`) insert them first; their int8 scales are calibrated on --data's training images
(key `image`, int8 NHWC), without which a warning says they come from a noise stand-in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qtrain.errors import UserError
from qtrain.tools.plumbing import ArgumentParser, UsageError, run_tool
from qtrain.transforms.recipe import COMPILE_RECIPE

TARGETS = ("qemu", "stm32f746", "host")


def load_any(path: Path, num_classes: int, calibration: Path | None):  # noqa: ANN201
    """Forward-only qtrain IR from an ONNX model, a reference .pkl model, or an .mlir file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from qtrain.frontends.onnx import import_onnx

        return import_onnx(path, calibration=str(calibration) if calibration else None)
    if suffix == ".pkl":
        from qtrain.frontends.tiny_training import import_tiny_training

        return import_tiny_training(path, num_classes=num_classes)
    if suffix == ".mlir":
        from qtrain.interpreter import load_module

        return load_module(path)
    raise UsageError(f"{path}: unknown model format '{suffix}' (expected .onnx, .pkl or .mlir)")


def emit_llvm_ir(out: Path, target: str) -> Path:
    """DIR/model.ll: the model's LLVM IR for the target (clang -S -emit-llvm with the firmware's flags)."""
    import subprocess

    from qtrain.targets.armv7em.build import BuildError, compile_flags, find_tool

    ll = out / "model.ll"
    command = [find_tool("clang"), *compile_flags(target), f"-I{out}", "-S", "-emit-llvm",  # type: ignore[arg-type]
               str(out / "model.c"), "-o", str(ll)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"clang -emit-llvm failed:\n{result.stderr.strip()}")
    return ll


def compile_model(args: argparse.Namespace) -> dict[str, object]:
    from qtrain.dialects.qtrain import ParamOp
    from qtrain.dialects.qtrain.contract import MEMORY
    from qtrain.lowering.emit_c import emit_model
    from qtrain.targets.armv7em.build import build_firmware, kernel_sources
    from qtrain.transforms.pipeline import apply_passes, training_passes

    out: Path = args.output
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror or e}") from e
    module = load_any(args.model, args.num_classes, args.calibration)
    if any(getattr(o, "sym_name", None) is not None and o.sym_name.data == "train_step" for o in module.ops):
        raise UserError(f"{args.model}: already has @train_step; give the forward-only model")
    report = args.memory_report or out / "memory.json"
    calibration = None
    if args.data is not None:
        from qtrain.tools.plumbing import images_and_labels, read_npz

        calibration, _ = images_and_labels(read_npz(args.data, "task"), args.data, need_labels=False)
    passes = training_passes(
        args.scheme,
        reorder=not args.no_reorder,
        fuse_streaming=not args.no_fuse,
        sram_kb=args.sram_kb,
        lr=args.lr,
        bias_lr=args.bias_lr,
        qas=not args.no_qas,
        weight_storage=args.weight_storage,
        memory_report=str(report),
        calibration=calibration,
    )
    apply_passes(module, passes)
    (out / "model.mlir").write_text(str(module) + "\n")
    source, header = emit_model(module)
    (out / "model.c").write_text(source)
    (out / "model.h").write_text(header)
    if args.emit_llvm:
        emit_llvm_ir(out, args.target)
    firmware = out / ("firmware" if args.target == "host" else "firmware.elf")
    result = build_firmware([out / "model.c", *kernel_sources()], firmware, args.target, include_dirs=[out])
    memory = json.loads(Path(report).read_text())
    if args.lifetime_plot:
        from qtrain.tools.charts import write_memory_plan

        write_memory_plan(memory, str(args.lifetime_plot))
    if report != out / "memory.json":
        (out / "memory.json").write_text(json.dumps(memory, indent=2) + "\n")
    summary: dict[str, object] = {
        "firmware": str(firmware),
        "peak_sram_bytes": memory["peak_sram_bytes"],
        "arena_bytes": memory["arena_bytes"],
        "trainable_bytes": memory["trainable_bytes"],
        "scratch_bytes": memory["scratch_bytes"],
        "trainable_tensors": sum(1 for o in module.ops if isinstance(o, ParamOp) and o.is_trainable),
        "peak_op": module.attributes[MEMORY].data["peak_op"].data,  # type: ignore[attr-defined]
    }
    if result.memory is not None:
        summary["flash_bytes"] = result.memory.flash_bytes
        summary["static_sram_bytes_in_elf"] = result.memory.sram_bytes
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="qtrain-compile", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="model.onnx, a reference model .pkl, or forward-only .mlir")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--scheme", default="full",
                        help="full | bias-only | last-k=K | tinytl-b | tinytl-l | tinytl-l+b | FILE.json#MODEL/BUDGET "
                             "(default: full)")
    parser.add_argument("--sram-kb", type=int, default=256, help="SRAM budget for the static plan (default 256)")
    parser.add_argument("--target", choices=TARGETS, default="qemu", help="firmware target (default qemu)")
    parser.add_argument("--no-reorder", action="store_true", help="keep the naive schedule (updates at the end)")
    parser.add_argument("--no-fuse", action="store_true",
                        help="keep frozen 1x1 + depthwise pairs separate (no qtrain-fuse-streaming)")
    parser.add_argument("--lr", type=float, default=COMPILE_RECIPE.lr,
                        help=f"learning rate (default {COMPILE_RECIPE.lr:g})")
    parser.add_argument("--bias-lr", type=float, default=None, help="bias learning rate (default: --lr)")
    parser.add_argument("--no-qas", action="store_true", help="plain SGD without quantization-aware scaling")
    parser.add_argument("--weight-storage", choices=["f32", "i8"], default="f32",
                        help="SRAM copy of trainable weights: fp32 master (default) or int8 in place")
    parser.add_argument("--num-classes", type=int, default=10, help="classifier rows of a .pkl model (default 10)")
    parser.add_argument("--calibration", type=Path, help="npz of float NCHW images for an ONNX float model's PTQ")
    parser.add_argument("--data", type=Path, metavar="TASK.npz",
                        help="training images (int8 NHWC, key image) the lite residual modules calibrate on")
    parser.add_argument("--memory-report", type=Path, help="also write memory.json here")
    parser.add_argument("--emit-llvm", action="store_true", help="also write DIR/model.ll (LLVM IR for the target)")
    parser.add_argument("--lifetime-plot", type=Path, help="write a PNG of the arena plan")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    args_list = list(sys.argv[1:] if argv is None else argv)
    run_tool("qtrain-compile", lambda: compile_and_report(parser.parse_args(args_list)), args_list)


def compile_and_report(args: argparse.Namespace) -> None:
    if not args.model.is_file():
        raise UserError(f"no such model file: {args.model}")
    summary = compile_model(args)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        kb = lambda n: f"{int(n) / 1024:.1f} KB"  # noqa: E731
        print(f"qtrain-compile: {summary['firmware']}")
        print(f"  peak SRAM {kb(summary['peak_sram_bytes'])} = arena {kb(summary['arena_bytes'])} + trainable "
              f"{kb(summary['trainable_bytes'])} + scratch {kb(summary['scratch_bytes'])}")
        print(f"  peak at {summary['peak_op']}")
        if "flash_bytes" in summary:
            print(f"  Flash {kb(summary['flash_bytes'])} (code + weights), "
                  f"{summary['trainable_tensors']} trainable tensors")


if __name__ == "__main__":
    main()
