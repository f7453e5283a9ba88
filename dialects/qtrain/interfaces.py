"""Op interfaces and traits of the qtrain dialect: the behaviour each op carries, that passes dispatch on.

A pass, the golden model or a lowering never asks "is this a conv2d?"; it asks the op what it needs:

- `QuantizedOp` (asked by the quant-chain verifier, autodiff, the lowering): the quantization it writes
  each int8 result with and reads each int8 operand with;
- `SaturatingOp` (autodiff, dead-gradient elimination): whether its clamp can bite; the op with or
  without its 1-bit mask result;
- `DifferentiableOp` (`qtrain-autodiff`): builds its backward ops from its results' gradients;
- `ParamConsumerOp` (`qtrain-autodiff`): the role (weight / bias) and QAS factors of a parameter it reads;
- `LayerOp` (sparse-update schemes, memory reports): the learnable layers it holds (schemes.json numbering);
- `GoldenModelOp` (the interpreter, `qtrain.interpreter`): runs itself on numpy arrays (`qtrain.numerics`);
- `DeviceStateOp` (the memory planner, the lowering, the golden model): the SRAM state the op keeps
  between training steps (the learning-rate schedule's step counter, momentum velocities);
- `KernelCallOp` (the C lowering, the target description): the kernel calls it lowers to (`kernel_call.py`).

Traits (xDSL `OpTrait`s, for the memory planner and the scheduler): `ParamRead` (its result is a
parameter's storage, not an arena buffer), `ViewOfOperand` (its result is operand 0 seen with another
shape), `ElementwiseInPlace` (its result may take over operand 0's buffer when that operand dies at the
op), `ParamGradient` (computes one parameter's gradient; `qtrain-reorder` may fuse it into the update),
`ParamUpdate` (writes a parameter's SRAM copy in place; `updated_param` names it).

Adding an op is local: its class declares the traits and implements the interfaces it needs; passes pick
it up without edits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from xdsl.ir import Operation, SSAValue
from xdsl.irdl import IRDLOperation
from xdsl.traits import OpTrait

from qtrain.dialects.qtrain.attrs import QuantParamsAttr

if TYPE_CHECKING:
    from qtrain.dialects.qtrain.kernel_call import KernelCall


# -- traits ---------------------------------------------------------------------------------------------


class ParamRead(OpTrait):
    """The op's result is a parameter's storage (Flash, or its SRAM copy), not an arena buffer."""


class ViewOfOperand(OpTrait):
    """The op's result is operand 0 seen with another shape: same bytes, no data movement."""


class ElementwiseInPlace(OpTrait):
    """The op's result may take over operand 0's buffer when operand 0 dies at the op and sizes match."""


class ParamGradient(OpTrait):
    """The op computes one parameter's gradient; when its only user is the update, `qtrain-reorder` may
    fuse the two (the gradient is then computed straight into the update and needs no arena buffer)."""


class ParamUpdate(OpTrait):
    """The op updates a parameter's SRAM copy in place (`ParamUpdateOp.updated_param`)."""


# -- quantization ------------------------------------------------------------------------------------------


class QuantizedOp:
    """An op that reads or writes int8 tensors with `#qtrain.quant` parameters."""

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        """The quantization `result` (one of the op's results) is written with; None if not int8."""
        return None

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        """(property name, operand, quantization) of every int8 operand the op reads as quantized data."""
        return ()


def produced_quant(value: SSAValue) -> QuantParamsAttr | None:
    """The quantization an int8 value was produced with, looking through views; None if unknown
    (a function argument: the model input's quantization is that of its first consumer)."""
    owner = value.owner
    while isinstance(owner, Operation) and owner.has_trait(ViewOfOperand):
        value = owner.operands[0]
        owner = value.owner
    if isinstance(owner, QuantizedOp):
        return owner.result_quant(value)
    return None


# -- saturation masks ----------------------------------------------------------------------------------------


class SaturatingOp:
    """A requantizing op whose clamp can cut the gradient: in training it saves a 1-bit mask (1 where the
    clamp left the value unchanged) as an optional last result named `mask` (an `opt_result_def`)."""

    def can_saturate(self) -> bool:
        """Whether the clamp can change any value; if not, backward needs no mask."""
        return True

    def with_mask(self, mask: bool) -> Operation:
        """A detached copy of the op with (or without) its mask result; same operands and properties."""
        from qtrain.dialects.qtrain.ops import mask_type

        assert isinstance(self, IRDLOperation)
        output = self.results[0]
        new = type(self).create(
            operands=list(self.operands),
            result_types=[output.type, *([mask_type(output.type)] if mask else [])],
            properties=dict(self.properties),
            attributes=dict(self.attributes),
        )
        new.results[0].name_hint = output.name_hint
        return new


# -- differentiation ------------------------------------------------------------------------------------------


