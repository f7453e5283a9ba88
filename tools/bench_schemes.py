"""Searched sparse-update schemes vs bias-only and last-k on the digits task (inverted contrast).

    python -m qtrain.tools.bench_schemes [--budgets 8,12,16,24] [--seeds 3] [--steps 2000] [--lr 0.01]
                                         [--bias-lr 0.001] [--repeats 3] [--jobs 2] [--cache FILE.json]
                                         [--schemes-out FILE.json] [--json OUT.json]

The task is examples/digits/make_task.py's (built in memory). Every scheme is fine-tuned with the same
recipe (int8 graph with QAS in the interpreter, `--steps` steps of batch 1 on the whole train split, in
seeded random order) and scored on the held-out test split; accuracy is the mean over `--seeds` runs
that differ in sample order. Memory is the planned peak SRAM (`qtrain-plan-memory`, with reorder).

Schemes: classifier only, bias-only, last-k=K for every K, and for each budget the scheme
`qtrain.search` finds (contribution analysis on a validation split carved from the
train split, then evolutionary search), trained through its `FILE.json#digits/<B>kb` spec.

The issue's bar, checked per budget: the searched scheme fits the budget, and its accuracy is >= that of
bias-only and of every last-k that fits the same budget (baselines with more memory than the budget are
shown for reference). Exit status 1 when the bar is not met.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtrain.tools.plumbing import ArgumentParser, run_tool
from qtrain.transforms.recipe import FINE_TUNE_RECIPE

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


def load_make_task():  # noqa: ANN201 (the examples/digits/make_task.py module)
    sys.path.insert(0, str(DIGITS))
    try:
        import make_task  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DIGITS))
    return make_task


@dataclass
class Row:
    label: str
    spec: str
    memory: int
    accuracies: list[float]
    budget_kb: float | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="8,12,16,24", help="budgets in KB, comma-separated (8,12,16,24)")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning runs per scheme on the test split (3)")
    parser.add_argument("--steps", type=int, default=2000, help="steps per fine-tuning run (2000)")
    parser.add_argument("--lr", type=float, default=FINE_TUNE_RECIPE.lr)
    parser.add_argument("--bias-lr", type=float, default=FINE_TUNE_RECIPE.bias_lr)
    parser.add_argument("--repeats", type=int, default=3, help="runs per contribution measurement (3)")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="parallel fine-tuning processes (2)")
    parser.add_argument("--cache", type=Path, help="contribution analysis cache (JSON)")
    parser.add_argument("--schemes-out", type=Path, help="keep the searched schemes in this schemes.json file")
    parser.add_argument("--json", type=Path, help="also write all figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]

    from qtrain.search import (
        EvolutionSettings,
        FineTuneRecipe,
        FineTuneRunner,
        MemoryPlanner,
        contribution_analysis,
        evolutionary_search,
        format_analysis,
        format_choice,
        planned_peak_sram,
        split_validation,
        write_schemes_json,
    )
    from qtrain.tools.plumbing import stage_bars

    make_task = load_make_task()
    module = make_task.import_model()
    task = make_task.build_task(module)
    train = (task["image"], task["label"])
    test = (task["test_image"], task["test_label"])
    recipe = FineTuneRecipe(steps=args.steps, lr=args.lr, bias_lr=args.bias_lr)
    planner = MemoryPlanner(module)
    n = len(planner.convs)
    on_progress = stage_bars("bench_schemes", not args.quiet)

    # 1. the search, once per budget, on the train split only
    fit_idx, val_idx = split_validation(len(train[0]), args.val_fraction, args.search_seed)
    analysis = contribution_analysis(
        module, (train[0][fit_idx], train[1][fit_idx]), (train[0][val_idx], train[1][val_idx]), recipe=recipe,
        repeats=args.repeats, seed=args.search_seed, jobs=args.jobs, cache_path=args.cache, on_progress=on_progress,
    )
    print(format_analysis(analysis))
    print(f"  ({analysis.runs} fine-tuning runs in {analysis.seconds:.0f} s, {analysis.cached_runs} from the cache)")
    tmp = tempfile.TemporaryDirectory(prefix="bench-schemes-")
    schemes_file = args.schemes_out or Path(tmp.name) / "searched.json"
    searched: list[Row] = []
    for budget in budgets:
        result = evolutionary_search(planner.convs, analysis.gain, planner.peak_sram_bytes, int(budget * 1024),
                                     EvolutionSettings(seed=args.search_seed), on_progress=on_progress)
        print(format_choice(result, analysis, planner.convs))
        spec = write_schemes_json(schemes_file, "digits", budget, result.candidate)
        searched.append(Row(f"searched {budget:g} KB", spec, planned_peak_sram(module, spec), [], budget))

    # 2. every scheme fine-tuned on the whole train split, scored on the test split
    baselines = [
        Row("classifier only", "last-k=1", 0, []),
        Row("bias-only", "bias-only", 0, []),
        *(Row(f"last-k={k}", f"last-k={k}", 0, []) for k in range(2, n + 2)),
    ]
    for row in baselines:
        row.memory = planned_peak_sram(module, row.spec)
    rows = baselines + searched
    runner = FineTuneRunner(module, recipe, train, test, jobs=args.jobs, on_progress=on_progress)
    jobs = [(row.spec, (1000 + s,)) for row in rows for s in range(args.seeds)]
    results = runner.run(jobs, "test-split runs")
    for i, row in enumerate(rows):
        row.accuracies = results[i * args.seeds:(i + 1) * args.seeds]

    print(f"\ndigits, inverted contrast: {len(train[0])} train / {len(test[0])} test images, {args.steps} steps "
          f"(lr {args.lr:g}, bias lr {args.bias_lr:g}), test accuracy mean +- std over {args.seeds} seeds")
    print(f"{'scheme':<18} {'peak SRAM':>10} {'test acc %':>11} {'+-':>5}   runs")
    for row in sorted(rows, key=lambda r: (r.memory, r.label)):
        runs = " ".join(f"{100 * a:5.1f}" for a in row.accuracies)
        print(f"{row.label:<18} {row.memory / 1024:>7.1f} KB {100 * row.mean:>11.1f} {100 * row.std:>5.1f}   {runs}")

    print("\nthe bar, per budget: searched fits and is >= bias-only and every last-k within the budget")
    ok = True
    verdicts = []
    for row in searched:
        assert row.budget_kb is not None
        budget_bytes = int(row.budget_kb * 1024)
        fits = row.memory <= budget_bytes
        within = [b for b in baselines if b.memory <= budget_bytes]
        beaten_by = [b for b in within if b.mean > row.mean]
        best = max(within, key=lambda b: b.mean)
        above = [b for b in baselines if b.memory > budget_bytes and b.mean > row.mean]
        verdict = fits and not beaten_by
        ok &= verdict
        verdicts.append({"budget_kb": row.budget_kb, "fits": fits, "met": verdict,
                         "beaten_by": [b.label for b in beaten_by]})
        print(f"  {row.budget_kb:g} KB: searched {row.memory / 1024:.1f} KB {100 * row.mean:.1f}% | best baseline "
              f"within budget {best.label} ({best.memory / 1024:.1f} KB) {100 * best.mean:.1f}% | "
              f"{'MET' if verdict else 'NOT MET'}"
              + ("" if fits else " (over budget)")
              + (f" (beaten by {', '.join(b.label for b in beaten_by)})" if beaten_by else "")
              + (f"; more accurate with more memory than the budget: {', '.join(b.label for b in above)}"
                 if above else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "analysis": analysis.as_json(),
            "rows": [{"label": r.label, "scheme": r.spec, "peak_sram_bytes": r.memory, "accuracies": r.accuracies,
                      "budget_kb": r.budget_kb} for r in rows],
            "bar": verdicts,
        }, indent=2) + "\n")
    tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    run_tool("bench_schemes", lambda: main(sys.argv[1:]), sys.argv[1:])
