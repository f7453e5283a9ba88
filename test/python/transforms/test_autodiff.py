"""`qtrain-autodiff` end to end in the numpy golden model: gradients and training.

Gradients: @train_step run by the interpreter in relaxed mode (every op without its rint, float64)
with `apply_updates=False` records the gradient each `qtrain.sgd_update` receives. They are compared
with central finite differences of the loss of @forward evaluated op by op with the relaxed kernels
(`RelaxedForward`: an independent walk of the forward graph, no backward code involved, re-evaluating
only the ops downstream of the perturbed parameter). The base point is the model's parameters plus
uniform noise in [-0.25, 0.25] (relaxed parameters are real numbers), so that no activation sits
exactly on a clamp bound; a coordinate whose +-h perturbation still flips a saturation mask straddles
a kink (one-sided derivative): the step is then retried smaller (h = 1e-3, 1e-4, 1e-5 in integer
units) and the coordinate skipped only if every step flips a mask (counted, the count asserted small).
Between kinks the network is piecewise linear and the loss smooth, so a central difference is exact up
to the float64 rounding of the loss: tolerance |fd - grad| <= 1e-6 * max|grad of that parameter|
+ 1e-14 * max(1, |loss|) / h (observed errors are ~1e-9 relative).

Training: the digits CNN (examples/digits, imported with qtrain.frontends.onnx) fine-tuned on
contrast-inverted digits, three runs with the same data, order and steps: fp32 simulation (relaxed
mode, QAS graph: QAS is exactly the int8 <-> real reparametrisation, so this is plain fp32 SGD on the
real-valued network), int8 with QAS, int8 without QAS.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from testpaths import LIT_INPUTS, MODELS, REPO, require_shared_models
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain import numerics
from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    GetParamOp,
    ParamOp,
    QuantizeOp,
    ReshapeOp,
    SGDUpdateOp,
)
from qtrain.dialects.qtrain.interfaces import produced_quant
from qtrain.dialects.qtrain.ops import clamp_range
from qtrain.interpreter import ModelInterpreter, load_module, run_forward, run_train_steps, trainable_index
from qtrain.transforms.autodiff import AutodiffPass
from qtrain.transforms.dead_gradient_elim import DeadGradientElimPass
from qtrain.transforms.sparse_update import SparseUpdatePass

FD_STEPS = (1e-3, 1e-4, 1e-5)
FD_RTOL = 1e-6
FD_ROUNDOFF = 1e-14
PARAM_NOISE = 0.25
MAX_KINK_FRACTION = 0.05


# -- the independent relaxed forward --------------------------------------------------------------------


def find_func(module: ModuleOp, name: str) -> func.FuncOp:
    return next(o for o in module.ops if isinstance(o, func.FuncOp) and o.sym_name.data == name)


class RelaxedForward:
    """@forward + dequantize + cross-entropy, op by op with the float64 relaxed kernels.

    `loss_with(name, value)` re-evaluates only the ops that depend on parameter @name and reports
    whether any of their saturation masks differs from the base point's (a crossed clamp kink).
    """

    def __init__(self, module: ModuleOp, image: np.ndarray, label: int, params: dict[str, np.ndarray]):
        fn = find_func(module, "forward")
        block = fn.body.block
        self.image_arg = block.args[0]
        self.ops = [op for op in block.ops if not isinstance(op, func.ReturnOp)]
        ret = block.last_op
        assert isinstance(ret, func.ReturnOp)
        self.output = ret.arguments[0]
        quant = produced_quant(self.output)
        assert quant is not None
        self.output_q = quant
        self.label = label
        self.params = params
        self.dependents: dict[str, list[Operation]] = {}
        for name in params:
            tainted: set[SSAValue] = set()
            deps: list[Operation] = []
            for op in self.ops:
                if (isinstance(op, GetParamOp) and op.param.root_reference.data == name) or any(
                    o in tainted for o in op.operands
                ):
                    deps.append(op)
                    tainted.update(op.results)
            self.dependents[name] = deps
        self.values: dict[SSAValue, np.ndarray] = {self.image_arg: image.astype(np.float64)}
        self.masks: dict[Operation, np.ndarray] = {}
        for op in self.ops:
            self._run(op, self.values, self.masks, params)
        self.loss = self._loss(self.values)

    def _run(self, op: Operation, values: dict[SSAValue, np.ndarray], masks: dict[Operation, np.ndarray],
             params: dict[str, np.ndarray]) -> None:
        args = [values[o] for o in op.operands]
        if isinstance(op, GetParamOp):
            values[op.result] = params[op.param.root_reference.data]
            return
        if isinstance(op, ReshapeOp):
            values[op.output] = args[0].reshape(op.output.type.get_shape())  # type: ignore[attr-defined]
            return
        if isinstance(op, QuantizeOp):
            values[op.output] = numerics.quantize_relaxed(args[0], scale=op.output_q.scale, zero_point=op.output_q.zp)
            return
        if isinstance(op, Conv2DOp):
            y, mask = numerics.conv2d_relaxed(
                *args, input_scale=op.input_q.scale, input_zero_point=op.input_q.zp,
                weight_scales=op.weight_q.scale_array(), output_scale=op.output_q.scale,
                output_zero_point=op.output_q.zp, strides=op.strides.get_values(), padding=op.padding.get_values(),
                groups=op.groups.value.data, clamp=clamp_range(op.clamp))
        elif isinstance(op, AddOp):
            y, mask = numerics.add_relaxed(
                *args, lhs_scale=op.lhs_q.scale, lhs_zero_point=op.lhs_q.zp, rhs_scale=op.rhs_q.scale,
                rhs_zero_point=op.rhs_q.zp, output_scale=op.output_q.scale, output_zero_point=op.output_q.zp,
                clamp=clamp_range(op.clamp))
        elif isinstance(op, AvgPoolOp):
            y, mask = numerics.avgpool_relaxed(
                args[0], kernel=op.kernel.get_values(), strides=op.strides.get_values(), input_scale=op.input_q.scale,
                input_zero_point=op.input_q.zp, output_scale=op.output_q.scale, output_zero_point=op.output_q.zp)
        else:
            raise AssertionError(f"RelaxedForward: unexpected {op.name}")
        values[op.output] = y
        masks[op] = mask

    def _loss(self, values: dict[SSAValue, np.ndarray]) -> float:
        logits = numerics.dequantize_relaxed(values[self.output], scale=self.output_q.scale,
                                             zero_point=self.output_q.zp)
        return float(numerics.cross_entropy_relaxed(logits, self.label))

    def loss_with(self, name: str, value: np.ndarray) -> tuple[float, bool]:
        values = dict(self.values)
        masks: dict[Operation, np.ndarray] = {}
        params = {**self.params, name: value}
        for op in self.dependents[name]:
            self._run(op, values, masks, params)
        crossed = any(not np.array_equal(m, self.masks[op]) for op, m in masks.items())
        return self._loss(values), crossed


# -- helpers ---------------------------------------------------------------------------------------------


def autodiffed(module: ModuleOp, pipeline: Sequence[ModulePass] = (), **options: Any) -> ModuleOp:
    """A clone of `module` after qtrain-autodiff (default options, or `options`) and then `pipeline`."""
    module = module.clone()
    ctx = Context()
    AutodiffPass(**options).apply(ctx, module)
    for p in pipeline:
        p.apply(ctx, module)
    module.verify()
    return module


def noisy_params(module: ModuleOp, seed: int) -> dict[str, np.ndarray]:
    """The model's parameters (Flash values) as float64 plus uniform noise in [-PARAM_NOISE, PARAM_NOISE]."""
    rng = np.random.default_rng(seed)
    flash = ModelInterpreter(module).params
    return {name: value.astype(np.float64) + rng.uniform(-PARAM_NOISE, PARAM_NOISE, value.shape)
            for name, value in flash.items()}


