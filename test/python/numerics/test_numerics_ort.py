"""Bit-exactness of the qtrain forward numerics against onnxruntime, the oracle for forward numerics.

Every case builds a single-op ONNX model with `onnx.helper`, runs it in onnxruntime (CPU, one thread)
and runs the equivalent qtrain IR (printed, re-parsed) in the numpy interpreter.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from qtrain_ir_builders import (
    ModuleBuilder,
    add_op,
    avgpool_op,
    dequantize_op,
    quant,
    quantize_op,
    tensor,
)
from xdsl.dialects.builtin import f32
from xdsl.printer import Printer

from qtrain import numerics
from qtrain.frontends.onnx.oracle import exact_session
from qtrain.interpreter import ModelInterpreter, load_module, run_forward

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_ONNX_TYPES = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.float32): TensorProto.FLOAT}


def run_onnx(
    node: onnx.NodeProto,
    inputs: dict[str, np.ndarray],
    initializers: dict[str, np.ndarray],
    output_type: int,
) -> np.ndarray:
    graph = helper.make_graph(
        [node],
        "single_op",
        [helper.make_tensor_value_info(k, _ONNX_TYPES[v.dtype], list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(node.output[0], output_type, None)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)], ir_version=8
    )
    session = exact_session(model.SerializeToString(), threads=1)
    return session.run(None, inputs)[0]


def run_ir(builder: ModuleBuilder, result: object, *args: np.ndarray) -> np.ndarray:
    """Print the module, parse it back (so the test covers the textual IR) and interpret it."""
    module = builder.build([result])  # pyright: ignore[reportArgumentType]
    text = io.StringIO()
    Printer(stream=text).print_op(module)
    (out,) = ModelInterpreter(load_module(text.getvalue())).call("forward", *args)
    return np.asarray(out)


def nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


# -- QLinearConv ---------------------------------------------------------------------------------------

CONV_CASES = {
    # name: (H, W, C_in, C_out, KH, KW, strides, pads [top, left, bottom, right], groups)
    "3x3": (9, 11, 5, 7, 3, 3, (1, 1), (1, 1, 1, 1), 1),
    "3x3-stride2-asymmetric-pad": (12, 13, 6, 8, 3, 3, (2, 2), (0, 0, 1, 1), 1),
    "1x1": (8, 8, 24, 16, 1, 1, (1, 1), (0, 0, 0, 0), 1),
    "1x1-stride2": (9, 9, 8, 12, 1, 1, (2, 2), (0, 0, 0, 0), 1),
    "5x3-rectangular": (10, 9, 4, 6, 5, 3, (1, 2), (2, 1, 2, 1), 1),
    "grouped": (8, 8, 8, 12, 3, 3, (1, 1), (1, 1, 1, 1), 4),
    "depthwise-3x3": (10, 10, 16, 16, 3, 3, (1, 1), (1, 1, 1, 1), 16),
    "depthwise-3x3-stride2": (11, 12, 8, 8, 3, 3, (2, 2), (1, 1, 1, 1), 8),
    "depthwise-7x7-stride2": (16, 16, 12, 12, 7, 7, (2, 2), (2, 2, 3, 3), 12),
    "depthwise-multiplier2": (8, 8, 6, 12, 3, 3, (1, 1), (1, 1, 1, 1), 6),
    "classifier-1x1-on-1x1": (1, 1, 64, 10, 1, 1, (1, 1), (0, 0, 0, 0), 1),
}


def conv_problem(rng: np.random.Generator, case: tuple, per_channel: bool, with_bias: bool):  # noqa: ANN201
    h, w, cin, cout, kh, kw, strides, pads, groups = case
    x = rng.integers(-128, 128, size=(1, h, w, cin), dtype=np.int8)
    weight = rng.integers(-127, 128, size=(cout, kh, kw, cin // groups), dtype=np.int8)
    s_x, z_x = np.float32(rng.uniform(0.01, 0.05)), int(rng.integers(-20, 20))
    s_w = rng.uniform(0.002, 0.02, size=cout if per_channel else 1).astype(np.float32)
    bias = rng.integers(-3000, 3000, size=cout, dtype=np.int32) if with_bias else None
    # an output scale that spreads the results over the int8 range without saturating most of them
    acc = numerics.conv2d_accumulate(x, weight, bias, input_zero_point=z_x, strides=strides, padding=pads,
                                     groups=groups)
    real = acc.astype(np.float64) * s_x * np.resize(s_w, cout)
    s_y, z_y = np.float32(real.std() / 30 + 1e-6), int(rng.integers(-10, 10))
    return x, weight, bias, s_x, z_x, s_w, s_y, z_y


@pytest.mark.parametrize("weights_constant", [True, False], ids=["prepacked-weights", "weights-as-input"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_qlinearconv_bit_exact(case: str, per_channel: bool, with_bias: bool, weights_constant: bool) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{case}-{per_channel}-{with_bias}".encode()))
    h, w, cin, cout, kh, kw, strides, pads, groups = CONV_CASES[case]
    for _ in range(3):
        x, weight, bias, s_x, z_x, s_w, s_y, z_y = conv_problem(rng, CONV_CASES[case], per_channel, with_bias)
        params = {
            "x_scale": np.array(s_x, np.float32), "x_zp": np.array(z_x, np.int8),
            "w_scale": s_w if per_channel else np.array(s_w[0], np.float32),
            "w_zp": np.zeros(cout, np.int8) if per_channel else np.array(0, np.int8),
            "y_scale": np.array(s_y, np.float32), "y_zp": np.array(z_y, np.int8),
        }
        w_oihw = np.ascontiguousarray(weight.transpose(0, 3, 1, 2))
        names = ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"]
        inputs = {"x": nchw(x)}
        if weights_constant:
            params["w"] = w_oihw
        else:
            inputs["w"] = w_oihw
        if bias is not None:
            names.append("b")
            params["b"] = bias
        node = helper.make_node("QLinearConv", names, ["y"], strides=list(strides),
                                pads=[pads[0], pads[1], pads[2], pads[3]], group=groups, kernel_shape=[kh, kw])
        expected = nhwc(run_onnx(node, inputs, params, TensorProto.INT8))

        b = ModuleBuilder([tensor(x.shape)])
        y = b.conv(b.args[0], "conv", weight, bias, input_q=quant(s_x, z_x),
                   weight_q=quant(s_w.tolist(), 0, 0) if per_channel else quant(float(s_w[0])),
                   output_q=quant(s_y, z_y), strides=strides, padding=pads, groups=groups)
        actual = run_ir(b, y, x)
        assert actual.dtype == np.int8 and actual.shape == expected.shape
        assert np.array_equal(actual, expected), f"{int((actual != expected).sum())} of {actual.size} differ"
        # the case exercises the output range: not everything saturated
        assert len(np.unique(actual)) > min(10, actual.size // 2)


def test_qlinearconv_ties_round_half_to_even() -> None:
    """Power-of-two scales put acc * M exactly on .5 often: both must round those half to even."""
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, size=(1, 6, 6, 4), dtype=np.int8)
    weight = rng.integers(-8, 8, size=(5, 3, 3, 4), dtype=np.int8)
    s_x, s_w, s_y = np.float32(0.5), np.float32(0.25), np.float32(16.0)  # M = 2**-7
    acc = numerics.conv2d_accumulate(x, weight, None, input_zero_point=1, padding=(1, 1, 1, 1))
    assert np.mean((acc % 128) == 64) > 0.005  # plenty of exact ties
    params = {"x_scale": np.array(s_x), "x_zp": np.array(1, np.int8), "w": weight.transpose(0, 3, 1, 2).copy(),
              "w_scale": np.array(s_w), "w_zp": np.array(0, np.int8), "y_scale": np.array(s_y),
              "y_zp": np.array(3, np.int8)}
    node = helper.make_node("QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"],
                            ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    expected = nhwc(run_onnx(node, {"x": nchw(x)}, params, TensorProto.INT8))
    b = ModuleBuilder([tensor(x.shape)])
    y = b.conv(b.args[0], "conv", weight, None, input_q=quant(s_x, 1), weight_q=quant(s_w), output_q=quant(s_y, 3),
               padding=(1, 1, 1, 1))
    assert np.array_equal(run_ir(b, y, x), expected)


# -- QLinearAdd ----------------------------------------------------------------------------------------


def qlinear_add_ort(a: np.ndarray, b: np.ndarray, sa: float, za: int, sb: float, zb: int, sy: float,
                    zy: int) -> np.ndarray:
    params = {"sa": np.array(sa, np.float32), "za": np.array(za, np.int8), "sb": np.array(sb, np.float32),
              "zb": np.array(zb, np.int8), "sy": np.array(sy, np.float32), "zy": np.array(zy, np.int8)}
    node = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"],
                            domain="com.microsoft")
    return run_onnx(node, {"a": a, "b": b}, params, TensorProto.INT8)


def qlinear_add_ir(a: np.ndarray, b: np.ndarray, sa: float, za: int, sb: float, zb: int, sy: float,
                   zy: int) -> np.ndarray:
    builder = ModuleBuilder([tensor(a.shape), tensor(b.shape)])
    y = builder.add(add_op(builder.args[0], builder.args[1], quant(sa, za), quant(sb, zb), quant(sy, zy)))
    return run_ir(builder, y, a, b)


def test_qlinearadd_bit_exact_random_scales() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        sy = float(np.float32(rng.uniform(0.01, 0.1)))
        sa = float(np.float32(sy * np.exp(rng.uniform(-2, 2))))
        sb = float(np.float32(sy * np.exp(rng.uniform(-2, 2))))
        za, zb, zy = (int(v) for v in rng.integers(-128, 128, 3))
        a = rng.integers(-128, 128, size=(1, 5, 7, 33), dtype=np.int8)  # odd sizes: SIMD tails
        b = rng.integers(-128, 128, size=(1, 5, 7, 33), dtype=np.int8)
        expected = qlinear_add_ort(a, b, sa, za, sb, zb, sy, zy)
        assert np.array_equal(qlinear_add_ir(a, b, sa, za, sb, zb, sy, zy), expected)


def test_qlinearadd_bit_exact_all_input_pairs() -> None:
    """Every (a, b) int8 pair, for scale sets where the order of the fused operations in the
    zero-point offset changes some outputs (found by scanning): only the documented order matches."""
    grid_a, grid_b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    a = grid_a.astype(np.int8).reshape(1, 256, 256, 1)
    b = grid_b.astype(np.int8).reshape(1, 256, 256, 1)
    rng = np.random.default_rng(2)
    checked = 0
    while checked < 4:
        sy = np.float32(rng.uniform(0.01, 0.1))
        sa, sb = (np.float32(sy * np.exp(rng.uniform(-2, 2))) for _ in range(2))
        za, zb, zy = (int(v) for v in rng.integers(-128, 128, 3))
        ra, rb = sa / sy, sb / sy
        other_offset = np.float32(zy) - numerics.fma_f32(rb, np.float32(zb), ra * np.float32(za))[()]
        if other_offset == numerics.add_constants(sa, za, sb, zb, sy, zy).offset:
            continue
        checked += 1
        expected = qlinear_add_ort(a, b, float(sa), za, float(sb), zb, float(sy), zy)
        assert np.array_equal(qlinear_add_ir(a, b, float(sa), za, float(sb), zb, float(sy), zy), expected)


def test_qlinearadd_fused_clamp_is_a_saturation_of_the_unclamped_result() -> None:
    """ORT has no fused ReLU on QLinearAdd; our clamp must equal clamping ORT's output."""
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, size=(1, 4, 4, 16), dtype=np.int8)
    b = rng.integers(-128, 128, size=(1, 4, 4, 16), dtype=np.int8)
    expected = np.clip(qlinear_add_ort(a, b, 0.03, 4, 0.05, -7, 0.06, -10), -10, 90)
    builder = ModuleBuilder([tensor(a.shape), tensor(b.shape)])
    y = builder.add(add_op(builder.args[0], builder.args[1], quant(0.03, 4), quant(0.05, -7), quant(0.06, -10),
                           clamp=(-10, 90)))
    assert np.array_equal(run_ir(builder, y, a, b), expected)


