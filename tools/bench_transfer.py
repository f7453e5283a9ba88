"""Transfer learning on the device next to the same network in fp32 PyTorch: what int8 and QAS cost.

    python -m qtrain.tools.bench_transfer [--models mcunet-5fps,mbv2-w0.35,proxyless-w0.3]
                                          [--schemes classifier,bias-only,last-k,49kb]
                                          [--searched MODEL=FILE.json#MODEL/BUDGET ...] [--arms qas,no-qas,fp32]
                                          [--orders 1,2,3] [--steps 1000] [--eval-every 100] [--jobs 1]
                                          [--work DIR] [--json OUT.json]

Rows: the MCUNetV3 reference models (../shared/models/tiny-training/MODEL.pkl, imported with the zero "new"
10-class head) x schemes:
- `classifier`: the classifier only (`last-k=1`);
- `bias-only`: every bias and the classifier's weight;
- `last-k`: the largest K whose planned peak SRAM fits 256 KB (`last-k=K` names a K). Planning picks it:
  the weights are trained through fp32 master copies (4 B per weight), so a second layer is already
  large. Measured: mcunet-5fps K = 1 (K = 2 plans 526 KB), mbv2-w0.35 K = 1 (K = 2: 271 KB),
  proxyless-w0.3 K = 2 (252 KB; K = 3: 362 KB). Where K = 1 the row is the classifier row again;
- `NNkb`: the reference's published scheme `schemes.json#MODEL/NNkb` (e.g. `49kb`);
- `searched`: with `--searched MODEL=FILE.json#MODEL/BUDGET` (repeatable), that model's searched scheme;
  the row is omitted otherwise.

Arms (columns):
- `qas`: `qtrain-compile MODEL.pkl --scheme S --target host` with the default recipe (COMPILE_RECIPE),
  then `qtrain-run build/firmware --inputs task.npz --eval same --steps S --eval-every K --json`: the
  generated C (bit-exact with QEMU) learning on int8 numerics with QAS;
- `no-qas`: the same compiled with `--no-qas`;
- `fp32`: the same network in PyTorch float32 (`TorchNet`: the imported @forward's ops without their
  rounding, clamps kept, i.e. the interpreter's relaxed numerics; checked against
  `ModelInterpreter(relaxed=True)` on 5 task images before training, 1e-3 relative on the logits), training
  exactly the tensors and input-channel slices the compiled graph trains (the pipeline's memory.json
  `trainable`), SGD batch 1 without momentum at the device's per-step learning rates (`scheduled_lr`),
  on the same samples in the same order (step t trains on image t mod N, as qtrain-run). Needs torch
  (`pip install torch`); without it the column is skipped with a note.

Data: examples/transfer/make_task.py's 128x128 task (1,297 training / 500 held-out images), train split
in order K (`--orders`, make_task's `--order K`); accuracy is on the held-out images after the last step,
mean +- s.d. over the orders. Also printed: the planned peak SRAM of each scheme (memory.json) and a "bar"
section computed from the table: (a) int8+QAS minus fp32 at the 49kb schemes, (b) no-QAS minus QAS,
(c) the searched scheme against bias-only and last-k where it plans equal or less memory.

`--work DIR` keeps the builds and task files (default: a temporary folder). `--json OUT.json` holds every
curve and is rewritten after each finished run, so an interrupted benchmark keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qtrain.tools.bench_tinytl import run, tool
from qtrain.transforms.recipe import COMPILE_RECIPE, Recipe

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "models" / "tiny-training"
REFERENCE = ("mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3")
DEFAULT_SCHEMES = ("classifier", "bias-only", "last-k", "49kb")
ARMS = ("qas", "no-qas", "fp32")
ARM_TITLES = {"qas": "int8 + QAS", "no-qas": "int8, no QAS", "fp32": "fp32 PyTorch"}
LAST_K_BUDGET_BYTES = 256 * 1024
PLAN_SRAM_KB = 65536
"""Planned (and compiled) without a budget check: the table shows each scheme's planned peak instead."""
CHECK_IMAGES = 5
CHECK_TOLERANCE = 1e-3
NO_TORCH = "fp32 PyTorch column skipped: torch is not installed (`pip install torch` enables it)"


