"""Accuracy of on-device fine-tuning on the digits task (inverted contrast), measured in the interpreter.

    python -m qtrain.tools.bench_accuracy [--seeds 10] [--steps 2000] [--lr 0.01] [--bias-lr 0.001] [--jobs 2]
                                          [--budget-kb 24] [--searched SPEC] [--quant-schemes searched,last-k=3]
                                          [--arms fp32,int8-qas,...] [--weight-storage f32,i16,i8,i8-nearest]
                                          [--tables a|b|ab]
                                          [--json OUT.json] [--quiet]

The task is examples/digits/make_task.py's (built in memory): the digits CNN, imported with the project's
PTQ, fine-tuned on 1297 contrast-inverted training images and scored on the 500 held-out test images.
Every run uses one recipe: `--steps` SGD steps of batch 1 (no momentum), `--lr` for weights and
`--bias-lr` for biases, samples drawn in seeded random order (seed s draws order `(1000 + s,)`, the
orders `bench_schemes` uses); run s of every arm and scheme sees exactly the same samples in the same
order. Accuracy is the mean +- std (population) over `--seeds` runs, per-seed values listed. Default
configuration: 10 seeds, 150 runs of 2000 steps, 4.5 minutes on 2 idle cores.

(a) Quantization: the same network, trainable set and recipe trained six ways (`ARMS`):
    fp32         fp32 training, simulated: the QAS training graph run by the interpreter in relaxed mode
                 (float64 activations and parameters, no rounding; QAS is exactly the int8 <-> real
                 reparametrisation, so this is plain SGD on the real-valued network);
    int8-qas     the device's arithmetic: int8 graph, QAS gradient scaling, fp32 master copies of the
                 trained weights (int32 biases updated in place);
    int8-no-qas  the same int8 graph without QAS (every `qtrain.sgd_update` has grad_scale 1);
    int8-qas-i16 int8 + QAS with 16-bit fixed-point masters (int8 value + 8 fractional bits), updates
                 rounded stochastically;
    int8-qas-i8  int8 + QAS with the weights updated in place in int8 (no master copy), rounded
                 stochastically; int8-qas-i8-nearest the same rounded to nearest.
    int8-qas-bf16, int8-qas-i8-bf16  int8-qas and int8-qas-i8 with bf16 activation gradients in the arena
                 (`--grad-precision bf16`); their bar: not more than 1 point below fp32 gradients.
    `--weight-storage f32,i16,i8,i8-nearest` picks the int8 + QAS arms by storage (f32: int8-qas) and
    adds, per trainable set, each storage's accuracy minus f32's with its paired standard error and the
    cheapest storage within 1 point of f32 (the bar qtrain's default storage is chosen by).
    Trainable sets (`--quant-schemes`): the scheme the demo searches for `--budget-kb` ("searched") and
    last-k=3 (the deepest last-k within 24 KB). The bars: int8 + QAS not more than 1 point below fp32,
    and int8 without QAS measurably worse than int8 + QAS (more than 1 point and more than twice the
    standard error of the difference).
(b) Sparse schemes at the budget, int8 + QAS: classifier only, bias-only, every last-k (those over the
    budget shown for reference) and the searched scheme; the bar (as in `bench_schemes`): the searched
    scheme fits and is at least as accurate as bias-only and every last-k within the budget.

The searched scheme is the one `qtrain-demo` trains: `qtrain-search-scheme`'s contribution analysis and
evolutionary search with the demo's recipe (2000 steps, lr 0.01, bias lr 0.001, seed 0), its fine-tuning
runs read from examples/digits/contributions.json when that cache matches (a copy is used; the file is
never written), so the search takes seconds; `--searched SPEC` trains a given scheme instead.

Exit status 1 when a bar is not met (the tables are printed either way).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from qtrain.errors import UserError
from qtrain.search import FineTuneRecipe
from qtrain.tools.bench_schemes import DIGITS, load_make_task
from qtrain.tools.plumbing import ArgumentParser, UsageError, run_tool
from qtrain.transforms.recipe import FINE_TUNE_RECIPE, FINE_TUNE_STEPS
from qtrain.transforms.schemes import Layer

Split = tuple[np.ndarray, np.ndarray]
"""(images, labels)"""

SEED_BASE = 1000
"""Run s draws its samples in the order `sample_order(n, steps, (SEED_BASE + s,))` (as `bench_schemes`)."""
SEARCHED = "searched"


PROG = "bench_accuracy"

@dataclass(frozen=True)
class Arm:
    """One way of training: numerics of the interpreter, QAS or not, SRAM copy of trained weights."""

    key: str
    label: str
    qas: bool
    relaxed: bool
    weight_storage: str = "f32"
    grad_precision: str = "f32"
    """arena format of activation gradients (qtrain-narrow-gradients)"""


FP32 = Arm("fp32", "fp32 training (relaxed simulation)", qas=True, relaxed=True)
INT8_QAS = Arm("int8-qas", "int8 + QAS (fp32 master weights)", qas=True, relaxed=False)
INT8_NO_QAS = Arm("int8-no-qas", "int8 without QAS (grad_scale 1)", qas=False, relaxed=False)
INT8_QAS_I16 = Arm("int8-qas-i16", "int8 + QAS, i16 masters (stochastic)", qas=True, relaxed=False,
                   weight_storage="i16")
INT8_QAS_I8 = Arm("int8-qas-i8", "int8 + QAS, i8 in place (stochastic)", qas=True, relaxed=False, weight_storage="i8")
INT8_QAS_I8_NEAREST = Arm("int8-qas-i8-nearest", "int8 + QAS, i8 in place (nearest)", qas=True, relaxed=False,
                          weight_storage="i8-nearest")
INT8_QAS_BF16 = Arm("int8-qas-bf16", "int8 + QAS, bf16 activation gradients", qas=True, relaxed=False,
                    grad_precision="bf16")
INT8_QAS_I8_BF16 = Arm("int8-qas-i8-bf16", "int8 + QAS, int8 weights, bf16 gradients", qas=True, relaxed=False,
                       weight_storage="i8", grad_precision="bf16")
ARMS: dict[str, Arm] = {a.key: a for a in (FP32, INT8_QAS, INT8_NO_QAS, INT8_QAS_I16, INT8_QAS_I8, INT8_QAS_I8_NEAREST,
                                           INT8_QAS_BF16, INT8_QAS_I8_BF16)}
STORAGE_ARMS: dict[str, Arm] = {a.weight_storage: a for a in (INT8_QAS, INT8_QAS_I16, INT8_QAS_I8, INT8_QAS_I8_NEAREST)}
"""The int8 + QAS arm of each `--weight-storage` (f32: int8-qas)."""


@dataclass(frozen=True)
class Recipe:
    """The one fine-tuning recipe every arm and scheme is trained with."""

    steps: int = FINE_TUNE_STEPS
    lr: float = FINE_TUNE_RECIPE.lr
    bias_lr: float = FINE_TUNE_RECIPE.bias_lr  # type: ignore[assignment]

    def describe(self, seeds: int) -> str:
        return (f"{self.steps} SGD steps of batch 1, no momentum, lr {self.lr:g} (weights), bias lr {self.bias_lr:g}; "
                f"sample orders seeded {SEED_BASE}..{SEED_BASE + seeds - 1}, the same for every arm and scheme")


@dataclass
class RunResult:
    accuracy: float
    """held-out test accuracy after fine-tuning"""
    loss_first: float
    """mean training loss of the first 10% of the steps"""
    loss_last: float
    """mean training loss of the last 10% of the steps"""
    changed_fraction: float
    """share of the trained parameter elements whose value the forward pass reads (the int8 / int32 value,
    rint of an fp32 master; the float64 value in relaxed mode) differs from the pre-trained one"""
    sram_dtypes: dict[str, str] = field(default_factory=dict)
    """dtype of every trainable tensor's SRAM copy after training (float64 in relaxed mode)"""


