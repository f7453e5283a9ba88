"""The training recipe's defaults live in one place (transforms/recipe.py) and reach every entry point:
the qtrain-autodiff pass options, `training_passes`, qtrain-compile's flags, the search's FineTuneRecipe."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest
from testpaths import LIT_INPUTS

from qtrain.search import FineTuneRecipe
from qtrain.transforms.autodiff import AutodiffPass
from qtrain.transforms.pipeline import recipe_options, training_passes
from qtrain.transforms.recipe import COMPILE_RECIPE, FINE_TUNE_RECIPE, Recipe


def test_the_pass_and_the_pipeline_default_to_the_compile_recipe() -> None:
    ad = AutodiffPass()
    assert (ad.lr, ad.bias_lr, ad.warmup_steps, ad.steps, ad.final_lr_ratio, ad.momentum) == (
        COMPILE_RECIPE.lr, COMPILE_RECIPE.bias_lr, COMPILE_RECIPE.warmup_steps, COMPILE_RECIPE.steps,
        COMPILE_RECIPE.final_lr_ratio, COMPILE_RECIPE.momentum)
    defaults = {k: p.default for k, p in inspect.signature(training_passes).parameters.items()}
    assert {k: defaults[k] for k in recipe_options(COMPILE_RECIPE)} == recipe_options(COMPILE_RECIPE)
    assert set(recipe_options(COMPILE_RECIPE)) == {f.name for f in dataclasses.fields(Recipe)}
    # the default passes carry the recipe; another recipe's options reach the pass
    assert training_passes()[0] == AutodiffPass()
    custom = Recipe(lr=0.02, bias_lr=0.001, warmup_steps=5, steps=100, final_lr_ratio=0.3, momentum=0.8)
    ad = training_passes(**recipe_options(custom))[0]  # type: ignore[arg-type]
    assert isinstance(ad, AutodiffPass)
    assert (ad.lr, ad.bias_lr, ad.warmup_steps, ad.steps, ad.final_lr_ratio, ad.momentum) == (
        0.02, 0.001, 5, 100, 0.3, 0.8)


def test_the_search_fine_tunes_at_the_constant_rate_it_was_swept_with() -> None:
    recipe = FineTuneRecipe()
    assert (recipe.lr, recipe.bias_lr, recipe.warmup_steps, recipe.horizon, recipe.momentum) == (
        FINE_TUNE_RECIPE.lr, FINE_TUNE_RECIPE.bias_lr, 0, 0, 0.0)
    # Unchanged fingerprint (cached contribution analyses stay valid); a schedule gives another one.
    assert set(recipe.fingerprint()) == {"steps", "lr", "bias_lr", "weight_storage"}
    assert FineTuneRecipe(warmup_steps=10, horizon=100).fingerprint() != recipe.fingerprint()


def compile_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_compile", *args], capture_output=True,
                          text=True, timeout=300)


def test_qtrain_compile_documents_the_recipe_flags() -> None:
    result = compile_tool("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for flag, default in (("--lr", COMPILE_RECIPE.lr), ("--warmup-steps", COMPILE_RECIPE.warmup_steps),
                          ("--steps", COMPILE_RECIPE.steps), ("--final-lr-ratio", COMPILE_RECIPE.final_lr_ratio),
                          ("--momentum", COMPILE_RECIPE.momentum)):
        assert flag in text and f"default {default:g}" in text, flag
    assert "--bias-lr" in text


@pytest.mark.parametrize(("flags", "message"), [
    (["--momentum", "1.5"], "qtrain-autodiff: momentum must be within [0, 1), got 1.5"),
    (["--warmup-steps", "10", "--steps", "5"], "steps (the decay horizon) must be 0 (no decay) or more than"),
    (["--final-lr-ratio", "-0.5"], "final-lr-ratio must be within [0, 1], got -0.5"),
])
def test_qtrain_compile_refuses_a_bad_recipe_in_one_line(tmp_path, flags: list[str], message: str) -> None:
    result = compile_tool(str(LIT_INPUTS / "tiny_model.mlir"), "--target", "host", "-o", str(tmp_path / "b"), *flags)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b" / "model.c").exists()
