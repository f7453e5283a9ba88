"""`qtrain-search-scheme`: find a sparse-update scheme for a task under an SRAM budget (MCUNetV3 §3.2).

    qtrain-search-scheme MODEL(.onnx|.pkl|.mlir) --data TASK.npz --budget-kb B -o scheme.json
                         [--model-name NAME] [--steps 2000] [--lr 0.01] [--bias-lr 0.001]
                         [--warmup-steps 0] [--final-lr-ratio 1] [--repeats 3]
                         [--val-fraction 0.2] [--seed 0] [--population 50] [--generations 40]
                         [--layers I,J,...] [--max-layers K] [--bias-step S] [--refine K]
                         [--jobs N] [--cache FILE.json] [--calibration DATA.npz]
                         [--num-classes 10] [--weight-storage f32|i16|i8|i8-nearest] [--no-reorder] [--lite-residual]
                         [--engine host|interpreter] [--scheduler tcp://HOST:PORT] [--quiet] [--debug]

1. Contribution analysis: short fine-tuning runs of the int8 training graph on the task's training
   split (`image`, `label`), scored on a validation split carved from it (`--val-fraction`, seeded;
   `test_image`/`test_label` are never read): the gain of the biases of the last k layers over the
   classifier alone, and of each layer's weight at ratios 1/8, 1/4, 1/2, 1 of its input channels over
   the baseline (bias-only, or the deepest bias depth within the budget when bias-only is over it); a bias
   depth or weight slice that no scheme within the budget can train is not measured (shown as '-');
   `--max-layers K` keeps the weights of only the K deepest convs that fit (depth as a cheap proxy of a
   weight's gain, see `deepest_feasible_layers`). On a large model the analysis is most of the time:
   `--bias-step S` measures every S-th bias depth, `--refine K` every layer's weight at 1/4 and the other
   ratios only for the K layers that gained most (the search chooses among what was measured).
   `--cache FILE.json` keeps the runs for the next search on the same model, data and recipe.
   With `--lite-residual`, TinyTL's lite residual modules are candidates too: the gain over the baseline of
   the module of each block but the first (inserted by `qtrain-lite-residual`, calibrated once on the
   fine-tuning images).
   The runs run the host build of the generated C (`--engine host`, the default: each distinct training
   graph compiled once as `qtrain-compile --target host` would, run as `qtrain-run` runs it; it needs
   clang) or the numpy golden model (`--engine interpreter`, several times slower), in `--jobs` local
   processes, or on the workers of a Dask distributed cluster with `--scheduler tcp://HOST:PORT`
   (`pip install qtrain[dask]`; the workers need qtrain, and clang for the host engine).
2. Evolutionary search: the scheme with the largest summed gain whose planned peak SRAM (the real
   pipeline: autodiff, sparse-update, dead-gradient-elim, reorder, plan-memory) fits `--budget-kb`; a
   chosen module is listed as `lite_residual_blocks` in the scheme's entry.
3. Writes (or adds to) scheme.json in the schemes.json format, `{MODEL: {"<B>kb": {...}}}`, so
   `scheme.json#MODEL/<B>kb` works as `--scheme` on every command line; prints the analysis and the choice.

TASK.npz: `image` int8 NHWC quantized with the model's input parameters (or float NCHW, quantized here),
`label` int [N]; an optional `input_q` [scale, zero_point] is checked against the model (see
examples/digits/make_task.py). Train the result with the same `--lr`/`--bias-lr` it was searched with.
Each run trains at a constant rate by default (the digits sweep at `qtrain.search.FineTuneRecipe`);
`--steps 1000 --warmup-steps 50 --final-lr-ratio 0.1` measures with qtrain-compile's default schedule instead
(the reference models' recipe, docs/recipe.md): warm-up, then cosine decay over the run's --steps.
Exit codes: 0 ok, 2 bad input or an infeasible budget (one line on stderr; --debug for a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from qtrain.errors import UserError
from qtrain.tools.plumbing import (
    LEARNING_RATE,
    ArgumentParser,
    UsageError,
    check_input_q,
    check_labels,
    check_output,
    labels_int32,
    number,
    read_npz,
    run_tool,
)
from qtrain.transforms.recipe import DEFAULT_WEIGHT_STORAGE, WEIGHT_STORAGES

BUDGET_KB = number(float, low=0, low_open=True, high=2**21, what="an SRAM budget in KB")
"""--budget-kb: positive and finite (at most 2 GB)."""

CALIBRATION_IMAGES = 16
"""Fine-tuning images the lite residual modules' scales are calibrated on (--lite-residual)."""


class TaskError(UserError):
    """The task npz is missing, unreadable, or does not match the model."""