# -- one fine-tuning run ---------------------------------------------------------------------------------


def training_graph(module: ModuleOp, scheme: str, arm: Arm, recipe: Recipe) -> ModuleOp:
    """A clone of forward-only `module` with @train_step for `scheme`, the pipeline `qtrain-compile` runs
    (autodiff, sparse update, dead-gradient elimination, reorder) with the arm's QAS and weight storage."""
    from qtrain.transforms.pipeline import apply_passes, training_passes

    return apply_passes(module.clone(), training_passes(
        scheme, lr=recipe.lr, bias_lr=recipe.bias_lr, warmup_steps=FINE_TUNE_RECIPE.warmup_steps,
        steps=FINE_TUNE_RECIPE.steps, final_lr_ratio=FINE_TUNE_RECIPE.final_lr_ratio,
        momentum=FINE_TUNE_RECIPE.momentum, qas=arm.qas, weight_storage=arm.weight_storage,
        grad_precision=arm.grad_precision, plan=False))


def grad_scales(graph: ModuleOp) -> np.ndarray:
    """Every grad_scale value of every `qtrain.sgd_update` in `graph` (the QAS factors, or 1)."""
    from qtrain.dialects.qtrain import SGDUpdateOp

    values = [v for op in graph.walk() if isinstance(op, SGDUpdateOp) for v in op.grad_scale.get_values()]
    return np.asarray(values, dtype=np.float64)


def fine_tune(module: ModuleOp, scheme: str, arm: Arm, recipe: Recipe, train: Split,
              test: Split, seed: int) -> RunResult:
    """Fine-tunes a clone of `module` with `scheme` the `arm` way; accuracy on `test` (in the same numerics)."""
    from qtrain.dialects.qtrain import ParamOp
    from qtrain.dialects.qtrain.contract import TRAIN_STEP
    from qtrain.interpreter import ModelInterpreter, run_forward, run_train_steps, trainable_index
    from qtrain.search import sample_order

    if recipe.steps < 1:
        raise UsageError(f"steps must be at least 1, got {recipe.steps}")
    graph = training_graph(module, scheme, arm, recipe)
    runner = ModelInterpreter(graph, relaxed=arm.relaxed)
    trained = {op.sym_name.data: trainable_index(op) for op in graph.ops if isinstance(op, ParamOp) and op.is_trainable}
    flash = {name: runner.params[name][index].copy() for name, index in trained.items()}
    images, labels = train
    order = sample_order(len(images), recipe.steps, (SEED_BASE + seed,))
    losses, sram = run_train_steps(graph, images[order], labels[order], recipe.steps, entry=TRAIN_STEP,
                                   interpreter=runner)
    _, logits = run_forward(graph, test[0], interpreter=runner)
    tenth = max(1, recipe.steps // 10)
    changed = sum(int(np.count_nonzero(runner.params[name][index] != flash[name])) for name, index in trained.items())
    return RunResult(
        accuracy=float(np.mean(logits.argmax(axis=1) == test[1])),
        loss_first=float(np.mean(losses[:tenth])),
        loss_last=float(np.mean(losses[-tenth:])),
        changed_fraction=changed / max(1, sum(v.size for v in flash.values())),
        sram_dtypes={name: str(value.dtype) for name, value in sorted(sram.items())},
    )


def pretrained_accuracy(module: ModuleOp, arm: Arm, test: Split) -> float:
    """Accuracy before fine-tuning, in the arm's numerics."""
    from qtrain.interpreter import ModelInterpreter, run_forward

    _, logits = run_forward(module, test[0], interpreter=ModelInterpreter(module, relaxed=arm.relaxed))
    return float(np.mean(logits.argmax(axis=1) == test[1]))


# The process-pool worker's state: the module and the data are sent once, not with every run.
_WORKER: dict[str, Any] = {}


def _worker_init(module_text: str, recipe: Recipe, train: Split,
                 test: Split) -> None:
    from qtrain.interpreter import load_module

    _WORKER.update(module=load_module(module_text), recipe=recipe, train=train, test=test)


def _worker_run(scheme: str, arm_key: str, seed: int) -> RunResult:
    return fine_tune(_WORKER["module"], scheme, ARMS[arm_key], _WORKER["recipe"], _WORKER["train"], _WORKER["test"],
                     seed)


Job = tuple[str, str, int]
"""(scheme spec, arm key, seed)"""


def run_jobs(module: ModuleOp, recipe: Recipe, train: Split, test: Split, jobs: Sequence[Job], *, workers: int,
             progress: bool, stream: IO[str] | None = None) -> dict[Job, RunResult]:
    """Runs every distinct job once (in a process pool when `workers` > 1), with a progress bar."""
    from qtrain.tools.plumbing import stage_bars

    todo = list(dict.fromkeys(jobs))
    bars = stage_bars(PROG, progress, stream)
    label = "fine-tuning runs"

    def report(done: int) -> None:
        if bars is not None:
            bars(done, len(todo), label)

    report(0)
    results: dict[Job, RunResult] = {}
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            scheme, arm, seed = job
            results[job] = fine_tune(module, scheme, ARMS[arm], recipe, train, test, seed)
            report(len(results))
        return results
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), initializer=_worker_init,
                             initargs=(str(module), recipe, train, test)) as pool:
        futures = {pool.submit(_worker_run, *job): job for job in todo}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            report(len(results))
    return results


# -- the searched scheme ---------------------------------------------------------------------------------


def _analysis_setup(module: ModuleOp, train: Split) -> tuple[FineTuneRecipe, Split, Split]:
    """(recipe, fit split, validation split) of the contribution analysis `qtrain-demo` runs on the digits task:
    qtrain-search-scheme's defaults (2000 steps, seed 0, validation fraction 0.2) with the demo's rates."""
    from qtrain.search import split_validation
    from qtrain.tools.qtrain_demo import BIAS_LR, LR

    fit_idx, val_idx = split_validation(len(train[0]), 0.2, 0)
    return (FineTuneRecipe(lr=LR, bias_lr=BIAS_LR), (train[0][fit_idx], train[1][fit_idx]),
            (train[0][val_idx], train[1][val_idx]))


