"""Contribution analysis (MCUNetV3 §3.2): what training each bias and weight slice is worth on a task.

Measured by short fine-tuning runs (`qtrain.search.fine_tune`) on a task's training split, scored on a
validation split carved from it (`split_validation`; the task's test split is never looked at):
- bias: the accuracy of training the classifier plus the biases of the last k backbone convs, for
  k = 0..n; `bias_gain(k)` is its difference to k = 0 (classifier only);
- weights: for every backbone conv i and ratio r in `RATIOS`, the accuracy of the baseline (the biases of
  the deepest bias depth measured, every bias when there is no budget, + the classifier) plus the weight
  of conv i on its first ceil(r * C_in) input channels; `weight_gain(i, r)` is its difference to the baseline;
- lite residual modules (when asked, `modules`): for every block b, the accuracy of the baseline plus
  TinyTL's module of block b; `module_gain(b)` is its difference to the baseline.
Every accuracy is the mean over `repeats` runs that differ only in the order the samples are drawn.
With a memory budget (`within_budget`), a bias depth or weight slice that no candidate within the budget
can train is not measured (its accuracy is `UNMEASURED`, its gain -inf): the planned memory grows with
the trainable set (as the evolution's superset pruning assumes), so if classifier-only plus that part
alone is over the budget, so is every candidate training it; the same holds for a lite residual module.
The baseline is then the deepest bias depth within the budget, not bias-only: no candidate trains more
biases, so a weight is measured next to biases a candidate can have, and its runs stop the backward
where the candidates' do (on mcunet-5fps at 256 KB: depth 32 instead of 42, a quarter less time per run).
On mcunet-5fps (128x128 inputs) at 256 KB the budget skips the weights of convs 0..9 and the bias depths
33..42 (reaching back into the large early activations).

Two settings trade resolution for time on large models (the analysis is most of a search's time):
`bias_step` s measures every s-th bias depth (0, s, 2s, ... and the deepest), and `refine` K measures
every analysed layer's weight at one ratio first (`SCREEN_RATIO`, or the largest smaller one that fits)
and the other ratios only for the K layers whose screen gained most. What is not measured is
`UNMEASURED`, and the evolution does not draw it (`measured_depths`, `measured_ratios`).
The runs are independent: they run in a process pool, and their results are cached (in memory, and
in a JSON file if asked) by the trainable set they resolve to, so ratios that give the same channel
count of a narrow layer are measured once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects.qtrain.contract import SOURCE
from qtrain.search.candidates import (
    RATIOS,
    Candidate,
    ConvInfo,
    SearchError,
    backbone_convs,
    canonical,
    classifier_only,
    with_module,
    with_weight,
)
from qtrain.search.fine_tune import FineTuneRecipe, FineTuneRunner, Split
from qtrain.search.progress import ProgressCallback
from qtrain.transforms.lite_residual import Calibration

UNMEASURED = -math.inf
"""The accuracy of a part not measured (no candidate within the budget can train it, or `bias_step` /
`refine` left it out): its gain is -inf, so the evolution never prefers it, and it does not draw it."""

SCREEN_RATIO = 0.25
"""The ratio every analysed layer's weight is measured at when `refine` limits the full ratio sweep to
the layers that gain most: a middle ratio (the paper's gains grow with the ratio, with diminishing returns),
and a slice small enough to fit next to the biases in most budgets."""


class AnalysisCache:
    """Accuracy of (candidate, repeat) runs, in memory and optionally in a JSON file.

    The file is keyed by a fingerprint of everything a run depends on (model IR, fine-tuning and
    validation data, recipe, seed), so a stale file is never used for another setting.
    """

    def __init__(self, path: str | os.PathLike[str] | None, fingerprint: str):
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint
        self.runs: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise SearchError(f"cache {self.path} is not readable JSON ({e})") from None
            if isinstance(data, dict) and data.get("fingerprint") == fingerprint:
                self.runs = {str(k): float(v) for k, v in data.get("runs", {}).items()}

    @staticmethod
    def run_key(candidate: Candidate, repeat: int) -> str:
        return f"{candidate.key()}#{repeat}"

    def get(self, candidate: Candidate, repeat: int) -> float | None:
        return self.runs.get(self.run_key(candidate, repeat))

    def put(self, candidate: Candidate, repeat: int, accuracy: float) -> None:
        self.runs[self.run_key(candidate, repeat)] = accuracy

    def save(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps({"fingerprint": self.fingerprint, "runs": self.runs}, indent=1) + "\n")


def _trained_text(module: ModuleOp) -> str:
    """The IR text training depends on: without the importer's diagnostic notes (the ONNX node of each weight,
    `qtrain.source`), which change no run, so caches written before they existed stay valid."""
    if not any(SOURCE in op.attributes for op in module.walk()):
        return str(module)
    clone = module.clone()
    for op in clone.walk():
        op.attributes.pop(SOURCE, None)
    return str(clone)


def fingerprint(module: ModuleOp, recipe: FineTuneRecipe, arrays: Iterable[np.ndarray], seed: int,
                engine: str = "interpreter") -> str:
    """What a cached run depends on: the model's IR text, the recipe's fields, the seed and the data, and the
    engine when it is not the golden model (DESIGN.md lets an fp32 sum in another order flip a rare
    parameter by one unit, so a host run is not assumed equal to an interpreter run; an interpreter cache
    written before engines existed stays valid)."""
    h = hashlib.sha256()
    if engine != "interpreter":
        h.update(f"engine={engine}".encode())
    h.update(_trained_text(module).encode())
    h.update(json.dumps(recipe.fingerprint(), sort_keys=True).encode())
    h.update(str(seed).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class ContributionAnalysis:
    """Validation accuracies of the contribution analysis (fractions in [0, 1], mean over repeats)."""

    convs: list[ConvInfo]
    bias_accuracy: list[float]
    """index k = 0..n: classifier + biases of the last k backbone convs"""
    weight_accuracy: dict[int, dict[float, float]]
    """layer -> ratio (every one of RATIOS) -> accuracy of bias-only + that weight slice"""
    repeats: int
    recipe: FineTuneRecipe
    n_fit: int
    n_val: int
    runs: int = 0
    """fine-tuning runs made by this call"""
    cached_runs: int = 0
    """runs taken from the cache file instead"""
    seconds: float = 0.0
    module_accuracy: dict[int, float] = field(default_factory=dict)
    """block -> accuracy of the baseline + that block's lite residual module"""
    baseline_depth: int | None = None
    """the bias depth the weights and modules are measured over (None: all biases, bias-only)"""

    @property
    def classifier_only(self) -> float:
        return self.bias_accuracy[0]

    @property
    def bias_only(self) -> float:
        return self.bias_accuracy[-1]

    @property
    def baseline(self) -> float:
        """The accuracy the weight and module gains are measured against."""
        depth = len(self.bias_accuracy) - 1 if self.baseline_depth is None else self.baseline_depth
        return self.bias_accuracy[depth]

    def bias_gain(self, k: int) -> float:
        return self.bias_accuracy[k] - self.bias_accuracy[0]

    def weight_gain(self, layer: int, ratio: float) -> float:
        if ratio <= 0:
            return 0.0
        ratio = self.convs[layer].canonical_ratio(ratio)
        return self.weight_accuracy[layer][ratio] - self.baseline

    def module_gain(self, block: int) -> float:
        return self.module_accuracy[block] - self.baseline

    def measured_depths(self) -> list[int]:
        """The bias depths measured (the evolution's choices for n_bias_update)."""
        return [k for k, a in enumerate(self.bias_accuracy) if a != UNMEASURED]

    def measured_ratios(self) -> dict[int, tuple[float, ...]]:
        """layer -> 0 and the ratios of its weight measured (the evolution's choices for that layer)."""
        return {i: (0.0, *(r for r, a in by_ratio.items() if a != UNMEASURED and self.convs[i].canonical_ratio(r) == r))
                for i, by_ratio in self.weight_accuracy.items()}

    def gain(self, candidate: Candidate) -> float:
        """The search objective: bias gain of k plus the chosen weight gains (paper, Eq. 2), plus the chosen
        lite residual modules' gains."""
        return self.bias_gain(candidate.n_bias_update) + sum(
            self.weight_gain(i, r) for i, r in enumerate(candidate.weight_ratios)
        ) + sum(self.module_gain(b) for b in candidate.lite_residual)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready: an unmeasured part's accuracy and gain are null."""

        def value(x: float) -> float | None:
            return None if x == UNMEASURED else x

        return {
            "classifier_only": self.classifier_only,
            "bias_only": value(self.bias_only),
            **({"baseline_depth": self.baseline_depth} if self.baseline_depth is not None else {}),
            "bias_accuracy": [value(a) for a in self.bias_accuracy],
            "bias_gain": [value(self.bias_gain(k)) for k in range(len(self.bias_accuracy))],
            "weight_gain": {
                str(i): {f"{r:g}": value(self.weight_gain(i, r)) for r in RATIOS} for i in self.weight_accuracy
            },
            **({"module_gain": {str(b): value(self.module_gain(b)) for b in self.module_accuracy}}
               if self.module_accuracy else {}),
            "repeats": self.repeats,
            "recipe": self.recipe.fingerprint(),
            "fit_samples": self.n_fit,
            "validation_samples": self.n_val,
        }


