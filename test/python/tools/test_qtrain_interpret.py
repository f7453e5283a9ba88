"""`qtrain-interpret`: happy paths and every one-line error with exit status 2."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from qtrain_ir_builders import SMALL_MODEL, printed, random_images, small_model_reference, train_step_module

from qtrain import numerics
from qtrain.interpreter import InputError
from qtrain.tools.qtrain_interpret import main


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.mlir"
    path.write_text(SMALL_MODEL)
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    path = tmp_path / "in.npz"
    np.savez(path, image=random_images(3), label=np.array([0, 2, 1]))
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    return code, err


def expect_error(args: list[str], capsys: pytest.CaptureFixture[str], message: str) -> None:
    code, err = run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qtrain-interpret: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err


def test_forward(model: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.npz"
    code, err = run_cli([model, "--entry", "forward", "--inputs", inputs, "-o", out], capsys)
    assert (code, err) == (0, "")
    with np.load(out) as result:
        assert sorted(result.files) == ["logits", "output_q"]
        expected = small_model_reference(random_images(3))
        assert result["output_q"].dtype == np.int8 and np.array_equal(result["output_q"], expected)
        assert result["logits"].dtype == np.float32
        assert np.array_equal(result["logits"], numerics.dequantize(expected, scale=0.05, zero_point=3))


def test_forward_is_the_default_entry_and_needs_no_label(model: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "images_only.npz"
    np.savez(inputs, image=random_images(2))
    out = tmp_path / "out.npz"
    assert run_cli([model, "--inputs", inputs, "-o", out], capsys) == (0, "")
    with np.load(out) as result:
        assert result["output_q"].shape == (2, 3)


def test_train_step(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "train.mlir"
    model.write_text(printed(train_step_module()))
    out = tmp_path / "out.npz"
    code, err = run_cli([model, "--entry", "train_step", "--steps", "5", "--inputs", inputs, "-o", out], capsys)
    assert (code, err) == (0, "")
    with np.load(out) as result:
        assert sorted(result.files) == ["loss", "param/c_b"]
        assert result["loss"].dtype == np.float32 and result["loss"].shape == (5,)
        assert np.all(np.isfinite(result["loss"])) and np.all(result["loss"] > 0)
        assert result["loss"][0] == result["loss"][3]  # samples wrap around: step 3 is sample 0 again
        assert np.array_equal(result["param/c_b"], np.array([1, 2, 3], np.int32))


def test_console_script(model: Path, inputs: Path, tmp_path: Path) -> None:
    exe = shutil.which("qtrain-interpret")
    if exe is None:
        pytest.skip("qtrain-interpret is not installed (pip install -e .)")
    out = tmp_path / "out.npz"
    ok = subprocess.run([exe, str(model), "--inputs", str(inputs), "-o", str(out)], capture_output=True, text=True)
    assert ok.returncode == 0 and out.exists(), ok.stderr
    bad = subprocess.run([exe, str(tmp_path / "missing.mlir"), "--inputs", str(inputs), "-o", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("qtrain-interpret: error: cannot read") and "Traceback" not in bad.stderr


# -- errors --------------------------------------------------------------------------------------------


def test_missing_model_file(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error([tmp_path / "nope.mlir", "--inputs", inputs, "-o", tmp_path / "o.npz"], capsys,
                 "cannot read")


def test_model_parse_error(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mlir"
    bad.write_text(SMALL_MODEL.replace("qtrain.conv2d", "qtrain.conv3d"))
    expect_error([bad, "--inputs", inputs, "-o", tmp_path / "o.npz"], capsys, "parse error")


def test_missing_inputs_file(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error([model, "--inputs", tmp_path / "none.npz", "-o", tmp_path / "o.npz"], capsys,
                 "no such inputs file")


def test_inputs_not_an_npz(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip file")
    expect_error([model, "--inputs", junk, "-o", tmp_path / "o.npz"], capsys, "not an .npz archive")


def test_missing_image_key(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = tmp_path / "x.npz"
    np.savez(npz, images=random_images(1))
    expect_error([model, "--inputs", npz, "-o", tmp_path / "o.npz"], capsys,
                 "has no 'image' array (int8 NHWC images; keys present: images)")


def test_wrong_image_dtype(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = tmp_path / "x.npz"
    np.savez(npz, image=random_images(2).astype(np.float32))
    expect_error([model, "--inputs", npz, "-o", tmp_path / "o.npz"], capsys, "image must be int8")


def test_wrong_image_shape(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = tmp_path / "x.npz"
    np.savez(npz, image=random_images(2, (4, 4, 3)))
    expect_error([model, "--inputs", npz, "-o", tmp_path / "o.npz"], capsys,
                 "image must have shape [N, 4, 4, 2] (NHWC) for @forward, got [2, 4, 4, 3]")


def test_unknown_entry(model: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error([model, "--entry", "infer", "--inputs", inputs, "-o", tmp_path / "o.npz"], capsys,
                 "the module has no function @infer (functions: @forward)")


def test_train_step_absent(model: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error([model, "--entry", "train_step", "--steps", "3", "--inputs", inputs, "-o", tmp_path / "o.npz"],
                 capsys, "the module has no function @train_step")


def test_train_step_needs_steps(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "train.mlir"
    model.write_text(printed(train_step_module()))
    expect_error([model, "--entry", "train_step", "--inputs", inputs, "-o", tmp_path / "o.npz"], capsys,
                 "--entry train_step needs --steps S with S >= 1")


def test_train_step_needs_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "train.mlir"
    model.write_text(printed(train_step_module()))
    npz = tmp_path / "x.npz"
    np.savez(npz, image=random_images(2))
    expect_error([model, "--entry", "train_step", "--steps", "2", "--inputs", npz, "-o", tmp_path / "o.npz"],
                 capsys, "has no 'label' array")


def test_steps_without_train_step(model: Path, inputs: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    expect_error([model, "--steps", "3", "--inputs", inputs, "-o", tmp_path / "o.npz"], capsys,
                 "--steps only applies to --entry train_step")


def test_usage_error_is_one_line(model: Path, inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error([model, "--inputs", inputs], capsys, "the following arguments are required: -o/--output")


def test_unwritable_output(model: Path, inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error([model, "--inputs", inputs, "-o", tmp_path / "no" / "such" / "dir.npz"], capsys, "cannot write")


def test_debug_shows_the_exception(model: Path, tmp_path: Path) -> None:
    npz = tmp_path / "x.npz"
    np.savez(npz, image=random_images(1).astype(np.float32))
    with pytest.raises(InputError, match="image must be int8"):
        main([str(model), "--inputs", str(npz), "-o", str(tmp_path / "o.npz"), "--debug"])
