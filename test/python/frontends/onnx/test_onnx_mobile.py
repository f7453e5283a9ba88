"""Importing the patterns of torchvision's mobile CNNs (mobile_graphs.py: onnx.helper graphs, no torch):
float models through our PTQ, onnxruntime's QOperator and QDQ forms bit for bit, opsets 13 to 22, the
legacy exporter's shape arithmetic, the dynamo exporter's ReduceMean and external data, and the one error
that lists every unsupported op."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from mobile_graphs import INPUT, _Graph, images, mobile_blocks, quantize, run_ort
from onnx import TensorProto, helper, numpy_helper

from qtrain.dialects.qtrain.activations import LutOp
from qtrain.frontends.onnx import OnnxImportError, import_onnx, quantize_images
from qtrain.interpreter import run_forward

X = images(6, seed=3)


def ours(module, x: np.ndarray = X) -> np.ndarray:  # noqa: ANN001
    return run_forward(module, quantize_images(x, module))[1]


@pytest.mark.parametrize("opset, legacy_chunk", [(13, True), (17, False), (21, False), (22, False)])
@pytest.mark.parametrize("fmt", ["qop", "qdq"])
def test_onnxruntime_quantized_mobile_blocks_are_bit_exact(tmp_path: Path, opset: int, legacy_chunk: bool, fmt: str):
    path = quantize(tmp_path, mobile_blocks(opset, legacy_chunk=legacy_chunk), fmt)
    module = import_onnx(path)
    np.testing.assert_array_equal(ours(module), run_ort(path, X))


def test_float_mobile_blocks_import_with_fused_tables_and_agree_with_onnxruntime():
    """Float: HardSwish, Sigmoid and x * sigmoid(x) become one table each (the SiLU fused), the SE product a
    qtrain.mul; the concat's first part (a channel slice of the SE product, which keeps that product's
    quantization) is requantized to the concat's by an identity table; the int8 model's logits stay within a
    few output steps of onnxruntime's float ones."""
    model = mobile_blocks(17)
    module = import_onnx(model, images(32, seed=7))
    functions = sorted(op.function.data for op in module.walk() if isinstance(op, LutOp))
    assert functions == ["hardsigmoid", "hardswish", "identity", "sigmoid", "silu"]
    names = [op.name for op in module.walk()]
    assert names.count("qtrain.mul") == 1 and names.count("qtrain.gather_channels") == 3  # split x2, shuffle
    ref = run_ort(model, X)
    got = ours(module)
    scale = float(module.body.block.ops.last.attributes["qtrain.output_q"].scale)  # type: ignore[union-attr]
    assert np.abs(got - ref).max() <= 8 * scale
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 5 / 6


def test_pre_opset_14_hardswish_is_fused_from_hardsigmoid_and_mul():
    module = import_onnx(mobile_blocks(13, legacy_chunk=True), images(32, seed=7))
    functions = [op.function.data for op in module.walk() if isinstance(op, LutOp)]
    assert functions[0] == "hardswish" and "silu" in functions


def squeeze_fire(opset: int = 17) -> onnx.ModelProto:
    """SqueezeNet's stem and fire module: conv/2 + ReLU, MaxPool 3x3/2 ceil_mode, squeeze 1x1 + ReLU, expand
    1x1 and 3x3 + ReLU, Concat; then MNASNet's head: ReduceMean(keepdims=0) and Gemm."""
    g = _Graph(opset, seed=1)
    y = g.node("Relu", [g.conv("x", 3, 8, k=3, stride=2)])[0]
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)[0]
    s = g.node("Relu", [g.conv(y, 8, 4)])[0]
    e1 = g.node("Relu", [g.conv(s, 4, 6)])[0]
    e3 = g.node("Relu", [g.conv(s, 4, 6, k=3)])[0]
    y = g.node("Concat", [e1, e3], axis=1)[0]
    y = g.reduce_mean(y, keepdims=0)
    w = g.const(g.rng.normal(0, 0.4, (4, 12)).astype(np.float32), "fc")
    out = g.node("Gemm", [y, w], transB=1)[0]
    return g.model("x", out, 4)


def test_squeezenet_fire_shares_the_concat_quantization_in_float_and_is_bit_exact_quantized(tmp_path: Path):
    model = squeeze_fire()
    module = import_onnx(model, images(32, seed=7))
    names = [op.name for op in module.walk()]
    assert "qtrain.maxpool" in names and "qtrain.concat" in names and "qtrain.lut" not in names  # no requantization
    pool = next(op for op in module.walk() if op.name == "qtrain.maxpool")
    assert pool.results[0].type.get_shape() == (1, 3, 3, 8)  # 5x5 -> ceil((5 - 3) / 2) + 1
    assert np.mean(ours(module).argmax(1) == run_ort(model, X).argmax(1)) >= 5 / 6
    for fmt in ("qop", "qdq"):
        path = quantize(tmp_path, model, fmt)
        np.testing.assert_array_equal(ours(import_onnx(path)), run_ort(path, X))


