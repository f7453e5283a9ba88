"""`qtrain-fuse-streaming`: a 1x1 expansion conv and the depthwise conv reading it become one streamed op.

In an inverted-residual block at high resolution the expanded tensor is the largest in the network
(mbv2-w0.35: 64x64x8 -> 64x64x48, 192 KB, read only by a 3x3/2 depthwise conv). When nothing else
needs it, it never has to exist whole: `qtrain.fused_pointwise_depthwise` computes it a few rows at a
time into a ring of KH rows in kernel scratch and runs the depthwise conv on the ring (MCUNetV2-style
streaming). The result is bit for bit the same; the intermediate tensor leaves the arena.

In @forward and @train_step, a `qtrain.conv2d` pw is fused with the conv dw that reads it when

- pw is pointwise: 1x1, stride 1, no padding, groups 1;
- pw's output has exactly one use, dw's input: no gradient op reads it (a depthwise weight gradient
  would), no `qtrain.channel_slice` of it is saved, it is not returned;
- dw is depthwise with channel multiplier 1 (groups = C = C_out, weight [C, KH, KW, 1]) and reads the
  intermediate with pw's output quantization, and the target's fused kernel takes the pair (on armv7em
  KH, KW <= QTRAIN_MAX_DEPTHWISE_KERNEL of qtrain_kernels.h, as its depthwise kernel);
- neither conv has a mask result that is used (a mask is kept only where a gradient flows, which is
  exactly where the layers must stay separate);
- all four weights and biases are `qtrain.get_param` reads of parameters that are not `trainable`;
- it pays: the intermediate tensor is larger than the fused kernel's scratch (on armv7em its ring of
  KH rows of W x C_mid int8), as the target description sizes it.

The fused op takes dw's place in the schedule. Run it after `qtrain-dead-gradient-elim` (which drops
the masks and saved activations that no update needs, so the last two conditions can hold) and
before `qtrain-reorder` and `qtrain-plan-memory`; `qtrain-sparse-update` must have run already (the
layer numbering of a scheme counts the two convs separately).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter

from qtrain.dialects.qtrain import Conv2DOp, FusedPointwiseDepthwiseOp, ParamOp
from qtrain.dialects.qtrain.contract import entry_points, param_name, param_ops
from qtrain.dialects.qtrain.ops import shape_of as _shape
from qtrain.transforms.liveness import tensor_bytes
from qtrain.transforms.target import DEFAULT_TARGET, TargetDescription, get_target


def _frozen(value: SSAValue | None, params: dict[str, ParamOp]) -> bool:
    """A weight/bias operand that is a read of a parameter that does not train (None: no operand)."""
    if value is None:
        return True
    name = param_name(value)
    p = params.get(name) if name is not None else None
    return p is not None and not p.is_trainable


def _mask_unused(op: Conv2DOp) -> bool:
    return op.mask is None or not op.mask.uses


def is_pointwise(op: Conv2DOp) -> bool:
    """1x1, stride 1, no padding, groups 1."""
    return (_shape(op.weight)[1:3] == (1, 1) and tuple(op.strides.get_values()) == (1, 1)
            and tuple(op.padding.get_values()) == (0, 0, 0, 0) and op.groups.value.data == 1)


def is_depthwise_multiplier_1(op: Conv2DOp) -> bool:
    """Depthwise with channel multiplier 1: groups = C = C_out, weight [C, KH, KW, 1]."""
    c = _shape(op.input)[3]
    cout, _, _, cin_g = _shape(op.weight)
    return op.groups.value.data == c and cout == c and cin_g == 1


def fusion_partner(pw: Conv2DOp, params: dict[str, ParamOp], target: TargetDescription) -> Conv2DOp | None:
    """The depthwise conv `pw` may be fused with (see the module docstring), or None."""
    if not is_pointwise(pw) or not _mask_unused(pw):
        return None
    uses = list(pw.output.uses)
    if len(uses) != 1:
        return None
    dw = uses[0].operation
    if not isinstance(dw, Conv2DOp) or uses[0].index != 0 or not is_depthwise_multiplier_1(dw):
        return None
    if not _mask_unused(dw) or dw.input_q != pw.output_q:
        return None
    if not all(_frozen(v, params) for v in (pw.weight, pw.bias, dw.weight, dw.bias)):
        return None
    candidate = fused_op(pw, dw)
    try:
        if not target.supports(candidate):
            return None
        if tensor_bytes(pw.output.type) <= target.scratch_bytes(candidate, params):
            return None  # the ring would be as large as the tensor it replaces
    finally:
        candidate.erase()  # a question only: it must not stay a user of the pair's operands
    return dw


def fused_op(pw: Conv2DOp, dw: Conv2DOp) -> FusedPointwiseDepthwiseOp:
    """The `qtrain.fused_pointwise_depthwise` standing for the pair (detached)."""
    return FusedPointwiseDepthwiseOp(
        pw.input, pw.weight, pw.bias, dw.weight, dw.bias, dw.output.type,
        input_q=pw.input_q, pw_weight_q=pw.weight_q, mid_q=pw.output_q, dw_weight_q=dw.weight_q,
        output_q=dw.output_q, dw_strides=dw.strides.get_values(), dw_padding=dw.padding.get_values(),
        dw_groups=dw.groups.value.data,
        pw_clamp=pw.clamp.get_values() if pw.clamp is not None else None,
        dw_clamp=dw.clamp.get_values() if dw.clamp is not None else None,
        pw_strides=pw.strides.get_values(), pw_padding=pw.padding.get_values(), pw_groups=pw.groups.value.data,
    )


def fuse(pw: Conv2DOp, dw: Conv2DOp) -> FusedPointwiseDepthwiseOp:
    """Replaces the pair by one `qtrain.fused_pointwise_depthwise` at dw's place in the schedule."""
    fused = fused_op(pw, dw)
    fused.output.name_hint = dw.output.name_hint
    Rewriter.replace_op(dw, fused, [fused.output, None] if dw.mask is not None else [fused.output])
    Rewriter.erase_op(pw)
    return fused


def fuse_function(function: func.FuncOp, params: dict[str, ParamOp], target: TargetDescription | None = None) -> int:
    """Fuses every eligible pair of one function; returns how many."""
    target = target or get_target()
    count = 0
    for op in list(function.body.block.ops):
        if (isinstance(op, Conv2DOp) and op.parent is not None
                and (dw := fusion_partner(op, params, target)) is not None):
            fuse(op, dw)
            count += 1
    return count


@dataclass(frozen=True)
class FuseStreamingPass(ModulePass):
    """Streams a frozen 1x1 conv into the depthwise conv that alone reads it (the intermediate leaves the arena)."""

    name = "qtrain-fuse-streaming"

    target: str = DEFAULT_TARGET
    """the target description that tells which pairs its fused kernel takes, and its scratch"""

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        target = get_target(self.target)
        params = param_ops(op)
        for f in entry_points(op):
            fuse_function(f, params, target)


def fused_ops(function: Operation) -> list[FusedPointwiseDepthwiseOp]:
    """The fused ops of a function (for tests and reports)."""
    return [o for o in function.walk() if isinstance(o, FusedPointwiseDepthwiseOp)]
