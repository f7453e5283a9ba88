"""The ONNX package's own backend node test cases, through `import_onnx` and the numpy interpreter.

Where the cases come from: `onnx/backend/test/data/node/` is not shipped in the onnx wheel, so the
cases are regenerated in memory from the generator that writes that directory
(`onnx.backend.test.case.node.collect_testcases`: same models, inputs and expected outputs).

How a case maps to a qtrain model (the importer's own conventions, see `qtrain.frontends.onnx`):
- Node cases feed weights, biases, scales and zero points as graph inputs; qtrain parameters are
  constants, so every graph input but the first is turned into an initializer holding the case's
  data. The first input is the image.
- Batch: the importer fixes it to 1; a case with N rows/images runs as N separate images.
- Float cases: the importer quantizes (post-training quantization), calibrated on the case's own
  input. The float input is quantized with `qtrain.input_q`, the int8 result dequantized with
  `qtrain.output_q`. Expected outputs match within the first-order error bound of the quantization
  steps (`float_tolerance`): for y = sum_k w_k x_k + b,
      |y_q - y| <= sum_k (|w_k| s_x/2 + |x_k| s_w/2 + s_x s_w/4) + s_x s_w/2 + s_y/2
  (input step s_x, per-channel weight step s_w, bias step s_x s_w, output step s_y), and for an
  average s_x/2 + s_y/2; plus 1e-5 relative for float32 arithmetic. No saturation term: calibration
  on the case's input covers every range.
- Quantized cases (QLinearConv, QLinearMatMul): bit-exact. uint8 tensors map to int8 as q - 128.
  Exception ("requantized"): the QLinearMatMul cases have asymmetric weights (zero point 114) whose
  centered values span [-115, 141], which symmetric int8 weights cannot hold; the importer warns and
  re-quantizes them per output channel (step s_w'), so the dequantized outputs agree within
  sum_k |x_k| s_w'/2 + s_y (the weight error, plus one output step because both sides round).
"""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.backend.test.case.test_case import TestCase
from onnx.reference import ReferenceEvaluator

from qtrain.dialects.qtrain import Conv2DOp
from qtrain.frontends.onnx import OnnxImportError, OnnxImportWarning, import_onnx, input_quant, quantize_images
from qtrain.interpreter import run_forward

# In scope: how the case is compared. "float" = PTQ within the stated bound, "exact" = bit-exact,
# "requantized" = quantized case whose weights the importer must re-quantize (bound in the module doc).
IN_SCOPE = {
    "test_basic_conv_with_padding": "float",
    "test_basic_conv_without_padding": "float",
    "test_conv_with_strides_padding": "float",
    "test_conv_with_strides_no_padding": "float",
    "test_conv_with_strides_and_asymmetric_padding": "float",
    "test_conv_with_autopad_same": "float",
    "test_qlinearconv": "exact",
    "test_qlinearmatmul_2D_uint8_float32": "requantized",
    "test_qlinearmatmul_2D_int8_float32": "requantized",
    "test_gemm_default_zero_bias": "float",
    "test_gemm_default_no_bias": "float",
    "test_gemm_default_scalar_bias": "float",
    "test_gemm_default_single_elem_vector_bias": "float",
    "test_gemm_default_vector_bias": "float",
    "test_gemm_transposeB": "float",
    "test_gemm_alpha": "float",
    "test_gemm_beta": "float",
    "test_matmul_2d": "float",
    "test_globalaveragepool": "float",
    "test_globalaveragepool_precomputed": "float",
    "test_averagepool_2d_default": "float",
    "test_averagepool_2d_strides": "float",
    "test_averagepool_2d_precomputed_strides": "float",
}


def not_an_image(rank: int, extra: str = "") -> tuple[str, str]:
    return f"input of rank {rank} is neither an NCHW image nor [N, features]{extra}", f"has rank {rank}"


def integer_math(dtype: str, rank: int | None = None) -> tuple[str, str]:
    reason = f"plain integer arithmetic on {dtype} tensors (no scale), not a quantized op"
    return reason, f"has rank {rank}" if rank else "element type"


def expanded(op: str) -> tuple[str, str]:
    return f"function-expanded form built from {op} and friends, ops a CNN importer has no use for", f"'{op}'"


def input_type(what: str) -> tuple[str, str]:
    return f"{what} tensors (qtrain activations are int8)", "element type"


POOL_PADS = ("padded average pooling: qtrain.avgpool has no padding", "padded average pooling")
POOL_3D = ("3-D pooling", "has rank 5")
PER_CHANNEL_ACT = ("per-channel activation quantization (qtrain activations are per tensor)", "per tensor")
BLOCKED = ("blocked quantization", "block_size")
TRANS_A = ("transA=1: the batch is on axis 1 of the input", "transA=1")
NOT_FLAT = ("batched matmul on a rank-4 tensor (not a flattened [N, F] operand)", "[N, F] matrix")

