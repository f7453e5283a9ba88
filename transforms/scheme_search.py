"""Sparse-update scheme search (MCUNetV3 §3.2, Fig. 5): contribution analysis + evolutionary search.

Not a pass: a library the `qtrain-search-scheme` tool and the benchmarks drive.

1. Contribution analysis, measured by short fine-tuning runs of the int8 training graph in the numpy
   interpreter (`qtrain.interpreter`) on a task's training split, scored on a validation split
   carved from it (`split_validation`; the task's test split is never looked at):
   - bias: the accuracy of training the classifier plus the biases of the last k backbone convs, for
     k = 0..n; `bias_gain(k)` is its difference to k = 0 (classifier only);
   - weights: for every backbone conv i and ratio r in `RATIOS`, the accuracy of bias-only (every bias +
     the classifier) plus the weight of conv i on its first ceil(r * C_in) input channels;
     `weight_gain(i, r)` is its difference to bias-only.
   Every accuracy is the mean over `repeats` runs that differ only in the order the samples are drawn.
   The runs are independent: they run in a process pool, and their results are cached (in memory, and
   in a JSON file if asked) by the trainable set they resolve to, so ratios that give the same channel
   count of a narrow layer are measured once.
2. Evolutionary search over `Candidate`s (exactly the per-layer format of schemes.json) maximising the
   summed gain `bias_gain(k) + sum_i weight_gain(i, r_i)` under a memory budget; a candidate's memory is
   the `peak_sram_bytes` the real pipeline plans for it (`training_passes` + `apply_passes`, read from
   the module's `qtrain.memory`), cached by candidate.

Layers are numbered as in schemes.json (`qtrain.transforms.schemes`): backbone convs 0..n-1 in forward
order, the classifier (always trained, weight and bias) is conv n and not part of a candidate.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects.qtrain.contract import FORWARD, TRAIN_STEP
from qtrain.errors import UserError
from qtrain.transforms.schemes import network_layers

RATIOS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
"""Fractions of a layer's input channels a weight update may cover (0 = frozen), as in the paper."""

SCHEMES_ABOUT = (
    "Sparse-update schemes found by qtrain-search-scheme (MCUNetV3 contribution analysis + evolutionary "
    "search under a memory budget), in the format of the MCUNetV3 reference's schemes.json: per model and "
    "budget, the biases of the last n_bias_update backbone convs, the weights of the convs in "
    "manual_weight_idx on the first ceil(r * C_in) input channels (weight_update_ratio r), and the "
    "classifier's weight and bias. Layer indexes count the conv layers in forward order, classifier "
    "excluded. '_search' records how each scheme was found (not read by the scheme parser)."
)


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


# -- the network and the candidates ----------------------------------------------------------------------


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


@dataclass(frozen=True, order=True)
class Candidate:
    """A per-layer sparse-update scheme, exactly the fields of a schemes.json entry.

    The classifier's weight and bias are always trained; `n_bias_update` = k trains the biases of the
    last k backbone convs; `weight_ratios[i]` > 0 trains backbone conv i's weight on the first
    ceil(r * C_in) input channels.
    """

    n_bias_update: int
    weight_ratios: tuple[float, ...]

    def entry(self) -> dict[str, Any]:
        """The schemes.json entry (layers with a frozen weight are left out of `manual_weight_idx`)."""
        idx = [i for i, r in enumerate(self.weight_ratios) if r > 0]
        return {
            "n_bias_update": self.n_bias_update,
            "manual_weight_idx": idx,
            "weight_update_ratio": [self.weight_ratios[i] for i in idx],
        }

    @classmethod
    def from_entry(cls, entry: dict[str, Any], n_backbone: int) -> Candidate:
        ratios = [0.0] * n_backbone
        for i, r in zip(entry["manual_weight_idx"], entry["weight_update_ratio"], strict=True):
            ratios[int(i)] = float(r)
        return cls(int(entry["n_bias_update"]), tuple(ratios))

    def key(self) -> str:
        """A short stable text key (cache files, logs)."""
        weights = ",".join(f"{i}:{r:g}" for i, r in enumerate(self.weight_ratios) if r > 0)
        return f"bias{self.n_bias_update}|w{weights}"


