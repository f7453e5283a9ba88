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
    weights_per_draw: float = 4.0
    """at most this many weights trained by a random initial candidate on average: with many searchable layers
    each is trained with probability weights_per_draw / layers instead of 1 - frozen_prob (on mcunet-5fps with
    24 layers at 256 KB, half of them drew candidates nearly all over the budget: the initial population took
    more than 6 minutes of plans; the published schemes train 4 to 8 weights)"""
    module_prob: float = 0.1
    """probability that a random initial candidate trains a given lite residual module: low, because a module
    costs far more memory than a weight slice (on mcunet-5fps at 256 KB, drawing each of the 12 modules that fit
    alone with probability 0.5 put almost every draw over the budget); mutations add modules one at a time"""
    max_tries: int = 10
    """attempts to make one feasible, new child before giving up on it (the generation then has one child
    less). Once the parents sit at the budget's edge most children that would gain more are over it, and each
    costs a plan: at 50 tries a generation of mcunet-5fps's search at 256 KB took up to a thousand plans"""
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
    prefetch: Callable[[Sequence[Candidate]], None] | None = None,
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
    `ContributionAnalysis.measured_depths` / `measured_ratios`); default: all. `prefetch(candidates)`: plans
    candidates ahead, so that `memory` finds them planned (`MemoryPlanner.prefetch`: in parallel); the search
    asks it for the candidates it would plan next if each were feasible, and decides exactly as without it.
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

    def pruned(c: Candidate) -> bool:
        """Over the budget without a plan: it trains all that a known over-budget candidate trains."""
        return settings.prune_supersets and any(trains_superset(c, x) for x in over_budget)

    def feasible(c: Candidate) -> bool:
        if pruned(c):
            return False
        if mem(c) <= budget_bytes:
            return True
        over_budget.append(c)
        return False

    def fitness(c: Candidate) -> tuple[float, int, Candidate]:
        # Sort key: higher gain first, then lower memory, then a fixed order for ties.
        return (-gain(c), mem(c), c)

    def unplanned(c: Candidate) -> bool:
        return c not in planned and not pruned(c)

    def known_infeasible(c: Candidate) -> bool:
        return c in over_budget or pruned(c)

    def plan_ahead(candidates: Sequence[Candidate]) -> None:
        ahead = [c for c in dict.fromkeys(candidates) if unplanned(c)]
        if prefetch is not None and ahead:
            prefetch(ahead)
            planned.update(ahead)

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

    def random_depth(r: random.Random) -> int:
        return r.randint(0, max_depth) if allowed_depths is None else r.choice(allowed_depths)

    # Ascending ratios (memory grows with them), all layers' next ratio at once: each round's plans can be
    # made together (`prefetch`); the decisions are the layer-by-layer ones.
    pending = {i: list(options[i][1:]) for i in genes}
    fitting = {i: [options[i][0]] for i in genes}
    while pending:
        trial = {i: norm(with_weight(minimal, i, ratios[0])) for i, ratios in pending.items()}
        plan_ahead(list(trial.values()))
        for i, c in trial.items():
            fits = feasible(c)
            if fits:
                fitting[i].append(pending[i].pop(0))
            if not fits or not pending[i]:
                del pending[i]
    options.update({i: tuple(fitting[i]) for i in genes})
    genes = [i for i in genes if len(options[i]) > 1]
    plan_ahead([norm(with_module(minimal, b)) for b in sorted(set(modules))])
    blocks = [b for b in sorted(set(modules)) if feasible(norm(with_module(minimal, b)))]

    train_prob = min(1 - settings.frozen_prob, settings.weights_per_draw / max(1, len(genes)))

    def random_candidate(r: random.Random) -> Candidate:
        ratios = [0.0] * n
        for i in genes:
            if r.random() >= 1 - train_prob:  # (= frozen_prob with few layers: the draws of before)
                ratios[i] = r.choice(options[i][1:])
        if not blocks:  # (the same random draws as before modules existed)
            return Candidate(random_depth(r), tuple(ratios))
        chosen = tuple(b for b in blocks if r.random() < settings.module_prob)
        return Candidate(random_depth(r), tuple(ratios), chosen)

    def mutate(parent: Candidate, r: random.Random) -> Candidate:
        k = parent.n_bias_update
        ratios = list(parent.weight_ratios)
        on = set(parent.lite_residual)
        slots = [-1, *genes, *(n + b for b in blocks)]  # -1: the bias gene; n + b: block b's module
        changed = [s for s in slots if r.random() < settings.mutate_prob] or [r.choice(slots)]
        for s in changed:
            if s < 0:
                values = range(max_depth + 1) if allowed_depths is None else allowed_depths
                k = r.choice([v for v in values if v != k] or [k])
            elif s >= n:
                on ^= {s - n}
            else:
                ratios[s] = r.choice([q for q in options[s] if q != ratios[s]] or [ratios[s]])
        return Candidate(k, tuple(ratios), tuple(sorted(on)))

    def crossover(a: Candidate, b: Candidate, r: random.Random) -> Candidate:
        k = r.choice((a.n_bias_update, b.n_bias_update))
        ratios = [r.choice((x, y)) for x, y in zip(a.weight_ratios, b.weight_ratios, strict=True)]
        if not blocks:
            return Candidate(k, tuple(ratios))
        chosen = tuple(m for m in blocks if r.choice((m in a.lite_residual, m in b.lite_residual)))
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
    # With `prefetch`, whenever the next candidate to plan is not planned yet, the search first simulates its
    # coming draws from the same random state, taking every candidate as feasible (the draws never depend
    # on a plan), and hands the ones it would plan to `prefetch`: the planner's idle workers plan them
    # together. Only plans move ahead; every decision is the sequential one, so the result is the same.
    def look_ahead(draws: Callable[[random.Random], list[Candidate]], state: object) -> None:
        sim = random.Random()
        sim.setstate(state)  # type: ignore[arg-type]
        plan_ahead(draws(sim))

    tries = 0
    limit = settings.population * settings.max_tries

    def initial_draws(sim: random.Random) -> list[Candidate]:
        seen, out, t = list(population), [], tries
        while len(seen) < settings.population and t < limit:
            t += 1
            c = norm(random_candidate(sim))
            if c not in seen and not known_infeasible(c):
                seen.append(c)
                out.append(c)
        return out

    while len(population) < settings.population and tries < limit:
        state = rng.getstate() if prefetch is not None else None
        tries += 1
        c = norm(random_candidate(rng))
        if prefetch is not None and c not in population and unplanned(c):
            tries -= 1
            look_ahead(initial_draws, state)
            tries += 1
        if c not in population and feasible(c):
            population.append(c)

    n_parents = max(2, round(settings.parent_fraction * settings.population))
    n_mutants = round(settings.mutation_fraction * (settings.population - n_parents))
    best_history: list[float] = []
    report(on_progress, 0, settings.generations, "evolutionary search")
    previous_parents: list[Candidate] = []
    unchanged = 0

    def propose(r: random.Random, index: int, parents: list[Candidate]) -> Candidate:
        if index < n_mutants or len(parents) < 2:
            return norm(mutate(r.choice(parents), r))
        return norm(crossover(*r.sample(parents, 2), r))

    def child_draws(sim: random.Random, index: int, attempt: int, children: list[Candidate],
                    parents: list[Candidate], worst: float) -> list[Candidate]:
        # The children loop below, from its draw number `attempt` for child `index`, every child feasible.
        seen, out = list(children), []
        while index < settings.population - len(parents):
            c = propose(sim, index, parents)
            attempt += 1
            if c not in seen and gain(c) >= worst and not known_infeasible(c):
                seen.append(c)
                out.append(c)
                index, attempt = index + 1, 0
            elif attempt >= settings.max_tries:
                index, attempt = index + 1, 0
        return out

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
            for attempt in range(settings.max_tries):
                state = rng.getstate() if prefetch is not None else None
                child = propose(rng, index, parents)
                if child not in children and gain(child) >= worst:
                    if prefetch is not None and unplanned(child):
                        look_ahead(lambda sim, i=index, a=attempt, c=children, p=parents, w=worst:
                                   child_draws(sim, i, a, c, p, w), state)
                    if feasible(child):
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
