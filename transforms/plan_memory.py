"""`qtrain-plan-memory`: static arena offsets for every buffer, the SRAM figure, or a clear error.

For each function (@forward and @train_step share one arena, as they never run at once) the
buffers of `qtrain.transforms.liveness` are packed into one arena by greedy first fit: each buffer
at the lowest offset where it overlaps no already-placed buffer whose lifetime overlaps its own (or
exactly where its in-place partner allows), in three orders (largest first as TFLite's arena
planner, earliest first, largest size x lifetime first); the smallest arena wins. Offsets are
4-byte aligned.

Results:
- every op with arena results gets `qtrain.offsets = array<i64: ...>` (one per result, -1 for a
  result without an arena buffer, e.g. a fused gradient or a scalar);
- every op with kernel scratch gets `qtrain.scratch_gap = array<i64: offset, bytes>` when the largest
  stretch of the arena that no buffer occupies while it runs is larger than the shared scratch: its
  kernels may use it instead and pick faster schedules (their results do not depend on the scratch
  size), at no cost to the peak;
- every planned function gets `qtrain.arena_bytes` and `qtrain.arg_offsets` (its tensor arguments,
  i.e. the image, live in the arena too);
- the module gets `qtrain.memory`, a dictionary with `peak_sram_bytes` = arena + trainable copies +
  kernel scratch, and its parts (see DESIGN.md "Memory accounting"); `trainable_bytes` holds the SRAM
  copies of the trainable tensors *and* the training state kept between steps (`state_bytes` of it: the
  learning-rate schedule's step counter, momentum velocities; `liveness.device_state`), i.e. all the
  static SRAM training keeps, in the firmware's `.qtrain.trainable` section;
- `memory-report=FILE.json` writes memory.json, which also lists every arena buffer of the largest
  plan (`buffers`: name, kind, bytes, offset, first and last schedule position, the op that writes it
  and its layer, whether it is an activation saved for backward), that plan's `schedule` (every op in
  order with its layer and phase: param / forward / backward / update, and where the backward starts
  and the peak is) and the `budget_bytes`: what the tools draw the memory-plan picture from (data only;
  no pass draws).

Kernel scratch sizes and in-place placements come from the target description (`target=armv7em`).

Over `sram-kb`: the pass fails listing what is live at the peak (op, tensor, bytes) and the totals.
An op the target's kernels cannot run with its shapes (`TargetDescription.supports`) fails the pass too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    DenseArrayBase,
    DictionaryAttr,
    IntegerAttr,
    ModuleOp,
    StringAttr,
    TensorType,
    f32,
    i1,
    i8,
    i16,
    i64,
)
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import ParamOp
from qtrain.dialects.qtrain.contract import (
    ARENA_BYTES,
    ARG_OFFSETS,
    FORWARD,
    MEMORY,
    OFFSETS,
    SCRATCH_GAP,
    SOURCE,
    TRAIN_STEP,
    entry_points,
    find_func,
    param_name,
    param_ops,
)
from qtrain.dialects.qtrain.interfaces import ParamConsumerOp, ParamRead, ParamUpdate, ParamUpdateOp
from qtrain.transforms.liveness import (
    Buffer,
    DeviceStateConflict,
    Liveness,
    aligned,
    analyze,
    device_state,
    device_state_bytes,
    flash_param_bytes,
    trainable_bytes,
)
from qtrain.transforms.schemes import layer_numbers, lite_residual_modules
from qtrain.transforms.target import DEFAULT_TARGET, TargetDescription, get_target

PACK_ORDERS: dict[str, object] = {
    "size": lambda b: (-aligned(b.size), b.start),
    "start": lambda b: (b.start, -aligned(b.size)),
    "area": lambda b: (-aligned(b.size) * (b.end - b.start + 1), b.start),
}
"""Buffer orders `pack` starts from (greedy by size is TFLite's; by start time and by size x lifetime do
better when in-place pairs chain, e.g. a conv over the dying output of the conv before it)."""

PROMOTE_ROUNDS = 6
"""Rounds of `pack`'s local search per starting order."""