# Out of scope: (reason, a fragment of the importer's error). Each one must be *rejected* by the
# importer with that OnnxImportError (never mistranslated); `test_out_of_scope_case_is_rejected`.
OUT_OF_SCOPE: dict[str, tuple[str, str]] = {
    "test_add": not_an_image(3, "; adds two runtime tensors (qtrain's forward takes one image)"),
    "test_add_bcast": not_an_image(3, "; two runtime tensors, broadcasting"),
    "test_add_int8": integer_math("int8", 3),
    "test_add_uint8": integer_math("uint8", 3),
    "test_add_int16": integer_math("int16"),
    "test_add_uint16": integer_math("uint16"),
    "test_add_uint32": integer_math("uint32"),
    "test_add_uint64": integer_math("uint64"),
    "test_averagepool_1d_default": ("1-D pooling", "has rank 3"),
    "test_averagepool_3d_default": POOL_3D,
    "test_averagepool_2d_precomputed_pads": POOL_PADS,
    "test_averagepool_2d_precomputed_pads_count_include_pad": POOL_PADS,
    "test_averagepool_2d_precomputed_same_upper": POOL_PADS,
    "test_averagepool_2d_same_upper": POOL_PADS,
    "test_averagepool_2d_same_lower": POOL_PADS,
    "test_averagepool_2d_pads": POOL_PADS,
    "test_averagepool_2d_pads_count_include_pad": POOL_PADS,
    "test_averagepool_2d_ceil": (
        "ceil_mode with a partial last window (qtrain.avgpool windows are whole)",
        "ceil_mode",
    ),
    "test_averagepool_2d_ceil_last_window_starts_on_pad": POOL_PADS,
    "test_averagepool_2d_dilations": ("dilated pooling", "dilations"),
    "test_averagepool_3d_dilations_small": POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": POOL_3D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": POOL_3D,
    "test_clip": not_an_image(3),
    "test_clip_example": not_an_image(1),
    "test_clip_inbounds": not_an_image(1),
    "test_clip_outbounds": not_an_image(1),
    "test_clip_splitbounds": not_an_image(1),
    "test_clip_min_greater_than_max": not_an_image(1),
    "test_clip_default_min": not_an_image(3),
    "test_clip_default_max": not_an_image(3),
    "test_clip_default_inbounds": not_an_image(1),
    "test_clip_default_int8_min": integer_math("int8", 3),
    "test_clip_default_int8_max": integer_math("int8", 3),
    "test_clip_default_int8_inbounds": integer_math("int8", 1),
    "test_clip_example_expanded": expanded("Less"),
    "test_clip_expanded": expanded("Less"),
    "test_clip_inbounds_expanded": expanded("Less"),
    "test_clip_outbounds_expanded": expanded("Less"),
    "test_clip_splitbounds_expanded": expanded("Less"),
    "test_clip_min_greater_than_max_expanded": expanded("Less"),
    "test_clip_default_min_expanded": expanded("Less"),
    "test_clip_default_max_expanded": expanded("Less"),
    "test_clip_default_inbounds_expanded": not_an_image(1, " (an Identity graph)"),
    "test_clip_default_int8_min_expanded": expanded("Less"),
    "test_clip_default_int8_max_expanded": expanded("Less"),
    "test_clip_default_int8_inbounds_expanded": integer_math("int8", 1),
    "test_relu": not_an_image(3),
    "test_relu_expanded_ver18": expanded("CastLike"),
    "test_gemm_default_matrix_bias": ("bias differs per batch row ([N, K] matrix), not per output channel", "bias"),
    "test_gemm_transposeA": TRANS_A,
    "test_gemm_all_attributes": TRANS_A,
    "test_matmul_3d": ("batched (rank-3) matmul", "has rank 3"),
    "test_matmul_4d": NOT_FLAT,
    "test_matmul_bcast": NOT_FLAT,
    "test_matmul_4d_1d": NOT_FLAT,
    "test_matmul_1d_3d": ("rank-1 operand", "has rank 1"),
    "test_matmul_1d_1d": ("rank-1 operands", "has rank 1"),
    "test_qlinearmatmul_3D_uint8_float32": ("batched (rank-3) matmul", "has rank 3"),
    "test_qlinearmatmul_3D_int8_float32": ("batched (rank-3) matmul", "has rank 3"),
    "test_qlinearmatmul_3D_uint8_float16": ("batched (rank-3) matmul, float16 scales", "has rank 3"),
    "test_qlinearmatmul_3D_int8_float16": ("batched (rank-3) matmul, float16 scales", "has rank 3"),
    "test_qlinearmatmul_2D_uint8_float16": ("float16 scales (qtrain scales are float32)", "float32"),
    "test_qlinearmatmul_2D_int8_float16": ("float16 scales (qtrain scales are float32)", "float32"),
    "test_quantizelinear": not_an_image(1),
    "test_quantizelinear_axis": PER_CHANNEL_ACT,
    "test_quantizelinear_e4m3fn": not_an_image(1, "; float8 output"),
    "test_quantizelinear_e5m2": not_an_image(1, "; float8 output"),
    "test_quantizelinear_uint16": not_an_image(1, "; 16-bit output"),
    "test_quantizelinear_int16": not_an_image(1, "; 16-bit output"),
    "test_quantizelinear_uint4": ("per-axis quantization to 4-bit", "per tensor"),
    "test_quantizelinear_int4": ("per-axis quantization to 4-bit", "per tensor"),
    "test_quantizelinear_uint2": ("per-axis quantization to 2-bit", "per tensor"),
    "test_quantizelinear_int2": ("per-axis quantization to 2-bit", "per tensor"),
    "test_quantizelinear_float4e2m1": ("per-axis quantization to float4", "per tensor"),
    "test_quantizelinear_blocked_asymmetric": BLOCKED,
    "test_quantizelinear_blocked_symmetric": BLOCKED,
    "test_dequantizelinear": not_an_image(1),
    "test_dequantizelinear_axis": PER_CHANNEL_ACT,
    "test_dequantizelinear_e4m3fn": input_type("float8"),
    "test_dequantizelinear_e4m3fn_float16": input_type("float8"),
    "test_dequantizelinear_e4m3fn_zero_point": input_type("float8"),
    "test_dequantizelinear_e5m2": input_type("float8"),
    "test_dequantizelinear_uint16": input_type("16-bit"),
    "test_dequantizelinear_int16": input_type("16-bit"),
    "test_dequantizelinear_uint4": input_type("4-bit"),
    "test_dequantizelinear_int4": input_type("4-bit"),
    "test_dequantizelinear_uint2": input_type("2-bit"),
    "test_dequantizelinear_int2": input_type("2-bit"),
    "test_dequantizelinear_float4e2m1": input_type("float4"),
    "test_dequantizelinear_blocked": BLOCKED,
}

