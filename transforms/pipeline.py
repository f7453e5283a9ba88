"""The training pipeline as one list of passes, shared by qtrain-compile, the benchmarks and tests.

    [qtrain-lite-residual] -> qtrain-autodiff -> qtrain-sparse-update -> qtrain-dead-gradient-elim
      -> [qtrain-narrow-gradients] -> qtrain-stream-backward -> [qtrain-fuse-streaming] -> [qtrain-reorder]
      -> qtrain-plan-memory

`scheme` is a command-line scheme string (`full`, `bias-only`, `last-k=K`, `tinytl-b`, `tinytl-l`,
`tinytl-l+b`, `FILE.json#MODEL/BUDGET`) or an `UpdateScheme` object (`qtrain.transforms.schemes`), e.g.
`UpdateScheme.per_layer(2, {0: 0.5})`. A scheme that trains lite residual modules (`tinytl-l`,
`tinytl-l+b`, a per-layer scheme with `lite_residual_blocks`) first inserts them into @forward
(`qtrain-lite-residual`, a no-op for the forward outputs), calibrated on `calibration`: the task's int8
training images, or scales computed once by `qtrain.transforms.lite_residual.calibrate`.
`stream_backward` ("auto", "on", "off") is qtrain-stream-backward's mode. `grad_precision` is the arena
format of activation gradients: "f32", or "bf16" (qtrain-narrow-gradients).
The recipe (lr, bias_lr, warmup_steps, steps = the decay horizon, final_lr_ratio, momentum) defaults to
`qtrain.transforms.recipe.COMPILE_RECIPE`; `recipe_options(recipe)` gives a `Recipe`'s as keywords.
"""

from __future__ import annotations

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from qtrain.transforms.autodiff import AutodiffPass
from qtrain.transforms.dead_gradient_elim import DeadGradientElimPass
from qtrain.transforms.fuse_streaming import FuseStreamingPass
from qtrain.transforms.lite_residual import Calibration, LiteResidualPass
from qtrain.transforms.narrow_gradients import DEFAULT_GRAD_PRECISION, NarrowGradientsPass
from qtrain.transforms.plan_memory import PlanMemoryPass
from qtrain.transforms.recipe import COMPILE_RECIPE, DEFAULT_WEIGHT_STORAGE, Recipe
from qtrain.transforms.reorder import ReorderPass
from qtrain.transforms.schemes import SchemeError, UpdateScheme, parse_scheme
from qtrain.transforms.sparse_update import SparseUpdatePass
from qtrain.transforms.stream_backward import StreamBackwardPass
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
    weight_storage: str = DEFAULT_WEIGHT_STORAGE,
    grad_precision: str = DEFAULT_GRAD_PRECISION,
    stream_backward: str = "auto",
    memory_report: str | None = None,
    target: str = DEFAULT_TARGET,
    plan: bool = True,
    fuse_streaming: bool = True,
    calibration: Calibration | np.ndarray | None = None,
) -> list[ModulePass]:
    passes: list[ModulePass] = []
    parsed = scheme if isinstance(scheme, UpdateScheme) else _parsed(scheme)
    if parsed is not None and parsed.inserts_modules:
        passes.append(lite_residual_pass(parsed.module_blocks, calibration))
    passes += [
        AutodiffPass(lr=lr, bias_lr=bias_lr, warmup_steps=warmup_steps, steps=steps,  # type: ignore[arg-type]
                     final_lr_ratio=final_lr_ratio, momentum=momentum, qas=qas, weight_storage=weight_storage),
        SparseUpdatePass.from_scheme(scheme) if isinstance(scheme, UpdateScheme) else SparseUpdatePass(scheme=scheme),
        DeadGradientElimPass(),
    ]
    if grad_precision != "f32":
        passes.append(NarrowGradientsPass(precision=grad_precision))  # type: ignore[arg-type]
    if stream_backward != "off":
        passes.append(StreamBackwardPass(mode=stream_backward, target=target))  # type: ignore[arg-type]
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


def _parsed(spec: str) -> UpdateScheme | None:
    """The scheme a spec names, or None when it does not parse (qtrain-sparse-update then says why)."""
    try:
        return parse_scheme(spec)
    except SchemeError:
        return None


def lite_residual_pass(blocks: tuple[int, ...] | None, calibration: Calibration | np.ndarray | None
                       ) -> LiteResidualPass:
    """`qtrain-lite-residual` for `blocks` (None: every block but the first), calibrated as `calibration` says
    (None: the pass's documented stand-in, with a warning)."""
    if isinstance(calibration, Calibration):
        return LiteResidualPass.with_calibration(calibration, blocks=blocks)
    if calibration is not None:
        return LiteResidualPass.with_images(calibration, blocks=blocks)
    return LiteResidualPass(blocks=blocks)


def apply_passes(module: ModuleOp, passes: list[ModulePass], verify: bool = True) -> ModuleOp:
    """Runs `passes` on `module` in place and verifies the result (`verify=False`: a caller that reads one
    figure of many plans, the scheme search's memory planner, where verifying was a sixth of each plan;
    the same pipeline's output is verified wherever it is compiled or run)."""
    ctx = Context()
    for p in passes:
        p.apply(ctx, module)
    if verify:
        module.verify()
    return module
