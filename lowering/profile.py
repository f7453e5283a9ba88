"""The per-op profile of a compiled model: which op each counter slot of an instrumented firmware measures.

`qtrain-compile --profile` emits C that reads the counter (instructions on QEMU, nanoseconds on the host)
after each op's kernel calls and stores the difference in one slot per op (`emit_c`, `profile=True`);
`profile_slots` describes those slots in the same order, so `qtrain-run --profile` can name them: the
entry point, the op, the learnable layers it belongs to (schemes.json numbering, as
`transforms.schemes.layer_numbers`), its kind, its multiply-accumulates and its kernels.

Besides the ops, each entry has one slot for the image copy into the arena (`memmove`, empty when the
harness put the image in place already) and @forward one for the logits (`qtrain_dequantize_s8_f32`).
What falls outside every slot is the entry point's own prologue and epilogue and the counter read that
opens it: a few dozen instructions per call.

Layer of an op: the layers a `LayerOp` holds; the layer of the parameter a `ParamUpdateOp` writes, or of
any parameter the op reads (an input gradient reads its weight); for a `ParamGradient` op, the layer of
the update it feeds; for any other backward op, the layer shared by all the ops that use its result
(a `requant_grad` feeds its layer's input, weight and bias gradients). Forward ops without parameters
(add, pooling, the loss) and backward ops feeding several layers have none.

Kind: "forward" for the ops up to and including the one computing @train_step's loss (every op of
@forward), "update" for a standalone `ParamUpdateOp`, "backward" for the rest (a gradient computed
straight into its update is "backward", and its op name says "+update").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation

from qtrain.dialects.qtrain.contract import FORWARD, FUSED_UPDATE, TRAIN_STEP, entry_points, param_name
from qtrain.dialects.qtrain.interfaces import KernelCallOp, LayerOp, ParamGradient, ParamUpdateOp
from qtrain.transforms.schemes import layer_numbers

IMAGE_COPY = "(image copy)"
"""The op name of the slot measuring the entry point's image copy into the arena."""
LOGITS = "(logits)"
"""The op name of @forward's last slot: the dequantization of the int8 output into logits."""


@dataclass(frozen=True)
class ProfileSlot:
    """One counter slot of an instrumented firmware: the op it measures."""

    index: int
    entry: str
    """FORWARD or TRAIN_STEP"""
    op: str
    """the op name without the dialect prefix ("conv2d", "conv2d_weight_grad+update"), or IMAGE_COPY / LOGITS"""
    layers: tuple[int, ...]
    kind: str
    """"forward", "backward" or "update\""""
    macs: int
    kernels: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "entry": self.entry, "op": self.op, "layers": list(self.layers),
                "kind": self.kind, "macs": self.macs, "kernels": list(self.kernels)}

    @staticmethod
    def from_json(data: dict[str, object]) -> ProfileSlot:
        return ProfileSlot(int(data["index"]), str(data["entry"]), str(data["op"]),  # type: ignore[arg-type]
                           tuple(int(x) for x in data["layers"]), str(data["kind"]),  # type: ignore[attr-defined]
                           int(data["macs"]), tuple(str(k) for k in data["kernels"]))  # type: ignore[arg-type,attr-defined]


def profiled_ops(function: func.FuncOp) -> list[Operation]:
    """The ops of an entry point that get a slot: those with at least one kernel call, in schedule order."""
    return [op for op in function.body.block.ops if isinstance(op, KernelCallOp) and op.kernel_calls()]


def _loss_op(function: func.FuncOp) -> Operation | None:
    """The op computing @train_step's returned loss (None for @forward)."""
    ret = function.body.block.last_op
    if function.sym_name.data != TRAIN_STEP or not isinstance(ret, func.ReturnOp) or not ret.arguments:
        return None
    owner = ret.arguments[0].owner
    return owner if isinstance(owner, Operation) else None


def op_layers(function: func.FuncOp, layer_of: dict[str, int]) -> dict[Operation, tuple[int, ...]]:
    """The learnable layers of every op of `function` (see the module docstring); () for none."""
    ops = list(function.body.block.ops)
    loss = _loss_op(function)
    forward_end = ops.index(loss) if loss is not None else len(ops)
    layers: dict[Operation, tuple[int, ...]] = {}

    def own(op: Operation) -> tuple[int, ...]:
        if isinstance(op, LayerOp):
            found = [layer_of[n] for spec in op.learnable_layers()
                     for n in (param_name(spec.weight),) if n is not None and n in layer_of]
            return tuple(sorted(set(found)))
        if isinstance(op, ParamUpdateOp) and op.updated_param in layer_of:
            return (layer_of[op.updated_param],)
        read = {layer_of[n] for v in op.operands if (n := param_name(v)) is not None and n in layer_of}
        return tuple(sorted(read))

    # Reverse schedule order: an op's users are resolved before the op.
    for position in range(len(ops) - 1, -1, -1):
        op = ops[position]
        found = own(op)
        if not found and position > forward_end:
            users = {use.operation for result in op.results for use in result.uses}
            if op.has_trait(ParamGradient):
                users = {u for u in users if isinstance(u, ParamUpdateOp)}
            seen = {layers.get(u, ()) for u in users}
            if len(seen) == 1:
                found = next(iter(seen))
        layers[op] = found
    return layers


def _kind(op: Operation, position: int, forward_end: int) -> str:
    if position <= forward_end:
        return "forward"
    if isinstance(op, ParamUpdateOp):
        return "update"
    return "backward"


def profile_slots(module: ModuleOp) -> list[ProfileSlot]:
    """Every counter slot of the module's instrumented C, in slot order: per entry point (@forward, then
    @train_step), the image copy, each op with kernel calls, and for @forward the logits."""
    slots: list[ProfileSlot] = []

    def add(entry: str, op: str, layers: Sequence[int], kind: str, macs: int, kernels: Sequence[str]) -> None:
        slots.append(ProfileSlot(len(slots), entry, op, tuple(layers), kind, macs, tuple(kernels)))

    for function in entry_points(module):
        entry = function.sym_name.data
        layer_of = layer_numbers(function)
        layers = op_layers(function, layer_of)
        block_ops = list(function.body.block.ops)
        loss = _loss_op(function)
        forward_end = block_ops.index(loss) if loss is not None else len(block_ops)
        add(entry, IMAGE_COPY, (), "forward", 0, ("memmove",))
        for op in profiled_ops(function):
            calls = op.kernel_calls()  # type: ignore[attr-defined]
            name = op.name.removeprefix("qtrain.") + ("+update" if FUSED_UPDATE in op.attributes else "")
            add(entry, name, layers.get(op, ()), _kind(op, block_ops.index(op), forward_end),
                sum(c.macs for c in calls), [c.function for c in calls])
        if entry == FORWARD:
            add(entry, LOGITS, (), "forward", 0, ("qtrain_dequantize_s8_f32",))
    return slots