def relaxed_gradients(module: ModuleOp, image: np.ndarray, label: int, params: dict[str, np.ndarray]
                      ) -> tuple[float, dict[str, np.ndarray]]:
    runner = ModelInterpreter(module, relaxed=True, apply_updates=False)
    runner.params.update({k: v.copy() for k, v in params.items()})
    (loss,) = runner.call("train_step", image, label)
    assert all(np.array_equal(runner.params[k], v) for k, v in params.items()), "apply_updates=False changed a param"
    return float(loss), dict(runner.gradients)


class FDReport:
    def __init__(self) -> None:
        self.checked = 0
        self.skipped = 0
        self.worst = 0.0
        self.failures: list[str] = []


def central_difference(fwd: RelaxedForward, name: str, full: tuple[int, ...]) -> tuple[float, float] | None:
    """(finite difference, its step) with the largest step whose +-h flips no saturation mask, or None."""
    for step in FD_STEPS:
        losses = []
        crossed = False
        for sign in (1.0, -1.0):
            value = fwd.params[name].copy()
            value[full] += sign * step
            loss, flipped = fwd.loss_with(name, value)
            losses.append(loss)
            crossed |= flipped
        if not crossed:
            return (losses[0] - losses[1]) / (2 * step), step
    return None


def check_coordinates(fwd: RelaxedForward, module: ModuleOp, grads: dict[str, np.ndarray],
                      choose: Callable[[str, np.ndarray], list[tuple[int, ...]]]) -> FDReport:
    """Central differences at the coordinates `choose(name, grad)` picks, in the trained part's indexing."""
    report = FDReport()
    params = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp)}
    for name, g in grads.items():
        index = trainable_index(params[name])
        for coord in choose(name, g):
            full = tuple((s.start or 0) + c for s, c in zip(index, coord, strict=True))
            report.checked += 1
            result = central_difference(fwd, name, full)
            if result is None:
                report.skipped += 1
                continue
            fd, step = result
            tol = FD_RTOL * float(np.abs(g).max()) + FD_ROUNDOFF * max(1.0, abs(fwd.loss)) / step
            err = abs(fd - float(g[coord]))
            report.worst = max(report.worst, err / tol)
            if err > tol:
                report.failures.append(f"@{name}{list(coord)}: finite difference {fd:.9g} (h = {step:g}), "
                                       f"gradient {g[coord]:.9g}")
    return report


