"""The Python API: compile a model for a board, fine-tune it on the (emulated) device, read the results.

    import qtrain

    build = qtrain.compile("examples/digits/digits.mlir", scheme="bias-only", target="qemu-m4")
    result = build.run("task.npz", steps=500, eval="same", eval_every=100)
    result.accuracy_before, result.accuracy_after      # held-out accuracy measured on the device
    result.loss, result.accuracy_curve                 # per step; [passes, 2] (step, accuracy)
    result.sram_bytes, result.flash_bytes, result.instructions_per_step
    build.export(result, "finetuned.onnx")             # the fine-tuned network as QOperator ONNX

`qtrain-compile` and `qtrain-run` are this API behind a command line: `compile` is what qtrain-compile
does (and writes the same folder), `Build.run` runs the firmware through the code qtrain-run runs
(`qtrain.tools.qtrain_run.execute`), `Result.save` writes what `qtrain-run -o` writes, and `Build.export`
is `qtrain-export`. Errors a user can fix are `qtrain.errors.UserError`s with a one-line message.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from qtrain.errors import UserError
from qtrain.targets.armv7em import build as boards
from qtrain.transforms.narrow_gradients import DEFAULT_GRAD_PRECISION, GRAD_PRECISIONS
from qtrain.transforms.recipe import COMPILE_RECIPE, DEFAULT_WEIGHT_STORAGE
from qtrain.transforms.stream_backward import STREAM_MODES

ModelSource = str | Path | ModuleOp
"""A model: an .onnx, a reference .pkl or a forward-only .mlir file, or a forward-only module."""
Arrays = Mapping[str, np.ndarray]
Images = str | Path | Arrays
"""Images: an .npz file or its arrays (DESIGN.md conventions: `image` int8 NHWC, `label` int)."""


def load_model(path: Path, num_classes: int = 10, calibration: Path | None = None) -> ModuleOp:
    """Forward-only qtrain IR from an ONNX model, a reference .pkl model, or an .mlir file."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from qtrain.frontends.onnx import import_onnx

        return import_onnx(path, calibration=str(calibration) if calibration else None, classifier=True)
    if suffix == ".pkl":
        from qtrain.frontends.tiny_training import DEFAULT_HEAD, import_tiny_training

        return import_tiny_training(path, num_classes=num_classes, head=DEFAULT_HEAD)
    if suffix == ".mlir":
        from qtrain.interpreter import load_module

        return load_module(path)
    raise UserError(f"{path}: unknown model format '{suffix}' (expected .onnx, .pkl or .mlir)")


