"""`qtrain-run`: run a compiled model's firmware on QEMU (Cortex-M7) or the host and collect the results.

    qtrain-run DIR/firmware.elf [--inputs IN.npz] [--entry forward|train_step] [--steps S]
               [-o OUT.npz] [--json] [--timeout S] [--debug]

The firmware is either an ARM ELF built for `--target qemu` (run on `qemu-system-arm -M mps2-an500
-cpu cortex-m7 -icount shift=0` with semihosting) or a host executable built for `--target host` (run
directly); both speak the request/result protocol of targets/armv7em/harness.c.

Inputs (DESIGN.md conventions): `image` int8 NHWC [N, H, W, C], already quantized with the model's input
parameters; `label` int [N] (optional for `forward`). Without `--inputs`, `inputs.npz` next to the
firmware is used. The entry defaults to `train_step` when `--steps` is given (S steps over the images in
order, wrapping around) and to `forward` (each image once) otherwise.

Outputs: `-o OUT.npz` holds the interpreter's keys (`logits` and `output_q`, or `loss` and
`param/<name>`) plus `instructions` (uint64, per image or step; `host_ns` for a host build). stdout
gets a table of loss / instructions per step (or accuracy), or with `--json` only the JSON object
{"instructions_per_step", "macs_per_step", "stack_bytes", "sram_bytes", "flash_bytes", ...} where
sram_bytes = the model's static SRAM (qtrain_memory.peak_sram_bytes) + the measured stack high-water mark
and flash_bytes = the firmware's Flash sections (.vectors + .text + .rodata + .qtrain.weights + .data).

Exit status: 0 success, 1 the firmware failed (fault, stack overflow, timeout, incomplete results),
2 bad input or usage. Errors are one line on stderr; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qtrain.targets.armv7em import build, protocol

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
DEFAULT_TIMEOUT_S = 1800.0
PRINT_ROWS = 20
"""Per-image rows printed for `forward`; more images only get the summary."""


class UserError(Exception):
    """Bad input or usage: exit 2."""


class RunFailed(Exception):
    """The firmware did not complete: exit 1."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qtrain-run", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("firmware", type=Path, help="firmware.elf (--target qemu) or a host build")
    parser.add_argument("--inputs", type=Path, help="npz with `image` (int8 NHWC) and `label` "
                                                    "(default: inputs.npz next to the firmware)")
    parser.add_argument("--entry", choices=("forward", "train_step"),
                        help="what to run (default: train_step with --steps, else forward)")
    parser.add_argument("--steps", type=int, help="training steps (default: one per image)")
    parser.add_argument("-o", "--output", type=Path, help="write the results to this npz")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds before the run is stopped (default {DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    return parser.parse_args(argv)


def load_inputs(path: Path, entry: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(images int8 [N, H, W, C], labels int32 [N], whether the labels came from the file)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UserError(f"{path} is not an .npz archive")
        with loaded as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path}: {e}") from e
    if "image" not in arrays:
        raise UserError(f"{path} has no 'image' array (keys: {', '.join(arrays) or 'none'})")
    images = arrays["image"]
    if images.dtype != np.int8 or images.ndim != 4 or len(images) == 0:
        raise UserError(f"{path}: 'image' must be int8 NHWC [N, H, W, C] (already quantized with the model's input "
                        f"parameters), got {images.dtype} {list(images.shape)}")
    if "label" not in arrays:
        if entry == "train_step":
            raise UserError(f"{path} has no 'label' array, which training needs")
        return images, np.zeros(len(images), np.int32), False
    labels = arrays["label"]
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: 'label' must be integers of shape [{len(images)}], got {labels.dtype} "
                        f"{list(labels.shape)}")
    return images, labels.astype(np.int32), True


def model_interface(firmware: Path) -> tuple[tuple[int, int, int], int] | None:
    """(input H, W, C; classes) read from the firmware's `qtrain_model` descriptor, if it has one."""
    raw = build.elf_symbol_bytes(firmware, "qtrain_model")
    if raw is None or len(raw) < 24:
        return None
    _abi, h, w, c, _input_bytes, classes = np.frombuffer(raw[:24], "<u4")
    return (int(h), int(w), int(c)), int(classes)


def check_firmware(firmware: Path) -> str:
    """'qemu' or 'host'; UserError for anything qtrain-run cannot run."""
    if not firmware.is_file():
        raise UserError(f"no such firmware: {firmware}")
    try:
        machine = build.elf_machine(firmware)
    except ValueError as e:
        raise UserError(str(e)) from e
    if machine != build.EM_ARM:
        return "host"
    vectors = [s for s in build.elf_sections(firmware) if s.name == ".vectors"]
    if not vectors or vectors[0].address != build.FLASH_ORIGINS["qemu"]:
        raise UserError(f"{firmware} is not a QEMU mps2-an500 build (link it with --target qemu; STM32F746 builds "
                        f"run on the chip)")
    return "qemu"


def run(firmware: Path, request: bytes, timeout: float, expected: str) -> protocol.HarnessResult:
    """Run `firmware` on `request`; `expected` ("3 steps", "10 images") is only for messages."""
    with tempfile.TemporaryDirectory(prefix="qtrain-run-") as tmp:
        (Path(tmp) / "in.bin").write_bytes(request)
        result_path = Path(tmp) / "out.bin"
        try:
            process = build.run_firmware(firmware, ["in.bin", "out.bin"], timeout=timeout, cwd=tmp)
        except subprocess.TimeoutExpired as e:
            done = ""
            try:
                done = f" ({protocol.decode_result(result_path.read_bytes()).records} of {expected} done)"
            except (OSError, protocol.ProtocolError):
                pass
            raise RunFailed(f"{firmware.name} timed out after {timeout:g} s{done}") from e
        messages = [line for line in process.stderr.splitlines() if line.strip()]
        if process.returncode != 0:
            why = messages[-1] if messages else "no message"
            error = UserError if process.returncode == 2 else RunFailed
            raise error(f"{firmware.name} failed with status {process.returncode}: {why}")
        if not result_path.exists():
            raise RunFailed(f"{firmware.name} exited without writing its results")
        result = protocol.decode_result(result_path.read_bytes())
    if not result.complete:
        raise RunFailed(f"{firmware.name} stopped after {result.records} of {expected} without completing its "
                        f"results")
    return result


def summary(result: protocol.HarnessResult, target: str, firmware: Path, labels: np.ndarray,
            have_labels: bool) -> dict[str, Any]:
    """The --json object (DESIGN.md "Command-line conventions") plus a few more details."""
    counts = [int(c) for c in result.counts]
    train = result.mode == protocol.MODE_TRAIN
    static_sram = result.memory["peak_sram_bytes"]
    flash = build.memory_usage(firmware).flash_bytes if target == "qemu" else None
    out: dict[str, Any] = {
        "target": target,
        "entry": "train_step" if train else "forward",
        "steps": result.records,
        "instructions_per_step": counts if result.counter_kind == "instructions" else None,
        "macs_per_step": result.macs_per_train_step if train else result.macs_per_infer,
        "stack_bytes": result.stack_used,
        "sram_bytes": None if result.stack_used is None else static_sram + result.stack_used,
        "flash_bytes": flash,
        "static_sram_bytes": static_sram,
        "stack_reserved_bytes": result.stack_size,
        "init_instructions": result.init_count if result.counter_kind == "instructions" else None,
        "memory": result.memory,
    }
    if result.counter_kind == "host_ns":
        out["host_ns_per_step"] = counts
    if train:
        assert result.loss is not None
        out["loss"] = [float(x) for x in result.loss]
    elif have_labels:
        assert result.logits is not None
        out["accuracy"] = float(np.mean(np.argmax(result.logits, axis=1) == labels))
    return out


def print_table(result: protocol.HarnessResult, info: dict[str, Any], labels: np.ndarray, have_labels: bool) -> None:
    unit = {"instructions": "instructions", "host_ns": "host ns", "cycles": "cycles"}.get(result.counter_kind or "",
                                                                                          "count")
    if result.mode == protocol.MODE_TRAIN:
        assert result.loss is not None and result.labels is not None
        print(f"{'step':>6} {'label':>6} {'loss':>12} {unit:>14}")
        for i, (loss, label, count) in enumerate(zip(result.loss, result.labels, result.counts, strict=True)):
            print(f"{i:>6} {label:>6} {loss:>12.6f} {int(count):>14}")
    else:
        assert result.logits is not None
        predicted = np.argmax(result.logits, axis=1)
        if result.records <= PRINT_ROWS:
            print(f"{'image':>6} {'label':>6} {'argmax':>6} {unit:>14}")
            for i, count in enumerate(result.counts):
                label = str(labels[i]) if have_labels else "-"
                print(f"{i:>6} {label:>6} {predicted[i]:>6} {int(count):>14}")
        if have_labels:
            correct = int(np.sum(predicted == labels))
            print(f"accuracy: {correct}/{result.records} ({100 * correct / result.records:.1f}%)")
    if result.records:
        print(f"mean {unit} per {'step' if result.mode == protocol.MODE_TRAIN else 'image'}: "
              f"{float(np.mean(result.counts)):.0f} ({info['macs_per_step']} MACs)")
    if info["stack_bytes"] is not None:
        print(f"SRAM: {info['sram_bytes']} bytes = static {info['static_sram_bytes']} + stack {info['stack_bytes']} "
              f"(of {info['stack_reserved_bytes']} reserved)")
    if info["flash_bytes"] is not None:
        print(f"Flash: {info['flash_bytes']} bytes")


def save_npz(path: Path, result: protocol.HarnessResult) -> None:
    arrays: dict[str, np.ndarray] = {}
    if result.mode == protocol.MODE_TRAIN:
        assert result.loss is not None
        arrays["loss"] = result.loss
        arrays.update({f"param/{name}": value for name, value in result.params.items()})
    else:
        assert result.logits is not None and result.output_q is not None
        arrays["logits"] = result.logits
        arrays["output_q"] = result.output_q
    key = {"instructions": "instructions", "host_ns": "host_ns", "cycles": "cycles"}.get(result.counter_kind or "")
    if key:
        arrays[key] = result.counts
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def run_main(args: argparse.Namespace) -> int:
    firmware: Path = args.firmware
    target = check_firmware(firmware)
    entry = args.entry or ("train_step" if args.steps is not None else "forward")
    if args.steps is not None and entry != "train_step":
        raise UserError("--steps applies to --entry train_step")
    if args.steps is not None and args.steps < 0:
        raise UserError(f"--steps must be >= 0, got {args.steps}")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout:g}")
    inputs: Path = args.inputs or firmware.parent / "inputs.npz"
    if not inputs.is_file():
        raise UserError(f"no such inputs file: {inputs}" + ("" if args.inputs else " (pass --inputs IN.npz)"))
    images, labels, have_labels = load_inputs(inputs, entry)
    interface = model_interface(firmware)
    if interface is not None:
        shape, classes = interface
        if tuple(images.shape[1:]) != shape:
            raise UserError(f"{inputs}: images are {list(images.shape[1:])} but the model takes int8 NHWC "
                            f"{list(shape)}")
        if entry == "train_step" and have_labels and (labels.min() < 0 or labels.max() >= classes):
            raise UserError(f"{inputs}: labels must be in [0, {classes}), got {labels.min()}..{labels.max()}")
    mode = protocol.MODE_TRAIN if entry == "train_step" else protocol.MODE_INFER
    steps = len(images) if args.steps is None else args.steps
    request = protocol.encode_request(images, labels, mode, steps if mode == protocol.MODE_TRAIN else 0)
    expected = f"{steps} steps" if mode == protocol.MODE_TRAIN else f"{len(images)} images"
    result = run(firmware, request, args.timeout, expected)
    info = summary(result, target, firmware, labels, have_labels)
    if args.output:
        save_npz(args.output, result)
    if args.json:
        print(json.dumps(info))
    else:
        print_table(result, info, labels, have_labels)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(args_list)
    try:
        sys.exit(run_main(args))
    except (UserError, build.ToolNotFoundError, protocol.ProtocolError, OSError) as e:
        if args.debug:
            raise
        print(f"qtrain-run: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT if not isinstance(e, protocol.ProtocolError) else EXIT_FAILED)
    except RunFailed as e:
        if args.debug:
            raise
        print(f"qtrain-run: error: {e}", file=sys.stderr)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
