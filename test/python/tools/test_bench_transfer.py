"""bench_transfer's parts that need no torch: the trainable set, the schedule, the table and bars, the skip.

The fp32 network itself (PyTorch) is checked by the benchmark against the relaxed interpreter before it
trains; torch is not a test dependency, so nothing here imports it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from qtrain import numerics
from qtrain.dialects import load_module
from qtrain.tools import bench_transfer as bench
from qtrain.transforms.recipe import COMPILE_RECIPE

INPUTS = Path(__file__).resolve().parents[2] / "lit" / "Inputs"


def test_trainable_set_matches_the_compiled_memory_json(tmp_path: Path) -> None:
    """A per-layer scheme with a depthwise slice (axis 0) and a pointwise one (axis 3, input channels), read
    from the in-process plan, is what the compiled build's memory.json trains."""
    import qtrain

    module = load_module(INPUTS / "inverted_residual.mlir")
    schemes = tmp_path / "schemes.json"
    schemes.write_text(json.dumps({"ir": {"half": {"n_bias_update": 2, "manual_weight_idx": [2, 3],
                                                   "weight_update_ratio": [0.5, 0.25]}}}))
    spec = f"{schemes}#ir/half"
    planned = bench.plan(module, spec, tmp_path / "plan.json")
    build = qtrain.compile(module, scheme=spec, target="host", output=tmp_path / "build")
    assert planned["trainable"] == build.memory["trainable"]
    assert planned["peak_sram_bytes"] == build.memory["peak_sram_bytes"]

    trained = bench.trainable_set(build.memory, bench.param_shapes(module))
    assert trained == {
        "conv2.weight": bench.Trained("conv2.weight", "weight", axis=0, start=0, stop=8),  # depthwise 16x3x3x1
        "conv2.bias": bench.Trained("conv2.bias", "bias"),
        "conv3.weight": bench.Trained("conv3.weight", "weight", axis=3, start=0, stop=4),  # 8x1x1x16
        "conv3.bias": bench.Trained("conv3.bias", "bias"),
        "conv4.weight": bench.Trained("conv4.weight", "weight"),
        "conv4.bias": bench.Trained("conv4.bias", "bias"),
    }


def test_trainable_set_rejects_a_shape_it_cannot_explain() -> None:
    memory = {"trainable": [{"name": "w", "kind": "weight", "shape": [4, 1, 1, 2], "channels": [0, 3]}]}
    with pytest.raises(ValueError, match="not"):
        bench.trainable_set(memory, {"w": (4, 1, 1, 8)})


def test_largest_last_k_stops_at_the_budget(tmp_path: Path) -> None:
    module = load_module(INPUTS / "inverted_residual.mlir")
    peaks = [bench.plan(module, f"last-k={k}", tmp_path / "p.json")["peak_sram_bytes"] for k in (1, 2, 3)]
    assert peaks[0] < peaks[1] < peaks[2]
    k, seen = bench.largest_last_k(module, peaks[1], tmp_path)
    assert k == 2 and seen == peaks
    assert bench.largest_last_k(module, peaks[0] - 1, tmp_path)[0] == 1  # nothing fits: the classifier


def test_learning_rates_are_the_devices() -> None:
    r = COMPILE_RECIPE
    for step in (0, 1, 25, 49, 50, 51, 300, 999, 1000, 1700):
        factor = numerics.lr_schedule_factor(step, warmup_steps=r.warmup_steps, steps=r.steps,
                                             final_ratio=r.final_lr_ratio)
        lr, bias_lr = bench.learning_rates(step)
        assert lr == float(numerics.scheduled_lr(r.lr, factor))
        assert bias_lr == float(numerics.scheduled_lr(r.bias_lr, factor))
    # The recipe's shape: warm-up from lr / 50, the full rate at step 49, then cosine down to 0.1x and held.
    assert bench.learning_rates(0)[0] == pytest.approx(0.01 / 50, rel=1e-6)
    assert bench.learning_rates(49) == pytest.approx((0.01, 0.001), rel=1e-6)
    assert bench.learning_rates(525)[0] == pytest.approx(0.01 * 0.55, rel=1e-5)
    assert bench.learning_rates(1000) == bench.learning_rates(5000) == pytest.approx((0.001, 0.0001), rel=1e-6)


