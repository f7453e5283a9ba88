"""`qtrain.lr_schedule` and the scheduled / momentum `qtrain.sgd_update` (dialects/qtrain/schedule.py,
grad_ops.py) against independent references: the schedule's formula in float64 with the exact cosine,
hand-computed float32 values, and update sequences recomputed step by step in numpy from the gradients
the golden model recorded. The golden model's step counter and velocities live in the interpreter's state.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from testpaths import LIT_INPUTS
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.rewriter import Rewriter

from qtrain import numerics
from qtrain.dialects.qtrain import SGDUpdateOp
from qtrain.dialects.qtrain.schedule import LRScheduleOp, schedule_of
from qtrain.interpreter import ModelInterpreter, load_module, run_train_steps
from qtrain.transforms.autodiff import AutodiffPass
from qtrain.transforms.pipeline import apply_passes, training_passes

SCHEDULES = [(50, 1000, 0.1), (0, 300, 0.0), (10, 11, 0.5), (7, 0, 0.3), (0, 0, 1.0), (1, 2, 1.0)]


def reference_factor(t: int, warmup: int, horizon: int, ratio: float) -> float:
    """The schedule from its definition, in float64 with the exact cosine."""
    if t < warmup:
        return (t + 1) / warmup
    if horizon and t < horizon:
        return 1 - (1 - ratio) * (1 - math.cos(math.pi * (t - warmup) / (horizon - warmup))) / 2
    return ratio if horizon else 1.0


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"W{s[0]}-T{s[1]}-r{s[2]}")
def test_factor_follows_the_definition(schedule: tuple[int, int, float]) -> None:
    warmup, horizon, ratio = schedule
    steps = max(warmup, horizon) + 30
    got = numerics.lr_schedule_factor(np.arange(steps), warmup_steps=warmup, steps=horizon, final_ratio=ratio)
    assert got.dtype == np.float32 and got.shape == (steps,)
    expected = np.array([reference_factor(t, warmup, horizon, ratio) for t in range(steps)])
    assert np.abs(got.astype(np.float64) - expected).max() < 4e-7
    # Warm-up: exactly fp32(t + 1) / fp32(W), reaching 1 at t = W - 1; the decay starts at exactly 1.
    t = np.arange(warmup)
    np.testing.assert_array_equal(got[:warmup], (t + 1).astype(np.float32) / np.float32(max(warmup, 1)))
    if warmup:
        assert got[warmup - 1] == 1.0
    if horizon:
        assert got[warmup] == 1.0
        assert np.all(np.diff(got[warmup:horizon]) <= 0)  # the decay never goes back up
        assert np.all(got[horizon:] == np.float32(ratio))  # held after the horizon
    else:
        assert np.all(got[warmup:] == 1.0)


def test_cospi_accuracy_and_exact_points() -> None:
    """Against the exact cosine: within 2e-7 over [0, 1]; exactly 1 at 0, -1 at 1, 0 at 1/2."""
    x = np.linspace(0, 1, 1_000_001, dtype=np.float64).astype(np.float32)
    exact = np.cos(np.pi * x.astype(np.float64))
    assert np.abs(numerics.cospi_f32(x).astype(np.float64) - exact).max() < 2e-7
    assert numerics.cospi_f32(np.float32(0)) == 1 and numerics.cospi_f32(np.float32(1)) == -1
    assert numerics.cospi_f32(np.float32(0.5)) == 0


def autodiffed(**recipe: float) -> ModuleOp:
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    AutodiffPass(**recipe).apply(Context(), module)  # type: ignore[arg-type]
    module.verify()
    return module


def updates(module: ModuleOp) -> dict[str, SGDUpdateOp]:
    return {u.updated_param: u for u in module.walk() if isinstance(u, SGDUpdateOp)}


def data(n: int = 4, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, (n, 8, 8, 3), dtype=np.int8), rng.integers(0, 3, n)


def test_the_golden_model_steps_with_the_factor_of_its_own_step_counter() -> None:
    """Each step t updates every SRAM copy with fp32(lr * factor(t)), t the counter kept in the interpreter
    state; a call that applies no update (a gradient probe) leaves the counter alone."""
    warmup, horizon, ratio = 3, 8, 0.25
    module = autodiffed(warmup_steps=warmup, steps=horizon, final_lr_ratio=ratio)
    schedule = schedule_of(module)
    assert isinstance(schedule, LRScheduleOp) and schedule.schedule() == (warmup, horizon, ratio)
    images, labels = data()
    runner = ModelInterpreter(module)
    factors = numerics.lr_schedule_factor(np.arange(11), warmup_steps=warmup, steps=horizon, final_ratio=ratio)
    np.testing.assert_array_equal(schedule.factors(11), factors)
    for t in range(11):
        before = {name: runner.sram_copy(name) for name in updates(module)}
        runner.call("train_step", images[t % 4:t % 4 + 1], int(labels[t % 4]))
        assert runner.device_state["step"].tolist() == [t + 1]
        for name, update in updates(module).items():
            lr = np.float32(np.float32(update.lr.value.data) * factors[t])
            expected = numerics.sgd_update(before[name], runner.gradients[name], lr=lr,
                                           grad_scale=update.grad_scale.as_array())
            np.testing.assert_array_equal(runner.sram_copy(name), expected)
    probe = ModelInterpreter(module, apply_updates=False)
    probe.call("train_step", images[:1], int(labels[0]))
    assert probe.device_state["step"].tolist() == [0]


def without_schedule(module: ModuleOp) -> ModuleOp:
    """A clone whose updates take no factor (the IR before schedules existed)."""
    clone = module.clone()
    for update in list(updates(clone).values()):
        Rewriter.replace_op(update, SGDUpdateOp(update.updated_param, update.grad, lr=update.lr.value.data,
                                                grad_scale=update.grad_scale.get_values()), [])
    schedule = schedule_of(clone)
    assert schedule is not None
    Rewriter.erase_op(schedule)
    clone.verify()
    return clone


def test_a_constant_schedule_trains_bit_for_bit_as_no_schedule() -> None:
    scheduled = autodiffed(warmup_steps=0, steps=0)
    plain = without_schedule(scheduled)
    assert schedule_of(plain) is None and all(u.lr_factor is None for u in updates(plain).values())
    images, labels = data(6)
    loss_a, params_a = run_train_steps(scheduled, images, labels, 9)
    loss_b, params_b = run_train_steps(plain, images, labels, 9)
    np.testing.assert_array_equal(loss_a, loss_b)
    for name in params_a:
        np.testing.assert_array_equal(params_a[name].view(np.uint8), params_b[name].view(np.uint8))
    # ... whereas the default recipe's warm-up does change the result.
    _, params_c = run_train_steps(autodiffed(), images, labels, 9)
    assert any(not np.array_equal(params_a[n], params_c[n]) for n in params_a)


def test_momentum_in_the_golden_model_matches_a_step_by_step_reference() -> None:
    """v = fp32(fp32(0.9 * v) + g) from zero, then the SGD step on v, for an fp32 master weight and an int32
    bias, recomputed here from the recorded gradients; the interpreter keeps v as device state."""
    module = autodiffed(warmup_steps=2, steps=6, final_lr_ratio=0.5, momentum=0.9)
    images, labels = data()
    runner = ModelInterpreter(module)
    chosen = {name: update for name, update in updates(module).items() if name in ("conv1.weight", "conv3.bias")}
    assert all(u.momentum_value == np.float32(0.9) for u in chosen.values())
    params = {name: runner.sram_copy(name) for name in chosen}
    velocity = {name: np.zeros(p.shape, np.float32) for name, p in params.items()}
    factors = numerics.lr_schedule_factor(np.arange(7), warmup_steps=2, steps=6, final_ratio=0.5)
    for t in range(7):
        runner.call("train_step", images[t % 4:t % 4 + 1], int(labels[t % 4]))
        for name, update in chosen.items():
            g = runner.gradients[name].astype(np.float32)
            velocity[name] = (np.float32(0.9) * velocity[name] + g).astype(np.float32)
            scale = update.grad_scale.as_array().astype(np.float32).reshape(-1, *([1] * (g.ndim - 1)))
            step = (np.float32(np.float32(update.lr.value.data) * factors[t]) * scale).astype(np.float32)
            delta = (step * velocity[name]).astype(np.float32)
            p = params[name]
            if p.dtype == np.float32:
                params[name] = (p - delta).astype(np.float32)
            else:
                params[name] = np.clip(p.astype(np.int64) - np.rint(delta).astype(np.int64), -(2**31),
                                       2**31 - 1).astype(np.int32)
            np.testing.assert_array_equal(runner.sram_copy(name), params[name])
            np.testing.assert_array_equal(runner.device_state[f"velocity/{name}"], velocity[name].reshape(-1))
    assert runner.device_state["step"].tolist() == [7]


def test_momentum_and_factor_survive_the_pipeline() -> None:
    """Sparse update narrows a weight update (with_gradient) and reorder moves everything: every update
    keeps the factor and the momentum, and the state the planner counts is what the updates declare."""
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    apply_passes(module, training_passes(f"{LIT_INPUTS / 'tiny_schemes.json'}#tiny/half", momentum=0.5,
                                         sram_kb=1 << 20))
    found = updates(module)
    assert set(found) == {"conv1.weight", "conv2.bias", "conv3.weight", "conv3.bias"}
    schedule = schedule_of(module)
    assert schedule is not None
    for update in found.values():
        assert update.lr_factor is schedule.factor and update.momentum_value == 0.5
    velocity = {s.name: s.bytes for u in found.values() for s in u.device_state()}
    assert velocity["velocity/conv1.weight"] == 4 * 2 * 3 * 3 * 1  # the trained slice only
    memory = module.attributes["qtrain.memory"].data  # type: ignore[attr-defined]
    assert memory["state_bytes"].value.data == 4 + sum(velocity.values())
