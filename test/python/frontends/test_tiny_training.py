"""Tests of the tiny-training reference-model importer and its command line.

The three MCUNetV3 models are read from ../shared/models/tiny-training (relative to the repository
root); tests that need them skip when that folder is absent. A small synthetic model in the same
pickle format covers the importer and the error paths everywhere (both in `tiny_training_models`).
The ONNX export of the imported IR, and onnxruntime against the interpreter, are tested in
test/python/lowering/test_onnx_export.py.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from tiny_training_models import (
    MODEL_NAMES,
    Imported,
    convs,
    load_reference,
    models_dir,
    synthetic_model,
    write_torch_zip,
)
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, i8
from xdsl.printer import Printer

from qtrain.dialects.qtrain import AddOp, AvgPoolOp, Conv2DOp, ParamOp, QuantParamsAttr, ReshapeOp
from qtrain.errors import UserError
from qtrain.frontends.tiny_training import (
    INPUT_Q_ATTR,
    TinyTrainingFormatError,
    accumulator_bound,
    avgpool_tie_note,
    bias_adjustment_is_exact,
    forward_function,
    import_tiny_training,
    input_quant,
    int32_safe_bias,
    load_pkl,
    parse_model,
)
from qtrain.interpreter import load_module
from qtrain.tools.qtrain_import_tiny_training import main as cli_main
from qtrain.transforms.verify_quant_chain import VerifyQuantChainPass

PROG = "qtrain-import-tiny-training"


# -- helpers -----------------------------------------------------------------------------------------------


def params(module: ModuleOp) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for op in module.ops:
        if isinstance(op, ParamOp):
            t = op.tensor_type
            dtype = np.int8 if t.element_type == i8 else np.dtype("<i4")
            out[op.sym_name.data] = np.frombuffer(op.value.data.data, dtype=dtype).reshape(t.get_shape())
    return out


def weight_param_name(conv: Conv2DOp) -> str:
    owner = conv.weight.owner
    return owner.param.root_reference.data  # type: ignore[union-attr]


def print_module(module: ModuleOp) -> str:
    buf = io.StringIO()
    Printer(stream=buf).print_op(module)
    return buf.getvalue()


# -- a synthetic model in the reference format -------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_torch_zip(tmp_path_factory.mktemp("synthetic") / "synthetic.pkl", synthetic_model())


def test_synthetic_model_structure(synthetic_pkl: Path) -> None:
    module = import_tiny_training(synthetic_pkl, num_classes=5)
    fn = forward_function(module)
    assert [str(t) for t in fn.function_type.inputs] == ["tensor<1x8x8x3xi8>"]
    assert [str(t) for t in fn.function_type.outputs] == ["tensor<1x5xi8>"]
    cs = convs(module)
    # first conv, block 0 (depthwise, pointwise2), block 1 (pointwise1, depthwise, pointwise2), classifier
    assert [weight_param_name(c) for c in cs] == [f"conv{i}.weight" for i in range(7)]
    assert [c.groups.value.data for c in cs] == [1, 4, 1, 1, 8, 1, 1]
    assert [c.padding.get_values()[0] for c in cs] == [1, 1, 0, 0, 2, 0, 0]  # (k - 1) // 2 on every side
    assert [c.strides.get_values()[0] for c in cs] == [2, 1, 1, 1, 2, 1, 1]
    (add,) = [op for op in fn.walk() if isinstance(op, AddOp)]
    assert add.lhs is cs[0].output and add.rhs is cs[2].output  # lhs = the shortcut (block input)
    assert add.output_q == cs[3].input_q
    (pool,) = [op for op in fn.walk() if isinstance(op, AvgPoolOp)]
    assert pool.is_global and pool.input_q == pool.output_q == cs[5].output_q == cs[6].input_q
    assert all(c.clamp is None for c in cs)  # the reference's only clamp is the int8 range
    VerifyQuantChainPass().apply(Context(), module)


def test_model_folder_name_inside_zip_is_free(tmp_path: Path) -> None:
    # torch names the folder inside the zip after the file it saved; any "<folder>/data.pkl" works
    path = write_torch_zip(tmp_path / "renamed.pkl", synthetic_model(), folder="mcunet-5fps")
    assert isinstance(load_pkl(path), dict)


def test_pickles_that_run_code_are_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, ("echo pwned",))

    path = write_torch_zip(tmp_path / "evil.pkl", {"first_conv": Evil()})
    with pytest.raises(TinyTrainingFormatError, match="refusing to load posix.system|refusing to load nt.system"):
        load_pkl(path)


def test_format_errors_are_user_errors(tmp_path: Path) -> None:
    """Every tool reports a `qtrain.errors.UserError` in one line with exit status 2."""
    path = tmp_path / "text.pkl"
    path.write_text("not a model\n")
    with pytest.raises(UserError, match="not a readable tiny-training model pickle"):
        import_tiny_training(path)
    with pytest.raises(UserError, match="missing 'first_conv'"):
        import_tiny_training({"state_dict": {}})


def test_saturated_bias_is_made_int32_safe() -> None:
    raw = synthetic_model()
    p = raw["first_conv"]["params"]
    p["bias"][1], p["w_scales"][1] = -(2**31), np.float32(4e-9)  # a dead channel, as in mcunet-5fps conv0
    p["bias"][2] = 2**31 - 1
    model = parse_model(raw)
    safe = int32_safe_bias(model.first_conv).astype(np.int64)
    bound = accumulator_bound(model.first_conv)
    assert safe[1] > -(2**31) and safe[2] < 2**31 - 1
    assert np.all(safe - bound >= -(2**31)) and np.all(safe + bound <= 2**31 - 1)
    np.testing.assert_array_equal(safe[3:], p["bias"][3:])  # other channels untouched
    assert bias_adjustment_is_exact(model.first_conv)
    module = import_tiny_training(raw, num_classes=3)
    np.testing.assert_array_equal(params(module)["conv0.bias"], safe)


@pytest.mark.parametrize(
    ("where", "field", "message"),
    [
        (("blocks", 1, "pointwise1"), "x_zero",
         r"blocks\[1\]\.pointwise1: reads its input as .*zp = 2>, but the previous layer writes .*zp = 1>"),
        (("blocks", 0, "residual"), "x_scale",
         r"blocks\[0\]\.residual: reads its input as .*\[0\.5\], zp = -128>, but the previous layer writes "
         r".*0\.0235.*zp = -128>"),
    ],
)
def test_a_broken_quantization_chain_is_an_error(where: tuple[Any, ...], field: str, message: str) -> None:
    """Each layer states the quantization it reads; a value other than the one its producer writes is
    refused rather than imported as a module that fails `qtrain-verify-quant-chain`."""
    raw = synthetic_model()
    layer = raw
    for key in where:
        layer = layer[key]
    layer["params"][field] = 2 if field == "x_zero" else 0.5  # the producer writes zp 1 / scale 6/255
    with pytest.raises(TinyTrainingFormatError, match=message):
        import_tiny_training(raw, num_classes=3)


# -- the three reference models ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=MODEL_NAMES)
def reference(request: pytest.FixtureRequest) -> Imported:
    return load_reference(request.param)


@pytest.fixture(scope="module")
def schemes() -> dict[str, Any]:
    return json.loads((models_dir() / "schemes.json").read_text())


def test_imports_verify_and_pass_quant_chain(reference: Imported) -> None:
    reference.module.verify()
    VerifyQuantChainPass().apply(Context(), reference.module)
    fn = forward_function(reference.module)
    assert [str(t) for t in fn.function_type.inputs] == ["tensor<1x128x128x3xi8>"]
    assert [str(t) for t in fn.function_type.outputs] == ["tensor<1x10xi8>"]
    ops = list(fn.body.block.ops)
    assert isinstance(ops[-2], ReshapeOp) and isinstance(ops[-1], func.ReturnOp)


def test_layer_numbering_matches_schemes(reference: Imported, schemes: dict[str, Any]) -> None:
    cs = convs(reference.module)
    n_backbone = len(reference.model.backbone_convs())
    assert [weight_param_name(c) for c in cs] == [f"conv{i}.weight" for i in range(n_backbone + 1)]
    # per block: pointwise1 (if any), depthwise, pointwise2 -- the depthwise convs sit where the pickle says
    layer = 1
    for block in reference.raw["blocks"]:
        layer += block["pointwise1"] is not None
        assert cs[layer].is_depthwise and cs[layer].groups.value.data == block["depthwise"]["groups"]
        layer += 2
    assert layer == n_backbone and not cs[-1].is_depthwise
    for budget, scheme in schemes[reference.name].items():
        assert max(scheme["manual_weight_idx"]) < n_backbone, budget
        assert scheme["n_bias_update"] <= n_backbone, budget


def test_mcunet_numbering_examples_from_schemes_about() -> None:
    module = import_tiny_training(models_dir() / "mcunet-5fps.pkl", num_classes=10)
    cs = {weight_param_name(c).removesuffix(".weight"): c for c in convs(module)}
    assert len(cs) == 43 and "conv42" in cs and "conv43" not in cs  # 42 backbone convs + the classifier
    in_channels = {name: c.input.type.get_shape()[3] for name, c in cs.items()}  # type: ignore[union-attr]
    assert in_channels["conv24"] == in_channels["conv27"] == in_channels["conv30"] == 48
    for b in range(1, 14):  # block b >= 1: pointwise1 = 3b, depthwise = 3b + 1, pointwise2 = 3b + 2
        assert cs[f"conv{3 * b + 1}"].is_depthwise and not cs[f"conv{3 * b}"].is_depthwise
    assert cs["conv42"].output.type.get_shape() == (1, 1, 1, 10)  # type: ignore[union-attr]


def test_weights_and_biases_come_from_the_pickle(reference: Imported) -> None:
    values = params(reference.module)
    backbone = reference.model.backbone_convs()
    for layer, conv in enumerate(backbone):
        np.testing.assert_array_equal(values[f"conv{layer}.weight"], conv.weight.transpose(0, 2, 3, 1))
        np.testing.assert_array_equal(values[f"conv{layer}.bias"], int32_safe_bias(conv))
        assert bias_adjustment_is_exact(conv), conv.where
        bias = values[f"conv{layer}.bias"].astype(np.int64)  # no int32 accumulator can overflow
        bound = accumulator_bound(conv)
        assert np.all(bias - bound >= -(2**31)) and np.all(bias + bound <= 2**31 - 1), conv.where
    for op, conv in zip(convs(reference.module), reference.model.all_convs(), strict=True):
        assert op.input_q == QuantParamsAttr.get(conv.x_scale, conv.x_zero)
        assert op.output_q == QuantParamsAttr.get(conv.y_scale, conv.y_zero)
        k = op.output.type.get_shape()[3]  # type: ignore[union-attr]
        assert op.weight_q == QuantParamsAttr.get(conv.w_scales[:k].tolist(), 0, axis=0)
        assert tuple(op.strides.get_values()) == (conv.stride, conv.stride)


def test_saturated_biases_of_mcunet_are_adjusted() -> None:
    path = models_dir() / "mcunet-5fps.pkl"
    raw = load_pkl(path)
    assert raw["first_conv"]["params"]["bias"][6] == -(2**31)  # a dead channel of the reference
    imported = params(import_tiny_training(raw, num_classes=10))["conv0.bias"]
    assert imported[6] > -(2**31)
    np.testing.assert_array_equal(np.delete(imported, [6, 8]), np.delete(raw["first_conv"]["params"]["bias"], [6, 8]))


@pytest.mark.parametrize("k", [2, 10, 1000])
def test_head_is_the_first_k_imagenet_rows(k: int) -> None:
    raw = load_pkl(models_dir() / "mcunet-5fps.pkl")
    module = import_tiny_training(raw, num_classes=k)
    cls = raw["classifier"]["params"]
    values = params(module)
    np.testing.assert_array_equal(values["conv42.weight"], cls["weight"][:k].transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(values["conv42.bias"], cls["bias"][:k])
    head = convs(module)[-1]
    assert head.weight_q == QuantParamsAttr.get(cls["w_scales"][:k].tolist(), 0, axis=0)
    assert head.input_q == QuantParamsAttr.get(cls["x_scale"], cls["x_zero"])
    assert head.output_q == QuantParamsAttr.get(cls["y_scale"], cls["y_zero"])
    assert str(forward_function(module).function_type.outputs.data[0]) == f"tensor<1x{k}xi8>"


def test_a_new_head_is_zero_on_the_imagenet_rows_grid(synthetic_pkl: Path) -> None:
    raw = load_pkl(synthetic_pkl)
    new, imagenet = (import_tiny_training(raw, num_classes=3, head=h) for h in ("new", "imagenet"))
    name = f"conv{len(convs(new)) - 1}"
    values = params(new)
    assert not values[f"{name}.weight"].any() and not values[f"{name}.bias"].any()
    assert params(imagenet)[f"{name}.weight"].any()  # the control: the ImageNet rows are not zero
    new_head, imagenet_head = convs(new)[-1], convs(imagenet)[-1]
    assert new_head.weight_q == imagenet_head.weight_q
    assert new_head.output_q == imagenet_head.output_q and new_head.input_q == imagenet_head.input_q
    # Everything but the head is the reference network.
    for key, value in params(imagenet).items():
        if not key.startswith(f"{name}."):
            np.testing.assert_array_equal(values[key], value)


def test_an_unknown_head_is_refused(synthetic_pkl: Path) -> None:
    with pytest.raises(UserError, match="unknown head 'random'"):
        import_tiny_training(load_pkl(synthetic_pkl), num_classes=3, head="random")


def test_the_tools_give_a_pkl_model_a_new_head(synthetic_pkl: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from qtrain.api import load_model

    module = load_model(synthetic_pkl, num_classes=4)
    name = f"conv{len(convs(module)) - 1}"
    assert not params(module)[f"{name}.weight"].any()
    out = tmp_path / "imagenet.mlir"
    code, _, err = run_cli([str(synthetic_pkl), "--num-classes", "4", "--head", "imagenet", "-o", str(out)], capsys)
    assert code == 0, err
    assert params(load_module(out))[f"{name}.weight"].any()
    code, _, err = run_cli([str(synthetic_pkl), "--head", "random"], capsys)
    assert code == 2 and "--head" in err


def test_input_quantization_is_on_forward(reference: Imported) -> None:
    q = input_quant(reference.module)
    first = reference.raw["first_conv"]["params"]
    assert q == QuantParamsAttr.get(first["x_scale"], first["x_zero"])
    assert math.isclose(q.scale, 2 / 255, rel_tol=1e-6) and q.zp == 0
    assert q == convs(reference.module)[0].input_q


def test_global_pool_keeps_the_quantization(reference: Imported) -> None:
    (pool,) = [op for op in forward_function(reference.module).walk() if isinstance(op, AvgPoolOp)]
    assert pool.is_global and tuple(pool.kernel.get_values()) == (4, 4)
    assert pool.input_q == pool.output_q == convs(reference.module)[-2].output_q
    note = avgpool_tie_note(reference.module)
    assert (note is not None) == (reference.name == "mcunet-5fps")  # only its zero point (-1) is odd


def test_print_and_parse_take_seconds(reference: Imported) -> None:
    start = time.perf_counter()
    text = print_module(reference.module)
    parsed = load_module(text)
    elapsed = time.perf_counter() - start
    assert 'dense<"0x' in text  # big tensors print in hex
    assert elapsed < 5.0, f"print + parse took {elapsed:.1f} s"
    assert print_module(parsed) == text
    assert input_quant(parsed) == input_quant(reference.module)
    assert f"{INPUT_Q_ATTR} = #qtrain.quant<" in text


def test_qtrain_opt_accepts_the_printed_module(reference: Imported, tmp_path: Path) -> None:
    exe = shutil.which("qtrain-opt")
    if exe is None:
        pytest.skip("qtrain-opt is not installed (pip install -e .)")
    path = tmp_path / f"{reference.name}.mlir"
    path.write_text(print_module(reference.module))
    proc = subprocess.run([exe, str(path), "-p", "qtrain-verify-quant-chain", "-o", os.devnull],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- command line ------------------------------------------------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        cli_main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_ir_and_onnx(synthetic_pkl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, onnx_out = tmp_path / "m.mlir", tmp_path / "m.onnx"
    code, _, err = run_cli([str(synthetic_pkl), "--num-classes", "7", "-o", str(out), "--export-onnx", str(onnx_out)],
                           capsys)
    assert code == 0, err
    module = load_module(out)
    assert str(forward_function(module).function_type.outputs.data[0]) == "tensor<1x7xi8>"
    onnx.checker.check_model(onnx.load(str(onnx_out)))


def test_cli_prints_to_stdout_by_default(synthetic_pkl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli([str(synthetic_pkl)], capsys)
    assert code == 0 and "func.func @forward" in out and "qtrain.param @conv5.weight" in out


def bad_inputs(synthetic_pkl: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    raw = synthetic_pkl.read_bytes()
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(raw[: len(raw) // 2])
    corrupt = tmp_path / "corrupt.pkl"
    data = bytearray(raw)
    data[raw.find(b"data.pkl") + 200] ^= 0xFF  # inside the stored pickle: CRC mismatch
    corrupt.write_bytes(bytes(data))
    text = tmp_path / "text.pkl"
    text.write_text("not a model\n")
    empty_zip = tmp_path / "empty.pkl"
    with zipfile.ZipFile(empty_zip, "w") as z:
        z.writestr("archive/version", "3\n")
    short_pickle = tmp_path / "short_pickle.pkl"
    with zipfile.ZipFile(short_pickle, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(synthetic_model())[:300])
    return {
        "missing": (tmp_path / "nope.pkl", "No such file or directory"),
        "directory": (tmp_path, "Is a directory"),
        "truncated": (truncated, "truncated, or not a torch zip-pickle"),
        "corrupt": (corrupt, "Bad CRC-32"),
        "text": (text, "truncated, or not a torch zip-pickle"),
        "no data.pkl": (empty_zip, "no data.pkl inside"),
        "short pickle": (short_pickle, "not a readable tiny-training model pickle"),
        "list": (write_torch_zip(tmp_path / "list.pkl", [1, 2, 3]), "holds a list, expected a model dict"),
        "other dict": (write_torch_zip(tmp_path / "dict.pkl", {"state_dict": {}}), "missing 'first_conv'"),
        "bad weight": (write_torch_zip(tmp_path / "w.pkl", {**synthetic_model(), "classifier": {"params": {}}}),
                       "classifier.params: missing 'weight'"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "truncated", "corrupt", "text", "no data.pkl", "short pickle", "list",
             "other dict", "bad weight"],
)
def test_cli_bad_file(case: str, synthetic_pkl: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, message = bad_inputs(synthetic_pkl, tmp_path)[case]
    code, out, err = run_cli([str(path), "-o", str(tmp_path / "out.mlir")], capsys)
    assert code == 2
    assert err.startswith(f"{PROG}: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out.mlir").exists()


@pytest.mark.parametrize("n", ["0", "1", "13", "-3"])
def test_cli_num_classes_out_of_range(n: str, synthetic_pkl: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([str(synthetic_pkl), "--num-classes", n], capsys)
    assert code == 2
    assert err == f"{PROG}: error: the number of classes must be between 2 and 12 (the ImageNet classifier's rows), " \
                  f"got {n}\n"


def test_cli_imagenet_head_range() -> None:
    with pytest.raises(UserError, match="between 2 and 1000"):
        import_tiny_training(models_dir() / "proxyless-w0.3.pkl", num_classes=1001)


def test_cli_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(TinyTrainingFormatError, match="cannot read .*nope.pkl"):
        cli_main([str(tmp_path / "nope.pkl"), "--debug"])


def test_console_script_is_installed(synthetic_pkl: Path, tmp_path: Path) -> None:
    exe = shutil.which(PROG)
    if exe is None:
        pytest.skip(f"{PROG} is not installed (pip install -e .)")
    proc = subprocess.run([exe, str(tmp_path / "nope.pkl")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith(f"{PROG}: error: cannot read ")
    assert "nope.pkl: No such file or directory" in proc.stderr and proc.stderr.count("\n") == 1
    proc = subprocess.run([exe, str(synthetic_pkl), "-o", str(tmp_path / "ok.mlir")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_python_module_entry_point(synthetic_pkl: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_import_tiny_training", str(synthetic_pkl)],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "func.func @forward" in proc.stdout, proc.stderr