def synthetic_result() -> dict:
    def curve(final: float) -> list[list[float]]:
        return [[0, 0.1], [500, final - 0.05], [1000, final]]

    rows, runs = [], {}
    finals = {"qas": 0.80, "no-qas": 0.70, "fp32": 0.805}
    for model, base in (("a", 0.0), ("b", 0.02)):
        for scheme, peak, shift in (("bias-only", 400_000, -0.1), ("last-k", 250_000, -0.05), ("49kb", 170_000, 0.0),
                                    ("searched", 160_000, 0.03)):
            rows.append({"model": model, "scheme": scheme, "spec": "last-k=2" if scheme == "last-k" else scheme,
                         "planned_peak_bytes": peak, "notes": {}})
            for arm, final in finals.items():
                runs[f"{model}|{scheme}|{arm}"] = {str(o): curve(final + base + shift + 0.01 * o) for o in (1, 2)}
    return {"models": ["a", "b"], "arms": ["qas", "no-qas", "fp32"], "orders": [1, 2], "rows": rows, "runs": runs}


def test_table_from_a_result() -> None:
    text = bench.table(synthetic_result())
    lines = text.splitlines()
    assert lines[0] == "| model | scheme | planned peak KB | int8 + QAS % | int8, no QAS % | fp32 PyTorch % |"
    assert len(lines) == 2 + 8
    assert "| a | last-k (last-k=2) | 244.1 | 76.5 +- 0.5 | 66.5 +- 0.5 | 77.0 +- 0.5 |" in lines
    assert "| b | 49kb | 166.0 | 83.5 +- 0.5 | 73.5 +- 0.5 | 84.0 +- 0.5 |" in lines


def test_table_marks_missing_orders_and_cells() -> None:
    result = synthetic_result()
    del result["runs"]["a|49kb|fp32"]["2"]
    del result["runs"]["b|49kb|fp32"]
    result["rows"][2]["notes"] = {}
    result["rows"][6]["notes"] = {"fp32": "n/a"}
    lines = bench.table(result).splitlines()
    assert lines[4].endswith("| 81.5 +- 0.0 (1 of 2 orders) |")
    assert lines[8].endswith("| n/a |")


def test_bars_from_a_result() -> None:
    text = bench.bars(synthetic_result())
    assert "(a) int8+QAS - fp32 at 49kb, mean over models: -0.5 points (a -0.5, b -0.5); bar: no more than 1 " \
           "point below fp32: met" in text
    assert "(b) no-QAS - QAS at 49kb, mean over models: -10.0 points (a -10.0, b -10.0); bar: at least 5 points " \
           "worse: met" in text
    assert "(b) no-QAS - QAS at bias-only, mean over models: -10.0 points" in text
    assert "(c) a: searched (156 KB) - bias-only (391 KB), int8+QAS: +13.0 points" in text
    assert "(c) b: searched (156 KB) - last-k (244 KB), int8+QAS: +8.0 points" in text


def test_bars_say_what_is_missing() -> None:
    result = synthetic_result()
    result["runs"] = {k: v for k, v in result["runs"].items() if not k.endswith("|fp32")}
    result["arms"] = ["qas", "no-qas"]
    assert "(a) int8+QAS - fp32 at 49kb: not measured" in bench.bars(result)


def test_fp32_column_skipped_without_torch(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    """Without torch the fp32 arm is dropped with one line; what remains runs (here: nothing, stubbed)."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    assert not bench.torch_available()
    seen = {}

    def fake_bench(args, models, names, arms, orders, searched, work):  # noqa: ANN001, ANN202
        seen["arms"] = arms
        return 0

    monkeypatch.setattr(bench, "bench", fake_bench)
    assert bench.main(["--models", "mcunet-5fps", "--work", str(tmp_path)]) == 0
    assert seen["arms"] == ["qas", "no-qas"]
    assert capsys.readouterr().out.splitlines() == [bench.NO_TORCH]
    assert "pip install torch" in bench.NO_TORCH


def test_searched_rows_need_a_searched_scheme(tmp_path: Path) -> None:
    module = load_module(INPUTS / "inverted_residual.mlir")
    names = ["classifier", "searched"]
    schemes, _ = bench.resolve_schemes(names, "ir", module, {}, tmp_path)
    assert [(s.label, s.spec) for s in schemes] == [("classifier", "last-k=1")]
    schemes, _ = bench.resolve_schemes(names, "ir", module, {"ir": "x.json#ir/1kb"}, tmp_path)
    assert [(s.label, s.spec) for s in schemes] == [("classifier", "last-k=1"), ("searched", "x.json#ir/1kb")]


def test_table_names_a_row_measured_under_another_name() -> None:
    result = synthetic_result()
    row = result["rows"][1]
    row.update(spec="last-k=1", same_as="bias-only")
    assert "| a | last-k (last-k=1, = bias-only) | 244.1 |" in bench.table(result)
