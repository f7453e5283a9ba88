"""`qtrain-reorder`: a liveness-driven schedule for @train_step (the Tiny Training Engine's reordering).

The naive schedule (what `qtrain-autodiff` emits) runs the whole backward pass and then applies
every update, so every weight gradient is alive at the end at once. This pass re-schedules the ops
of @train_step by memory-aware list scheduling over the dependence graph:

- dependences are the SSA edges plus, for `qtrain.sgd_update @p`, every op that reads a
  `qtrain.get_param @p` value (an in-place update must follow all reads of the old value);
- among the ops that are ready, an update goes first (it frees its gradient); otherwise the op with
  the smallest (bytes it allocates - bytes it frees) goes next, ties keeping the original order;
- a weight or bias gradient whose only user is its update is held back until that update can follow
  it at once; the pair is then marked `qtrain.fused_update`: the gradient is computed one output
  channel at a time straight into the update and never occupies the arena.

The schedule is a topological order of the same graph, so results are unchanged; only peak memory
moves. `--no-reorder` in the tools means: skip this pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, UnitAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain.contract import FUSED_UPDATE, TRAIN_STEP, find_func, param_name
from qtrain.dialects.qtrain.interfaces import ParamGradient, ParamRead, ParamUpdate, ParamUpdateOp, ViewOfOperand
from qtrain.transforms.liveness import tensor_bytes


def is_update(op: Operation) -> bool:
    return op.has_trait(ParamUpdate)


def fusable_gradient(update: Operation) -> Operation | None:
    """The weight/bias gradient op that only feeds this update, if any."""
    grad = update.operands[0].owner
    if isinstance(grad, Operation) and grad.has_trait(ParamGradient) and len(list(grad.results[0].uses)) == 1:
        return grad
    return None


@dataclass(frozen=True)
class ReorderPass(ModulePass):
    """Liveness-driven schedule of @train_step: updates as early as possible, gradients freed at once."""

    name = "qtrain-reorder"

    fuse_updates: bool = True
    """compute weight/bias gradients straight into their update (no arena buffer)"""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        train = find_func(op, TRAIN_STEP)
        if train is None:
            raise PassFailedException(f"{self.name}: no func.func @{TRAIN_STEP}; run qtrain-autodiff first")
        block = train.body.block
        ops = [o for o in block.ops if not isinstance(o, func.ReturnOp) and not o.has_trait(ParamRead)]
        reads = [o for o in block.ops if o.has_trait(ParamRead)]
        order = schedule(ops, self.fuse_updates)
        for o in [*order, *reads]:
            o.detach()
        ret = block.last_op
        assert isinstance(ret, func.ReturnOp)
        for o in order:
            block.insert_op_before(o, ret)
        # Parameter reads cost no arena memory: each goes right before its first user.
        for r in reads:
            users = [u.operation for u in r.results[0].uses]
            first = min(users, key=lambda u: order.index(u)) if users else ret
            block.insert_op_before(r, first)
        if self.fuse_updates:
            for o in order:
                if is_update(o) and (g := fusable_gradient(o)) is not None:
                    if g.next_op is o:
                        g.attributes[FUSED_UPDATE] = UnitAttr()


def _dependences(ops: list[Operation]) -> dict[Operation, set[Operation]]:
    """SSA edges between `ops` plus read-before-update edges (parameter reads are not in `ops`)."""
    inside = set(ops)
    preds: dict[Operation, set[Operation]] = {o: set() for o in ops}
    readers: dict[str, set[Operation]] = {}
    for o in ops:
        for v in o.operands:
            if isinstance(v.owner, Operation) and v.owner in inside:
                preds[o].add(v.owner)
            elif (name := param_name(v)) is not None:
                readers.setdefault(name, set()).add(o)
    for o in ops:
        if isinstance(o, ParamUpdateOp):
            preds[o] |= readers.get(o.updated_param, set()) - {o}
    return preds


def schedule(ops: list[Operation], fuse_updates: bool = True) -> list[Operation]:
    """Memory-aware topological order of `ops` (see the module docstring)."""
    original = {o: i for i, o in enumerate(ops)}
    preds = _dependences(ops)
    # A fusable gradient waits for its update's other dependences, so the two run back to back.
    held: dict[Operation, Operation] = {}
    if fuse_updates:
        for o in ops:
            if is_update(o) and (g := fusable_gradient(o)) is not None:
                held[g] = o
                preds[g] |= preds[o] - {g}
    succs: dict[Operation, set[Operation]] = {o: set() for o in ops}
    for o, ps in preds.items():
        for p in ps:
            succs[p].add(o)
    waiting = {o: len(ps) for o, ps in preds.items()}
    remaining_uses: dict[SSAValue, int] = {}
    for o in ops:
        for r in o.results:
            remaining_uses[r] = len({u.operation for u in r.uses})

    def delta(o: Operation) -> int:
        if o.has_trait(ParamRead) or o.has_trait(ViewOfOperand) or o in held:
            allocated = 0
        else:
            allocated = sum(tensor_bytes(r.type) for r in o.results)
        freed = 0
        for v in set(o.operands):
            if remaining_uses.get(v, 0) == 1 and param_name(v) is None:
                freed += tensor_bytes(v.type)
        return allocated - freed

    ready: set[Operation] = {o for o in ops if waiting[o] == 0}
    done: set[Operation] = set()
    order: list[Operation] = []

    def rank(o: Operation) -> tuple[int, int, int]:
        # Updates first (they free a gradient); then the smallest memory delta; then program order.
        if is_update(o):
            return (0, 0, original[o])
        return (1, delta(o), original[o])

    while ready:
        chosen = min(ready, key=rank)
        emitted = [chosen, held[chosen]] if chosen in held else [chosen]
        for e in emitted:
            ready.discard(e)
            done.add(e)
            order.append(e)
            for v in set(e.operands):
                if v in remaining_uses:
                    remaining_uses[v] -= 1
            for succ in succs[e]:
                waiting[succ] -= 1
                if waiting[succ] == 0 and succ not in done:
                    ready.add(succ)
        for e in emitted:
            ready.discard(e)
    if len(order) != len(ops):
        raise PassFailedException("qtrain-reorder: the dependence graph has a cycle")
    return order