def progress(line: str) -> None:
    """A line per finished piece on stderr: a long run shows where it is."""
    print(line, file=sys.stderr, flush=True)


# -- schemes and their trainable sets --------------------------------------------------------------------


@dataclass(frozen=True)
class Scheme:
    label: str
    """the table's name: classifier, bias-only, last-k=K, 49kb, searched"""
    spec: str
    """what qtrain-compile --scheme takes"""


def plan(module: Any, spec: str, report: Path) -> dict[str, Any]:
    """memory.json of `spec` on `module` (forward only, not changed): the passes qtrain-compile runs, in-process.

    qtrain-compile plans with the same `training_passes` (its target does not enter the plan), so this is
    the compiled build's memory.json: its `peak_sram_bytes` and `trainable` list.
    """
    from qtrain.transforms.pipeline import apply_passes, training_passes

    apply_passes(module.clone(), training_passes(spec, sram_kb=PLAN_SRAM_KB, memory_report=str(report)))
    return json.loads(report.read_text())


def largest_last_k(module: Any, budget_bytes: int, work: Path) -> tuple[int, list[int]]:
    """(K, planned peaks of last-k=1..K+1): the largest K whose plan fits `budget_bytes` (1 if none does).
    Stops at the first K over the budget: the peak grows with K (each layer adds its copies and its
    input-gradient buffers)."""
    from xdsl.utils.exceptions import PassFailedException

    peaks: list[int] = []
    k = 0
    while True:
        try:
            peak = int(plan(module, f"last-k={k + 1}", work / "last-k.json")["peak_sram_bytes"])
        except PassFailedException:  # more layers than the network has
            break
        peaks.append(peak)
        if peak > budget_bytes:
            break
        k += 1
    return max(k, 1), peaks


@dataclass(frozen=True)
class Trained:
    """One trainable tensor as the compiled graph trains it: `axis`/`start`/`stop` the trained slice of its
    full value (OHWI: axis 3 = input channels, axis 0 for a depthwise weight), or None for all of it."""

    name: str
    kind: str
    axis: int | None = None
    start: int = 0
    stop: int = 0


def trainable_set(memory: dict[str, Any], full_shapes: dict[str, tuple[int, ...]]) -> dict[str, Trained]:
    """The trainable tensors of a memory.json, with their slices.

    memory.json gives each trained tensor's trained `shape` and `channels` [start, stop]; the axis is the one
    where the trained shape is narrower than the parameter (input channels, axis 3 of OHWI, or axis 0 of a
    depthwise `[C, KH, KW, 1]` weight: qtrain-sparse-update's convention, `ParamOp.channel_axis`).
    """
    out: dict[str, Trained] = {}
    for t in memory["trainable"]:
        name, kind = str(t["name"]), str(t["kind"])
        if t.get("lite_residual") is not None:
            raise ValueError(f"{name} belongs to a lite residual module, which the fp32 network does not have")
        channels = t.get("channels")
        full = tuple(full_shapes[name])
        shape = tuple(t["shape"])
        if channels is None:
            if shape != full:
                raise ValueError(f"{name}: trained shape {shape} differs from {full} without a channel slice")
            out[name] = Trained(name, kind)
            continue
        axes = [a for a, (s, f) in enumerate(zip(shape, full, strict=True)) if s != f]
        start, stop = int(channels[0]), int(channels[1])
        if not axes:  # a slice covering the whole axis
            out[name] = Trained(name, kind)
            continue
        if len(axes) != 1 or shape[axes[0]] != stop - start:
            raise ValueError(f"{name}: trained shape {shape} is not {full} sliced to channels {channels}")
        out[name] = Trained(name, kind, axes[0], start, stop)
    return out


def param_shapes(module: Any) -> dict[str, tuple[int, ...]]:
    from qtrain.dialects.qtrain.contract import param_ops

    return {name: tuple(op.tensor_type.get_shape()) for name, op in param_ops(module).items()}


# -- the learning-rate schedule --------------------------------------------------------------------------