def pack(buffers: list[Buffer], pinned: dict[int, int] | None = None) -> int:
    """Sets every buffer's `offset`; returns the arena size.

    Greedy first fit (`pack_greedy`) from each order of PACK_ORDERS, each followed by a local search:
    the buffers that reach the arena's top move to the front of the order, which is packed again, for
    PROMOTE_ROUNDS rounds. The smallest arena wins (the earliest on ties), so the result is never worse
    than TFLite's greedy by size. Deterministic.
    """
    pinned_ids = {id(buffers[i]) for i in (pinned or {})}
    free = [b for b in buffers if id(b) not in pinned_ids]
    best: tuple[int, list[int]] | None = None
    for key in PACK_ORDERS.values():
        order = sorted(free, key=key)  # type: ignore[arg-type]
        for _ in range(PROMOTE_ROUNDS + 1):
            arena = pack_greedy(buffers, pinned, order)
            if best is None or arena < best[0]:
                best = (arena, [b.offset for b in buffers])
            high = {id(b) for b in order if b.offset + aligned(b.size) == arena}
            order = [b for b in order if id(b) in high] + [b for b in order if id(b) not in high]
    assert best is not None
    for b, offset in zip(buffers, best[1], strict=True):
        b.offset = offset
    return best[0]


def pack_greedy(buffers: list[Buffer], pinned: dict[int, int] | None, order: list[Buffer]) -> int:
    """Assigns `offset` to every buffer (the unpinned ones first fit in `order`); returns the arena size.

    `pinned` maps positions in `buffers` to fixed offsets, placed first (the image argument must sit
    at the same offset whichever entry point the harness calls). A buffer in an in-place pair (a conv
    output that may overwrite its dying input, `Buffer.partner`) first tries the offsets where it
    would overlap an already placed partner exactly as the kernel allows; otherwise, and for every
    other buffer, it goes to the lowest offset where it overlaps no placed buffer whose lifetime
    overlaps its own.
    """
    for b in buffers:
        b.offset = -1
    placed: list[Buffer] = []
    for index, offset in (pinned or {}).items():
        buffers[index].offset = offset
        placed.append(buffers[index])

    def may_overlap(b: Buffer, offset: int, p: Buffer) -> bool:
        """b at `offset` may share bytes with placed p: they are an in-place pair at its one alignment."""
        return (b.partner is p and offset == p.offset + b.partner_delta) or (
            p.partner is b and p.offset == offset + p.partner_delta
        )

    def fits(b: Buffer, offset: int) -> bool:
        end = offset + aligned(b.size)
        return not any(
            p.start <= b.end and b.start <= p.end and offset < p.offset + aligned(p.size) and p.offset < end
            and not may_overlap(b, offset, p)
            for p in placed
        )

    def pair_offsets(b: Buffer) -> list[int]:
        """Offsets at which b would overlap an already placed in-place partner as the kernel allows."""
        options = []
        if b.partner is not None and b.partner.offset >= 0:
            options.append(b.partner.offset + b.partner_delta)
        options += [p.offset - p.partner_delta for p in placed if p.partner is b]
        return [o for o in options if o >= 0]

    for b in order:
        choice = next((o for o in pair_offsets(b) if fits(b, o)), None)
        if choice is None:
            conflicts = sorted((p for p in placed if p.start <= b.end and b.start <= p.end), key=lambda p: p.offset)
            choice = 0
            for p in conflicts:
                if choice + aligned(b.size) <= p.offset:
                    break
                choice = max(choice, p.offset + aligned(p.size))
        b.offset = choice
        placed.append(b)
    return max((b.offset + aligned(b.size) for b in buffers), default=0)


@dataclass
class FunctionPlan:
    name: str
    liveness: Liveness
    arena_bytes: int
    peak_live_bytes: int
    peak_index: int
    scratch_bytes: int


def plan_function(
    function: func.FuncOp, params: dict[str, ParamOp], arg_offsets: list[int] | None = None,
    target: TargetDescription | None = None,
) -> FunctionPlan:
    """Plans one function; `arg_offsets` pins its tensor arguments (in order) to given offsets."""
    target = target or get_target()
    liveness = analyze(function.body.block, target=target)
    pinned: dict[int, int] = {}
    if arg_offsets is not None:
        args = [a for a in function.body.block.args if a in liveness.buffer_of]
        for a, off in zip(args, arg_offsets, strict=False):
            pinned[liveness.buffers.index(liveness.buffer_of[a])] = off
    arena = pack(liveness.buffers, pinned)
    peak, where = liveness.peak()  # after packing: in-place pairs count once
    scratch = max((aligned(target.scratch_bytes(op, params)) for op in liveness.ops), default=0)
    return FunctionPlan(function.sym_name.data, liveness, arena, peak, where, scratch)


