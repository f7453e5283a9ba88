"""`-t c`: planned qtrain IR -> one C source + header implementing targets/armv7em/qtrain_model_abi.h.

Input: a module after `qtrain-plan-memory` (every arena value has its offset). Output:

- frozen parameters as `const` arrays in Flash (QTRAIN_WEIGHTS), trainable ones additionally as SRAM
  copies (QTRAIN_TRAINABLE: int8 / int32 in place, or fp32 masters of the trained channel slice)
  filled by `qtrain_init()`;
- one static arena (QTRAIN_ARENA) of the planned size; every tensor is a pointer at its offset;
- one scratch buffer (QTRAIN_SCRATCH) of the planned size, handed to kernels through a context;
- `qtrain_infer` from @forward and `qtrain_train_step` from @train_step: one kernel call per op
  (targets/armv7em/kernels/qtrain_kernels.h), shapes and constants as literals; a weight or bias
  gradient marked `qtrain.fused_update` is computed straight into its update;
- `qtrain_memory` (the planner's figures) and `qtrain_model` (shapes, I/O, trainable tensor table).

Every per-channel float constant (requantization multipliers, add constants, QAS steps) is computed
here with `qtrain.lowering.numerics`, the same functions the interpreter uses, so both backends read
identical bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerType, ModuleOp, TensorType, f32
from xdsl.ir import Operation, SSAValue
from xdsl.utils.exceptions import DiagnosticException
from xdsl.utils.target import Target

from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolGradOp,
    AvgPoolOp,
    BiasGradOp,
    ChannelSliceOp,
    Conv2DInputGradOp,
    Conv2DOp,
    Conv2DWeightGradOp,
    CrossEntropyGradOp,
    CrossEntropyOp,
    DequantizeOp,
    FusedPointwiseDepthwiseOp,
    GetParamOp,
    GradAccumulateOp,
    ParamOp,
    QuantizeOp,
    RequantGradOp,
    ReshapeOp,
    SGDUpdateOp,
)
from qtrain.dialects.qtrain.ops import clamp_range, produced_quant
from qtrain.lowering import numerics
from qtrain.lowering.interpreter import dense_to_numpy
from qtrain.transforms.autodiff import FORWARD, TRAIN_STEP
from qtrain.transforms.liveness import FUSED_UPDATE
from qtrain.transforms.plan_memory import ARENA_BYTES, ARG_OFFSETS, MEMORY, OFFSETS


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
    return "float"


@dataclass
class ParamInfo:
    op: ParamOp
    flash: str
    sram: str | None = None
    sram_ctype: str = ""

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
        return off

    def ptr(self, value: SSAValue) -> str:
        t = value.type
        assert isinstance(t, TensorType)
        return f"(({elem_ctype(t)} *)(qtrain_arena + {self.offsets(value)}))"

    def opt_ptr(self, value: SSAValue | None) -> str:
        return "NULL" if value is None else self.ptr(value)

    def param(self, value: SSAValue) -> ParamInfo:
        owner = value.owner
        if not isinstance(owner, GetParamOp):
            raise EmitError("weights and biases must come from qtrain.get_param")
        return self.params[owner.param.root_reference.data]

    # -- module-level data --------------------------------------------------------------------------------

    def emit_params(self) -> None:
        for p in self.module.ops:
            if not isinstance(p, ParamOp):
                continue
            name = c_ident(p.sym_name.data)
            value = dense_to_numpy(p.value)
            ctype = {np.dtype(np.int8): "int8_t", np.dtype(np.int32): "int32_t", np.dtype(np.float32): "float"}[
                value.dtype
            ]
            self.decls.append(
                f"static const {ctype} {name}[{value.size}] QTRAIN_WEIGHTS = {c_array(value.ravel().tolist())};"
            )
            info = ParamInfo(p, name)
            if p.is_trainable:
                n = math.prod(p.trainable_shape())
                storage = p.storage_type
                info.sram_ctype = "float" if storage == f32 else ctype
                info.sram = f"{name}_sram"
                self.decls.append(f"static {info.sram_ctype} {info.sram}[{n}] QTRAIN_TRAINABLE;")
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

    def bias_ptr(self, value: SSAValue | None) -> str:
        if value is None:
            return "NULL"
        info = self.param(value)
        return info.sram if info.sram is not None else info.flash

    def const_floats(self, prefix: str, values: Iterable[float]) -> str:
        name = self.fresh(prefix)
        self.decls.append(
            f"static const float {name}[] QTRAIN_WEIGHTS = {c_array([c_float(v) for v in values], per_line=8)};"
        )
        return name

    # -- ops ------------------------------------------------------------------------------------------

    def conv_params(self, op: Conv2DOp | Conv2DInputGradOp | Conv2DWeightGradOp, zx: int = 0, zy: int = 0,
                    clamp: tuple[int, int] = (-128, 127)) -> str:
        sh, sw = op.strides.get_values()
        pt, pl, _, _ = op.padding.get_values()
        groups = op.groups.value.data  # type: ignore[attr-defined]
        name = self.fresh("conv_params")
        self.decls.append(
            f"static const qtrain_conv_params_t {name} = {{{zx}, {zy}, {sh}, {sw}, {pt}, {pl}, {groups}, "
            f"{clamp[0]}, {clamp[1]}}};"
        )
        return f"&{name}"

    def dims_const(self, shape: tuple[int, ...]) -> str:
        name = self.fresh("dims")
        self.decls.append(f"static const qtrain_dims_t {name} = {dims(shape)};")
        return f"&{name}"

    def emit_op(self, op: Operation, body: list[str], entry: str) -> None:
        emit = body.append
        if isinstance(op, GetParamOp | ReshapeOp):
            return
        if isinstance(op, Conv2DOp):
            x, w, y = op.input.type, op.weight.type, op.output.type
            sx_scale = op.input_q.scale
            mult = numerics.conv2d_multiplier(sx_scale, op.weight_q.scale_array(), op.output_q.scale)
            cout = y.get_shape()[3]  # type: ignore[attr-defined]
            mult = np.broadcast_to(mult, (cout,))
            m = self.const_floats("multiplier", mult.tolist())
            params = self.conv_params(op, op.input_q.zp, op.output_q.zp, clamp_range(op.clamp))
            emit(f"    QTRAIN_CHECK(qtrain_conv2d_wrapper_s8(&qtrain_ctx, {params}, "
                 f"{self.dims_const(x.get_shape())}, {self.ptr(op.input)}, {self.dims_const(w.get_shape())}, "
                 f"{self.weight_struct(op.weight)}, {self.bias_ptr(op.bias)}, {m}, "
                 f"{self.dims_const(y.get_shape())}, {self.ptr(op.output)}, {self.opt_ptr(op.mask)}));")
            self.count_macs(entry, math.prod(y.get_shape()) * math.prod(w.get_shape()[1:]))
        elif isinstance(op, FusedPointwiseDepthwiseOp):
            self.emit_fused_pointwise_depthwise(op, body, entry)
        elif isinstance(op, AddOp):
            c = numerics.add_constants(op.lhs_q.scale, op.lhs_q.zp, op.rhs_q.scale, op.rhs_q.zp,
                                       op.output_q.scale, op.output_q.zp)
            lo, hi = clamp_range(op.clamp)
            n = math.prod(op.output.type.get_shape())  # type: ignore[attr-defined]
            lhs_m, rhs_m, offset = (float(v) for v in c)
            emit(f"    qtrain_add_s8({self.ptr(op.lhs)}, {self.ptr(op.rhs)}, {n}, {c_float(lhs_m)}, "
                 f"{c_float(rhs_m)}, {c_float(offset)}, {lo}, {hi}, {self.ptr(op.output)}, "
                 f"{self.opt_ptr(op.mask)});")
        elif isinstance(op, AvgPoolOp):
            kh, kw = op.kernel.get_values()
            sh, sw = op.strides.get_values()
            m = numerics.avgpool_multiplier(op.input_q.scale, op.output_q.scale, (kh, kw))
            emit(f"    QTRAIN_CHECK(qtrain_avgpool_s8({self.dims_const(op.input.type.get_shape())}, "  # type: ignore
                 f"{self.ptr(op.input)}, {kh}, {kw}, {sh}, {sw}, {op.input_q.zp}, {c_float(float(m))}, "
                 f"{op.output_q.zp}, {self.dims_const(op.output.type.get_shape())}, {self.ptr(op.output)}, "  # type: ignore
                 f"{self.opt_ptr(op.mask)}));")
        elif isinstance(op, QuantizeOp):
            n = math.prod(op.output.type.get_shape())  # type: ignore[attr-defined]
            emit(f"    qtrain_quantize_f32_s8({self.ptr(op.input)}, {n}, {c_float(op.output_q.scale)}, "
                 f"{op.output_q.zp}, {self.ptr(op.output)});")
        elif isinstance(op, DequantizeOp):
            n = math.prod(op.output.type.get_shape())  # type: ignore[attr-defined]
            emit(f"    qtrain_dequantize_s8_f32({self.ptr(op.input)}, {n}, {c_float(op.input_q.scale)}, "
                 f"{op.input_q.zp}, {self.ptr(op.output)});")
        elif isinstance(op, CrossEntropyOp):
            k = op.logits.type.get_shape()[-1]  # type: ignore[attr-defined]
            emit(f"    loss = qtrain_cross_entropy_f32({self.ptr(op.logits)}, {k}, label, NULL);")
        elif isinstance(op, CrossEntropyGradOp):
            k = op.logits.type.get_shape()[-1]  # type: ignore[attr-defined]
            emit(f"    qtrain_cross_entropy_grad_f32({self.ptr(op.logits)}, {k}, label, {self.ptr(op.result)});")
        elif isinstance(op, RequantGradOp):
            shape = op.grad.type.get_shape()  # type: ignore[attr-defined]
            mult = op.multiplier.get_values()
            m = self.const_floats("grad_multiplier", mult)
            emit(f"    qtrain_requant_grad_f32({self.ptr(op.grad)}, {self.opt_ptr(op.mask)}, {math.prod(shape)}, "
                 f"{shape[-1]}, {m}, {len(mult)}, {self.ptr(op.result)});")
        elif isinstance(op, Conv2DInputGradOp):
            params = self.conv_params(op)
            g, w, x = op.grad.type, op.weight.type, op.result.type
            emit(f"    QTRAIN_CHECK(qtrain_conv2d_input_grad_wrapper_f32(&qtrain_ctx, {params}, "
                 f"{self.dims_const(g.get_shape())}, {self.ptr(op.grad)}, {self.dims_const(w.get_shape())}, "
                 f"{self.weight_struct(op.weight)}, {self.dims_const(x.get_shape())}, {self.ptr(op.result)}));")
            self.count_macs(entry, math.prod(g.get_shape()) * math.prod(w.get_shape()[1:]))
        elif isinstance(op, Conv2DWeightGradOp):
            self.emit_weight_grad(op, body, entry)
        elif isinstance(op, BiasGradOp):
            shape = op.grad.type.get_shape()  # type: ignore[attr-defined]
            out = self.fused_target(op, shape[-1]) if FUSED_UPDATE in op.attributes else self.ptr(op.result)
            emit(f"    qtrain_bias_grad_f32({self.ptr(op.grad)}, {math.prod(shape[:-1])}, {shape[-1]}, {out});")
            if FUSED_UPDATE in op.attributes:
                self.emit_update(self.fused_update_of(op), out, body)
        elif isinstance(op, AvgPoolGradOp):
            kh, kw = op.kernel.get_values()
            sh, sw = op.strides.get_values()
            emit(f"    QTRAIN_CHECK(qtrain_avgpool_grad_f32({self.dims_const(op.grad.type.get_shape())}, "  # type: ignore
                 f"{self.ptr(op.grad)}, {kh}, {kw}, {sh}, {sw}, {self.dims_const(op.result.type.get_shape())}, "  # type: ignore
                 f"{self.ptr(op.result)}));")
        elif isinstance(op, GradAccumulateOp):
            n = math.prod(op.result.type.get_shape())  # type: ignore[attr-defined]
            emit(f"    qtrain_grad_accumulate_f32({self.ptr(op.lhs)}, {self.ptr(op.rhs)}, {n}, {self.ptr(op.result)});")
        elif isinstance(op, ChannelSliceOp):
            shape = op.input.type.get_shape()  # type: ignore[attr-defined]
            start, stop = op.bounds()
            kind = "f32" if op.input.type.element_type == f32 else "s8"  # type: ignore[attr-defined]
            emit(f"    qtrain_channel_slice_{kind}({self.ptr(op.input)}, {math.prod(shape[:-1])}, {shape[-1]}, "
                 f"{start}, {stop}, {self.ptr(op.result)});")
        elif isinstance(op, SGDUpdateOp):
            producer = op.grad.owner
            if isinstance(producer, Operation) and FUSED_UPDATE in producer.attributes:
                return  # emitted with its gradient
            self.emit_update(op, self.ptr(op.grad), body)
        else:
            raise EmitError(f"the C backend has no lowering for {op.name}")

    def frozen_weight(self, value: SSAValue, what: str) -> str:
        """The Flash array of a weight that does not train (the streaming kernel reads plain int8)."""
        info = self.param(value)
        if info.sram is not None:
            raise EmitError(f"qtrain.fused_pointwise_depthwise: its {what} @{info.name} is trainable; the fused "
                            "kernel reads frozen weights only (qtrain-fuse-streaming never fuses trained layers)")
        return info.flash

    def emit_fused_pointwise_depthwise(self, op: FusedPointwiseDepthwiseOp, body: list[str], entry: str) -> None:
        """One qtrain_fused_pointwise_depthwise_s8 call: the 1x1 conv streamed into the depthwise conv."""
        x, pw, dw, y = (v.type.get_shape() for v in (op.input, op.pw_weight, op.dw_weight, op.output))  # type: ignore
        c_mid = pw[0]
        pw_m = np.broadcast_to(numerics.conv2d_multiplier(op.input_q.scale, op.pw_weight_q.scale_array(),
                                                          op.mid_q.scale), (c_mid,))
        dw_m = np.broadcast_to(numerics.conv2d_multiplier(op.mid_q.scale, op.dw_weight_q.scale_array(),
                                                          op.output_q.scale), (c_mid,))
        pw_params = self.fresh("conv_params")
        lo, hi = clamp_range(op.pw_clamp)
        self.decls.append(f"static const qtrain_conv_params_t {pw_params} = {{{op.input_q.zp}, {op.mid_q.zp}, 1, 1, "
                          f"0, 0, 1, {lo}, {hi}}};")
        dw_params = self.fresh("conv_params")
        sh, sw = op.dw_strides.get_values()
        pt, pl, _, _ = op.dw_padding.get_values()
        lo, hi = clamp_range(op.dw_clamp)
        self.decls.append(f"static const qtrain_conv_params_t {dw_params} = {{{op.mid_q.zp}, {op.output_q.zp}, {sh}, "
                          f"{sw}, {pt}, {pl}, {c_mid}, {lo}, {hi}}};")
        body.append(
            f"    QTRAIN_CHECK(qtrain_fused_pointwise_depthwise_s8(&qtrain_ctx, &{pw_params}, {self.dims_const(x)}, "
            f"{self.ptr(op.input)}, {self.dims_const(pw)}, {self.frozen_weight(op.pw_weight, 'pw_weight')}, "
            f"{self.bias_ptr(op.pw_bias)}, {self.const_floats('multiplier', pw_m.tolist())}, &{dw_params}, "
            f"{self.dims_const(dw)}, {self.frozen_weight(op.dw_weight, 'dw_weight')}, {self.bias_ptr(op.dw_bias)}, "
            f"{self.const_floats('multiplier', dw_m.tolist())}, {self.dims_const(y)}, {self.ptr(op.output)}));"
        )
        self.count_macs(entry, math.prod(op.mid_shape()) * math.prod(pw[1:]) + math.prod(y) * math.prod(dw[1:]))

    def fused_update_of(self, op: Operation) -> SGDUpdateOp:
        users = [u.operation for u in op.results[0].uses]
        if len(users) != 1 or not isinstance(users[0], SGDUpdateOp):
            raise EmitError(f"{op.name} is marked {FUSED_UPDATE} but does not feed exactly one sgd_update")
        return users[0]

    def fused_target(self, op: Operation, floats: int) -> str:
        """Scratch space for a fused gradient computed before its update (bias, depthwise weights)."""
        self.scratch_bytes = max(self.scratch_bytes, 4 * floats)
        return "((float *)qtrain_scratch)"

    def emit_weight_grad(self, op: Conv2DWeightGradOp, body: list[str], entry: str) -> None:
        x, g, dw = op.input.type, op.grad.type, op.result.type
        zx = op.input_q.zp
        params = self.conv_params(op, zx)
        groups = op.groups.value.data  # type: ignore[attr-defined]
        start, _ = op.channel_range()
        depthwise = groups > 1
        fused = FUSED_UPDATE in op.attributes
        self.count_macs(entry, math.prod(g.get_shape()) * math.prod(dw.get_shape()[1:]))  # type: ignore[attr-defined]
        if fused and not depthwise:
            update = self.fused_update_of(op)
            info = self.params[update.param.root_reference.data]
            storage = "QTRAIN_STORAGE_F32" if info.sram_ctype == "float" else "QTRAIN_STORAGE_S8"
            scales = update.grad_scale.get_values()
            gs = self.const_floats("grad_scale", scales)
            body.append(
                f"    QTRAIN_CHECK(qtrain_conv2d_weight_grad_sgd_update({params}, {self.dims_const(x.get_shape())}, "  # type: ignore
                f"{self.ptr(op.input)}, {self.dims_const(g.get_shape())}, {self.ptr(op.grad)}, "  # type: ignore
                f"{self.dims_const(dw.get_shape())}, {c_float(update.lr.value.data)}, {gs}, {len(scales)}, "  # type: ignore
                f"{storage}, {info.sram}));"
            )
            return
        out = self.fused_target(op, math.prod(dw.get_shape())) if fused else self.ptr(op.result)  # type: ignore
        if depthwise:
            # The fused depthwise gradient lives at the start of scratch; its kernel's own scratch follows.
            ctx = "&qtrain_ctx_after_grad" if fused else "&qtrain_ctx"
            if fused:
                self.uses_ctx_after_grad = True
                n = (4 * math.prod(dw.get_shape()) + 3) // 4 * 4  # type: ignore[attr-defined]
                body.append(f"    qtrain_ctx_after_grad.buf = qtrain_scratch + {n};")
                body.append(f"    qtrain_ctx_after_grad.size = (int32_t)sizeof qtrain_scratch - {n};")
            body.append(
                f"    QTRAIN_CHECK(qtrain_depthwise_conv2d_weight_grad_f32({ctx}, {params}, "
                f"{self.dims_const(x.get_shape())}, {self.ptr(op.input)}, {self.dims_const(g.get_shape())}, "  # type: ignore
                f"{self.ptr(op.grad)}, {start}, {self.dims_const(dw.get_shape())}, {out}));"  # type: ignore
            )
        else:
            body.append(
                f"    QTRAIN_CHECK(qtrain_conv2d_weight_grad_f32({params}, {self.dims_const(x.get_shape())}, "  # type: ignore
                f"{self.ptr(op.input)}, {self.dims_const(g.get_shape())}, {self.ptr(op.grad)}, "  # type: ignore
                f"{self.dims_const(dw.get_shape())}, {out}));"  # type: ignore
            )
        if fused:
            self.emit_update(self.fused_update_of(op), out, body)

    def emit_update(self, op: SGDUpdateOp, grad: str, body: list[str]) -> None:
        info = self.params[op.param.root_reference.data]
        shape = info.op.trainable_shape()
        kind = {"float": "f32", "int8_t": "s8", "int32_t": "s32"}[info.sram_ctype]
        scales = op.grad_scale.get_values()
        gs = self.const_floats("grad_scale", scales)
        body.append(
            f"    qtrain_sgd_update_{kind}({info.sram}, {grad}, {shape[0]}, {math.prod(shape[1:])}, "
            f"{c_float(op.lr.value.data)}, {gs}, {len(scales)});"
        )

    def count_macs(self, entry: str, n: int) -> None:
        self.macs[entry] = self.macs.get(entry, 0) + n

    # -- functions -----------------------------------------------------------------------------------------

    def emit_function(self, function: func.FuncOp) -> list[str]:
        entry = function.sym_name.data
        body: list[str] = []
        image = function.body.block.args[0]
        body.append(f"    if (image != {self.ptr(image)}) {{")
        body.append(f"        memmove({self.ptr(image)}, image, {math.prod(image.type.get_shape())});")  # type: ignore
        body.append("    }")
        for op in function.body.block.ops:
            if isinstance(op, func.ReturnOp):
                break
            self.emit_op(op, body, entry)
        return body


def find_func(module: ModuleOp, name: str) -> func.FuncOp | None:
    return next((o for o in module.ops if isinstance(o, func.FuncOp) and o.sym_name.data == name), None)


def emit_model(module: ModuleOp, header_name: str = "model.h") -> tuple[str, str]:
    """The model's C source and header."""
    if MEMORY not in module.attributes:
        raise EmitError("the module has no memory plan; run qtrain-plan-memory before -t c")
    forward = find_func(module, FORWARD)
    if forward is None:
        raise EmitError(f"the module has no @{FORWARD}")
    train = find_func(module, TRAIN_STEP)
    em = Emitter(module)
    em.emit_params()
    infer_body = em.emit_function(forward)
    train_body = em.emit_function(train) if train is not None else None

    # Forward output: int8 [1, K] -> logits.
    ret = forward.body.block.last_op
    assert isinstance(ret, func.ReturnOp)
    out = ret.arguments[0]
    out_q = produced_quant(out)
    if out_q is None:
        raise EmitError(f"cannot tell the quantization of @{FORWARD}'s output")
    k = out.type.get_shape()[-1]  # type: ignore[attr-defined]
    infer_body.append(f"    qtrain_dequantize_s8_f32({em.ptr(out)}, {k}, {c_float(out_q.scale)}, {out_q.zp}, logits);")

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
        table.append(
            f'    {{"{i.name}", {i.sram}, {dtype_of[i.sram_ctype]}, {len(shape)}, '
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

    c_lines = [
        "/* Generated by qtrain (lowering/emit_c.py) from planned qtrain IR. Do not edit. */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "void *memmove(void *dst, const void *src, size_t n); /* libc on the host, runtime_string.c on targets */",
        '#include "qtrain_kernels.h"',
        '#include "qtrain_runtime.h"',
        f'#include "{header_name}"',
        "",
        "/* A kernel given arguments the op verifiers allow never fails; if one does, stop loudly. */",
        "#define QTRAIN_CHECK(call) do { if ((call) != QTRAIN_STATUS_OK) { qtrain_fail(__LINE__); } } while (0)",
        "",
        f"static uint8_t qtrain_arena[{max(arena, 4)}] QTRAIN_ARENA;",
        f"static uint8_t qtrain_scratch[{scratch}] QTRAIN_SCRATCH;",
        "static const qtrain_context_t qtrain_ctx = {qtrain_scratch, (int32_t)sizeof qtrain_scratch};",
        *(["static qtrain_context_t qtrain_ctx_after_grad;"] if em.uses_ctx_after_grad else []),
        f"static float qtrain_logits[{k}];",
        "",
        *em.decls,
        "",
        "static _Noreturn void qtrain_fail(int line) {",
        '    qtrain_puts("qtrain: a kernel rejected its arguments (generated code line ");',
        "    qtrain_put_u32((uint32_t)line);",
        '    qtrain_puts(")\\n");',
        "    qtrain_exit(QTRAIN_EXIT_FAILURE);",
        "}",
        "",
        "void qtrain_init(void) {",
        *init,
        "}",
        "",
        "void qtrain_infer(const int8_t *image, float *logits) {",
        *infer_body,
        "}",
        "",
    ]
    if train_body is not None:
        c_lines += [
            "float qtrain_train_step(const int8_t *image, int label) {",
            "    float loss = 0.0f;",
            *train_body,
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
    ]
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


@dataclass(frozen=True)
class CTarget(Target):
    """`qtrain-opt -t c`: the model's C source (the header goes to `header`'s path when given)."""

    name = "c"
    header: str = "model.h"

    def emit(self, ctx: Context, module: ModuleOp, output: IO[str]) -> None:
        source, _ = emit_model(module, self.header)
        output.write(source)
