"""The ARMv7E-M target description (`target=armv7em`): the planner's questions answered from the kernel
library, by reading each op's kernel calls (`KernelCallOp.kernel_calls`) against the kernel registry."""

from __future__ import annotations

from collections.abc import Mapping

from xdsl.dialects.builtin import f32
from xdsl.ir import Operation, SSAValue

from qtrain.dialects.qtrain import ParamOp
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.contract import param_name
from qtrain.dialects.qtrain.interfaces import KernelCallOp
from qtrain.targets.armv7em.kernels.registry import KERNELS
from qtrain.transforms.target import TargetDescription

WORD = 4
"""Scratch sub-buffers and in-place offsets are word aligned (the kernels refuse anything else)."""


def _aligned(n: int) -> int:
    return (n + WORD - 1) // WORD * WORD


def _calls(op: Operation) -> tuple[kc.KernelCall, ...]:
    return tuple(op.kernel_calls()) if isinstance(op, KernelCallOp) else ()


class ArmV7EM(TargetDescription):
    """Cortex-M4 / M7 (and M33 with DSP): the kernels of targets/armv7em/kernels."""

    name = "armv7em"

    def scratch_bytes(self, op: Operation, params: Mapping[str, ParamOp]) -> int:
        """The largest need among the op's calls: a fused gradient waiting at the start of scratch, or
        a kernel's own scratch after the offset its context starts at."""

        def weights(value: SSAValue) -> tuple[int | None, bool]:
            name = param_name(value)
            p = params.get(name) if name is not None else None
            if p is None or not p.is_trainable:
                return None, False
            master = p.storage_type == f32
            sl = p.trainable_slice()
            if sl is None:
                return (p.tensor_type.get_shape()[p.channel_axis], True) if master else (None, False)
            return sl[1] - sl[0], master

        need = 0
        for call in _calls(op):
            offset = next((a.offset for a in call.args if isinstance(a, kc.Scratch)), 0)
            entry = KERNELS.get(call.function)
            own = entry.scratch(call, weights) if entry is not None and entry.scratch is not None else 0
            fused = max((4 * a.floats for a in call.args if isinstance(a, kc.FusedGradient)), default=0)
            need = max(need, offset + _aligned(own) if own else offset, _aligned(fused))
        return need

    def in_place_offset(self, op: Operation, in_bytes: int, out_bytes: int) -> int | None:
        for call in _calls(op):
            entry = KERNELS.get(call.function)
            if entry is None or entry.in_place is None:
                continue
            alignment = entry.in_place(call)
            if alignment == "head":
                return 0
            if alignment == "tail" and (in_bytes - out_bytes) % WORD == 0:
                return in_bytes - out_bytes
            if alignment == "gap" and entry.gap is not None:
                gap = entry.gap(call)
                if gap >= in_bytes:  # no overlap left to gain
                    return None
                return -_aligned(gap)  # output = input - G rounded up to a word (a larger gap is allowed)
            return None
        return None

    def supports(self, op: Operation) -> bool:
        for call in _calls(op):
            entry = KERNELS.get(call.function)
            if entry is not None and entry.limits is not None and not entry.limits(call):
                return False
        return True

    def flash_constant_bytes(self, op: Operation) -> int:
        return sum(4 * len(a.values) if isinstance(a, kc.Floats) else a.nbytes
                   for call in _calls(op) for a in call.args if isinstance(a, kc.Floats | kc.Ints))


ARMV7EM = ArmV7EM()

