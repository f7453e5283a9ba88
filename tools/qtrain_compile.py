"""`qtrain-compile`: a model in, a training firmware out.

    qtrain-compile MODEL(.onnx|.pkl|.mlir) [--scheme S] [--sram-kb KB] [--target qemu|qemu-m4|qemu-m33|...]
                   [--no-reorder] [--no-fuse] [--lr 0.01] [--bias-lr 0.001] [--warmup-steps 50] [--steps 1000]
                   [--final-lr-ratio 0.1] [--momentum 0] [--no-qas] [--weight-storage f32|i16|i8|i8-nearest]
                   [--grad-precision f32|bf16] [--stream-backward auto|on|off] [--num-classes 10]
                   [--calibration DATA.npz] [--data TASK.npz] [--memory-report FILE.json] [--lifetime-plot FILE.png]
                   [--emit-llvm] [--profile] [--bounds-check] [--force] -o DIR

Writes DIR/model.mlir (the planned IR the C came from; `qtrain-interpret` runs it), DIR/model.c,
DIR/model.h, DIR/memory.json, DIR/memory.html (the SRAM plan as a picture with a tooltip per buffer,
and a table of every buffer) and DIR/firmware.elf (or DIR/firmware for --target host), with
--emit-llvm DIR/model.ll (the model's LLVM IR for the target, from clang on the C) and with
--lifetime-plot FILE.png the same picture as a PNG. With --profile the firmware counts every op (one
counter read after each op's kernel calls) and DIR/profile.json names the slots (op, layer, kind, MACs)
for `qtrain-run --profile`; without it the firmware has no instrumentation at all. Prints the memory
figures. The Python API does the same: `qtrain.compile(model, scheme=..., target=..., output=DIR)`.

Targets (targets/armv7em/build.py's BOARDS; --sram-kb defaults to the target's budget):
{targets}

Exit codes: 0 ok, 2 bad input, a plan over budget or a firmware too large for the board (one line on
stderr; --debug for a traceback).

The training recipe is compiled into the firmware: the device computes each step's learning rate
(linear warm-up over --warmup-steps, cosine decay over the horizon --steps down to --final-lr-ratio x
the base rate, then that rate held, so training can go on past the horizon); --lr and --bias-lr are
the base rates, which follow the same schedule; --momentum > 0 adds SGD momentum (an fp32 velocity
per trainable tensor, counted in the memory plan). --warmup-steps 0 --steps 0 trains at a constant
rate. Defaults: qtrain.transforms.recipe.COMPILE_RECIPE, chosen by a documented sweep (docs/recipe.md).

Schemes that train TinyTL lite residual modules (`tinytl-l`, `tinytl-l+b`, a schemes.json entry with
`lite_residual_blocks`) insert them first; their int8 scales are calibrated on --data's training images
(key `image`, int8 NHWC), without which a warning says they come from a noise stand-in.

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

from qtrain.api import load_model as load_any  # noqa: F401 (the name other tools import from here)
from qtrain.errors import UserError
from qtrain.targets.armv7em import build
from qtrain.tools.plumbing import (
    LEARNING_RATE,
    ArgumentParser,
    OutputError,
    number,
    run_tool,
    same_file,
)
from qtrain.transforms.narrow_gradients import DEFAULT_GRAD_PRECISION, GRAD_PRECISIONS
from qtrain.transforms.recipe import COMPILE_RECIPE, DEFAULT_WEIGHT_STORAGE, WEIGHT_STORAGES
from qtrain.transforms.stream_backward import STREAM_MODES

TARGETS = build.TARGETS
MANIFEST = ".qtrain-compile"
"""In an output folder: the names of the files qtrain-compile wrote there, one a line."""


def _targets_help() -> str:
    lines = [f"  {name:<14}{b.summary}; budget {b.budget_kb} KB" for name, b in build.BOARDS.items()]
    lines.append(f"  {'host':<14}a native executable from the same C; budget {build.HOST_BUDGET_KB} KB")
    return "\n".join(lines)


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
    """qtrain.compile with the command line's options; the summary --json prints."""
    from qtrain.api import compile as compile_build

    return compile_build(
        args.model, scheme=args.scheme, target=args.target, output=args.output, sram_kb=args.sram_kb,
        reorder=not args.no_reorder, fuse=not args.no_fuse, lr=args.lr, bias_lr=args.bias_lr,
        warmup_steps=args.warmup_steps, steps=args.steps, final_lr_ratio=args.final_lr_ratio, momentum=args.momentum,
        qas=not args.no_qas, weight_storage=args.weight_storage, grad_precision=args.grad_precision,
        stream_backward=args.stream_backward, num_classes=args.num_classes,
        calibration=args.calibration, emit_llvm=args.emit_llvm, memory_report=args.memory_report,
        lifetime_plot=args.lifetime_plot, profile=args.profile, data=args.data,
        bounds_check=args.bounds_check, force=args.force,
    ).summary()


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="qtrain-compile", description=__doc__.format(targets=_targets_help()),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="model.onnx, a reference model .pkl, or forward-only .mlir")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    parser.add_argument("--scheme", default="full",
                        help="full | bias-only | last-k=K | tinytl-b | tinytl-l | tinytl-l+b | FILE.json#MODEL/BUDGET "
                             "(default: full)")
    parser.add_argument("--sram-kb", type=number(int, low=1, high=2**21, what="an SRAM budget in KB"), default=None,
                        help="SRAM budget for the static plan (default: the target's, e.g. 256 for qemu)")
    parser.add_argument("--target", choices=TARGETS, default="qemu", help="firmware target (default qemu; see above)")
    parser.add_argument("--no-reorder", action="store_true", help="keep the naive schedule (updates at the end)")
    parser.add_argument("--no-fuse", action="store_true",
                        help="keep frozen 1x1 + depthwise pairs separate (no qtrain-fuse-streaming)")
    parser.add_argument("--lr", type=LEARNING_RATE, default=COMPILE_RECIPE.lr,
                        help=f"learning rate (default {COMPILE_RECIPE.lr:g})")
    parser.add_argument("--bias-lr", type=LEARNING_RATE, default=COMPILE_RECIPE.bias_lr,
                        help=f"bias learning rate (default {COMPILE_RECIPE.bias_lr:g})")
    parser.add_argument("--warmup-steps", type=int, default=COMPILE_RECIPE.warmup_steps,
                        help=f"linear learning-rate warm-up, in steps (default {COMPILE_RECIPE.warmup_steps}; 0: none)")
    parser.add_argument("--steps", type=int, default=COMPILE_RECIPE.steps,
                        help=f"horizon of the cosine learning-rate decay, in steps; the final rate is held after it "
                             f"(default {COMPILE_RECIPE.steps}; 0: no decay)")
    parser.add_argument("--final-lr-ratio", type=float, default=COMPILE_RECIPE.final_lr_ratio,
                        help=f"learning rate at and after the horizon, as a fraction of --lr / --bias-lr "
                             f"(default {COMPILE_RECIPE.final_lr_ratio:g})")
    parser.add_argument("--momentum", type=float, default=COMPILE_RECIPE.momentum,
                        help=f"SGD momentum in [0, 1) (default {COMPILE_RECIPE.momentum:g}: none)")
    parser.add_argument("--no-qas", action="store_true", help="plain SGD without quantization-aware scaling")
    parser.add_argument("--weight-storage", choices=WEIGHT_STORAGES, default=DEFAULT_WEIGHT_STORAGE,
                        help=f"SRAM copy of trained int8 weights: fp32 master (4 B), 16-bit fixed-point master "
                             f"(2 B), int8 in place (1 B; i16 and i8 round stochastically) or int8 rounded to "
                             f"nearest (default {DEFAULT_WEIGHT_STORAGE})")
    parser.add_argument("--grad-precision", choices=list(GRAD_PRECISIONS), default=DEFAULT_GRAD_PRECISION,
                        help=f"arena format of activation gradients: f32 or bf16 (fp32 arithmetic, results rounded "
                             f"to nearest even; default {DEFAULT_GRAD_PRECISION})")
    parser.add_argument("--stream-backward", choices=list(STREAM_MODES), default="auto",
                        help="backward through frozen expansion + depthwise pairs one expanded row at a time: on, "
                             "off, or auto (default: when it lowers the planned peak)")
    parser.add_argument("--num-classes", type=number(int, low=2, high=1000, what="a number of classes"), default=10,
                        help="classifier rows of a .pkl model (default 10)")
    parser.add_argument("--calibration", type=Path, help="npz of float NCHW images for an ONNX float model's PTQ")
    parser.add_argument("--data", type=Path, metavar="TASK.npz",
                        help="training images (int8 NHWC, key image) the lite residual modules calibrate on")
    parser.add_argument("--memory-report", type=Path, help="also write memory.json here")
    parser.add_argument("--emit-llvm", action="store_true", help="also write DIR/model.ll (LLVM IR for the target)")
    parser.add_argument("--lifetime-plot", type=Path,
                        help="write a PNG of the SRAM plan (buffers over the schedule, peak, budget)")
    parser.add_argument("--profile", action="store_true",
                        help="instrument the firmware: per-op counts for `qtrain-run --profile` (DIR/profile.json)")
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
        print(f"qtrain-compile: {summary['firmware']} ({summary['target']})")
        print(f"  peak SRAM {kb(summary['peak_sram_bytes'])} = arena {kb(summary['arena_bytes'])} + trainable "
              f"{kb(summary['trainable_bytes'])} (training state {summary['state_bytes']} B of it) + scratch "
              f"{kb(summary['scratch_bytes'])}, of a {kb(summary['budget_bytes'])} budget")
        print(f"  peak at {summary['peak_op']}")
        if "flash_bytes" in summary:
            print(f"  Flash {kb(summary['flash_bytes'])} (code + weights), "
                  f"{summary['trainable_tensors']} trainable tensors")


if __name__ == "__main__":
    main()
