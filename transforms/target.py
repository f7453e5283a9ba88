"""The target description: what the memory planner and the fusion pass ask about the device's kernels.

Passes never import a target. They take its name as an option (`target=armv7em`) and look it up here;
a target package registers its description under the `qtrain.targets` entry-point group (see
pyproject.toml), so a new target is a new package, not an edit of the passes.

A description answers, for an op of the planned IR (usually by reading the op's `kernel_calls()`):

- `scratch_bytes`: the kernel scratch the op needs while it runs (one shared area, sized for the
  largest need), from the kernels' own `*_get_buffer_size` rules;
- `in_place_offset`: where the op's result may start relative to its dying operand 0, when the kernel
  may write one over the other (a 1x1 conv head- or tail-aligned, the stem a gap before its input, ...);
- `supports`: whether the kernels can run the op as built (e.g. the largest depthwise kernel);
- `flash_constant_bytes`: per-op constants the lowering puts in Flash next to the parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points

from xdsl.ir import Operation

from qtrain.dialects.qtrain import ParamOp
from qtrain.errors import UserError

DEFAULT_TARGET = "armv7em"
ENTRY_POINT_GROUP = "qtrain.targets"


class UnknownTargetError(UserError):
    """A target name no installed package describes."""


class TargetDescription(ABC):
    """What a target's kernel library can do, as the planner and the fusion pass need to know it."""

    name: str

    @abstractmethod
    def scratch_bytes(self, op: Operation, params: Mapping[str, ParamOp]) -> int:
        """Scratch bytes the op's kernels need while it runs (`params`: the module's parameters by name,
        for the storage and trained slice of a weight the kernel reads)."""

    @abstractmethod
    def in_place_offset(self, op: Operation, in_bytes: int, out_bytes: int) -> int | None:
        """Offset in bytes of the op's result 0 relative to its operand 0 at which the kernel may write
        the result over the operand (which dies at the op), or None when the two must not overlap.
        `in_bytes` / `out_bytes`: the two buffers' sizes."""

    @abstractmethod
    def supports(self, op: Operation) -> bool:
        """Whether the target's kernels can run the op as built."""

    @abstractmethod
    def flash_constant_bytes(self, op: Operation) -> int:
        """Bytes of per-op constants (multipliers, QAS factors) the op's lowering places in Flash."""


@cache
def get_target(name: str = DEFAULT_TARGET) -> TargetDescription:
    """The description registered under `name` in the `qtrain.targets` entry-point group."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))) or "none"
        raise UnknownTargetError(f"unknown target '{name}' (installed targets: {known})")
    description = found[0].load()
    if not isinstance(description, TargetDescription):
        raise TypeError(f"entry point {ENTRY_POINT_GROUP}:{name} is not a TargetDescription")
    return description