def assert_report(report: FDReport) -> None:
    assert not report.failures, "\n".join(report.failures[:20])
    assert report.skipped <= MAX_KINK_FRACTION * report.checked, (
        f"{report.skipped} of {report.checked} coordinates straddle a clamp kink")


# -- small models: every coordinate ----------------------------------------------------------------------


def tiny_model() -> ModuleOp:
    return load_module(LIT_INPUTS / "tiny_model.mlir")


SCHEMES = LIT_INPUTS / "tiny_schemes.json"
PIPELINES: dict[str, list[ModulePass]] = {
    "full": [],
    "half (depthwise slice)": [SparseUpdatePass(scheme=f"{SCHEMES}#tiny/half"), DeadGradientElimPass()],
    "pointwise (1x1 slice)": [SparseUpdatePass(scheme=f"{SCHEMES}#tiny/pointwise"), DeadGradientElimPass()],
    "bias-only": [SparseUpdatePass(scheme="bias-only"), DeadGradientElimPass()],
}


@pytest.mark.parametrize("pipeline", list(PIPELINES), ids=list(PIPELINES))
@pytest.mark.parametrize("seed", [0, 1])
def test_tiny_model_gradients_match_finite_differences_everywhere(pipeline: str, seed: int) -> None:
    module = autodiffed(tiny_model(), PIPELINES[pipeline])
    rng = np.random.default_rng(100 + seed)
    image = rng.integers(-128, 128, size=(1, 8, 8, 3), dtype=np.int8)
    label = int(rng.integers(0, 3))
    params = noisy_params(module, seed)
    loss, grads = relaxed_gradients(module, image, label, params)
    fwd = RelaxedForward(module, image, label, params)
    assert abs(loss - fwd.loss) <= 1e-12 * abs(fwd.loss)
    trainable = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp) and p.is_trainable}
    assert set(grads) == set(trainable)
    for name, g in grads.items():
        assert g.dtype == np.float64 and g.shape == trainable[name].trainable_shape()
    nonzero = sum(int(np.count_nonzero(g)) for g in grads.values())
    assert nonzero >= 0.5 * sum(g.size for g in grads.values()), "most gradient entries should be nonzero"
    report = check_coordinates(fwd, module, grads, lambda name, g: list(np.ndindex(g.shape)))
    assert_report(report)


