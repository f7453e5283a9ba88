"""Models and oracles shared by the ONNX importer tests (`test_onnx_*.py` next to this file).

`small_cnn` is a float CNN exercising every supported float op; `quantized` turns it into a QDQ or
QOperator model with onnxruntime's own quantizer; `run_ort` runs any of them in onnxruntime, the oracle
the imported IR (run by `qtrain.interpreter`) is compared against.
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, i8
from xdsl.printer import Printer

from qtrain.dialects.qtrain import ParamOp, QuantParamsAttr
from qtrain.frontends.onnx.oracle import exact_session

REPO = Path(__file__).resolve().parents[4]
DIGITS = REPO / "examples" / "digits"


def small_cnn(head: str = "gap", opset: int = 13, batch: int | str = 1) -> onnx.ModelProto:
    """A float CNN exercising every supported float op: 8x8x1 input, 10 classes.

    conv3x3 1->8 + BN + ReLU, depthwise conv3x3/2 + BN + ReLU6 (Clip), conv1x1 8->8, residual Add
    (+ ReLU), then `head`: "gap" (GlobalAveragePool, Flatten, Gemm), "flatten" (Flatten of the 4x4x8
    map, Gemm over 128 features: a conv with a 4x4 kernel after import) or "avgpool" (AveragePool
    2x2/2, Flatten of the 2x2x8 map, Gemm over 32 features).
    """
    rng = np.random.default_rng(0)

    def init(name: str, a: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)

    inits = [
        init("w1", rng.normal(0, 0.4, (8, 1, 3, 3))),
        init("b1", rng.normal(0, 0.1, 8)),
        init("g1", rng.uniform(0.5, 1.5, 8)),
        init("be1", rng.normal(0, 0.1, 8)),
        init("m1", rng.normal(0, 0.1, 8)),
        init("v1", rng.uniform(0.5, 1.5, 8)),
        init("w2", rng.normal(0, 0.4, (8, 1, 3, 3))),
        init("g2", rng.uniform(-1.5, 1.5, 8)),  # negative BN scales flip weight signs
        init("be2", rng.normal(0, 0.1, 8)),
        init("m2", rng.normal(0, 0.1, 8)),
        init("v2", rng.uniform(0.5, 1.5, 8)),
        init("w3", rng.normal(0, 0.3, (8, 8, 1, 1))),
        init("b3", rng.normal(0, 0.1, 8)),
        init("lo", np.array(0.0)),
        init("hi", np.array(6.0)),
    ]
    features = {"gap": 8, "flatten": 128, "avgpool": 32}[head]
    inits += [init("wf", rng.normal(0, 0.3, (10, features))), init("bf", rng.normal(0, 0.1, 10))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("BatchNormalization", ["c1", "g1", "be1", "m1", "v1"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=8, name="dw2"),
        helper.make_node("BatchNormalization", ["c2", "g2", "be2", "m2", "v2"], ["n2"], name="bn2"),
        helper.make_node("Clip", ["n2", "lo", "hi"], ["r2"], name="relu6"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="pw3"),
        helper.make_node("Add", ["r2", "c3"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_add"),
    ]
    if head == "gap":
        nodes += [
            helper.make_node("GlobalAveragePool", ["ra"], ["p"], name="gap"),
            helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        ]
    elif head == "avgpool":
        nodes += [
            helper.make_node("AveragePool", ["ra"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
        ]
    else:
        nodes += [helper.make_node("Flatten", ["ra"], ["f"], axis=1, name="flatten")]
    nodes += [helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def images(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 1, 8, 8)).astype(np.float32)


class Reader(CalibrationDataReader):
    def __init__(self, x: np.ndarray):
        self.items = iter([{"x": x[i : i + 1]} for i in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)


def quantized(
    tmp_path: Path, model: onnx.ModelProto, fmt: str, *, preprocess: bool = True, unsigned: bool = False
) -> Path:
    """The model quantized by onnxruntime (per-channel int8 weights, int8 or uint8 activations)."""
    src = tmp_path / "float.onnx"
    onnx.save(model, src)
    if preprocess:
        quant_pre_process(str(src), str(tmp_path / "pre.onnx"))
        src = tmp_path / "pre.onnx"
    out = tmp_path / f"{fmt}{'_u8' if unsigned else ''}{'_pre' if preprocess else ''}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(
            str(src),
            str(out),
            Reader(images(32, seed=7)),
            quant_format=QuantFormat.QOperator if fmt == "qoperator" else QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    return out


def run_ort(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = exact_session(data)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


def output_quant(module: ModuleOp) -> QuantParamsAttr:
    attr = forward(module).attributes["qtrain.output_q"]
    assert isinstance(attr, QuantParamsAttr)
    return attr


def forward(module: ModuleOp) -> func.FuncOp:
    (fn,) = [op for op in module.body.block.ops if isinstance(op, func.FuncOp)]
    return fn


def params(module: ModuleOp) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for op in module.body.block.ops:
        if isinstance(op, ParamOp):
            t = op.tensor_type
            dtype = np.int8 if t.element_type == i8 else np.int32
            out[op.sym_name.data] = np.frombuffer(op.value.data.data, dtype=dtype).reshape(t.get_shape())
    return out


def printed(module: ModuleOp) -> str:
    stream = io.StringIO()
    Printer(stream=stream).print_op(module)
    return stream.getvalue()


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(DIGITS))
    try:
        from data import load_split  # examples/digits/data.py (numpy + scikit-learn)
    finally:
        sys.path.remove(str(DIGITS))
    return load_split()