def load_task(path: Path, module: Any) -> tuple[np.ndarray, np.ndarray]:
    """(int8 NHWC images, int64 labels) of TASK.npz's training split, checked against `module`'s @forward."""
    from xdsl.dialects.builtin import TensorType, f32, i8

    from qtrain.frontends.onnx import input_quant, quantize_images
    from qtrain.search import forward_function

    arrays = read_npz(path, "task")
    for key in ("image", "label"):
        if key not in arrays:
            raise TaskError(f"{path} has no '{key}' array (keys present: {', '.join(sorted(arrays)) or 'none'})")
    images, labels = np.asarray(arrays["image"]), np.asarray(arrays["label"])
    forward = forward_function(module)
    arg = forward.function_type.inputs.data[0]
    out = forward.function_type.outputs.data[0]
    if not isinstance(arg, TensorType) or arg.element_type not in (i8, f32):
        raise TaskError(f"@forward takes {arg}, expected an int8 NHWC image")
    _, h, w, c = arg.get_shape()
    if images.dtype == np.int8:
        if images.ndim != 4 or images.shape[1:] != (h, w, c):
            raise TaskError(f"{path}: image must be int8 NHWC [N, {h}, {w}, {c}], got {list(images.shape)}")
        q = input_quant(module)
        check_input_q(arrays, path, q.scale, q.zp)
    elif np.issubdtype(images.dtype, np.floating):
        if images.ndim != 4 or images.shape[1:] != (c, h, w):
            raise TaskError(f"{path}: float image must be NCHW [N, {c}, {h}, {w}], got {list(images.shape)}")
        images = quantize_images(images, module)
    else:
        raise TaskError(f"{path}: image must be int8 NHWC or float NCHW, got {images.dtype}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
        raise TaskError(f"{path}: label must be integers of shape [{len(images)}], got {labels.dtype} "
                        f"{list(labels.shape)}")
    labels = labels_int32(labels, path)
    classes = int(np.prod(out.get_shape())) if isinstance(out, TensorType) else 0
    if classes:
        check_labels(labels, classes, path)
    if len(images) < 2:
        raise TaskError(f"{path}: {len(images)} training image(s); the search needs at least 2")
    return images, labels.astype(np.int64)


def load_model(path: Path, num_classes: int, calibration: Path | None) -> Any:
    from qtrain.tools.qtrain_compile import load_any

    if not path.is_file():
        raise UserError(f"no such model file: {path}")
    module = load_any(path, num_classes, calibration)
    if any(getattr(o, "sym_name", None) is not None and o.sym_name.data == "train_step" for o in module.ops):
        raise UserError(f"{path}: already has @train_step; give the forward-only model")
    return module


def parse_layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--layers: expected comma-separated layer indexes, got '{text}'") from None


def deepest_feasible_layers(planner: Any, layers: list[int] | None, count: int, budget_bytes: int) -> list[int]:
    """--max-layers: the `count` deepest of `layers` (default: all backbone convs) whose smallest weight
    slice fits the budget with the classifier alone (the others cannot be trained within it).

    Depth is the cheap proxy for a weight's contribution: MCUNetV3 (Fig. 5) finds the gains of weight
    updates in the later layers, and every published scheme of schemes.json trains weights only in the
    last ~45% of its model's convs (mcunet-5fps: convs 21..39 of 42). It costs no fine-tuning run, so
    the analysis on a large model can afford more steps per run on the layers it keeps."""
    from qtrain.search.candidates import classifier_only, with_weight

    n = len(planner.convs)
    chosen: list[int] = []
    for i in sorted(range(n) if layers is None else set(layers), reverse=True):
        if not 0 <= i < n:
            raise UsageError(f"--layers: {i} is not a backbone conv (0..{n - 1})")
        smallest = planner.convs[i].ratio_options()[1]
        if planner.peak_sram_bytes(with_weight(classifier_only(n), i, smallest)) <= budget_bytes:
            chosen.append(i)
            if len(chosen) == count:
                break
    return sorted(chosen)


def search(args: argparse.Namespace) -> dict[str, Any]:
    from qtrain.search import MemoryPlanner
    from qtrain.search.host_build import check_engine

    inputs = [args.model, args.data, args.cache, args.calibration]
    check_output(args.output, inputs, "schemes file")  # before minutes of fine-tuning
    check_engine(args.engine)
    if args.warmup_steps and args.warmup_steps >= args.steps:
        raise UsageError(f"--warmup-steps {args.warmup_steps} must be below --steps {args.steps}")
    module = load_model(args.model, args.num_classes, args.calibration)
    layers = parse_layers(args.layers)
    # --jobs local processes plan the evolution's candidates ahead as well (not the cluster's workers:
    # a plan takes a second, a round trip to the cluster is not worth it).
    planner = MemoryPlanner(module, reorder=not args.no_reorder, weight_storage=args.weight_storage, jobs=args.jobs)
    try:
        return _search(args, module, planner, inputs, layers)
    finally:
        planner.close()


def _search(args: argparse.Namespace, module: Any, planner: Any, inputs: list[Path | None],
            layers: list[int] | None) -> dict[str, Any]:
    from qtrain.search import (
        EvolutionSettings,
        FineTuneRecipe,
        InfeasibleBudgetError,
        SearchError,
        classifier_only,
        contribution_analysis,
        evolutionary_search,
        format_analysis,
        format_choice,
        format_kb,
        split_validation,
        write_schemes_json,
    )
    from qtrain.tools.plumbing import stage_bars

    budget_bytes = int(args.budget_kb * 1024)
    # Check the budget before spending minutes on fine-tuning runs.
    minimum = planner.peak_sram_bytes(classifier_only(len(planner.convs)))
    if minimum > budget_bytes:
        raise InfeasibleBudgetError(budget_bytes, minimum)
    if args.max_layers is not None:
        layers = deepest_feasible_layers(planner, layers, args.max_layers, budget_bytes)
    images, labels = load_task(args.data, module)
    fit_idx, val_idx = split_validation(len(images), args.val_fraction, args.seed)
    modules: list[int] = []
    calibration = None
    if args.lite_residual:
        from qtrain.search import module_blocks
        from qtrain.transforms.lite_residual import calibrate

        modules = module_blocks(module)
        if not modules:
            raise SearchError("--lite-residual: the model has no block a lite residual module can be added to")
        calibration = calibrate(module, images[fit_idx][:CALIBRATION_IMAGES], modules)
        planner.calibration = calibration
    recipe = FineTuneRecipe(steps=args.steps, lr=args.lr, bias_lr=args.bias_lr, weight_storage=args.weight_storage,
                            warmup_steps=args.warmup_steps, final_lr_ratio=args.final_lr_ratio,
                            horizon=args.steps if args.final_lr_ratio != 1.0 else 0)
    if args.scheduler is not None:
        from qtrain.search.dask_cluster import connect

        connect(args.scheduler).close()  # an unreachable scheduler is bad input: say so before any run
    on_progress = stage_bars("qtrain-search-scheme", not args.quiet)
    analysis = contribution_analysis(
        module, (images[fit_idx], labels[fit_idx]), (images[val_idx], labels[val_idx]), recipe=recipe,
        repeats=args.repeats, seed=args.seed, layers=layers, jobs=args.jobs, cache_path=args.cache,
        on_progress=on_progress, modules=modules, calibration=calibration, engine=args.engine,
        scheduler=args.scheduler, within_budget=lambda c: planner.peak_sram_bytes(c) <= budget_bytes,
        bias_step=args.bias_step, refine=args.refine,
    )
    print(format_analysis(analysis))
    print(f"  ({analysis.runs} fine-tuning runs in {analysis.seconds:.1f} s, {analysis.cached_runs} from the cache)")
    settings = EvolutionSettings(population=args.population, generations=args.generations, seed=args.seed)
    result = evolutionary_search(
        planner.convs, analysis.gain, planner.peak_sram_bytes, budget_bytes, settings,
        searchable=list(analysis.weight_accuracy), modules=modules, on_progress=on_progress,
        depths=analysis.measured_depths(), ratios=analysis.measured_ratios(),
        prefetch=planner.prefetch if args.jobs > 1 else None,
    )
    print(format_choice(result, analysis, planner.convs))
    model_name = args.model_name or args.model.stem
    record = {
        "budget_bytes": budget_bytes,
        "peak_sram_bytes": result.peak_sram_bytes,
        "predicted_gain": result.gain,
        "contribution": analysis.as_json(),
        "evolution": asdict(settings),
        "reorder": not args.no_reorder,
        "data": str(args.data),
    }
    spec = write_schemes_json(args.output, model_name, args.budget_kb, result.candidate, record, inputs)
    print(f"wrote {spec}  ({format_kb(result.peak_sram_bytes)} of {format_kb(budget_bytes)}; train it with "
          f"--lr {args.lr:g}{f' --bias-lr {args.bias_lr:g}' if args.bias_lr is not None else ''})")
    return {"scheme": spec, **result.candidate.entry(), "peak_sram_bytes": result.peak_sram_bytes,
            "predicted_gain": result.gain}


def build_parser() -> argparse.ArgumentParser:
    from qtrain.search import EvolutionSettings, FineTuneRecipe

    recipe, evo = FineTuneRecipe(), EvolutionSettings()
    p = ArgumentParser(prog="qtrain-search-scheme", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="model.onnx, a reference model .pkl, or forward-only .mlir")
    p.add_argument("--data", type=Path, required=True, metavar="TASK.npz", help="task with `image` and `label`")
    p.add_argument("--budget-kb", type=BUDGET_KB, required=True, help="peak SRAM budget in KB (1024 bytes)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="scheme.json", help="schemes file to write")
    p.add_argument("--model-name", help="key of the model in scheme.json (default: the model file's stem)")
    p.add_argument("--steps", type=number(int, low=0, high=10**9, what="a number of steps"), default=recipe.steps,
                   help=f"steps per fine-tuning run ({recipe.steps})")
    p.add_argument("--lr", type=LEARNING_RATE, default=recipe.lr, help=f"learning rate ({recipe.lr:g})")
    p.add_argument("--bias-lr", type=LEARNING_RATE, default=recipe.bias_lr,
                   help=f"bias learning rate ({recipe.bias_lr:g})")
    p.add_argument("--warmup-steps", type=number(int, low=0, high=10**9, what="a number of steps"),
                   default=recipe.warmup_steps,
                   help=f"linear learning-rate warm-up of each run ({recipe.warmup_steps}; with --final-lr-ratio: "
                        f"the schedule qtrain-compile builds into the firmware, over a horizon of --steps)")
    p.add_argument("--final-lr-ratio", type=number(float, low=0, high=1, what="a learning-rate ratio"),
                   default=recipe.final_lr_ratio,
                   help=f"cosine decay of each run's rate to this fraction at its last step ({recipe.final_lr_ratio:g}:"
                        f" a constant rate)")
    p.add_argument("--repeats", type=number(int, low=1, high=1000, what="a number of runs"), default=3,
                   help="runs per measurement, averaged (3)")
    p.add_argument("--val-fraction", type=number(float, low=0, high=1, low_open=True, high_open=True,
                                                 what="a validation share"), default=0.2,
                   help="validation share of the training split (0.2)")
    p.add_argument("--seed", type=number(int, low=0, high=2**32 - 1, what="a seed"), default=0,
                   help="seed of the split, the sample orders and the search (0)")
    p.add_argument("--population", type=number(int, low=2, high=100000, what="a population size"),
                   default=evo.population, help=f"population ({evo.population})")
    p.add_argument("--generations", type=number(int, low=1, high=100000, what="a number of generations"),
                   default=evo.generations,
                   help=f"generations at most ({evo.generations}; the search stops earlier once its parents have "
                        f"not changed for {evo.patience})")
    p.add_argument("--layers", help="analyse and search only these backbone convs' weights (e.g. 20,23,24)")
    p.add_argument("--max-layers", type=number(int, low=1, high=10000, what="a number of layers"),
                   help="analyse and search the weights of only the K deepest convs (of --layers) whose smallest "
                        "weight slice fits the budget: a cheap cut of the analysis on large models")
    p.add_argument("--bias-step", type=number(int, low=1, high=10000, what="a bias depth step"), default=1,
                   help="measure every S-th bias depth (and the deepest that fits) instead of every one; the search "
                        "chooses among those measured (1)")
    p.add_argument("--refine", type=number(int, low=0, high=10000, what="a number of layers"),
                   help="measure each analysed layer's weight at ratio 1/4 first, and the other ratios only for the "
                        "K layers that gained most (default: every ratio of every layer)")
    p.add_argument("--jobs", type=number(int, low=1, high=256, what="a number of processes"), default=1,
                   help="parallel fine-tuning processes (1)")
    p.add_argument("--engine", choices=["host", "interpreter"], default="host",
                   help="what runs the fine-tuning runs: the host build of the generated C (needs clang) or "
                        "the numpy golden model (host)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="send the fine-tuning runs to this Dask distributed scheduler instead of local processes")
    p.add_argument("--cache", type=Path, help="JSON file keeping fine-tuning results between searches")
    p.add_argument("--calibration", type=Path, help="npz of float NCHW images for an ONNX float model's PTQ")
    p.add_argument("--num-classes", type=number(int, low=2, high=1000, what="a number of classes"), default=10,
                   help="classifier rows of a .pkl model (10)")
    p.add_argument("--weight-storage", choices=WEIGHT_STORAGES, default=DEFAULT_WEIGHT_STORAGE,
                   help=f"SRAM copy of trained weights (default {DEFAULT_WEIGHT_STORAGE})")
    p.add_argument("--no-reorder", action="store_true", help="plan memory for the naive schedule")
    p.add_argument("--lite-residual", action="store_true",
                   help="TinyTL lite residual modules (every block but the first) are candidates too")
    p.add_argument("--json", action="store_true", help="print the result as JSON at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    return p


def main(argv: list[str] | None = None) -> None:
    args_list = list(sys.argv[1:] if argv is None else argv)

    def body() -> None:
        args = build_parser().parse_args(args_list)
        summary = search(args)
        if args.json:
            print(json.dumps(summary, indent=2))

    run_tool("qtrain-search-scheme", body, args_list)


if __name__ == "__main__":
    main()