def learning_rates(step: int, recipe: Recipe = COMPILE_RECIPE) -> tuple[float, float]:
    """(weight lr, bias lr) of training step `step` (0 = the first), as the device computes them:
    `scheduled_lr(lr, lr_schedule_factor(step))`, the same float32 values the firmware's update uses."""
    from qtrain import numerics

    factor = numerics.lr_schedule_factor(step, warmup_steps=recipe.warmup_steps, steps=recipe.steps,
                                         final_ratio=recipe.final_lr_ratio)
    bias_lr = recipe.lr if recipe.bias_lr is None else recipe.bias_lr
    return float(numerics.scheduled_lr(recipe.lr, factor)), float(numerics.scheduled_lr(bias_lr, factor))


# -- the fp32 network (PyTorch; imported lazily) ---------------------------------------------------------


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_net(module: Any) -> Any:
    """The module's @forward as a torch.nn.Module in float32 real units (the relaxed numerics).

    Every value is held as its real value (code - zp) * s: conv2d is a float convolution with weight
    s_w[c] * w and bias s_x * s_w[c] * b, add a sum, avgpool a mean, each clamped to its output's int8 range
    [(lo - zp) * s, (hi - zp) * s] (the clamp attribute, else -128..127): the relaxed ops' function, up to
    their float32 multipliers. 4-D values are NCHW here; reshape works on the NHWC order the IR means.
    Parameters are named like the IR's with '.' as '/' (`net.weights[name]`).
    """
    import torch
    import torch.nn.functional as F  # noqa: N812
    from xdsl.dialects.func import ReturnOp

    from qtrain.dialects.qtrain import AddOp, AvgPoolOp, Conv2DOp, GetParamOp, ReshapeOp
    from qtrain.dialects.qtrain.contract import find_func
    from qtrain.dialects.qtrain.ops import clamp_range, shape_of
    from qtrain.frontends.tiny_training import input_quant
    from qtrain.interpreter import initial_params

    forward = find_func(module, "forward")
    values = initial_params(module)

    def real_range(q: Any, lo: int, hi: int) -> tuple[float, float]:
        s = float(np.float32(q.scale))
        return (lo - q.zp) * s, (hi - q.zp) * s

    class TorchNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = torch.nn.ParameterDict()
            self.program: list[tuple[Any, ...]] = []
            q = input_quant(module)
            self.input_scale, self.input_zp = float(np.float32(q.scale)), int(q.zp)
            ids: dict[Any, int] = {forward.body.blocks.first.args[0]: 0}
            for op in forward.body.walk():
                if op is forward or isinstance(op, GetParamOp):
                    continue
                if isinstance(op, Conv2DOp):
                    wname = op.weight.owner.param_name
                    sw = np.broadcast_to(op.weight_q.scale_array().astype(np.float64), (shape_of(op.weight)[0],))
                    w = values[wname].astype(np.float64) * sw[:, None, None, None]
                    self._param(wname, w.transpose(0, 3, 1, 2))
                    bname = None
                    if op.bias is not None:
                        bname = op.bias.owner.param_name
                        self._param(bname, values[bname].astype(np.float64) * float(np.float32(op.input_q.scale)) * sw)
                    pt, pl, pb, pr = op.padding.get_values()
                    self.program.append(("conv", ids[op.input], wname, bname, (pl, pr, pt, pb),
                                         tuple(op.strides.get_values()), op.groups.value.data,
                                         real_range(op.output_q, *clamp_range(op.clamp))))
                elif isinstance(op, AddOp):
                    self.program.append(("add", ids[op.lhs], ids[op.rhs],
                                         real_range(op.output_q, *clamp_range(op.clamp))))
                elif isinstance(op, AvgPoolOp):
                    self.program.append(("avgpool", ids[op.input], tuple(op.kernel.get_values()),
                                         tuple(op.strides.get_values()), real_range(op.output_q, -128, 127)))
                elif isinstance(op, ReshapeOp):
                    self.program.append(("reshape", ids[op.input], shape_of(op.output)))
                elif isinstance(op, ReturnOp):
                    self.program.append(("return", ids[op.arguments[0]]))
                    break
                else:
                    raise ValueError(f"the fp32 network has no {op.name} (supported: conv2d, add, avgpool, reshape)")
                ids[op.results[0]] = len(ids)

        def _param(self, name: str, value: np.ndarray) -> None:
            self.weights[name.replace(".", "/")] = torch.nn.Parameter(torch.tensor(value, dtype=torch.float32))

        def param(self, name: str) -> Any:
            return self.weights[name.replace(".", "/")]

        def dequantize(self, images: np.ndarray) -> Any:
            """int8 NHWC codes -> real NCHW float32."""
            x = (images.astype(np.float32) - np.float32(self.input_zp)) * np.float32(self.input_scale)
            return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

        def forward(self, x: Any) -> Any:
            env = [x]
            for step in self.program:
                kind = step[0]
                if kind == "conv":
                    _, src, wname, bname, pads, strides, groups, (lo, hi) = step
                    y = F.conv2d(F.pad(env[src], pads), self.param(wname),
                                 None if bname is None else self.param(bname), stride=strides, groups=groups)
                    env.append(torch.clamp(y, lo, hi))
                elif kind == "add":
                    _, a, b, (lo, hi) = step
                    env.append(torch.clamp(env[a] + env[b], lo, hi))
                elif kind == "avgpool":
                    _, src, kernel, strides, (lo, hi) = step
                    env.append(torch.clamp(F.avg_pool2d(env[src], kernel, strides), lo, hi))
                elif kind == "reshape":
                    _, src, shape = step
                    v = env[src]
                    v = v.permute(0, 2, 3, 1) if v.dim() == 4 else v  # the IR's NHWC element order
                    v = v.reshape(v.shape[0], *shape[1:])
                    env.append(v.permute(0, 3, 1, 2) if v.dim() == 4 else v)
                else:
                    v = env[step[1]]
                    return (v.permute(0, 2, 3, 1) if v.dim() == 4 else v).reshape(v.shape[0], -1)
            raise AssertionError("no return")

    return TorchNet()