def test_dynamo_exports_with_external_data_are_read_next_to_the_model(tmp_path: Path):
    """The weights in a data file beside the model: found from any working directory; missing or truncated
    data is one line naming the file; a ModelProto whose data was not loaded says how to load it."""
    folder = tmp_path / "export"
    folder.mkdir()
    model = mobile_blocks(20)
    onnx.save(model, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=0)
    assert (folder / "model.onnx.data").stat().st_size > 1000
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        module = import_onnx(Path("..") / "export" / "model.onnx", images(32, seed=7))
    finally:
        os.chdir(cwd)
    # (onnx.save moved `model`'s tensors out: compare with a fresh copy)
    np.testing.assert_array_equal(ours(module), ours(import_onnx(mobile_blocks(20), images(32, seed=7))))
    with pytest.raises(OnnxImportError, match="stores its data in another file"):
        import_onnx(onnx.load(folder / "model.onnx", load_external_data=False))
    data = (folder / "model.onnx.data").read_bytes()
    (folder / "model.onnx.data").write_bytes(data[: len(data) // 2])
    with pytest.raises(OnnxImportError, match=r"holds \d+ of the \d+ bytes of initializer .*truncated"):
        import_onnx(folder / "model.onnx")
    (folder / "model.onnx.data").unlink()
    with pytest.raises(OnnxImportError, match="cannot read the external data of initializer"):
        import_onnx(folder / "model.onnx")
    result = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_import_onnx", str(folder / "model.onnx"), "-o",
                             str(tmp_path / "out.mlir")], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "model.onnx.data" in result.stderr


def test_one_error_lists_every_unsupported_op_with_counts_and_first_node():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"),
             helper.make_node("Softmax", ["a"], ["b"], name="soft1"),
             helper.make_node("Tanh", ["b"], ["c"], name="tanh_first"),
             helper.make_node("Softmax", ["c"], ["d"], name="soft2"),
             helper.make_node("Tanh", ["d"], ["e"], name="tanh2"),
             helper.make_node("Tanh", ["e"], ["y"], name="tanh3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    with pytest.raises(OnnxImportError) as info:
        import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    message = str(info.value)
    assert "\n" not in message
    assert re.search(r"'Softmax' x2 \(first: node 'soft1'\); 'Tanh' x3 \(first: node 'tanh_first'\)", message), message


def test_layout_changing_moves_are_refused_with_the_reason():
    g = _Graph(17)
    y = g.conv("x", 3, 4)
    t = g.node("Transpose", [y], perm=[0, 2, 3, 1])[0]
    out = g.node("Flatten", [t], axis=1)[0]
    graph = helper.make_graph(g.nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 576])], g.inits)
    with pytest.raises(OnnxImportError, match=r"only the channel shuffle's transpose .* got perm \[0, 2, 3, 1\]"):
        import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), images(4))
    g = _Graph(17)
    y = g.conv("x", 3, 4)
    s = g.node("Slice", [y, g.const(np.array([0], np.int64)), g.const(np.array([6], np.int64)),
                         g.const(np.array([2], np.int64))])[0]
    out = g.node("Flatten", [g.node("GlobalAveragePool", [s])[0]], axis=1)[0]
    graph = helper.make_graph(g.nodes, "s", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4])], g.inits)
    with pytest.raises(OnnxImportError, match="only slicing the channel axis is supported"):
        import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), images(4))


def test_a_constant_per_channel_multiply_folds_into_the_conv():
    g = _Graph(17)
    y = g.conv("x", 3, 4)
    y = g.node("Mul", [y, g.const(np.array([1.5, -0.5, 2.0, 0.25], np.float32).reshape(1, 4, 1, 1))])[0]
    out = g.node("Flatten", [g.node("GlobalAveragePool", [y])[0]], axis=1)[0]
    graph = helper.make_graph(g.nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(INPUT))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4])],
                              g.inits + [numpy_helper.from_array(np.zeros(1, np.float32), "unused")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    module = import_onnx(model, images(32, seed=7))
    assert "qtrain.mul" not in [op.name for op in module.walk()]
    ref = run_ort(model, X)
    assert np.abs(ours(module) - ref).max() < 0.05 * np.abs(ref).max()


def test_a_float_mean_after_the_last_quantized_op_keeps_its_input_quantization(tmp_path: Path):
    """The dynamo exporter's SqueezeNet ends in conv + ReLU, ReduceMean: onnxruntime's QOperator form
    computes that mean in float on the dequantized codes. The import gives it the conv's quantization (no
    ranges from random images, no warning); our int8 logits are onnxruntime's float mean rounded to that
    grid."""
    g = _Graph(20, seed=2)
    y = g.node("Relu", [g.conv("x", 3, 6, k=3, stride=2)])[0]
    y = g.node("Relu", [g.conv(y, 6, 4)])[0]
    model = g.model("x", g.reduce_mean(y, keepdims=0), 4)
    path = quantize(tmp_path, model, "qop")
    assert [n.op_type for n in onnx.load(path).graph.node][-1] == "ReduceMean"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = import_onnx(path)
    out_q = module.body.block.ops.last.attributes["qtrain.output_q"]  # type: ignore[union-attr]
    conv_q = [op for op in module.walk() if op.name == "qtrain.conv2d"][-1].output_q
    assert (out_q.scale, out_q.zp) == (conv_q.scale, conv_q.zp)
    ref = run_ort(path, X)
    scale = float(out_q.scale)
    np.testing.assert_array_equal(ours(module) / scale, np.round(ref / scale))
