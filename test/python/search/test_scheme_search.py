"""Sparse-update scheme search: candidate encoding, evolutionary search, contribution analysis, the CLI.

Most tests use the 3-conv tiny model (test/lit/Inputs/tiny_model.mlir): its whole search space (256
candidates) can be planned, so the search is checked against the exhaustive optimum. The digits task
(examples/digits/make_task.py) is checked for what the project relies on: the split, the quantization
and the domain shift.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from testpaths import LIT_INPUTS, REPO
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from qtrain.errors import UserError
from qtrain.interpreter import load_module
from qtrain.search import (
    RATIOS,
    Candidate,
    EvolutionSettings,
    FineTuneRecipe,
    InfeasibleBudgetError,
    MemoryPlanner,
    SearchResult,
    backbone_convs,
    bias_only,
    budget_key,
    canonical,
    classifier_only,
    contribution_analysis,
    evolutionary_search,
    fine_tune_accuracy,
    last_k,
    planned_peak_sram,
    split_validation,
    write_schemes_json,
)
from qtrain.search.candidates import SearchError, with_weight
from qtrain.tools.qtrain_search_scheme import main as search_main
from qtrain.transforms.autodiff import AutodiffPass
from qtrain.transforms.schemes import network_layers, parse_scheme

TINY = LIT_INPUTS / "tiny_model.mlir"


@cache
def tiny_text() -> str:
    return TINY.read_text()


def tiny() -> ModuleOp:
    return load_module(tiny_text())


def all_candidates(module: ModuleOp) -> list[Candidate]:
    convs = backbone_convs(module)
    return [Candidate(k, ratios) for k in range(len(convs) + 1)
            for ratios in itertools.product(*(c.ratio_options() for c in convs))]


def synthetic_gain(seed: int):  # noqa: ANN201 (Candidate -> float)
    """An additive objective like the analysis's: a bias gain per k and a gain per (layer, ratio), some < 0."""
    rng = random.Random(seed)
    bias = [0.0] + [rng.uniform(-0.05, 0.1) for _ in range(8)]
    weight = {(i, r): rng.uniform(-0.05, 0.2) for i in range(8) for r in RATIOS}

    def gain(c: Candidate) -> float:
        return bias[c.n_bias_update] + sum(weight[i, r] for i, r in enumerate(c.weight_ratios) if r > 0)

    return gain