GAP_ALIGN = 8
"""Alignment of a scratch gap (the arena's own alignment)."""


def scratch_gaps(plan: FunctionPlan, arena_bytes: int, shared_scratch: int, params: dict[str, ParamOp],
                 target: TargetDescription) -> dict[Operation, tuple[int, int]]:
    """For each op with kernel scratch: the largest gap of the arena (`arena_bytes`, the largest plan's)
    that no buffer of `plan` occupies while the op runs, when that gap is larger than the shared scratch.
    Free for speed: the peak does not change."""
    out: dict[Operation, tuple[int, int]] = {}
    for i, op in enumerate(plan.liveness.ops):
        if target.scratch_bytes(op, params) == 0:
            continue
        used = sorted((b.offset, b.offset + aligned(b.size)) for b in plan.liveness.buffers
                      if b.live_at(i) and b.offset >= 0)
        best, reach = (0, 0), 0
        for lo, hi in [*used, (arena_bytes, arena_bytes)]:
            start = (reach + GAP_ALIGN - 1) // GAP_ALIGN * GAP_ALIGN
            if lo - start > best[1]:
                best = (start, lo - start)
            reach = max(reach, hi)
        if best[1] > shared_scratch:
            out[op] = best
    return out


def annotate(function: func.FuncOp, plan: FunctionPlan, gaps: dict[Operation, tuple[int, int]] | None = None) -> None:
    for op in plan.liveness.ops:
        if not op.results:
            continue
        offsets = [plan.liveness.buffer_of[r].offset if r in plan.liveness.buffer_of else -1 for r in op.results]
        if any(o >= 0 for o in offsets):
            op.attributes[OFFSETS] = DenseArrayBase.from_list(i64, offsets)
    for op, (offset, size) in (gaps or {}).items():
        op.attributes[SCRATCH_GAP] = DenseArrayBase.from_list(i64, [offset, size])
    args = function.body.block.args
    function.attributes[ARG_OFFSETS] = DenseArrayBase.from_list(
        i64, [plan.liveness.buffer_of[a].offset if a in plan.liveness.buffer_of else -1 for a in args]
    )
    function.attributes[ARENA_BYTES] = IntegerAttr(plan.arena_bytes, i64)


@dataclass
class MemoryReport:
    arena_bytes: int
    trainable_bytes: int
    scratch_bytes: int
    flash_bytes: int
    peak_op: str
    trainable: list[dict[str, object]]
    buffers: list[dict[str, object]]
    state_bytes: int = 0
    state: list[dict[str, object]] | None = None
    schedule: dict[str, object] | None = None
    budget_bytes: int | None = None

    @property
    def peak_sram_bytes(self) -> int:
        return self.arena_bytes + self.trainable_bytes + self.scratch_bytes

    def as_json(self) -> dict[str, object]:
        return {
            "peak_sram_bytes": self.peak_sram_bytes,
            "arena_bytes": self.arena_bytes,
            "trainable_bytes": self.trainable_bytes,
            "state_bytes": self.state_bytes,
            "trainable_note": "SRAM copies of the trainable tensors plus the training state kept between steps "
                              "(state_bytes of it, listed in `state`: step counter, momentum velocities)",
            "scratch_bytes": self.scratch_bytes,
            "flash_bytes": self.flash_bytes,
            "flash_note": "parameters and per-channel constants only; the firmware adds code",
            "peak_op": self.peak_op,
            "trainable": self.trainable,
            "state": self.state or [],
            "buffers": self.buffers,
            "schedule": self.schedule,
            "budget_bytes": self.budget_bytes,
        }


def param_kinds(function: func.FuncOp) -> dict[str, str]:
    """Parameter name -> "weight" | "bias", as the ops reading it say (`ParamConsumerOp.trained_param_role`;
    a GroupNorm's gamma is a 1-D "weight")."""
    kinds: dict[str, str] = {}
    for op in function.walk():
        if isinstance(op, ParamConsumerOp):
            for operand in op.operands:
                name = param_name(operand)
                role = op.trained_param_role(operand, qas=False) if name is not None else None
                if name is not None and role is not None:
                    kinds.setdefault(name, role.kind)
    return kinds


