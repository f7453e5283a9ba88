"""`qtrain-autodiff`: builds `@train_step(image, label) -> loss` from `@forward` at compile time.

train_step = forward (each requantizing op also saves its 1-bit clamp mask when the clamp can bite)
           + dequantize + cross-entropy loss
           + backward in reverse op order (fp32 gradients in each tensor's integer domain)
           + the learning-rate schedule of this step (`qtrain.lr_schedule`: reads and advances the
             device's step counter) and one `qtrain.sgd_update` per trainable parameter taking its
             factor, all at the end (the naive schedule; `qtrain-reorder` moves each update up to where
             its gradient exists).

The recipe (`qtrain.transforms.recipe`; its defaults are the options' defaults): `lr` and `bias-lr`, the
base learning rates; `warmup-steps`, linear warm-up; `steps`, the horizon of the cosine decay (0: none);
`final-lr-ratio`, the fraction of the base rates reached at the horizon and held after it (the device
keeps learning); `momentum`, SGD momentum (0, the default: plain SGD; otherwise every update keeps an
fp32 velocity buffer of its parameter's trainable shape as device state, which the planner counts).
Weight and bias rates follow the same schedule.

Every parameter becomes trainable (the sparse-update pass narrows this). QAS (`qas=true`) sets each
update's grad_scale to s_w[c]^-2 for weights and (s_x * s_w[c])^-2 for biases, per output channel,
as in the MCUNetV3 paper; `qas=false` gives plain SGD (grad_scale 1).

Weights are kept as an fp32 master copy in the integer domain by default (`weight-storage=f32`):
an int8 in-place update rounds away every step smaller than half a quantization step, which stalls
training; the int8 weights the forward pass reads are rint + saturate of the master. Biases are int32
and updated in place (their quantization step is ~1e4x finer than the weights', so rounding is
harmless). The cheaper storages round each update stochastically (`qtrain.sgd_update` `stochastic`:
floor(x + u), unbiased, so small steps still count in expectation): `weight-storage=i16` keeps a 16-bit
fixed-point master (the int8 value plus 8 fractional bits, 2 B per weight), `i8` updates the int8 weight
in place (1 B). `i8-nearest` updates in place with round-to-nearest, for comparison. Stochastic
rounding reads the step counter, so it does not combine with momentum (whose fp32 velocity would cost
more than an fp32 master anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, ModuleOp, UnitAttr, f32, i8, i16, i32
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import (
    CrossEntropyGradOp,
    CrossEntropyOp,
    DequantizeOp,
    GradAccumulateOp,
    ParamOp,
    RequantGradOp,
    SGDUpdateOp,
)
from qtrain.dialects.qtrain.contract import FORWARD, TRAIN_STEP, find_func, param_name, param_ops
from qtrain.dialects.qtrain.interfaces import (
    DifferentiableOp,
    ParamConsumerOp,
    ParamRead,
    SaturatingOp,
    TrainedParamRole,
    produced_quant,
)
from qtrain.dialects.qtrain.schedule import MAX_SCHEDULE_STEPS, LRScheduleOp
from qtrain.transforms.recipe import COMPILE_RECIPE, DEFAULT_WEIGHT_STORAGE, WEIGHT_STORAGES

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class _Backward:
    """The `BackwardBuilder` ops use: appends backward ops to `block`, tracks each forward value's gradient."""

    block: Block
    needs: set[SSAValue]
    grads: dict[SSAValue, SSAValue]

    def grad(self, value: SSAValue) -> SSAValue | None:
        return self.grads.get(value)

    def needs_grad(self, value: SSAValue) -> bool:
        return value in self.needs

    def emit(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def accumulate(self, value: SSAValue, grad: SSAValue) -> None:
        if value not in self.needs:
            return
        if value in self.grads:
            grad = self.emit(GradAccumulateOp(self.grads[value], grad)).results[0]
        self.grads[value] = grad


@dataclass(frozen=True)
class AutodiffPass(ModulePass):
    """Builds @train_step (forward + cross-entropy loss + backward + SGD/QAS updates) from @forward."""

    name = "qtrain-autodiff"

    lr: float = COMPILE_RECIPE.lr
    """learning rate of weight updates"""
    bias_lr: float | None = COMPILE_RECIPE.bias_lr
    """learning rate of bias updates (None: lr)"""
    warmup_steps: int = COMPILE_RECIPE.warmup_steps
    """steps of linear learning-rate warm-up (0: none)"""
    steps: int = COMPILE_RECIPE.steps
    """horizon of the cosine decay, in steps (0: no decay)"""
    final_lr_ratio: float = COMPILE_RECIPE.final_lr_ratio
    """learning rate at and after the horizon, as a fraction of lr / bias-lr"""
    momentum: float = COMPILE_RECIPE.momentum
    """SGD momentum in [0, 1) (0: none; otherwise an fp32 velocity per trainable tensor)"""
    qas: bool = True
    """quantization-aware scaling of the gradients"""
    loss: Literal["cross-entropy"] = "cross-entropy"
    weight_storage: Literal["f32", "i16", "i8", "i8-nearest"] = DEFAULT_WEIGHT_STORAGE  # type: ignore[assignment]
    """SRAM copy of trainable weights: fp32 master, 16-bit fixed-point master or int8 in place (both rounded
    stochastically), or int8 in place rounded to nearest"""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        forward = find_func(op, FORWARD)
        if forward is None:
            raise PassFailedException(f"{self.name}: the module has no func.func @{FORWARD} to differentiate")
        if find_func(op, TRAIN_STEP) is not None:
            raise PassFailedException(f"{self.name}: the module already has a func.func @{TRAIN_STEP}")
        for option, value in (("lr", self.lr), ("bias-lr", self.bias_lr)):
            # The device computes in float32: a rate that overflows it, or underflows to 0, is no rate.
            if value is not None and not (0 < value <= FLOAT32_MAX and float(np.float32(value)) > 0):
                raise PassFailedException(f"{self.name}: {option} = {value:g} is not a usable learning rate (a "
                                          f"positive float32: between 1.4e-45 and 3.4e38)")
        self._check_schedule()
        if self.weight_storage not in WEIGHT_STORAGES:
            raise PassFailedException(f"{self.name}: weight-storage must be one of {', '.join(WEIGHT_STORAGES)}, "
                                      f"got {self.weight_storage}")
        if self.momentum and self.weight_storage in ("i16", "i8"):
            raise PassFailedException(f"{self.name}: momentum needs weight-storage=f32 or i8-nearest (stochastic "
                                      f"rounding of {self.weight_storage} does not combine with momentum)")
        train = self._build_train_step(forward, param_ops(op))
        op.body.block.add_op(train)

    def _check_schedule(self) -> None:
        if not 0 <= self.warmup_steps <= MAX_SCHEDULE_STEPS:
            raise PassFailedException(f"{self.name}: warmup-steps must be within [0, {MAX_SCHEDULE_STEPS}], "
                                      f"got {self.warmup_steps}")
        if self.steps != 0 and not self.warmup_steps < self.steps <= MAX_SCHEDULE_STEPS:
            raise PassFailedException(f"{self.name}: steps (the decay horizon) must be 0 (no decay) or more than "
                                      f"warmup-steps ({self.warmup_steps}) and at most {MAX_SCHEDULE_STEPS}, "
                                      f"got {self.steps}")
        if not 0 <= self.final_lr_ratio <= 1:
            raise PassFailedException(f"{self.name}: final-lr-ratio must be within [0, 1], got {self.final_lr_ratio}")
        if not 0 <= self.momentum < 1:
            raise PassFailedException(f"{self.name}: momentum must be within [0, 1), got {self.momentum}")

    # -- construction ----------------------------------------------------------------------------------

    def _build_train_step(self, forward: func.FuncOp, params: dict[str, ParamOp]) -> func.FuncOp:
        fwd_type = forward.function_type
        if len(fwd_type.inputs.data) != 1 or len(fwd_type.outputs.data) != 1:
            raise PassFailedException(f"{self.name}: @{FORWARD} must take one image and return one int8 output")
        image_type = fwd_type.inputs.data[0]
        block = Block(arg_types=[image_type, i32])
        image, label = block.args
        image.name_hint = "image"
        label.name_hint = "label"

        # 1. forward, cloned, with masks on the requantizing ops whose clamp can bite.
        value_map: dict[SSAValue, SSAValue] = {forward.body.block.args[0]: image}
        forward_ops: list[Operation] = []
        returned: SSAValue | None = None
        for fop in forward.body.block.ops:
            if isinstance(fop, func.ReturnOp):
                returned = value_map[fop.arguments[0]]
                break
            new = fop.clone(value_mapper=value_map)
            if isinstance(new, SaturatingOp) and new.can_saturate():
                masked = new.with_mask(True)
                new.erase()  # the unmasked clone must not stay registered as a user of its operands
                new = masked
            for old_res, new_res in zip(fop.results, new.results, strict=False):
                value_map[old_res] = new_res
                new_res.name_hint = old_res.name_hint
            block.add_op(new)
            forward_ops.append(new)
        if returned is None:
            raise PassFailedException(f"{self.name}: @{FORWARD} has no func.return")
        out_q = produced_quant(returned)
        if out_q is None:
            raise PassFailedException(f"{self.name}: cannot tell the quantization of @{FORWARD}'s output")

        # 2. loss
        logits = DequantizeOp(returned, out_q)
        logits.output.name_hint = "logits_real"
        loss = CrossEntropyOp(logits, label)
        loss.loss.name_hint = "loss"
        block.add_ops([logits, loss])

        # 3. backward, each op building its own from its results' gradients
        reads = {o.results[0]: name for o in forward_ops
                 if o.has_trait(ParamRead) and (name := param_name(o.results[0])) in params}
        trainable_values = set(reads)
        bw = _Backward(block, _values_needing_grad(forward_ops, trainable_values), {})
        g_logits = bw.emit(CrossEntropyGradOp(logits.output, label)).results[0]
        bw.needs.update((logits.output, returned))
        bw.grads[returned] = bw.emit(RequantGradOp(g_logits, None, [out_q.scale])).results[0]
        for fop in reversed(forward_ops):
            if not any(r in bw.grads for r in fop.results):
                continue
            if not isinstance(fop, DifferentiableOp):
                raise PassFailedException(f"{self.name}: no gradient for {fop.name}")
            fop.build_backward(bw)

        # 4. this step's learning-rate factor, then the updates, all after the backward (naive schedule)
        schedule = bw.emit(LRScheduleOp(warmup_steps=self.warmup_steps, steps=self.steps,
                                        final_ratio=self.final_lr_ratio))
        param_grads: dict[str, tuple[SSAValue, list[TrainedParamRole]]] = {}
        for value, name in reads.items():
            if value not in bw.grads:
                continue
            roles = [role for u in value.uses if isinstance(u.operation, ParamConsumerOp)
                     and (role := u.operation.trained_param_role(value, self.qas)) is not None]
            if name in param_grads:
                prev, prev_roles = param_grads[name]
                acc = bw.emit(GradAccumulateOp(prev, bw.grads[value])).results[0]
                param_grads[name] = (acc, prev_roles + roles)
            else:
                param_grads[name] = (bw.grads[value], roles)
        for name, (grad, roles) in param_grads.items():
            param = params[name]
            if not roles:
                raise PassFailedException(f"{self.name}: parameter @{name} is not read by an op that trains it")
            role = roles[0]
            is_bias = role.kind == "bias"
            lr = (self.bias_lr if self.bias_lr is not None else self.lr) if is_bias else self.lr
            param.trainable = UnitAttr()
            # Only int8 weights have a cheaper storage; fp32 parameters (GroupNorm) and int32 biases stay.
            int8_weight = not is_bias and param.tensor_type.element_type == i8
            if int8_weight and self.weight_storage in ("f32", "i16"):
                param.storage = f32 if self.weight_storage == "f32" else i16
            grad.name_hint = f"g_{name.replace('.', '_')}"
            block.add_op(SGDUpdateOp(name, grad, lr=lr, grad_scale=role.grad_scale, lr_factor=schedule.results[0],
                                     momentum=self.momentum,
                                     stochastic=int8_weight and self.weight_storage in ("i16", "i8")))

        block.add_op(func.ReturnOp(loss.loss))
        return func.FuncOp(TRAIN_STEP, FunctionType.from_lists([image_type, i32], [f32]), Region(block))


def _values_needing_grad(ops: list[Operation], trainable: set[SSAValue]) -> set[SSAValue]:
    """Values that depend on a trainable parameter: only their gradients lead to an update."""
    needs = set(trainable)
    for op in ops:
        if any(o in needs for o in op.operands):
            needs.update(op.results)
    return needs
