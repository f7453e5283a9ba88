"""`qtrain.frontends.onnx.model` and `qtrain-import-onnx`: reading and checking a model, and every
bad-input error (one line on stderr, exit status 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx_testing import (
    forward,
    images,
    small_cnn,
)

from qtrain.errors import UserError
from qtrain.frontends.onnx import (
    OnnxImportError,
    import_onnx,
)
from qtrain.interpreter import load_module

# -- the command line ------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "qtrain.tools.qtrain_import_onnx", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("qtrain-import-onnx: warning:")]
    assert len(lines) == 1 and lines[0].startswith("qtrain-import-onnx: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_imports_with_calibration(tmp_path: Path):
    np.savez(tmp_path / "cal.npz", image=images(16))
    out = tmp_path / "model.mlir"
    result = run_cli(
        str(save(small_cnn(), tmp_path / "m.onnx")), "--calibration", str(tmp_path / "cal.npz"), "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    module = load_module(out)
    assert "qtrain.input_q" in forward(module).attributes


def test_cli_warns_without_calibration(tmp_path: Path):
    result = run_cli(str(save(small_cnn(), tmp_path / "m.onnx")), "-o", str(tmp_path / "m.mlir"))
    assert result.returncode == 0
    assert result.stderr.startswith("qtrain-import-onnx: warning: no calibration data")
    assert len(result.stderr.splitlines()) == 1


def test_cli_unsupported_op(tmp_path: Path):
    model = small_cnn()
    gap = next(n for n in model.graph.node if n.op_type == "GlobalAveragePool")
    gap.op_type = "GlobalMaxPool"
    result = run_cli(str(save(model, tmp_path / "m.onnx")))
    assert_one_line_error(result, "unsupported ops: 'GlobalMaxPool' x1 (first: node 'gap')",
                          "supported ops: Add, AveragePool")


def test_cli_unsupported_contrib_op(tmp_path: Path):
    model = small_cnn()
    relu = next(n for n in model.graph.node if n.name == "relu1")
    relu.op_type, relu.domain = "FusedGelu", "com.microsoft"
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    result = run_cli(str(save(model, tmp_path / "m.onnx")))
    assert_one_line_error(result, "unsupported ops: 'com.microsoft.FusedGelu' x1 (first: node 'relu1')",
                          "com.microsoft.QGemm")


def test_cli_truncated_file(tmp_path: Path):
    data = small_cnn().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli(str(path)), "truncated or corrupt")


def test_cli_corrupt_file(tmp_path: Path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    assert_one_line_error(run_cli(str(path)), "truncated or corrupt")


def test_cli_empty_file(tmp_path: Path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    assert_one_line_error(run_cli(str(path)), "not an ONNX model")


def test_cli_missing_file(tmp_path: Path):
    assert_one_line_error(run_cli(str(tmp_path / "nope.onnx")), "cannot read", "nope.onnx")


def test_cli_dynamic_spatial_shape(tmp_path: Path):
    model = small_cnn()
    dim = model.graph.input[0].type.tensor_type.shape.dim[2]
    dim.ClearField("dim_value")
    dim.dim_param = "H"
    assert_one_line_error(run_cli(str(save(model, tmp_path / "m.onnx"))), "dynamic dimension ('H') at index 2")


def test_cli_missing_input_shape(tmp_path: Path):
    model = small_cnn()
    model.graph.input[0].type.tensor_type.ClearField("shape")
    assert_one_line_error(run_cli(str(save(model, tmp_path / "m.onnx"))), "input 'x' has no shape")


@pytest.mark.parametrize("opset", [9, 29])
def test_cli_unsupported_opset(tmp_path: Path, opset: int):
    model = small_cnn()
    model.opset_import[0].version = opset
    assert_one_line_error(
        run_cli(str(save(model, tmp_path / "m.onnx"))), f"unsupported ai.onnx opset {opset}", "supported: 10..28"
    )


def test_cli_bad_calibration_file(tmp_path: Path):
    np.savez(tmp_path / "cal.npz", images=images(4))
    result = run_cli(str(save(small_cnn(), tmp_path / "m.onnx")), "--calibration", str(tmp_path / "cal.npz"))
    assert_one_line_error(result, "no 'image' array", "images")


def test_cli_debug_shows_traceback(tmp_path: Path):
    model = small_cnn()
    model.opset_import[0].version = 9
    result = run_cli(str(save(model, tmp_path / "m.onnx")), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr and "OnnxImportError" in result.stderr


def test_import_errors_are_user_errors(tmp_path: Path):
    """Every tool reports a `qtrain.errors.UserError` in one line with exit status 2."""
    with pytest.raises(UserError, match="cannot read"):
        import_onnx(tmp_path / "nope.onnx")
    model = small_cnn()
    model.opset_import[0].version = 9
    with pytest.raises(UserError, match="unsupported ai.onnx opset 9"):
        import_onnx(model)


# -- the graph's input -----------------------------------------------------------------------------------------


def test_weights_must_be_constants():
    model = small_cnn()
    w1 = next(i for i in model.graph.initializer if i.name == "w1")
    model.graph.input.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT, list(w1.dims)))
    model.graph.initializer.remove(w1)
    with pytest.raises(OnnxImportError, match="one image input; the graph's runtime inputs are 'x', 'w1'"):
        import_onnx(model, calibration=images(4))
