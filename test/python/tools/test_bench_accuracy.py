"""bench_accuracy's core on a tiny configuration: the tables' structure and that the arms really differ.

Not the accuracy numbers (a few steps learn little); those are the benchmark's job.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the digits task comes with scikit-learn")

from qtrain.dialects.qtrain import ParamOp  # noqa: E402
from qtrain.interpreter import ModelInterpreter  # noqa: E402
from qtrain.search import FineTuneRecipe, fine_tune_accuracy  # noqa: E402
from qtrain.tools import bench_accuracy as bench  # noqa: E402
from qtrain.tools.bench_schemes import load_make_task  # noqa: E402

STEPS = 12


@cache
def task() -> tuple[Any, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    make_task = load_make_task()
    module = make_task.import_model()
    arrays = make_task.build_task(module)
    return module, (arrays["image"], arrays["label"]), (arrays["test_image"], arrays["test_label"])


@cache
def tiny_bench() -> dict[str, Any]:
    module, train, _ = task()
    if not bench.cached_analysis_is_current(module, train):
        pytest.fail("examples/digits/contributions.json does not match the digits model/task any more (the search "
                    "would redo 84 runs of 2000 steps); refresh it with qtrain-demo --fresh-analysis and copy "
                    "DEMO/contributions.json there")
    config = bench.BenchConfig(
        seeds=1, recipe=bench.Recipe(steps=STEPS), quant_schemes=(bench.SEARCHED,),
        budget_schemes=("last-k=1", "bias-only", "last-k=4"), jobs=1, progress=False, search_population=12,
    )
    import io

    return bench.run_bench(config, stream=io.StringIO())


def test_tables_have_the_expected_structure() -> None:
    doc = tiny_bench()
    assert doc["recipe"] == {"steps": STEPS, "lr": 0.01, "bias_lr": 0.001}
    assert doc["seed_orders"] == [bench.SEED_BASE]
    assert doc["task"] == {"train_images": 1297, "test_images": 500}
    # (a): one trainable set (the searched scheme, found as qtrain-demo does), every arm once
    (block,) = doc["quantization"]
    assert block["scheme"] == bench.SEARCHED and block["spec"] == doc["searched"]["spec"]
    assert doc["searched"]["analysis_runs"] == 0, "the demo's cached contribution analysis should be reused"
    assert [r["arm"] for r in block["rows"]] == list(bench.ARMS)
    for row in block["rows"]:
        acc = row["accuracy"]
        assert len(acc["per_seed"]) == 1 and 0.0 <= acc["mean"] <= 1.0 and acc["std"] == 0.0
        assert (row["peak_sram_bytes"] is None) == (row["arm"] == bench.FP32.key)
    assert {"qas_minus_fp32_points", "qas_not_1_point_below_fp32", "no_qas_measurably_worse"} <= set(block["bar"])
    # (b): the baselines asked for, then the searched scheme, with planned memory against the budget
    rows = doc["schemes"]["rows"]
    assert [r["scheme"] for r in rows] == ["last-k=1", "bias-only", "last-k=4", "searched 24 KB"]
    assert [r["fits"] for r in rows] == [True, True, False, True]
    assert all(r["peak_sram_bytes"] <= 24 * 1024 for r in rows if r["fits"])
    # the searched scheme's int8 + QAS run is the one of table (a): same job, same number
    qas = next(r for r in block["rows"] if r["arm"] == bench.INT8_QAS.key)
    assert rows[-1]["accuracy"] == qas["accuracy"]
    assert set(doc["schemes"]["bar"]) == {"budget_kb", "fits", "beaten_by", "met"}
    text = bench.format_tables(doc)
    for needle in ("(a) quantization", "(b) sparse-update schemes", "fp32 training (relaxed simulation)",
                   "int8 without QAS", "bias-only", "searched 24 KB", "bar:"):
        assert needle in text


def test_the_arms_compute_different_things() -> None:
    doc = tiny_bench()
    arms = doc["arms"]
    # no QAS: every update has grad_scale 1; with QAS the factors are 1/s^2 (far above 1 here)
    assert arms["int8-no-qas"]["grad_scale_min"] == arms["int8-no-qas"]["grad_scale_max"] == 1.0
    assert arms["int8-qas"]["grad_scale_min"] > 1.0 and arms["fp32"]["grad_scale_min"] > 1.0
    # fp32 runs relaxed (float64 parameters); int8 + QAS keeps fp32 masters; the i8 arm updates int8 in place
    assert arms["fp32"]["relaxed"] and arms["fp32"]["sram_dtypes"] == ["float64"]
    assert not arms["int8-qas"]["relaxed"] and arms["int8-qas"]["sram_dtypes"] == ["float32", "int32"]
    assert arms["int8-qas-i8"]["sram_dtypes"] == ["int32", "int8"]
    assert arms["int8-qas-i8-nearest"]["sram_dtypes"] == ["int32", "int8"]
    assert arms["int8-qas-i16"]["sram_dtypes"] == ["int16", "int32"]
    # and independently of the report: the graphs and the interpreters the arms are built from
    module, _, _ = task()
    recipe = bench.Recipe(steps=STEPS)
    graphs = {key: bench.training_graph(module, "last-k=2", arm, recipe) for key, arm in bench.ARMS.items()}
    assert np.all(bench.grad_scales(graphs["int8-no-qas"]) == 1.0)
    assert np.array_equal(bench.grad_scales(graphs["int8-qas"]), bench.grad_scales(graphs["fp32"]))
    storage = {key: {p.sym_name.data: str(p.storage_type) for p in g.ops if isinstance(p, ParamOp) and p.is_trainable}
               for key, g in graphs.items()}
    assert storage["int8-qas"]["conv6.weight"] == "f32" and storage["int8-qas-i8"]["conv6.weight"] == "i8"
    assert storage["int8-qas-i16"]["conv6.weight"] == "i16" and storage["int8-qas-i8-nearest"]["conv6.weight"] == "i8"
    stochastic = {key: any(getattr(o, "is_stochastic", False) for o in g.walk()) for key, g in graphs.items()}
    assert stochastic == {"fp32": False, "int8-qas": False, "int8-no-qas": False, "int8-qas-i16": True,
                          "int8-qas-i8": True, "int8-qas-i8-nearest": False, "int8-qas-bf16": False,
                          "int8-qas-i8-bf16": True}
    # the storage bar: each cheaper storage against f32, paired, and the cheapest within 1 point
    bar = doc["quantization"][0]["bar"]
    assert set(bar["storage_vs_f32"]) == {"i16", "i8", "i8-nearest"}
    assert bar["cheapest_within_1_point"] in ("f32", "i16", "i8", "i8-nearest")


def test_int8_qas_arm_is_the_scheme_searchs_fine_tuning_run() -> None:
    """Table (b)'s runs are the measurement bench_schemes and the search make (fine_tune_accuracy)."""
    module, train, test = task()
    ours = bench.fine_tune(module, "bias-only", bench.INT8_QAS, bench.Recipe(steps=STEPS), train, test, seed=3)
    theirs = fine_tune_accuracy(module, "bias-only", FineTuneRecipe(steps=STEPS), train, test, (bench.SEED_BASE + 3,))
    assert ours.accuracy == theirs


def test_fp32_arm_trains_real_valued_parameters() -> None:
    module, train, test = task()
    recipe = bench.Recipe(steps=STEPS)
    result = bench.fine_tune(module, "last-k=2", bench.FP32, recipe, train, test, seed=0)
    assert set(result.sram_dtypes.values()) == {"float64"} and result.changed_fraction == 1.0
    # the relaxed interpreter gives non-integer outputs where the int8 one rounds
    graph = bench.training_graph(module, "last-k=2", bench.FP32, recipe)
    relaxed = ModelInterpreter(graph, relaxed=True)
    (out,) = relaxed.call("forward", test[0][:1])
    assert out.dtype == np.float64 and not np.array_equal(out, np.rint(out))
