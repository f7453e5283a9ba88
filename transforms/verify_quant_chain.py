"""`qtrain-verify-quant-chain`: every int8 value is read with the quantization it was written with."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    DequantizeOp,
    FusedPointwiseDepthwiseOp,
    QuantParamsAttr,
)
from qtrain.dialects.qtrain.ops import produced_quant


def consumed_quants(op: Operation) -> list[tuple[str, SSAValue, QuantParamsAttr]]:
    if isinstance(op, Conv2DOp | AvgPoolOp | DequantizeOp | FusedPointwiseDepthwiseOp):
        return [("input_q", op.input, op.input_q)]
    if isinstance(op, AddOp):
        return [("lhs_q", op.lhs, op.lhs_q), ("rhs_q", op.rhs, op.rhs_q)]
    return []


@dataclass(frozen=True)
class VerifyQuantChainPass(ModulePass):
    """Fails when a consumer's input quantization differs from its producer's output quantization."""

    name = "qtrain-verify-quant-chain"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for consumer in op.walk():
            for what, value, expected in consumed_quants(consumer):
                actual = produced_quant(value)
                if actual is not None and actual != expected:
                    raise PassFailedException(
                        f"{consumer.name}: {what} {expected} differs from the producer's output_q {actual} "
                        f"(from {value.owner.name})"
                    )
