"""`-t c`: planned qtrain IR -> one C source + header implementing targets/armv7em/qtrain_model_abi.h.

Input: a module after `qtrain-plan-memory` (every arena value has its offset). Output:

- frozen parameters as `const` arrays in Flash (QTRAIN_WEIGHTS), trainable ones additionally as SRAM
  copies (QTRAIN_TRAINABLE: int8 / int32 in place, or fp32 masters of the trained channel slice)
  filled by `qtrain_init()`;
- one static arena (QTRAIN_ARENA) of the planned size; every tensor is a pointer at its offset;
- one scratch buffer (QTRAIN_SCRATCH) of the planned size, handed to kernels through a context; an op
  with a `qtrain.scratch_gap` hands its kernels that free stretch of the arena instead (larger);
- `qtrain_infer` from @forward and `qtrain_train_step` from @train_step: each op's kernel calls
  (`KernelCallOp.kernel_calls`, targets/armv7em/kernels/qtrain_kernels.h) rendered in order, shapes and
  constants as literals;
- `qtrain_memory` (the planner's figures) and `qtrain_model` (shapes, I/O, trainable tensor table);
- training state (`DeviceStateOp`: the schedule's step counter, momentum velocities) as zero-initialised
  SRAM arrays next to the trainable copies, reset by `qtrain_init()`, and `qtrain_training_state`: a
  table of (name, pointer, bytes) of everything training changes and keeps between steps (the trainable
  copies and that state), what a checkpoint saves and restores;
- checkpoints (`lowering/checkpoint_c.py`): the state table `qtrain_state` (the step counter, then the
  regions of `qtrain_training_state`) and `qtrain_checkpoint_save/restore`; `qtrain_init` ends by
  restoring the newest valid checkpoint. The step counter is the schedule's "step" state (a module
  without a `qtrain.lr_schedule` gets a plain counter that `qtrain_train_step` advances).

The ops compute their own constants (requantization multipliers, add constants, QAS steps) with
`qtrain.numerics`, the same functions the interpreter uses, so both backends read identical bits; this
module only renders what the calls name.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import BFloat16Type, IntegerType, ModuleOp, TensorType, f32, i16
from xdsl.ir import Operation, SSAValue
from xdsl.utils.exceptions import DiagnosticException
from xdsl.utils.target import Target

from qtrain.dialects.qtrain import ParamOp, QuantParamsAttr
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.contract import (
    ARENA_BYTES,
    ARG_OFFSETS,
    FORWARD,
    INPUT_Q,
    MEMORY,
    OFFSETS,
    SCRATCH_GAP,
    TRAIN_STEP,
    find_func,
    param_name,
    param_ops,
)
from qtrain.dialects.qtrain.interfaces import KernelCallOp, produced_quant
from qtrain.dialects.qtrain.schedule import COUNTER_MAX, STEP_COUNTER
from qtrain.interpreter import dense_to_numpy
from qtrain.lowering.checkpoint_c import StateBuffer, checkpoint_c, layout_fingerprint
from qtrain.transforms.liveness import device_state, tensor_bytes


class EmitError(DiagnosticException):
    """The module cannot be lowered to C (not planned, or an op the C backend does not handle)."""


def c_ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


def c_float(x: float) -> str:
    """An exact C float literal (hex float: no decimal rounding between the compiler and numpy)."""
    v = float(np.float32(x))
    if math.isnan(v) or math.isinf(v):
        raise EmitError(f"non-finite constant {v} cannot be emitted")
    return f"{v.hex()}f" if v != 0 else ("-0.0f" if math.copysign(1.0, v) < 0 else "0.0f")


def c_array(values: Iterable[object], per_line: int = 24) -> str:
    items = [str(v) for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "{\n    " + ",\n    ".join(lines) + "\n}"


def dims(shape: tuple[int, ...]) -> str:
    s = list(shape)
    while len(s) < 4:
        s.insert(0, 1)
    return "{" + ", ".join(str(d) for d in s) + "}"


def elem_ctype(t: TensorType) -> str:
    e = t.element_type
    if isinstance(e, IntegerType):
        return {1: "uint8_t", 8: "int8_t", 32: "int32_t"}[e.width.data]
    if isinstance(e, BFloat16Type):
        return "uint16_t"  # a bf16 gradient: the top half of a float's bits (qtrain_f32_to_bf16)
    return "float"


@dataclass
class ParamInfo:
    op: ParamOp
    flash: str
    sram: str | None = None
    sram_ctype: str = ""
    planes: int = 1
    """int8 planes of the SRAM copy: 2 for an i16 master (value, fraction), else 1"""

    @property
    def name(self) -> str:
        return self.op.sym_name.data


@dataclass
class Emitter:
    module: ModuleOp
    decls: list[str] = field(default_factory=list)
    params: dict[str, ParamInfo] = field(default_factory=dict)
    scratch_bytes: int = 0
    macs: dict[str, int] = field(default_factory=dict)
    counter: int = 0
    uses_ctx_after_grad: bool = False
    params_crc: int = 0
    """zlib.crc32 over every parameter's initial bytes (the checkpoint fingerprint's first part)."""
    state_buffers: list[StateBuffer] = field(default_factory=list)
    """What a checkpoint saves besides the step counter: each trainable tensor's SRAM copy (emit_params),
    then the training state of `device_state` other than the counter (emit_model)."""
    states: dict[str, str] = field(default_factory=dict)
    """training state name -> its C array"""
    scalars: dict[SSAValue, str] = field(default_factory=dict)
    """scalar SSA values computed by a call (`KernelCall.result`) -> their C local"""
    uses_ctx: bool = False
    uses_ctx_gap: bool = False
    gap: tuple[int, int] | None = None  # the current op's SCRATCH_GAP
    profile: bool = False
    """instrumented (`qtrain-compile --profile`): the counter read after each op (lowering/profile.py)"""
    profile_slot: int = 0

    # -- names and values ---------------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def offsets(self, value: SSAValue) -> int:
        owner = value.owner
        if isinstance(owner, Operation):
            if OFFSETS not in owner.attributes:
                raise EmitError(f"{owner.name}: no qtrain.offsets; run qtrain-plan-memory before -t c")
            off = owner.attributes[OFFSETS].get_values()[value.index]  # type: ignore[attr-defined]
        else:
            function = owner.parent_op()
            off = function.attributes[ARG_OFFSETS].get_values()[value.index]  # type: ignore[union-attr]
        if off < 0:
            raise EmitError(f"a value of {getattr(owner, 'name', 'an argument')} has no arena offset")
        self.check_in_arena(value, off)
        return off

    def check_in_arena(self, value: SSAValue, offset: int) -> None:
        """A planned buffer lies inside its function's arena (the C would otherwise write past it)."""
        owner = value.owner
        function = owner.parent_op()
        while function is not None and not isinstance(function, func.FuncOp):
            function = function.parent_op()
        arena = function.attributes.get(ARENA_BYTES) if function is not None else None
        if function is None or arena is None:
            raise EmitError("a function has no qtrain.arena_bytes; run qtrain-plan-memory before -t c")
        size, end = tensor_bytes(value.type), arena.value.data  # type: ignore[attr-defined]
        if offset + size > end:
            what = getattr(owner, "name", "an argument")
            raise EmitError(f"a buffer of {what} at arena offset {offset} ({size} bytes) ends past the "
                            f"{end}-byte arena of @{function.sym_name.data}")  # type: ignore[union-attr]

    def ptr(self, value: SSAValue | None) -> str:
        if value is None:
            return "NULL"
        t = value.type
        assert isinstance(t, TensorType)
        return f"(({elem_ctype(t)} *)(qtrain_arena + {self.offsets(value)}))"

    def param(self, value: SSAValue) -> ParamInfo:
        name = param_name(value)
        if name is None:
            raise EmitError("weights and biases must come from qtrain.get_param")
        return self.params[name]

    # -- module-level data --------------------------------------------------------------------------------

    def emit_params(self) -> None:
        for p in param_ops(self.module).values():
            name = c_ident(p.sym_name.data)
            value = dense_to_numpy(p.value)
            ctype = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t", np.dtype(np.float32): "float"}[
                value.dtype
            ]
            self.params_crc = zlib.crc32(p.sym_name.data.encode() + value.tobytes(), self.params_crc)
            self.decls.append(
                f"static const {ctype} {name}[{value.size}] QTRAIN_WEIGHTS = {c_array(value.ravel().tolist())};"
            )
            info = ParamInfo(p, name)
            if p.is_trainable:
                n = math.prod(p.trainable_shape())
                storage = p.storage_type
                info.sram_ctype = "float" if storage == f32 else ctype
                info.sram = f"{name}_sram"
                # An i16 master is two int8 planes in one array: the value (kernels read it as an int8
                # copy), then the fraction (only its update reads it).
                info.planes = 2 if storage == i16 else 1
                self.decls.append(f"static {info.sram_ctype} {info.sram}[{n * info.planes}] QTRAIN_TRAINABLE;")
                element_bytes = 1 if info.sram_ctype == "int8_t" else 4
                self.state_buffers.append(StateBuffer(p.sym_name.data, info.sram, n * element_bytes * info.planes))
            self.params[p.sym_name.data] = info

    def weight_struct(self, value: SSAValue) -> str:
        """A `qtrain_weight_t` for a conv weight (frozen, fully trained, or with a trained slice)."""
        info = self.param(value)
        p = info.op
        name = f"{c_ident(info.name)}_w"
        if any(d.startswith(f"static const qtrain_weight_t {name} ") for d in self.decls):
            return f"&{name}"
        data, master, slice_, start, stop = info.flash, "NULL", "NULL", 0, 0
        if p.is_trainable:
            sl = p.trainable_slice()
            full = p.tensor_type.get_shape()[p.channel_axis]
            start, stop = sl if sl is not None else (0, full)
            if info.sram_ctype == "float":
                master = info.sram
            elif sl is None:
                data = info.sram  # type: ignore[assignment]
                start, stop = 0, 0
            else:
                slice_ = info.sram  # type: ignore[assignment]
        self.decls.append(
            f"static const qtrain_weight_t {name} = {{{data}, {master}, {slice_}, {start}, {stop}}};"
        )
        return f"&{name}"

    def frozen_weight(self, value: SSAValue) -> str:
        """The Flash array of a weight that does not train (a kernel reading plain int8)."""
        info = self.param(value)
        if info.sram is not None:
            raise EmitError(f"@{info.name} is trainable, but its kernel reads frozen int8 weights only")
        return info.flash

    def bias_ptr(self, value: SSAValue | None) -> str:
        if value is None:
            return "NULL"
        info = self.param(value)
        return info.sram if info.sram is not None else info.flash

    def trainable_copy(self, name: str) -> ParamInfo:
        info = self.params.get(name)
        if info is None or info.sram is None:
            raise EmitError(f"@{name} has no SRAM copy (it is not trainable)")
        return info

    def const_floats(self, prefix: str, values: Iterable[float]) -> str:
        name = self.fresh(prefix)
        self.decls.append(
            f"static const float {name}[] QTRAIN_WEIGHTS = {c_array([c_float(v) for v in values], per_line=8)};"
        )
        return name

    def const_ints(self, arg: kc.Ints) -> str:
        name = self.fresh(arg.prefix)
        self.decls.append(f"static const {arg.ctype} {name}[] QTRAIN_WEIGHTS = {c_array(arg.values, per_line=16)};")
        return name

    def conv_params(self, g: kc.ConvGeometry) -> str:
        name = self.fresh("conv_params")
        pt, pl, _, _ = g.padding
        self.decls.append(
            f"static const qtrain_conv_params_t {name} = {{{g.input_zero_point}, {g.output_zero_point}, "
            f"{g.strides[0]}, {g.strides[1]}, {pt}, {pl}, {g.groups}, {g.clamp[0]}, {g.clamp[1]}}};"
        )
        return f"&{name}"

    def dims_const(self, shape: tuple[int, ...]) -> str:
        name = self.fresh("dims")
        self.decls.append(f"static const qtrain_dims_t {name} = {dims(shape)};")
        return f"&{name}"

    # -- kernel calls -----------------------------------------------------------------------------------------

    def argument(self, arg: kc.CallArg, body: list[str]) -> str:
        """The C expression of one call argument (declaring the constants it needs)."""
        if isinstance(arg, kc.Tensor):
            return self.ptr(arg.value)
        if isinstance(arg, kc.Shape):
            return self.dims_const(arg.dims)
        if isinstance(arg, kc.ConvGeometry):
            return self.conv_params(arg)
        if isinstance(arg, kc.Weight):
            return self.weight_struct(arg.value)
        if isinstance(arg, kc.FrozenWeight):
            return self.frozen_weight(arg.value)
        if isinstance(arg, kc.Bias | kc.ParamData):
            return self.bias_ptr(arg.value)
        if isinstance(arg, kc.Floats):
            return self.const_floats(arg.prefix, arg.values)
        if isinstance(arg, kc.Ints):
            return self.const_ints(arg)
        if isinstance(arg, kc.F32):
            return c_float(arg.value)
        if isinstance(arg, kc.I32):
            return str(int(arg.value))
        if isinstance(arg, kc.Label):
            return "label"
        if isinstance(arg, kc.Null):
            return "NULL"
        if isinstance(arg, kc.Scratch):
            if arg.offset == 0 and self.gap is not None:
                # a larger arena gap free while this op runs: a faster schedule, the same results
                self.uses_ctx_gap = True
                body.append(f"    qtrain_ctx_gap.buf = qtrain_arena + {self.gap[0]};")
                body.append(f"    qtrain_ctx_gap.size = {self.gap[1]};")
                return "&qtrain_ctx_gap"
            if arg.offset == 0:
                self.uses_ctx = True
                return "&qtrain_ctx"
            # The bytes before `offset` hold a fused gradient waiting for its update.
            self.uses_ctx_after_grad = True
            body.append(f"    qtrain_ctx_after_grad.buf = qtrain_scratch + {arg.offset};")
            body.append(f"    qtrain_ctx_after_grad.size = (int32_t)sizeof qtrain_scratch - {arg.offset};")
            return "&qtrain_ctx_after_grad"
        if isinstance(arg, kc.FusedGradient):
            self.scratch_bytes = max(self.scratch_bytes, 4 * arg.floats)
            return "((float *)qtrain_scratch)"
        if isinstance(arg, kc.Scalar):
            return self.scalar(arg.value)
        if isinstance(arg, kc.ScaledF32):
            if arg.scalar is None:
                return c_float(arg.constant)
            return f"({c_float(arg.constant)} * {self.scalar(arg.scalar)})"  # one fp32 multiply (FLT_EVAL_METHOD 0)
        if isinstance(arg, kc.State):
            if arg.name not in self.states:
                raise EmitError(f"no op of the module declares the training state '{arg.name}'")
            return self.states[arg.name]
        if isinstance(arg, kc.ParamCopy):
            return self.trainable_copy(arg.name).sram  # type: ignore[return-value]
        if isinstance(arg, kc.ParamStorage):
            info = self.trainable_copy(arg.name)
            if info.planes == 2:
                return "QTRAIN_STORAGE_S16"
            return "QTRAIN_STORAGE_F32" if info.sram_ctype == "float" else "QTRAIN_STORAGE_S8"
        if isinstance(arg, kc.NoiseKey):
            if arg.counter not in self.states:
                raise EmitError(f"no op of the module declares the training state '{arg.counter}'")
            return f"qtrain_noise_key({arg.seed}u, {self.states[arg.counter]}[0])"
        raise EmitError(f"the C backend cannot render argument {arg!r}")

    def scalar(self, value: SSAValue) -> str:
        if value not in self.scalars:
            raise EmitError("a scalar operand is not computed by an earlier kernel call of its function")
        return self.scalars[value]

    def emit_call(self, call: kc.KernelCall, body: list[str], entry: str) -> None:
        arguments = ", ".join(self.argument(a, body) for a in call.args)
        invocation = f"{call.function}({arguments})"
        if call.returns == "value":
            if call.result is None:
                raise EmitError(f"{call.function} returns a value but names no result for it")
            name = self.fresh(c_ident(call.result.name_hint or "value") + "_")
            self.scalars[call.result] = name
            body.append(f"    const float {name} = {invocation};")
        elif call.returns == "status":
            body.append(f"    QTRAIN_CHECK({invocation});")
        elif call.returns == "loss":
            body.append(f"    loss = {invocation};")
        else:
            body.append(f"    {invocation};")
        if call.macs:
            self.macs[entry] = self.macs.get(entry, 0) + call.macs

    # -- functions -----------------------------------------------------------------------------------------

    def emit_function(self, function: func.FuncOp) -> list[str]:
        entry = function.sym_name.data
        body: list[str] = []
        image = function.body.block.args[0]
        body.append(f"    if (image != {self.ptr(image)}) {{")
        body.append(f"        memmove({self.ptr(image)}, image, {math.prod(image.type.get_shape())});")  # type: ignore
        body.append("    }")
        if self.profile:
            body.insert(0, "    qtrain_profile_last = qtrain_counter_read();")
            self.profile_mark(body)
        for op in function.body.block.ops:
            if isinstance(op, func.ReturnOp):
                break
            if not isinstance(op, KernelCallOp):
                raise EmitError(f"the C backend has no lowering for {op.name}")
            calls = op.kernel_calls()
            gap = op.attributes.get(SCRATCH_GAP)
            self.gap = tuple(gap.get_values()) if gap is not None else None  # type: ignore[attr-defined]
            for call in calls:
                self.emit_call(call, body, entry)
            self.gap = None
            if self.profile and calls:
                self.profile_mark(body)
        return body

    def profile_mark(self, body: list[str]) -> None:
        """Closes the current profile slot (`profile.profile_slots` lists them in the same order)."""
        body.append(f"    qtrain_profile_mark({self.profile_slot}u);")
        self.profile_slot += 1