def cached_analysis_is_current(module: ModuleOp, train: Split) -> bool:
    """Whether examples/digits/contributions.json holds the runs of this model, data and recipe (else the
    search redoes the contribution analysis: 84 runs of 2000 steps, minutes)."""
    from qtrain.search import fingerprint

    path = DIGITS / "contributions.json"
    if not path.is_file():
        return False
    recipe, fit, validation = _analysis_setup(module, train)
    return json.loads(path.read_text()).get("fingerprint") == fingerprint(module, recipe, (*fit, *validation), 0)


def demo_searched_scheme(module: ModuleOp, train: Split, budget_kb: float, directory: Path, *,
                         jobs: int, progress: bool, population: int = 50) -> tuple[str, dict[str, Any]]:
    """The scheme `qtrain-demo` searches for `budget_kb` (see the module docstring); returns (spec, record)."""
    from qtrain.search import (
        EvolutionSettings,
        MemoryPlanner,
        contribution_analysis,
        evolutionary_search,
        write_schemes_json,
    )
    from qtrain.tools.plumbing import stage_bars

    recipe, fit, validation = _analysis_setup(module, train)
    cache = directory / "contributions.json"
    if (DIGITS / "contributions.json").is_file():
        shutil.copyfile(DIGITS / "contributions.json", cache)
    analysis = contribution_analysis(module, fit, validation, recipe=recipe, repeats=3, seed=0, jobs=jobs,
                                     cache_path=cache, on_progress=stage_bars(PROG, progress))
    planner = MemoryPlanner(module)
    result = evolutionary_search(planner.convs, analysis.gain, planner.peak_sram_bytes, int(budget_kb * 1024),
                                 EvolutionSettings(population=population, seed=0),
                                 searchable=list(analysis.weight_accuracy),
                                 depths=analysis.measured_depths(), ratios=analysis.measured_ratios(),
                                 on_progress=stage_bars(PROG, progress))
    spec = write_schemes_json(directory / "scheme.json", "digits", budget_kb, result.candidate)
    how = (f"qtrain-search-scheme as in qtrain-demo, {analysis.cached_runs} of "
           f"{analysis.runs + analysis.cached_runs} analysis runs from the cache")
    return spec, {"how": how, "entry": result.candidate.entry(), "analysis_runs": analysis.runs,
                  "cached_runs": analysis.cached_runs, "predicted_gain": result.gain}


def describe_scheme(module: ModuleOp, spec: str) -> str:
    """The tensors a scheme trains, compactly: `conv2.w[:4] conv5.w conv5.b ...` (input-channel slices)."""
    from qtrain.search import forward_function
    from qtrain.transforms.schemes import network_layers, parse_scheme

    chosen = parse_scheme(spec).resolve(network_layers(forward_function(module)))
    parts = []
    for t in sorted(chosen.values(), key=lambda t: (t.kind != "weight", t.layer)):
        name = t.name.removesuffix(".weight").removesuffix(".bias") + (".w" if t.kind == "weight" else ".b")
        parts.append(name + (f"[:{t.channels[1]}]" if t.channels else ""))
    return " ".join(parts)


# -- the benchmark ---------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    seeds: int = 10
    recipe: Recipe = field(default_factory=Recipe)
    budget_kb: float = 24.0
    quant_schemes: tuple[str, ...] = (SEARCHED, "last-k=3")
    arms: tuple[str, ...] = tuple(ARMS)
    budget_schemes: tuple[str, ...] | None = None
    """(b)'s baselines; default: last-k=1 (classifier only), bias-only, last-k=2 .. last-k=n+1"""
    schemes_table: bool = True
    """run (b); False: only (a)"""
    searched: str | None = None
    """a scheme spec to use as the searched scheme instead of searching"""
    search_population: int = 50
    """the evolutionary search's population (qtrain-demo's; smaller only to make the tests quick)"""
    jobs: int = 2
    progress: bool = True