def check_forward(module: Any, images: np.ndarray) -> tuple[float, float]:
    """(max |torch - relaxed| over the logits, the same relative to max |relaxed logit|): the fp32 network
    against the interpreter's relaxed forward on `images`. Raises when the relative difference exceeds
    CHECK_TOLERANCE."""
    import torch

    from qtrain.interpreter import ModelInterpreter, run_forward

    _, reference = run_forward(module, images, interpreter=ModelInterpreter(module, relaxed=True))
    net = torch_net(module)
    with torch.no_grad():
        ours = net(net.dequantize(images)).double().numpy()
    diff = float(np.max(np.abs(ours - reference.astype(np.float64))))
    scale = float(np.max(np.abs(reference)))
    relative = diff / scale if scale > 0 else diff
    if not relative <= CHECK_TOLERANCE:
        raise RuntimeError(f"the fp32 PyTorch network differs from the relaxed interpreter: max |diff| {diff:.3g} "
                           f"on logits up to {scale:.3g} (relative {relative:.3g} > {CHECK_TOLERANCE:g})")
    return diff, relative


def train_fp32(module: Any, trained: dict[str, Trained], task: dict[str, np.ndarray], steps: int, every: int,
               recipe: Recipe = COMPILE_RECIPE, seed: int = 0) -> list[list[float]]:
    """The held-out accuracy curve [[step, accuracy], ...] (steps 0, K, 2K, ..., S as qtrain-run's) of the
    fp32 network trained like the device: batch 1, sample t mod N at step t, plain SGD at
    `learning_rates(t)`, only `trained` (slices: the frozen part's gradient zeroed)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    net = torch_net(module)
    masks: dict[str, Any] = {}
    updates: list[tuple[Any, str, Any]] = []
    for name, p in ((n.replace("/", "."), p) for n, p in net.weights.items()):
        t = trained.get(name)
        p.requires_grad_(t is not None)
        if t is None:
            continue
        mask = None
        if t.axis is not None:
            torch_axis = {0: 0, 3: 1}[t.axis]  # OHWI -> OIHW
            mask = torch.zeros_like(p)
            index = [slice(None)] * p.dim()
            index[torch_axis] = slice(t.start, t.stop)
            mask[tuple(index)] = 1.0
            masks[name] = mask
        updates.append((p, t.kind, mask))
    missing = set(trained) - {n.replace("/", ".") for n in net.weights}
    if missing:
        raise ValueError(f"trainable tensors not in the network: {sorted(missing)}")
    images, labels = task["image"], task["label"].astype(np.int64)
    test_images, test_labels = task["test_image"], task["test_label"].astype(np.int64)

    def accuracy() -> float:
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test_labels), 50):
                logits = net(net.dequantize(test_images[i:i + 50]))
                correct += int((torch.argmax(logits, dim=1).numpy() == test_labels[i:i + 50]).sum())
        return correct / len(test_labels)

    curve = [[0, accuracy()]]
    for step in range(steps):
        n = step % len(labels)
        logits = net(net.dequantize(images[n:n + 1]))
        loss = F.cross_entropy(logits, torch.tensor([labels[n]]))
        net.zero_grad(set_to_none=True)
        loss.backward()
        lr, bias_lr = learning_rates(step, recipe)
        with torch.no_grad():
            for p, kind, mask in updates:
                if p.grad is None:
                    continue
                g = p.grad if mask is None else p.grad * mask
                p -= (bias_lr if kind == "bias" else lr) * g
        done = step + 1
        if done == steps or done % every == 0:
            curve.append([done, accuracy()])
    return curve


# -- the int8 arms: qtrain-compile and qtrain-run --------------------------------------------------------


_build_locks: dict[Path, threading.Lock] = {}
_build_locks_guard = threading.Lock()


def compiled(model: Path, scheme: Scheme, qas: bool, folder: Path) -> dict[str, Any]:
    """Compiles once per folder (runs of several orders share it); the build's memory.json."""
    with _build_locks_guard:
        lock = _build_locks.setdefault(folder, threading.Lock())
    with lock:
        if not (folder / "firmware").is_file():
            run([*tool("qtrain_compile"), model, "--scheme", scheme.spec, "--target", "host", "--sram-kb",
                 PLAN_SRAM_KB, *([] if qas else ["--no-qas"]), "-o", folder, "--json"],
                f"qtrain-compile {model.stem} {scheme.spec}{'' if qas else ' --no-qas'}")
        return json.loads((folder / "memory.json").read_text())


