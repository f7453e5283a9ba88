"""`qtrain.lowering.onnx_export`: forward qtrain IR -> ONNX QOperator, and onnxruntime running the export
as the oracle of the interpreter (bit for bit on int8 outputs).

Models: the three MCUNetV3 reference models and a small synthetic one in their format
(`tiny_training_models`), plus hand-built modules for the ops those do not use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from qtrain_ir_builders import ModuleBuilder, avgpool_op, dequantize_op, quant, quantize_op, reshape_op, tensor
from tiny_training_models import (
    MODEL_NAMES,
    Imported,
    convs,
    load_reference,
    ort_forward,
    sample_images,
    synthetic_model,
    write_torch_zip,
)
from xdsl.dialects.builtin import ModuleOp, f32

from qtrain.frontends.onnx.oracle import exact_session
from qtrain.frontends.tiny_training import import_tiny_training, input_quant
from qtrain.interpreter import ModelInterpreter, run_forward
from qtrain.lowering.onnx_export import export_onnx


@pytest.fixture(scope="module")
def synthetic_pkl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_torch_zip(tmp_path_factory.mktemp("synthetic") / "synthetic.pkl", synthetic_model())


@pytest.fixture(scope="module", params=MODEL_NAMES)
def reference(request: pytest.FixtureRequest) -> Imported:
    return load_reference(request.param)


# -- the reference models ------------------------------------------------------------------------------------


def test_synthetic_interpreter_matches_onnxruntime(synthetic_pkl: Path, tmp_path: Path) -> None:
    module = import_tiny_training(synthetic_pkl, num_classes=12)
    onnx_path = tmp_path / "synthetic.onnx"
    export_onnx(module, onnx_path)
    images = sample_images((8, 8, 3), 20, seed=1)
    output_q, _ = run_forward(module, images)
    np.testing.assert_array_equal(output_q, ort_forward(onnx_path, images))


def test_onnx_export_structure(reference: Imported, tmp_path: Path) -> None:
    model = export_onnx(reference.module, tmp_path / "model.onnx")
    onnx.checker.check_model(model)
    graph = model.graph
    (image,) = graph.input
    (output,) = graph.output
    assert image.type.tensor_type.elem_type == onnx.TensorProto.INT8
    assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [1, 3, 128, 128]
    assert output.type.tensor_type.elem_type == onnx.TensorProto.INT8
    assert [d.dim_value for d in output.type.tensor_type.shape.dim] == [1, 10]
    kinds = [n.op_type for n in graph.node]
    assert kinds.count("QLinearConv") == len(reference.model.all_convs())
    assert kinds.count("QLinearAdd") == sum(b.residual is not None for b in reference.model.blocks)
    assert kinds.count("QLinearGlobalAveragePool") == 1
    assert set(kinds) <= {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "Reshape", "Identity"}
    props = {p.key: p.value for p in model.metadata_props}
    assert float(props["input_scale"]) == input_quant(reference.module).scale


def test_interpreter_matches_onnxruntime_bit_for_bit(reference: Imported, tmp_path: Path) -> None:
    """The acceptance test: our interpreter and onnxruntime agree on every int8 output."""
    onnx_path = tmp_path / f"{reference.name}.onnx"
    export_onnx(reference.module, onnx_path)
    images = sample_images((128, 128, 3), 6, seed=MODEL_NAMES.index(reference.name))
    output_q, logits = run_forward(reference.module, images)
    expected = ort_forward(onnx_path, images)
    assert output_q.shape == expected.shape == (len(images), 10)
    np.testing.assert_array_equal(output_q, expected)
    head = convs(reference.module)[-1].output_q
    np.testing.assert_array_equal(logits, (expected.astype(np.float32) - head.zp) * np.float32(head.scale))


def test_onnx_reimport_has_the_same_semantics(reference: Imported, tmp_path: Path) -> None:
    """.pkl -> qtrain IR -> QOperator ONNX -> our ONNX importer -> qtrain IR: the same network again."""
    from qtrain.frontends.onnx import import_onnx

    onnx_path = tmp_path / f"{reference.name}.onnx"
    export_onnx(reference.module, onnx_path)
    reimported = import_onnx(onnx_path)
    assert len(convs(reimported)) == len(convs(reference.module))
    images = sample_images((128, 128, 3), 5, seed=7 + MODEL_NAMES.index(reference.name))
    direct, direct_logits = run_forward(reference.module, images)
    again, again_logits = run_forward(reimported, images)
    np.testing.assert_array_equal(again, direct)
    np.testing.assert_array_equal(again_logits, direct_logits)


# -- the other forward ops and the errors ----------------------------------------------------------------------


def quantize_pool_dequantize() -> ModuleOp:
    """@forward(x: f32 [1, 4, 4, 3]) -> f32 [1, 3]: quantize, global average pool, dequantize, reshape."""
    b = ModuleBuilder([tensor((1, 4, 4, 3), f32)])
    (x,) = b.args
    q_in, q_out = quant(0.05, 3), quant(0.02, -7)
    pooled = b.add(avgpool_op(b.add(quantize_op(x, q_in)), (4, 4), (1, 1), q_in, q_out))
    return b.build([b.add(reshape_op(b.add(dequantize_op(pooled, q_out)), (1, 3)))])


def test_quantize_and_dequantize_match_onnxruntime(tmp_path: Path) -> None:
    """QuantizeLinear / DequantizeLinear carry the ops' quantization: onnxruntime and the interpreter agree
    exactly on inputs kept 0.1 step away from rounding ties (so float32 division order cannot matter)."""
    module = quantize_pool_dequantize()
    model = export_onnx(module, tmp_path / "q.onnx")
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == [
        "QuantizeLinear", "QLinearGlobalAveragePool", "DequantizeLinear", "Reshape", "Identity"
    ]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    session = exact_session(tmp_path / "q.onnx")
    interpreter = ModelInterpreter(module)
    rng = np.random.default_rng(0)
    for _ in range(20):
        codes = rng.integers(-120, 120, size=(1, 4, 4, 3)) + rng.uniform(-0.4, 0.4, size=(1, 4, 4, 3))
        x = (codes * 0.05).astype(np.float32)
        (ours,) = interpreter.call("forward", x)
        (theirs,) = session.run(None, {"image": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
        np.testing.assert_array_equal(np.asarray(ours), theirs)


def test_a_module_without_forward_is_refused() -> None:
    b = ModuleBuilder([tensor((1, 4, 4, 3), f32)])
    module = b.build([b.args[0]], name="not_forward")
    with pytest.raises(ValueError, match="no func.func @forward"):
        export_onnx(module)


def test_a_windowed_average_pool_is_refused() -> None:
    b = ModuleBuilder([tensor((1, 4, 4, 3))])
    q = quant(0.05, 3)
    module = b.build([b.add(avgpool_op(b.args[0], (2, 2), (2, 2), q, q))])
    with pytest.raises(ValueError, match="only global qtrain.avgpool"):
        export_onnx(module)