def test_sliced_gradients_are_the_slices_of_the_full_gradients() -> None:
    """A channel-sliced weight's update receives exactly that slice of the full weight gradient."""
    rng = np.random.default_rng(7)
    image = rng.integers(-128, 128, size=(1, 8, 8, 3), dtype=np.int8)
    full = autodiffed(tiny_model())
    params = noisy_params(full, 3)
    _, g_full = relaxed_gradients(full, image, 1, params)
    for scheme, name in (("half", "conv1.weight"), ("pointwise", "conv2.weight")):
        sliced = autodiffed(tiny_model(), [SparseUpdatePass(scheme=f"{SCHEMES}#tiny/{scheme}"), DeadGradientElimPass()])
        param = next(p for p in sliced.ops if isinstance(p, ParamOp) and p.sym_name.data == name)
        assert param.trainable_slice() is not None
        _, g = relaxed_gradients(sliced, image, 1, params)
        expected = g_full[name][trainable_index(param)]
        assert np.allclose(g[name], expected, rtol=1e-13, atol=1e-15 * float(np.abs(expected).max()))
        assert np.count_nonzero(expected) > expected.size // 2


# -- mcunet-5fps: sampled coordinates of every parameter ---------------------------------------------------


@cache
def mcunet() -> ModuleOp:
    from qtrain.frontends.tiny_training import import_tiny_training

    return import_tiny_training(MODELS / "mcunet-5fps.pkl", num_classes=10)


def test_mcunet_gradients_match_finite_differences() -> None:
    require_shared_models()
    start = time.perf_counter()
    module = autodiffed(mcunet())
    rng = np.random.default_rng(5)
    image = rng.integers(-128, 128, size=(1, 128, 128, 3), dtype=np.int8)
    label = 3
    params = noisy_params(module, 5)
    loss, grads = relaxed_gradients(module, image, label, params)
    fwd = RelaxedForward(module, image, label, params)
    assert abs(loss - fwd.loss) <= 1e-12 * abs(fwd.loss)
    trainable = [p.sym_name.data for p in module.ops if isinstance(p, ParamOp) and p.is_trainable]
    assert len(trainable) == 86 and set(grads) == set(trainable)

    def choose(name: str, g: np.ndarray) -> list[tuple[int, ...]]:
        """The largest-|g| coordinate and two random ones with a nonzero gradient (or anywhere)."""
        flat = np.abs(g).reshape(-1)
        picks = [int(np.argmax(flat))]
        pool = np.flatnonzero(flat) if np.count_nonzero(flat) > 2 else np.arange(flat.size)
        picks += [int(i) for i in rng.choice(pool, size=min(2, pool.size), replace=False)]
        return [tuple(int(c) for c in np.unravel_index(i, g.shape)) for i in dict.fromkeys(picks)]

    report = check_coordinates(fwd, module, grads, choose)
    elapsed = time.perf_counter() - start
    print(f"\nmcunet-5fps: {report.checked} coordinates of {len(grads)} parameters, {report.skipped} at a kink, "
          f"worst error {report.worst:.3g} of the tolerance, {elapsed:.1f} s")
    assert_report(report)
    assert report.checked >= 2 * len(grads)

    # For the record: how close the int8 graph's gradients are to the relaxed ones at the same point.
    runner = ModelInterpreter(module, apply_updates=False)
    runner.call("train_step", image, label)
    _, relaxed_at_model = relaxed_gradients(module, image, label, ModelInterpreter(module).params)
    cosines = []
    for name in trainable:
        a, b = runner.gradients[name].astype(np.float64).ravel(), relaxed_at_model[name].ravel()
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append((name, float(a @ b / denom) if denom > 0 else float("nan")))
    values = np.array([c for _, c in cosines])
    worst = sorted(cosines, key=lambda nc: nc[1])[:3]
    print(f"int8 vs relaxed gradient cosine similarity over {len(values)} parameters: "
          f"median {np.nanmedian(values):.4f}, mean {np.nanmean(values):.4f}, min {np.nanmin(values):.4f} "
          f"(lowest: {', '.join(f'{n} {c:.3f}' for n, c in worst)})")


# -- training state in the interpreter --------------------------------------------------------------------