# -- average pooling -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(4, 4), (7, 7), (5, 3), (1, 1), (12, 10)])
def test_qlinear_global_average_pool_bit_exact(hw: tuple[int, int]) -> None:
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    for _ in range(5):
        x = rng.integers(-128, 128, size=(1, *hw, 37), dtype=np.int8)
        sx, zx = np.float32(rng.uniform(0.01, 0.1)), int(rng.integers(-30, 30))
        sy, zy = np.float32(sx * rng.uniform(0.3, 0.8)), int(rng.integers(-30, 30))
        params = {"sx": np.array(sx), "zx": np.array(zx, np.int8), "sy": np.array(sy), "zy": np.array(zy, np.int8)}
        node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"],
                                domain="com.microsoft", channels_last=1)
        expected = run_onnx(node, {"x": x}, params, TensorProto.INT8)
        b = ModuleBuilder([tensor(x.shape)])
        y = b.add(avgpool_op(b.args[0], hw, (1, 1), quant(sx, zx), quant(sy, zy)))
        assert np.array_equal(run_ir(b, y, x), expected)


def test_qlinear_global_average_pool_ties() -> None:
    """Same scales in and out, 4x4 window: sums that are 8 mod 16 are exact .5 ties."""
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, size=(1, 4, 4, 256), dtype=np.int8)
    params = {"sx": np.array(0.05, np.float32), "zx": np.array(3, np.int8), "sy": np.array(0.05, np.float32),
              "zy": np.array(3, np.int8)}
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"],
                            domain="com.microsoft", channels_last=1)
    expected = run_onnx(node, {"x": x}, params, TensorProto.INT8)
    assert np.mean((x.astype(np.int32) - 3).sum(axis=(1, 2)) % 16 == 8) > 0.02
    b = ModuleBuilder([tensor(x.shape)])
    y = b.add(avgpool_op(b.args[0], (4, 4), (1, 1), quant(0.05, 3), quant(0.05, 3)))
    assert np.array_equal(run_ir(b, y, x), expected)


