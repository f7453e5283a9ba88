"""`qtrain-run`: run a compiled model's firmware on QEMU (Cortex-M7, M4F or M33) or the host and collect the results.

    qtrain-run DIR/firmware.elf [--inputs TRAIN.npz] [--eval EVAL.npz|same] [--entry forward|train_step]
               [--steps S] [--eval-every K] [-o OUT.npz] [--json] [--progress|--quiet] [--timeout S]
               [--flash-image FILE [--checkpoint-every K]] [--power-cut-at-instruction N]
               [--profile [--profile-chart PNG]] [--debug]

The firmware is either an ARM ELF built for a QEMU target, run with semihosting on the machine it names
(`--target qemu`: `qemu-system-arm -M mps2-an500 -cpu cortex-m7 -icount shift=0`; `qemu-m4`: `-M
mps2-an386 -cpu cortex-m4`; `qemu-m33`: `-M mps2-an505 -cpu cortex-m33`), or a host executable built for
`--target host` (run directly); both speak the request/result protocol of targets/armv7em/harness.c.

Inputs (DESIGN.md conventions): `image` int8 NHWC [N, H, W, C], already quantized with the model's input
parameters; `label` int [N] (optional for `forward`). Without `--inputs`, `inputs.npz` next to the
firmware is used. The entry defaults to `train_step` when `--steps` or `--eval` is given (S steps over
the images in order, wrapping around; S defaults to one per image) and to `forward` (each image once)
otherwise.

Evaluation on the device: `--eval EVAL.npz` (its `image`, and `label` if present) runs the forward pass
over the evaluation images before the first step and after the last one, and with `--eval-every K` also
after every K-th step. A task file holding `image`/`label`/`test_image`/`test_label` serves both:
`--eval same` (or `--eval` naming the --inputs file) evaluates on `test_image`/`test_label`.

Outputs: `-o OUT.npz` holds the interpreter's keys (`logits` and `output_q`, or `loss` and
`param/<name>`) plus `instructions` (uint64, per image or step; `host_ns` for a host build). With
`--eval` it adds `eval_logits_before`, `eval_output_q_before`, `eval_logits_after`, `eval_output_q_after`
([M, classes], the forward pass over the evaluation images before the first and after the last step),
`eval_instructions` ([passes, M]) and, with `--eval-every` and labels, `eval_accuracy_curve` (float64
[passes, 2]: step, accuracy; from step 0 to S). Every OUT.npz has `step` (int64): the device's step
counter at the end. stdout gets a table of loss / instructions per step (or
accuracy; with --eval, accuracy before and after), or with `--json` only the JSON object
{"instructions_per_step", "macs_per_step", "stack_bytes", "sram_bytes", "flash_bytes", ...} where
sram_bytes = the model's static SRAM (qtrain_memory.peak_sram_bytes) + the measured stack high-water mark
and flash_bytes = the firmware's Flash sections (.vectors + .text + .rodata + .qtrain.weights + .data);
"sram_limit_bytes" and "flash_limit_bytes" are the target board's (null on the host); with --eval also
"eval_images", "eval_accuracy_before", "eval_accuracy_after", "eval_accuracy_curve"; always "step",
"restored_step" and "checkpoints" (written in this run).

Checkpoints: `--flash-image FILE` gives the device a Flash that persists in FILE (the whole 1 MB
Flash; made from the firmware when missing, and otherwise the firmware is written into it as flashing
would, keeping the checkpoint sectors). At start the device restores its newest valid checkpoint from
it: all its training state (the trained tensors, the step counter, momentum velocities), and the step
counter also picks the next training sample (step t trains on sample t mod N) and the learning rate of
the schedule, so `--steps S` trains S more steps continuing the data order. `--checkpoint-every K`
saves a checkpoint after every step that leaves the step counter a multiple of K.
`--power-cut-at-instruction N` (QEMU) stops the emulator right before guest instruction N + 1, as
pulling the plug would (a QEMU TCG plugin, power_cut.py): exit status 0, a one-line note on stderr (and
with --json {"power_cut": true, "instructions": N, "steps_done": ...}), no -o; the next run with the
same --flash-image resumes from the newest checkpoint that was complete. `--steps 0 -o OUT.npz` only
restores and writes the parameters and `step` (no --inputs needed). `execute` takes the same three
options, so `qtrain.Build.run` has them too.

Profile: `--profile` (a firmware from `qtrain-compile --profile`, with DIR/profile.json) adds the per-op
counts of the last training step and of one inference (after training, one more run infers the first
image; with --eval the last evaluation pass is used): op, layer, kind (forward / backward / update),
MACs, instructions (host: nanoseconds), per MAC and share of the call, as a table, as "profile" in
--json, and with `--profile-chart PNG` as a horizontal bar chart.

Progress: the firmware prints a line per step / evaluation pass / image while it runs; qtrain-run reads
them as they come and draws a progress bar (steps, running loss, latest evaluation accuracy, ETA) on
stderr when stderr is a terminal or `--progress` is given (`--quiet`: never).

Exit status: 0 success, 1 the firmware failed (fault, stack overflow, timeout, incomplete results),
2 bad input or usage. Errors are one line on stderr; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from qtrain.errors import UserError
from qtrain.targets.armv7em import build, power_cut, protocol
from qtrain.targets.armv7em import flash_image as flash_image_file
from qtrain.tools import profile_report
from qtrain.tools.plumbing import (
    ArgumentParser,
    CheckFailed,
    ProgressBar,
    check_input_q,
    check_labels,
    check_output,
    images_and_labels,
    number,
    read_npz,
    run_tool,
    same_file,
    write_npz,
)

DEFAULT_TIMEOUT_S = 1800.0
PRINT_ROWS = 20
"""Per-image rows printed for `forward`; more images only get the summary."""
OLD_HARNESS_MESSAGE = "qtrain-harness: unsupported or inconsistent request header"
"""What a firmware of an older protocol version answers to the requests qtrain-run writes (which a
current harness always accepts)."""
SAME = "same"
"""`--eval same`: evaluate on the --inputs file's test_image / test_label."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="qtrain-run", description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("firmware", type=Path, help="firmware.elf (--target qemu, qemu-m4, qemu-m33) or a host build")
    parser.add_argument("--inputs", type=Path, help="npz with `image` (int8 NHWC) and `label` "
                                                    "(default: inputs.npz next to the firmware)")
    parser.add_argument("--eval", metavar="EVAL.npz|same",
                        help="evaluate on these images before and after training (`same`: the --inputs "
                             "file's test_image / test_label)")
    parser.add_argument("--entry", choices=("forward", "train_step"),
                        help="what to run (default: train_step with --steps or --eval, else forward)")
    parser.add_argument("--steps", type=number(int, low=0, high=2**32 - 1, what="a number of steps"),
                        help="training steps (default: one per image)")
    parser.add_argument("--eval-every", type=number(int, low=1, high=2**32 - 1, what="a number of steps"),
                        metavar="K", help="also evaluate after every K-th step (for a learning curve; needs --eval)")
    parser.add_argument("-o", "--output", type=Path, help="write the results to this npz")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--progress", action="store_true", default=None,
                       help="draw the progress bar on stderr even when it is not a terminal")
    shown.add_argument("--quiet", dest="progress", action="store_false", help="never draw the progress bar")
    parser.add_argument("--flash-image", type=Path, metavar="FILE",
                        help="persist the device's Flash (its checkpoints) in FILE; made when missing")
    parser.add_argument("--checkpoint-every", type=number(int, low=1, high=2**32 - 1, what="a number of steps"),
                        metavar="K", help="save a checkpoint to Flash after every K-th step (needs --flash-image)")
    parser.add_argument("--power-cut-at-instruction", type=number(int, low=0, high=2**64 - 1,
                                                                  what="an instruction count"),
                        metavar="N", help="stop the emulator after N guest instructions, as a power cut would (QEMU)")
    parser.add_argument("--timeout", type=number(float, low=0, low_open=True, high=math.inf, what="a time in seconds"),
                        default=DEFAULT_TIMEOUT_S,
                        help=f"seconds before the run is stopped (default {DEFAULT_TIMEOUT_S:.0f})")
    parser.add_argument("--profile", action="store_true",
                        help="per-op counts of one step and one inference (firmware from qtrain-compile --profile)")
    parser.add_argument("--profile-chart", type=Path, metavar="PNG", help="with --profile: a bar chart of the ops")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------