GUARD_BYTES = 64


def buffer_declarations(arena: int, scratch: int) -> list[str]:
    """The arena and the scratch buffer; with -DQTRAIN_BOUNDS_CHECK (qtrain-compile --bounds-check) each
    sits between two guard bands that every entry point checks on its way out."""
    guarded = "struct {{ uint8_t before[QTRAIN_GUARD_BYTES]; uint8_t {0}[{1}]; uint8_t after[QTRAIN_GUARD_BYTES]; }}"
    return [
        "#if defined(QTRAIN_BOUNDS_CHECK)",
        "/* Debug build: guard bands around the arena and the scratch buffer (QTRAIN_GUARDS_CHECK). */",
        f"#define QTRAIN_GUARD_BYTES {GUARD_BYTES}",
        f"static {guarded.format('arena', arena)} qtrain_arena_guarded QTRAIN_ARENA;",
        f"static {guarded.format('scratch', scratch)} qtrain_scratch_guarded QTRAIN_SCRATCH;",
        "#define qtrain_arena (qtrain_arena_guarded.arena)",
        "#define qtrain_scratch (qtrain_scratch_guarded.scratch)",
        "#define QTRAIN_GUARDS_SET() qtrain_guards(0, __LINE__)",
        "#define QTRAIN_GUARDS_CHECK() qtrain_guards(1, __LINE__)",
        "#else",
        f"static uint8_t qtrain_arena[{arena}] QTRAIN_ARENA;",
        f"static uint8_t qtrain_scratch[{scratch}] QTRAIN_SCRATCH;",
        "#define QTRAIN_GUARDS_SET() ((void)0)",
        "#define QTRAIN_GUARDS_CHECK() ((void)0)",
        "#endif",
    ]


