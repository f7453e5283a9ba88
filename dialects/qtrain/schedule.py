"""`qtrain.lr_schedule`: the learning-rate factor of this training step, computed on the device.

    %factor = qtrain.lr_schedule {warmup_steps = 50 : i64, steps = 1000 : i64, final_ratio = 1.000000e-01 : f32} : f32
    qtrain.sgd_update @conv0.weight, %g factor %factor {lr = 5.000000e-02 : f32, grad_scale = ...} : tensor<...>

The op reads the step counter t (device state: a uint32 in SRAM, zeroed by qtrain_init, kept between
calls of @train_step, saved by a checkpoint), yields the factor of step t and advances the counter.
The schedule (`numerics.lr_schedule_factor` states the float32 operations, which the C kernel
`qtrain_lr_schedule_f32` repeats bit for bit; W = warmup_steps, T = steps, r = final_ratio):

- linear warm-up: (t + 1) / W for t < W (the first step trains at lr / W, step W - 1 at the full lr);
- cosine decay over the horizon: 1 - (1 - r) * (1 - cos(pi * (t - W) / (T - W))) / 2 for W <= t < T;
- then r held: the device keeps learning after the horizon at r times the base learning rate;
- T = 0 means no decay (1 after the warm-up); W = T = 0 is a constant factor of exactly 1, which leaves
  every update bit for bit what it is without a schedule.

Every `qtrain.sgd_update` of the step takes the factor as its `factor` operand (weights and biases alike:
the bias learning rate follows the same schedule) and steps with lr_t = fp32(lr * factor). A module has
at most one schedule (one step counter). The cosine is `qtrain_cospif` (runtime_math.c; its numpy twin
`numerics.cospi_f32`): a Taylor polynomial in float32 adds and multiplies only, so the host, the
Cortex-M7 and the golden model compute the same bits without a libm (the target has none).

A call of @train_step whose updates are not applied (the interpreter's `apply_updates=False`, used to
probe gradients) is not a training step: the counter stays.

This module is the whole of the op on the compiler side: its class, verifier, golden model, device
state and kernel call (the dialect picks up `OPS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import I64, Float32Type, FloatAttr, IntegerAttr, f32, i64
from xdsl.ir import Operation
from xdsl.irdl import IRDLOperation, ParsePropInAttrDict, irdl_op_definition, prop_def, result_def, traits_def
from xdsl.traits import MemoryWriteEffect
from xdsl.utils.exceptions import VerifyException

from qtrain import numerics
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.interfaces import DeviceState, DeviceStateOp, GoldenModelOp, GoldenRun, KernelCallOp

STEP_COUNTER = DeviceState("step", "u32", 1)
"""The training step counter: how many steps have run since qtrain_init (or the restored checkpoint)."""

MAX_SCHEDULE_STEPS = 2**24
"""Warm-up and horizon lengths convert to float32 exactly up to here."""

COUNTER_MAX = 2**32 - 1
"""The counter saturates here (it never wraps back into the warm-up)."""


@irdl_op_definition
class LRScheduleOp(IRDLOperation, DeviceStateOp, GoldenModelOp, KernelCallOp):
    """The learning-rate factor of this training step (warm-up, cosine decay, held); advances the step counter."""

    name = "qtrain.lr_schedule"
    factor = result_def(f32)
    warmup_steps = prop_def(IntegerAttr[I64])
    steps = prop_def(IntegerAttr[I64])
    final_ratio = prop_def(FloatAttr[Float32Type])
    traits = traits_def(MemoryWriteEffect())
    irdl_options = (ParsePropInAttrDict(),)
    assembly_format = "attr-dict `:` type($factor)"

    def __init__(self, *, warmup_steps: int, steps: int, final_ratio: float):
        super().__init__(
            result_types=[f32],
            properties={
                "warmup_steps": IntegerAttr(warmup_steps, i64),
                "steps": IntegerAttr(steps, i64),
                "final_ratio": FloatAttr(float(final_ratio), f32),
            },
        )
        self.factor.name_hint = "lr_factor"

    def schedule(self) -> tuple[int, int, float]:
        """(warmup_steps, steps, final_ratio)."""
        return self.warmup_steps.value.data, self.steps.value.data, self.final_ratio.value.data

    def factors(self, steps: int) -> np.ndarray:
        """The factors of the first `steps` training steps (float32), as the device computes them."""
        warmup, horizon, ratio = self.schedule()
        return numerics.lr_schedule_factor(np.arange(steps), warmup_steps=warmup, steps=horizon, final_ratio=ratio)

    def device_state(self) -> Sequence[DeviceState]:
        return (STEP_COUNTER,)

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        counter = run.device_state(STEP_COUNTER)
        t = int(counter[0])
        warmup, horizon, ratio = self.schedule()
        factor = numerics.lr_schedule_factor(t, warmup_steps=warmup, steps=horizon, final_ratio=ratio)
        if run.apply_updates and t < COUNTER_MAX:
            counter[0] = t + 1
        return (np.float32(factor),)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        warmup, horizon, ratio = self.schedule()
        return (kc.KernelCall("qtrain_lr_schedule_f32",
                              (kc.State(STEP_COUNTER.name), kc.I32(warmup), kc.I32(horizon), kc.F32(ratio)),
                              returns="value", result=self.factor),)

    def verify_(self) -> None:
        warmup, horizon, ratio = self.schedule()
        if not 0 <= warmup <= MAX_SCHEDULE_STEPS:
            raise VerifyException(f"{self.name}: warmup_steps must be within [0, 2^24], got {warmup}")
        if horizon != 0 and not warmup < horizon <= MAX_SCHEDULE_STEPS:
            raise VerifyException(
                f"{self.name}: steps (the horizon) must be 0 (no decay) or within (warmup_steps, 2^24] = "
                f"({warmup}, {MAX_SCHEDULE_STEPS}], got {horizon}"
            )
        if not (math.isfinite(ratio) and 0.0 <= ratio <= 1.0):
            raise VerifyException(f"{self.name}: final_ratio must be within [0, 1], got {ratio}")
        block = self.parent_block()
        if block is not None and any(isinstance(o, LRScheduleOp) and o is not self for o in block.ops):
            raise VerifyException(f"{self.name}: a function has at most one schedule (one step counter)")


def schedule_of(function: Operation) -> LRScheduleOp | None:
    """The `qtrain.lr_schedule` of a function, or None."""
    return next((o for o in function.walk() if isinstance(o, LRScheduleOp)), None)


OPS = [LRScheduleOp]