def train_int8(build: Path, task: Path, steps: int, every: int) -> list[list[float]]:
    report = json.loads(run([*tool("qtrain_run"), build / "firmware", "--inputs", task, "--eval", "same", "--steps",
                             steps, "--eval-every", every, "--json", "--quiet"], f"qtrain-run {build}"))
    return [[int(s), float(a)] for s, a in report["eval_accuracy_curve"]]


# -- data ----------------------------------------------------------------------------------------------


def _make_task_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("transfer_make_task", ROOT / "examples" / "transfer" / "make_task.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def task_file(work: Path, scale: float, zp: int, order: int) -> Path:
    """The 128x128 task in train order `order`, quantized with (scale, zp); written once."""
    path = work / f"task-s{scale:.9g}-z{zp}-order{order}.npz"
    if not path.is_file():
        arrays = _make_task_module().build_task(scale, zp, 128, order)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)
    return path


# -- results: table and bars -----------------------------------------------------------------------------


def _stats(finals: list[float]) -> tuple[float, float] | None:
    return (100 * float(np.mean(finals)), 100 * float(np.std(finals))) if finals else None


def cell(result: dict[str, Any], model: str, scheme: str, arm: str) -> tuple[float, float] | None:
    """(mean %, s.d. %) of the final held-out accuracies over the orders, or None when not measured."""
    runs = result["runs"].get(f"{model}|{scheme}|{arm}", {})
    return _stats([curve[-1][1] for curve in runs.values()])


