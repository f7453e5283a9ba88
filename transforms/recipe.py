"""The training recipe's defaults: the one place qtrain sets learning rates, so that qtrain-autodiff,
qtrain-compile, the scheme search, the demo and the benchmarks cannot drift apart.

Two recipes exist today (the learning issue replaces them with one default chosen by a sweep):

- `COMPILE_RECIPE`: what `qtrain-autodiff` / `qtrain-compile` use without flags (lr 0.05, bias lr = lr);
- `FINE_TUNE_RECIPE`: what the scheme search measures contributions with and the demo and benchmarks
  train with (lr 0.01, bias lr 0.001: the most stable setting of the digits sweep documented at
  `qtrain.search.FineTuneRecipe`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """Learning rates of weight and bias updates (`bias_lr` None: the weight rate)."""

    lr: float
    bias_lr: float | None = None


COMPILE_RECIPE = Recipe(lr=0.05)
FINE_TUNE_RECIPE = Recipe(lr=0.01, bias_lr=0.001)
FINE_TUNE_STEPS = 2000
