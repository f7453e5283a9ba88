"""The mobile-CNN op families (dialects/qtrain/activations.py, mul.py, maxpool.py, channels.py) against
independent references: onnxruntime on every int8 code (the tables) or on random tensors with ties (QLinearMul,
MaxPool, QLinearConcat), the float definitions, central finite differences of each relaxed op (the
gradient-test standard of the repository), the verifiers' messages, and autodiff through a model holding
all of them (finite differences of the loss in the relaxed mode)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects.builtin import TensorType, f32, i8
from xdsl.ir import Block
from xdsl.utils.exceptions import VerifyException

from qtrain import numerics
from qtrain.dialects.qtrain import QuantParamsAttr
from qtrain.dialects.qtrain.activations import (
    FUNCTIONS,
    LutOp,
    derivative_f64,
    function_f64,
    lut,
    lut_grad,
    lut_grad_relaxed,
    lut_relaxed,
    lut_tables,
)
from qtrain.dialects.qtrain.channels import ConcatOp, GatherChannelsOp, gather_channels, scatter_channels
from qtrain.dialects.qtrain.maxpool import MaxPoolOp, maxpool, maxpool_grad, maxpool_output_size
from qtrain.dialects.qtrain.mul import MulGradOp, MulOp, mul_grad, mul_multiplier, mul_relaxed, mul_with_mask
from qtrain.frontends.onnx.oracle import exact_session
from qtrain.interpreter import ModelInterpreter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "frontends" / "onnx"))
from mobile_graphs import images, mobile_blocks  # noqa: E402

CODES = np.arange(-128, 128, dtype=np.int8)
QUANTS = [((0.05, -10), (0.03, -100)), ((0.1, 20), (0.004, -128)), ((0.0123, 0), (0.2, 3)), ((0.3, -128), (0.05, 90)),
          ((0.02, 5), (0.02, 5)), ((0.007, 77), (0.001, -60))]


def q(scale: float, zp: int) -> QuantParamsAttr:
    return QuantParamsAttr.get(scale, zp)


def _c(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _ort(nodes: list[onnx.NodeProto], inputs: dict[str, np.ndarray], out_shape: list[int], inits: list) -> np.ndarray:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, TensorProto.INT8, list(v.shape))
                                           for k, v in inputs.items()],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, out_shape)], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    session = exact_session(model.SerializeToString())
    return session.run(None, inputs)[0]


# -- tables ------------------------------------------------------------------------------------------------


def _float_op_table(op: str, attrs: dict, sx: float, zx: int, sy: float, zy: int) -> np.ndarray:
    """onnxruntime on every code: DequantizeLinear -> the float op -> QuantizeLinear (a QOperator model's float
    island)."""
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["d"]),
             helper.make_node(op, ["d"], ["h"], **attrs),
             helper.make_node("QuantizeLinear", ["h", "sy", "zy"], ["y"])]
    inits = [_c("sx", sx), _c("zx", zx, np.int8), _c("sy", sy), _c("zy", zy, np.int8)]
    return _ort(nodes, {"x": CODES.reshape(1, 256, 1, 1)}, [1, 256, 1, 1], inits).reshape(-1)


@pytest.mark.parametrize("inq, outq", QUANTS)
@pytest.mark.parametrize("function, op, attrs, params", [
    ("hardswish", "HardSwish", {}, ()),
    ("hardsigmoid", "HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, (1 / 6, 0.5)),
    ("hardsigmoid", "HardSigmoid", {}, (0.2, 0.5)),
    ("sigmoid", "Sigmoid", {}, ()),
])
def test_tables_are_onnxruntimes_float_ops_on_every_code(function, op, attrs, params, inq, outq) -> None:  # noqa: ANN001
    (sx, zx), (sy, zy) = inq, outq
    table, _ = lut_tables(function, params, q(sx, zx), q(sy, zy))
    np.testing.assert_array_equal(table, _float_op_table(op, attrs, sx, zx, sy, zy))


@pytest.mark.parametrize("inq, outq", QUANTS)
def test_sigmoid_table_is_qlinearsigmoid_and_identity_is_qlinearconcats_requantization(inq, outq) -> None:  # noqa: ANN001
    (sx, zx), (sy, zy) = inq, outq
    inits = [_c("sx", sx), _c("zx", zx, np.int8), _c("sy", sy), _c("zy", zy, np.int8)]
    x = {"x": CODES.reshape(1, 256, 1, 1)}
    sig = _ort([helper.make_node("QLinearSigmoid", ["x", "sx", "zx", "sy", "zy"], ["y"], domain="com.microsoft")], x,
               [1, 256, 1, 1], inits)
    np.testing.assert_array_equal(lut_tables("sigmoid", (), q(sx, zx), q(sy, zy))[0], sig.reshape(-1))
    concat = _ort([helper.make_node("QLinearConcat", ["sy", "zy", "x", "sx", "zx"], ["y"], axis=1,
                                    domain="com.microsoft")], x, [1, 256, 1, 1], inits)
    np.testing.assert_array_equal(lut_tables("identity", (), q(sx, zx), q(sy, zy))[0], concat.reshape(-1))


def test_silu_table_is_x_times_the_logistic() -> None:
    table, _ = lut_tables("silu", (), q(0.05, 0), q(0.04, -60))
    x = (CODES.astype(np.float64)) * 0.05
    exact = np.clip(np.rint(x / (1 + np.exp(-x)) / np.float64(np.float32(0.04))) - 60, -128, 127)
    assert np.abs(table - exact).max() <= 1 and (table == exact).mean() > 0.97  # float32 logistic vs exact


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_relaxed_table_op_is_the_float_function(function: str) -> None:
    params = (0.2, 0.5) if function == "hardsigmoid" else ()
    x = np.linspace(-128, 127, 301)
    u, inside = lut_relaxed(x, function, params, q(0.05, 3), q(0.03, -20))
    expect = function_f64(function, (x - 3) * float(np.float32(0.05)), params) / float(np.float32(0.03)) - 20
    np.testing.assert_allclose(u, np.clip(expect, -128, 127), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(inside, (expect >= -128) & (expect <= 127))


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_table_gradient_matches_finite_differences(function: str) -> None:
    params = (0.2, 0.5) if function == "hardsigmoid" else ()
    inq, outq = q(0.06, 4), q(0.025, -30)
    rng = np.random.default_rng(len(function))
    x = rng.uniform(-127, 126, 200)
    real = (x - 4) * float(np.float32(0.06))
    kinks = {"hardswish": [-3.0, 3.0], "hardsigmoid": [-2.5, 2.5]}.get(function, [])
    u, _ = lut_relaxed(x, function, params, inq, outq)
    keep = np.all([np.abs(real - k) > 0.01 for k in kinks], axis=0)
    keep &= (np.abs(u + 128) > 0.05) & (np.abs(u - 127) > 0.05)
    x = x[keep]
    r = rng.normal(size=x.shape)
    grad = lut_grad_relaxed(r, x, function, params, inq, outq)
    h = 1e-4
    fd = r * (lut_relaxed(x + h, function, params, inq, outq)[0] - lut_relaxed(x - h, function, params, inq, outq)[0]) \
        / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_slope_table_is_the_derivative_at_each_code_and_zero_where_the_table_clamps() -> None:
    inq, outq = q(0.05, -10), q(0.002, -120)  # sigmoid(x) in [0, 1] at scale 0.002: saturates above 0.494
    table, slope = lut_tables("sigmoid", (), inq, outq)
    x = numerics.dequantize(CODES, scale=0.05, zero_point=-10).astype(np.float64)
    expect = derivative_f64("sigmoid", x) * float(np.float32(0.05)) / float(np.float32(0.002))
    clamped = np.rint(function_f64("sigmoid", x) / float(np.float32(0.002))) - 120 > 127
    assert clamped.any() and (~clamped).any()
    np.testing.assert_allclose(slope[~clamped], expect[~clamped], rtol=1e-6)
    assert np.all(slope[clamped] == 0)
    g = np.ones(256, dtype=np.float32)
    np.testing.assert_array_equal(lut_grad(g, CODES, slope), slope)
    np.testing.assert_array_equal(lut(CODES, table), table)


# -- multiply --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("broadcast", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_mul_is_onnxruntimes_qlinearmul(broadcast: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (sa, sb, sy), (za, zb, zy) = rng.uniform(0.002, 0.2, 3).astype(np.float32), rng.integers(-60, 60, 3)
    a = rng.integers(-128, 128, (1, 9, 9, 64), dtype=np.int8)
    b = rng.integers(-128, 128, (1, 1, 1, 64) if broadcast else a.shape, dtype=np.int8)
    inits = [_c("sa", sa), _c("za", za, np.int8), _c("sb", sb), _c("zb", zb, np.int8), _c("sy", sy),
             _c("zy", zy, np.int8)]
    node = helper.make_node("QLinearMul", ["b", "sb", "zb", "a", "sa", "za", "sy", "zy"], ["y"], domain="com.microsoft")
    ref = _ort([node], {"a": a.transpose(0, 3, 1, 2).copy(), "b": b.transpose(0, 3, 1, 2).copy()}, [1, 64, 9, 9], inits)
    y, _ = mul_with_mask(a, b, q(float(sa), int(za)), q(float(sb), int(zb)), q(float(sy), int(zy)))
    np.testing.assert_array_equal(y, ref.transpose(0, 2, 3, 1))


@pytest.mark.parametrize("broadcast", [False, True])
def test_mul_gradients_match_finite_differences(broadcast: bool) -> None:
    """d<r, mul_relaxed(a, b)>/da and /db = mul_grad(requant_grad(r * mask, k), other), every element."""
    rng = np.random.default_rng(int(broadcast))
    qa, qb, qy = q(0.05, 3), q(0.02, -5), q(0.01, 10)
    a = rng.uniform(-100, 100, (1, 3, 4, 5))
    b = rng.uniform(-100, 100, (1, 1, 1, 5) if broadcast else a.shape)
    r = rng.normal(size=a.shape)
    _, inside = mul_relaxed(a, b, qa, qb, qy)
    assert not inside.all() and inside.any()
    g_t = numerics.requant_grad(r, inside, float(mul_multiplier(qa, qb, qy)))
    grads = {"a": mul_grad(g_t, b, -5, a.shape), "b": mul_grad(g_t, a, 3, b.shape)}
    for name, value in (("a", a), ("b", b)):
        for idx in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[idx] += 1e-4
            down[idx] -= 1e-4
            args_up = (up, b) if name == "a" else (a, up)
            args_down = (down, b) if name == "a" else (a, down)
            up_value = (r * mul_relaxed(*args_up, qa, qb, qy)[0]).sum()
            fd = (up_value - (r * mul_relaxed(*args_down, qa, qb, qy)[0]).sum()) / 2e-4
            assert abs(fd - grads[name][idx]) <= 1e-6 * (1 + abs(fd)), (name, idx)


# -- max pool ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, kernel, strides, pads, ceil", [
    ((1, 4, 9, 9), (3, 3), (2, 2), (1, 1, 1, 1), 0), ((1, 3, 15, 15), (3, 3), (2, 2), (0, 0, 0, 0), 1),
    ((1, 2, 10, 7), (3, 3), (2, 2), (0, 0, 0, 0), 1), ((1, 5, 6, 6), (2, 2), (2, 2), (0, 0, 0, 0), 0)])
def test_maxpool_is_onnxruntimes_int8_maxpool(shape, kernel, strides, pads, ceil) -> None:  # noqa: ANN001
    x = np.random.default_rng(sum(shape)).integers(-128, 128, shape, dtype=np.int8)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                            ceil_mode=ceil)
    oh = maxpool_output_size(shape[2], kernel[0], strides[0], pads[0], pads[2], bool(ceil))
    ow = maxpool_output_size(shape[3], kernel[1], strides[1], pads[1], pads[3], bool(ceil))
    ref = _ort([node], {"x": x}, [shape[0], shape[1], oh, ow], [])
    extra_b = max(pads[2], (oh - 1) * strides[0] + kernel[0] - shape[2] - pads[0])
    assert extra_b < kernel[0]
    y = maxpool(x.transpose(0, 2, 3, 1), (oh, ow), kernel, strides, pads[:2])
    np.testing.assert_array_equal(y, ref.transpose(0, 2, 3, 1))


def test_maxpool_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    x = rng.permutation(np.arange(2 * 7 * 7 * 3, dtype=np.float64) * 0.37).reshape(2, 7, 7, 3)  # unique maxima
    r = rng.normal(size=(2, 4, 4, 3))
    grad = maxpool_grad(x, r, (3, 3), (2, 2), (1, 1))
    assert grad.dtype == np.float64

    def f(v: np.ndarray) -> float:
        return float((r * maxpool(v, (4, 4), (3, 3), (2, 2), (1, 1))).sum())

    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += 1e-3
        down[idx] -= 1e-3
        assert abs((f(up) - f(down)) / 2e-3 - grad[idx]) < 1e-9, idx


def test_maxpool_gradient_of_a_tie_goes_to_the_first_tap() -> None:
    x = np.array([[5, 5], [1, 5]], dtype=np.int8).reshape(1, 2, 2, 1)
    g = np.ones((1, 1, 1, 1), dtype=np.float32)
    np.testing.assert_array_equal(maxpool_grad(x, g, (2, 2), (1, 1), (0, 0)).reshape(-1), [1, 0, 0, 0])


# -- channel moves ---------------------------------------------------------------------------------------


def test_gather_and_scatter_are_adjoint_and_match_finite_differences() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 2, 3, 6))
    idx = [4, 0, 5, 2]
    g = rng.normal(size=(1, 2, 3, 4))
    assert abs((gather_channels(x, idx) * g).sum() - (x * scatter_channels(g, idx, 6)).sum()) < 1e-12
    np.testing.assert_array_equal(scatter_channels(g, idx, 6)[..., [1, 3]], 0)


def test_concat_matches_onnxruntimes_qlinearconcat_after_requantization() -> None:
    """qtrain.concat copies; an input in another quantization goes through the identity table first (what the
    importer emits), which together is QLinearConcat."""
    rng = np.random.default_rng(2)
    xs = [rng.integers(-128, 128, (1, c, 3, 3), dtype=np.int8) for c in (2, 3)]
    inits = [_c("sy", 0.05), _c("zy", -4, np.int8), _c("s0", 0.05), _c("z0", -4, np.int8), _c("s1", 0.11),
             _c("z1", 9, np.int8)]
    node = helper.make_node("QLinearConcat", ["sy", "zy", "x0", "s0", "z0", "x1", "s1", "z1"], ["y"], axis=1,
                            domain="com.microsoft")
    ref = _ort([node], {"x0": xs[0], "x1": xs[1]}, [1, 5, 3, 3], inits)
    second = lut(xs[1].transpose(0, 2, 3, 1), lut_tables("identity", (), q(0.11, 9), q(0.05, -4))[0])
    np.testing.assert_array_equal(np.concatenate([xs[0].transpose(0, 2, 3, 1), second], -1), ref.transpose(0, 2, 3, 1))


# -- verifiers ---------------------------------------------------------------------------------------------


def test_verifiers_name_the_rule() -> None:
    block = Block(arg_types=[TensorType(i8, [1, 4, 4, 6]), TensorType(i8, [1, 2, 2, 6]), TensorType(f32, [1, 4, 4, 6])])
    x, small, g = block.args
    cases = [
        (LutOp(x, "gelu", input_q=q(0.1, 0), output_q=q(0.1, 0)), "unknown function 'gelu'"),
        (LutOp(x, "hardsigmoid", input_q=q(0.1, 0), output_q=q(0.1, 0)), "hardsigmoid takes 2 params"),
        (MulOp(x, small, lhs_q=q(0.1, 0), rhs_q=q(0.1, 0), output_q=q(0.1, 0)), "rhs must be"),
        (MulGradOp(g, small, TensorType(f32, [1, 2, 2, 6]), other_zero_point=0), "must be the gradient's shape"),
        (MaxPoolOp(x, TensorType(i8, [1, 3, 3, 6]), kernel=(2, 2), strides=(2, 2), padding=(0, 0, 0, 0), q=q(0.1, 0)),
         "must be tensor<1x2x2x6>"),
        (MaxPoolOp(x, TensorType(i8, [1, 2, 2, 6]), kernel=(2, 2), strides=(2, 2), padding=(2, 0, 0, 0), q=q(0.1, 0)),
         "padding in [0, kernel)"),
        (GatherChannelsOp(x, [0, 0], q(0.1, 0)), "indices must be distinct"),
        (ConcatOp([x, small], q(0.1, 0)), "differs from the output"),
    ]
    for op, message in cases:
        block.add_op(op)
        with pytest.raises(VerifyException, match=re.escape(message)):
            op.verify()


# -- autodiff through all of them ---------------------------------------------------------------------


def test_autodiff_through_every_mobile_op_matches_finite_differences_of_the_loss() -> None:
    """The mobile-blocks model (HardSwish, max pool, SE multiply, split, SiLU, concat, shuffle, Sigmoid) with
    every tensor trainable: each conv's bias gradient, which flows back through every new op's gradient,
    equals central differences of the relaxed loss."""
    from qtrain.frontends.onnx import import_onnx, quantize_images
    from qtrain.transforms.autodiff import AutodiffPass

    module = import_onnx(mobile_blocks(), images(32, seed=7))
    names = {o.name for o in module.walk()}
    assert {"qtrain.lut", "qtrain.mul", "qtrain.maxpool", "qtrain.gather_channels", "qtrain.concat"} <= names
    AutodiffPass(qas=False).apply(None, module)  # type: ignore[arg-type]
    module.verify()
    names = {o.name for o in module.walk()}
    assert {"qtrain.lut_grad", "qtrain.mul_grad", "qtrain.maxpool_grad", "qtrain.scatter_channels",
            "qtrain.channel_slice"} <= names
    image = quantize_images(images(1, seed=11), module)
    runner = ModelInterpreter(module, relaxed=True, apply_updates=False)
    runner.call("train_step", image, 1)
    for layer in (0, 1, 2, 3):  # the stem (before every new op), both SE convs, the SiLU branch's conv
        name = f"conv{layer}.bias"
        grad = runner.gradients[name]
        assert np.abs(grad).max() > 0, name
        bias = runner.params[name].astype(np.float64)
        for i in range(min(3, bias.size)):
            values = []
            for delta in (1e-3, -1e-3):
                probe = ModelInterpreter(module, relaxed=True, apply_updates=False)
                b = bias.copy()
                b[i] += delta
                probe.params[name] = b
                values.append(float(probe.call("train_step", image, 1)[0]))
            fd = (values[0] - values[1]) / 2e-3
            assert abs(fd - grad[i]) <= 1e-5 * (1 + abs(grad[i])), (name, i, fd, grad[i])