PREFIXES = (
    "test_basic_conv",
    "test_conv_",
    "test_qlinearconv",
    "test_qlinearmatmul",
    "test_quantizelinear",
    "test_dequantizelinear",
    "test_gemm",
    "test_matmul_",
    "test_relu",
    "test_clip",
    "test_add",
    "test_globalaveragepool",
    "test_averagepool",
)


@cache
def node_cases() -> dict[str, TestCase]:
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators of unrelated ops warn about float overflows
        cases = node.collect_testcases(None)
    return {c.name: c for c in cases if c.name.startswith(PREFIXES)}


def bound_model(case: TestCase) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """The case's model with every input but the first as an initializer; (model, image, expected)."""
    assert case.model is not None and case.data_sets
    inputs, outputs = case.data_sets[0]
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    names = [i.name for i in graph.input]
    for name, data in zip(names[1:], inputs[1:], strict=True):
        tensor = onnx.TensorProto()
        if isinstance(data, onnx.TensorProto):
            tensor.CopyFrom(data)
        else:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(data)))
        tensor.name = name
        graph.initializer.append(tensor)
    keep = [i for i in graph.input if i.name == names[0]]
    del graph.input[:]
    graph.input.extend(keep)
    return model, inputs[0], outputs[0]


def test_every_case_is_classified():
    names = set(node_cases())
    unclassified = sorted(names - set(IN_SCOPE) - set(OUT_OF_SCOPE))
    assert not unclassified, f"new ONNX node cases to classify: {unclassified}"
    assert not set(IN_SCOPE) & set(OUT_OF_SCOPE)
    missing = sorted((set(IN_SCOPE) | set(OUT_OF_SCOPE)) - names)
    assert not missing, f"listed cases the installed onnx does not generate: {missing}"


def to_int8(q: np.ndarray) -> np.ndarray:
    return (q.astype(np.int16) - 128).astype(np.int8) if q.dtype == np.uint8 else q.astype(np.int8)


def nhwc_rows(x: np.ndarray) -> np.ndarray:
    """[N, C, H, W] -> [N, H, W, C]; [N, F] -> [N, 1, 1, F]."""
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x.reshape(x.shape[0], 1, 1, x.shape[1])