def test_updates_follow_sgd_update_semantics_and_persist() -> None:
    """One int8 step: fp32 master weights, int32 biases rounded, the forward reads rint(master). At a rate
    large enough for the first warm-up step to move int8 values (the default's moves none on this model)."""
    module = autodiffed(tiny_model(), lr=0.05, bias_lr=0.05)
    rng = np.random.default_rng(21)
    image = rng.integers(-128, 128, size=(1, 8, 8, 3), dtype=np.int8)
    runner = ModelInterpreter(module)
    flash = {k: v.copy() for k, v in runner.params.items()}
    runner.call("train_step", image, 2)
    assert runner.device_state["step"].tolist() == [1]  # the device's step counter
    updates = {u.param.root_reference.data: u for u in find_func(module, "train_step").walk()
               if isinstance(u, SGDUpdateOp)}
    # The first step of the default recipe's linear warm-up: factor 1 / warmup_steps.
    factor = np.float32(1) / np.float32(AutodiffPass().warmup_steps)
    changed = 0
    for name, update in updates.items():
        g = runner.gradients[name]
        assert g.dtype == np.float32
        scale = np.asarray(update.grad_scale.get_values(), np.float32).reshape(-1, *([1] * (g.ndim - 1)))
        lr = np.float32(np.float32(update.lr.value.data) * factor)
        delta = (np.float32(lr * scale) * g).astype(np.float32)
        sram = runner.sram_copy(name)
        if name.endswith(".weight"):
            expected = (flash[name].astype(np.float32) - delta).astype(np.float32)
            assert sram.dtype == np.float32 and np.array_equal(sram, expected)
            assert np.array_equal(runner.params[name], np.clip(np.rint(expected), -128, 127).astype(np.int8))
        else:
            expected_b = np.clip(flash[name].astype(np.int64) - np.rint(delta).astype(np.int64), -(2**31), 2**31 - 1)
            assert sram.dtype == np.int32 and np.array_equal(sram, expected_b)
            assert np.array_equal(runner.params[name], sram)
        changed += int(np.count_nonzero(runner.params[name] != flash[name]))
    assert changed > 0
    # the next step reads the updated parameters
    before = {k: v.copy() for k, v in runner.params.items()}
    runner.call("train_step", image, 2)
    assert any(not np.array_equal(runner.params[k], before[k]) for k in before)
    assert runner.device_state["step"].tolist() == [2]


@pytest.mark.parametrize("storage", ["i16", "i8", "i8-nearest"])
def test_weight_storages_update_as_numerics_says(storage: str) -> None:
    """Each cheaper storage in the IR (param storage, update rounding) and two golden-model steps: the SRAM copy
    is numerics.sgd_update of the previous one with this step's noise key (stochastic storages) read from the
    advanced step counter; the forward reads its int8 value; int32 biases stay rounded to nearest."""
    module = tiny_model().clone()
    # A rate at which two warm-up steps move int8 values on this model (the default's moves none).
    AutodiffPass(weight_storage=storage, lr=0.05, bias_lr=0.05).apply(Context(), module)  # type: ignore[arg-type]
    module.verify()
    updates = {u.updated_param: u for u in find_func(module, "train_step").walk() if isinstance(u, SGDUpdateOp)}
    params = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp)}
    for name, update in updates.items():
        weight = name.endswith(".weight")
        assert update.is_stochastic == (weight and storage != "i8-nearest")
        assert str(params[name].storage_type) == ("i16" if weight and storage == "i16" else
                                                  "i8" if weight else "i32")
    rng = np.random.default_rng(23)
    image = rng.integers(-128, 128, size=(1, 8, 8, 3), dtype=np.int8)
    runner = ModelInterpreter(module)
    moved = 0
    for step in (1, 2):
        before = {name: runner.sram_copy(name) for name in updates}
        runner.call("train_step", image, 1)
        assert runner.device_state["step"].tolist() == [step]
        factor = numerics.lr_schedule_factor(step - 1, warmup_steps=AutodiffPass().warmup_steps,
                                             steps=AutodiffPass().steps, final_ratio=AutodiffPass().final_lr_ratio)
        for name, update in updates.items():
            key = numerics.noise_key(numerics.noise_seed(name), step) if update.is_stochastic else None
            expected = numerics.sgd_update(before[name], runner.gradients[name],
                                           lr=numerics.scheduled_lr(update.lr.value.data, factor),
                                           grad_scale=update.grad_scale.as_array(), noise_key=key)
            after = runner.sram_copy(name)
            assert after.dtype == expected.dtype and np.array_equal(after, expected), name
            assert np.array_equal(runner.params[name], numerics.master_to_param(after, np.int8)
                                  if after.dtype == np.int16 else after)
            moved += int(np.count_nonzero(after != before[name]))
    assert moved > 0