def qlinear_average_pool_ort(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], sx: float, zx: int,
                             sy: float, zy: int) -> np.ndarray:
    params = {"sx": np.array(sx, np.float32), "zx": np.array(zx, np.int8), "sy": np.array(sy, np.float32),
              "zy": np.array(zy, np.int8)}
    node = helper.make_node("QLinearAveragePool", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft",
                            kernel_shape=list(kernel), strides=list(strides), channels_last=1)
    return run_onnx(node, {"x": x}, params, TensorProto.INT8)


@pytest.mark.parametrize("tie_prone", [False, True], ids=["random-scales", "equal-scales"])
@pytest.mark.parametrize(("kernel", "strides"), [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 1))])
def test_qlinear_average_pool_within_one_unit_at_ties(
    kernel: tuple[int, int], strides: tuple[int, int], tie_prone: bool
) -> None:
    """ORT's QLinearAveragePool dequantizes, sums floats, divides by the count and by s_y, adds zy and
    rounds; we sum integers exactly and apply one multiplier (as its QLinearGlobalAveragePool does).
    The results differ by at most one unit, and only where the exact quotient is (within float
    error) a half-integer: ORT's float sum lands on either side of the tie and it rounds after adding
    zy, we round the exact tie half to even before adding zy. With equal input and output scales
    (the usual case for a pool) such ties are common, with random scales rare."""
    rng = np.random.default_rng(17)
    total, differ = 0, 0
    for _ in range(10):
        x = rng.integers(-128, 128, size=(1, 9, 8, 24), dtype=np.int8)
        sx, zx = np.float32(rng.uniform(0.01, 0.1)), int(rng.integers(-30, 30))
        sy, zy = (sx, zx) if tie_prone else (np.float32(sx * rng.uniform(0.5, 1.0)), int(rng.integers(-30, 30)))
        expected = qlinear_average_pool_ort(x, kernel, strides, float(sx), zx, float(sy), zy).astype(np.int32)
        b = ModuleBuilder([tensor(x.shape)])
        y = b.add(avgpool_op(b.args[0], kernel, strides, quant(sx, zx), quant(sy, zy)))
        actual = run_ir(b, y, x).astype(np.int32)
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() <= 1
        # where they differ, the exact real quotient is a rounding tie
        oh, ow = actual.shape[1:3]
        windows = np.stack([x[:, i * strides[0]: i * strides[0] + kernel[0], j * strides[1]: j * strides[1] + kernel[1]]
                            .astype(np.int64).sum(axis=(1, 2)) for i in range(oh) for j in range(ow)], axis=1)
        exact = (windows - zx * kernel[0] * kernel[1]) * float(sx) / (float(sy) * kernel[0] * kernel[1])
        frac = np.abs(exact - np.floor(exact) - 0.5).reshape(actual.shape)
        assert np.all(frac[actual != expected] < 1e-4)
        total += actual.size
        differ += int((actual != expected).sum())
    if not tie_prone:
        assert differ <= 0.01 * total


