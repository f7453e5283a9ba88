"""The qtrain dialect: quantized CNN ops, their gradients, parameter updates and memory planning.

Forward ops and parameters live in `ops.py`, ops that passes fuse from them in `fused_ops.py`, gradient
and update ops in `grad_ops.py`, attributes in `attrs.py`; `QTRAIN_OPS` below lists them all.
"""

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

QTRAIN_OPS = [*FORWARD_OPS, *FUSED_OPS, *GRAD_OPS]
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
