"""The IR contract of qtrain: the names every pass, lowering and tool agrees on, and small IR utilities.

Entry points: a model module holds `func.func @forward(image) -> output` (what the frontends build)
and, after `qtrain-autodiff`, `func.func @train_step(image, label) -> loss`. The C lowering turns
them into `qtrain_infer` and `qtrain_train_step`.

Discardable attributes the frontends put on `@forward`: `qtrain.input_q` (the `#qtrain.quant` a real
image is quantized with into the int8 input) and `qtrain.output_q` (how the int8 result dequantizes
into logits; ONNX imports).

Discardable attributes the passes attach (dialect-prefixed, as MLIR does):

- `qtrain.fused_update` (unit, on a weight or bias gradient op): `qtrain-reorder` scheduled it right
  before its `qtrain.sgd_update`; the lowering computes the gradient straight into the update and the
  planner gives it no arena buffer;
- `qtrain.offsets` (i64 array, on an op): arena offset of each result, -1 for a result without one;
- `qtrain.arg_offsets` (i64 array, on an entry point): arena offsets of its arguments (the image);
- `qtrain.arena_bytes` (i64, on an entry point): its arena size;
- `qtrain.memory` (dictionary, on the module): the planner's figures (DESIGN.md "Memory accounting");
- `qtrain.lite_residual` (i64, on every op of a TinyTL lite residual module `qtrain-lite-residual`
  inserted): the index of the block the module belongs to. Schemes leave these ops out of the layer
  numbering of schemes.json and train them as a module (`tinytl-l`, `tinytl-l+b`);
- `qtrain.lite_residual_final` (unit, on a module's last `qtrain.group_norm`): its beta duplicates the
  main branch's bias, so `tinytl-l+b` keeps it frozen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

if TYPE_CHECKING:
    from qtrain.dialects.qtrain.ops import DequantizeOp, ParamOp

FORWARD = "forward"
TRAIN_STEP = "train_step"
ENTRY_POINTS = (FORWARD, TRAIN_STEP)

INPUT_Q = "qtrain.input_q"
OUTPUT_Q = "qtrain.output_q"
FUSED_UPDATE = "qtrain.fused_update"
OFFSETS = "qtrain.offsets"
ARG_OFFSETS = "qtrain.arg_offsets"
ARENA_BYTES = "qtrain.arena_bytes"
SCRATCH_GAP = "qtrain.scratch_gap"
"""[offset, bytes] of the largest arena gap no buffer uses while the op runs, on ops with kernel scratch
when it is larger than the shared scratch area: their kernels may use it instead (a kernel's results do
not depend on how much scratch beyond its minimum it is given; more lets it take a faster schedule)."""
MEMORY = "qtrain.memory"
LITE_RESIDUAL = "qtrain.lite_residual"
LITE_RESIDUAL_FINAL = "qtrain.lite_residual_final"
SOURCE = "qtrain.source"
"""On a conv's weight `qtrain.param`: the ONNX node it was imported from (`Conv 'name'`), for diagnostics."""


def find_func(module: ModuleOp, name: str) -> func.FuncOp | None:
    """The module's `func.func @name`, or None."""
    return next((o for o in module.ops if isinstance(o, func.FuncOp) and o.sym_name.data == name), None)


def entry_points(module: ModuleOp) -> list[func.FuncOp]:
    """@forward and @train_step, those the module has, in that order."""
    return [f for name in ENTRY_POINTS if (f := find_func(module, name)) is not None]


def param_ops(module: ModuleOp) -> dict[str, ParamOp]:
    """The module's `qtrain.param` ops by symbol name, in module order."""
    from qtrain.dialects.qtrain.ops import ParamOp

    return {o.sym_name.data: o for o in module.ops if isinstance(o, ParamOp)}


def trainable_params(module: ModuleOp) -> dict[str, ParamOp]:
    """The module's trainable `qtrain.param` ops by symbol name, in module order."""
    return {name: p for name, p in param_ops(module).items() if p.is_trainable}


def param_name(value: SSAValue | None) -> str | None:
    """The parameter a value reads (the symbol behind its `qtrain.get_param`), or None."""
    from qtrain.dialects.qtrain.ops import GetParamOp

    owner = value.owner if value is not None else None
    return owner.param.root_reference.data if isinstance(owner, GetParamOp) else None


def dequantize_of(value: SSAValue) -> DequantizeOp | None:
    """The `qtrain.dequantize` a float value comes from (looking through views), or None: how a forward
    entry returning float logits names its raw int8 output (the dequantize's input)."""
    from qtrain.dialects.qtrain.interfaces import ViewOfOperand
    from qtrain.dialects.qtrain.ops import DequantizeOp

    owner = value.owner
    while isinstance(owner, Operation) and owner.has_trait(ViewOfOperand):
        owner = owner.operands[0].owner
    return owner if isinstance(owner, DequantizeOp) else None


def lite_residual_block(op: Operation) -> int | None:
    """The block index of the lite residual module `op` belongs to (`qtrain.lite_residual`), or None."""
    from xdsl.dialects.builtin import IntegerAttr

    attr = op.attributes.get(LITE_RESIDUAL)
    return attr.value.data if isinstance(attr, IntegerAttr) else None