def trainable_list(module: ModuleOp, train: func.FuncOp | None) -> list[dict[str, object]]:
    """memory.json's `trainable`: per trainable tensor its schemes.json `layer`, kind, trained shape and slice,
    storage and bytes; a lite residual module's tensor has layer None and its block as `lite_residual`."""
    params = [p for p in module.ops if isinstance(p, ParamOp) and p.is_trainable]
    layer_of = layer_numbers(train) if train is not None else {}
    kinds = param_kinds(train) if train is not None else {}
    module_of = {name: m.block for m in (lite_residual_modules(train) if train is not None else [])
                 for name, _ in m.params}
    out: list[dict[str, object]] = []
    for p in params:
        name = p.sym_name.data
        sl = p.trainable_slice()
        entry: dict[str, object] = {
            "name": name,
            "layer": layer_of.get(name),
            "kind": kinds.get(name, "bias" if p.tensor_type.get_num_dims() == 1 else "weight"),
            "shape": list(p.trainable_shape()),
            "channels": list(sl) if sl is not None else None,
            "storage": str(p.storage_type),
            "bytes": trainable_bytes([p]),
        }
        if name in module_of:
            entry["lite_residual"] = module_of[name]
        out.append(entry)
    return out


def buffer_kind(buffer: Buffer) -> str:
    """What an arena buffer holds, for reports: the model input, an int8 activation, a 1-bit mask, an
    fp32 gradient (or other fp32 value)."""
    value = buffer.values[0]
    if not isinstance(value.owner, Operation):
        return "input"
    t = value.type
    element = t.element_type if isinstance(t, TensorType) else None
    if element == i1:
        return "mask"
    if element == f32:
        return "gradient"
    return "activation"


def op_layer(op: Operation, depth: int = 4) -> str | None:
    """The layer an op belongs to, for reports: the parameter it reads or updates without its
    `.weight` / `.bias` suffix (`conv12`), else that of the op producing its first operand that has
    one (a `requant_grad` belongs to the conv whose mask it reads)."""
    if isinstance(op, ParamUpdateOp):
        return op.updated_param.rsplit(".", 1)[0]
    for operand in op.operands:
        name = param_name(operand)
        if name is not None:
            return name.rsplit(".", 1)[0]
    if depth > 0:
        for operand in op.operands:
            if isinstance(operand.owner, Operation) and not operand.owner.has_trait(ParamRead):
                layer = op_layer(operand.owner, depth - 1)
                if layer is not None:
                    return layer
    return None


def loss_index(plan: FunctionPlan) -> int | None:
    """Where the forward pass ends in @train_step: the position of the op computing the returned loss."""
    if plan.name != TRAIN_STEP or not plan.liveness.ops:
        return None
    ret = plan.liveness.ops[-1].parent_block().last_op  # type: ignore[union-attr]
    if not isinstance(ret, func.ReturnOp) or not ret.operands:
        return None
    owner = ret.operands[0].owner
    return plan.liveness.ops.index(owner) if owner in plan.liveness.ops else None


def schedule_report(plan: FunctionPlan) -> dict[str, object]:
    """The plan's schedule for memory.json: each op's name, layer and phase (param: reads a parameter;
    forward: up to the loss; backward: after it; update: writes a parameter), the position where the
    backward pass starts (after the loss; null for @forward) and the peak's position."""
    end = loss_index(plan)
    ops = []
    for i, op in enumerate(plan.liveness.ops):
        if op.has_trait(ParamRead):
            phase = "param"
        elif op.has_trait(ParamUpdate):
            phase = "update"
        else:
            phase = "forward" if end is None or i <= end else "backward"
        ops.append({"op": op.name, "layer": op_layer(op), "phase": phase})
    return {"function": plan.name, "ops": ops, "backward_start": None if end is None else end + 1,
            "peak_index": plan.peak_index}


