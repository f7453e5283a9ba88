"""The training pipeline as one list of passes, shared by qtrain-compile, the benchmarks and tests.

    qtrain-autodiff -> qtrain-sparse-update -> qtrain-dead-gradient-elim -> [qtrain-fuse-streaming]
      -> [qtrain-reorder] -> qtrain-plan-memory

`scheme` is a command-line scheme string (`full`, `bias-only`, `last-k=K`, `FILE.json#MODEL/BUDGET`) or
an `UpdateScheme` object (`qtrain.transforms.schemes`), e.g. `UpdateScheme.per_layer(2, {0: 0.5})`.
The recipe (lr, bias_lr, warmup_steps, steps = the decay horizon, final_lr_ratio, momentum) defaults to
`qtrain.transforms.recipe.COMPILE_RECIPE`; `recipe_options(recipe)` gives a `Recipe`'s as keywords.
"""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from qtrain.transforms.autodiff import AutodiffPass
from qtrain.transforms.dead_gradient_elim import DeadGradientElimPass
from qtrain.transforms.fuse_streaming import FuseStreamingPass
from qtrain.transforms.plan_memory import PlanMemoryPass
from qtrain.transforms.recipe import COMPILE_RECIPE, Recipe
from qtrain.transforms.reorder import ReorderPass
from qtrain.transforms.schemes import UpdateScheme
from qtrain.transforms.sparse_update import SparseUpdatePass
from qtrain.transforms.target import DEFAULT_TARGET


def training_passes(
    scheme: str | UpdateScheme = "full",
    *,
    reorder: bool = True,
    sram_kb: int = 256,
    lr: float = COMPILE_RECIPE.lr,
    bias_lr: float | None = COMPILE_RECIPE.bias_lr,
    warmup_steps: int = COMPILE_RECIPE.warmup_steps,
    steps: int = COMPILE_RECIPE.steps,
    final_lr_ratio: float = COMPILE_RECIPE.final_lr_ratio,
    momentum: float = COMPILE_RECIPE.momentum,
    qas: bool = True,
    weight_storage: str = "f32",
    memory_report: str | None = None,
    target: str = DEFAULT_TARGET,
    plan: bool = True,
    fuse_streaming: bool = True,
) -> list[ModulePass]:
    passes: list[ModulePass] = [
        AutodiffPass(lr=lr, bias_lr=bias_lr, warmup_steps=warmup_steps, steps=steps,  # type: ignore[arg-type]
                     final_lr_ratio=final_lr_ratio, momentum=momentum, qas=qas, weight_storage=weight_storage),
        SparseUpdatePass.from_scheme(scheme) if isinstance(scheme, UpdateScheme) else SparseUpdatePass(scheme=scheme),
        DeadGradientElimPass(),
    ]
    if fuse_streaming:
        passes.append(FuseStreamingPass(target=target))
    if reorder:
        passes.append(ReorderPass())
    if plan:
        passes.append(PlanMemoryPass(sram_kb=sram_kb, memory_report=memory_report, target=target))
    return passes


def recipe_options(recipe: Recipe) -> dict[str, object]:
    """`training_passes` keywords for every field of a recipe."""
    return {"lr": recipe.lr, "bias_lr": recipe.bias_lr, "warmup_steps": recipe.warmup_steps, "steps": recipe.steps,
            "final_lr_ratio": recipe.final_lr_ratio, "momentum": recipe.momentum}


def apply_passes(module: ModuleOp, passes: list[ModulePass]) -> ModuleOp:
    ctx = Context()
    for p in passes:
        p.apply(ctx, module)
    module.verify()
    return module