def _stats(values: Sequence[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_seed": [float(v) for v in values]}


def _std_error(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(float(np.var(a, ddof=1) if len(a) > 1 else 0.0) / len(a)
                     + float(np.var(b, ddof=1) if len(b) > 1 else 0.0) / len(b))


def run_bench(config: BenchConfig, stream: IO[str] | None = None) -> dict[str, Any]:
    """Runs both tables' fine-tuning runs; returns every figure (the `--json` document)."""
    from qtrain.search import planned_peak_sram

    out = stream or sys.stdout
    started = time.monotonic()
    if config.seeds < 1:
        raise UsageError(f"seeds must be at least 1, got {config.seeds}")
    for key in config.arms:
        if key not in ARMS:
            raise UsageError(f"unknown arm '{key}' (arms: {', '.join(ARMS)})")
    make_task = load_make_task()
    module = make_task.import_model()
    task = make_task.build_task(module)
    train = (task["image"], task["label"])
    test = (task["test_image"], task["test_label"])
    print(f"digits through an inverted-contrast sensor: {len(train[0])} train / {len(test[0])} held-out test images",
          file=out, flush=True)

    tmp = tempfile.TemporaryDirectory(prefix="bench-accuracy-")
    try:
        if config.searched is None:
            current = cached_analysis_is_current(module, train)
            print(f"searching the {config.budget_kb:g} KB scheme as qtrain-demo does ("
                  + ("contribution analysis from examples/digits/contributions.json)..." if current else
                     "examples/digits/contributions.json does not match: redoing the contribution analysis, 84 "
                     "runs of 2000 steps, minutes)..."), file=out, flush=True)
            searched, search_record = demo_searched_scheme(module, train, config.budget_kb, Path(tmp.name),
                                                           jobs=config.jobs, progress=config.progress,
                                                           population=config.search_population)
        else:
            searched, search_record = config.searched, {"how": f"given: {config.searched}"}
        spec = {SEARCHED: searched}
        n = len(make_task_layers(module))
        baselines = list(config.budget_schemes or ("last-k=1", "bias-only", *(f"last-k={k}" for k in range(2, n + 1))))
        quant = [(s, spec.get(s, s)) for s in config.quant_schemes]
        budget = [(s, s) for s in baselines] + [(SEARCHED, searched)] if config.schemes_table else []

        jobs: list[Job] = [(sp, arm, seed) for _, sp in quant for arm in config.arms for seed in range(config.seeds)]
        jobs += [(sp, INT8_QAS.key, seed) for _, sp in budget for seed in range(config.seeds)]
        print(f"{len(dict.fromkeys(jobs))} fine-tuning runs ({config.recipe.steps} steps each) on {config.jobs} "
              f"process(es)...", file=out, flush=True)
        results = run_jobs(module, config.recipe, train, test, jobs, workers=config.jobs, progress=config.progress)
        memory: dict[tuple[str, str, str], int] = {}

        def peak(sp: str, storage: str, grad_precision: str = "f32") -> int:
            if (sp, storage, grad_precision) not in memory:
                memory[sp, storage, grad_precision] = planned_peak_sram(module, sp, weight_storage=storage,
                                                                        grad_precision=grad_precision)
            return memory[sp, storage, grad_precision]

        arms_info = {}
        for key in config.arms if quant else ():
            arm = ARMS[key]
            graph = training_graph(module, quant[0][1], arm, config.recipe)
            scales = grad_scales(graph)
            example = results[quant[0][1], key, 0]
            arms_info[key] = {
                **asdict(arm),
                "grad_scale_min": float(scales.min()), "grad_scale_max": float(scales.max()),
                "sram_dtypes": sorted(set(example.sram_dtypes.values())),
                "accuracy_before": pretrained_accuracy(module, arm, test),
            }

        quant_rows = []
        for name, sp in quant:
            rows = []
            for key in config.arms:
                runs = [results[sp, key, s] for s in range(config.seeds)]
                rows.append({
                    "arm": key,
                    "peak_sram_bytes": None if ARMS[key].relaxed else peak(sp, ARMS[key].weight_storage,
                                                                            ARMS[key].grad_precision),
                    "accuracy": _stats([r.accuracy for r in runs]),
                    "loss_first": float(np.mean([r.loss_first for r in runs])),
                    "loss_last": float(np.mean([r.loss_last for r in runs])),
                    "changed_fraction": float(np.mean([r.changed_fraction for r in runs])),
                })
            quant_rows.append({"scheme": name, "spec": sp, "trains": describe_scheme(module, sp), "rows": rows,
                               "bar": quant_bar(rows)})

        budget_rows = []
        for name, sp in budget:
            accs = [results[sp, INT8_QAS.key, s].accuracy for s in range(config.seeds)]
            mem = peak(sp, "f32")
            budget_rows.append({"scheme": name if name != SEARCHED else f"searched {config.budget_kb:g} KB", "spec": sp,
                                "trains": describe_scheme(module, sp), "peak_sram_bytes": mem,
                                "fits": mem <= int(config.budget_kb * 1024), "accuracy": _stats(accs)})
        document = {
            "task": {"train_images": int(len(train[0])), "test_images": int(len(test[0]))},
            "recipe": asdict(config.recipe),
            "recipe_text": config.recipe.describe(config.seeds),
            "seeds": config.seeds,
            "seed_orders": [SEED_BASE + s for s in range(config.seeds)],
            "budget_kb": config.budget_kb,
            "searched": {"spec": searched, **search_record},
            "arms": arms_info,
            "quantization": quant_rows,
            "schemes": {"rows": budget_rows, "bar": budget_bar(budget_rows, config.budget_kb)} if budget else None,
            "seconds": time.monotonic() - started,
        }
    finally:
        tmp.cleanup()
    return document


def make_task_layers(module: ModuleOp) -> list[Layer]:
    """The model's conv layers in schemes.json numbering (the classifier last)."""
    from qtrain.search import forward_function
    from qtrain.transforms.schemes import network_layers

    return network_layers(forward_function(module))


def quant_bar(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """(a)'s bars for one trainable set (those whose arms were run)."""
    by = {r["arm"]: r["accuracy"] for r in rows}
    bar: dict[str, Any] = {}
    if FP32.key in by and INT8_QAS.key in by:
        delta = by[INT8_QAS.key]["mean"] - by[FP32.key]["mean"]
        paired = np.subtract(by[INT8_QAS.key]["per_seed"], by[FP32.key]["per_seed"])
        bar["qas_minus_fp32_points"] = 100 * delta
        bar["qas_minus_fp32_paired_std_error_points"] = (
            100 * float(np.std(paired, ddof=1) / math.sqrt(len(paired))) if len(paired) > 1 else 0.0)
        bar["qas_within_1_point_of_fp32"] = abs(delta) <= 0.01
        bar["qas_not_1_point_below_fp32"] = delta >= -0.01
    if INT8_NO_QAS.key in by and INT8_QAS.key in by:
        a, b = by[INT8_QAS.key]["per_seed"], by[INT8_NO_QAS.key]["per_seed"]
        gap = by[INT8_QAS.key]["mean"] - by[INT8_NO_QAS.key]["mean"]
        se = _std_error(a, b)
        bar["no_qas_gap_points"] = 100 * gap
        bar["no_qas_gap_std_error_points"] = 100 * se
        bar["no_qas_measurably_worse"] = gap > 0.01 and gap > 2 * se
    if INT8_QAS.key in by:
        storages = {}
        for storage, arm in STORAGE_ARMS.items():
            if arm.key in by and arm is not INT8_QAS:
                paired = np.subtract(by[arm.key]["per_seed"], by[INT8_QAS.key]["per_seed"])
                storages[storage] = {
                    "minus_f32_points": 100 * float(np.mean(paired)),
                    "paired_std_error_points": 100 * float(np.std(paired, ddof=1) / math.sqrt(len(paired)))
                    if len(paired) > 1 else 0.0,
                    "within_1_point_of_f32": bool(np.mean(paired) >= -0.01),
                }
        if storages:
            bar["storage_vs_f32"] = storages
            # cheapest first: i8 (stochastic) and i8-nearest cost the same, then i16, then f32
            bar["cheapest_within_1_point"] = next(
                (s for s in ("i8", "i8-nearest", "i16") if storages.get(s, {}).get("within_1_point_of_f32")), "f32")
    for narrow, wide in ((INT8_QAS_BF16, INT8_QAS), (INT8_QAS_I8_BF16, INT8_QAS_I8)):
        if narrow.key in by and wide.key in by:  # issue 14: bf16 gradients against fp32 gradients
            delta = by[narrow.key]["mean"] - by[wide.key]["mean"]
            bar[f"{narrow.key}_minus_{wide.key}_points"] = 100 * delta
            bar[f"{narrow.key}_minus_{wide.key}_std_error_points"] = 100 * _std_error(
                by[narrow.key]["per_seed"], by[wide.key]["per_seed"])
            bar[f"{narrow.key}_within_1_point"] = delta >= -0.01
    return bar


def budget_bar(rows: list[dict[str, Any]], budget_kb: float) -> dict[str, Any]:
    """(b)'s bar: the searched scheme fits and beats (>=) bias-only and every last-k within the budget."""
    searched = rows[-1]
    within = [r for r in rows[:-1] if r["fits"]]
    beaten_by = [r["scheme"] for r in within if r["accuracy"]["mean"] > searched["accuracy"]["mean"]]
    return {"budget_kb": budget_kb, "fits": searched["fits"], "beaten_by": beaten_by,
            "met": bool(searched["fits"] and not beaten_by)}


# -- the tables ------------------------------------------------------------------------------------------


def _acc(stats: dict[str, Any]) -> str:
    runs = " ".join(f"{100 * a:5.1f}" for a in stats["per_seed"])
    return f"{100 * stats['mean']:6.1f} ± {100 * stats['std']:4.1f}   {runs}"


def _kb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KB"


def format_tables(doc: dict[str, Any]) -> str:
    lines = [
        f"recipe (every arm, every scheme): {doc['recipe_text']}",
        f"test accuracy on the {doc['task']['test_images']} held-out images, %: mean ± std over {doc['seeds']} "
        "seeds, then each seed",
    ]
    if doc["quantization"]:
        lines += _format_quantization(doc)
    schemes = doc["schemes"]
    if schemes is not None:
        lines += _format_schemes(doc)
    lines.append(f"\n({doc['seconds']:.0f} s)")
    return "\n".join(lines)


def _format_quantization(doc: dict[str, Any]) -> list[str]:
    arms = doc["arms"]
    lines = [
        "",
        "(a) quantization: same network, trainable set, data order, steps and learning rates",
        "  before fine-tuning: " + ", ".join(dict.fromkeys(
            f"{'fp32 simulation' if v['relaxed'] else 'int8'} {100 * v['accuracy_before']:.1f}%"
            for v in arms.values())),
        "  arms: " + "; ".join(
            f"{k}: {'relaxed float64' if v['relaxed'] else 'int8'}, grad_scale "
            f"{v['grad_scale_min']:.3g}..{v['grad_scale_max']:.3g}, SRAM copies {'/'.join(v['sram_dtypes'])}"
            for k, v in arms.items()),
        "  loss: mean training loss of the first and the last 10% of the steps; changed: share of the trained "
        "elements whose value the forward reads (int8/int32, or float64 when relaxed) moved from the pre-trained one",
    ]
    for block in doc["quantization"]:
        lines += ["", f"  trainable set: {block['scheme']}: {block['trains']}",
                  f"    {'arm':<36} {'peak SRAM':>9}  {'acc %':>6}   {'std':>4}   per seed"
                  f"{'':{max(0, 6 * doc['seeds'] - 8)}}   loss first -> last 10%   changed"]
        fp32 = next((r for r in block["rows"] if r["arm"] == FP32.key), None)
        for r in block["rows"]:
            delta = (f"  ({100 * (r['accuracy']['mean'] - fp32['accuracy']['mean']):+.1f} vs fp32)"
                     if fp32 is not None and r is not fp32 else "")
            lines.append(f"    {ARMS[r['arm']].label:<36} {_kb(r['peak_sram_bytes']):>9}  {_acc(r['accuracy'])}   "
                         f"{r['loss_first']:6.3f} -> {r['loss_last']:6.3f}   "
                         f"{100 * r['changed_fraction']:6.1f}%{delta}")
        bar = block["bar"]
        if "qas_minus_fp32_points" in bar:
            d = bar["qas_minus_fp32_points"]
            lines.append(f"    bar: int8 + QAS vs fp32 {d:+.1f} points (per-seed paired difference, std error "
                         f"{bar['qas_minus_fp32_paired_std_error_points']:.1f}): "
                         f"{'MET' if bar['qas_not_1_point_below_fp32'] else 'NOT MET'} (not more than 1 point below; "
                         f"|difference| <= 1: {'yes' if bar['qas_within_1_point_of_fp32'] else 'no'})")
        if "no_qas_gap_points" in bar:
            lines.append(f"    bar: int8 without QAS {bar['no_qas_gap_points']:.1f} points below int8 + QAS "
                         f"(std error {bar['no_qas_gap_std_error_points']:.1f}): "
                         f"{'MET' if bar['no_qas_measurably_worse'] else 'NOT MET'} (measurably worse)")
        for storage, s in bar.get("storage_vs_f32", {}).items():
            lines.append(f"    weight storage {storage} vs f32: {s['minus_f32_points']:+.1f} points (paired std error "
                         f"{s['paired_std_error_points']:.1f}): "
                         f"{'within' if s['within_1_point_of_f32'] else 'NOT within'} 1 point")
        if "cheapest_within_1_point" in bar:
            lines.append(f"    cheapest weight storage within 1 point of f32: {bar['cheapest_within_1_point']}")
        for narrow, wide in ((INT8_QAS_BF16, INT8_QAS), (INT8_QAS_I8_BF16, INT8_QAS_I8)):
            key = f"{narrow.key}_minus_{wide.key}"
            if f"{key}_points" in bar:
                lines.append(f"    bar: {narrow.key} vs {wide.key} (bf16 vs fp32 gradients) "
                             f"{bar[f'{key}_points']:+.1f} points (std error {bar[f'{key}_std_error_points']:.1f}): "
                             f"{'MET' if bar[f'{narrow.key}_within_1_point'] else 'NOT MET'} "
                             f"(not more than 1 point below)")
    return lines


def _format_schemes(doc: dict[str, Any]) -> list[str]:
    schemes = doc["schemes"]
    budget = schemes["bar"]["budget_kb"]
    lines = ["", f"(b) sparse-update schemes at a {budget:g} KB budget, int8 + QAS (the device's arithmetic), "
              "planned peak SRAM with reorder",
              f"    {'scheme':<18} {'peak SRAM':>9} {'fits':>5}  {'acc %':>6}   {'std':>4}   per seed"]
    for r in sorted(schemes["rows"], key=lambda r: (not r["fits"], r["peak_sram_bytes"], r["scheme"])):
        lines.append(f"    {r['scheme']:<18} {_kb(r['peak_sram_bytes']):>9} {'yes' if r['fits'] else 'no':>5}  "
                     f"{_acc(r['accuracy'])}")
    searched = schemes["rows"][-1]
    lines.append(f"    {searched['scheme']} ({doc['searched']['how']}) trains {searched['trains']}")
    bar = schemes["bar"]
    lines.append(f"    bar: searched fits and >= bias-only and every last-k within {budget:g} KB: "
                 f"{'MET' if bar['met'] else 'NOT MET'}"
                 + ("" if bar["fits"] else " (over budget)")
                 + (f" (beaten by {', '.join(bar['beaten_by'])})" if bar["beaten_by"] else ""))
    return lines


def bars_met(doc: dict[str, Any]) -> bool:
    ok = doc["schemes"] is None or bool(doc["schemes"]["bar"]["met"])
    for block in doc["quantization"]:
        bar = block["bar"]
        ok &= bool(bar.get("qas_not_1_point_below_fp32", True)) and bool(bar.get("no_qas_measurably_worse", True))
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BenchConfig()
    parser.add_argument("--seeds", type=int, default=defaults.seeds, help=f"runs per row (sample orders, "
                        f"{defaults.seeds})")
    parser.add_argument("--steps", type=int, default=defaults.recipe.steps, help="SGD steps per run (2000)")
    recipe = defaults.recipe
    parser.add_argument("--lr", type=float, default=recipe.lr, help=f"weight learning rate ({recipe.lr:g})")
    parser.add_argument("--bias-lr", type=float, default=recipe.bias_lr,
                        help=f"bias learning rate ({recipe.bias_lr:g})")
    parser.add_argument("--budget-kb", type=float, default=defaults.budget_kb, help="SRAM budget of (b) (24)")
    parser.add_argument("--searched", help="train this scheme spec as the searched one instead of searching")
    parser.add_argument("--quant-schemes", default=",".join(defaults.quant_schemes),
                        help="trainable sets of (a), comma-separated; 'searched' is the searched scheme "
                             "(default searched,last-k=3)")
    parser.add_argument("--arms", help=f"arms of (a) (default {','.join(ARMS)})")
    parser.add_argument("--weight-storage", metavar="LIST",
                        help="int8 + QAS arms by weight storage, comma-separated from f32,i16,i8,i8-nearest "
                             "(added to --arms; with it, --arms defaults to none)")
    parser.add_argument("--tables", choices=["a", "b", "ab"], default="ab",
                        help="which tables: (a) quantization, (b) schemes at the budget (default ab)")
    parser.add_argument("--jobs", type=int, default=defaults.jobs, help="parallel fine-tuning processes (2)")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms is not None else (
        [] if args.weight_storage else list(defaults.arms))
    for storage in (s.strip() for s in (args.weight_storage or "").split(",") if s.strip()):
        if storage not in STORAGE_ARMS:
            parser.error(f"unknown weight storage '{storage}' (choose from {', '.join(STORAGE_ARMS)})")
        arms.append(STORAGE_ARMS[storage].key)
    config = BenchConfig(
        seeds=args.seeds, recipe=Recipe(args.steps, args.lr, args.bias_lr), budget_kb=args.budget_kb,
        quant_schemes=tuple(s.strip() for s in args.quant_schemes.split(",") if s.strip() and "a" in args.tables),
        schemes_table="b" in args.tables,
        arms=tuple(dict.fromkeys(arms)), searched=args.searched, jobs=args.jobs,
        progress=not args.quiet,
    )
    try:
        doc = run_bench(config)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_tables(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if bars_met(doc) else 1


if __name__ == "__main__":
    run_tool("bench_accuracy", lambda: main(sys.argv[1:]), sys.argv[1:])
