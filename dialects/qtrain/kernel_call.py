"""The kernel calls an op lowers to, described as data (`KernelCallOp.kernel_calls`).

A `KernelCall` names a function of the kernel library (targets/armv7em/kernels/qtrain_kernels.h) and its
arguments in order, each one of the argument kinds below, which refer to IR values rather than to C:
the C lowering renders them (an arena pointer at the value's planned offset, a `static const` shape or
constant array in Flash, a parameter's Flash array or SRAM copy, ...), and the target description reads
the same calls to size kernel scratch and to tell which outputs a kernel may write over its input. An
op thus says once, in its own class, what computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from xdsl.ir import SSAValue


class CallArg:
    """One argument of a kernel call."""


@dataclass(frozen=True, eq=False)
class Tensor(CallArg):
    """An arena tensor: a pointer at the value's planned offset, typed by its element type (NULL: None)."""

    value: SSAValue | None


@dataclass(frozen=True)
class Shape(CallArg):
    """A `qtrain_dims_t` (N, H, W, C; shorter shapes get leading 1s), a constant in Flash."""

    dims: tuple[int, ...]


@dataclass(frozen=True)
class ConvGeometry(CallArg):
    """A `qtrain_conv_params_t`: zero points, strides, top/left padding, groups and the output clamp."""

    input_zero_point: int
    output_zero_point: int
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]
    """[top, left, bottom, right]; the struct holds top and left, kernels derive the rest from the shapes"""
    groups: int
    clamp: tuple[int, int] = (-128, 127)


@dataclass(frozen=True, eq=False)
class Weight(CallArg):
    """A `qtrain_weight_t` for a conv weight operand: Flash data, or the SRAM copy (int8 in place, an fp32
    master, or a trained channel slice) when the parameter trains."""

    value: SSAValue


@dataclass(frozen=True, eq=False)
class FrozenWeight(CallArg):
    """A weight's plain int8 Flash array (the parameter must not train)."""

    value: SSAValue


@dataclass(frozen=True, eq=False)
class Bias(CallArg):
    """An int32 bias operand: the SRAM copy when it trains, else its Flash array; NULL for None."""

    value: SSAValue | None


@dataclass(frozen=True, eq=False)
class ParamData(CallArg):
    """A parameter operand's current values (e.g. GroupNorm's fp32 gamma / beta): its SRAM copy when it
    trains, else its Flash array."""

    value: SSAValue


@dataclass(frozen=True)
class Floats(CallArg):
    """A `const float` array of per-channel constants (multipliers, QAS factors) in Flash."""

    prefix: str
    values: tuple[float, ...]

    def __init__(self, prefix: str, values: Sequence[float]):
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "values", tuple(float(v) for v in values))


@dataclass(frozen=True)
class Ints(CallArg):
    """A `const int8_t` or `const int32_t` array of constants in Flash (a lookup table, channel indices)."""

    prefix: str
    values: tuple[int, ...]
    ctype: Literal["int8_t", "int32_t"] = "int8_t"

    def __init__(self, prefix: str, values: Sequence[int], ctype: Literal["int8_t", "int32_t"] = "int8_t"):
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "values", tuple(int(v) for v in values))
        object.__setattr__(self, "ctype", ctype)

    @property
    def nbytes(self) -> int:
        return len(self.values) * (1 if self.ctype == "int8_t" else 4)


@dataclass(frozen=True)
class F32(CallArg):
    """A float32 literal."""

    value: float


@dataclass(frozen=True)
class I32(CallArg):
    """An int32 literal."""

    value: int


@dataclass(frozen=True, eq=False)
class Scalar(CallArg):
    """A float32 scalar SSA value computed by an earlier call of the same function (`KernelCall.result`)."""

    value: SSAValue


@dataclass(frozen=True, eq=False)
class ScaledF32(CallArg):
    """fp32(constant * scalar): one float32 multiply of a literal by a scalar SSA value (a scheduled
    learning rate); just the literal when `scalar` is None."""

    constant: float
    scalar: SSAValue | None


@dataclass(frozen=True)
class State(CallArg):
    """The SRAM buffer of device state `name` (a `DeviceState` an op of the module declares)."""

    name: str


@dataclass(frozen=True)
class Label(CallArg):
    """The training step's label argument."""


@dataclass(frozen=True)
class Null(CallArg):
    """NULL."""


@dataclass(frozen=True)
class Scratch(CallArg):
    """The kernel scratch context (`qtrain_context_t`), starting `offset` bytes into the scratch area
    (a fused gradient waiting for its update may hold the bytes before it)."""

    offset: int = 0


@dataclass(frozen=True)
class FusedGradient(CallArg):
    """An fp32 gradient of `floats` values computed straight into its update: it lives at the start of the
    scratch area, not in the arena."""

    floats: int


@dataclass(frozen=True)
class ParamCopy(CallArg):
    """The SRAM copy of trainable parameter @name (its storage type)."""

    name: str


@dataclass(frozen=True)
class ParamStorage(CallArg):
    """The `qtrain_storage_t` of trainable weight @name's SRAM copy (int8 in place, an fp32 master, or the
    two int8 planes of an i16 master)."""

    name: str


@dataclass(frozen=True)
class NoiseKey(CallArg):
    """A stochastic update's `uint32_t noise_key`: `qtrain_noise_key(seed, counter)` of the training state
    `counter` (the step counter) as it is when the call runs (`numerics.noise_key`)."""

    seed: int
    counter: str


Returns = Literal["status", "void", "loss", "value"]


@dataclass(frozen=True, eq=False)
class KernelCall:
    """One call of kernel `function`. `returns`: a status the caller checks (the generated code stops
    loudly on a failure), nothing, the training loss, or a float32 `value` that becomes the scalar SSA
    value `result` (later calls read it as a `Scalar`). `macs`: multiply-accumulates it performs."""

    function: str
    args: tuple[CallArg, ...]
    returns: Returns = "status"
    macs: int = 0
    result: SSAValue | None = None