def tiny_task(n: int = 24, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(-128, 128, size=(n, 8, 8, 3), dtype=np.int8), rng.integers(0, 3, size=n)


# -- candidates in the schemes.json format ----------------------------------------------------------------


def test_candidate_round_trips_through_parse_scheme(tmp_path: Path) -> None:
    """A candidate written by write_schemes_json loads through FILE.json#MODEL/BUDGET and resolves to the
    trainable set it stands for; its channel counts are the ones the sparse-update pass uses."""
    module = tiny()
    train = module.clone()
    AutodiffPass().apply(Context(), train)
    step = next(o for o in train.ops if isinstance(o, func.FuncOp) and o.sym_name.data == "train_step")
    layers = network_layers(step)
    convs = backbone_convs(module)
    n = len(convs)
    assert n == 3 and [c.in_channels for c in convs] == [3, 4, 4] and convs[1].depthwise
    path = tmp_path / "scheme.json"
    rng = random.Random(0)
    candidates = [classifier_only(n), bias_only(n), *(last_k(k, n) for k in range(1, n + 2))]
    candidates += rng.sample(all_candidates(module), 12)
    for budget, c in enumerate(candidates, start=1):
        spec = write_schemes_json(path, "tiny", budget, c)
        assert spec == f"{path}#tiny/{budget}kb"
        scheme = parse_scheme(spec)
        assert scheme.kind == "per-layer" and scheme.n_bias_update == c.n_bias_update
        assert {i: r for i, r in scheme.weight_ratios.items() if r > 0} == {
            i: r for i, r in enumerate(c.weight_ratios) if r > 0}
        assert Candidate.from_entry(json.loads(path.read_text())["tiny"][f"{budget}kb"], n) == c
        resolved = scheme.resolve(layers)
        expected: dict[str, tuple[str, tuple[int, int] | None]] = {
            "conv3.weight": ("weight", None), "conv3.bias": ("bias", None)}
        for i in range(n - c.n_bias_update, n):
            expected[f"conv{i}.bias"] = ("bias", None)
        for i, r in enumerate(c.weight_ratios):
            if r > 0:
                k = convs[i].channels(r)
                expected[f"conv{i}.weight"] = ("weight", None if k == convs[i].in_channels else (0, k))
        assert {name: (t.kind, t.channels) for name, t in resolved.items()} == expected
        # the typed scheme the search hands the pipeline is the file's entry, without the file
        assert c.scheme().resolve(layers) == resolved
    # every budget written so far is still in the file (the file is added to, not overwritten)
    data = json.loads(path.read_text())
    assert len(data["tiny"]) == len(candidates) and "_about" in data
    # named schemes and their per-layer forms train the same tensors
    for named, c in [("bias-only", bias_only(n)), *((f"last-k={k}", last_k(k, n)) for k in range(1, n + 2))]:
        spec = write_schemes_json(path, "tiny", 99, c)
        assert parse_scheme(named).resolve(layers).keys() == parse_scheme(spec).resolve(layers).keys(), named


def test_ratio_options_merge_equal_channel_counts() -> None:
    convs = backbone_convs(tiny())
    assert convs[0].ratio_options() == (0.0, 0.25, 0.5, 1.0)  # 3 channels: 1/8 and 1/4 both give 1
    assert convs[0].canonical_ratio(0.125) == 0.25
    c = Candidate(1, (0.125, 1.0, 0.0))
    assert canonical(c, convs) == Candidate(1, (0.25, 1.0, 0.0))
    planner = MemoryPlanner(tiny())
    assert planner.peak_sram_bytes(c) == planner.peak_sram_bytes(canonical(c, convs))


# -- evolutionary search ----------------------------------------------------------------------------------


@cache
def tiny_memory() -> dict[Candidate, int]:
    """Planned peak SRAM of every candidate of the tiny model (the exhaustive reference)."""
    planner = MemoryPlanner(tiny())
    return {c: planner.peak_sram_bytes(c) for c in all_candidates(planner.module)}


@pytest.mark.parametrize("budget_fraction", [0.0, 0.3, 0.6, 1.0])
def test_search_respects_the_budget_and_finds_the_optimum(budget_fraction: float, tmp_path: Path) -> None:
    module = tiny()
    memory = tiny_memory()
    low, high = min(memory.values()), max(memory.values())
    budget = int(low + budget_fraction * (high - low))
    gain = synthetic_gain(1)
    planner = MemoryPlanner(module)
    result = evolutionary_search(planner.convs, gain, planner.peak_sram_bytes, budget,
                                 EvolutionSettings(population=12, generations=10, seed=0))
    # re-planned from scratch through the written schemes.json entry
    spec = write_schemes_json(tmp_path / "s.json", "tiny", budget / 1024, result.candidate)
    assert planned_peak_sram(module, spec) == result.peak_sram_bytes <= budget
    assert result.minimum_bytes == memory[classifier_only(3)] == low
    best = max(gain(c) for c, m in memory.items() if m <= budget)
    assert result.gain == pytest.approx(best)
    assert result.best_per_generation == sorted(result.best_per_generation)


def test_search_stops_once_its_parents_stop_changing() -> None:
    """Patience: a converged population (parents unchanged for `patience` generations) ends the search early
    with the same answer as running every generation; patience 0 runs them all."""
    memory = tiny_memory()
    budget = int(np.median(list(memory.values())))
    convs = backbone_convs(tiny())
    gain = synthetic_gain(2)

    def search(patience: int):
        return evolutionary_search(convs, gain, lambda c: memory[canonical(c, convs)], budget,
                                   EvolutionSettings(population=8, generations=60, patience=patience, seed=1,
                                                     max_tries=50))

    early, full = search(3), search(0)
    assert len(full.best_per_generation) == 60
    assert 3 < len(early.best_per_generation) < 60
    assert early.candidate == full.candidate and early.gain == full.gain
    assert early.best_per_generation == full.best_per_generation[:len(early.best_per_generation)]


@pytest.mark.parametrize("budget_fraction", [0.2, 0.5, 0.8])
def test_prefetch_plans_ahead_without_changing_the_search(budget_fraction: float) -> None:
    """With `prefetch`, the search hands the planner the candidates it is about to plan (drawn from the same random
    state, as if each were feasible): every decision, and so the result, is the one without it, and most plans
    are made ahead, in batches (which MemoryPlanner.prefetch makes in parallel)."""
    memory = tiny_memory()
    low, high = min(memory.values()), max(memory.values())
    budget = int(low + budget_fraction * (high - low))
    convs = backbone_convs(tiny())
    gain = synthetic_gain(4)
    settings = EvolutionSettings(population=10, generations=12, seed=2)

    def search(prefetch: bool) -> tuple[SearchResult, list[Candidate], list[list[Candidate]]]:
        sequential: list[Candidate] = []  # planned one at a time, by `memory`
        batches: list[list[Candidate]] = []
        ahead: set[Candidate] = set()

        def plan(c: Candidate) -> int:
            if canonical(c, convs) not in ahead and c not in sequential:
                sequential.append(c)
            return memory[canonical(c, convs)]

        def fetch(cs: Sequence[Candidate]) -> None:
            batches.append(list(cs))
            ahead.update(canonical(c, convs) for c in cs)

        result = evolutionary_search(convs, gain, plan, budget, settings, prefetch=fetch if prefetch else None)
        return result, sequential, batches

    (plain, sequential, _), (fetched, misses, batches) = search(False), search(True)
    assert fetched.candidate == plain.candidate and fetched.gain == plain.gain
    assert fetched.best_per_generation == plain.best_per_generation
    assert batches and max(len(b) for b in batches) > 1
    assert len(misses) < len(sequential) / 2, (len(misses), len(sequential))


def test_memory_planner_prefetch_plans_in_worker_processes() -> None:
    """`MemoryPlanner.prefetch` with jobs=2: the same numbers as planning in this process, found in the cache."""
    module = tiny()
    memory = tiny_memory()
    candidates = list(memory)[::5]
    with MemoryPlanner(module, jobs=2) as planner:
        planner.prefetch(candidates)
        assert planner._pool is not None  # the batch went to the workers
        assert {c: planner.cache[canonical(c, planner.convs)] for c in candidates} == {c: memory[c] for c in candidates}
    assert planner._pool is None


def test_random_candidates_train_few_weights_when_there_are_many_layers() -> None:
    """With 24 searchable layers (mcunet-5fps's convs 18..41) a random initial candidate trains about
    `weights_per_draw` weights, not half of them: the budget allows a few (the reference models at 256 KB), so
    filling the initial population takes few plans, not up to population x max_tries."""
    from qtrain.search import ConvInfo

    convs = [ConvInfo(i, f"conv{i}", 64, 64, (1, 1), False) for i in range(24)]
    planned: list[Candidate] = []

    def memory(c: Candidate) -> int:
        planned.append(c)
        return 1000 + 100 * sum(r > 0 for r in c.weight_ratios)

    def plans(weights_per_draw: float) -> int:
        planned.clear()
        settings = EvolutionSettings(population=20, generations=1, seed=0, weights_per_draw=weights_per_draw,
                                     max_tries=50)
        result = evolutionary_search(convs, lambda c: sum(c.weight_ratios), memory, 1000 + 100 * 6, settings)
        assert sum(r > 0 for r in result.candidate.weight_ratios) <= 6
        return len(set(planned))

    # the 96 ratio probes and the anchors are the same; 12 per draw = half the layers, the draws of before
    assert plans(4.0) < plans(12.0) / 2, (plans(4.0), plans(12.0))


def test_search_raises_for_an_infeasible_budget() -> None:
    planner = MemoryPlanner(tiny())
    minimum = planner.peak_sram_bytes(classifier_only(3))
    with pytest.raises(InfeasibleBudgetError, match=f"needs {minimum} bytes") as info:
        evolutionary_search(planner.convs, synthetic_gain(0), planner.peak_sram_bytes, minimum - 1)
    assert info.value.minimum_bytes == minimum


def test_search_is_deterministic_for_a_seed() -> None:
    memory = tiny_memory()
    budget = int(np.median(list(memory.values())))
    convs = backbone_convs(tiny())
    gain = synthetic_gain(4)

    def search() -> tuple[object, ...]:
        planned: list[Candidate] = []

        def mem(c: Candidate) -> int:
            planned.append(c)
            return memory[canonical(c, convs)]

        # a gain with many ties, so tie-breaking and the random stream both matter
        result = evolutionary_search(convs, lambda c: round(gain(c), 1), mem, budget,
                                     EvolutionSettings(population=8, generations=6, seed=7))
        return result.candidate, result.gain, result.best_per_generation, planned

    assert search() == search()


# -- contribution analysis --------------------------------------------------------------------------------


def test_contribution_analysis_measures_every_layer_and_ratio(tmp_path: Path) -> None:
    module = tiny()
    images, labels = tiny_task()
    fit_idx, val_idx = split_validation(len(images), 0.25, seed=0)
    assert len(val_idx) == 6 and not set(fit_idx) & set(val_idx) and len(fit_idx) + len(val_idx) == 24
    fit, val = (images[fit_idx], labels[fit_idx]), (images[val_idx], labels[val_idx])
    recipe = FineTuneRecipe(steps=6, lr=0.05, bias_lr=0.05)
    cache_file = tmp_path / "cache.json"
    analysis = contribution_analysis(module, fit, val, recipe=recipe, repeats=2, seed=5, cache_path=cache_file)
    convs = backbone_convs(module)
    assert len(analysis.bias_accuracy) == len(convs) + 1
    assert set(analysis.weight_accuracy) == {0, 1, 2}
    for i, by_ratio in analysis.weight_accuracy.items():
        assert set(by_ratio) == set(RATIOS)
        for r in RATIOS:
            assert 0.0 <= by_ratio[r] <= 1.0
            assert analysis.weight_gain(i, r) == pytest.approx(by_ratio[r] - analysis.bias_only)
    # distinct trainable sets: 4 bias settings + 3 layers x their distinct ratios (3 each), 2 repeats
    assert analysis.runs == 2 * (4 + 9)
    assert analysis.bias_gain(0) == 0.0
    assert analysis.gain(bias_only(3)) == pytest.approx(analysis.bias_only - analysis.classifier_only)
    c = Candidate(2, (0.0, 0.5, 1.0))
    assert analysis.gain(c) == pytest.approx(analysis.bias_gain(2) + analysis.weight_gain(1, 0.5)
                                             + analysis.weight_gain(2, 1.0))
    # one measurement equals a direct fine-tuning run of the same scheme (mean of the 2 repeats)
    direct = [fine_tune_accuracy(module, "bias-only", recipe, fit, val, (5, r)) for r in range(2)]
    assert analysis.bias_only == pytest.approx(np.mean(direct))
    # cached: no new run, same numbers; in a process pool: same numbers
    again = contribution_analysis(module, fit, val, recipe=recipe, repeats=2, seed=5, cache_path=cache_file)
    assert again.runs == 0 and again.cached_runs == 26
    assert again.as_json() == analysis.as_json()
    pooled = contribution_analysis(module, fit, val, recipe=recipe, repeats=2, seed=5, jobs=2)
    assert pooled.runs == 26 and pooled.as_json() == analysis.as_json()


def budget_setup() -> tuple[ModuleOp, list, tuple, tuple, FineTuneRecipe, dict, int]:
    """The tiny model and task, and a budget under which conv 2's smallest weight slice fits next to the classifier
    and so does the bias of conv 2, but not conv 1's; conv 0's and 1's weights do not."""
    module = tiny()
    memory = tiny_memory()
    convs = backbone_convs(module)
    images, labels = tiny_task()
    fit_idx, val_idx = split_validation(len(images), 0.25, seed=0)
    fit, val = (images[fit_idx], labels[fit_idx]), (images[val_idx], labels[val_idx])
    recipe = FineTuneRecipe(steps=6, lr=0.05, bias_lr=0.05)
    budget = memory[canonical(with_weight(classifier_only(3), 2, 0.25), convs)]
    return module, convs, fit, val, recipe, memory, budget


def test_analysis_within_a_budget_skips_only_parts_no_feasible_candidate_trains() -> None:
    """With `within_budget`, a bias depth or weight slice is measured iff classifier-only plus that part
    fits; bias depths equal the unpruned analysis; weights are measured over the deepest bias depth that fits
    (bias-only does not), each equal to a direct run of that scheme; the search finds the best candidate."""
    from qtrain.search.analysis import UNMEASURED

    module, convs, fit, val, recipe, memory, budget = budget_setup()

    def fits(c: Candidate) -> bool:
        return memory[canonical(c, convs)] <= budget

    full = contribution_analysis(module, fit, val, recipe=recipe, repeats=1, seed=5)
    pruned = contribution_analysis(module, fit, val, recipe=recipe, repeats=1, seed=5, within_budget=fits)
    expected_depths = [k for k in range(4) if fits(Candidate(k, (0.0,) * 3))]
    assert 0 < len(expected_depths) < 4 and 3 not in expected_depths
    assert pruned.measured_depths() == expected_depths and pruned.baseline_depth == max(expected_depths)
    assert full.baseline_depth is None and full.baseline == full.bias_only
    assert all(pruned.bias_accuracy[k] == full.bias_accuracy[k] for k in expected_depths)
    assert pruned.bias_only == UNMEASURED and pruned.baseline == pruned.bias_accuracy[max(expected_depths)]
    slices = 0
    for i, by_ratio in pruned.weight_accuracy.items():
        for r, accuracy in by_ratio.items():
            if fits(with_weight(classifier_only(3), i, r)):
                scheme = with_weight(Candidate(max(expected_depths), (0.0,) * 3), i, r).scheme()
                assert accuracy == fine_tune_accuracy(module, scheme, recipe, fit, val, (5, 0))
                assert pruned.weight_gain(i, r) == accuracy - pruned.baseline
                slices += 1
            else:
                assert accuracy == UNMEASURED and pruned.weight_gain(i, r) == -np.inf
    assert 0 < slices < 12 and pruned.runs < full.runs
    assert [a is None for a in pruned.as_json()["bias_accuracy"]] == [k not in expected_depths for k in range(4)]
    assert pruned.as_json()["baseline_depth"] == max(expected_depths)
    planner = MemoryPlanner(module)
    settings = EvolutionSettings(population=8, generations=6, seed=3)
    chosen = evolutionary_search(convs, pruned.gain, planner.peak_sram_bytes, budget, settings)
    assert chosen.gain == pytest.approx(max(pruned.gain(c) for c, m in memory.items() if m <= budget))


def test_bias_step_and_refine_measure_a_subset_the_search_keeps_to() -> None:
    """`bias_step` measures every s-th bias depth and the deepest; `refine` K measures every layer at the screen
    ratio and all ratios of the K layers that gained most. What is measured equals the full analysis (same runs),
    the rest is UNMEASURED, and the evolution, given `measured_depths` / `measured_ratios`, draws nothing else."""
    from qtrain.search.analysis import SCREEN_RATIO, UNMEASURED

    module, convs, fit, val, recipe, memory, _ = budget_setup()
    full = contribution_analysis(module, fit, val, recipe=recipe, repeats=1, seed=5)
    part = contribution_analysis(module, fit, val, recipe=recipe, repeats=1, seed=5, bias_step=2, refine=1)
    assert part.measured_depths() == [0, 2, 3] and full.measured_depths() == [0, 1, 2, 3]
    assert all(part.bias_accuracy[k] == full.bias_accuracy[k] for k in (0, 2, 3))
    screens = {i: convs[i].canonical_ratio(SCREEN_RATIO) for i in range(3)}
    best = max(range(3), key=lambda i: (full.weight_accuracy[i][screens[i]], i))
    for i, by_ratio in part.weight_accuracy.items():
        for r, accuracy in by_ratio.items():
            if i == best or convs[i].canonical_ratio(r) == screens[i]:
                assert accuracy == full.weight_accuracy[i][r]
            else:
                assert accuracy == UNMEASURED
    ratios = part.measured_ratios()
    assert ratios[best] == convs[best].ratio_options()
    assert all(ratios[i] == (0.0, screens[i]) for i in range(3) if i != best)
    assert part.runs == 3 + 3 + 2 < full.runs  # depths 0, 2, 3; three screens; best's two other ratios
    with pytest.raises(SearchError, match="bias_step"):
        contribution_analysis(module, fit, val, recipe=recipe, repeats=1, bias_step=0)
    planner = MemoryPlanner(module)
    budget = max(memory.values())  # everything fits: only the restriction limits the draws
    drawn: list[Candidate] = []

    def gain(c: Candidate) -> float:
        drawn.append(c)
        return part.gain(c)

    chosen = evolutionary_search(convs, gain, planner.peak_sram_bytes, budget, EvolutionSettings(population=8,
                                 generations=6, seed=3), depths=part.measured_depths(), ratios=ratios)
    assert drawn and all(c.n_bias_update in (0, 2, 3) for c in drawn)
    assert all(r in ratios[i] for c in drawn for i, r in enumerate(c.weight_ratios))
    assert chosen.gain == pytest.approx(max(part.gain(c) for c in memory if part.gain(c) > -np.inf))


def test_max_layers_keeps_the_deepest_convs_whose_weights_fit() -> None:
    from qtrain.tools.qtrain_search_scheme import deepest_feasible_layers

    memory = tiny_memory()
    convs = backbone_convs(tiny())
    planner = MemoryPlanner(tiny())
    smallest = {i: memory[canonical(with_weight(classifier_only(3), i, 0.125), convs)] for i in range(3)}
    assert smallest[0] > smallest[1] > smallest[2]  # the deeper, the cheaper: conv 0 is the most expensive
    assert deepest_feasible_layers(planner, None, 2, 10**6) == [1, 2]
    assert deepest_feasible_layers(planner, None, 5, 10**6) == [0, 1, 2]
    assert deepest_feasible_layers(planner, [0, 1], 1, 10**6) == [1]
    assert deepest_feasible_layers(planner, None, 3, smallest[1]) == [1, 2]  # conv 0's weight cannot fit
    assert deepest_feasible_layers(planner, [0], 3, smallest[1]) == []


def test_an_interrupted_analysis_resumes_from_its_cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qtrain.search.fine_tune as fine_tune

    module = tiny()
    images, labels = tiny_task()
    fit_idx, val_idx = split_validation(len(images), 0.25, seed=0)
    fit, val = (images[fit_idx], labels[fit_idx]), (images[val_idx], labels[val_idx])
    recipe = FineTuneRecipe(steps=4, lr=0.05, bias_lr=0.05)
    cache_file = tmp_path / "cache.json"
    real = fine_tune.fine_tune_accuracy
    calls = 0

    def interrupted_after_5(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 (fine_tune_accuracy's)
        nonlocal calls
        calls += 1
        if calls > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fine_tune, "fine_tune_accuracy", interrupted_after_5)
    with pytest.raises(KeyboardInterrupt):
        contribution_analysis(module, fit, val, recipe=recipe, repeats=1, cache_path=cache_file)
    assert len(json.loads(cache_file.read_text())["runs"]) == 5
    monkeypatch.undo()
    resumed = contribution_analysis(module, fit, val, recipe=recipe, repeats=1, cache_path=cache_file)
    assert (resumed.runs, resumed.cached_runs) == (13 - 5, 5)
    assert resumed.as_json() == contribution_analysis(module, fit, val, recipe=recipe, repeats=1).as_json()


def test_search_creates_no_file_and_reports_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Candidates reach the pipeline as `UpdateScheme` objects: a whole search (analysis + evolution) opens
    no file for writing and leaves the temporary folder untouched; progress goes to the callback only."""
    import builtins
    import io
    import os
    import tempfile

    import qtrain.interpreter  # noqa: F401 (imported before the guard: nothing but the search is watched)

    module = tiny()
    images, labels = tiny_task()
    fit_idx, val_idx = split_validation(len(images), 0.25, seed=0)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    real_open = io.open

    def read_only_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202 (open's signature)
        if any(c in mode for c in "wax+"):
            raise AssertionError(f"the search opened {file} for writing")
        return real_open(file, mode, *args, **kwargs)

    def no_mkdir(path, *args, **kwargs):  # noqa: ANN001, ANN202
        raise AssertionError(f"the search made a folder {path}")

    monkeypatch.setattr(builtins, "open", read_only_open)
    monkeypatch.setattr(io, "open", read_only_open)
    monkeypatch.setattr(os, "mkdir", no_mkdir)
    calls: list[tuple[int, int, str]] = []
    analysis = contribution_analysis(module, (images[fit_idx], labels[fit_idx]), (images[val_idx], labels[val_idx]),
                                     recipe=FineTuneRecipe(steps=4, lr=0.05, bias_lr=0.05), repeats=1,
                                     on_progress=lambda *call: calls.append(call))
    planner = MemoryPlanner(module)
    budget = planner.peak_sram_bytes(bias_only(3))
    result = evolutionary_search(planner.convs, analysis.gain, planner.peak_sram_bytes, budget,
                                 EvolutionSettings(population=6, generations=3, seed=0),
                                 on_progress=lambda *call: calls.append(call))
    monkeypatch.undo()
    assert list(scratch.iterdir()) == []
    assert result.peak_sram_bytes <= budget and analysis.runs == 13
    assert calls == [*((i, 13, "contribution analysis") for i in range(14)),
                     *((g, 3, "evolutionary search") for g in range(4))]


# -- the digits task --------------------------------------------------------------------------------------


def test_digits_task_is_inverted_quantized_and_split() -> None:
    pytest.importorskip("sklearn", reason="the digits data set comes with scikit-learn")
    sys.path.insert(0, str(REPO / "examples" / "digits"))
    try:
        import make_task  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(REPO / "examples" / "digits"))
    from qtrain.frontends.onnx import input_quant, quantize_images
    from qtrain.interpreter import run_forward

    module = make_task.import_model()
    task = make_task.build_task(module)
    assert task["image"].dtype == task["test_image"].dtype == np.int8
    assert task["image"].shape == (1297, 16, 16, 1) and task["test_image"].shape == (500, 16, 16, 1)
    assert task["label"].shape == (1297,) and task["test_label"].shape == (500,)
    q = input_quant(module)
    assert task["input_q"].tolist() == [pytest.approx(q.scale), q.zp]
    train_x, train_y, _, test_y = make_task._data().load_split()  # test = the images held out from pre-training
    assert np.array_equal(task["label"], train_y) and np.array_equal(task["test_label"], test_y)
    # inverted contrast: with scale 1/255 and zero point -128, code(1 - x) = -1 - code(x) up to rounding
    assert q.zp == -128 and q.scale == pytest.approx(1 / 255)
    upright = quantize_images(train_x, module).astype(int)
    assert np.abs(task["image"].astype(int) + upright + 1).max() <= 1
    assert np.mean(task["image"] == 127) > 0.4  # the blank background is now the brightest code
    _, logits = run_forward(module, task["test_image"][:200])
    assert np.mean(logits.argmax(1) == task["test_label"][:200]) < 0.35  # the shift breaks the model


# -- the command line -------------------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        search_main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny_files(tmp_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "tiny.mlir"
    model.write_text(tiny_text())
    images, labels = tiny_task(16)
    data = tmp_path / "task.npz"
    np.savez(data, image=images, label=labels, input_q=np.array([0.0078125, 0.0]))
    return model, data


def test_cli_writes_a_scheme_every_tool_can_load(tiny_files: tuple[Path, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    model, data = tiny_files
    out = tmp_path / "scheme.json"
    budget_kb = (tiny_memory()[classifier_only(3)] + 1024) / 1024
    common = ["--data", data, "-o", out, "--steps", "4", "--repeats", "1", "--population", "6",
              "--generations", "3", "--quiet"]
    code, stdout, err = run_cli([model, "--budget-kb", f"{budget_kb:.3f}", *common], capsys)
    assert code == 0, err
    assert "contribution analysis" in stdout and "chosen scheme" in stdout and err == ""
    spec = f"{out}#tiny/{budget_key(float(f'{budget_kb:.3f}'))}"
    assert planned_peak_sram(tiny(), spec) <= budget_kb * 1024
    code, _, err = run_cli([model, "--budget-kb", "64", "--model-name", "other", *common], capsys)
    assert code == 0, err
    data_json = json.loads(out.read_text())
    assert set(data_json) == {"_about", "_search", "tiny", "other"} and "64kb" in data_json["other"]
    parse_scheme(f"{out}#other/64kb")
    # the runs train at a constant rate by default; --warmup-steps / --final-lr-ratio give them qtrain-compile's
    # schedule over the run's --steps, recorded with the analysis
    assert data_json["_search"]["other"]["64kb"]["contribution"]["recipe"] == FineTuneRecipe(steps=4).fingerprint()
    code, _, err = run_cli([model, "--budget-kb", "64", "--model-name", "sched", *common, "--warmup-steps", "1",
                            "--final-lr-ratio", "0.1"], capsys)
    assert code == 0, err
    recipe = json.loads(out.read_text())["_search"]["sched"]["64kb"]["contribution"]["recipe"]
    assert recipe == FineTuneRecipe(steps=4, warmup_steps=1, horizon=4, final_lr_ratio=0.1).fingerprint()
    # --bias-step / --refine: fewer runs; what was left out is null in the record and absent from the scheme
    code, stdout, err = run_cli([model, "--budget-kb", "64", "--model-name", "fast", *common, "--bias-step", "2",
                                 "--refine", "1"], capsys)
    assert code == 0, err
    record = json.loads(out.read_text())["_search"]["fast"]["64kb"]["contribution"]
    assert [a is None for a in record["bias_accuracy"]] == [False, True, False, False]
    unmeasured = [(i, r) for i, by_ratio in record["weight_gain"].items() for r, g in by_ratio.items() if g is None]
    assert len(unmeasured) == 4  # two layers' two other distinct ratios (the third layer is the refined one)
    entry = json.loads(out.read_text())["fast"]["64kb"]
    assert entry["n_bias_update"] != 1 and not any(
        (str(i), f"{r:g}") in unmeasured for i, r in zip(entry["manual_weight_idx"], entry["weight_update_ratio"],
                                                          strict=True))
    # without --quiet the tool draws the search's progress on stderr (not a terminal: the start of each stage,
    # a line a second at most, and its end)
    code, _, err = run_cli([model, "--budget-kb", "64", *(a for a in common if a != "--quiet")], capsys)
    assert code == 0, err
    lines = err.splitlines()
    analysis = [line for line in lines if "] contribution analysis " in line]
    evolution = [line for line in lines if "] evolutionary search " in line]
    assert len(analysis) + len(evolution) == len(lines) and all(
        line.startswith("qtrain-search-scheme: [") for line in lines)
    assert f"[{'-' * 24}] contribution analysis 0/13 " in analysis[0] and analysis[0].endswith(" ETA ?")
    assert f"[{'#' * 24}] contribution analysis 13/13 " in analysis[-1]
    assert "evolutionary search 0/3 " in evolution[0] and "evolutionary search 3/3 " in evolution[-1]


def test_cli_errors_are_one_line_with_exit_code_2(tiny_files: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    model, data = tiny_files
    out = tmp_path / "s.json"
    minimum = tiny_memory()[classifier_only(3)]
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    no_label = tmp_path / "no_label.npz"
    np.savez(no_label, image=np.zeros((4, 8, 8, 3), np.int8))
    wrong_shape = tmp_path / "wrong_shape.npz"
    np.savez(wrong_shape, image=np.zeros((4, 8, 8, 1), np.int8), label=np.zeros(4, int))
    wrong_quant = tmp_path / "wrong_quant.npz"
    np.savez(wrong_quant, image=np.zeros((4, 8, 8, 3), np.int8), label=np.zeros(4, int), input_q=[0.5, 3])
    corrupt_onnx, corrupt_pkl = tmp_path / "corrupt.onnx", tmp_path / "corrupt.pkl"
    corrupt_onnx.write_bytes(b"garbage")
    corrupt_pkl.write_bytes(b"garbage")
    cases = [
        ([corrupt_onnx, "--data", data, "--budget-kb", "64"], "not a valid ONNX protobuf"),
        ([corrupt_pkl, "--data", data, "--budget-kb", "64"], "not a readable tiny-training model pickle"),
        ([model, "--data", data, "--budget-kb", "0.5"], f"needs {minimum} bytes"),
        ([tmp_path / "missing.mlir", "--data", data, "--budget-kb", "64"], "no such model file"),
        ([model, "--data", tmp_path / "missing.npz", "--budget-kb", "64"], "no such task file"),
        ([model, "--data", garbage, "--budget-kb", "64"], "not an .npz archive"),
        ([model, "--data", no_label, "--budget-kb", "64"], "has no 'label' array"),
        ([model, "--data", wrong_shape, "--budget-kb", "64"], "must be int8 NHWC [N, 8, 8, 3]"),
        ([model, "--data", wrong_quant, "--budget-kb", "64"], "quantized with scale 0.5"),
        ([model, "--data", data, "--budget-kb", "64", "--steps", "-1"], "--steps: -1 is out of range"),
        ([model, "--data", data, "--budget-kb", "64", "--steps", "40", "--warmup-steps", "40"],
         "--warmup-steps 40 must be below --steps 40"),
        ([model, "--data", data, "--budget-kb", "64", "--final-lr-ratio", "1.5"], "--final-lr-ratio: 1.5 is out of"),
        ([model, "--data", data, "--budget-kb", "64", "--bias-step", "0"], "--bias-step: 0 is out of range"),
        ([model, "--data", data, "--budget-kb", "64", "--refine", "x"], "--refine"),
        ([model, "--data", data], "the following arguments are required: --budget-kb"),
    ]
    for args, message in cases:
        code, stdout, err = run_cli([*args, "-o", out, "--quiet"], capsys)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and err.startswith("qtrain-search-scheme: error: ") and message in err, err
        assert "Traceback" not in err
    assert not out.exists()
    with pytest.raises(InfeasibleBudgetError):
        search_main([str(model), "--data", str(data), "--budget-kb", "0.5", "-o", str(out), "--debug"])


def test_task_images_may_be_float_nchw(tmp_path: Path) -> None:
    from qtrain.frontends.onnx import quantize_images
    from qtrain.tools.qtrain_search_scheme import load_task

    module = tiny()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(5, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "f.npz", image=images, label=np.arange(5) % 3)
    got, labels = load_task(tmp_path / "f.npz", module)
    assert got.dtype == np.int8 and np.array_equal(got, quantize_images(images, module))
    assert labels.tolist() == [0, 1, 2, 0, 1]
    np.savez(tmp_path / "bad_label.npz", image=images, label=np.arange(5))
    with pytest.raises(UserError, match=r"'label' must be class indices in \[0, 3\), got 0..4"):
        load_task(tmp_path / "bad_label.npz", module)


def test_console_script_infeasible_budget_names_the_minimum(tiny_files: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = tiny_files
    minimum = tiny_memory()[classifier_only(3)]
    proc = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_search_scheme", model, "--data", data,
                           "--budget-kb", "0.5", "-o", tmp_path / "s.json"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"qtrain-search-scheme: error: budget of 0.5 KB is infeasible: the smallest scheme (classifier only) "
        f"needs {minimum} bytes ({minimum / 1024:.1f} KB) of SRAM; use --budget-kb {-(-minimum // 1024)} or more"
    )