def contribution_analysis(
    module: ModuleOp,
    fit: Split,
    validation: Split,
    *,
    recipe: FineTuneRecipe = FineTuneRecipe(),  # noqa: B008 (frozen)
    repeats: int = 3,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    jobs: int = 1,
    cache_path: str | os.PathLike[str] | None = None,
    on_progress: ProgressCallback | None = None,
    modules: Sequence[int] = (),
    calibration: Calibration | None = None,
    engine: str = "interpreter",
    scheduler: str | None = None,
    within_budget: Callable[[Candidate], bool] | None = None,
    bias_step: int = 1,
    refine: int | None = None,
) -> ContributionAnalysis:
    """Measures bias and weight contributions (see the module docstring).

    `fit`/`validation`: (int8 NHWC images, labels) of the training split's two parts. `layers` restricts
    the weight analysis to some backbone convs (the others get no weight gain entry and may not be
    searched); default: all. `modules`: blocks whose lite residual module is measured too (`calibration`:
    their scales, computed once). Repeat r fine-tunes with sample order seed (seed, r). Progress (one unit
    per fine-tuning run, stage "contribution analysis") goes to `on_progress`. `engine`: what runs them,
    "interpreter" (the golden model) or "host" (the host build of the generated C); `jobs` local processes,
    or the Dask cluster of `scheduler` (`FineTuneRunner`). `cache_path`: a JSON file of finished runs, read
    first and written as each run finishes. `within_budget(candidate)`: whether a candidate
    fits the memory budget; parts no candidate within it can train are not measured (module docstring).
    `bias_step`, `refine`: measure every s-th bias depth, and all weight ratios of only the K layers whose
    screen at `SCREEN_RATIO` gained most (module docstring; default: everything).
    """
    if repeats < 1:
        raise SearchError(f"repeats must be at least 1, got {repeats}")
    convs = backbone_convs(module)
    n = len(convs)
    chosen_layers = list(range(n)) if layers is None else sorted(set(layers))
    if any(not 0 <= i < n for i in chosen_layers):
        raise SearchError(f"layers must be backbone convs 0..{n - 1}, got {list(layers or [])}")
    if bias_step < 1:
        raise SearchError(f"bias_step must be at least 1, got {bias_step}")
    if refine is not None and refine < 0:
        raise SearchError(f"refine must be at least 0, got {refine}")
    cache = AnalysisCache(cache_path, fingerprint(module, recipe, (*fit, *validation), seed, engine))
    bias_candidates = [Candidate(k, (0.0,) * n) for k in range(n + 1)]
    # Depths that fit: 0..deepest (the memory grows with k: stop at the first one over the budget).
    deepest = n if within_budget is None else next(
        (k - 1 for k in range(1, n + 1) if not within_budget(bias_candidates[k])), n)
    measured_depths = {*range(0, deepest + 1, bias_step), deepest}
    base = bias_candidates[deepest]
    # A part is measurable when it fits next to the classifier alone (see the module docstring).
    fitting: dict[int, list[float]] = {}
    for i in chosen_layers:
        fitting[i] = []
        for r in convs[i].ratio_options()[1:]:  # ascending: the memory grows with the ratio
            if within_budget is not None and not within_budget(with_weight(classifier_only(n), i, r)):
                break
            fitting[i].append(r)
    weight_candidates = {
        (i, r): canonical(with_weight(base, i, r), convs) for i in chosen_layers for r in RATIOS
    }
    measured_modules = list(modules)
    if within_budget is not None:
        measured_modules = [b for b in modules if within_budget(with_module(classifier_only(n), b))]
    module_candidates = {b: with_module(base, b) for b in modules}
    if refine is None:
        first_slices = {(i, r) for i in chosen_layers for r in RATIOS if convs[i].canonical_ratio(r) in fitting[i]}
    else:  # the screen: one ratio per layer
        first_slices = {(i, max([q for q in fitting[i] if q <= convs[i].canonical_ratio(SCREEN_RATIO)]
                                or fitting[i][:1])) for i in chosen_layers if fitting[i]}
    runner = FineTuneRunner(module, recipe, fit, validation, jobs=jobs, on_progress=on_progress,
                            calibration=calibration, engine=engine, scheduler=scheduler)
    start = time.perf_counter()
    runs = 0

    def measure(candidates: Iterable[Candidate]) -> None:
        nonlocal runs
        distinct = list(dict.fromkeys(candidates))
        # Repeat-major: the repeats of a candidate share one host build, made by whichever run comes first.
        todo = [(c, r) for r in range(repeats) for c in distinct if cache.get(c, r) is None]

        def keep(index: int, accuracy: float) -> None:
            # Saved as each run finishes: an interrupted analysis (hours on a large model) resumes from the
            # cache file, losing only the runs in flight.
            cache.put(*todo[index], accuracy)
            cache.save()

        runner.run([(c.scheme(), (seed, r)) for c, r in todo], "contribution analysis", on_result=keep)
        cache.save()
        runs += len(todo)

    def accuracy(c: Candidate, measured: bool = True) -> float:
        return float(np.mean([cache.get(c, r) for r in range(repeats)])) if measured else UNMEASURED

    measured_slices = set(first_slices)
    first = [*(bias_candidates[k] for k in sorted(measured_depths)),
             *(weight_candidates[key] for key in sorted(first_slices)),
             *(module_candidates[b] for b in measured_modules)]
    measure(first)
    if refine is not None:
        # The other ratios of the layers whose screen gained most (ties: the deeper layer).
        screen = {i: accuracy(weight_candidates[key]) for key in first_slices for i in [key[0]]}
        best = sorted(screen, key=lambda i: (-screen[i], -i))[:refine]
        measured_slices |= {(i, r) for i in best for r in RATIOS if convs[i].canonical_ratio(r) in fitting[i]}
        measure(weight_candidates[key] for key in sorted(measured_slices - first_slices))
    distinct = {*first, *(weight_candidates[key] for key in measured_slices)}

    return ContributionAnalysis(
        convs=convs,
        bias_accuracy=[accuracy(c, k in measured_depths) for k, c in enumerate(bias_candidates)],
        weight_accuracy={i: {r: accuracy(weight_candidates[i, r], (i, convs[i].canonical_ratio(r)) in measured_slices
                                         or (i, r) in measured_slices)
                             for r in RATIOS}
                         for i in chosen_layers},
        repeats=repeats,
        recipe=recipe,
        n_fit=len(fit[0]),
        n_val=len(validation[0]),
        runs=runs,
        cached_runs=len(distinct) * repeats - runs,
        seconds=time.perf_counter() - start,
        module_accuracy={b: accuracy(c, b in measured_modules) for b, c in module_candidates.items()},
        baseline_depth=None if deepest == n else deepest,
    )
