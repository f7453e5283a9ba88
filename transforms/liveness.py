"""Buffer liveness of a qtrain function: what lives in the arena, how big, from when to when.

This is the one place that defines memory accounting (DESIGN.md "Memory accounting"):

- every tensor SSA value is an arena buffer of `prod(shape) * element bytes` (i1 masks are packed,
  ceil(n / 8) bytes), except parameter reads (`qtrain.get_param`: Flash, or the SRAM copy of a
  trainable parameter, counted in `trainable_bytes`), reshapes (a view of their input, which stays
  alive as long as the view does), fused weight/bias gradients (see below) and scalars;
- the function's tensor arguments (the image) live from the start;
- a buffer lives from the op that defines it to its last use, both inclusive: an op's inputs and
  outputs coexist while it runs, unless the op computes in place (`IN_PLACE_OPS`: an elementwise op
  whose result may take over its first operand's buffer when that operand dies at the op);
- a gradient op marked `qtrain.fused_update` (by `qtrain-reorder`) is computed one output channel at
  a time straight into its parameter's update: it needs no arena buffer, only kernel scratch;
- a convolution whose kernel may write its output over its input (the kernel library's
  `in_place_alignment`: a 1x1 conv tail- or head-aligned, a depthwise conv head-aligned, the small-K
  stem starting G bytes before its input) links its output buffer to its input buffer when the input
  dies at the conv (the image included: the entry points may overwrite the model's input buffer): the
  planner may then place the two overlapping at exactly that placement (`Buffer.partner`), so the pair
  costs max(in, out) (the stem: G + in); likewise an input gradient whose kernel may write dL/dx over
  its dying dL/dy (`input_grad_in_place_alignment`: a 1x1 at stride 1, a same-shape depthwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerType, TensorType
from xdsl.ir import Attribute, Block, BlockArgument, Operation, SSAValue

from qtrain.dialects.qtrain import (
    GetParamOp,
    GradAccumulateOp,
    ParamOp,
    RequantGradOp,
    ReshapeOp,
)

ALIGN = 4
FUSED_UPDATE = "qtrain.fused_update"
IN_PLACE_OPS = (RequantGradOp, GradAccumulateOp)


def element_bytes(element: Attribute) -> float:
    if isinstance(element, IntegerType):
        return 1 / 8 if element.width.data == 1 else element.width.data / 8
    return 4  # f32


def tensor_bytes(t: Attribute) -> int:
    """Bytes of a tensor value in memory (i1 packed 8 per byte); 0 for scalars."""
    if not isinstance(t, TensorType):
        return 0
    n = math.prod(t.get_shape())
    return math.ceil(n * element_bytes(t.element_type))


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(eq=False)
class Buffer:
    """One arena buffer: the values that share it (a value and its reshapes / in-place results).

    `partner`/`partner_delta`: this buffer may overlap `partner` if it sits exactly at
    `partner.offset + partner_delta` (a conv writing its output over its dying input).
    """

    values: list[SSAValue]
    size: int
    start: int
    end: int
    offset: int = -1
    partner: Buffer | None = None
    partner_delta: int = 0

    @property
    def name(self) -> str:
        v = self.values[0]
        hint = v.name_hint or ""
        owner = v.owner
        what = owner.name if isinstance(owner, Operation) else "argument"
        return f"%{hint} ({what})" if hint else what

    def live_at(self, index: int) -> bool:
        return self.start <= index <= self.end


@dataclass
class Liveness:
    """Buffers of one function body in its current op order."""

    ops: list[Operation]
    buffers: list[Buffer]
    buffer_of: dict[SSAValue, Buffer] = field(default_factory=dict)

    def live_bytes(self, index: int) -> int:
        """Arena bytes in use while op `index` runs: the union of the live buffers' address ranges once
        they are placed (so an in-place pair counts once), else the sum of their sizes."""
        live = [b for b in self.buffers if b.live_at(index)]
        if not live or any(b.offset < 0 for b in live):
            return sum(aligned(b.size) for b in live)
        total, reach = 0, -1
        for lo, hi in sorted((b.offset, b.offset + aligned(b.size)) for b in live):
            if hi > reach:
                total += hi - max(lo, reach)
                reach = hi
        return total

    def peak(self) -> tuple[int, int]:
        """(peak live bytes, index of the op where it occurs)."""
        best, where = 0, 0
        for i in range(len(self.ops)):
            live = self.live_bytes(i)
            if live > best:
                best, where = live, i
        return best, where

    def live_at(self, index: int) -> list[Buffer]:
        return sorted((b for b in self.buffers if b.live_at(index)), key=lambda b: -b.size)


def is_fused_gradient(op: Operation) -> bool:
    return FUSED_UPDATE in op.attributes


def conv_in_place_delta(op: Operation, in_bytes: int, out_bytes: int) -> int | None:
    """Offset of a conv's output relative to its input when its kernel may overwrite the input, else None
    (a forward conv over its input, or an input gradient dL/dx over dL/dy)."""
    from qtrain.dialects.qtrain import Conv2DInputGradOp, Conv2DOp
    from qtrain.targets.armv7em.kernels import (
        in_place_alignment,
        input_grad_in_place_alignment,
        small_k_in_place_gap,
    )

    shape = lambda v: tuple(v.type.get_shape())  # noqa: E731
    if isinstance(op, Conv2DInputGradOp):
        alignment = input_grad_in_place_alignment(shape(op.result), shape(op.weight), shape(op.grad),
                                                  op.strides.get_values(), op.padding.get_values(),
                                                  op.groups.value.data)
    elif isinstance(op, Conv2DOp):
        alignment = in_place_alignment(shape(op.input), shape(op.weight), shape(op.output), op.strides.get_values(),
                                       op.padding.get_values(), op.groups.value.data)
    else:
        return None
    if alignment == "head":
        return 0
    if alignment == "tail" and (in_bytes - out_bytes) % ALIGN == 0:
        return in_bytes - out_bytes
    if alignment == "gap":
        gap = small_k_in_place_gap(shape(op.input), shape(op.output), op.strides.get_values(),
                                   op.padding.get_values())
        if gap >= in_bytes:  # no overlap left to gain
            return None
        return -aligned(gap)  # output = input - G rounded up to the arena alignment (a larger gap is allowed)
    return None


def analyze(block: Block, in_place: bool = True) -> Liveness:
    ops = [op for op in block.ops if not isinstance(op, func.ReturnOp)]
    index = {op: i for i, op in enumerate(ops)}
    end_index = len(ops)  # the return
    buffers: list[Buffer] = []
    buffer_of: dict[SSAValue, Buffer] = {}

    def last_use(value: SSAValue) -> int:
        uses = [index.get(u.operation, end_index) for u in value.uses]
        return max(uses, default=-1)

    def new_buffer(value: SSAValue, start: int) -> None:
        size = tensor_bytes(value.type)
        if size == 0:
            return
        b = Buffer([value], size, start, max(start, last_use(value)))
        buffers.append(b)
        buffer_of[value] = b

    for arg in block.args:
        new_buffer(arg, 0)
    for op in ops:
        i = index[op]
        if isinstance(op, GetParamOp) or is_fused_gradient(op):
            continue
        if isinstance(op, ReshapeOp) and op.input in buffer_of:
            b = buffer_of[op.input]
            b.values.append(op.output)
            b.end = max(b.end, last_use(op.output))
            buffer_of[op.output] = b
            continue
        if in_place and isinstance(op, IN_PLACE_OPS):
            src = buffer_of.get(op.operands[0])
            if src is not None and src.end == i and src.size == tensor_bytes(op.results[0].type):
                src.values.append(op.results[0])
                src.end = max(src.end, last_use(op.results[0]))
                buffer_of[op.results[0]] = src
                continue
        for r in op.results:
            new_buffer(r, i)
        if in_place and op.results and op.results[0] in buffer_of and op.operands:
            src = buffer_of.get(op.operands[0])
            out = buffer_of[op.results[0]]
            if src is not None and src.end == i:  # the image too: the ABI lets the entry points overwrite it
                delta = conv_in_place_delta(op, src.size, out.size)
                if delta is not None:
                    out.partner, out.partner_delta = src, delta
    return Liveness(ops, buffers, buffer_of)


def trainable_bytes(params: list[ParamOp]) -> int:
    """SRAM copies of the trainable parameters (only the trained slice, in its storage type)."""
    total = 0
    for p in params:
        if p.is_trainable:
            total += aligned(math.ceil(math.prod(p.trainable_shape()) * element_bytes(p.storage_type)))
    return total


def flash_param_bytes(params: list[ParamOp]) -> int:
    """Parameter initial values in Flash (trainable ones are copied from there at qtrain_init)."""
    return sum(aligned(tensor_bytes(p.tensor_type)) for p in params)


def param_of(value: SSAValue) -> str | None:
    owner = value.owner
    return owner.param.root_reference.data if isinstance(owner, GetParamOp) else None


def is_argument(value: SSAValue) -> bool:
    return isinstance(value, BlockArgument)