def table(result: dict[str, Any]) -> str:
    """The markdown table: a row per (model, scheme), a column per arm, mean +- s.d. over the orders."""
    arms = [a for a in result["arms"] if a in ARMS]
    head = ["model", "scheme", "planned peak KB", *(ARM_TITLES[a] + " %" for a in arms)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    for row in result["rows"]:
        spec = row["spec"] if row["spec"].startswith("last-k") and row["scheme"] != row["spec"] else None
        same = f"= {row['same_as']}" if row.get("same_as") else None
        extra = ", ".join(x for x in (spec, same) if x)
        cells = [row["model"], row["scheme"] + (f" ({extra})" if extra else ""),
                 f"{row['planned_peak_bytes'] / 1024:.1f}" if row.get("planned_peak_bytes") else "-"]
        for arm in arms:
            s = cell(result, row["model"], row["scheme"], arm)
            n = len(result["runs"].get(f"{row['model']}|{row['scheme']}|{arm}", {}))
            note = row.get("notes", {}).get(arm)
            if s is None:
                cells.append(note or "-")
                continue
            partial = "" if n == len(result["orders"]) else f" ({n} of {len(result['orders'])} orders)"
            cells.append(f"{s[0]:.1f} +- {s[1]:.1f}{partial}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_diff(result: dict[str, Any], scheme: Callable[[str], str | None], arm: str, base: str
               ) -> tuple[float | None, list[str]]:
    diffs, parts = [], []
    for model in result["models"]:
        name = scheme(model)
        if name is None:
            continue
        a, b = cell(result, model, name, arm), cell(result, model, name, base)
        if a is None or b is None:
            continue
        diffs.append(a[0] - b[0])
        parts.append(f"{model} {a[0] - b[0]:+.1f}")
    return (float(np.mean(diffs)) if diffs else None), parts


def bars(result: dict[str, Any], published: str = "49kb") -> str:
    """The issue's bars, from the table: (a) int8+QAS vs fp32 at the published scheme (within 1 point),
    (b) no-QAS vs QAS (at least 5 points worse), (c) searched vs bias-only and last-k at <= memory."""
    lines = ["bar:"]
    at = lambda model: published if f"{model}|{published}|qas" in result["runs"] else None  # noqa: E731
    d, parts = _mean_diff(result, at, "qas", "fp32")
    if d is None:
        lines.append(f"(a) int8+QAS - fp32 at {published}: not measured")
    else:
        lines.append(f"(a) int8+QAS - fp32 at {published}, mean over models: {d:+.1f} points ({', '.join(parts)}); "
                     f"bar: no more than 1 point below fp32: {'met' if d >= -1.0 else 'NOT met'}")
    for name in dict.fromkeys(r["scheme"] for r in result["rows"]):
        d, parts = _mean_diff(result, lambda m, s=name: s if f"{m}|{s}|qas" in result["runs"] else None,
                              "no-qas", "qas")
        if d is not None:
            met = "met" if d <= -5.0 else "NOT met"
            verdict = f"; bar: at least 5 points worse: {met}" if name == published else ""
            lines.append(f"(b) no-QAS - QAS at {name}, mean over models: {d:+.1f} points ({', '.join(parts)}){verdict}")
    rows = {(r["model"], r["scheme"]): r for r in result["rows"]}
    for (model, name), row in rows.items():
        if name != "searched":
            continue
        s = cell(result, model, name, "qas")
        for base in ("bias-only", "last-k"):
            other = rows.get((model, base))
            b = cell(result, model, base, "qas")
            if other is None or s is None or b is None:
                continue
            kb = row["planned_peak_bytes"] / 1024, other["planned_peak_bytes"] / 1024
            if kb[0] <= kb[1]:
                lines.append(f"(c) {model}: searched ({kb[0]:.0f} KB) - {base} ({kb[1]:.0f} KB), int8+QAS: "
                             f"{s[0] - b[0]:+.1f} points")
            else:
                lines.append(f"(c) {model}: searched plans more than {base} ({kb[0]:.0f} vs {kb[1]:.0f} KB): "
                             "not an equal-memory comparison")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------------


def resolve_schemes(names: list[str], model: str, module: Any, searched: dict[str, str], work: Path
                    ) -> tuple[list[Scheme], dict[str, list[int]]]:
    """The schemes of one model's rows (a `searched` row only with a --searched scheme for the model)."""
    schemes, notes = [], {}
    for name in names:
        if name == "classifier":
            schemes.append(Scheme(name, "last-k=1"))
        elif name == "bias-only":
            schemes.append(Scheme(name, "bias-only"))
        elif name == "last-k":
            k, peaks = largest_last_k(module, LAST_K_BUDGET_BYTES, work)
            notes["last-k"] = peaks
            schemes.append(Scheme(name, f"last-k={k}"))
        elif name.startswith("last-k="):
            schemes.append(Scheme(name, name))
        elif name == "searched":
            if model in searched:
                schemes.append(Scheme(name, searched[model]))
        elif name.endswith("kb"):
            schemes.append(Scheme(name, f"{MODELS / 'schemes.json'}#{model}/{name}"))
        else:
            raise ValueError(f"unknown scheme '{name}' (classifier, bias-only, last-k, last-k=K, NNkb, searched)")
    return schemes, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(REFERENCE), help="comma-separated (the three reference models)")
    parser.add_argument("--schemes", default=",".join(DEFAULT_SCHEMES),
                        help="comma-separated: classifier, bias-only, last-k, last-k=K, NNkb (schemes.json), searched")
    parser.add_argument("--searched", action="append", default=[], metavar="MODEL=FILE.json#MODEL/BUDGET",
                        help="a searched scheme for MODEL (repeatable); adds the `searched` row")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated: qas, no-qas, fp32")
    parser.add_argument("--orders", default="1,2,3", help="train-split orders (make_task.py --order)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (1)")
    parser.add_argument("--work", type=Path, help="keep builds and task files here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write every curve here (updated after each run)")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    names = [s.strip() for s in args.schemes.split(",") if s.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if set(arms) - set(ARMS):
        parser.error(f"--arms: unknown {sorted(set(arms) - set(ARMS))} (qas, no-qas, fp32)")
    orders = [int(o) for o in args.orders.split(",")]
    searched: dict[str, str] = {}
    for item in args.searched:
        model, sep, spec = item.partition("=")
        if not sep or "#" not in spec:
            parser.error(f"--searched {item}: expected MODEL=FILE.json#MODEL/BUDGET")
        searched[model] = spec
    if searched and "searched" not in names:
        names.append("searched")
    if "fp32" in arms and not torch_available():
        print(NO_TORCH, flush=True)
        arms.remove("fp32")
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-transfer-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        return bench(args, models, names, arms, orders, searched, work)


def bench(args: argparse.Namespace, models: list[str], names: list[str], arms: list[str], orders: list[int],
          searched: dict[str, str], work: Path) -> int:
    from qtrain.api import load_model
    from qtrain.frontends.tiny_training import input_quant

    result: dict[str, Any] = {"models": models, "arms": arms, "orders": orders, "steps": args.steps,
                              "eval_every": args.eval_every, "recipe": COMPILE_RECIPE.__dict__, "rows": [],
                              "runs": {}, "forward_check": {}}
    lock = threading.Lock()

    def save() -> None:
        if args.json:
            with lock:
                text = json.dumps(result, indent=1) + "\n"
            args.json.write_text(text)

    jobs: list[tuple[int, Callable[[], None]]] = []
    for model in models:
        pkl = MODELS / f"{model}.pkl"
        module = load_model(pkl)
        q = input_quant(module)
        scale, zp = float(np.float32(q.scale)), int(q.zp)
        tasks = {o: task_file(work, scale, zp, o) for o in orders}
        schemes, notes = resolve_schemes(names, model, module, searched, work / model)
        if "last-k" in notes:
            peaks = ", ".join(f"K={i + 1} {p / 1024:.0f} KB" for i, p in enumerate(notes["last-k"]))
            print(f"{model}: last-k plans {peaks}: K = {next(s.spec for s in schemes if s.label == 'last-k')[7:]} fits "
                  f"{LAST_K_BUDGET_BYTES // 1024} KB", flush=True)
        if "fp32" in arms:
            check = load_model_for_check(pkl)
            with np.load(tasks[orders[0]]) as npz:
                images = npz["image"][:CHECK_IMAGES]
            diff, relative = check_forward(check, images)
            result["forward_check"][model] = {"max_abs_diff": diff, "relative": relative}
            print(f"{model}: fp32 PyTorch forward vs relaxed interpreter on {CHECK_IMAGES} task images: max |diff| "
                  f"{diff:.3g} on the logits (relative {relative:.2g})", flush=True)
        shapes = param_shapes(module)
        first_label: dict[str, str] = {}
        for scheme in schemes:
            folder = work / model / scheme.label
            folder.mkdir(parents=True, exist_ok=True)
            memory = plan(module, scheme.spec, folder / "plan.json")
            row = {"model": model, "scheme": scheme.label, "spec": scheme.spec,
                   "planned_peak_bytes": int(memory["peak_sram_bytes"]),
                   "trainable": [{k: t.get(k) for k in ("name", "kind", "shape", "channels")}
                                 for t in memory["trainable"]],
                   "notes": {}}
            result["rows"].append(row)
            if scheme.spec in first_label:
                # The same scheme under another name (last-k with K = 1 is the classifier row): measured once,
                # both rows show the same runs (one dict under both keys).
                row["same_as"] = first_label[scheme.spec]
                for arm in arms:
                    result["runs"][f"{model}|{scheme.label}|{arm}"] = result["runs"].setdefault(
                        f"{model}|{row['same_as']}|{arm}", {})
                continue
            first_label[scheme.spec] = scheme.label
            trained = None
            if "fp32" in arms:
                try:
                    trained = trainable_set(memory, shapes)
                except ValueError as e:
                    row["notes"]["fp32"] = "n/a"
                    print(f"{model} {scheme.label}: no fp32 run: {e}", flush=True)
            for order in orders:
                for arm in arms:
                    key = f"{model}|{scheme.label}|{arm}"
                    if arm == "fp32" and trained is None:
                        continue

                    def job(arm: str = arm, order: int = order, key: str = key, scheme: Scheme = scheme,
                            folder: Path = folder, trained: Any = trained, module: Any = module,
                            task: Path = tasks[order], pkl: Path = pkl) -> None:
                        start = time.monotonic()
                        if arm == "fp32":
                            with np.load(task) as npz:
                                arrays = {k: npz[k] for k in ("image", "label", "test_image", "test_label")}
                            curve = train_fp32(module, trained, arrays, args.steps, args.eval_every)
                        else:
                            build = folder / arm
                            memory = compiled(pkl, scheme, arm == "qas", build)
                            with lock:
                                result["rows_compiled"] = result.get("rows_compiled", {})
                                result["rows_compiled"][f"{key}"] = int(memory["peak_sram_bytes"])
                            curve = train_int8(build, task, args.steps, args.eval_every)
                        with lock:
                            result["runs"].setdefault(key, {})[str(order)] = curve
                        save()
                        progress(f"{key} order {order}: " + " ".join(f"{100 * a:.1f}" for _, a in curve)
                                 + f"  ({time.monotonic() - start:.0f} s)")

                    jobs.append((order, job))
    save()
    # Order-major: every row's first order comes first, so an interrupted run has a whole table.
    jobs.sort(key=lambda j: j[0])
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for future in [pool.submit(fn) for _, fn in jobs]:
            future.result()
    for row in result["rows"]:
        for arm in ("qas", "no-qas"):
            compiled_peak = result.get("rows_compiled", {}).get(f"{row['model']}|{row['scheme']}|{arm}")
            if compiled_peak is not None and compiled_peak != row["planned_peak_bytes"]:
                progress(f"note: {row['model']} {row['scheme']} compiled ({arm}) plans {compiled_peak} B, "
                         f"the in-process plan {row['planned_peak_bytes']} B")
    save()
    print(f"\nHeld-out accuracy (500 images) after {args.steps} steps of batch 1, mean +- s.d. over train orders "
          f"{','.join(map(str, orders))}; recipe lr {COMPILE_RECIPE.lr:g}, bias lr {COMPILE_RECIPE.bias_lr:g}, "
          f"{COMPILE_RECIPE.warmup_steps} warm-up steps, cosine to {COMPILE_RECIPE.final_lr_ratio:g}x over "
          f"{COMPILE_RECIPE.steps}\n")
    print(table(result))
    print()
    print(bars(result))
    return 0


def load_model_for_check(pkl: Path) -> Any:
    """The model the forward check runs: a .pkl with its ImageNet head rows (the imported "new" head is all
    zeros, whose logits would agree trivially), so the check covers the classifier conv too."""
    if pkl.suffix == ".pkl":
        from qtrain.frontends.tiny_training import import_tiny_training

        return import_tiny_training(pkl, num_classes=10, head="imagenet")
    from qtrain.api import load_model

    return load_model(pkl)


if __name__ == "__main__":
    sys.exit(main())
