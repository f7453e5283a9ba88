"""`qtrain-export`: the network a device fine-tuned, out as QOperator ONNX, against the device and the interpreter.

The oracle is twofold: onnxruntime running the export must give the device's own `output_q` on the
evaluation images after training (the device ran them; bit for bit), and `install_params` must put the
parameters where the interpreter's trained state has them (the forward pass of the interpreter after S
steps equals the forward pass of a fresh interpreter on the installed module). The demo's QEMU run is
checked the same way in test_qtrain_demo.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from testpaths import LIT_INPUTS

import qtrain
from qtrain.interpreter import ModelInterpreter, load_module, run_forward, run_train_steps
from qtrain.lowering.onnx_export import install_params
from qtrain.targets.armv7em.build import have_tools
from qtrain.tools.qtrain_export import main, onnx_output_q
from qtrain.transforms.pipeline import apply_passes, training_passes

ort = pytest.importorskip("onnxruntime")

CASES = {
    # a weight trained on half its input channels (an fp32 master of the slice; a bias in int32), and the
    # same with int8 in-place copies
    "slice-f32": (LIT_INPUTS / "tiny_model.mlir", f"{LIT_INPUTS / 'tiny_schemes.json'}#tiny/half", "f32", (8, 8, 3), 3),
    "slice-i8": (LIT_INPUTS / "tiny_model.mlir", f"{LIT_INPUTS / 'tiny_schemes.json'}#tiny/half", "i8", (8, 8, 3), 3),
    # a frozen 1x1 + depthwise pair streamed by one fused op in @forward (two QLinearConv in ONNX)
    "fused": (LIT_INPUTS / "inverted_residual.mlir", "last-k=2", "f32", (16, 16, 3), 3),
}


def task(shape: tuple[int, ...], classes: int, n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(-128, 128, (n, *shape), dtype=np.int8),
            "label": rng.integers(0, classes, n).astype(np.int64),
            "test_image": rng.integers(-128, 128, (n + 2, *shape), dtype=np.int8),
            "test_label": rng.integers(0, classes, n + 2).astype(np.int64)}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[qtrain.Build, qtrain.Result, Path]]:
    """(build, 5-step training result with evaluation, its task file) per case, on the host, built once."""
    if not have_tools("clang"):
        pytest.skip("clang is not installed (Debian package 'clang')")
    done: dict[str, tuple[qtrain.Build, qtrain.Result, Path]] = {}

    def get(case: str) -> tuple[qtrain.Build, qtrain.Result, Path]:
        if case not in done:
            model, scheme, storage, shape, classes = CASES[case]
            folder = tmp_path_factory.mktemp(case)
            # lr 0.05: five warm-up steps at the default rate leave these tiny models' outputs unchanged.
            build = qtrain.compile(model, scheme=scheme, target="host", weight_storage=storage,
                                   lr=0.05, bias_lr=0.05, output=folder / "build")
            np.savez(folder / "task.npz", **task(shape, classes))
            done[case] = (build, build.run(folder / "task.npz", steps=5, eval="same"), folder / "task.npz")
        return done[case]

    return get


@pytest.mark.parametrize("case", list(CASES))
def test_export_gives_the_devices_outputs(case: str, trained, tmp_path: Path,  # noqa: ANN001
                                          capsys: pytest.CaptureFixture[str]) -> None:
    build, result, task_file = trained(case)
    after = result.save(tmp_path / "after.npz")
    arrays = dict(np.load(task_file))
    if case == "fused":
        assert "qtrain.fused_pointwise_depthwise" in build.model_mlir.read_text().split("func.func @train_step")[0]
    code, out, err = run_cli([str(build.directory), "--params", str(after), "-o", str(tmp_path / "tuned.onnx"),
                              "--verify", str(task_file)], capsys)
    assert code == 0, err
    assert "verified: onnxruntime's output_q equals the device's on all 8 images" in out
    onnx = onnx_output_q(tmp_path / "tuned.onnx", arrays["test_image"])
    np.testing.assert_array_equal(onnx, result.arrays["eval_output_q_after"])
    # it learned something the export carries: the original network answers differently
    before = result.arrays["eval_output_q_before"]
    assert not np.array_equal(onnx, before)


def test_installed_parameters_are_the_interpreters_trained_state() -> None:
    """After S interpreter steps, a fresh module with the SRAM copies installed computes the same forward
    pass as the trained interpreter (fp32 master of a slice, int8 and int32 copies)."""
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    apply_passes(module, training_passes(f"{LIT_INPUTS / 'tiny_schemes.json'}#tiny/half", lr=0.5))
    arrays = task((8, 8, 3), 3, n=4, seed=3)
    trained = ModelInterpreter(module.clone())
    _, copies = run_train_steps(module, arrays["image"], arrays["label"], 6, interpreter=trained)
    assert any(c.dtype == np.float32 for c in copies.values())
    fresh = module.clone()
    names = install_params(fresh, copies)
    assert sorted(names) == sorted(copies)
    expected, _ = run_forward(module, arrays["test_image"], interpreter=trained)
    got, _ = run_forward(fresh, arrays["test_image"])
    np.testing.assert_array_equal(got, expected)
    untrained, _ = run_forward(module, arrays["test_image"])
    assert not np.array_equal(got, untrained)


def test_bad_inputs_exit_2_and_a_difference_exits_1(trained, tmp_path: Path,  # noqa: ANN001
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    build, result, task_file = trained("slice-f32")
    after = result.save(tmp_path / "after.npz")
    onnx = str(tmp_path / "out.onnx")
    forward_only = tmp_path / "forward.npz"
    np.savez(forward_only, logits=np.zeros((2, 3), np.float32))
    name = next(iter(result.params))
    wrong_shape = tmp_path / "wrong.npz"
    np.savez(wrong_shape, **{**result.arrays, f"param/{name}": np.zeros(7, np.int32)})
    missing = tmp_path / "missing.npz"
    np.savez(missing, **{k: v for k, v in result.arrays.items() if k != f"param/{name}"})
    cases = [
        ([str(tmp_path / "nope"), "--params", str(after), "-o", onnx], "no such build folder"),
        ([str(tmp_path), "--params", str(after), "-o", onnx], "has no model.mlir"),
        ([str(build.directory), "--params", str(forward_only), "-o", onnx], "has no 'param/<name>' arrays"),
        ([str(build.directory), "--params", str(wrong_shape), "-o", onnx], f"{name}: the learned value is int32[7]"),
        ([str(build.directory), "--params", str(missing), "-o", onnx], f"no learned value for the trainable "
                                                                      f"parameter(s) {name}"),
        ([str(build.directory), "--params", str(after), "-o", str(after)], "would overwrite the input"),
        ([str(build.directory), "--params", str(after), "-o", onnx, "--verify", str(tmp_path / "x.npz")],
         "no such evaluation file"),
    ]
    for args, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.startswith("qtrain-export: error: ") and message in err, (args, err)
        assert err.count("\n") == 1
    assert after.read_bytes()[:2] == b"PK"  # not overwritten
    tampered = tmp_path / "tampered.npz"
    q = result.arrays["eval_output_q_after"].copy()
    q[3, 0] ^= 1
    np.savez(tampered, **{**result.arrays, "eval_output_q_after": q})
    code, _, err = run_cli([str(build.directory), "--params", str(tampered), "-o", onnx, "--verify",
                            str(task_file)], capsys)
    assert code == 1 and "differs from the device's on 1 of 8 images (first: image 3)" in err
