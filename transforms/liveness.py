"""Buffer liveness of a qtrain function: what lives in the arena, how big, from when to when.

This is the one place that defines memory accounting (DESIGN.md "Memory accounting"):

- every tensor SSA value is an arena buffer of `prod(shape) * element bytes` (i1 masks are packed,
  ceil(n / 8) bytes), except parameter reads (ops with the `ParamRead` trait: Flash, or the SRAM copy
  of a trainable parameter, counted in `trainable_bytes`), views (`ViewOfOperand`, e.g. a reshape: its
  input stays alive as long as the view does), fused weight/bias gradients (see below) and scalars;
- the function's tensor arguments (the image) live from the start;
- a buffer lives from the op that defines it to its last use, both inclusive: an op's inputs and
  outputs coexist while it runs, unless the op computes in place (`ElementwiseInPlace`: its result
  may take over its first operand's buffer when that operand dies at the op);
- a gradient op marked `qtrain.fused_update` (by `qtrain-reorder`) is computed one output channel at
  a time straight into its parameter's update: it needs no arena buffer, only kernel scratch;
- an op whose kernel may write its output over its input (the target description's
  `in_place_offset`: on armv7em a 1x1 conv tail- or head-aligned, a depthwise conv head-aligned, the
  small-K stem starting G bytes before its input, a 1x1 or same-shape depthwise input gradient over
  its dL/dy) links its output buffer to its input buffer when the input dies at the op (the image
  included: the entry points may overwrite the model's input buffer): the planner may then place the
  two overlapping at exactly that offset (`Buffer.partner`), so the pair costs max(in, out) (the
  stem: G + in).

Training state (ops with `DeviceStateOp`: the learning-rate schedule's step counter, momentum
velocities) persists between calls, so it is not an arena buffer: like the SRAM copies of trainable
tensors it is static SRAM for the whole run, counted by `device_state_bytes` and reported by the
planner inside `trainable_bytes` (memory.json lists it under `state`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from xdsl.dialects import func
from xdsl.dialects.builtin import BFloat16Type, IntegerType, TensorType
from xdsl.ir import Attribute, Block, Operation, SSAValue

from qtrain.dialects.qtrain import ParamOp
from qtrain.dialects.qtrain.contract import FUSED_UPDATE
from qtrain.dialects.qtrain.interfaces import (
    DeviceState,
    DeviceStateOp,
    ElementwiseInPlace,
    ParamRead,
    ViewOfOperand,
)
from qtrain.transforms.target import TargetDescription, get_target

ALIGN = 4


def element_bytes(element: Attribute) -> float:
    if isinstance(element, IntegerType):
        return 1 / 8 if element.width.data == 1 else element.width.data / 8
    if isinstance(element, BFloat16Type):
        return 2  # a narrowed gradient (qtrain-narrow-gradients)
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


def analyze(block: Block, in_place: bool = True, target: TargetDescription | None = None) -> Liveness:
    """The buffers of `block` in its current op order (`in_place`: link the pairs the target's kernels
    may compute in place)."""
    target = target or get_target()
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
        if op.has_trait(ParamRead) or is_fused_gradient(op):
            continue
        if op.has_trait(ViewOfOperand) and op.operands[0] in buffer_of:
            b = buffer_of[op.operands[0]]
            b.values.append(op.results[0])
            b.end = max(b.end, last_use(op.results[0]))
            buffer_of[op.results[0]] = b
            continue
        if in_place and op.has_trait(ElementwiseInPlace):
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
                delta = target.in_place_offset(op, src.size, out.size)
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


class DeviceStateConflict(ValueError):
    """Two ops declare training state of the same name with different shapes."""


def device_state(functions: list[Operation]) -> list[DeviceState]:
    """The training state the ops of `functions` keep (`DeviceStateOp`), in op order, once per name."""
    found: dict[str, DeviceState] = {}
    for function in functions:
        for op in function.walk():
            if not isinstance(op, DeviceStateOp):
                continue
            for state in op.device_state():
                known = found.setdefault(state.name, state)
                if known != state:
                    raise DeviceStateConflict(f"training state '{state.name}' is declared as {known} and as {state}")
    return list(found.values())


def device_state_bytes(states: list[DeviceState]) -> int:
    """SRAM of the training state buffers (each 4-byte aligned)."""
    return sum(aligned(s.bytes) for s in states)
