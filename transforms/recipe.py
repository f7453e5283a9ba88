"""The training recipe's defaults: the one place qtrain sets learning rates, the learning-rate schedule and
momentum, so that qtrain-autodiff, qtrain-compile, the scheme search, the demo and the benchmarks cannot
drift apart.

A recipe is compiled into the firmware (`qtrain-autodiff` builds it into @train_step): the device
computes each step's learning rate itself (`qtrain.lr_schedule`: linear warm-up over `warmup_steps`,
cosine decay over the horizon `steps` down to `final_lr_ratio` times the base rate, then that rate
held, so the device keeps learning after the horizon), and the weight and bias rates follow the same
schedule. SGD momentum is off by default, as the MCUNetV3 paper trains at batch 1 without it.

Two recipes exist:

- `COMPILE_RECIPE`: what `qtrain-autodiff` / `qtrain-compile` use without flags: lr 0.01, bias lr 0.001,
  50 warm-up steps, cosine over a 1000-step horizon down to 0.1 x lr, then held. Chosen by the sweep of
  `python -m qtrain.tools.sweep_recipe` (docs/recipe.md has the table): the three reference models with
  their 49kb schemes on examples/transfer's 128x128 task and the digits CNN (last-k=3), 1000 steps, held-out
  accuracy over three data orders. Of the settings measured on all four, the only one under which all
  four learn and none diverges; the earlier provisional lr 0.05 diverged to chance on all three reference
  models.
- `FINE_TUNE_RECIPE`: what the scheme search measures contributions with and the demo and benchmarks
  train with (the same rates, at a constant learning rate, as the digits sweep documented at
  `qtrain.search.FineTuneRecipe` measured it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """How @train_step learns.

    `lr` / `bias_lr`: base learning rates of weight and bias updates (`bias_lr` None: the weight rate);
    `warmup_steps`: linear warm-up length (0: none); `steps`: the horizon of the cosine decay (0: no
    decay, the rate stays at lr after the warm-up); `final_lr_ratio`: the rate at and after the horizon,
    as a fraction of lr; `momentum`: SGD momentum (0: plain SGD, no velocity buffers).
    """

    lr: float
    bias_lr: float | None = None
    warmup_steps: int = 0
    steps: int = 0
    final_lr_ratio: float = 1.0
    momentum: float = 0.0


WARMUP_STEPS = 50
HORIZON_STEPS = 1000
FINAL_LR_RATIO = 0.1

WEIGHT_STORAGES = ("f32", "i16", "i8", "i8-nearest")
"""`--weight-storage` choices for the SRAM copy of a trained int8 weight, most bytes first: an fp32 master
(4 B per weight), a 16-bit fixed-point master (2 B) and int8 in place (1 B), the last two rounded
stochastically, and int8 in place rounded to nearest (1 B, for comparison). qtrain-autodiff says how."""

DEFAULT_WEIGHT_STORAGE = "f32"
"""The storage every tool uses without `--weight-storage`: the cheapest whose held-out accuracy is within 1
point of f32 on the benchmark tasks. Measured in docs/memory.md: i8 (stochastic) is within 1 point on the
transfer task and on digits' last-k=3, but 4.3 points below on digits' searched scheme (i16: 5.3), so f32."""

COMPILE_RECIPE = Recipe(lr=0.01, bias_lr=0.001, warmup_steps=WARMUP_STEPS, steps=HORIZON_STEPS,
                        final_lr_ratio=FINAL_LR_RATIO)
FINE_TUNE_RECIPE = Recipe(lr=0.01, bias_lr=0.001)
FINE_TUNE_STEPS = 2000
