"""ONNX import of GroupNorm: GroupNormalization (opset 18: scale / bias per group; opset 21: per channel),
PyTorch's export (Reshape [N, G, -1] -> InstanceNormalization -> Reshape back, by a constant or Shape ->
Mul -> Add) and a plain InstanceNormalization, each followed by a ReLU. Graphs built with onnx.helper; the
imported int8 network (qtrain's interpreter) against onnxruntime's float model (the oracle) on the
calibration images, and the folded gamma / beta against the values the graph was built from."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx_testing import printed, run_ort

from qtrain.frontends.onnx import OnnxImportError, import_onnx, quantize_images
from qtrain.interpreter import initial_params, run_forward

C, G, H = 16, 4, 8


def model(kind: str) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, int]:
    """input [1, 4, 8, 8] -> Conv 3x3 (16 channels) -> GroupNorm of `kind` -> Relu -> GlobalAveragePool ->
    Flatten -> Gemm (5 classes); returns the model, the real per-channel gamma and beta, and the groups."""
    rng = np.random.default_rng(0)
    gamma = rng.uniform(0.5, 2.0, C).astype(np.float32)
    beta = rng.normal(0, 0.5, C).astype(np.float32)
    inits = {
        "w": rng.normal(0, 0.3, (C, 4, 3, 3)), "b": rng.normal(0, 0.1, C),
        "fc_w": rng.normal(0, 0.3, (5, C)), "fc_b": rng.normal(0, 0.1, 5),
    }
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1, 1, 1])]
    opset, groups = 13, G
    if kind in ("gn18", "gn21"):
        opset = 18 if kind == "gn18" else 21
        per_group = kind == "gn18"
        if per_group:  # opset 18 takes one scale and bias per group
            gamma = np.repeat(gamma[::C // G], C // G)
            beta = np.repeat(beta[::C // G], C // G)
        inits["s"] = gamma[::C // G] if per_group else gamma
        inits["t"] = beta[::C // G] if per_group else beta
        nodes.append(helper.make_node("GroupNormalization", ["h", "s", "t"], ["n"], num_groups=G, epsilon=1e-5))
    elif kind in ("torch", "torch-const"):
        inits.update({"grouped": np.array([0, G, -1]), "ones": np.ones(G), "zeros": np.zeros(G),
                      "mul": gamma.reshape(C, 1, 1), "add": beta.reshape(C, 1, 1)})
        nodes += [helper.make_node("Reshape", ["h", "grouped"], ["r"]),
                  helper.make_node("InstanceNormalization", ["r", "ones", "zeros"], ["i"], epsilon=1e-5)]
        if kind == "torch":
            nodes.append(helper.make_node("Shape", ["h"], ["shape"]))
        else:
            inits["shape"] = np.array([1, C, H, H])
        nodes += [helper.make_node("Reshape", ["i", "shape"], ["back"]),
                  helper.make_node("Mul", ["back", "mul"], ["scaled"]),
                  helper.make_node("Add", ["scaled", "add"], ["n"])]
    else:
        groups = C
        inits["s"], inits["t"] = gamma, beta
        nodes.append(helper.make_node("InstanceNormalization", ["h", "s", "t"], ["n"], epsilon=1e-5))
    nodes += [helper.make_node("Relu", ["n"], ["a"]), helper.make_node("GlobalAveragePool", ["a"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1)]
    initializers = [numpy_helper.from_array(np.asarray(v, np.int64 if v.dtype.kind == "i" else np.float32), k)
                    for k, v in inits.items()]
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4, H, H])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 5])], initializers)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m, gamma.astype(np.float64), beta.astype(np.float64), groups


@pytest.mark.parametrize("kind", ["gn21", "gn18", "torch", "torch-const", "instance"])
def test_group_norm_imports_and_matches_onnxruntime(kind: str):
    onnx_model, gamma, beta, groups = model(kind)
    x = np.random.default_rng(1).normal(size=(24, 4, H, H)).astype(np.float32)
    module = import_onnx(onnx_model, calibration=x)
    text = printed(module)
    assert text.count("qtrain.group_norm ") == 1 and f"groups = {groups} : i64" in text
    assert text.count("qtrain.reshape") == 1  # only the logits' [1, 1, 1, 5] -> [1, 5]
    norm = next(op for op in module.walk() if op.name == "qtrain.group_norm")
    assert norm.output_q.zp == -128  # type: ignore[attr-defined]  # the ReLU folded: its range starts at the int8 floor
    # gamma / beta: the real values (Mul / Add folded in) in the output's integer domain
    sy = float(np.float32(norm.output_q.scale))  # type: ignore[attr-defined]
    p = initial_params(module)
    np.testing.assert_allclose(p["gn0.gamma"].astype(np.float64) * sy, gamma, rtol=1e-6)
    np.testing.assert_allclose(p["gn0.beta"].astype(np.float64) * sy, beta, rtol=1e-6, atol=1e-7)
    # the int8 network against onnxruntime's float one
    want = run_ort(onnx_model, x)
    _, logits = run_forward(module, quantize_images(x, module))
    spread = want.max() - want.min()
    assert np.abs(logits - want).max() < 0.03 * spread, (np.abs(logits - want).max(), spread)  # ~1% measured
    assert (logits.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_a_grouped_view_feeds_only_instance_normalization():
    onnx_model, *_ = model("torch")
    graph = onnx_model.graph
    instance = next(n for n in graph.node if n.op_type == "InstanceNormalization")
    relu = helper.make_node("Relu", ["r"], ["i"])  # the [N, G, -1] view given to something else
    graph.node.insert(list(graph.node).index(instance), relu)
    graph.node.remove(instance)
    with pytest.raises(OnnxImportError, match=r"a \[N, groups, -1\] view of an activation"):
        import_onnx(onnx_model, calibration=np.zeros((2, 4, H, H), np.float32))


def test_a_constant_mul_folds_into_the_conv_before_the_normalization():
    """A per-channel Mul between the conv and the GroupNorm is not the norm's affine part: it folds into the
    conv's output channels (the mobile importer's rule), and the int8 network still matches onnxruntime."""
    onnx_model, *_ = model("gn21")
    graph = onnx_model.graph
    scale = np.linspace(0.5, 2.0, C, dtype=np.float32).reshape(C, 1, 1)
    graph.initializer.append(numpy_helper.from_array(scale, "scale"))
    conv = next(n for n in graph.node if n.op_type == "Conv")
    conv.output[0] = "h0"
    graph.node.insert(1, helper.make_node("Mul", ["h0", "scale"], ["h"]))
    x = np.random.default_rng(1).normal(size=(24, 4, H, H)).astype(np.float32)
    module = import_onnx(onnx_model, calibration=x)
    text = printed(module)
    assert text.count("qtrain.group_norm ") == 1 and "qtrain.mul" not in text
    want = run_ort(onnx_model, x)
    _, logits = run_forward(module, quantize_images(x, module))
    spread = want.max() - want.min()
    assert np.abs(logits - want).max() < 0.03 * spread, (np.abs(logits - want).max(), spread)
    assert (logits.argmax(1) == want.argmax(1)).mean() >= 0.9
