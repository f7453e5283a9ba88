"""The main job, shortened: qtrain-demo with few steps still learns on the emulated device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qtrain.frontends.onnx.oracle import exact_session
from qtrain.targets.armv7em.build import have_tools


@pytest.mark.skipif(not have_tools("clang", "ld.lld", "qemu-system-arm"), reason="needs clang, ld.lld, qemu")
def test_demo_fine_tunes_on_the_emulated_device(tmp_path: Path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "qtrain.tools.qtrain_demo", "-o", str(out), "--steps", "600", "--eval-every", "300"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "result.json").read_text())
    before, after = report["eval_accuracy_before"], report["eval_accuracy_after"]
    assert before < 0.3  # the inverted-contrast sensor breaks the pre-trained model
    assert after > before + 0.3, (before, after)
    assert "held-out accuracy on the device" in result.stdout
    assert report["sram_bytes"] <= 24 * 1024 + report["stack_bytes"]
    for png in ("training.png", "memory_plan.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "build" / "memory.html").is_file()
    # the round trip: the fine-tuned network out of the device, run by onnxruntime, gives the device's
    # output_q on every held-out image and so its accuracy (export.json; checked again here from the files)
    exported = json.loads((out / "export.json").read_text())
    assert exported["output_q_identical"] == exported["images"] == 500
    assert exported["onnx_accuracy"] == exported["device_accuracy"] == pytest.approx(after)
    pytest.importorskip("onnxruntime")
    session = exact_session(out / "finetuned.onnx")
    with np.load(out / "task.npz") as task, np.load(out / "result.npz") as device:
        some = task["test_image"][:40]
        onnx = np.concatenate([session.run(None, {"image": np.ascontiguousarray(i[None].transpose(0, 3, 1, 2))})[0]
                               for i in some])
        np.testing.assert_array_equal(onnx, device["eval_output_q_after"][:40])
    with np.load(out / "result.npz") as r:
        assert r["loss"].shape == (600,)


def test_demo_rejects_half_a_user_model(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "qtrain.tools.qtrain_demo", "-o", str(tmp_path), "--model", "x.onnx"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "--model and --data go together" in result.stderr and "Traceback" not in result.stderr


def test_demo_reports_a_bad_model_in_one_line(tmp_path: Path):
    """A model the importer refuses (here a truncated ONNX file) while quantizing a float task: exit 2."""
    model, data = tmp_path / "m.onnx", tmp_path / "task.npz"
    model.write_bytes(b"garbage")
    images = np.zeros((4, 1, 8, 8), np.float32)
    np.savez(data, image=images, label=np.zeros(4, int), test_image=images, test_label=np.zeros(4, int))
    result = subprocess.run(
        [sys.executable, "-m", "qtrain.tools.qtrain_demo", "-o", str(tmp_path / "out"), "--model", str(model),
         "--data", str(data)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line]
    assert error.startswith("qtrain-demo: error: ") and "not a valid ONNX protobuf" in error


@pytest.mark.skipif(not have_tools("clang", "ld.lld", "qemu-system-arm"), reason="needs clang, ld.lld, qemu")
def test_demo_takes_your_float_model_and_float_task(tmp_path: Path):
    """--model/--data/--calibration with float NCHW task images: quantized with the model's input parameters.

    A given scheme, not a search: test_own_model_example.py searches from the same .onnx and float task."""
    example = tmp_path / "ex"
    made = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[3] / "examples" / "own_model" /
                                               "make_example.py"), "-o", str(example)],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "qtrain.tools.qtrain_demo", "-o", str(out), "--model", str(example / "my.onnx"),
         "--data", str(example / "my_task_float.npz"), "--calibration", str(example / "cal.npz"),
         "--scheme", "last-k=2", "--steps", "30", "--eval-every", "30"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out / "task.npz") as task, np.load(example / "my_task.npz") as reference:
        assert task["image"].dtype == np.int8
        np.testing.assert_array_equal(task["image"], reference["image"])  # the same quantization as the example's
    report = json.loads((out / "result.json").read_text())
    assert len(report["instructions_per_step"]) == 30


def test_demo_scheme_and_a_search_option_exclude_each_other(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "qtrain.tools.qtrain_demo", "-o", str(tmp_path), "--scheme", "tinytl-l+b",
         "--lite-residual"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == ("qtrain-demo: error: --lite-residual is for the search; with --scheme there "
                                     "is no search")
