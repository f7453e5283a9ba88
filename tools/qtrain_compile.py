"""`qtrain-compile`: a model in, a training firmware out.

    qtrain-compile MODEL(.onnx|.pkl|.mlir) [--scheme S] [--sram-kb 256] [--target qemu|stm32f746|host]
                   [--no-reorder] [--no-fuse] [--lr 0.05] [--bias-lr LR] [--no-qas] [--weight-storage f32|i8]
                   [--num-classes 10] [--calibration DATA.npz] [--memory-report FILE.json]
                   [--lifetime-plot FILE.png] [--emit-llvm] [--bounds-check] [--force] -o DIR

Writes DIR/model.mlir (the planned IR the C came from; `qtrain-interpret` runs it), DIR/model.c,
DIR/model.h, DIR/memory.json and DIR/firmware.elf (or DIR/firmware for --target host), and with
--emit-llvm DIR/model.ll (the model's LLVM IR for thumbv7em, from clang on the C). Prints the
memory figures. Exit codes: 0 ok, 2 bad input or a plan over budget (one line on stderr; --debug for
a traceback).

--bounds-check builds a debug firmware whose arena and scratch buffer sit between guard bands that are
checked whenever qtrain_infer or qtrain_train_step returns: a kernel that wrote outside them stops the
program with a message (the planned offsets themselves are checked by the C emitter, always).

DIR is written whole or not at all: everything is built in a temporary folder next to it and renamed
into place at the end, so a failed compile leaves the previous build as it was. DIR must be new, empty,
or a previous qtrain-compile output (DIR/.qtrain-compile lists what it wrote); a folder holding other
files is refused unless --force, which then replaces only the files qtrain-compile writes. No output
(DIR's files, --memory-report, --lifetime-plot) may be one of the inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from qtrain.errors import UserError
from qtrain.files import usual_permissions
from qtrain.tools.plumbing import (
    LEARNING_RATE,
    ArgumentParser,
    OutputError,
    UsageError,
    check_output,
    number,
    run_tool,
    same_file,
    write_bytes,
    write_text,
)
from qtrain.transforms.recipe import COMPILE_RECIPE

TARGETS = ("qemu", "stm32f746", "host")
MANIFEST = ".qtrain-compile"
"""In an output folder: the names of the files qtrain-compile wrote there, one a line."""


def load_any(path: Path, num_classes: int, calibration: Path | None):  # noqa: ANN201
    """Forward-only qtrain IR from an ONNX model, a reference .pkl model, or an .mlir file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from qtrain.frontends.onnx import import_onnx

        return import_onnx(path, calibration=str(calibration) if calibration else None, classifier=True)
    if suffix == ".pkl":
        from qtrain.frontends.tiny_training import import_tiny_training

        return import_tiny_training(path, num_classes=num_classes)
    if suffix == ".mlir":
        from qtrain.interpreter import load_module

        return load_module(path)
    raise UsageError(f"{path}: unknown model format '{suffix}' (expected .onnx, .pkl or .mlir)")


def emit_llvm_ir(out: Path, target: str, final: Path) -> Path:
    """DIR/model.ll: the model's LLVM IR for the target (clang -S -emit-llvm with the firmware's flags)."""
    import subprocess

    from qtrain.targets.armv7em.build import BuildError, compile_flags, find_tool

    ll = out / "model.ll"
    command = [find_tool("clang"), *compile_flags(target), f"-I{out}", "-S", "-emit-llvm",  # type: ignore[arg-type]
               f"-ffile-prefix-map={out.resolve()}={final.resolve()}", str(out / "model.c"), "-o", str(ll)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"clang -emit-llvm failed:\n{result.stderr.strip()}")
    return ll


def inputs_of(args: argparse.Namespace) -> list[Path]:
    """The files this compile reads (none may be overwritten)."""
    scheme_file = args.scheme.partition("#")[0] if "#" in args.scheme else None
    return [p for p in (args.model, args.calibration, Path(scheme_file) if scheme_file else None) if p is not None]


def ours(out: Path) -> set[str]:
    """The files a previous qtrain-compile listed in out/.qtrain-compile."""
    try:
        return {line.strip() for line in (out / MANIFEST).read_text().splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError):
        return set()