def as_onnx_layout(out: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Our [N, K] (NHWC-flattened per image) -> the expected ONNX shape."""
    if expected.ndim == 4:
        n, c, h, w = expected.shape
        return out.reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return out.reshape(expected.shape)


def only_conv(module) -> Conv2DOp:
    convs = [op for op in module.walk() if isinstance(op, Conv2DOp)]
    assert len(convs) == 1
    return convs[0]


def float_tolerance(case: TestCase, module, x: np.ndarray) -> np.ndarray:
    """The first-order quantization error bound of the module doc, per output element (ONNX layout)."""
    assert case.model is not None
    node = case.model.graph.node[0]
    inputs, outputs = case.data_sets[0]
    expected = outputs[0]
    s_x = np.float64(input_quant(module).scale)
    out_q = module.body.block.last_op.attributes["qtrain.output_q"]
    s_y = np.float64(out_q.scale)
    if node.op_type in ("GlobalAveragePool", "AveragePool"):
        return np.full(expected.shape, s_x / 2 + s_y / 2)
    conv = only_conv(module)
    s_w = conv.weight_q.scale_array().astype(np.float64)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    alpha = abs(float(attrs.get("alpha", 1.0)))
    w = np.asarray(inputs[1], dtype=np.float64)
    if node.op_type == "Conv":
        half_step_w = np.broadcast_to((s_w / 2)[:, None, None, None], w.shape)
    elif node.op_type == "Gemm" and attrs.get("transB", 0):
        half_step_w = np.broadcast_to((s_w / 2)[:, None], w.shape)
    else:  # Gemm [F, K], MatMul [F, K]
        half_step_w = np.broadcast_to((s_w / 2)[None, :], w.shape)
    evaluator = ReferenceEvaluator(case.model)
    names = [i.name for i in case.model.graph.input]

    def lin(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        feeds = {names[0]: a.astype(np.float32), names[1]: b.astype(np.float32)}
        for name, data in zip(names[2:], inputs[2:], strict=True):
            feeds[name] = np.zeros_like(np.asarray(data))  # no bias: only the product's error
        return np.abs(evaluator.run(None, feeds)[0]).astype(np.float64)

    half_step_x = np.full(x.shape, s_x / 2)
    bound = (
        lin(half_step_x, np.abs(w))
        + lin(np.abs(x), half_step_w) / alpha
        + lin(half_step_x, half_step_w) / alpha
        + s_y / 2
    )
    per_channel_bias = s_x * s_w / 2
    channel_axis = 1
    shape = [1] * expected.ndim
    shape[channel_axis] = per_channel_bias.size
    return bound + per_channel_bias.reshape(shape)


@pytest.mark.parametrize("name", sorted(IN_SCOPE))
def test_in_scope_case(name: str):
    case = node_cases()[name]
    model, x, expected = bound_model(case)
    if IN_SCOPE[name] == "exact":
        module = import_onnx(model)
        images = to_int8(nhwc_rows(np.asarray(x)))
        out_q, _ = run_forward(module, np.ascontiguousarray(images))
        np.testing.assert_array_equal(as_onnx_layout(out_q, expected), to_int8(np.asarray(expected)))
        return
    if IN_SCOPE[name] == "requantized":
        with pytest.warns(OnnxImportWarning, match="re-quantized"):
            module = import_onnx(model)
        images = np.ascontiguousarray(to_int8(nhwc_rows(np.asarray(x))))
        out_q, logits = run_forward(module, images)
        q_in, q_out = input_quant(module), module.body.block.last_op.attributes["qtrain.output_q"]
        x_real = (images.reshape(len(images), -1).astype(np.float64) - q_in.zp) * q_in.scale
        s_w = only_conv(module).weight_q.scale_array().astype(np.float64)
        bound = np.abs(x_real) @ np.broadcast_to(s_w / 2, (x_real.shape[1], s_w.size)) + q_out.scale
        expected_real = (to_int8(np.asarray(expected)).astype(np.float64) - q_out.zp) * q_out.scale
        assert np.all(np.abs(logits - expected_real) <= bound + 1e-6), (logits, expected_real, bound)
        return
    x = np.asarray(x, dtype=np.float32)
    module = import_onnx(model, calibration=x)
    _, logits = run_forward(module, quantize_images(x, module))
    ours = as_onnx_layout(logits, expected).astype(np.float64)
    tol = float_tolerance(case, module, x) + 1e-5 * np.abs(expected).max() + 1e-6
    err = np.abs(ours - expected)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"error {err[worst]} > bound {tol[worst]} at {worst}"


@pytest.mark.parametrize("name", sorted(OUT_OF_SCOPE))
def test_out_of_scope_case_is_rejected(name: str):
    """Out-of-scope cases fail cleanly with an OnnxImportError naming the problem, never silently."""
    _, fragment = OUT_OF_SCOPE[name]
    model, _, _ = bound_model(node_cases()[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(OnnxImportError) as info:
            import_onnx(model, calibration=None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)