GUARD_FUNCTION = [
    "#if defined(QTRAIN_BOUNDS_CHECK)",
    "/* Paints (check = 0) or checks (check = 1) the four guard bands; a broken one stops the program. */",
    "static void qtrain_guards(int check, int line) {",
    "    uint8_t *bands[4] = {qtrain_arena_guarded.before, qtrain_arena_guarded.after,",
    "                         qtrain_scratch_guarded.before, qtrain_scratch_guarded.after};",
    "    for (int b = 0; b < 4; ++b) {",
    "        for (int i = 0; i < QTRAIN_GUARD_BYTES; ++i) {",
    "            if (!check) {",
    "                bands[b][i] = 0xA5u;",
    "            } else if (bands[b][i] != 0xA5u) {",
    '                qtrain_puts("qtrain: a kernel wrote outside the arena or the scratch buffer (checked at '
    'generated code line ");',
    "                qtrain_put_u32((uint32_t)line);",
    '                qtrain_puts(")\\n");',
    "                qtrain_exit(QTRAIN_EXIT_FAILURE);",
    "            }",
    "        }",
    "    }",
    "}",
    "#endif",
    "",
]


def emit_model(module: ModuleOp, header_name: str = "model.h", profile: bool = False) -> tuple[str, str]:
    """The model's C source and header. `profile`: instrumented with one counter slot per op (those of
    `lowering.profile.profile_slots`, in order), for a firmware built with QTRAIN_PROFILE defined."""
    if MEMORY not in module.attributes:
        raise EmitError("the module has no memory plan; run qtrain-plan-memory before -t c")
    forward = find_func(module, FORWARD)
    if forward is None:
        raise EmitError(f"the module has no @{FORWARD}")
    train = find_func(module, TRAIN_STEP)
    em = Emitter(module, profile=profile)
    em.emit_params()
    states = device_state([f for f in (forward, train) if f is not None])
    for st in states:
        em.states[st.name] = f"qtrain_state_{c_ident(st.name)}"
        ctype = "uint32_t" if st.dtype == "u32" else "float"
        em.decls.append(f"static {ctype} {em.states[st.name]}[{st.count}] QTRAIN_TRAINABLE;")
        if st.name != STEP_COUNTER.name:
            em.state_buffers.append(StateBuffer(st.name, em.states[st.name], st.bytes))
    # The checkpoint's step counter: the schedule's, or (no schedule advances one) a counter of our own.
    own_counter = STEP_COUNTER.name not in em.states
    if own_counter:
        if any(st.name == STEP_COUNTER.name for st in states):
            raise EmitError(f"training state '{STEP_COUNTER.name}' must be {STEP_COUNTER}")
        step = "qtrain_step_counter"
        em.decls.append(f"static uint32_t {step}[1]; /* training steps done (checkpointed) */")
    else:
        step = em.states[STEP_COUNTER.name]
        if next(st for st in states if st.name == STEP_COUNTER.name) != STEP_COUNTER:
            raise EmitError(f"training state '{STEP_COUNTER.name}' must be {STEP_COUNTER}")
    checkpointed = [StateBuffer(STEP_COUNTER.name, step, STEP_COUNTER.bytes), *em.state_buffers]
    infer_body = em.emit_function(forward)

    # Forward output: int8 [1, K] -> logits.
    ret = forward.body.block.last_op
    assert isinstance(ret, func.ReturnOp)
    out = ret.arguments[0]
    out_q = produced_quant(out)
    if out_q is None:
        raise EmitError(f"cannot tell the quantization of @{FORWARD}'s output")
    k = out.type.get_shape()[-1]  # type: ignore[attr-defined]
    infer_body.append(f"    qtrain_dequantize_s8_f32({em.ptr(out)}, {k}, {c_float(out_q.scale)}, {out_q.zp}, logits);")
    if profile:
        em.profile_mark(infer_body)
    train_body = em.emit_function(train) if train is not None else None

    memory = {k_: v.value.data for k_, v in module.attributes[MEMORY].data.items() if hasattr(v, "value")}  # type: ignore
    arena = max(f.attributes[ARENA_BYTES].value.data for f in (forward, train) if f is not None)  # type: ignore
    scratch = int(memory["scratch_bytes"])
    if em.scratch_bytes > scratch:
        raise EmitError(f"the code needs {em.scratch_bytes} bytes of scratch but the plan has {scratch}")
    scratch = max(scratch, 4)
    image_t = forward.body.block.args[0].type
    h, w, c = image_t.get_shape()[1:]  # type: ignore[attr-defined]

    trainable = [i for i in em.params.values() if i.sram is not None]
    dtype_of = {"int8_t": "QTRAIN_DTYPE_INT8", "int32_t": "QTRAIN_DTYPE_INT32", "float": "QTRAIN_DTYPE_FLOAT32"}
    table = []
    for i in trainable:
        shape = list(i.op.trainable_shape())
        dtype = "QTRAIN_DTYPE_FIXED16" if i.planes == 2 else dtype_of[i.sram_ctype]
        table.append(
            f'    {{"{i.name}", {i.sram}, {dtype}, {len(shape)}, '
            f"{{{', '.join(str(s) for s in shape + [0] * (4 - len(shape)))}}}}},"
        )
    init = []
    for i in trainable:
        p = i.op
        shape = p.tensor_type.get_shape()
        sl = p.trainable_slice()
        n = math.prod(p.trainable_shape())
        if sl is None:
            src_index = "k"
        elif p.channel_axis == 3:
            kk = sl[1] - sl[0]
            src_index = f"(k / {kk}) * {shape[3]} + {sl[0]} + k % {kk}"
        else:
            src_index = f"{sl[0] * math.prod(shape[1:])} + k"
        conv = f"(float){i.flash}[{src_index}]" if i.sram_ctype == "float" else f"{i.flash}[{src_index}]"
        init.append(f"    for (int32_t k = 0; k < {n}; ++k) {{ {i.sram}[k] = {conv}; }}")
        if i.planes == 2:
            init.append(f"    for (int32_t k = {n}; k < {2 * n}; ++k) {{ {i.sram}[k] = 0; }} /* fractions */")
    for st in states:
        init.append(f"    for (int32_t k = 0; k < {st.count}; ++k) {{ {em.states[st.name]}[k] = 0; }}")
    regions = [f'    {{"{i.name}", {i.sram}, (uint32_t)sizeof {i.sram}}},' for i in trainable]
    regions += [f'    {{"{st.name}", {em.states[st.name]}, (uint32_t)sizeof {em.states[st.name]}}},' for st in states]

    c_lines = [
        "/* Generated by qtrain (lowering/emit_c.py) from planned qtrain IR. Do not edit. */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "void *memmove(void *dst, const void *src, size_t n); /* libc on the host, runtime_string.c on targets */",
        '#include "qtrain_checkpoint.h"',
        '#include "qtrain_kernels.h"',
        '#include "qtrain_runtime.h"',
        f'#include "{header_name}"',
        "",
        "/* A kernel given arguments the op verifiers allow never fails; if one does, stop loudly. */",
        "#define QTRAIN_CHECK(call) do { if ((call) != QTRAIN_STATUS_OK) { qtrain_fail(__LINE__); } } while (0)",
        "",
        *buffer_declarations(max(arena, 4), scratch),
        # (unused when every op with scratch has a larger gap of the arena)
        "static const qtrain_context_t qtrain_ctx" + ("" if em.uses_ctx or not em.uses_ctx_gap else
                                                     " __attribute__((unused))")
        + " = {qtrain_scratch, (int32_t)sizeof qtrain_scratch};",
        *(["static qtrain_context_t qtrain_ctx_after_grad;"] if em.uses_ctx_after_grad else []),
        *(["static qtrain_context_t qtrain_ctx_gap;"] if em.uses_ctx_gap else []),
        f"static float qtrain_logits[{k}];",
        "",
        *em.decls,
        "",
        *(profile_definitions(em.profile_slot) if profile else []),
        "static _Noreturn void qtrain_fail(int line) {",
        '    qtrain_puts("qtrain: a kernel rejected its arguments (generated code line ");',
        "    qtrain_put_u32((uint32_t)line);",
        '    qtrain_puts(")\\n");',
        "    qtrain_exit(QTRAIN_EXIT_FAILURE);",
        "}",
        "",
        *GUARD_FUNCTION,
        "void qtrain_init(void) {",
        *init,
        "    (void)qtrain_checkpoint_restore();",
        "    QTRAIN_GUARDS_SET();",
        "}",
        "",
        "void qtrain_infer(const int8_t *image, float *logits) {",
        *infer_body,
        "    QTRAIN_GUARDS_CHECK();",
        "}",
        "",
    ]
    if train_body is not None:
        c_lines += [
            "float qtrain_train_step(const int8_t *image, int label) {",
            "    float loss = 0.0f;",
            *train_body,
            "    QTRAIN_GUARDS_CHECK();",
            *([f"    if ({step}[0] < {COUNTER_MAX}u) {{ {step}[0]++; }}"] if own_counter else []),
            "    return loss;",
            "}",
            "",
        ]
    else:
        c_lines += [
            "float qtrain_train_step(const int8_t *image, int label) {",
            "    (void)image; (void)label;",
            '    qtrain_puts("qtrain: this model was compiled without @train_step\\n");',
            "    qtrain_exit(QTRAIN_EXIT_BAD_INPUT);",
            "}",
            "",
        ]
    c_lines += [
        "const qtrain_memory_report_t qtrain_memory = {",
        f"    {memory['peak_sram_bytes']}u, {memory['arena_bytes']}u, {memory['trainable_bytes']}u, "
        f"{memory['scratch_bytes']}u, {memory['flash_bytes']}u,",
        "};",
        "",
        f"static const qtrain_tensor_desc_t qtrain_trainable[{max(1, len(table))}] = {{",
        *(table or ['    {"", NULL, 0, 0, {0, 0, 0, 0}},']),
        "};",
        "",
        "/* Everything training changes and keeps between steps: the trainable copies, then the training state. */",
        f"const qtrain_state_region_t qtrain_training_state[{max(1, len(regions))}] = {{",
        *(regions or ['    {"", NULL, 0u},']),
        "};",
        f"const uint32_t qtrain_training_state_count = {len(regions)}u;",
        "",
        "const qtrain_model_desc_t qtrain_model = {",
        "    QTRAIN_ABI_VERSION,",
        f"    {{{h}, {w}, {c}}}, {h * w * c}u, {k}u,",
        f"    (int8_t *)(qtrain_arena + {em.offsets(forward.body.block.args[0])}),",
        "    qtrain_logits,",
        f"    (const int8_t *)(qtrain_arena + {em.offsets(out)}),",
        f"    {em.macs.get(FORWARD, 0)}ull, {em.macs.get(TRAIN_STEP, 0)}ull,",
        f"    {len(table)}u, qtrain_trainable,",
        "};",
        "",
        *checkpoint_c(checkpointed, step, layout_fingerprint(em.params_crc, checkpointed)),
    ]
    input_q = forward.attributes.get(INPUT_Q)
    if isinstance(input_q, QuantParamsAttr):
        # Read from the ELF by qtrain-run, to check an input file's `input_q` against the model's.
        c_lines += ["/* How real images are quantized into the int8 input: scale, zero point. */",
                    f"__attribute__((used, retain)) const float qtrain_input_quant[2] = "
                    f"{{{c_float(input_q.scale)}, {float(input_q.zp):.1f}f}};", ""]
    guard = c_ident(header_name).upper()
    header = "\n".join([
        "/* Generated by qtrain. The model's entry points are those of qtrain_model_abi.h. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        '#include "qtrain_model_abi.h"',
        f"#define QTRAIN_MODEL_NUM_CLASSES {k}",
        f"#define QTRAIN_MODEL_INPUT_BYTES {h * w * c}",
        f"#define QTRAIN_MODEL_ARENA_BYTES {arena}",
        f"#endif /* {guard} */",
        "",
    ])
    return "\n".join(c_lines), header


def profile_definitions(slots: int) -> list[str]:
    """The counter slots of an instrumented model (qtrain_model_abi.h, "Profile"): each op's count is the
    counter's advance since the previous slot closed; an entry point opens with one read."""
    return [
        "#if !defined(QTRAIN_PROFILE)",
        "#error \"a model compiled with --profile needs QTRAIN_PROFILE defined (qtrain-compile --profile does)\"",
        "#endif",
        f"uint64_t qtrain_profile_counts[{slots}];",
        f"const uint32_t qtrain_profile_slots = {slots}u;",
        "static uint64_t qtrain_profile_last;",
        "static void qtrain_profile_mark(uint32_t slot) {",
        "    uint64_t now = qtrain_counter_read();",
        "    qtrain_profile_counts[slot] = now - qtrain_profile_last;",
        "    qtrain_profile_last = now;",
        "}",
        "",
    ]


@dataclass(frozen=True)
class CTarget(Target):
    """`qtrain-opt -t c`: the model's C source (the header goes to `header`'s path when given)."""

    name = "c"
    header: str = "model.h"

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        source, _ = emit_model(module, self.header)
        output.write(source)