def buffer_list(plan: FunctionPlan) -> list[dict[str, object]]:
    """The arena buffers of one plan, for memory.json: name, kind, bytes, offset, live range, the op
    that writes it (`argument` for an entry argument) and its layer, and whether it is an activation
    (or the image) that stays alive into the backward pass, i.e. is saved for it."""
    end = loss_index(plan)
    out: list[dict[str, object]] = []
    for b in plan.liveness.buffers:
        owner = b.values[0].owner
        kind = buffer_kind(b)
        out.append({
            "name": b.name, "kind": kind, "bytes": b.size, "offset": b.offset, "start": b.start, "end": b.end,
            "op": owner.name if isinstance(owner, Operation) else "argument",
            "layer": op_layer(owner) if isinstance(owner, Operation) else None,
            "saved_for_backward": end is not None and kind in ("activation", "input") and b.start <= end < b.end,
        })
    return out


@dataclass(frozen=True)
class PlanMemoryPass(ModulePass):
    """Static arena plan for @forward and @train_step; fails when arena + trainable + scratch > sram-kb."""

    name = "qtrain-plan-memory"

    sram_kb: int = 256
    """SRAM budget in KiB for arena + trainable copies + scratch"""
    memory_report: str | None = None
    """write memory.json to this path"""
    target: str = DEFAULT_TARGET
    """the target description that sizes kernel scratch and allows in-place kernels"""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.sram_kb <= 0:
            raise PassFailedException(f"{self.name}: sram-kb must be positive, got {self.sram_kb}")
        target = get_target(self.target)
        params = param_ops(op)
        functions = entry_points(op)
        if not functions:
            raise PassFailedException(f"{self.name}: no @{FORWARD} or @{TRAIN_STEP} to plan")
        for f in functions:  # refuse at compile time what the device's kernels would refuse at run time
            for o in f.body.block.ops:
                if not target.supports(o):
                    shapes = ", ".join(str(v.type) for v in (*o.operands, *o.results))
                    raise PassFailedException(f"{self.name}: the {target.name} kernels cannot run {o.name} on "
                                              f"{shapes} (in @{f.sym_name.data})")
        # Plan each function freely, then re-plan the others with the image where the largest one put it.
        plans = [plan_function(f, params, target=target) for f in functions]
        lead = max(range(len(plans)), key=lambda i: plans[i].arena_bytes)
        lead_args = [
            plans[lead].liveness.buffer_of[a].offset
            for a in functions[lead].body.block.args
            if a in plans[lead].liveness.buffer_of
        ]
        plans = [p if i == lead else plan_function(functions[i], params, lead_args, target)
                 for i, p in enumerate(plans)]
        arena_bytes = max(p.arena_bytes for p in plans)
        shared_scratch = max(p.scratch_bytes for p in plans)
        for f, plan in zip(functions, plans, strict=True):
            annotate(f, plan, scratch_gaps(plan, arena_bytes, shared_scratch, params, target))
        main = max(plans, key=lambda p: p.arena_bytes)
        train = find_func(op, TRAIN_STEP)
        constants = sum(target.flash_constant_bytes(o) for f in functions for o in f.walk())
        try:
            states = device_state(list(functions))
        except DeviceStateConflict as e:
            raise PassFailedException(f"{self.name}: {e}") from None
        state_bytes = device_state_bytes(states)
        report = MemoryReport(
            arena_bytes=main.arena_bytes,
            trainable_bytes=trainable_bytes(list(params.values())) + state_bytes,
            state_bytes=state_bytes,
            state=[{"name": st.name, "dtype": st.dtype, "count": st.count, "bytes": aligned(st.bytes)}
                   for st in states],
            scratch_bytes=max(p.scratch_bytes for p in plans),
            flash_bytes=flash_param_bytes(list(params.values())) + constants,
            peak_op=_describe_op(main),
            trainable=trainable_list(op, train),
            buffers=buffer_list(main),
            schedule=schedule_report(main),
            budget_bytes=self.sram_kb * 1024,
        )
        op.attributes[MEMORY] = DictionaryAttr({
            "peak_sram_bytes": IntegerAttr(report.peak_sram_bytes, i64),
            "arena_bytes": IntegerAttr(report.arena_bytes, i64),
            "trainable_bytes": IntegerAttr(report.trainable_bytes, i64),
            "state_bytes": IntegerAttr(report.state_bytes, i64),
            "scratch_bytes": IntegerAttr(report.scratch_bytes, i64),
            "flash_bytes": IntegerAttr(report.flash_bytes, i64),
            "peak_op": StringAttr(report.peak_op),
        })
        if self.memory_report:
            Path(self.memory_report).write_text(json.dumps(report.as_json(), indent=2) + "\n")
        budget = self.sram_kb * 1024
        if report.peak_sram_bytes > budget:
            raise PassFailedException(over_budget_message(report, main, budget, op))


