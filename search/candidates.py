"""The search space: the backbone convs of a network and the per-layer schemes (`Candidate`s) over them.

Layers are numbered as in schemes.json (`qtrain.transforms.schemes`): backbone convs 0..n-1 in forward
order, the classifier (always trained, weight and bias) is conv n and not part of a candidate. A
candidate may also train TinyTL lite residual modules (`lite_residual`: block indexes of
`qtrain.transforms.lite_residual.find_blocks`; the pipeline inserts exactly those). A candidate becomes a
typed `UpdateScheme` (`Candidate.scheme`) for the training pipeline; no file is involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects.qtrain.contract import FORWARD
from qtrain.errors import UserError
from qtrain.transforms.lite_residual import find_blocks
from qtrain.transforms.schemes import UpdateScheme, network_layers

RATIOS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
"""Fractions of a layer's input channels a weight update may cover (0 = frozen), as in the paper."""


class SearchError(UserError):
    """A search that cannot run: bad data, a model without layers to train, a budget nothing fits."""


class InfeasibleBudgetError(SearchError):
    """Even the smallest scheme (classifier only) needs more SRAM than the budget."""

    def __init__(self, budget_bytes: int, minimum_bytes: int):
        self.budget_bytes = budget_bytes
        self.minimum_bytes = minimum_bytes
        super().__init__(
            f"budget of {format_kb(budget_bytes)} is infeasible: the smallest scheme (classifier only) needs "
            f"{minimum_bytes} bytes ({format_kb(minimum_bytes)}) of SRAM; use --budget-kb "
            f"{math.ceil(minimum_bytes / 1024)} or more"
        )


def format_kb(n_bytes: int | float) -> str:
    return f"{n_bytes / 1024:.1f} KB"


# -- the network -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvInfo:
    """A backbone conv as the search sees it."""

    index: int
    name: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    depthwise: bool

    def channels(self, ratio: float) -> int:
        """Input channels a weight update at `ratio` covers (the formula of `UpdateScheme.resolve`)."""
        if ratio <= 0:
            return 0
        return min(self.in_channels, max(1, math.ceil(ratio * self.in_channels)))

    def ratio_options(self) -> tuple[float, ...]:
        """0 and the ratios of `RATIOS` giving distinct channel counts (the largest ratio for each count)."""
        by_count: dict[int, float] = {}
        for r in RATIOS:
            by_count[self.channels(r)] = r
        return (0.0, *sorted(by_count.values()))

    def canonical_ratio(self, ratio: float) -> float:
        """The ratio of `ratio_options` that covers the same channels as `ratio`."""
        count = self.channels(ratio)
        return next(r for r in self.ratio_options() if self.channels(r) == count)

    @property
    def kind(self) -> str:
        if self.depthwise:
            return f"dw{self.kernel[0]}x{self.kernel[1]}"
        return f"conv{self.kernel[0]}x{self.kernel[1]}"


def forward_function(module: ModuleOp) -> func.FuncOp:
    for op in module.ops:
        if isinstance(op, func.FuncOp) and op.sym_name.data == FORWARD:
            return op
    raise SearchError(f"the model has no func.func @{FORWARD}")


def backbone_convs(module: ModuleOp) -> list[ConvInfo]:
    """The backbone convs of a forward-only module (schemes.json numbering; the classifier left out)."""
    layers = network_layers(forward_function(module))
    if len(layers) < 2:
        raise SearchError(f"the model has {len(layers)} conv layer(s); a search needs a backbone conv and a classifier")
    out: list[ConvInfo] = []
    for layer in layers[:-1]:
        o, kh, kw, _ = layer.weight_shape
        out.append(ConvInfo(layer.index, layer.weight, layer.in_channels, o, (kh, kw), layer.is_depthwise))
    return out


