"""`qtrain-narrow-gradients{precision=bf16}`: activation gradients held as bf16 in the arena.

A bias-only or deep scheme carries a gradient tensor of every layer's activations back to the first
trained layer; in fp32 those tensors set the peak (mbv2-w0.35 bias-only: 1 MB). Held as bf16 they take
half the bytes; the kernels still compute in fp32 (DESIGN.md: fp32 backward) and round each result to
nearest even once when they store it (`numerics.round_bf16`, which the golden model applies too).

In @train_step, walking the ops in order, the result of `qtrain.cross_entropy_grad`,
`qtrain.requant_grad`, `qtrain.conv2d_input_grad` and `qtrain.avgpool_grad` becomes bf16 when every
reader has a kernel reading it as bf16 (those four ops at their gradient operand, `qtrain.bias_grad`,
`qtrain.grad_accumulate`, a `qtrain.reshape` whose readers all do); otherwise it stays fp32, so the
gradient a weight gradient reads (its layer's g_acc) is never copied: the kernels read and write each
format independently (`qtrain.requant_grad` bf16 -> f32, `qtrain.conv2d_input_grad` f32 -> bf16, ...).
`qtrain.grad_accumulate` follows its readers when either operand is bf16 (the other operand is converted
by a `qtrain.grad_convert`); parameter gradients (both operands fp32, e.g. a weight read twice) stay
fp32. A `qtrain.reshape` of a bf16 gradient is a bf16 view. The input gradient of a grouped conv whose weight
trains (a depthwise channel slice) has fp32 kernels only: it reads and writes fp32.
`precision=f32` leaves the module as it is. Run after `qtrain-dead-gradient-elim` (so only the readers
that remain decide) and before `qtrain-fuse-streaming`, `qtrain-reorder` and the planner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType, bf16, f32
from xdsl.ir import Attribute, Block, Operation, SSAValue, Use
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import (
    AvgPoolGradOp,
    BiasGradOp,
    Conv2DInputGradOp,
    CrossEntropyGradOp,
    GradAccumulateOp,
    GradConvertOp,
    RequantGradOp,
)
from qtrain.dialects.qtrain.contract import TRAIN_STEP, find_func
from qtrain.dialects.qtrain.ops import ReshapeOp

GRAD_PRECISIONS = ("f32", "bf16")
DEFAULT_GRAD_PRECISION = "f32"
"""qtrain-compile's, the API's and the pipeline's default. Not bf16 yet: bench_accuracy (interpreter) put bf16
within 1 point of fp32 gradients on digits, but the demo's searched 24 KB scheme on the device (host build =
interpreter, bit-exact) diverges with bf16 (loss above 20 from step 3; 12% vs 43% after 300 steps), which is
unexplained."""

_NARROW_IN_OUT = (RequantGradOp, Conv2DInputGradOp, AvgPoolGradOp)
"""Ops whose bf16 kernel reads its gradient operand (operand 0) and writes its result as bf16."""


def _element(value: SSAValue) -> Attribute | None:
    t = value.type
    return t.element_type if isinstance(t, TensorType) else None


def _retype(value: SSAValue, element: Attribute) -> SSAValue:
    t = value.type
    assert isinstance(t, TensorType)
    return Rewriter.replace_value_with_new_type(value, TensorType(element, t.get_shape()))


def _convert_before(op: Operation, value: SSAValue, element: Attribute) -> SSAValue:
    """A `qtrain.grad_convert` of `value` to `element`, inserted just before `op`."""
    convert = GradConvertOp(value, element)
    convert.result.name_hint = f"{value.name_hint or 'g'}_{'bf16' if element == bf16 else 'f32'}"
    Rewriter.insert_op(convert, InsertPoint.before(op))
    return convert.result


def _reads_bf16(use: Use) -> bool:
    """Whether the op of `use` has a kernel reading that operand as bf16."""
    op = use.operation
    if isinstance(op, Conv2DInputGradOp) and not op.takes_bf16():
        return False
    if isinstance(op, _NARROW_IN_OUT):
        return use.index == 0
    if isinstance(op, ReshapeOp):
        return all(_reads_bf16(u) for u in op.output.uses)  # a view: its readers decide
    return isinstance(op, (BiasGradOp, GradAccumulateOp, GradConvertOp))


def narrow_block(block: Block) -> int:
    """Narrows the activation gradients of one @train_step body; returns how many values became bf16."""
    narrowed = 0

    def convert_operand(op: Operation, index: int, element: Attribute) -> None:
        value = op.operands[index]
        if _element(value) != element:
            op.operands[index] = _convert_before(op, value, element)

    for op in list(block.ops):
        if isinstance(op, GradConvertOp) or not op.results:
            continue
        result = op.results[0]
        if isinstance(op, (CrossEntropyGradOp, *_NARROW_IN_OUT)):
            narrow = all(_reads_bf16(u) for u in result.uses)
            if isinstance(op, Conv2DInputGradOp) and not op.takes_bf16():
                narrow = False  # a trained depthwise slice: the fp32 kernels only
        elif isinstance(op, GradAccumulateOp):
            if bf16 not in (_element(op.lhs), _element(op.rhs)):
                continue  # a parameter gradient (or two fp32 activation gradients): stays fp32
            narrow = all(_reads_bf16(u) for u in result.uses)
            for i in (0, 1):
                convert_operand(op, i, bf16 if narrow else f32)
        elif isinstance(op, ReshapeOp):
            narrow = _element(op.input) == bf16
        else:
            continue
        if narrow:
            _retype(result, bf16)
            narrowed += 1
    return narrowed


@dataclass(frozen=True)
class NarrowGradientsPass(ModulePass):
    """Holds @train_step's activation gradients as bf16 in the arena (fp32 arithmetic in the kernels)."""

    name = "qtrain-narrow-gradients"

    precision: Literal["f32", "bf16"] = "bf16"
    """arena format of activation gradients: f32 (no change) or bf16 (round to nearest even on store)"""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.precision not in GRAD_PRECISIONS:
            raise PassFailedException(f"{self.name}: precision must be one of {', '.join(GRAD_PRECISIONS)}, "
                                      f"got {self.precision!r}")
        if self.precision == "f32":
            return
        train = find_func(op, TRAIN_STEP)
        if train is None:
            raise PassFailedException(f"{self.name}: no func.func @{TRAIN_STEP}; run qtrain-autodiff first")
        narrow_block(train.body.block)
