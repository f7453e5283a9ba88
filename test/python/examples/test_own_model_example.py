"""examples/README.md's user path, shortened: make_example.py, then the individual tools with few steps.

The commands are those of the README's section 4 with smaller step counts (the full-length ones take
minutes); qtrain-demo itself chains the same tools with the search's full 2000-step analysis and is
exercised on the project's own task by test_qtrain_demo.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from testpaths import REPO

from qtrain.frontends.onnx import input_quant
from qtrain.interpreter import load_module
from qtrain.targets.armv7em.build import have_tools

pytest.importorskip("sklearn", reason="the example's data set comes with scikit-learn")

EXAMPLE = REPO / "examples" / "own_model" / "make_example.py"
README = REPO / "examples" / "README.md"


def tool(name: str, *args: object, cwd: Path, timeout: float = 120) -> str:
    """Runs `python -m qtrain.tools.<name> args` in `cwd` (what the console script `qtrain-...` runs)."""
    result = subprocess.run([sys.executable, "-m", f"qtrain.tools.{name}", *map(str, args)], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{name} {' '.join(map(str, args))}:\n{result.stderr[-3000:]}"
    return result.stdout


def test_readme_names_the_commands_this_test_runs() -> None:
    text = README.read_text()
    for command in ("python examples/own_model/make_example.py -o my_example",
                    "qtrain-demo --model my_example/my.onnx --data my_example/my_task.npz --calibration "
                    "my_example/cal.npz", "qtrain-import-onnx my.onnx --calibration cal.npz -o my.mlir",
                    "qtrain-search-scheme my.mlir --data my_task.npz --budget-kb 24 -o scheme.json --model-name my",
                    "qtrain-compile my.mlir --scheme scheme.json#my/24kb --lr 0.01 --bias-lr 0.001 --warmup-steps 0 "
                    "--steps 0 --sram-kb 24 -o build",
                    "qtrain-run build/firmware.elf --inputs my_task.npz --eval same --steps 2000"):
        assert command in " ".join(text.replace("\\\n", " ").split()), command


def test_own_model_example_runs_through_the_tools(tmp_path: Path) -> None:
    # 1. the example's files
    result = subprocess.run([sys.executable, EXAMPLE, "-o", "my_example"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    work = tmp_path / "my_example"
    with np.load(work / "cal.npz") as cal:
        assert cal["image"].dtype == np.float32 and cal["image"].shape == (256, 1, 16, 16)
    with np.load(work / "my_task.npz") as task:
        assert task["image"].dtype == np.int8 and task["image"].shape == (1297, 16, 16, 1)
        assert task["test_image"].dtype == np.int8 and task["test_image"].shape == (500, 16, 16, 1)
        assert task["label"].shape == (1297,) and task["test_label"].shape == (500,)
        input_q = task["input_q"]
    with np.load(work / "my_task_float.npz") as task_float:
        assert task_float["image"].dtype == np.float32 and task_float["image"].shape == (1297, 1, 16, 16)

    # 4.1 import: the input quantization the task was made with
    tool("qtrain_import_onnx", "my.onnx", "--calibration", "cal.npz", "-o", "my.mlir", cwd=work)
    q = input_quant(load_module(work / "my.mlir"))
    assert np.isclose(q.scale, input_q[0], rtol=1e-7) and q.zp == int(input_q[1])

    # 4.2 search, shortened (every layer still analysed); from the .onnx + --calibration, as qtrain-demo does
    out = tool("qtrain_search_scheme", "my.onnx", "--calibration", "cal.npz", "--data", "my_task.npz",
               "--budget-kb", "24", "-o", "scheme.json", "--model-name", "my", "--lr", "0.01", "--bias-lr", "0.001",
               "--jobs", "2", "--cache", "contributions.json", "--steps", "30", "--repeats", "1", "--population",
               "12", "--generations", "10", "--quiet", "--json", cwd=work)
    summary = json.loads(out[out.index("{\n"):])
    assert summary["scheme"] == "scheme.json#my/24kb" and summary["peak_sram_bytes"] <= 24 * 1024
    assert "24kb" in json.loads((work / "scheme.json").read_text())["my"]
    assert (work / "contributions.json").is_file()
    # the float NCHW task is accepted by the search too (it quantizes it the same way)
    tool("qtrain_search_scheme", "my.mlir", "--data", "my_task_float.npz", "--budget-kb", "24", "-o",
         "scheme_float.json", "--model-name", "my", "--steps", "30", "--repeats", "1", "--layers", "5",
         "--population", "8", "--generations", "2", "--quiet", cwd=work)

    if not have_tools("clang", "ld.lld", "qemu-system-arm"):
        pytest.skip("4.3/4.4 need clang, ld.lld and qemu-system-arm")
    # 4.3 compile
    out = tool("qtrain_compile", "my.mlir", "--scheme", "scheme.json#my/24kb", "--lr", "0.01", "--bias-lr", "0.001",
               "--warmup-steps", "0", "--steps", "0", "--sram-kb", "24", "-o", "build", "--json", cwd=work)
    built = json.loads(out)
    for name in ("model.mlir", "model.c", "model.h", "memory.json", "firmware.elf"):
        assert (work / "build" / name).is_file(), name
    assert built["peak_sram_bytes"] <= 24 * 1024

    # 4.4 run on the emulated Cortex-M7, evaluating the held-out split before and after
    out = tool("qtrain_run", "build/firmware.elf", "--inputs", "my_task.npz", "--eval", "same", "--steps", "20",
               "--eval-every", "10", "-o", "result.npz", "--json", cwd=work, timeout=600)
    report = json.loads(out)
    assert report["eval_images"] == 500 and 0.0 <= report["eval_accuracy_after"] <= 1.0
    assert report["eval_accuracy_before"] < 0.3  # the rotated sensor defeats the pre-trained model
    with np.load(work / "result.npz") as r:
        assert r["loss"].shape == (20,) and r["eval_accuracy_curve"].shape == (3, 2)
