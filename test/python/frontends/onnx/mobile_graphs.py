"""Small ONNX graphs (onnx.helper, no torch) with the patterns torchvision's mobile CNNs export to, for the
importer, dialect and compile tests: HardSwish / HardSigmoid / Sigmoid / SiLU (Sigmoid + Mul), the
squeeze-and-excitation block (global mean, two 1x1 convs, HardSigmoid, broadcast Mul), MaxPool with padding,
a channel split and concat, ShuffleNet's channel shuffle (Reshape, Transpose, Reshape), and the legacy
exporter's shape arithmetic (Shape, Gather, Div, Slice).

`mobile_blocks(opset)` strings all of them into one float CNN (input [1, 3, 12, 12], 3 classes);
`quantize(tmp, model, fmt)` turns a model into onnxruntime's QOperator or QDQ form; `run_ort` runs any.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from qtrain.frontends.onnx.oracle import exact_session

INPUT = (1, 3, 12, 12)


def images(n: int, seed: int = 1, shape: tuple[int, ...] = INPUT) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, *shape[1:])).astype(np.float32)


class _Graph:
    """Accumulates nodes and initializers; `conv` and friends return the output tensor name."""

    def __init__(self, opset: int, seed: int = 0):
        self.opset = opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs: object) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(f"{op}_"), **attrs))
        return outs

    def conv(self, x: str, cin: int, cout: int, k: int = 1, stride: int = 1, group: int = 1, scale: float = 0.5
             ) -> str:
        w = self.const(self.rng.normal(0, scale / np.sqrt(cin // group * k * k), (cout, cin // group, k, k))
                       .astype(np.float32), "w")
        b = self.const(self.rng.normal(0, 0.1, cout).astype(np.float32), "b")
        return self.node("Conv", [x, w, b], pads=[k // 2] * 4, strides=[stride] * 2, group=group)[0]

    def reduce_mean(self, x: str, keepdims: int = 1) -> str:
        if self.opset >= 18:
            return self.node("ReduceMean", [x, self.const(np.array([2, 3], np.int64), "axes")], keepdims=keepdims)[0]
        return self.node("ReduceMean", [x], axes=[2, 3], keepdims=keepdims)[0]

    def se(self, x: str, c: int, squeeze: int) -> str:
        s = self.reduce_mean(x)
        s = self.node("Relu", [self.conv(s, c, squeeze)])[0]
        s = self.node("HardSigmoid", [self.conv(s, squeeze, c)], alpha=1 / 6, beta=0.5)[0]
        return self.node("Mul", [x, s])[0]

    def split(self, x: str, sizes: list[int]) -> list[str]:
        if self.opset >= 13:
            return self.node("Split", [x, self.const(np.array(sizes, np.int64), "split")], n_out=len(sizes), axis=1)
        return self.node("Split", [x], n_out=len(sizes), axis=1, split=sizes)

    def shuffle(self, x: str, c: int, hw: int, groups: int = 2) -> str:
        v = self.node("Reshape", [x, self.const(np.array([1, groups, c // groups, hw, hw], np.int64), "shape")])[0]
        t = self.node("Transpose", [v], perm=[0, 2, 1, 3, 4])[0]
        return self.node("Reshape", [t, self.const(np.array([1, -1, hw, hw], np.int64), "shape")])[0]

    def legacy_chunk(self, x: str) -> tuple[str, str]:
        """torch.onnx's legacy export of x.chunk(2, dim=1): the split point computed from the shape."""
        shape = self.node("Shape", [x])[0]
        c = self.node("Gather", [shape, self.const(np.array(1, np.int64), "i")], axis=0)[0]
        half = self.node("Div", [c, self.const(np.array(2, np.int64), "two")])[0]
        half1 = self.node("Unsqueeze", [half, self.const(np.array([0], np.int64), "ax")])[0]
        full1 = self.node("Unsqueeze", [c, self.const(np.array([0], np.int64), "ax")])[0]
        axes = self.const(np.array([1], np.int64), "axes")
        first = self.node("Slice", [x, self.const(np.array([0], np.int64), "zero"), half1, axes])[0]
        second = self.node("Slice", [x, half1, full1, axes])[0]
        return first, second

    def model(self, x_name: str, out: str, classes: int) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "mobile", [helper.make_tensor_value_info(x_name, TensorProto.FLOAT,
                                                                                         list(INPUT))],
                                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, classes])], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8 if self.opset <= 19 else 10
        onnx.checker.check_model(model)
        return model


def mobile_blocks(opset: int = 17, *, legacy_chunk: bool = False, classes: int = 3) -> onnx.ModelProto:
    """conv 3->8 + HardSwish (x * HardSigmoid(x) before opset 14); MaxPool 3x3/2 pad 1; SE (mean, 1x1 8->4 +
    ReLU, 1x1 4->8, HardSigmoid, Mul); split
    4 + 4, 1x1 conv + SiLU on the second half, concat, channel shuffle; 1x1 conv 8->8 + Sigmoid; GlobalAveragePool,
    Flatten, Gemm -> classes."""
    g = _Graph(opset)
    y = g.conv("x", 3, 8, k=3)
    if opset >= 14:
        y = g.node("HardSwish", [y])[0]
    else:  # before HardSwish existed exporters wrote x * HardSigmoid(x, 1/6, 1/2)
        y = g.node("Mul", [y, g.node("HardSigmoid", [y], alpha=1 / 6, beta=0.5)[0]])[0]
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])[0]
    y = g.se(y, 8, 4)
    a, b = g.legacy_chunk(y) if legacy_chunk else g.split(y, [4, 4])
    b = g.conv(b, 4, 4)
    b = g.node("Mul", [b, g.node("Sigmoid", [b])[0]])[0]
    y = g.shuffle(g.node("Concat", [a, b], axis=1)[0], 8, 6)
    y = g.node("Sigmoid", [g.conv(y, 8, 8)])[0]
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])[0]], axis=1)[0]
    w = g.const(g.rng.normal(0, 0.5, (classes, 8)).astype(np.float32), "fc")
    bias = g.const(g.rng.normal(0, 0.1, classes).astype(np.float32), "fcb")
    out = g.node("Gemm", [y, w, bias], transB=1)[0]
    return g.model("x", out, classes)


def quantize(tmp: Path, model: onnx.ModelProto, fmt: str, calibration: np.ndarray | None = None) -> Path:
    """onnxruntime's static quantization (after quant_pre_process): int8 activations, per-channel int8
    weights, QOperator ("qop") or QDQ ("qdq")."""
    calibration = images(32, seed=7) if calibration is None else calibration

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    src, pre, out = tmp / f"float_{fmt}.onnx", tmp / f"pre_{fmt}.onnx", tmp / f"{fmt}.onnx"
    onnx.save(model, src)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ if fmt == "qdq"
                        else QuantFormat.QOperator, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
    return out


def run_ort(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = exact_session(data)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