# -- the candidates --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Candidate:
    """A per-layer sparse-update scheme, exactly the fields of a schemes.json entry.

    The classifier's weight and bias are always trained; `n_bias_update` = k trains the biases of the
    last k backbone convs; `weight_ratios[i]` > 0 trains backbone conv i's weight on the first
    ceil(r * C_in) input channels.
    """

    n_bias_update: int
    weight_ratios: tuple[float, ...]
    lite_residual: tuple[int, ...] = ()
    """blocks whose TinyTL lite residual module trains (sorted)"""

    def entry(self) -> dict[str, Any]:
        """The schemes.json entry (layers with a frozen weight are left out of `manual_weight_idx`)."""
        idx = [i for i, r in enumerate(self.weight_ratios) if r > 0]
        entry: dict[str, Any] = {
            "n_bias_update": self.n_bias_update,
            "manual_weight_idx": idx,
            "weight_update_ratio": [self.weight_ratios[i] for i in idx],
        }
        if self.lite_residual:
            entry["lite_residual_blocks"] = list(self.lite_residual)
        return entry

    @classmethod
    def from_entry(cls, entry: dict[str, Any], n_backbone: int) -> Candidate:
        ratios = [0.0] * n_backbone
        for i, r in zip(entry["manual_weight_idx"], entry["weight_update_ratio"], strict=True):
            ratios[int(i)] = float(r)
        blocks = tuple(sorted(int(b) for b in entry.get("lite_residual_blocks", [])))
        return cls(int(entry["n_bias_update"]), tuple(ratios), blocks)

    def scheme(self) -> UpdateScheme:
        """The typed scheme the training pipeline takes (`training_passes(scheme=...)`): the same per-layer
        scheme its schemes.json `entry` would load as, named by `key` in messages."""
        return UpdateScheme.per_layer(
            self.n_bias_update, {i: r for i, r in enumerate(self.weight_ratios) if r > 0}, f"candidate {self.key()}",
            lite_residual=self.lite_residual,
        )

    def key(self) -> str:
        """A short stable text key (cache files, logs)."""
        weights = ",".join(f"{i}:{r:g}" for i, r in enumerate(self.weight_ratios) if r > 0)
        modules = f"|lr{','.join(map(str, self.lite_residual))}" if self.lite_residual else ""
        return f"bias{self.n_bias_update}|w{weights}{modules}"


def canonical(candidate: Candidate, convs: Sequence[ConvInfo]) -> Candidate:
    """The same trainable set with every ratio replaced by its `ratio_options` representative."""
    return Candidate(
        candidate.n_bias_update,
        tuple(c.canonical_ratio(r) for c, r in zip(convs, candidate.weight_ratios, strict=True)),
        tuple(sorted(set(candidate.lite_residual))),
    )


def module_blocks(module: ModuleOp) -> list[int]:
    """The blocks a lite residual module may be added to (TinyTL's: every block but the first)."""
    return [b.index for b in find_blocks(forward_function(module))][1:]


def with_module(base: Candidate, block: int) -> Candidate:
    return Candidate(base.n_bias_update, base.weight_ratios, tuple(sorted({*base.lite_residual, block})))


def classifier_only(n_backbone: int) -> Candidate:
    return Candidate(0, (0.0,) * n_backbone)


def bias_only(n_backbone: int) -> Candidate:
    """Every bias plus the classifier: the `bias-only` scheme in per-layer form."""
    return Candidate(n_backbone, (0.0,) * n_backbone)


def last_k(k: int, n_backbone: int) -> Candidate:
    """`last-k=K` in per-layer form: weights and biases of the last K convs, the classifier being one."""
    if not 1 <= k <= n_backbone + 1:
        raise SearchError(f"last-k={k}: k must be between 1 and {n_backbone + 1}")
    return Candidate(k - 1, tuple(1.0 if i >= n_backbone - (k - 1) else 0.0 for i in range(n_backbone)))


def with_weight(base: Candidate, layer: int, ratio: float) -> Candidate:
    ratios = list(base.weight_ratios)
    ratios[layer] = ratio
    return Candidate(base.n_bias_update, tuple(ratios), base.lite_residual)


def trains_superset(a: Candidate, b: Candidate) -> bool:
    """Whether `a` trains everything `b` trains (more biases, and at least `b`'s slice of every weight)."""
    return a.n_bias_update >= b.n_bias_update and set(a.lite_residual) >= set(b.lite_residual) and all(
        x >= y for x, y in zip(a.weight_ratios, b.weight_ratios, strict=True)
    )
