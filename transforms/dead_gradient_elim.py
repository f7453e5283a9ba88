"""`qtrain-dead-gradient-elim`: removes every op of @train_step that no update and no loss needs.

After `qtrain-sparse-update` has dropped updates, much of the backward graph computes gradients
nobody reads: input gradients below the earliest trainable layer, weight gradients of frozen
weights, and the forward pass's saved clamp masks and activation slices that only those fed. This
pass deletes them, walking backwards from the updates and the returned loss:

- pure ops (forward and gradient ops alike) whose results are all unused are erased;
- `qtrain.get_param` reads whose value is unused are erased;
- a forward op's `mask` result that no gradient reads is dropped (the op is rebuilt without it), so
  the mask is neither computed nor stored.
The forward ops that produce the loss always stay.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.traits import is_side_effect_free
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain.contract import TRAIN_STEP, find_func
from qtrain.dialects.qtrain.interfaces import ParamRead, SaturatingOp


def drop_unused_mask(op: SaturatingOp) -> Operation:
    """The op without its mask result when nothing reads the mask, else the op itself."""
    assert isinstance(op, Operation)
    if op.mask is None or op.mask.uses:
        return op
    new = op.with_mask(False)
    Rewriter.replace_op(op, new, [new.results[0], None])
    return new


def is_dead(op: Operation) -> bool:
    """An op with results, none of them used, and no effect but reading (pure ops, parameter reads)."""
    if not op.results or any(r.uses for r in op.results):
        return False
    return op.has_trait(ParamRead) or is_side_effect_free(op)


@dataclass(frozen=True)
class DeadGradientElimPass(ModulePass):
    """Removes backward ops, saved masks and saved slices that no update needs."""

    name = "qtrain-dead-gradient-elim"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        train = find_func(op, TRAIN_STEP)
        if train is None:
            raise PassFailedException(f"{self.name}: no func.func @{TRAIN_STEP}; run qtrain-autodiff first")
        block = train.body.block
        for current in reversed(list(block.ops)):
            if is_dead(current):
                Rewriter.erase_op(current)
            elif isinstance(current, SaturatingOp):
                drop_unused_mask(current)