# -- QuantizeLinear / DequantizeLinear -----------------------------------------------------------------


def quantize_inputs(rng: np.random.Generator, scale: np.float32) -> np.ndarray:
    """Random floats plus exact ties (k + 0.5) * scale, values far out of range, zeros and signed zeros."""
    random = rng.normal(0, 80 * float(scale), size=500).astype(np.float32)
    ties = ((rng.integers(-140, 140, size=300) + 0.5) * scale).astype(np.float32)
    extreme = np.array([1e30, -1e30, 3e38, -3e38, 0.0, -0.0], dtype=np.float32)
    return np.concatenate([random, ties, extreme]).reshape(1, 1, -1, 1)


@pytest.mark.parametrize("zp", [0, -7, 25, -128, 127])
def test_quantize_linear_bit_exact(zp: int) -> None:
    rng = np.random.default_rng(zp + 200)
    for scale in (np.float32(0.0173), np.float32(0.25), np.float32(rng.uniform(1e-3, 1.0))):
        x = quantize_inputs(rng, scale)
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
        expected = run_onnx(node, {"x": x}, {"s": np.array(scale), "z": np.array(zp, np.int8)}, TensorProto.INT8)
        b = ModuleBuilder([tensor(x.shape, f32)])
        y = b.add(quantize_op(b.args[0], quant(float(scale), zp)))
        assert np.array_equal(run_ir(b, y, x), expected)


