"""TinyTL lite residual modules as candidates of the scheme search (`qtrain-search-scheme --lite-residual`):
the candidate encoding (schemes.json `lite_residual_blocks`), the evolutionary search against the exhaustive
optimum, the contribution analysis of each module, the memory a module costs, and the CLI. The model has four
inverted-residual blocks (test/lit/Inputs/lite_residual_blocks.mlir); modules may go to blocks 1..3."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from testpaths import LIT_INPUTS

from qtrain.interpreter import load_module
from qtrain.search import (
    Candidate,
    EvolutionSettings,
    FineTuneRecipe,
    MemoryPlanner,
    backbone_convs,
    bias_only,
    classifier_only,
    contribution_analysis,
    evolutionary_search,
    fine_tune_accuracy,
    module_blocks,
    planned_peak_sram,
    split_validation,
    write_schemes_json,
)
from qtrain.search.candidates import trains_superset, with_module
from qtrain.search.fine_tune import Split
from qtrain.tools.qtrain_search_scheme import main as search_main
from qtrain.transforms.lite_residual import Calibration, calibrate
from qtrain.transforms.schemes import parse_scheme

MODEL = LIT_INPUTS / "lite_residual_blocks.mlir"


def task(n: int = 24, seed: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(-60, 60, (n, 8, 8, 3))
    images[..., 0] += 40 * (labels[:, None, None] - 1)  # a class signal the network can pick up
    return np.clip(images, -128, 127).astype(np.int8), labels.astype(np.int64)


def split_and_calibrate() -> tuple[Any, Split, Split, Calibration]:
    """The blocks model, its task's fit / validation parts, and every module's scales calibrated on the first."""
    module = load_module(MODEL)
    images, labels = task()
    fit_idx, val_idx = split_validation(len(images), 0.25, seed=0)
    fit, val = (images[fit_idx], labels[fit_idx]), (images[val_idx], labels[val_idx])
    return module, fit, val, calibrate(module, fit[0], [1, 2, 3])


def test_module_candidates_round_trip_through_schemes_json(tmp_path: Path) -> None:
    module = load_module(MODEL)
    assert module_blocks(module) == [1, 2, 3]
    n = len(backbone_convs(module))
    c = with_module(with_module(bias_only(n), 3), 1)
    assert c.lite_residual == (1, 3) and c.key().endswith("|lr1,3")
    assert c.entry()["lite_residual_blocks"] == [1, 3] and Candidate.from_entry(c.entry(), n) == c
    assert "lite_residual_blocks" not in bias_only(n).entry()
    assert trains_superset(c, bias_only(n)) and not trains_superset(bias_only(n), c)
    spec = write_schemes_json(tmp_path / "s.json", "blocks", 64, c)
    assert parse_scheme(spec).module_blocks == (1, 3)
    images, _ = task(4)
    cal = calibrate(module, images, [1, 3])
    # a module costs memory (its trainable copies, saved activations and gradients), and the spec written
    # for the candidate plans exactly as the candidate
    with_modules = planned_peak_sram(module, c.scheme(), calibration=cal)
    assert with_modules > planned_peak_sram(module, bias_only(n).scheme())
    assert planned_peak_sram(module, spec, calibration=cal) == with_modules


def test_evolution_finds_the_best_module_set_under_the_budget() -> None:
    """Synthetic gain and memory over every (bias depth, module set): the search's choice is the exhaustive
    optimum, for several budgets."""
    module = load_module(MODEL)
    convs = backbone_convs(module)
    n, blocks = len(convs), [1, 2, 3]
    rng = np.random.default_rng(5)
    bias_value, module_value = rng.uniform(0, 1, n + 1), {b: rng.uniform(0.5, 2) for b in blocks}
    module_cost = {b: int(rng.integers(3000, 9000)) for b in blocks}

    def gain(c: Candidate) -> float:
        return float(bias_value[c.n_bias_update] + sum(module_value[b] for b in c.lite_residual))

    def memory(c: Candidate) -> int:
        return 10000 + 300 * c.n_bias_update + sum(module_cost[b] for b in c.lite_residual)

    space = [Candidate(k, (0.0,) * n, tuple(m for m, on in zip(blocks, bits, strict=True) if on))
             for k in range(n + 1) for bits in itertools.product((0, 1), repeat=3)]
    for budget in (12000, 16000, 22000, 40000):
        result = evolutionary_search(convs, gain, memory, budget, EvolutionSettings(population=16, generations=12),
                                     searchable=[], modules=blocks)
        best = max(gain(c) for c in space if memory(c) <= budget)
        assert memory(result.candidate) <= budget and result.gain == pytest.approx(best), budget
    assert result.candidate.lite_residual == (1, 2, 3)  # the largest budget takes every module


def test_evolution_draws_no_module_that_does_not_fit_alone() -> None:
    """A module over the budget next to the classifier alone is over it in every candidate: it is planned once,
    as that probe, and never drawn (on mcunet-5fps at 256 KB the early blocks' modules made almost every random
    candidate infeasible, and the initial population took minutes of plans)."""
    module = load_module(MODEL)
    convs = backbone_convs(module)
    n, blocks = len(convs), [1, 2, 3]
    planned: list[Candidate] = []

    def memory(c: Candidate) -> int:
        planned.append(c)
        return 10000 + 100 * c.n_bias_update + sum({1: 50000, 2: 50000, 3: 2000}[b] for b in c.lite_residual)

    def gain(c: Candidate) -> float:
        return c.n_bias_update + 10.0 * len(c.lite_residual)

    result = evolutionary_search(convs, gain, memory, 20000, EvolutionSettings(population=12, generations=6),
                                 searchable=[], modules=blocks)
    assert result.candidate == Candidate(n, (0.0,) * n, (3,))
    for b in (1, 2):
        assert [c for c in planned if b in c.lite_residual] == [with_module(classifier_only(n), b)]


def test_random_candidates_train_few_modules() -> None:
    """Modules that each fit but not many together (the reference models' at 256 KB): the initial population
    is drawn with few modules per candidate, so filling it takes few plans, not population x max_tries."""
    module = load_module(MODEL)
    convs = backbone_convs(module)
    blocks = list(range(1, 11))  # ten module genes (the evolution needs no real blocks)
    planned: list[Candidate] = []

    def memory(c: Candidate) -> int:
        planned.append(c)
        return 10000 + 10 * c.n_bias_update + 4000 * len(c.lite_residual)

    result = evolutionary_search(convs, lambda c: c.n_bias_update + len(c.lite_residual), memory, 19000,
                                 EvolutionSettings(population=20, generations=1), searchable=[], modules=blocks)
    assert len(result.candidate.lite_residual) == 2 and memory(result.candidate) <= 19000
    assert len(planned) < 150  # with half the modules drawn per candidate: ~215


def test_analysis_within_a_budget_measures_no_module_that_does_not_fit_alone() -> None:
    module, fit, val, cal = split_and_calibrate()
    recipe = FineTuneRecipe(steps=4, lr=0.05, bias_lr=0.01)
    analysis = contribution_analysis(module, fit, val, recipe=recipe, repeats=1, seed=3, layers=[], modules=[1, 2, 3],
                                     calibration=cal, within_budget=lambda c: 2 not in c.lite_residual)
    n = len(analysis.convs)
    assert analysis.runs == (n + 1) + 2  # block 2's module is not run
    assert analysis.module_gain(2) == -math.inf and analysis.module_gain(3) > -math.inf
    gains = analysis.as_json()["module_gain"]
    assert gains["2"] is None and gains["3"] is not None
    json.dumps(analysis.as_json(), allow_nan=False)  # valid JSON: no -Infinity


def test_contribution_analysis_measures_each_module() -> None:
    module, fit, val, cal = split_and_calibrate()
    recipe = FineTuneRecipe(steps=8, lr=0.05, bias_lr=0.01)
    analysis = contribution_analysis(module, fit, val, recipe=recipe, repeats=1, seed=3, layers=[], modules=[1, 2, 3],
                                     calibration=cal)
    n = len(analysis.convs)
    assert set(analysis.module_accuracy) == {1, 2, 3}
    assert analysis.runs == (n + 1) + 3  # bias depths and the three modules, no weight
    c = with_module(bias_only(n), 2)
    assert analysis.gain(c) == pytest.approx(analysis.gain(bias_only(n)) + analysis.module_gain(2))
    direct = fine_tune_accuracy(module, c.scheme(), recipe, fit, val, (3, 0), cal)
    assert analysis.module_accuracy[2] == pytest.approx(direct)
    assert "module_gain" in analysis.as_json()


def test_cli_searches_modules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "blocks.mlir"
    model.write_text(MODEL.read_text())
    images, labels = task(16)
    data = tmp_path / "task.npz"
    np.savez(data, image=images, label=labels)
    out = tmp_path / "scheme.json"
    planner = MemoryPlanner(load_module(MODEL))
    minimum = planner.peak_sram_bytes(classifier_only(len(planner.convs)))
    try:
        search_main([str(model), "--data", str(data), "--budget-kb", f"{(minimum + 64 * 1024) / 1024:.0f}", "-o",
                     str(out), "--steps", "4", "--repeats", "1", "--layers", "", "--population", "6",
                     "--generations", "3", "--lite-residual", "--quiet"])
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "lite residual module of one block" in stdout and "chosen scheme" in stdout
    record = json.loads(out.read_text())
    (searched,) = record["_search"]["blocks"].values()
    assert set(searched["contribution"]["module_gain"]) == {"1", "2", "3"}