def check_output_dir(out: Path, force: bool, inputs: Iterable[Path]) -> None:
    """-o DIR: new, empty, or our own earlier output (or --force); never holding an input we would replace."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"-o {out}: exists and is not a folder")
    if not out.is_dir():
        return
    try:
        entries = set(os.listdir(out))
    except OSError as e:
        raise OutputError(f"cannot read the output folder {out}: {e.strerror or e}") from None
    foreign = sorted(entries - ours(out) - {MANIFEST})
    if foreign and not force:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputError(f"-o {out} holds files qtrain-compile did not write ({shown}); give a new or empty "
                          f"folder, or --force to write among them")
    for source in inputs:
        for name in entries:
            if same_file(out / name, source) and (name in ours(out) or not force):
                raise OutputError(f"-o {out} would replace the input {source}; compile into another folder")


def install(build: Path, out: Path) -> None:
    """Moves the finished build folder to `out`: whole when `out` is new, empty or ours; file by file
    (leaving other files alone) when --force let us write among foreign files."""
    written = sorted(os.listdir(build))
    (build / MANIFEST).write_text("".join(f"{name}\n" for name in written))
    try:
        if not out.exists():
            os.rename(build, out)
            return
        entries = set(os.listdir(out))
        if not entries - ours(out) - {MANIFEST}:
            backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, backup / "build")
            os.rename(build, out)
            shutil.rmtree(backup, ignore_errors=True)
            return
        previous = ours(out)
        for name in written:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(build / name, target)
        (out / MANIFEST).write_text("".join(f"{name}\n" for name in sorted(previous | set(written))))
    except OSError as e:
        raise OutputError(f"cannot move the build into {out}: {e.strerror or e}") from None


def compile_model(args: argparse.Namespace) -> dict[str, object]:
    inputs = inputs_of(args)
    out: Path = args.output
    check_output_dir(out, args.force, inputs)
    for extra, what in ((args.memory_report, "memory report"), (args.lifetime_plot, "lifetime plot")):
        if extra is not None:
            check_output(extra, inputs, what)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        usual_permissions(build)
    except OSError as e:
        raise OutputError(f"cannot create {out}: {e.strerror or e}") from e
    try:
        summary = compile_into(args, build, out)
        install(build, out)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return summary


def compile_into(args: argparse.Namespace, out: Path, final: Path) -> dict[str, object]:
    """The compile, writing every file into `out` (a temporary folder that becomes `final`)."""
    from qtrain.dialects.qtrain import ParamOp
    from qtrain.dialects.qtrain.contract import MEMORY
    from qtrain.lowering.emit_c import emit_model
    from qtrain.targets.armv7em.build import build_firmware, kernel_sources
    from qtrain.transforms.pipeline import apply_passes, training_passes

    module = load_any(args.model, args.num_classes, args.calibration)
    if any(getattr(o, "sym_name", None) is not None and o.sym_name.data == "train_step" for o in module.ops):
        raise UserError(f"{args.model}: already has @train_step; give the forward-only model")
    report = out / "memory.json"
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
    )
    apply_passes(module, passes)
    (out / "model.mlir").write_text(str(module) + "\n")
    source, header = emit_model(module)
    (out / "model.c").write_text(source)
    (out / "model.h").write_text(header)
    if args.emit_llvm:
        emit_llvm_ir(out, args.target, final)
    firmware = out / ("firmware" if args.target == "host" else "firmware.elf")
    # Debug info names the final folder, not the temporary one.
    result = build_firmware([out / "model.c", *kernel_sources()], firmware, args.target, include_dirs=[out],
                            defines=["QTRAIN_BOUNDS_CHECK"] if args.bounds_check else [],
                            extra_cflags=[f"-ffile-prefix-map={out.resolve()}={final.resolve()}"])
    memory = json.loads(Path(report).read_text())
    if args.memory_report:
        write_text(args.memory_report, json.dumps(memory, indent=2) + "\n", inputs_of(args), "memory report")
    if args.lifetime_plot:
        from qtrain.tools.charts import encode_png, render_memory_plan

        write_bytes(args.lifetime_plot, encode_png(render_memory_plan(memory)), inputs_of(args), "lifetime plot")
    summary: dict[str, object] = {
        "firmware": str(final / firmware.name),
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
                        help="full | bias-only | last-k=K | FILE.json#MODEL/BUDGET (default: full)")
    parser.add_argument("--sram-kb", type=number(int, low=1, high=2**21, what="an SRAM budget in KB"), default=256,
                        help="SRAM budget for the static plan (default 256)")
    parser.add_argument("--target", choices=TARGETS, default="qemu", help="firmware target (default qemu)")
    parser.add_argument("--no-reorder", action="store_true", help="keep the naive schedule (updates at the end)")
    parser.add_argument("--no-fuse", action="store_true",
                        help="keep frozen 1x1 + depthwise pairs separate (no qtrain-fuse-streaming)")
    parser.add_argument("--lr", type=LEARNING_RATE, default=COMPILE_RECIPE.lr,
                        help=f"learning rate (default {COMPILE_RECIPE.lr:g})")
    parser.add_argument("--bias-lr", type=LEARNING_RATE, default=None, help="bias learning rate (default: --lr)")
    parser.add_argument("--no-qas", action="store_true", help="plain SGD without quantization-aware scaling")
    parser.add_argument("--weight-storage", choices=["f32", "i8"], default="f32",
                        help="SRAM copy of trainable weights: fp32 master (default) or int8 in place")
    parser.add_argument("--num-classes", type=number(int, low=2, high=1000, what="a number of classes"), default=10,
                        help="classifier rows of a .pkl model (default 10)")
    parser.add_argument("--calibration", type=Path, help="npz of float NCHW images for an ONNX float model's PTQ")
    parser.add_argument("--memory-report", type=Path, help="also write memory.json here")
    parser.add_argument("--emit-llvm", action="store_true", help="also write DIR/model.ll (LLVM IR for the target)")
    parser.add_argument("--lifetime-plot", type=Path, help="write a PNG of the arena plan")
    parser.add_argument("--bounds-check", action="store_true",
                        help="debug build: guard bands around the arena and scratch, checked after every call of "
                             "qtrain_infer / qtrain_train_step")
    parser.add_argument("--force", action="store_true",
                        help="write into -o DIR even when it holds files qtrain-compile did not write")
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
