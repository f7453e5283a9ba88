"""The qtrain dialect: quantized CNN ops, their gradients, parameter updates and memory planning.

Forward ops and parameters live in `ops.py`, attributes in `attrs.py`. Gradient, update and memory
ops are added by later modules in this package and listed in `QTRAIN_OPS` below.
"""

from xdsl.ir import Dialect

from qtrain.dialects.qtrain.attrs import QuantParamsAttr
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

QTRAIN_OPS = [*FORWARD_OPS]
QTRAIN_ATTRS = [QuantParamsAttr]

Qtrain = Dialect("qtrain", QTRAIN_OPS, QTRAIN_ATTRS)

__all__ = [
    "AddOp",
    "AvgPoolOp",
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
