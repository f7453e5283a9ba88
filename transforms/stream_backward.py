"""`qtrain-stream-backward{mode=auto|on|off}`: the backward through a frozen expansion + depthwise pair, streamed.

In an inverted-residual block the depthwise conv's input gradient has the expanded resolution (mbv2-w0.35's
first block: 64x64x48, 384 KB even as bf16): bias-only and deep schemes carry it through every block down
to the first trained layer. When neither conv's weight trains, `qtrain.streamed_expansion_input_grad`
(dialects/qtrain/streamed_grad.py) computes the block input's gradient from the depthwise g_acc one
expanded row at a time, so that tensor never exists in the arena.

In @train_step, the chain

    %g_mid = qtrain.conv2d_input_grad %g_acc_dw, %dw_w     (depthwise, multiplier 1)
    %g_acc = qtrain.requant_grad %g_mid [mask %m]          (g_mid's only reader)
    [%db   = qtrain.bias_grad %g_acc]
    %gx    = qtrain.conv2d_input_grad %g_acc, %pw_w        (1x1, stride 1, unpadded, groups 1)

where g_acc has no other reader (no weight gradient: neither weight trains, and both are `qtrain.get_param`
reads of parameters that do not train) becomes one op at the place of the first of bias_grad / the 1x1
input gradient. `mode=on` streams every such chain; `off` none; `auto` (the default) streams them all when
that lowers @train_step's peak of live bytes + kernel scratch in the current schedule (what the planner
packs; the pass runs before `qtrain-reorder`, so this is the naive schedule's figure), else none.
Run after `qtrain-dead-gradient-elim` (and `qtrain-narrow-gradients`), before `qtrain-reorder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import InsertPoint, Rewriter
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import BiasGradOp, Conv2DInputGradOp, ParamOp, RequantGradOp
from qtrain.dialects.qtrain.contract import TRAIN_STEP, find_func, param_name, param_ops
from qtrain.dialects.qtrain.ops import shape_of
from qtrain.dialects.qtrain.streamed_grad import StreamedExpansionInputGradOp
from qtrain.transforms.liveness import analyze
from qtrain.transforms.target import DEFAULT_TARGET, get_target

STREAM_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Chain:
    depthwise: Conv2DInputGradOp
    requant: RequantGradOp
    bias: BiasGradOp | None
    pointwise: Conv2DInputGradOp


def _frozen(value: SSAValue, params: dict[str, ParamOp]) -> bool:
    name = param_name(value)
    p = params.get(name) if name is not None else None
    return p is not None and not p.is_trainable


def _is_depthwise(op: Conv2DInputGradOp) -> bool:
    c = shape_of(op.result)[3]
    cout, _, _, cin_g = shape_of(op.weight)
    return op.groups.value.data == c == cout and cin_g == 1


def _is_pointwise(op: Conv2DInputGradOp) -> bool:
    strides, padding, groups = op.conv_geometry()
    return shape_of(op.weight)[1:3] == (1, 1) and strides == (1, 1) and padding == (0, 0, 0, 0) and groups == 1


def chain_from(dw: Conv2DInputGradOp, params: dict[str, ParamOp]) -> Chain | None:
    """The streamable chain starting at depthwise input gradient `dw` (see the module docstring), or None."""
    if not _is_depthwise(dw) or not _frozen(dw.weight, params):
        return None
    uses = list(dw.result.uses)
    if len(uses) != 1 or not isinstance(rq := uses[0].operation, RequantGradOp) or uses[0].index != 0:
        return None
    bias: BiasGradOp | None = None
    pointwise: Conv2DInputGradOp | None = None
    for use in rq.result.uses:
        reader = use.operation
        if isinstance(reader, BiasGradOp) and bias is None:
            bias = reader
        elif isinstance(reader, Conv2DInputGradOp) and use.index == 0 and pointwise is None and _is_pointwise(reader):
            pointwise = reader
        else:
            return None
    if pointwise is None or not _frozen(pointwise.weight, params):
        return None
    if shape_of(pointwise.weight)[0] != shape_of(dw.result)[3]:
        return None
    return Chain(dw, rq, bias, pointwise)


def chains(function: func.FuncOp, params: dict[str, ParamOp]) -> list[Chain]:
    return [c for op in function.body.block.ops
            if isinstance(op, Conv2DInputGradOp) and (c := chain_from(op, params)) is not None]


def stream(chain: Chain) -> StreamedExpansionInputGradOp:
    """Replaces the chain by one `qtrain.streamed_expansion_input_grad`."""
    dw, rq, bias, pw = chain.depthwise, chain.requant, chain.bias, chain.pointwise
    strides, padding, _ = dw.conv_geometry()
    op = StreamedExpansionInputGradOp(dw.grad, dw.weight, rq.mask, pw.weight, pw.result.type, dw_strides=strides,
                                      dw_padding=padding, multiplier=rq.multiplier.get_values(),
                                      bias_grad=bias is not None)
    op.result.name_hint = pw.result.name_hint
    block = pw.parent_block()
    assert block is not None
    order = {o: i for i, o in enumerate(block.ops)}
    first = min((o for o in (bias, pw) if o is not None), key=lambda o: order[o])
    Rewriter.insert_op(op, InsertPoint.before(first))
    pw.result.replace_all_uses_with(op.result)
    Rewriter.erase_op(pw)
    if bias is not None:
        assert op.bias_grad is not None
        op.bias_grad.name_hint = bias.result.name_hint
        bias.result.replace_all_uses_with(op.bias_grad)
        Rewriter.erase_op(bias)
    Rewriter.erase_op(rq)
    Rewriter.erase_op(dw)
    return op


def stream_function(function: func.FuncOp, params: dict[str, ParamOp]) -> int:
    found = chains(function, params)
    for chain in found:
        stream(chain)
    return len(found)


def _peak_bytes(module: ModuleOp, target: str) -> int:
    """@train_step's live-bytes peak in its current schedule (in-place pairs once, before packing: the
    planner's lower bound) plus the largest kernel scratch, as the target sizes both."""
    description = get_target(target)
    train = find_func(module, TRAIN_STEP)
    assert train is not None
    liveness = analyze(train.body.block, target=description)
    params = param_ops(module)
    scratch = max((description.scratch_bytes(o, params) for o in liveness.ops), default=0)
    return liveness.peak()[0] + scratch


@dataclass(frozen=True)
class StreamBackwardPass(ModulePass):
    """Streams the backward through frozen expansion + depthwise pairs (the expanded gradient leaves the arena)."""

    name = "qtrain-stream-backward"

    mode: Literal["auto", "on", "off"] = "auto"
    """on: every eligible block; off: none; auto: all of them when that lowers @train_step's peak"""
    target: str = DEFAULT_TARGET
    """the target description auto plans with"""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.mode not in STREAM_MODES:
            raise PassFailedException(f"{self.name}: mode must be one of {', '.join(STREAM_MODES)}, got {self.mode!r}")
        if self.mode == "off":
            return
        train = find_func(op, TRAIN_STEP)
        if train is None:
            raise PassFailedException(f"{self.name}: no func.func @{TRAIN_STEP}; run qtrain-autodiff first")
        params = param_ops(op)
        if not chains(train, params):
            return
        if self.mode == "auto":
            streamed = op.clone()
            streamed_train = find_func(streamed, TRAIN_STEP)
            assert streamed_train is not None
            stream_function(streamed_train, param_ops(streamed))
            if _peak_bytes(streamed, self.target) >= _peak_bytes(op, self.target):
                return
        stream_function(train, params)
