"""Evolutionary search (MCUNetV3 §3.2, Fig. 5): the candidate with the largest gain under a memory budget.

The gain is usually `ContributionAnalysis.gain` (`qtrain.search.analysis`) and the memory
`MemoryPlanner.peak_sram_bytes` (`qtrain.search.memory`), but any functions of a `Candidate` will do.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qtrain.search.candidates import (
    Candidate,
    ConvInfo,
    InfeasibleBudgetError,
    bias_only,
    canonical,
    classifier_only,
    last_k,
    trains_superset,
    with_module,
    with_weight,
)
from qtrain.search.progress import ProgressCallback, report


@dataclass(frozen=True)
class EvolutionSettings:
    """Parameters of the evolutionary search (in the style of MCUNet's evolution finder)."""

    population: int = 50
    generations: int = 40
    patience: int = 8
    """stop early once the parents (the best `parent_fraction`) have not changed for this many generations:
    every child since was worse than all of them, so the search has converged (0: always run `generations`)"""
    parent_fraction: float = 0.25
    mutation_fraction: float = 0.5
    """share of the children made by mutation; the rest by crossover"""
    mutate_prob: float = 0.2
    """per-gene mutation probability (at least one gene always changes)"""
    frozen_prob: float = 0.5
    """probability that a random initial candidate leaves a layer's weight frozen"""
    module_prob: float = 0.1
    """probability that a random initial candidate trains a given lite residual module: low, because a module
    costs far more memory than a weight slice (on mcunet-5fps at 256 KB, drawing each of the 12 modules that fit
    alone with probability 0.5 put almost every draw over the budget); mutations add modules one at a time"""
    max_tries: int = 50
    """attempts to make one feasible, new child before giving up on it"""
    prune_supersets: bool = True
    """take a candidate training a superset of a known over-budget one as over budget without planning it
    (the planned memory grows with the trainable set; the chosen scheme is always planned)"""
    seed: int = 0


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
    modules: Sequence[int] = (),
    on_progress: ProgressCallback | None = None,
    depths: Sequence[int] | None = None,
    ratios: dict[int, Sequence[float]] | None = None,
) -> SearchResult:
    """Maximises `gain` over candidates with `memory(c) <= budget_bytes`.

    Genes: n_bias_update (0..n), one ratio per searchable backbone conv (`ConvInfo.ratio_options`;
    the others stay frozen) and one on/off per lite residual module block in `modules`. The initial
    population holds the hand-designed schemes that fit (classifier only, bias-only, last-k for every k)
    and random feasible candidates; each generation keeps the best
    `parent_fraction` (by gain, then lower memory) and adds children by mutation and crossover, each
    child feasible, not yet in the population and at least as good as the worst parent (a worse one
    could never be selected, so it is not planned). Deterministic for `settings.seed`.
    Raises `InfeasibleBudgetError` when not even classifier-only fits. Progress (one unit per generation,
    stage "evolutionary search") goes to `on_progress`. `depths` and `ratios` (layer -> ratios) restrict the
    bias depths and weight ratios drawn to those given (the parts a contribution analysis measured,
    `ContributionAnalysis.measured_depths` / `measured_ratios`); default: all.
    """
    start = time.perf_counter()
    n = len(convs)
    genes = list(range(n)) if searchable is None else sorted(set(searchable))
    options = {i: convs[i].ratio_options() for i in genes}
    if ratios is not None:
        options = {i: tuple(r for r in options[i] if r == 0 or r in ratios.get(i, ())) for i in genes}
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

    # A gene value that does not fit next to the classifier alone fits in no candidate (the planned memory
    # grows with the trainable set, as the superset pruning assumes): it is left out of the draws. Without
    # this, when most values are over the budget (the early blocks' modules of mcunet-5fps at 256 KB), almost
    # every random candidate is, and the initial population took up to population x max_tries plans.
    max_depth = _largest_fitting(n, lambda k: feasible(norm(Candidate(k, minimal.weight_ratios))))
    allowed_depths = None if depths is None else sorted({0, *(k for k in depths if k <= max_depth)})

    def random_depth() -> int:
        return rng.randint(0, max_depth) if allowed_depths is None else rng.choice(allowed_depths)
    for i in genes:
        fitting = [options[i][0]]
        for r in options[i][1:]:  # ascending ratios: memory grows with them
            if not feasible(norm(with_weight(minimal, i, r))):
                break
            fitting.append(r)
        options[i] = tuple(fitting)
    genes = [i for i in genes if len(options[i]) > 1]
    blocks = [b for b in sorted(set(modules)) if feasible(norm(with_module(minimal, b)))]

    def random_candidate() -> Candidate:
        ratios = [0.0] * n
        for i in genes:
            if rng.random() >= settings.frozen_prob:
                ratios[i] = rng.choice(options[i][1:])
        if not blocks:  # (the same random draws as before modules existed)
            return Candidate(random_depth(), tuple(ratios))
        chosen = tuple(b for b in blocks if rng.random() < settings.module_prob)
        return Candidate(random_depth(), tuple(ratios), chosen)

    def mutate(parent: Candidate) -> Candidate:
        k = parent.n_bias_update
        ratios = list(parent.weight_ratios)
        on = set(parent.lite_residual)
        slots = [-1, *genes, *(n + b for b in blocks)]  # -1: the bias gene; n + b: block b's module
        changed = [s for s in slots if rng.random() < settings.mutate_prob] or [rng.choice(slots)]
        for s in changed:
            if s < 0:
                values = range(max_depth + 1) if allowed_depths is None else allowed_depths
                k = rng.choice([v for v in values if v != k] or [k])
            elif s >= n:
                on ^= {s - n}
            else:
                ratios[s] = rng.choice([r for r in options[s] if r != ratios[s]] or [ratios[s]])
        return Candidate(k, tuple(ratios), tuple(sorted(on)))

    def crossover(a: Candidate, b: Candidate) -> Candidate:
        k = rng.choice((a.n_bias_update, b.n_bias_update))
        ratios = [rng.choice((x, y)) for x, y in zip(a.weight_ratios, b.weight_ratios, strict=True)]
        if not blocks:
            return Candidate(k, tuple(ratios))
        chosen = tuple(m for m in blocks if rng.choice((m in a.lite_residual, m in b.lite_residual)))
        return Candidate(k, tuple(ratios), chosen)

    anchors = [minimal, bias_only(n), *(last_k(k, n) for k in range(2, n + 2))]
    anchors = [norm(c) for c in anchors
               if all(r == 0 or (i in options and convs[i].canonical_ratio(r) in options[i])
                      for i, r in enumerate(c.weight_ratios))
               and (allowed_depths is None or c.n_bias_update in allowed_depths or c.n_bias_update > max_depth)]
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
    report(on_progress, 0, settings.generations, "evolutionary search")
    previous_parents: list[Candidate] = []
    unchanged = 0
    for generation in range(1, settings.generations + 1):
        population.sort(key=fitness)
        parents = population[:n_parents]
        unchanged = unchanged + 1 if parents == previous_parents else 0
        if settings.patience and unchanged >= settings.patience:
            report(on_progress, settings.generations, settings.generations, "evolutionary search")
            break
        previous_parents = parents
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
        report(on_progress, generation, settings.generations, "evolutionary search")
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


def _largest_fitting(n: int, fits: Callable[[int], bool]) -> int:
    """The largest k in 0..n with fits(k), for a fits that holds for 0 and, once false, stays false."""
    lo, hi = 0, n  # fits(lo) holds; the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo
