"""`qtrain-sparse-update`: keeps only the updates a sparse-update scheme names.

Runs after `qtrain-autodiff` (which updates every parameter). For each `qtrain.sgd_update` in
@train_step it either keeps it, drops it (the parameter becomes frozen: no SRAM copy), or narrows a
weight update to the first ceil(r * C_in) input channels: the forward pass then saves only that
`qtrain.channel_slice` of the layer's input, the weight gradient reads the slice, and the parameter
gets `channels [0, k]`. What the dropped updates leave dead is removed by `qtrain-dead-gradient-elim`.
Schemes are described in `qtrain.transforms.schemes`. On the command line the scheme is the string
option `scheme`; in Python, `SparseUpdatePass.from_scheme(UpdateScheme)` takes a scheme object directly
(a per-layer scheme built without a schemes.json file, e.g. a scheme-search candidate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, TensorType, UnitAttr, f32
from xdsl.ir import Operation
from xdsl.passes import ModulePass
from xdsl.rewriter import Rewriter
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import ChannelSliceOp, Conv2DWeightGradOp, ParamOp, SGDUpdateOp
from qtrain.dialects.qtrain.contract import TRAIN_STEP, find_func, param_ops
from qtrain.dialects.qtrain.ops import i64_array
from qtrain.transforms.schemes import SchemeError, TrainableTensor, UpdateScheme, network_layers, parse_scheme


def freeze(param: ParamOp) -> None:
    """Marks a parameter as frozen: no SRAM copy, no update."""
    param.trainable = None
    param.storage = None
    param.channels = None
    param.depthwise = None


@dataclass(frozen=True)
class SparseUpdatePass(ModulePass):
    """Keeps the updates of a sparse-update scheme (full, bias-only, last-k=K, FILE.json#MODEL/BUDGET)."""

    name = "qtrain-sparse-update"

    scheme: str = "full"
    """full | bias-only | last-k=K | FILE.json#MODEL/BUDGET (quote values containing '.')"""
    k: int | None = None
    """layer count for scheme=last-k"""
    update_scheme: UpdateScheme | None = field(default=None, init=False, repr=False)
    """the scheme object given to `from_scheme`, used instead of parsing `scheme`; not a pass option
    (init=False keeps it out of the pass spec)"""

    @classmethod
    def from_scheme(cls, scheme: UpdateScheme) -> SparseUpdatePass:
        """The pass for a scheme object. Its `scheme` option shows `scheme.spec`, which for a scheme built by
        `UpdateScheme.per_layer` is a description, not a command-line spec."""
        sparse_update = cls(scheme=scheme.spec)
        object.__setattr__(sparse_update, "update_scheme", scheme)  # frozen dataclass, field not in __init__
        return sparse_update

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        train = find_func(op, TRAIN_STEP)
        if train is None:
            raise PassFailedException(f"{self.name}: no func.func @{TRAIN_STEP}; run qtrain-autodiff first")
        try:
            scheme = self.update_scheme if self.update_scheme is not None else parse_scheme(self.scheme, self.k)
            chosen = scheme.resolve(network_layers(train))
        except SchemeError as e:
            raise PassFailedException(f"{self.name}: {e}") from None
        params = param_ops(op)
        updates = [u for u in train.walk() if isinstance(u, SGDUpdateOp)]
        updated = {u.param.root_reference.data for u in updates}
        missing = sorted(set(chosen) - updated)
        if missing:
            raise PassFailedException(
                f"{self.name}: the scheme trains {', '.join(missing)} but @{TRAIN_STEP} has no update for it"
            )
        for update in updates:
            name = update.param.root_reference.data
            tensor = chosen.get(name)
            if tensor is None:
                Rewriter.erase_op(update)
                freeze(params[name])
            elif tensor.channels is not None:
                self._narrow(update, params[name], tensor)

    def _narrow(self, update: SGDUpdateOp, param: ParamOp, tensor: TrainableTensor) -> None:
        """Trains only input channels [start, stop) of a weight; forward saves only that input slice."""
        assert tensor.channels is not None
        start, stop = tensor.channels
        grad_op = update.grad.owner
        if not isinstance(grad_op, Conv2DWeightGradOp) or grad_op.channels is not None:
            raise PassFailedException(
                f"{self.name}: the update of @{tensor.name} is not fed by one whole-tensor conv2d_weight_grad"
            )
        param.channels = i64_array([start, stop])
        groups = grad_op.groups.value.data  # type: ignore[attr-defined]
        param.depthwise = UnitAttr() if groups > 1 else None
        # The slice is taken right where the full input is produced, so the full tensor need not be
        # kept alive for backward; reordering may move it.
        source = grad_op.input
        sliced = ChannelSliceOp(source, start, stop)
        sliced.result.name_hint = f"saved_{tensor.name.replace('.', '_')}"
        anchor: Operation | None = source.owner if isinstance(source.owner, Operation) else None
        block = update.parent_block()
        assert block is not None
        if anchor is not None and anchor.parent_block() is block:
            block.insert_op_after(sliced, anchor)
        else:
            block.insert_op_before(sliced, block.first_op)  # type: ignore[arg-type]
        w_shape = list(param.tensor_type.get_shape())
        w_shape[param.channel_axis] = stop - start
        new_grad = Conv2DWeightGradOp(
            sliced.result,
            grad_op.grad,
            TensorType(f32, w_shape),
            strides=grad_op.strides.get_values(),
            padding=grad_op.padding.get_values(),
            groups=grad_op.groups.value.data,  # type: ignore[attr-defined]
            input_q=grad_op.input_q,
            channels=[start, stop],
        )
        new_grad.result.name_hint = grad_op.result.name_hint
        scales = update.grad_scale.get_values()
        if param.channel_axis == 0 and len(scales) > 1:
            scales = scales[start:stop]
        new_update = update.with_gradient(new_grad.result, scales)
        Rewriter.replace_op(grad_op, new_grad, [new_grad.result])
        Rewriter.replace_op(update, new_update, [])
        # The whole-tensor gradient's SSA value is gone; a stale type on a remaining user would be a bug.
        assert new_update.grad.type == TensorType(f32, param.trainable_shape())
