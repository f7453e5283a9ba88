"""The Python API (qtrain.compile -> Build, Build.run -> Result), and that the CLIs are that API.

The numbers a Result carries are checked against independent sources: the interpreter (forward outputs
bit for bit, losses), qtrain-run's own -o file for the same run, the ELF's sections and the board table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from testpaths import LIT_INPUTS

import qtrain
from qtrain.errors import UserError
from qtrain.interpreter import ModelInterpreter, load_module, run_forward, run_train_steps
from qtrain.targets.armv7em import build as boards

needs_clang = pytest.mark.skipif(not boards.have_tools("clang"),
                                 reason="clang is not installed (Debian package 'clang')")
needs_qemu = pytest.mark.skipif(not boards.have_tools("clang", "ld.lld", "qemu-system-arm"),
                                reason="clang, ld.lld or qemu-system-arm is not installed")


def task(n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(-128, 128, (n, 8, 8, 3), dtype=np.int8), "label": rng.integers(0, 3, n),
            "test_image": rng.integers(-128, 128, (5, 8, 8, 3), dtype=np.int8), "test_label": rng.integers(0, 3, 5)}


@pytest.fixture(scope="module")
def host_build(tmp_path_factory: pytest.TempPathFactory) -> qtrain.Build:
    if not boards.have_tools("clang"):
        pytest.skip("clang is not installed (Debian package 'clang')")
    return qtrain.compile(LIT_INPUTS / "tiny_model.mlir", scheme="full", target="host",
                          output=tmp_path_factory.mktemp("api") / "build")


def test_import_qtrain_is_cheap() -> None:
    """The API loads on first use: importing the package imports neither numpy nor xDSL."""
    code = ("import sys, qtrain; print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'xdsl') "
            "or m.startswith('qtrain.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert qtrain.__all__ == ["Build", "Result", "compile"] and qtrain.compile is qtrain.api.compile


def test_compile_writes_the_build_folder(host_build: qtrain.Build) -> None:
    folder = host_build.directory
    for name in ("model.mlir", "model.c", "model.h", "memory.json", "memory.html", "firmware"):
        assert (folder / name).is_file(), name
    memory = json.loads((folder / "memory.json").read_text())
    assert host_build.memory == memory and host_build.peak_sram_bytes == memory["peak_sram_bytes"]
    assert host_build.trainable_tensors == len(memory["trainable"]) == 8
    assert memory["budget_bytes"] == boards.HOST_BUDGET_KB * 1024  # the target's default budget
    summary = host_build.summary()
    assert summary["target"] == "host" and summary["firmware"] == str(folder / "firmware")
    again = qtrain.Build.open(folder)
    assert again.summary() == summary and again.target == "host"


@needs_clang
def test_run_trains_evaluates_and_agrees_with_the_interpreter(host_build: qtrain.Build, tmp_path: Path) -> None:
    arrays = task()
    result = host_build.run(arrays, steps=8, eval="same", eval_every=4)
    assert result.loss is not None and result.loss.shape == (8,)
    assert result.accuracy_curve is not None and result.accuracy_curve[:, 0].tolist() == [0, 4, 8]
    module = load_module(host_build.model_mlir)
    before, _ = run_forward(module, arrays["test_image"])
    np.testing.assert_array_equal(result.arrays["eval_output_q_before"], before)
    interpreter = ModelInterpreter(module)
    loss, params = run_train_steps(module, arrays["image"], arrays["label"], 8, interpreter=interpreter)
    np.testing.assert_allclose(result.loss, loss, rtol=1e-4)
    assert sorted(result.params) == sorted(params)
    accuracy = np.mean(np.argmax(result.arrays["eval_logits_after"], axis=1) == arrays["test_label"])
    assert result.accuracy_after == pytest.approx(accuracy) and result.accuracy_curve[-1, 1] == pytest.approx(accuracy)
    assert result.instructions_per_step is None and result.target == "host"  # the host counts nanoseconds
    # the same run through qtrain-run writes the same arrays (timings aside)
    np.savez(tmp_path / "task.npz", **arrays)
    cli = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_run", str(host_build.firmware), "--inputs",
                          str(tmp_path / "task.npz"), "--steps", "8", "--eval", "same", "--eval-every", "4", "-o",
                          str(tmp_path / "cli.npz"), "--quiet"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    with np.load(tmp_path / "cli.npz") as saved:
        assert set(saved.files) == set(result.arrays)
        for key in saved.files:
            if "host_ns" not in key:
                np.testing.assert_array_equal(saved[key], result.arrays[key], err_msg=key)
    # inference: each image once
    forward = host_build.run({"image": arrays["test_image"]})
    np.testing.assert_array_equal(forward.arrays["output_q"], before)
    assert forward.loss is None


@needs_qemu
def test_on_a_qemu_board_the_figures_are_the_devices(tmp_path: Path) -> None:
    build = qtrain.compile(LIT_INPUTS / "tiny_model.mlir", scheme="bias-only", target="qemu-m4",
                           output=tmp_path / "build", lifetime_plot=tmp_path / "plan.png")
    assert build.target == "qemu-m4" and build.memory["budget_bytes"] == boards.BOARDS["qemu-m4"].budget_kb * 1024
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
    np.savez(tmp_path / "task.npz", **task())
    result = build.run(tmp_path / "task.npz", steps=3, eval="same")
    usage = boards.memory_usage(build.firmware)
    assert result.instructions_per_step is not None and len(result.instructions_per_step) == 3
    assert all(result.instructions_per_step > 1000) and result.macs_per_step > 0
    assert result.flash_bytes == usage.flash_bytes == build.flash_bytes
    assert result.flash_bytes <= result.flash_limit_bytes == 1024 * 1024
    assert result.sram_bytes == build.peak_sram_bytes + result.stack_bytes
    assert result.sram_limit_bytes == 256 * 1024 and usage.sram_bytes <= result.sram_limit_bytes
    exported = build.export(result, tmp_path / "tuned.onnx")
    assert exported.is_file()


def test_bad_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such model file"):
        qtrain.compile(tmp_path / "nope.onnx", output=tmp_path / "b")
    with pytest.raises(UserError, match="unknown target 'riscv'"):
        qtrain.compile(LIT_INPUTS / "tiny_model.mlir", target="riscv", output=tmp_path / "b")
    with pytest.raises(UserError, match="not a qtrain-compile folder"):
        qtrain.Build.open(tmp_path)


def test_the_clis_are_the_api(host_build: qtrain.Build, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """qtrain-compile hands its options to qtrain.compile; qtrain-run and Build.run share qtrain_run.execute."""
    import qtrain.api
    from qtrain.tools import qtrain_compile, qtrain_run

    seen: dict = {}

    def fake_compile(model, **options):  # noqa: ANN001, ANN003, ANN202
        seen.update(options, model=model)
        raise UserError("stop here")

    monkeypatch.setattr(qtrain.api, "compile", fake_compile)
    with pytest.raises(SystemExit) as exit_info:
        qtrain_compile.main([str(LIT_INPUTS / "tiny_model.mlir"), "-o", str(tmp_path / "b"), "--target", "qemu-m33",
                             "--scheme", "bias-only", "--no-reorder", "--weight-storage", "i8"])
    assert exit_info.value.code == 2 and "stop here" in capsys.readouterr().err
    assert seen["model"] == LIT_INPUTS / "tiny_model.mlir" and seen["target"] == "qemu-m33"
    assert seen["scheme"] == "bias-only" and seen["reorder"] is False and seen["weight_storage"] == "i8"
    assert seen["sram_kb"] is None  # the API applies the target's default budget

    calls: list[dict] = []
    real_execute = qtrain_run.execute

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(kwargs)
        return real_execute(*args, **kwargs)

    monkeypatch.setattr(qtrain_run, "execute", spy)
    np.savez(tmp_path / "task.npz", **task())
    host_build.run(tmp_path / "task.npz", steps=2)
    with pytest.raises(SystemExit) as exit_info:
        qtrain_run.main([str(host_build.firmware), "--inputs", str(tmp_path / "task.npz"), "--steps", "2", "--quiet"])
    assert exit_info.value.code == 0
    assert [c["steps"] for c in calls] == [2, 2] and all(c["entry"] == "train_step" for c in calls)
