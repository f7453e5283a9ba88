"""`qtrain-verify-quant-chain`: every int8 value is read with the quantization it was written with."""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain.interfaces import QuantizedOp, produced_quant


@dataclass(frozen=True)
class VerifyQuantChainPass(ModulePass):
    """Fails when a consumer's input quantization differs from its producer's output quantization."""

    name = "qtrain-verify-quant-chain"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        for consumer in op.walk():
            if not isinstance(consumer, QuantizedOp):
                continue
            for what, value, expected in consumer.operand_quants():
                actual = produced_quant(value)
                if actual is not None and actual != expected:
                    raise PassFailedException(
                        f"{consumer.name}: {what} {expected} differs from the producer's output_q {actual} "
                        f"(from {value.owner.name})"
                    )
