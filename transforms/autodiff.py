"""`qtrain-autodiff`: builds `@train_step(image, label) -> loss` from `@forward` at compile time.

train_step = forward (each requantizing op also saves its 1-bit clamp mask when the clamp can bite)
           + dequantize + cross-entropy loss
           + backward in reverse op order (fp32 gradients in each tensor's integer domain)
           + one `qtrain.sgd_update` per trainable parameter, all at the end (the naive schedule;
             `qtrain-reorder` moves each one up to where its gradient exists).

Every parameter becomes trainable (the sparse-update pass narrows this). QAS (`qas=true`) sets each
update's grad_scale to s_w[c]^-2 for weights and (s_x * s_w[c])^-2 for biases, per output channel,
as in the MCUNetV3 paper; `qas=false` gives plain SGD (grad_scale 1).

Weights are kept as an fp32 master copy in the integer domain by default (`weight-storage=f32`):
an int8 in-place update rounds away every step smaller than half a quantization step, which stalls
training; the int8 weights the forward pass reads are rint + saturate of the master. Biases are int32
and updated in place (their quantization step is ~1e4x finer than the weights', so rounding is
harmless). `weight-storage=i8` updates int8 weights in place, for comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import FunctionType, ModuleOp, TensorType, UnitAttr, f32, i32
from xdsl.ir import Block, Operation, Region, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolGradOp,
    AvgPoolOp,
    BiasGradOp,
    Conv2DInputGradOp,
    Conv2DOp,
    Conv2DWeightGradOp,
    CrossEntropyGradOp,
    CrossEntropyOp,
    DequantizeOp,
    GetParamOp,
    GradAccumulateOp,
    ParamOp,
    QuantizeOp,
    RequantGradOp,
    ReshapeOp,
    SGDUpdateOp,
)
from qtrain.dialects.qtrain.ops import clamp_range, produced_quant

TRAIN_STEP = "train_step"
FORWARD = "forward"


def f32_div(a: float, b: float) -> float:
    return float(np.float32(np.float32(a) / np.float32(b)))


def conv_multipliers(op: Conv2DOp) -> list[float]:
    """dy_q/dacc per output channel: fp32(s_x * s_w[c]) / s_y, as the forward requantization uses."""
    sx = np.float32(op.input_q.scale)
    sy = np.float32(op.output_q.scale)
    sw = op.weight_q.scale_array()
    cout = op.output.type.get_shape()[3]  # type: ignore[attr-defined]
    sw = np.broadcast_to(sw, (cout,))
    return [float(v) for v in (sx * sw).astype(np.float32) / sy]


def avgpool_multiplier(op: AvgPoolOp) -> float:
    kh, kw = op.kernel.get_values()
    return f32_div(op.input_q.scale, float(np.float32(op.output_q.scale) * np.float32(kh * kw)))


def affine_range(terms: list[tuple[float, float, float]], zy: int) -> tuple[float, float]:
    """Range of zy + sum(m * (q - z)) over int8 q, for terms (m, z, 0)."""
    lo = hi = float(zy)
    for m, z, _ in terms:
        a, b = m * (-128 - z), m * (127 - z)
        lo += min(a, b)
        hi += max(a, b)
    return lo, hi


def can_saturate(op: Operation) -> bool:
    """Whether the op's clamp can change a value; if not, its backward needs no mask."""
    if isinstance(op, AvgPoolOp):
        terms = [(avgpool_multiplier(op) * np.prod(op.kernel.get_values()), op.input_q.zp, 0.0)]
        lo_clamp, hi_clamp = -128, 127
        zy = op.output_q.zp
    elif isinstance(op, AddOp):
        sy = op.output_q.scale
        terms = [(f32_div(op.lhs_q.scale, sy), op.lhs_q.zp, 0.0), (f32_div(op.rhs_q.scale, sy), op.rhs_q.zp, 0.0)]
        lo_clamp, hi_clamp = clamp_range(op.clamp)
        zy = op.output_q.zp
    else:
        return True
    lo, hi = affine_range(terms, zy)
    return not (np.rint(lo) >= lo_clamp and np.rint(hi) <= hi_clamp)