def test_stochastic_storages_refuse_momentum() -> None:
    for storage in ("i16", "i8"):
        with pytest.raises(PassFailedException, match="momentum needs weight-storage=f32 or i8-nearest"):
            AutodiffPass(weight_storage=storage, momentum=0.9).apply(Context(), tiny_model().clone())  # type: ignore
    AutodiffPass(weight_storage="i8-nearest", momentum=0.9).apply(Context(), tiny_model().clone())


def test_sliced_weight_trains_only_its_slice() -> None:
    module = autodiffed(tiny_model(), PIPELINES["half (depthwise slice)"])
    rng = np.random.default_rng(22)
    images = rng.integers(-128, 128, size=(4, 8, 8, 3), dtype=np.int8)
    runner = ModelInterpreter(module)
    flash = runner.params["conv1.weight"].copy()
    losses, sram = run_train_steps(module, images, np.array([0, 1, 2, 1]), 8, interpreter=runner)
    assert set(sram) == {"conv1.weight", "conv2.bias", "conv3.weight", "conv3.bias"}
    assert sram["conv1.weight"].shape == (2, 3, 3, 1) and sram["conv1.weight"].dtype == np.float32
    now = runner.params["conv1.weight"]
    assert np.array_equal(now[2:], flash[2:])  # frozen channels stay the Flash value
    assert np.array_equal(now[:2], np.clip(np.rint(sram["conv1.weight"]), -128, 127).astype(np.int8))
    assert not np.array_equal(sram["conv1.weight"], flash[:2].astype(np.float32))


def test_qtrain_interpret_cli_trains(tmp_path: Path) -> None:
    import io
    import subprocess

    from xdsl.printer import Printer

    module = autodiffed(tiny_model(), PIPELINES["pointwise (1x1 slice)"])
    model = tmp_path / "model.mlir"
    text = io.StringIO()
    Printer(stream=text).print_op(module)
    model.write_text(text.getvalue())
    rng = np.random.default_rng(23)
    images = rng.integers(-128, 128, size=(3, 8, 8, 3), dtype=np.int8)
    labels = np.array([2, 0, 1])
    np.savez(tmp_path / "in.npz", image=images, label=labels)
    results = {}
    for flag in ([], ["--relaxed"]):
        out = tmp_path / f"out{len(flag)}.npz"
        subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_interpret", model, "--entry", "train_step",
                        "--steps", "5", "--inputs", tmp_path / "in.npz", "-o", out, *flag], check=True, cwd=tmp_path)
        with np.load(out) as data:
            results[bool(flag)] = {k: data[k] for k in data.files}
    got = results[False]
    assert got["loss"].dtype == np.float32 and got["loss"].shape == (5,)
    assert got["param/conv2.weight"].shape == (4, 1, 1, 1) and got["param/conv2.weight"].dtype == np.float32
    assert got["param/conv3.bias"].dtype == np.int32
    losses, sram = run_train_steps(load_module(model), images, labels, 5)
    assert np.array_equal(got["loss"], losses)
    assert sorted(got) == sorted(["loss", *(f"param/{n}" for n in sram)])
    for name, value in sram.items():
        assert np.array_equal(got[f"param/{name}"], value)
    relaxed = results[True]
    assert relaxed["param/conv3.bias"].dtype == np.float64
    assert np.abs(relaxed["loss"] - got["loss"]).max() < 0.5


# -- training really trains: digits fine-tuned to inverted contrast ----------------------------------------

DIGITS = REPO / "examples" / "digits"
TRAIN_IMAGES = 64
EPOCHS = 8
LR = 0.001