def canonical(candidate: Candidate, convs: Sequence[ConvInfo]) -> Candidate:
    """The same trainable set with every ratio replaced by its `ratio_options` representative."""
    return Candidate(
        candidate.n_bias_update,
        tuple(c.canonical_ratio(r) for c, r in zip(convs, candidate.weight_ratios, strict=True)),
    )


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
    return Candidate(base.n_bias_update, tuple(ratios))


# -- schemes.json files ----------------------------------------------------------------------------------


def budget_key(budget_kb: float) -> str:
    return f"{budget_kb:g}kb"


def write_schemes_json(
    path: str | os.PathLike[str],
    model_name: str,
    budget_kb: float,
    candidate: Candidate,
    search_record: dict[str, Any] | None = None,
) -> str:
    """Writes (or adds to) a schemes.json-format file; returns the spec `PATH#MODEL/<B>kb`.

    An existing file in that format keeps its other models and budgets; anything else is refused.
    """
    path = Path(path)
    data: dict[str, Any] = {"_about": SCHEMES_ABOUT}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SearchError(f"{path} exists and is not a schemes JSON file ({e}); not overwriting it") from None
        if not isinstance(old, dict) or not all(
            k.startswith("_") or isinstance(v, dict) for k, v in old.items()
        ):
            raise SearchError(f"{path} exists and is not in the schemes.json format; not overwriting it")
        data.update(old)
    key = budget_key(budget_kb)
    data.setdefault(model_name, {})[key] = candidate.entry()
    if search_record is not None:
        data.setdefault("_search", {}).setdefault(model_name, {})[key] = search_record
    path.write_text(json.dumps(data, indent=2) + "\n")
    return f"{path}#{model_name}/{key}"


class SchemeFiles:
    """Scheme specs (`FILE.json#MODEL/BUDGET`) for candidates, written to a private temporary folder.

    The sparse-update pass reads per-layer schemes only from files, so every candidate the pipeline
    sees goes through the same schemes.json format the tool writes.
    """

    MODEL = "candidate"

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="qtrain-scheme-search-")
        self._specs: dict[Candidate, str] = {}

    def spec(self, candidate: Candidate) -> str:
        spec = self._specs.get(candidate)
        if spec is None:
            path = Path(self._dir.name) / f"c{len(self._specs)}.json"
            path.write_text(json.dumps({self.MODEL: {"scheme": candidate.entry()}}))
            spec = self._specs[candidate] = f"{path}#{self.MODEL}/scheme"
        return spec

    def close(self) -> None:
        self._dir.cleanup()


# -- memory ----------------------------------------------------------------------------------------------


def planned_peak_sram(module: ModuleOp, scheme: str, *, reorder: bool = True, weight_storage: str = "f32") -> int:
    """`peak_sram_bytes` the training pipeline plans for `scheme` on a clone of forward-only `module`."""
    from qtrain.dialects.qtrain.contract import MEMORY
    from qtrain.transforms.pipeline import apply_passes, training_passes

    planned = apply_passes(
        module.clone(),
        training_passes(scheme, reorder=reorder, sram_kb=1 << 30, weight_storage=weight_storage),
    )
    memory = planned.attributes[MEMORY]
    return int(memory.data["peak_sram_bytes"].value.data)  # type: ignore[attr-defined]


class MemoryPlanner:
    """Planned peak SRAM of candidates (the real pipeline, see `planned_peak_sram`), cached by candidate."""

    def __init__(self, module: ModuleOp, *, reorder: bool = True, weight_storage: str = "f32",
                 files: SchemeFiles | None = None):
        self.module = module
        self.convs = backbone_convs(module)
        self.reorder = reorder
        self.weight_storage = weight_storage
        self.files = files or SchemeFiles()
        self.cache: dict[Candidate, int] = {}
        self.seconds = 0.0

    def peak_sram_bytes(self, candidate: Candidate) -> int:
        candidate = canonical(candidate, self.convs)
        value = self.cache.get(candidate)
        if value is None:
            start = time.perf_counter()
            value = planned_peak_sram(self.module, self.files.spec(candidate), reorder=self.reorder,
                                      weight_storage=self.weight_storage)
            self.seconds += time.perf_counter() - start
            self.cache[candidate] = value
        return value