def load_inputs(path: Path, entry: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """(images int8 [N, H, W, C], labels int32 [N], whether the labels came from the file)."""
    images, labels = images_and_labels(read_npz(path), path, need_labels=entry == "train_step")
    if labels is None:
        return images, np.zeros(len(images), np.int32), False
    return images, labels, True


def load_eval(spec: str, inputs: Path) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(images, labels or None, a name for messages) for `--eval spec`."""
    if spec == SAME or (Path(spec).is_file() and inputs.is_file() and Path(spec).resolve() == inputs.resolve()):
        arrays = read_npz(inputs)
        if "test_image" not in arrays:
            raise UserError(f"--eval {spec}: {inputs} has no 'test_image' array (a task file holds image, label, "
                            f"test_image, test_label)")
        images, labels = images_and_labels(arrays, inputs, "test_image", "test_label", need_labels=False)
        return images, labels, f"{inputs} (test_image)"
    path = Path(spec)
    arrays = read_npz(path, "evaluation")
    if "image" not in arrays and "test_image" in arrays:
        images, labels = images_and_labels(arrays, path, "test_image", "test_label", need_labels=False)
        return images, labels, f"{path} (test_image)"
    images, labels = images_and_labels(arrays, path, need_labels=False)
    return images, labels, str(path)


def model_interface(firmware: Path) -> tuple[tuple[int, int, int], int] | None:
    """(input H, W, C; classes) read from the firmware's `qtrain_model` descriptor, if it has one."""
    raw = build.elf_symbol_bytes(firmware, "qtrain_model")
    if raw is None or len(raw) < 24:
        return None
    _abi, h, w, c, _input_bytes, classes = np.frombuffer(raw[:24], "<u4")
    return (int(h), int(w), int(c)), int(classes)


def model_input_quant(firmware: Path) -> tuple[float, int] | None:
    """(scale, zero point) the model's input is quantized with, from the firmware's `qtrain_input_quant`."""
    raw = build.elf_symbol_bytes(firmware, "qtrain_input_quant")
    if raw is None or len(raw) != 8:
        return None
    scale, zero_point = np.frombuffer(raw, "<f4")
    return float(scale), int(zero_point)


def check_firmware(firmware: Path) -> str:
    """The firmware's target: 'host' or a QEMU target (build.QEMU_TARGETS); UserError for anything
    qtrain-run cannot run."""
    if not firmware.is_file():
        raise UserError(f"no such firmware: {firmware}")
    try:
        machine = build.elf_machine(firmware)
    except ValueError as e:
        raise UserError(str(e)) from e
    if machine != build.EM_ARM:
        return "host"
    return build.qemu_board(firmware).name


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------

@dataclass
class Console:
    """What the firmware printed: progress messages and every other line."""

    progress: list[protocol.ProgressLine]
    messages: list[str]


class PowerCut(Exception):  # noqa: N818 - an outcome the user asked for, not an error
    """The run ended at --power-cut-at-instruction: `instructions` executed, `steps_done` steps reported."""

    def __init__(self, instructions: int, steps_done: int):
        super().__init__(f"power cut after {instructions} instructions")
        self.instructions = instructions
        self.steps_done = steps_done


FLASH_LINK = "flash.bin"
"""The name the firmware opens the --flash-image file by (a link in its working directory: semihosting
arguments cannot hold spaces or commas)."""


def firmware_command(firmware: Path, args: Sequence[str], qemu_args: Sequence[str] = ()) -> list[str]:
    if build.elf_machine(firmware) == build.EM_ARM:
        return [*build.qemu_command(firmware.resolve(), args), *qemu_args]
    return [str(firmware.resolve()), *args]


def run(firmware: Path, request: bytes, timeout: float, expected: str,
        progress: ProgressBar | None = None, *, flash: Path | None = None,
        qemu_args: Sequence[str] = (), work_dir: Path | None = None) -> tuple[protocol.HarnessResult, Console]:
    """Run `firmware` on `request`, reading its console while it runs (progress lines go to
    `progress`); `expected` ("3 steps", "10 images") is only for messages. `flash`: the Flash image
    file (flash_image.prepare made it); `qemu_args`: more QEMU options, e.g. power_cut.plugin_args (a
    power cut raises PowerCut). `work_dir`: where the request and result files' temporary folder goes
    (default: the temporary folder)."""
    console = Console([], [])

    def read(stream: IO[str]) -> None:
        for line in stream:
            event = protocol.parse_progress(line)
            if event is None:
                if line.strip():
                    console.messages.append(line.rstrip("\r\n"))
                continue
            console.progress.append(event)
            if progress is not None:
                if event.kind == "eval":
                    progress.evaluated(event.done, event.correct, event.labelled)
                else:
                    progress.advance(event.done, event.loss)

    with tempfile.TemporaryDirectory(prefix="qtrain-run-", dir=work_dir) as tmp:
        (Path(tmp) / "in.bin").write_bytes(request)
        result_path = Path(tmp) / "out.bin"
        if flash is not None:
            (Path(tmp) / FLASH_LINK).symlink_to(flash.resolve())
        command = firmware_command(firmware, ["in.bin", "out.bin", *([FLASH_LINK] if flash else [])], qemu_args)
        process: subprocess.Popen[str] | None = None
        try:
            # Started inside the try: a Ctrl-C landing between the start and the wait must still stop the
            # firmware (started after the signal reached the process group, it never got it).
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True, errors="replace", cwd=tmp)
            assert process.stderr is not None
            reader = threading.Thread(target=read, args=(process.stderr,), daemon=True)
            reader.start()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    returncode = process.wait(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        raise
                    if progress is not None:
                        progress.tick()
        except subprocess.TimeoutExpired as e:
            process.kill()
            process.wait()
            reader.join()
            if progress is not None:
                progress.close()
            done = ""
            try:
                done = f" ({protocol.decode_result(result_path.read_bytes()).records} of {expected} done)"
            except (OSError, protocol.ProtocolError):
                pass
            raise CheckFailed(f"{firmware.name} timed out after {timeout:g} s{done}") from e
        finally:
            if process is not None and process.poll() is None:  # KeyboardInterrupt while waiting
                process.kill()
                process.wait()
        reader.join()
        process.stderr.close()
        if progress is not None:
            progress.close()
        if returncode in (-signal.SIGINT, -signal.SIGTERM):
            raise KeyboardInterrupt  # Ctrl-C reached the firmware's process group first
        cut = next((m for line in console.messages if (m := power_cut.CUT_LINE.fullmatch(line))), None)
        if returncode == power_cut.POWER_CUT_STATUS and cut is not None:
            raise PowerCut(int(cut[1]), sum(1 for p in console.progress if p.kind == "step"))
        if returncode != 0:
            why = console.messages[-1] if console.messages else "no message"
            if returncode == 2 and why == OLD_HARNESS_MESSAGE and not console.progress:
                why += f" (built before protocol version {protocol.VERSION}? rebuild it with qtrain-compile)"
            error = UserError if returncode == 2 else CheckFailed
            raise error(f"{firmware.name} failed with status {returncode}: {why}")
        if not result_path.exists():
            raise CheckFailed(f"{firmware.name} exited without writing its results")
        try:
            result = protocol.decode_result(result_path.read_bytes())
        except protocol.ProtocolError as e:
            raise CheckFailed(f"{firmware.name} wrote malformed results: {e}") from e
    if not result.complete:
        raise CheckFailed(f"{firmware.name} stopped after {result.records} of {expected} without completing its "
                        f"results")
    return result, console


# ---------------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------------

@dataclass
class Evaluation:
    """The evaluation set of a train + evaluate run and what the passes found."""

    images: np.ndarray
    labels: np.ndarray | None
    name: str

    def accuracies(self, result: protocol.HarnessResult) -> np.ndarray | None:
        """float64 [passes]: the share of evaluation images whose argmax equals the label."""
        if self.labels is None or result.eval_logits is None:
            return None
        return np.mean(np.argmax(result.eval_logits, axis=2) == self.labels[None, :], axis=1)


def summary(result: protocol.HarnessResult, target: str, firmware: Path, labels: np.ndarray,
            have_labels: bool, evaluation: Evaluation | None = None) -> dict[str, Any]:
    """The --json object (DESIGN.md "Command-line conventions") plus a few more details."""
    counts = [int(c) for c in result.counts]
    train = result.mode != protocol.MODE_INFER
    static_sram = result.memory["peak_sram_bytes"]
    usage = build.memory_usage(firmware, target) if target != "host" else None
    out: dict[str, Any] = {
        "target": target,
        "entry": "train_step" if train else "forward",
        "steps": result.records,
        "instructions_per_step": counts if result.counter_kind == "instructions" else None,
        "macs_per_step": result.macs_per_train_step if train else result.macs_per_infer,
        "stack_bytes": result.stack_used,
        "sram_bytes": None if result.stack_used is None else static_sram + result.stack_used,
        "flash_bytes": None if usage is None else usage.flash_bytes,
        "static_sram_bytes": static_sram,
        "sram_limit_bytes": None if usage is None else usage.sram_limit_bytes,
        "flash_limit_bytes": None if usage is None else usage.flash_limit_bytes,
        "stack_reserved_bytes": result.stack_size,
        "init_instructions": result.init_count if result.counter_kind == "instructions" else None,
        "memory": result.memory,
        "step": result.step,
        "restored_step": result.restored_step,
        "checkpoints": result.checkpoints,
    }
    if result.counter_kind == "host_ns":
        out["host_ns_per_step"] = counts
    if train:
        assert result.loss is not None
        out["loss"] = [float(x) for x in result.loss]
    elif have_labels:
        assert result.logits is not None
        out["accuracy"] = float(np.mean(np.argmax(result.logits, axis=1) == labels))
    if evaluation is not None:
        assert result.eval_steps is not None and result.eval_counts is not None
        accuracies = evaluation.accuracies(result)
        out["eval_images"] = result.num_eval
        out["eval_accuracy_before"] = None if accuracies is None else float(accuracies[0])
        out["eval_accuracy_after"] = None if accuracies is None else float(accuracies[-1])
        out["eval_accuracy_curve"] = None if accuracies is None or not result.eval_every else \
            [[int(s), float(a)] for s, a in zip(result.eval_steps, accuracies, strict=True)]
        key = "instructions" if result.counter_kind == "instructions" else "host_ns"
        if result.counter_kind in ("instructions", "host_ns"):
            out[f"eval_{key}_per_image"] = float(np.mean(result.eval_counts))
    return out


def print_table(result: protocol.HarnessResult, info: dict[str, Any], labels: np.ndarray, have_labels: bool,
                evaluation: Evaluation | None = None) -> None:
    unit = {"instructions": "instructions", "host_ns": "host ns", "cycles": "cycles"}.get(result.counter_kind or "",
                                                                                          "count")
    if result.mode != protocol.MODE_INFER:
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
        print(f"mean {unit} per {'step' if result.mode != protocol.MODE_INFER else 'image'}: "
              f"{float(np.mean(result.counts)):.0f} ({info['macs_per_step']} MACs)")
    if evaluation is not None:
        assert result.eval_logits is not None and result.eval_steps is not None and result.eval_counts is not None
        print(f"evaluation: {result.num_eval} images from {evaluation.name}, {len(result.eval_steps)} passes, "
              f"mean {unit} per image {float(np.mean(result.eval_counts)):.0f} ({result.macs_per_infer} MACs)")
        accuracies = evaluation.accuracies(result)
        if accuracies is None:
            print("eval accuracy: no labels")
        else:
            m = result.num_eval
            for name, index in (("before", 0), ("after", -1)):
                correct = round(float(accuracies[index]) * m)
                print(f"eval accuracy {name}: {correct}/{m} ({100 * accuracies[index]:.1f}%)"
                      f"{' at step ' + str(int(result.eval_steps[index])) if name == 'after' else ''}")
            if result.eval_every:
                print(f"{'step':>6} {'eval accuracy':>14}")
                for step, accuracy in zip(result.eval_steps, accuracies, strict=True):
                    print(f"{int(step):>6} {100 * accuracy:>13.1f}%")
    if info["restored_step"] or info["checkpoints"]:
        print(f"device step counter: {info['step']} (restored at {info['restored_step']}; "
              f"{info['checkpoints']} checkpoints written)")
    board = f" on {info['target']}" if info.get("sram_limit_bytes") else ""
    if info["stack_bytes"] is not None:
        print(f"SRAM: {info['sram_bytes']} bytes = static {info['static_sram_bytes']} + stack {info['stack_bytes']} "
              f"(of {info['stack_reserved_bytes']} reserved)"
              + (f"; the board has {info['sram_limit_bytes']}{board}" if board else ""))
    if info["flash_bytes"] is not None:
        print(f"Flash: {info['flash_bytes']} bytes" + (f" of {info['flash_limit_bytes']}{board}" if board else ""))


def save_npz(path: Path, result: protocol.HarnessResult, evaluation: Evaluation | None = None,
             inputs: Sequence[Path | None] = ()) -> None:
    """`-o OUT.npz`: `result_arrays`, written through a temporary file, never over one of `inputs`."""
    arrays = result_arrays(result, evaluation)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from e
    write_npz(path, arrays, inputs)


def result_arrays(result: protocol.HarnessResult, evaluation: Evaluation | None = None) -> dict[str, np.ndarray]:
    """What `-o OUT.npz` holds (module docstring), by key."""
    arrays: dict[str, np.ndarray] = {}
    if result.mode != protocol.MODE_INFER:
        assert result.loss is not None
        arrays["loss"] = result.loss
        arrays.update({f"param/{name}": value for name, value in result.params.items()})
    else:
        assert result.logits is not None and result.output_q is not None
        arrays["logits"] = result.logits
        arrays["output_q"] = result.output_q
    arrays["step"] = np.array(result.step, np.int64)
    key = {"instructions": "instructions", "host_ns": "host_ns", "cycles": "cycles"}.get(result.counter_kind or "")
    if key:
        arrays[key] = result.counts
    if evaluation is not None:
        assert result.eval_logits is not None and result.eval_output_q is not None
        assert result.eval_counts is not None and result.eval_steps is not None
        arrays["eval_logits_before"] = result.eval_logits[0]
        arrays["eval_output_q_before"] = result.eval_output_q[0]
        arrays["eval_logits_after"] = result.eval_logits[-1]
        arrays["eval_output_q_after"] = result.eval_output_q[-1]
        if key:
            arrays[f"eval_{key}"] = result.eval_counts
        accuracies = evaluation.accuracies(result)
        if accuracies is not None and result.eval_every:
            arrays["eval_accuracy_curve"] = np.stack([result.eval_steps.astype(np.float64), accuracies], axis=1)
    return arrays


def check_images(images: np.ndarray, labels: np.ndarray | None, what: str,
                 interface: tuple[tuple[int, int, int], int] | None) -> None:
    if interface is None:
        return
    shape, classes = interface
    if tuple(images.shape[1:]) != shape:
        raise UserError(f"{what}: images are {list(images.shape[1:])} but the model takes int8 NHWC {list(shape)}")
    if labels is not None:
        check_labels(labels, classes, what)


def check_checkpoint_options(target: str, entry: str, flash_image: Path | None, checkpoint_every: int | None,
                             power_cut_at_instruction: int | None, others: Sequence[Path | None] = ()) -> None:
    """The checkpoint options against the firmware's target, the entry and the other files (`others`:
    the Flash image must not be one of them)."""
    if checkpoint_every is not None:
        if flash_image is None:
            raise UserError("--checkpoint-every needs --flash-image FILE (where the checkpoints persist)")
        if entry != "train_step":
            raise UserError("--checkpoint-every applies to training (--entry train_step)")
        if not 1 <= checkpoint_every < 2**32:
            raise UserError(f"--checkpoint-every must be a number of steps >= 1, got {checkpoint_every}")
    if power_cut_at_instruction is not None:
        if target != "qemu":
            raise UserError("--power-cut-at-instruction needs a QEMU firmware (--target qemu): it stops the emulator")
        if power_cut_at_instruction < 0:
            raise UserError(f"--power-cut-at-instruction must be >= 0, got {power_cut_at_instruction}")
    if flash_image is not None:
        if target not in ("qemu", "host"):
            raise UserError(f"--flash-image needs a --target qemu or host firmware, not {target} (the Flash image "
                            f"file is laid out like the STM32F746's Flash)")
        for other in others:
            if other is not None and same_file(flash_image, other):
                raise UserError(f"--flash-image {flash_image} is also {other}; give the Flash image its own file")


def execute(firmware: Path, target: str, images: np.ndarray, labels: np.ndarray, have_labels: bool, *, entry: str,
            steps: int | None, evaluation: Evaluation | None = None, eval_every: int | None = None,
            timeout: float = DEFAULT_TIMEOUT_S, progress: bool | None = None,
            inputs_name: str = "the inputs", flash_image: Path | None = None, checkpoint_every: int | None = None,
            power_cut_at_instruction: int | None = None) -> tuple[protocol.HarnessResult, dict[str, Any]]:
    """Runs `firmware` (of `target`, `check_firmware`'s answer) on the images: S = `steps` training steps
    (default one per image) with `entry` train_step, each image once with forward; with `evaluation`,
    the evaluation passes (before, every `eval_every` steps, after). Checks the images against the
    model's interface first (UserError). `progress`: draw the bar on stderr (None: when it is a terminal).
    Checkpoints (module docstring): `flash_image` persists the device's Flash (made from the firmware
    when missing), `checkpoint_every` K saves one every K steps, `power_cut_at_instruction` N stops QEMU
    there and raises `PowerCut`. Returns the decoded results and the --json summary. What qtrain-run and
    `qtrain.Build.run` share."""
    check_checkpoint_options(target, entry, flash_image, checkpoint_every, power_cut_at_instruction, (firmware,))
    interface = model_interface(firmware)
    check_images(images, labels if entry == "train_step" and have_labels else None, inputs_name, interface)
    if evaluation is not None:
        name = evaluation.name
        check_images(evaluation.images, evaluation.labels, name, interface)
        if tuple(evaluation.images.shape[1:]) != tuple(images.shape[1:]):
            raise UserError(f"{name}: evaluation images are {list(evaluation.images.shape[1:])} but the training "
                            f"images {list(images.shape[1:])}")
        if eval_every is not None and evaluation.labels is None:
            raise UserError(f"{name} has no labels, which the --eval-every accuracy curve needs")
    steps = len(images) if steps is None else steps
    if evaluation is not None:
        mode = protocol.MODE_TRAIN_EVAL
        request = protocol.encode_request(images, labels, mode, steps, eval_images=evaluation.images,
                                          eval_labels=evaluation.labels, eval_every=eval_every or 0,
                                          checkpoint_every=checkpoint_every or 0)
    else:
        mode = protocol.MODE_TRAIN if entry == "train_step" else protocol.MODE_INFER
        request = protocol.encode_request(images, labels, mode, steps if mode == protocol.MODE_TRAIN else 0,
                                          checkpoint_every=checkpoint_every or 0)
    expected = f"{steps} steps" if mode != protocol.MODE_INFER else f"{len(images)} images"
    show = sys.stderr.isatty() if progress is None else progress
    bar: ProgressBar | None = None
    if show:
        passes = list(protocol.eval_schedule(steps, eval_every or 0)) if evaluation is not None else []
        total, unit = (steps, "step") if mode != protocol.MODE_INFER else (len(images), "image")
        bar = ProgressBar("qtrain-run", sys.stderr, sys.stderr.isatty(), total, unit, passes)
    if flash_image is not None:
        flash_image_file.prepare(flash_image, firmware)
    cut_at = power_cut_at_instruction
    result, _ = run(firmware, request, timeout, expected, bar, flash=flash_image,
                    qemu_args=power_cut.plugin_args(cut_at) if cut_at is not None else ())
    info = summary(result, target, firmware, labels, have_labels, evaluation)
    return result, info


def run_main(args: argparse.Namespace) -> int:
    firmware: Path = args.firmware
    target = check_firmware(firmware)
    train_default = args.steps is not None or args.eval is not None
    entry = args.entry or ("train_step" if train_default else "forward")
    if args.steps is not None and entry != "train_step":
        raise UserError("--steps applies to --entry train_step")
    if args.eval is not None and entry != "train_step":
        raise UserError("--eval applies to training (--entry train_step): it evaluates before and after the steps")
    if args.eval_every is not None and args.eval is None:
        raise UserError("--eval-every needs --eval EVAL.npz (the images to evaluate on)")
    if args.eval_every is not None and args.eval_every < 1:
        raise UserError(f"--eval-every must be >= 1, got {args.eval_every}")
    if args.steps is not None and args.steps < 0:
        raise UserError(f"--steps must be >= 0, got {args.steps}")
    if args.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {args.timeout:g}")
    if args.profile_chart is not None and not args.profile:
        raise UserError("--profile-chart needs --profile")
    check_checkpoint_options(target, entry, args.flash_image, args.checkpoint_every, args.power_cut_at_instruction,
                             (args.firmware, args.inputs, args.output))
    slots = check_profiled(firmware) if args.profile else None
    interface = model_interface(firmware)
    inputs: Path = args.inputs or firmware.parent / "inputs.npz"
    if not inputs.is_file() and args.inputs is None and args.steps == 0 and args.eval is None and interface:
        # --steps 0: only restore and report; one blank image satisfies the request format.
        images, labels, have_labels = np.zeros((1, *interface[0]), np.int8), np.zeros(1, np.int32), True
    else:
        if not inputs.is_file():
            raise UserError(f"no such inputs file: {inputs}" + ("" if args.inputs else " (pass --inputs IN.npz)"))
        images, labels, have_labels = load_inputs(inputs, entry)
        if (quant := model_input_quant(firmware)) is not None:
            for checked in (inputs, Path(args.eval) if args.eval not in (None, SAME) else None):
                if checked is not None and checked.is_file():
                    check_input_q(read_npz(checked), checked, *quant)
    sources = [firmware, inputs, Path(args.eval) if args.eval not in (None, SAME) else None, args.flash_image]
    if args.output is not None:
        check_output(args.output, sources)  # before the run, not after it
    evaluation: Evaluation | None = None
    if args.eval is not None:
        eval_images, eval_labels, name = load_eval(args.eval, inputs)
        evaluation = Evaluation(eval_images, eval_labels, name)
    try:
        result, info = execute(firmware, target, images, labels, have_labels, entry=entry, steps=args.steps,
                               evaluation=evaluation, eval_every=args.eval_every, timeout=args.timeout,
                               progress=args.progress, inputs_name=str(inputs), flash_image=args.flash_image,
                               checkpoint_every=args.checkpoint_every,
                               power_cut_at_instruction=args.power_cut_at_instruction)
    except PowerCut as cut:
        steps = len(images) if args.steps is None else args.steps
        done = f"{cut.steps_done} of {steps} steps done" if entry == "train_step" else "inference"
        print(f"qtrain-run: power cut after {cut.instructions} instructions ({done}); no results"
              f"{' (' + str(args.output) + ' not written)' if args.output else ''}", file=sys.stderr)
        if args.json:
            print(json.dumps({"power_cut": True, "instructions": cut.instructions, "steps_done": cut.steps_done}))
        return 0
    if args.output:
        save_npz(args.output, result, evaluation, sources)
    profiles = []
    if slots is not None:
        profiles = profile_entries(firmware, result, slots, images, labels, args.timeout)
        info["profile"] = {p.entry: p.to_json() for p in profiles}
        if args.profile_chart is not None:
            profile_report.write_chart(args.profile_chart, profiles)
    if args.json:
        print(json.dumps(info))
    else:
        print_table(result, info, labels, have_labels, evaluation)
        for p in profiles:
            profile_report.print_profile(p)
    return 0


def check_profiled(firmware: Path) -> list[Any]:
    """The slots of a profiled firmware (DIR/profile.json); UserError for an uninstrumented one."""
    raw = build.elf_symbol_bytes(firmware, "qtrain_profile_slots")
    if raw is None:
        raise UserError(f"{firmware} has no per-op counters; compile it with `qtrain-compile --profile`")
    slots = profile_report.load_slots(firmware)
    if int(np.frombuffer(raw[:4], "<u4")[0]) != len(slots):
        raise UserError(f"{firmware.parent / profile_report.PROFILE_JSON} describes {len(slots)} slots but the "
                        f"firmware has {int(np.frombuffer(raw[:4], '<u4')[0])}: recompile")
    return slots


def profile_entries(firmware: Path, result: protocol.HarnessResult, slots: list[Any], images: np.ndarray,
                    labels: np.ndarray, timeout: float) -> list[profile_report.EntryProfile]:
    """The profiles of the last training step and of one inference (a second run when training ran
    without evaluation passes)."""
    unit = result.counter_kind or "count"
    if result.profile is None:
        raise CheckFailed(f"{firmware.name} wrote no profile table")
    out = []
    infer = result
    if result.mode != protocol.MODE_INFER and result.records:
        out.append(profile_report.entry_profile("train_step", unit, int(result.counts[-1]),
                                                result.macs_per_train_step, slots, result.profile))
    if result.mode == protocol.MODE_TRAIN:
        request = protocol.encode_request(images[:1], labels[:1], protocol.MODE_INFER)
        infer, _ = run(firmware, request, timeout, "1 image")
        assert infer.profile is not None
    if infer.mode == protocol.MODE_TRAIN_EVAL:
        assert infer.eval_counts is not None and infer.profile is not None
        total = int(infer.eval_counts[-1, -1])
    else:
        total = int(infer.counts[-1])
    assert infer.profile is not None
    out.append(profile_report.entry_profile("forward", unit, total, infer.macs_per_infer, slots, infer.profile))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)
    run_tool("qtrain-run", lambda: run_main(parse_args(args_list)), args_list)


if __name__ == "__main__":
    main()
