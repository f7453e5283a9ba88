"""The memory benchmark's figures are deterministic plans: check the bars it reports on real models."""

from __future__ import annotations

import pytest
from testpaths import MODELS, require_shared_models

from qtrain.tools.bench_memory import BARS, bar_rows, measure

# The middle budget of each model: enough trained weights that their gradients matter
SCHEMES = {"mcunet-5fps": "99kb", "mbv2-w0.35": "99kb", "proxyless-w0.3": "98kb"}


@pytest.mark.parametrize("model", list(SCHEMES))
def test_int8_in_place_schemes_meet_both_bars(model: str) -> None:
    """With int8 weight copies updated in place, sparse + reorder is >= 2x below the same scheme without
    reorder and >= 15x below full update; reordering never costs memory."""
    require_shared_models()
    from qtrain.frontends.tiny_training import import_tiny_training

    text = str(import_tiny_training(MODELS / f"{model}.pkl", num_classes=10))
    budget = SCHEMES[model]
    scheme = f"{MODELS / 'schemes.json'}#{model}/{budget}"
    rows = {
        "full|naive": measure(text, "full", False, "i8"),
        f"{budget}|naive": measure(text, scheme, False, "i8"),
        f"{budget}|reorder": measure(text, scheme, True, "i8"),
    }
    for row in rows.values():
        assert row["peak_sram_bytes"] == row["arena_bytes"] + row["trainable_bytes"] + row["scratch_bytes"]
    naive, reordered = rows[f"{budget}|naive"], rows[f"{budget}|reorder"]
    assert reordered["peak_sram_bytes"] < naive["peak_sram_bytes"]
    assert reordered["trainable_bytes"] == naive["trainable_bytes"]  # the same trainable set
    met = bar_rows(rows)
    assert [label for label, _, _ in met] == [budget], (
        naive["peak_sram_bytes"] / reordered["peak_sram_bytes"],
        rows["full|naive"]["peak_sram_bytes"] / reordered["peak_sram_bytes"], BARS)


def test_bf16_gradients_halve_the_bias_only_arena() -> None:
    """bias-only carries activation gradients back to the first layer: held as bf16 they take half the
    arena (the figure bench_memory prints per gradient precision)."""
    require_shared_models()
    from qtrain.frontends.tiny_training import import_tiny_training

    text = str(import_tiny_training(MODELS / "proxyless-w0.3.pkl", num_classes=10))
    wide = measure(text, "bias-only", True, "i8", grad_precision="f32")
    narrow = measure(text, "bias-only", True, "i8", grad_precision="bf16")
    assert narrow["trainable_bytes"] == wide["trainable_bytes"]
    assert 0.45 < narrow["arena_bytes"] / wide["arena_bytes"] < 0.6