# -- progress --------------------------------------------------------------------------------------------


class Progress:
    """A text progress bar on stderr: `label [#####.....] done/total, elapsed, ETA`.

    On a terminal it redraws one line; otherwise it prints a line every 10% (logs stay readable).
    """

    def __init__(self, label: str, total: int, stream: IO[str] | None = None, enabled: bool = True):
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_decile = -1
        if self.enabled:
            self._draw()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        if self.enabled:
            self._draw()

    def _draw(self) -> None:
        elapsed = time.perf_counter() - self.start
        width = 30
        filled = int(width * self.done / self.total)
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}, "
                f"{_duration(elapsed)} elapsed, ETA {_duration(eta) if self.done else '?'}")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if self.done == self.total else ""))
            self.stream.flush()
            return
        decile = 10 * self.done // self.total
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(line + "\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


# -- fine-tuning runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FineTuneRecipe:
    """How a scheme is fine-tuned: `steps` SGD steps of batch 1 (int8 graph, QAS), samples drawn in
    seeded random order (epochs of permutations).

    Defaults chosen by a sweep on the digits task (examples/digits/make_task.py; 2000 steps, 3 sample
    orders, validation accuracy): the shifted inputs start at a loss of ~10, and with lr >= 0.02, or
    lr = bias lr = 0.01, updates reaching conv3 or deeper often collapse to chance (10%); the fp32
    simulation (relaxed interpreter) collapses the same way, so this is optimisation, not int8
    numerics. lr 0.01 with bias lr 0.001 was the most stable setting in which the classifier still
    learns (lr 0.003: classifier only stays at 25%). Train a found scheme with the same rates.
    """

    steps: int = 2000
    lr: float = 0.01
    bias_lr: float | None = 0.001
    weight_storage: str = "f32"

    def fingerprint(self) -> dict[str, Any]:
        return asdict(self)


def sample_order(n: int, steps: int, seed: Sequence[int] | int) -> np.ndarray:
    """Indexes of the samples for `steps` steps: consecutive seeded permutations of range(n)."""
    rng = np.random.default_rng(seed)  # type: ignore[arg-type]
    epochs = -(-steps // n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[:steps]


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indexes, validation indexes): a seeded split of range(n), validation at least 1 sample."""
    if not 0 < fraction < 1:
        raise SearchError(f"validation fraction must be within (0, 1), got {fraction}")
    if n < 2:
        raise SearchError(f"the training split has {n} sample(s); carving a validation split needs at least 2")
    order = np.random.default_rng([seed, 0x5EA]).permutation(n)
    n_val = min(n - 1, max(1, round(fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fine_tune_accuracy(
    module: ModuleOp,
    scheme: str,
    recipe: FineTuneRecipe,
    train: tuple[np.ndarray, np.ndarray],
    evaluate: tuple[np.ndarray, np.ndarray],
    seed: Sequence[int] | int,
) -> float:
    """Accuracy on `evaluate` after fine-tuning a clone of forward-only `module` with `scheme`.

    The graph is the one `qtrain-compile` would build (autodiff with QAS, sparse update, dead-gradient
    elimination, reorder), run by the int8 golden model.
    """
    from qtrain.interpreter import ModelInterpreter, run_forward, run_train_steps
    from qtrain.transforms.pipeline import apply_passes, training_passes

    trained = apply_passes(
        module.clone(),
        training_passes(scheme, lr=recipe.lr, bias_lr=recipe.bias_lr, weight_storage=recipe.weight_storage,
                        plan=False),
    )
    runner = ModelInterpreter(trained)
    images, labels = train
    if recipe.steps > 0:
        order = sample_order(len(images), recipe.steps, seed)
        run_train_steps(trained, images[order], labels[order], recipe.steps, entry=TRAIN_STEP, interpreter=runner)
    _, logits = run_forward(trained, evaluate[0], interpreter=runner)
    return float(np.mean(logits.argmax(axis=1) == evaluate[1]))


# One process-pool worker's state: the module and the data are sent once, not with every run.
_WORKER: dict[str, Any] = {}


def _worker_init(module_text: str, recipe: FineTuneRecipe, train: tuple[np.ndarray, np.ndarray],
                 evaluate: tuple[np.ndarray, np.ndarray]) -> None:
    from qtrain.interpreter import load_module

    _WORKER.update(module=load_module(module_text), recipe=recipe, train=train, evaluate=evaluate)


def _worker_run(scheme: str, seed: tuple[int, ...]) -> float:
    return fine_tune_accuracy(_WORKER["module"], scheme, _WORKER["recipe"], _WORKER["train"], _WORKER["evaluate"],
                              seed)


class FineTuneRunner:
    """Runs (scheme, seed) fine-tuning jobs, in a process pool when `jobs` > 1, with a progress bar."""

    def __init__(self, module: ModuleOp, recipe: FineTuneRecipe, train: tuple[np.ndarray, np.ndarray],
                 evaluate: tuple[np.ndarray, np.ndarray], *, jobs: int = 1, progress: bool = True,
                 stream: IO[str] | None = None):
        self.module = module
        self.recipe = recipe
        self.train = train
        self.evaluate = evaluate
        self.jobs = max(1, jobs)
        self.progress = progress
        self.stream = stream

    def run(self, jobs: Sequence[tuple[str, tuple[int, ...]]], label: str) -> list[float]:
        bar = Progress(label, len(jobs), self.stream, enabled=self.progress)
        if self.jobs == 1 or len(jobs) <= 1:
            results = []
            for scheme, seed in jobs:
                results.append(fine_tune_accuracy(self.module, scheme, self.recipe, self.train, self.evaluate, seed))
                bar.advance()
            return results
        out: list[float] = [0.0] * len(jobs)
        with ProcessPoolExecutor(
            max_workers=min(self.jobs, len(jobs)),
            initializer=_worker_init,
            initargs=(str(self.module), self.recipe, self.train, self.evaluate),
        ) as pool:
            futures = {pool.submit(_worker_run, scheme, seed): i for i, (scheme, seed) in enumerate(jobs)}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.advance()
        return out


# -- contribution analysis -------------------------------------------------------------------------------


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


def fingerprint(module: ModuleOp, recipe: FineTuneRecipe, arrays: Iterable[np.ndarray], seed: int) -> str:
    h = hashlib.sha256()
    h.update(str(module).encode())
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

    @property
    def classifier_only(self) -> float:
        return self.bias_accuracy[0]

    @property
    def bias_only(self) -> float:
        return self.bias_accuracy[-1]

    def bias_gain(self, k: int) -> float:
        return self.bias_accuracy[k] - self.bias_accuracy[0]

    def weight_gain(self, layer: int, ratio: float) -> float:
        if ratio <= 0:
            return 0.0
        ratio = self.convs[layer].canonical_ratio(ratio)
        return self.weight_accuracy[layer][ratio] - self.bias_only

    def gain(self, candidate: Candidate) -> float:
        """The search objective: bias gain of k plus the chosen weight gains (paper, Eq. 2)."""
        return self.bias_gain(candidate.n_bias_update) + sum(
            self.weight_gain(i, r) for i, r in enumerate(candidate.weight_ratios)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "classifier_only": self.classifier_only,
            "bias_only": self.bias_only,
            "bias_accuracy": self.bias_accuracy,
            "bias_gain": [self.bias_gain(k) for k in range(len(self.bias_accuracy))],
            "weight_gain": {
                str(i): {f"{r:g}": self.weight_gain(i, r) for r in RATIOS} for i in self.weight_accuracy
            },
            "repeats": self.repeats,
            "recipe": self.recipe.fingerprint(),
            "fit_samples": self.n_fit,
            "validation_samples": self.n_val,
        }


def contribution_analysis(
    module: ModuleOp,
    fit: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    *,
    recipe: FineTuneRecipe = FineTuneRecipe(),  # noqa: B008 (frozen)
    repeats: int = 3,
    seed: int = 0,
    layers: Sequence[int] | None = None,
    jobs: int = 1,
    cache_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    stream: IO[str] | None = None,
) -> ContributionAnalysis:
    """Measures bias and weight contributions (see the module docstring).

    `fit`/`validation`: (int8 NHWC images, labels) of the training split's two parts. `layers` restricts
    the weight analysis to some backbone convs (the others get no weight gain entry and may not be
    searched); default: all. Repeat r fine-tunes with sample order seed (seed, r).
    """
    if repeats < 1:
        raise SearchError(f"repeats must be at least 1, got {repeats}")
    convs = backbone_convs(module)
    n = len(convs)
    chosen_layers = list(range(n)) if layers is None else sorted(set(layers))
    if any(not 0 <= i < n for i in chosen_layers):
        raise SearchError(f"layers must be backbone convs 0..{n - 1}, got {list(layers or [])}")
    cache = AnalysisCache(cache_path, fingerprint(module, recipe, (*fit, *validation), seed))
    bias_candidates = [Candidate(k, (0.0,) * n) for k in range(n + 1)]
    weight_candidates = {
        (i, r): canonical(with_weight(bias_only(n), i, r), convs) for i in chosen_layers for r in RATIOS
    }
    distinct = list(dict.fromkeys([*bias_candidates, *weight_candidates.values()]))
    files = SchemeFiles()
    start = time.perf_counter()
    try:
        todo = [(c, r) for c in distinct for r in range(repeats) if cache.get(c, r) is None]
        runner = FineTuneRunner(module, recipe, fit, validation, jobs=jobs, progress=progress, stream=stream)
        results = runner.run([(files.spec(c), (seed, r)) for c, r in todo], "contribution analysis")
        for (c, r), acc in zip(todo, results, strict=True):
            cache.put(c, r, acc)
        cache.save()
    finally:
        files.close()

    def accuracy(c: Candidate) -> float:
        return float(np.mean([cache.get(c, r) for r in range(repeats)]))

    return ContributionAnalysis(
        convs=convs,
        bias_accuracy=[accuracy(c) for c in bias_candidates],
        weight_accuracy={i: {r: accuracy(weight_candidates[i, r]) for r in RATIOS} for i in chosen_layers},
        repeats=repeats,
        recipe=recipe,
        n_fit=len(fit[0]),
        n_val=len(validation[0]),
        runs=len(todo),
        cached_runs=len(distinct) * repeats - len(todo),
        seconds=time.perf_counter() - start,
    )


# -- evolutionary search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvolutionSettings:
    """Parameters of the evolutionary search (in the style of MCUNet's evolution finder)."""

    population: int = 50
    generations: int = 40
    parent_fraction: float = 0.25
    mutation_fraction: float = 0.5
    """share of the children made by mutation; the rest by crossover"""
    mutate_prob: float = 0.2
    """per-gene mutation probability (at least one gene always changes)"""
    frozen_prob: float = 0.5
    """probability that a random initial candidate leaves a layer's weight frozen"""
    max_tries: int = 50
    """attempts to make one feasible, new child before giving up on it"""
    prune_supersets: bool = True
    """take a candidate training a superset of a known over-budget one as over budget without planning it
    (the planned memory grows with the trainable set; the chosen scheme is always planned)"""
    seed: int = 0


def trains_superset(a: Candidate, b: Candidate) -> bool:
    """Whether `a` trains everything `b` trains (more biases, and at least `b`'s slice of every weight)."""
    return a.n_bias_update >= b.n_bias_update and all(
        x >= y for x, y in zip(a.weight_ratios, b.weight_ratios, strict=True)
    )


@dataclass
class SearchResult:
    candidate: Candidate
    gain: float
    peak_sram_bytes: int
    budget_bytes: int
    minimum_bytes: int
    planned: int
    """distinct candidates whose memory the planner computed"""
    best_per_generation: list[float] = field(default_factory=list)
    seconds: float = 0.0


def evolutionary_search(
    convs: Sequence[ConvInfo],
    gain: Callable[[Candidate], float],
    memory: Callable[[Candidate], int],
    budget_bytes: int,
    settings: EvolutionSettings = EvolutionSettings(),  # noqa: B008 (frozen)
    *,
    searchable: Sequence[int] | None = None,
    progress: bool = True,
    stream: IO[str] | None = None,
) -> SearchResult:
    """Maximises `gain` over candidates with `memory(c) <= budget_bytes`.

    Genes: n_bias_update (0..n) and one ratio per searchable backbone conv (`ConvInfo.ratio_options`;
    the others stay frozen). The initial population holds the hand-designed schemes that fit (classifier
    only, bias-only, last-k for every k) and random feasible candidates; each generation keeps the best
    `parent_fraction` (by gain, then lower memory) and adds children by mutation and crossover, each
    child feasible, not yet in the population and at least as good as the worst parent (a worse one
    could never be selected, so it is not planned). Deterministic for `settings.seed`.
    Raises `InfeasibleBudgetError` when not even classifier-only fits.
    """
    start = time.perf_counter()
    n = len(convs)
    genes = list(range(n)) if searchable is None else sorted(set(searchable))
    options = {i: convs[i].ratio_options() for i in genes}
    rng = random.Random(settings.seed)
    planned: set[Candidate] = set()

    def norm(c: Candidate) -> Candidate:
        return canonical(c, convs)

    def mem(c: Candidate) -> int:
        planned.add(c)
        return memory(c)

    over_budget: list[Candidate] = []

    def feasible(c: Candidate) -> bool:
        if settings.prune_supersets and any(trains_superset(c, x) for x in over_budget):
            return False
        if mem(c) <= budget_bytes:
            return True
        over_budget.append(c)
        return False

    def fitness(c: Candidate) -> tuple[float, int, Candidate]:
        # Sort key: higher gain first, then lower memory, then a fixed order for ties.
        return (-gain(c), mem(c), c)

    minimal = classifier_only(n)
    minimum = mem(minimal)
    if minimum > budget_bytes:
        raise InfeasibleBudgetError(budget_bytes, minimum)

    def random_candidate() -> Candidate:
        ratios = [0.0] * n
        for i in genes:
            if rng.random() >= settings.frozen_prob:
                ratios[i] = rng.choice(options[i][1:])
        return Candidate(rng.randint(0, n), tuple(ratios))

    def mutate(parent: Candidate) -> Candidate:
        k = parent.n_bias_update
        ratios = list(parent.weight_ratios)
        slots = [-1, *genes]  # -1: the bias gene
        changed = [s for s in slots if rng.random() < settings.mutate_prob] or [rng.choice(slots)]
        for s in changed:
            if s < 0:
                k = rng.choice([v for v in range(n + 1) if v != k] or [k])
            else:
                ratios[s] = rng.choice([r for r in options[s] if r != ratios[s]] or [ratios[s]])
        return Candidate(k, tuple(ratios))

    def crossover(a: Candidate, b: Candidate) -> Candidate:
        k = rng.choice((a.n_bias_update, b.n_bias_update))
        ratios = [rng.choice((x, y)) for x, y in zip(a.weight_ratios, b.weight_ratios, strict=True)]
        return Candidate(k, tuple(ratios))

    anchors = [minimal, bias_only(n), *(last_k(k, n) for k in range(2, n + 2))]
    anchors = [norm(c) for c in anchors if all(r == 0 or i in options for i, r in enumerate(c.weight_ratios))]
    population: list[Candidate] = []
    for c in anchors:
        if c not in population and feasible(c):
            population.append(c)
    tries = 0
    while len(population) < settings.population and tries < settings.population * settings.max_tries:
        tries += 1
        c = norm(random_candidate())
        if c not in population and feasible(c):
            population.append(c)

    n_parents = max(2, round(settings.parent_fraction * settings.population))
    n_mutants = round(settings.mutation_fraction * (settings.population - n_parents))
    best_history: list[float] = []
    bar = Progress("evolutionary search", settings.generations, stream, enabled=progress)
    for _ in range(settings.generations):
        population.sort(key=fitness)
        parents = population[:n_parents]
        best_history.append(gain(parents[0]))
        children: list[Candidate] = list(parents)
        # Parents survive, so a child less fit than every parent could never become one: it is not
        # planned (the planner is the expensive part) and another child is tried instead.
        worst = gain(parents[-1])
        for index in range(settings.population - len(parents)):
            for _ in range(settings.max_tries):
                if index < n_mutants or len(parents) < 2:
                    child = norm(mutate(rng.choice(parents)))
                else:
                    child = norm(crossover(*rng.sample(parents, 2)))
                if child not in children and gain(child) >= worst and feasible(child):
                    children.append(child)
                    break
        population = children
        bar.advance()
    population.sort(key=fitness)
    best = population[0]
    # The best ever seen survives as a parent, so population[0] is the overall best.
    return SearchResult(
        candidate=best,
        gain=gain(best),
        peak_sram_bytes=mem(best),
        budget_bytes=budget_bytes,
        minimum_bytes=minimum,
        planned=len(planned),
        best_per_generation=best_history,
        seconds=time.perf_counter() - start,
    )


# -- reports ---------------------------------------------------------------------------------------------


def _pts(value: float) -> str:
    return f"{100 * value:+.1f}"


def format_analysis(analysis: ContributionAnalysis) -> str:
    """The contribution analysis as text tables (accuracies in %, gains in percentage points)."""
    r = analysis.recipe
    n = len(analysis.convs)
    lines = [
        f"contribution analysis: validation accuracy on {analysis.n_val} images after {r.steps} steps on "
        f"{analysis.n_fit} images (lr {r.lr:g}, bias lr {r.bias_lr if r.bias_lr is not None else r.lr:g}), "
        f"mean of {analysis.repeats} runs",
        f"  classifier only {100 * analysis.classifier_only:.1f}%, bias-only (all biases) "
        f"{100 * analysis.bias_only:.1f}%",
        "  bias of the last k backbone convs (+ classifier), gain over classifier only [points]:",
        "    k      " + " ".join(f"{k:>6d}" for k in range(n + 1)),
        "    acc %  " + " ".join(f"{100 * a:>6.1f}" for a in analysis.bias_accuracy),
        "    gain   " + " ".join(f"{_pts(analysis.bias_gain(k)):>6}" for k in range(n + 1)),
        "  weight of one conv on a ratio of its input channels (+ all biases), gain over bias-only [points]:",
        "    layer  name                 kind     C_in  " + " ".join(f"{_ratio(q):>7}" for q in RATIOS),
    ]
    for i, by_ratio in analysis.weight_accuracy.items():
        c = analysis.convs[i]
        cells = []
        for q in RATIOS:
            cell = _pts(by_ratio[q] - analysis.bias_only)
            cells.append(f"{cell:>7}" if c.canonical_ratio(q) == q else f"{'=':>7}")
        lines.append(f"    {i:>5}  {c.name:<20} {c.kind:<7} {c.in_channels:>5}  " + " ".join(cells))
    lines.append("    ('=': same channel count as the next ratio to the right)")
    return "\n".join(lines)


def _ratio(r: float) -> str:
    return "1" if r == 1 else f"1/{round(1 / r)}"


def format_choice(result: SearchResult, analysis: ContributionAnalysis | None, convs: Sequence[ConvInfo]) -> str:
    c = result.candidate
    lines = [
        f"chosen scheme for a budget of {format_kb(result.budget_bytes)}: planned peak SRAM "
        f"{result.peak_sram_bytes} bytes ({format_kb(result.peak_sram_bytes)}; classifier only "
        f"{format_kb(result.minimum_bytes)}), predicted gain {_pts(result.gain)} points over classifier only",
        f"  n_bias_update = {c.n_bias_update} (biases of backbone convs {len(convs) - c.n_bias_update}.."
        f"{len(convs) - 1})" if c.n_bias_update else "  n_bias_update = 0 (no backbone bias)",
    ]
    for i, ratio in enumerate(c.weight_ratios):
        if ratio > 0:
            conv = convs[i]
            contribution = f", gain {_pts(analysis.weight_gain(i, ratio))}" if analysis is not None else ""
            lines.append(f"  weight of conv {i} ({conv.name}, {conv.kind}): ratio {ratio:g} = "
                         f"{conv.channels(ratio)} of {conv.in_channels} input channels{contribution}")
    if not any(r > 0 for r in c.weight_ratios):
        lines.append("  no backbone weight")
    lines.append(f"  searched: {len(result.best_per_generation)} generations, {result.planned} candidates planned, "
                 f"{result.seconds:.1f} s")
    return "\n".join(lines)