def emit_llvm_ir(out: Path, target: str, final: Path | None = None) -> Path:
    """DIR/model.ll: the model's LLVM IR for the target (clang -S -emit-llvm with the firmware's flags);
    `final`: the folder `out` becomes (debug info names it, not the temporary one)."""
    ll = out / "model.ll"
    prefix_map = [f"-ffile-prefix-map={out.resolve()}={final.resolve()}"] if final is not None else []
    command = [boards.find_tool("clang"), *boards.compile_flags(target), f"-I{out}", "-S",  # type: ignore[arg-type]
               "-emit-llvm", *prefix_map, str(out / "model.c"), "-o", str(ll)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise boards.BuildError(f"clang -emit-llvm failed:\n{result.stderr.strip()}")
    return ll


@dataclass
class Result:
    """One run of a firmware on the device: training (with evaluation passes) or inference (`Build.run`).

    `arrays` holds exactly what `qtrain-run -o` writes (`Result.save`); `info` is its `--json` object.
    Figures are measured on the device: instructions from QEMU's counter (None on the host), SRAM =
    the planned static SRAM + the painted stack's high-water mark, Flash = the firmware's sections.
    """

    target: str
    info: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def loss(self) -> np.ndarray | None:
        """float32 [steps]: the loss of every training step."""
        return self.arrays.get("loss")

    @property
    def accuracy_curve(self) -> np.ndarray | None:
        """float64 [passes, 2]: (step, held-out accuracy) from step 0 to the last (with `eval_every`)."""
        return self.arrays.get("eval_accuracy_curve")

    @property
    def accuracy_before(self) -> float | None:
        return self.info.get("eval_accuracy_before")

    @property
    def accuracy_after(self) -> float | None:
        return self.info.get("eval_accuracy_after")

    @property
    def params(self) -> dict[str, np.ndarray]:
        """The learned parameters (SRAM copies, storage dtype, trained slice) by name."""
        return {k.removeprefix("param/"): v for k, v in self.arrays.items() if k.startswith("param/")}

    @property
    def instructions_per_step(self) -> np.ndarray | None:
        counts = self.info.get("instructions_per_step")
        return None if counts is None else np.asarray(counts, dtype=np.int64)

    @property
    def macs_per_step(self) -> int:
        return int(self.info["macs_per_step"])

    @property
    def sram_bytes(self) -> int | None:
        return self.info.get("sram_bytes")

    @property
    def flash_bytes(self) -> int | None:
        return self.info.get("flash_bytes")

    @property
    def stack_bytes(self) -> int | None:
        return self.info.get("stack_bytes")

    @property
    def sram_limit_bytes(self) -> int | None:
        return self.info.get("sram_limit_bytes")

    @property
    def flash_limit_bytes(self) -> int | None:
        return self.info.get("flash_limit_bytes")

    def save(self, path: str | Path) -> Path:
        """Writes the arrays as `qtrain-run -o` does (qtrain-export reads it)."""
        from qtrain.files import write_npz

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_npz(path, self.arrays)


@dataclass
class Build:
    """A compiled model: the `qtrain-compile` folder (model.mlir, model.c, model.h, memory.json,
    memory.html, the firmware) and its figures."""

    directory: Path
    target: str
    memory: dict[str, Any]
    """memory.json: the planned static SRAM and its parts, the trainable tensors, the arena buffers."""
    flash_bytes: int | None = None
    """The firmware's Flash (code + weights; target builds)."""
    static_sram_bytes_in_elf: int | None = None
    trainable_tensors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def firmware(self) -> Path:
        return self.directory / ("firmware" if self.target == "host" else "firmware.elf")

    @property
    def model_mlir(self) -> Path:
        return self.directory / "model.mlir"

    @property
    def peak_sram_bytes(self) -> int:
        return int(self.memory["peak_sram_bytes"])

    def summary(self) -> dict[str, Any]:
        """What `qtrain-compile --json` prints."""
        out: dict[str, Any] = {
            "firmware": str(self.firmware),
            "target": self.target,
            "peak_sram_bytes": self.memory["peak_sram_bytes"],
            "arena_bytes": self.memory["arena_bytes"],
            "trainable_bytes": self.memory["trainable_bytes"],
            "state_bytes": self.memory.get("state_bytes", 0),
            "scratch_bytes": self.memory["scratch_bytes"],
            "budget_bytes": self.memory.get("budget_bytes"),
            "trainable_tensors": self.trainable_tensors,
            "peak_op": self.memory["peak_op"],
        }
        if self.flash_bytes is not None:
            out["flash_bytes"] = self.flash_bytes
            out["static_sram_bytes_in_elf"] = self.static_sram_bytes_in_elf
        return out

    @classmethod
    def open(cls, directory: str | Path) -> Build:
        """The build in an existing qtrain-compile folder."""
        directory = Path(directory)
        if not (directory / "memory.json").is_file():
            raise UserError(f"{directory} is not a qtrain-compile folder (no memory.json)")
        memory = json.loads((directory / "memory.json").read_text())
        firmware = next((directory / n for n in ("firmware.elf", "firmware") if (directory / n).is_file()), None)
        if firmware is None:
            raise UserError(f"{directory} has no firmware.elf or firmware")
        if firmware.name == "firmware":
            target = "host"
        else:
            target = boards.firmware_target(firmware) or "qemu"
        usage = boards.memory_usage(firmware, target) if target != "host" else None
        return cls(directory, target, memory, None if usage is None else usage.flash_bytes,
                   None if usage is None else usage.sram_bytes, len(memory.get("trainable", [])))

    def run(self, task: Images, *, steps: int | None = None, eval: Images | str | None = None,  # noqa: A002
            eval_every: int | None = None, timeout: float = 1800.0, progress: bool | None = False,
            flash_image: str | Path | None = None, checkpoint_every: int | None = None,
            power_cut_at_instruction: int | None = None) -> Result:
        """Runs the firmware (QEMU for a QEMU target, directly for a host build) on `task`.

        Training (`steps`, or `eval` given): S steps over `image` / `label` in order, wrapping around (S
        defaults to one per image). `eval="same"` evaluates on the task's `test_image` / `test_label`
        before the first and after the last step (and every `eval_every` steps: the accuracy curve);
        `eval` may also be another npz or its arrays (`image`, optional `label`). Without `steps` and
        `eval`: inference, each image once (`Result.arrays` has `logits` and `output_q`).
        Checkpoints, as qtrain-run's options of the same names: `flash_image` (the device's Flash,
        persisted in that file: training resumes from its newest checkpoint), `checkpoint_every`,
        `power_cut_at_instruction` (QEMU; raises `qtrain.tools.qtrain_run.PowerCut`).
        """
        from qtrain.tools import qtrain_run
        from qtrain.tools.plumbing import images_and_labels

        entry = "train_step" if steps is not None or eval is not None else "forward"
        if steps is not None and steps < 0:
            raise UserError(f"steps must be >= 0, got {steps}")
        if eval_every is not None and (eval is None or eval_every < 1):
            raise UserError("eval_every needs eval and must be >= 1")
        arrays, name = _arrays(task, "inputs")
        images, labels = images_and_labels(arrays, Path(name), need_labels=entry == "train_step")
        have_labels = labels is not None
        labels = labels if labels is not None else np.zeros(len(images), np.int32)
        evaluation = None
        if isinstance(eval, str | Path) and isinstance(task, str | Path):
            evaluation = qtrain_run.Evaluation(*qtrain_run.load_eval(str(eval), Path(task)))
        elif eval is not None:  # arrays: `same` takes the task's test split, else image (or test_image)
            eval_arrays, eval_name = (arrays, name) if isinstance(eval, str) and eval == qtrain_run.SAME \
                else _arrays(eval, "evaluation")
            key = "test_image" if eval_arrays is arrays or "image" not in eval_arrays else "image"
            eval_images, eval_labels = images_and_labels(eval_arrays, Path(eval_name), key,
                                                         key.replace("image", "label"), need_labels=False)
            evaluation = qtrain_run.Evaluation(eval_images, eval_labels, f"{eval_name} ({key})")
        target = qtrain_run.check_firmware(self.firmware)
        harness, info = qtrain_run.execute(self.firmware, target, images, labels, have_labels, entry=entry,
                                           steps=steps, evaluation=evaluation, eval_every=eval_every,
                                           timeout=timeout, progress=progress, inputs_name=name,
                                           flash_image=None if flash_image is None else Path(flash_image),
                                           checkpoint_every=checkpoint_every,
                                           power_cut_at_instruction=power_cut_at_instruction)
        return Result(target, info, qtrain_run.result_arrays(harness, evaluation))

    def export(self, params: Result | Arrays | str | Path, path: str | Path) -> Path:
        """Writes the fine-tuned network (this build's forward network with `params`: a training Result,
        its arrays, or a qtrain-run -o file) as QOperator ONNX; what qtrain-export does."""
        from qtrain.tools.qtrain_export import device_params, export_finetuned

        arrays, name = _arrays(params.arrays if isinstance(params, Result) else params, "parameters")
        export_finetuned(self.model_mlir, device_params(arrays, Path(name)), Path(path))
        return Path(path)


def _arrays(source: Images | Arrays, what: str) -> tuple[dict[str, np.ndarray], str]:
    from qtrain.tools.plumbing import read_npz

    if isinstance(source, str | Path):
        return read_npz(Path(source), what), str(source)
    return dict(source), f"the {what} arrays"


def compile(  # noqa: A001 (the API's verb, as in the issue: qtrain.compile)
    model: ModelSource,
    *,
    scheme: Any = "full",
    target: str = "qemu",
    output: str | Path | None = None,
    sram_kb: int | None = None,
    reorder: bool = True,
    fuse: bool = True,
    lr: float = COMPILE_RECIPE.lr,
    bias_lr: float | None = COMPILE_RECIPE.bias_lr,
    warmup_steps: int = COMPILE_RECIPE.warmup_steps,
    steps: int = COMPILE_RECIPE.steps,
    final_lr_ratio: float = COMPILE_RECIPE.final_lr_ratio,
    momentum: float = COMPILE_RECIPE.momentum,
    qas: bool = True,
    weight_storage: str = DEFAULT_WEIGHT_STORAGE,
    grad_precision: str = DEFAULT_GRAD_PRECISION,
    stream_backward: str = "auto",
    num_classes: int = 10,
    calibration: str | Path | None = None,
    emit_llvm: bool = False,
    memory_report: str | Path | None = None,
    lifetime_plot: str | Path | None = None,
    profile: bool = False,
    data: str | Path | np.ndarray | None = None,
    bounds_check: bool = False,
    force: bool = False,
) -> Build:
    """Compiles a forward-only model into a training firmware for `target` (see qtrain-compile --help).

    `scheme`: `full`, `bias-only`, `last-k=K`, `FILE.json#MODEL/BUDGET` or a typed `UpdateScheme`.
    The recipe (`lr`, `bias_lr`, `warmup_steps`, `steps`, `final_lr_ratio`, `momentum`) is compiled into
    the firmware; defaults `qtrain.transforms.recipe.COMPILE_RECIPE`.
    `grad_precision`: the arena format of activation gradients, "f32" or "bf16" (qtrain-narrow-gradients);
    `stream_backward`: "auto", "on" or "off" (qtrain-stream-backward).
    `sram_kb` defaults to the target's budget (`targets.armv7em.build.BOARDS`; 256 for qemu).
    `output`: the build folder (default: a new temporary folder). Writes model.mlir, model.c, model.h,
    memory.json, memory.html (the plan as a picture and a table), the firmware, and with `emit_llvm`
    model.ll, with `lifetime_plot` a PNG of the plan; with `profile` the firmware counts every op (one counter
    slot per op, described by profile.json) for `qtrain-run --profile`. `data`: the task (an npz path, or
    int8 NHWC images) whose training images calibrate TinyTL lite residual modules when the scheme inserts
    them (without it a warning says a noise stand-in is used). With `bounds_check` a debug firmware
    whose arena and scratch buffer sit between guard bands checked after every entry point call.
    An `output` folder is written whole or not at all (built in a temporary folder next to it, then moved
    into place): it must be new, empty or an earlier build (its .qtrain-compile lists what it wrote);
    `force` writes among other files, replacing only the build's. No output may be one of the inputs
    (the model, the calibration data, a scheme file). UserError (one line) for bad input, and for a
    firmware that does not fit the board (`FirmwareTooLargeError`); xDSL's PassFailedException for a plan
    over the budget (its message lists what is live at the peak).
    """
    from qtrain.files import OutputError, check_output, usual_permissions, write_text
    from qtrain.tools.qtrain_compile import check_output_dir, install

    if target not in boards.TARGETS:
        raise UserError(f"unknown target '{target}' (expected one of {', '.join(boards.TARGETS)})")
    if grad_precision not in GRAD_PRECISIONS:
        raise UserError(f"unknown gradient precision '{grad_precision}' (expected one of {', '.join(GRAD_PRECISIONS)})")
    if stream_backward not in STREAM_MODES:
        raise UserError(f"unknown stream-backward mode '{stream_backward}' (expected one of "
                        f"{', '.join(STREAM_MODES)})")
    scheme_file = scheme.partition("#")[0] if isinstance(scheme, str) and "#" in scheme else None
    inputs = [Path(p) for p in (None if isinstance(model, ModuleOp) else model, calibration, scheme_file,
                                None if isinstance(data, np.ndarray) else data) if p is not None]
    if output is None:
        final = out = Path(tempfile.mkdtemp(prefix="qtrain-build-"))
    else:
        final = Path(output)
        check_output_dir(final, force, inputs)
        for extra, what in ((memory_report, "memory report"), (lifetime_plot, "lifetime plot")):
            if extra is not None:
                check_output(extra, inputs, what)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            out = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
            usual_permissions(out)
        except OSError as e:
            raise OutputError(f"cannot create {final}: {e.strerror or e}") from e
    try:
        build = _compile_into(module_source=model, out=out, final=final, scheme=scheme, target=target,
                              sram_kb=sram_kb, reorder=reorder, fuse=fuse, lr=lr, bias_lr=bias_lr,
                              warmup_steps=warmup_steps, steps=steps, final_lr_ratio=final_lr_ratio,
                              momentum=momentum, qas=qas, weight_storage=weight_storage,
                              grad_precision=grad_precision, stream_backward=stream_backward,
                              num_classes=num_classes, calibration=calibration,
                              emit_llvm=emit_llvm, profile=profile, bounds_check=bounds_check, data=data)
        if out != final:
            install(out, final)
    finally:
        if out != final and out.exists():
            shutil.rmtree(out, ignore_errors=True)
    if memory_report:
        write_text(memory_report, json.dumps(build.memory, indent=2) + "\n", inputs, "memory report")
    if lifetime_plot:
        from qtrain.tools.memory_plan import write_memory_plan

        write_memory_plan(build.memory, lifetime_plot)
    return build


def _compile_into(*, module_source: ModelSource, out: Path, final: Path, scheme: Any, target: str,
                  sram_kb: int | None, reorder: bool, fuse: bool, lr: float, bias_lr: float | None,
                  warmup_steps: int, steps: int, final_lr_ratio: float, momentum: float, qas: bool,
                  weight_storage: str, grad_precision: str, stream_backward: str, num_classes: int,
                  calibration: str | Path | None, emit_llvm: bool,
                  profile: bool, bounds_check: bool, data: str | Path | np.ndarray | None) -> Build:
    """`compile`, writing every file into `out` (a temporary folder that becomes `final`, or `final`)."""
    from qtrain.dialects.qtrain import ParamOp
    from qtrain.dialects.qtrain.contract import TRAIN_STEP, find_func
    from qtrain.lowering.emit_c import emit_model
    from qtrain.tools.memory_plan import write_memory_html
    from qtrain.tools.profile_report import PROFILE_JSON
    from qtrain.transforms.pipeline import apply_passes, training_passes

    model = module_source
    if isinstance(model, ModuleOp):
        module = model.clone()
    else:
        path = Path(model)
        if not path.is_file():
            raise UserError(f"no such model file: {path}")
        module = load_model(path, num_classes, Path(calibration) if calibration else None)
    if find_func(module, TRAIN_STEP) is not None:
        raise UserError(f"{model if not isinstance(model, ModuleOp) else 'the module'}: already has @train_step; "
                        f"give the forward-only model")
    report = out / "memory.json"
    lite_images = None
    if isinstance(data, np.ndarray):
        lite_images = data
    elif data is not None:
        from qtrain.tools.plumbing import images_and_labels, read_npz

        lite_images, _ = images_and_labels(read_npz(Path(data), "task"), Path(data), need_labels=False)
    passes = training_passes(
        scheme,
        reorder=reorder,
        fuse_streaming=fuse,
        sram_kb=sram_kb if sram_kb is not None else boards.default_budget_kb(target),
        lr=lr,
        bias_lr=bias_lr,
        warmup_steps=warmup_steps,
        steps=steps,
        final_lr_ratio=final_lr_ratio,
        momentum=momentum,
        qas=qas,
        weight_storage=weight_storage,
        grad_precision=grad_precision,
        stream_backward=stream_backward,
        memory_report=str(report),
        calibration=lite_images,
    )
    apply_passes(module, passes)
    (out / "model.mlir").write_text(str(module) + "\n")
    source, header = emit_model(module, profile=profile)
    (out / "model.c").write_text(source)
    (out / "model.h").write_text(header)
    profile_json = out / PROFILE_JSON  # what each counter slot of a profile firmware measures
    if profile:
        from qtrain.lowering.profile import profile_slots

        profile_json.write_text(json.dumps({"slots": [s.to_json() for s in profile_slots(module)]}, indent=1) + "\n")
    elif profile_json.exists():
        profile_json.unlink()  # stale: this firmware has no profile
    if emit_llvm:
        emit_llvm_ir(out, target, final)
    firmware = out / ("firmware" if target == "host" else "firmware.elf")
    defines = [*(["QTRAIN_PROFILE"] if profile else []), *(["QTRAIN_BOUNDS_CHECK"] if bounds_check else [])]
    # Debug info names the final folder, not the temporary one.
    result = boards.build_firmware([out / "model.c", *boards.kernel_sources()], firmware, target,  # type: ignore[arg-type]
                                   include_dirs=[out], defines=defines,
                                   extra_cflags=[f"-ffile-prefix-map={out.resolve()}={final.resolve()}"])
    memory = json.loads(report.read_text())
    write_memory_html(memory, out / "memory.html")
    trainable = sum(1 for o in module.ops if isinstance(o, ParamOp) and o.is_trainable)
    return Build(final, target, memory, None if result.memory is None else result.memory.flash_bytes,
                 None if result.memory is None else result.memory.sram_bytes, trainable)