def test_quantize_linear_nan_goes_to_the_lowest_value() -> None:
    x = np.array([np.nan, 1.0, -np.nan], dtype=np.float32).reshape(1, 1, 3, 1)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    expected = run_onnx(node, {"x": x}, {"s": np.array(0.1, np.float32), "z": np.array(4, np.int8)}, TensorProto.INT8)
    assert np.array_equal(numerics.quantize(x, scale=0.1, zero_point=4), expected)


@pytest.mark.parametrize("zp", [0, -7, 100])
def test_dequantize_linear_bit_exact(zp: int) -> None:
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 4, 8, 8)
    for scale in (0.0173, 0.3, 1e-5, 7.5):
        node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])
        expected = run_onnx(node, {"x": x}, {"s": np.array(scale, np.float32), "z": np.array(zp, np.int8)},
                            TensorProto.FLOAT)
        b = ModuleBuilder([tensor(x.shape)])
        y = b.add(dequantize_op(b.args[0], quant(scale, zp)))
        actual = run_ir(b, y, x)
        assert actual.dtype == np.float32
        assert np.array_equal(actual.view(np.uint32), expected.view(np.uint32))


# -- a whole network -----------------------------------------------------------------------------------

MCUNET_PKL = Path(__file__).resolve().parents[4] / "shared" / "models" / "tiny-training" / "mcunet-5fps.pkl"


def test_mcunet_5fps_bit_exact_with_onnxruntime(tmp_path: Path) -> None:
    """The reference mcunet-5fps (43 convolutions, 7 adds, global pool), imported to qtrain IR and
    exported as QOperator ONNX by qtrain-import-tiny-training: interpreter == onnxruntime."""
    tool = shutil.which("qtrain-import-tiny-training")
    if tool is None or not MCUNET_PKL.exists():
        pytest.skip("needs qtrain-import-tiny-training and ../shared/models/tiny-training/mcunet-5fps.pkl")
    mlir, onnx_path = tmp_path / "mcunet.mlir", tmp_path / "mcunet.onnx"
    done = subprocess.run([tool, str(MCUNET_PKL), "-o", str(mlir), "--export-onnx", str(onnx_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    images = np.random.default_rng(0).integers(-128, 128, size=(4, 128, 128, 3), dtype=np.int8)
    output_q, _ = run_forward(load_module(mlir), images)
    session = exact_session(onnx_path, threads=1)
    (image_input,) = session.get_inputs()
    expected = np.stack([
        session.run(None, {image_input.name: nchw(images[n:n + 1])})[0].reshape(-1) for n in range(len(images))
    ])
    assert output_q.shape == expected.shape == (4, 10)
    assert np.array_equal(output_q, expected)
