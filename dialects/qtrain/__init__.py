"""The qtrain dialect: quantized CNN ops, their gradients, parameter updates and memory planning.

Forward ops and parameters live in `ops.py`, ops that passes fuse from them in `fused_ops.py`, gradient
and update ops in `grad_ops.py`, attributes in `attrs.py`, the op interfaces in `interfaces.py` and the
IR contract (entry points, attribute names) in `contract.py`. Any other module of this package that
defines `OPS` (a list of op classes) adds its ops: a new op family is one module (its classes, their
verifiers, gradient, golden-model numerics and kernel calls), picked up here without an edit.
`QTRAIN_OPS` lists them all.
"""

import importlib
import pkgutil

from xdsl.ir import Dialect

from qtrain.dialects.qtrain.attrs import F32ArrayAttr, QuantParamsAttr
from qtrain.dialects.qtrain.fused_ops import FUSED_OPS, FusedPointwiseDepthwiseOp
from qtrain.dialects.qtrain.grad_ops import (
    GRAD_OPS,
    AvgPoolGradOp,
    BiasGradOp,
    ChannelSliceOp,
    Conv2DInputGradOp,
    Conv2DWeightGradOp,
    CrossEntropyGradOp,
    GradAccumulateOp,
    GradConvertOp,
    RequantGradOp,
    SGDUpdateOp,
)
from qtrain.dialects.qtrain.ops import (
    FORWARD_OPS,
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    CrossEntropyOp,
    DequantizeOp,
    GetParamOp,
    ParamOp,
    QuantizeOp,
    ReshapeOp,
)


def _family_ops() -> list[type]:
    """The `OPS` of every other module of this package, by module name (deterministic order)."""
    core = {"ops", "fused_ops", "grad_ops"}
    found: list[type] = []
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in core):
        found += getattr(importlib.import_module(f"{__name__}.{module}"), "OPS", [])
    return found


QTRAIN_OPS = [*FORWARD_OPS, *FUSED_OPS, *GRAD_OPS, *_family_ops()]
QTRAIN_ATTRS = [QuantParamsAttr, F32ArrayAttr]

Qtrain = Dialect("qtrain", QTRAIN_OPS, QTRAIN_ATTRS)

__all__ = [
    "AddOp",
    "AvgPoolGradOp",
    "AvgPoolOp",
    "BiasGradOp",
    "ChannelSliceOp",
    "Conv2DInputGradOp",
    "Conv2DWeightGradOp",
    "F32ArrayAttr",
    "FusedPointwiseDepthwiseOp",
    "CrossEntropyGradOp",
    "GradAccumulateOp",
    "GradConvertOp",
    "RequantGradOp",
    "SGDUpdateOp",
    "Conv2DOp",
    "CrossEntropyOp",
    "DequantizeOp",
    "GetParamOp",
    "ParamOp",
    "QTRAIN_ATTRS",
    "QTRAIN_OPS",
    "QuantParamsAttr",
    "QuantizeOp",
    "Qtrain",
    "ReshapeOp",
]