def _describe_op(plan: FunctionPlan) -> str:
    if not plan.liveness.ops:
        return ""
    op = plan.liveness.ops[plan.peak_index]
    res = op.results[0].name_hint if op.results and op.results[0].name_hint else ""
    return f"@{plan.name} #{plan.peak_index} {op.name}" + (f" -> %{res}" if res else "")


def peak_layer(plan: FunctionPlan, module: ModuleOp) -> str | None:
    """The layer of the peak op for a diagnostic: `layer 12 (conv12, ONNX Conv 'features.3.conv.0')` in
    schemes.json numbering, the ONNX node when the importer recorded it; None when the op has no layer."""
    if not plan.liveness.ops:
        return None
    layer = op_layer(plan.liveness.ops[plan.peak_index])
    if layer is None:
        return None
    function = find_func(module, plan.name)
    numbers = layer_numbers(function) if function is not None else {}
    params = param_ops(module)
    index = next((numbers[n] for n in (f"{layer}.weight", f"{layer}.bias") if n in numbers), None)
    weight = params.get(f"{layer}.weight")
    source = weight.attributes.get(SOURCE) if weight is not None else None
    details = ", ".join([layer, *([f"ONNX {source.data}"] if isinstance(source, StringAttr) else [])])
    return f"layer {index} ({details})" if index is not None else details


def storage_savings(module: ModuleOp) -> dict[str, int]:
    """Bytes each cheaper `--weight-storage` would save on the trained int8 weights' SRAM copies (f32: 4 B
    per weight, i16: 2, i8: 1), by storage, for those that save anything."""
    per_weight = {"f32": 4, "i16": 2, "i8": 1}
    weights = [p for p in param_ops(module).values()
               if p.is_trainable and p.tensor_type.element_type == i8 and p.storage_type in (f32, i16)]
    now = trainable_bytes(weights)
    saved = {}
    for storage in ("i16", "i8"):
        cheaper = sum(aligned(per_weight[storage] * math.prod(p.trainable_shape())) for p in weights)
        if cheaper < now:
            saved[storage] = now - cheaper
    return saved


def over_budget_message(report: MemoryReport, plan: FunctionPlan, budget: int, module: ModuleOp) -> str:
    where = peak_layer(plan, module)
    lines = [
        f"qtrain-plan-memory: needs {report.peak_sram_bytes} bytes of SRAM, over the budget of {budget} "
        f"({report.peak_sram_bytes - budget} too many); Flash {report.flash_bytes} bytes of weights and "
        f"constants (the firmware adds code)",
        f"  arena {report.arena_bytes} + trainable copies {report.trainable_bytes} + kernel scratch "
        f"{report.scratch_bytes}" + (f" (training state {report.state_bytes} of the trainable)"
                                     if report.state_bytes else ""),
        f"  live at the peak ({report.peak_op}" + (f", {where}" if where else "") + "):",
    ]
    for b in plan.liveness.live_at(plan.peak_index)[:12]:
        lines.append(f"    {b.size:>9} B  {b.name}  [ops {b.start}..{b.end}]")
    rest = plan.liveness.live_at(plan.peak_index)[12:]
    if rest:
        lines.append(f"    {sum(b.size for b in rest):>9} B  in {len(rest)} smaller buffers")
    big = sorted(report.trainable, key=lambda t: -int(t["bytes"]))[:5]  # type: ignore[call-overload]
    if big:
        lines.append("  largest trainable copies: " + ", ".join(f"{t['name']} {t['bytes']} B" for t in big))
    helps = [f"--weight-storage {s} (saves {n} bytes of weight copies)" for s, n in storage_savings(module).items()]
    helps += ["a sparser scheme (fewer or narrower trained layers; bias-only keeps no weight copies)",
              "qtrain-search-scheme --budget-kb K (the most accurate scheme that fits K)",
              "qtrain-reorder if it did not run"]
    lines.append("  what would help: " + "; ".join(helps))
    return "\n".join(lines)