class BackwardBuilder(Protocol):
    """What `qtrain-autodiff` offers an op building its backward ops (in reverse forward order)."""

    def grad(self, value: SSAValue) -> SSAValue | None:
        """The accumulated gradient of a forward value (one of the op's results), or None."""

    def needs_grad(self, value: SSAValue) -> bool:
        """Whether a gradient of `value` leads to an update (depends on a trainable parameter)."""

    def emit(self, op: Operation) -> Operation:
        """Appends a backward op to @train_step and returns it."""

    def accumulate(self, value: SSAValue, grad: SSAValue) -> None:
        """Adds `grad` to the gradient of forward value `value` (ignored unless it needs one)."""


class DifferentiableOp(ABC):
    """An op with a gradient: gradients are fp32, in the integer domain of the tensor they belong to."""

    @abstractmethod
    def build_backward(self, builder: BackwardBuilder) -> None:
        """Emits the ops computing the gradients of the op's operands from those of its results."""


@dataclass(frozen=True)
class TrainedParamRole:
    """How a parameter read by an op trains: `kind` picks the learning rate and the SRAM copy's format,
    `grad_scale` holds the per-output-channel QAS factors (or [1.0])."""

    kind: Literal["weight", "bias"]
    grad_scale: Sequence[float]


class ParamConsumerOp(ABC):
    """An op that reads trainable parameters (weights, biases) as operands."""

    @abstractmethod
    def trained_param_role(self, operand: SSAValue, qas: bool) -> TrainedParamRole | None:
        """The role of the parameter `operand` (a `qtrain.get_param` result the op reads); None if the
        op does not train it. `qas`: quantization-aware scaling factors, else [1.0]."""


class ParamUpdateOp(ABC):
    """An op with the `ParamUpdate` trait."""

    @property
    @abstractmethod
    def updated_param(self) -> str:
        """The symbol name of the parameter the op writes."""


# -- layers -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One learnable layer: its weight and bias operands, the input channels a weight slice is taken from
    (for a depthwise layer, the groups), and whether the op holds other layers too (a fused op)."""

    weight: SSAValue
    bias: SSAValue | None
    in_channels: int
    depthwise: bool
    fused: bool = False


class LayerOp(ABC):
    """An op holding learnable layers, numbered in forward order as in schemes.json."""

    @abstractmethod
    def learnable_layers(self) -> Sequence[LayerSpec]: ...


# -- golden model ------------------------------------------------------------------------------------------------


class GoldenRun(Protocol):
    """The interpreter's state as an op running itself sees it."""

    relaxed: bool
    """float-relaxed numerics (every op without its rint, float64) instead of the int8 contract"""
    apply_updates: bool
    """whether update ops change parameters (else they only record their gradients)"""

    def record_mask(self, op: Operation, mask: np.ndarray) -> None:
        """Keeps an op's latest saturation mask (tests read them), whether or not the op returns it."""

    def record_dequantized(self, op: Operation, value: np.ndarray) -> None:
        """Keeps the int8 input a dequantize saw (the raw model output)."""

    def read_param(self, name: str) -> np.ndarray:
        """The current value of @name as the forward pass reads it (the int8 value of an fp32 master)."""

    def sram_copy(self, name: str) -> np.ndarray:
        """@name's SRAM copy in its storage format, trained part only (float64 in relaxed mode)."""

    def write_sram_copy(self, name: str, copy: np.ndarray) -> None:
        """Replaces @name's SRAM copy (what `sram_copy` returns); later reads see the new value."""

    def record_gradient(self, name: str, grad: np.ndarray) -> None:
        """Keeps the gradient an update received in the latest call."""

    def device_state(self, state: DeviceState) -> np.ndarray:
        """The interpreter's copy of one `DeviceState` buffer: zeros at first (as qtrain_init leaves it), then
        whatever the op last wrote; the op updates the returned array in place. float64 in relaxed mode."""


class GoldenModelOp(ABC):
    """An op the numpy golden model runs (`qtrain.numerics` spells out each op's exact operations)."""

    @abstractmethod
    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The op's results for operand values `args` (numpy arrays / Python scalars)."""


# -- device state ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceState:
    """One buffer of training state an op keeps in SRAM between steps: `count` elements of `dtype`, named
    `name` (unique in the module: the C array, the golden model's copy and the memory report use it).
    The device zeroes it in qtrain_init; a checkpoint saves it with the trainable tensors."""

    name: str
    dtype: Literal["u32", "f32"]
    count: int

    @property
    def bytes(self) -> int:
        return 4 * self.count

    @property
    def numpy_dtype(self) -> type[np.generic]:
        return np.uint32 if self.dtype == "u32" else np.float32


class DeviceStateOp(ABC):
    """An op that keeps training state in SRAM between calls of @train_step (not in the arena, which
    every call reuses): the planner counts it, the lowering allocates and zeroes it, the golden model
    keeps a copy in the interpreter's state (`GoldenRun.device_state`)."""

    @abstractmethod
    def device_state(self) -> Sequence[DeviceState]:
        """The state buffers the op reads and writes (empty when it keeps none)."""


# -- lowering --------------------------------------------------------------------------------------------------


class KernelCallOp(ABC):
    """An op that lowers to calls of the kernel library (targets/armv7em/kernels/qtrain_kernels.h)."""

    @abstractmethod
    def kernel_calls(self) -> Sequence[KernelCall]:
        """The calls, in order, that compute the op (none for an op that is only a view or a read)."""