def digits_task() -> tuple[ModuleOp, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(forward-only module, int8 train images, labels, int8 held-out images, labels), contrast inverted."""
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn")
    from qtrain.frontends.onnx import import_onnx, quantize_images

    sys.path.insert(0, str(DIGITS))
    try:
        from data import load_split  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DIGITS))
    train_x, train_y, held_x, held_y = load_split()
    # Quantized for the original domain (calibrated on upright digits), then fine-tuned on the inverted one.
    module = import_onnx(DIGITS / "digits_cnn.onnx", calibration=train_x[:256])
    invert = quantize_images(1.0 - train_x[:TRAIN_IMAGES], module), quantize_images(1.0 - held_x[:200], module)
    return module, invert[0], train_y[:TRAIN_IMAGES], invert[1], held_y[:200]


def accuracy(module: ModuleOp, runner: ModelInterpreter, images: np.ndarray, labels: np.ndarray) -> float:
    _, logits = run_forward(module, images, interpreter=runner)
    return float(np.mean(logits.argmax(axis=1) == labels))


def train_run(forward: ModuleOp, images: np.ndarray, labels: np.ndarray, held: tuple[np.ndarray, np.ndarray], *,
              qas: bool, relaxed: bool) -> dict[str, np.ndarray]:
    module = forward.clone()
    AutodiffPass(lr=LR, qas=qas).apply(Context(), module)
    runner = ModelInterpreter(module, relaxed=relaxed)
    acc = [accuracy(module, runner, images, labels)]
    held_acc = [accuracy(module, runner, *held)]
    losses = []
    for _ in range(EPOCHS):
        loss, _ = run_train_steps(module, images, labels, len(images), interpreter=runner)
        losses.append(loss)
        acc.append(accuracy(module, runner, images, labels))
    held_acc.append(accuracy(module, runner, *held))
    steps = np.concatenate(losses)
    return {"loss": steps, "epoch_loss": steps.reshape(EPOCHS, -1).mean(axis=1), "accuracy": np.array(acc),
            "held_out": np.array(held_acc)}


def test_training_trains_and_qas_tracks_fp32() -> None:
    """Three runs, same 64 images, order and 8 x 64 steps (lr 0.001, SGD, batch 1, every tensor trainable).

    Metric: the gap between a run's loss curve and the fp32 simulation's, mean over epochs of
    |epoch-mean loss - fp32's epoch-mean loss|. QAS must be within a quarter of no-QAS's gap.
    """
    start = time.perf_counter()
    forward, images, labels, held_x, held_y = digits_task()
    runs = {
        "fp32 simulation": train_run(forward, images, labels, (held_x, held_y), qas=True, relaxed=True),
        "int8 + QAS": train_run(forward, images, labels, (held_x, held_y), qas=True, relaxed=False),
        "int8, no QAS": train_run(forward, images, labels, (held_x, held_y), qas=False, relaxed=False),
    }
    fp32 = runs["fp32 simulation"]
    gaps = {name: float(np.mean(np.abs(r["epoch_loss"] - fp32["epoch_loss"]))) for name, r in runs.items()}
    lines = [f"digits, inverted contrast: {TRAIN_IMAGES} images x {EPOCHS} epochs, lr {LR} "
             f"({time.perf_counter() - start:.1f} s)"]
    for name, r in runs.items():
        lines.append(f"  {name:16s} epoch-mean loss {' '.join(f'{v:6.3f}' for v in r['epoch_loss'])}")
        lines.append(f"  {'':16s} train accuracy  {' '.join(f'{v:6.3f}' for v in r['accuracy'])}")
        lines.append(f"  {'':16s} held-out accuracy {r['held_out'][0]:.3f} -> {r['held_out'][-1]:.3f}, "
                     f"gap to fp32 {gaps[name]:.3f}")
    summary = "\n".join(lines)
    print("\n" + summary)

    for name in ("fp32 simulation", "int8 + QAS"):
        r = runs[name]
        assert r["epoch_loss"][-1] < 0.25 * r["epoch_loss"][0], f"{name}: loss does not go down\n{summary}"
        assert r["accuracy"][-1] >= max(0.6, r["accuracy"][0] + 0.3), f"{name}: accuracy does not go up\n{summary}"
    assert abs(runs["int8 + QAS"]["accuracy"][-1] - fp32["accuracy"][-1]) <= 0.15, summary
    assert gaps["int8 + QAS"] < 0.25 * gaps["int8, no QAS"], summary