@dataclass
class _Backward:
    """Builds backward ops into `block`, tracking the gradient of each forward value."""

    block: Block
    needs_grad: set[SSAValue]
    grads: dict[SSAValue, SSAValue]

    def emit(self, op: Operation) -> Operation:
        self.block.add_op(op)
        return op

    def accumulate(self, value: SSAValue, grad: SSAValue) -> None:
        if value not in self.needs_grad:
            return
        if value in self.grads:
            grad = self.emit(GradAccumulateOp(self.grads[value], grad)).results[0]
        self.grads[value] = grad


@dataclass(frozen=True)
class AutodiffPass(ModulePass):
    """Builds @train_step (forward + cross-entropy loss + backward + SGD/QAS updates) from @forward."""

    name = "qtrain-autodiff"

    lr: float = 0.05
    """learning rate of weight updates"""
    bias_lr: float | None = None
    """learning rate of bias updates (default: lr)"""
    qas: bool = True
    """quantization-aware scaling of the gradients"""
    loss: Literal["cross-entropy"] = "cross-entropy"
    weight_storage: Literal["f32", "i8"] = "f32"
    """SRAM copy of trainable weights: fp32 master (default) or int8 in place"""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        forward = _find_func(op, FORWARD)
        if forward is None:
            raise PassFailedException(f"{self.name}: the module has no func.func @{FORWARD} to differentiate")
        if _find_func(op, TRAIN_STEP) is not None:
            raise PassFailedException(f"{self.name}: the module already has a func.func @{TRAIN_STEP}")
        if not (self.lr > 0 and (self.bias_lr is None or self.bias_lr > 0)):
            raise PassFailedException(f"{self.name}: lr and bias-lr must be positive")
        params = {p.sym_name.data: p for p in op.ops if isinstance(p, ParamOp)}
        train = self._build_train_step(forward, params)
        op.body.block.add_op(train)

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
            if isinstance(new, Conv2DOp | AddOp | AvgPoolOp) and can_saturate(new):
                masked = _add_mask_result(new)
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

        # 3. backward
        trainable_values = {
            o.result for o in forward_ops if isinstance(o, GetParamOp) and o.param.root_reference.data in params
        }
        needs_grad = _values_needing_grad(forward_ops, trainable_values)
        bw = _Backward(block, needs_grad, {})
        g_logits = bw.emit(CrossEntropyGradOp(logits.output, label)).results[0]
        needs_grad.add(logits.output)
        needs_grad.add(returned)
        g_out = bw.emit(RequantGradOp(g_logits, None, [out_q.scale])).results[0]
        bw.grads[returned] = g_out
        for fop in reversed(forward_ops):
            self._backward_op(fop, bw)

        # 4. updates, all after the backward (naive schedule)
        param_grads: dict[str, tuple[SSAValue, list[Conv2DOp]]] = {}
        for fop in forward_ops:
            if isinstance(fop, GetParamOp) and fop.result in bw.grads:
                name = fop.param.root_reference.data
                users = [u.operation for u in fop.result.uses if isinstance(u.operation, Conv2DOp)]
                if name in param_grads:
                    prev, prev_users = param_grads[name]
                    acc = bw.emit(GradAccumulateOp(prev, bw.grads[fop.result])).results[0]
                    param_grads[name] = (acc, prev_users + users)
                else:
                    param_grads[name] = (bw.grads[fop.result], users)
        for name, (grad, users) in param_grads.items():
            param = params[name]
            if not users:
                raise PassFailedException(f"{self.name}: parameter @{name} is not used by a qtrain.conv2d")
            is_bias = param.tensor_type.get_num_dims() == 1
            scale = self._qas_scale(users[0], is_bias)
            lr = (self.bias_lr if self.bias_lr is not None else self.lr) if is_bias else self.lr
            param.trainable = UnitAttr()
            if not is_bias and self.weight_storage == "f32":
                param.storage = f32
            grad.name_hint = f"g_{name.replace('.', '_')}"
            block.add_op(SGDUpdateOp(name, grad, lr=lr, grad_scale=scale))

        block.add_op(func.ReturnOp(loss.loss))
        return func.FuncOp(TRAIN_STEP, FunctionType.from_lists([image_type, i32], [f32]), Region(block))

    def _qas_scale(self, conv: Conv2DOp, is_bias: bool) -> list[float]:
        if not self.qas:
            return [1.0]
        sw = conv.weight_q.scale_array().astype(np.float64)
        if is_bias:
            sw = sw * float(np.float32(conv.input_q.scale))
        return [float(v) for v in (1.0 / (sw * sw)).astype(np.float32)]

    def _backward_op(self, op: Operation, bw: _Backward) -> None:
        if isinstance(op, GetParamOp | QuantizeOp) or not any(r in bw.grads for r in op.results):
            return
        if isinstance(op, ReshapeOp):
            g = bw.grads[op.output]
            in_type = op.input.type
            assert isinstance(in_type, TensorType)
            bw.accumulate(op.input, bw.emit(ReshapeOp(g, TensorType(f32, in_type.get_shape()))).results[0])
        elif isinstance(op, DequantizeOp):
            g = bw.grads[op.output]
            bw.accumulate(op.input, bw.emit(RequantGradOp(g, None, [op.input_q.scale])).results[0])
        elif isinstance(op, AddOp):
            g = bw.grads[op.output]
            sy = op.output_q.scale
            for operand, q in ((op.lhs, op.lhs_q), (op.rhs, op.rhs_q)):
                if operand in bw.needs_grad:
                    r = bw.emit(RequantGradOp(g, op.mask, [f32_div(q.scale, sy)])).results[0]
                    bw.accumulate(operand, r)
        elif isinstance(op, AvgPoolOp):
            g = bw.grads[op.output]
            g_sum = bw.emit(RequantGradOp(g, op.mask, [avgpool_multiplier(op)])).results[0]
            in_type = op.input.type
            assert isinstance(in_type, TensorType)
            kernel, strides = op.kernel.get_values(), op.strides.get_values()
            gx = bw.emit(AvgPoolGradOp(g_sum, TensorType(f32, in_type.get_shape()), kernel=kernel, strides=strides))
            bw.accumulate(op.input, gx.results[0])
        elif isinstance(op, Conv2DOp):
            self._conv_backward(op, bw)
        else:
            raise PassFailedException(f"{self.name}: no gradient for {op.name}")

    def _conv_backward(self, op: Conv2DOp, bw: _Backward) -> None:
        g = bw.grads[op.output]
        g_acc = bw.emit(RequantGradOp(g, op.mask, conv_multipliers(op))).results[0]
        g_acc.name_hint = "g_acc"
        strides, padding = op.strides.get_values(), op.padding.get_values()
        groups = op.groups.value.data
        if op.bias is not None and op.bias in bw.needs_grad:
            bw.accumulate(op.bias, bw.emit(BiasGradOp(g_acc)).results[0])
        if op.weight in bw.needs_grad:
            w_type = op.weight.type
            assert isinstance(w_type, TensorType)
            gw = Conv2DWeightGradOp(op.input, g_acc, TensorType(f32, w_type.get_shape()), strides=strides,
                                    padding=padding, groups=groups, input_q=op.input_q)
            bw.accumulate(op.weight, bw.emit(gw).results[0])
        if op.input in bw.needs_grad:
            x_type = op.input.type
            assert isinstance(x_type, TensorType)
            gx = Conv2DInputGradOp(g_acc, op.weight, TensorType(f32, x_type.get_shape()), strides=strides,
                                   padding=padding, groups=groups)
            bw.accumulate(op.input, bw.emit(gx).results[0])


def _add_mask_result(op: Conv2DOp | AddOp | AvgPoolOp) -> Operation:
    from qtrain.dialects.qtrain.ops import mask_type

    return type(op).create(
        operands=list(op.operands),
        result_types=[op.output.type, mask_type(op.output.type)],
        properties=dict(op.properties),
        attributes=dict(op.attributes),
    )


def _values_needing_grad(ops: list[Operation], trainable: set[SSAValue]) -> set[SSAValue]:
    """Values that depend on a trainable parameter: only their gradients lead to an update."""
    needs = set(trainable)
    for op in ops:
        if any(o in needs for o in op.operands):
            needs.update(op.results)
    return needs


def _find_func(module: ModuleOp, name: str) -> func.FuncOp | None:
    for o in module.ops:
        if isinstance(o, func.FuncOp) and o.sym_name.data == name:
            return o
    return None
