"""The qtrain dialect's Python API: constructors, verifiers, quant params and printing."""

from __future__ import annotations

import io

import numpy as np
import pytest
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, BytesAttr, DenseIntOrFPElementsAttr, ModuleOp, TensorType, i8, i32
from xdsl.dialects.func import Func, FuncOp, ReturnOp
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    DequantizeOp,
    GetParamOp,
    ParamOp,
    Qtrain,
    QuantParamsAttr,
    ReshapeOp,
)
from qtrain.dialects.qtrain.interfaces import produced_quant


def make_ctx() -> Context:
    ctx = Context()
    for d in (Builtin, Func, Qtrain):
        ctx.load_dialect(d)
    return ctx


def dense(array: np.ndarray, elem=i8) -> DenseIntOrFPElementsAttr:
    return DenseIntOrFPElementsAttr(TensorType(elem, array.shape), BytesAttr(array.tobytes()))


def build_model(cout: int = 4) -> ModuleOp:
    """A param-backed conv -> global pool -> dequantize network built with the op constructors."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (cout, 3, 3, 3), dtype=np.int8)
    b = rng.integers(-1000, 1000, (cout,), dtype=np.int32)
    params = [ParamOp("conv0.weight", dense(w)), ParamOp("conv0.bias", dense(b, i32), trainable=True)]
    x_t = TensorType(i8, [1, 8, 8, 3])
    func = FuncOp("forward", ((x_t,), (TensorType(i8, [1, cout]),)))
    block = func.body.block
    qx = QuantParamsAttr.get(0.0078125, 0)
    qw = QuantParamsAttr.get(list(np.linspace(0.01, 0.04, cout)), 0, axis=0)
    qy = QuantParamsAttr.get(0.0235, -128)
    gw = GetParamOp("conv0.weight", TensorType(i8, w.shape))
    gb = GetParamOp("conv0.bias", TensorType(i32, b.shape))
    conv = Conv2DOp(block.args[0], gw, gb, TensorType(i8, [1, 4, 4, cout]), strides=[2, 2], padding=[1, 1, 0, 0],
                    groups=1, input_q=qx, weight_q=qw, output_q=qy, clamp=[-128, 127])
    pool = AvgPoolOp(conv, TensorType(i8, [1, 1, 1, cout]), kernel=[4, 4], strides=[1, 1], input_q=qy,
                     output_q=QuantParamsAttr.get(0.05, -1))
    flat = ReshapeOp(pool, TensorType(i8, [1, cout]))
    block.add_ops([gw, gb, conv, pool, flat, ReturnOp(flat)])
    return ModuleOp([*params, func])


def print_op(op) -> str:
    out = io.StringIO()
    Printer(stream=out).print_op(op)
    return out.getvalue()


def test_constructed_model_verifies_and_round_trips():
    module = build_model()
    module.verify()
    text = print_op(module)
    reparsed = Parser(make_ctx(), text).parse_module()
    reparsed.verify()
    assert print_op(reparsed) == text
    assert "qtrain.param @conv0.bias trainable" in text


def test_params_keep_their_bytes():
    module = build_model()
    weight = next(op for op in module.ops if isinstance(op, ParamOp) and op.sym_name.data == "conv0.weight")
    raw = np.frombuffer(weight.value.data.data, dtype=np.int8).reshape(weight.tensor_type.get_shape())
    expected = np.random.default_rng(1).integers(-127, 128, (4, 3, 3, 3), dtype=np.int8)
    np.testing.assert_array_equal(raw, expected)


def test_quant_scales_are_float32():
    q = QuantParamsAttr.get([0.1, 1 / 3], axis=0)
    assert q.scale_array().dtype == np.float32
    assert [s.data for s in q.scales] == [float(np.float32(0.1)), float(np.float32(1 / 3))]
    assert "0.33333334" in str(q)
    assert QuantParamsAttr.get(0.25, -128).per_tensor and not q.per_tensor


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strides": [0, 2]}, "strides must be >= 1"),
        ({"groups": 2}, "groups = 2 must divide input channels (3)"),
        ({"weight_q": QuantParamsAttr.get([0.1, 0.2], 0, axis=0)},
         "weight_q has 2 scales, need one per output channel"),
        ({"clamp": [5, -5]}, "clamp [5, -5] must satisfy"),
        ({"output_q": QuantParamsAttr.get([0.1, 0.2], 0, axis=0)}, "output_q must be per-tensor"),
    ],
)
def test_conv_verifier_rejects(kwargs, message):
    args = dict(strides=[2, 2], padding=[1, 1, 0, 0], groups=1, input_q=QuantParamsAttr.get(0.1, 0),
                weight_q=QuantParamsAttr.get([0.1] * 4, 0, axis=0), output_q=QuantParamsAttr.get(0.5, -128))
    args.update(kwargs)
    module = build_model()
    func = next(op for op in module.ops if isinstance(op, FuncOp))
    conv = next(op for op in func.walk() if isinstance(op, Conv2DOp))
    bad = Conv2DOp(conv.input, conv.weight, conv.bias, conv.output.type, **args)
    with pytest.raises(VerifyException, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        bad.verify()


def test_produced_quant_looks_through_reshape():
    module = build_model()
    func = next(op for op in module.ops if isinstance(op, FuncOp))
    ret = func.body.block.last_op
    assert isinstance(ret, ReturnOp)
    assert produced_quant(ret.arguments[0]) == QuantParamsAttr.get(0.05, -1)
    assert produced_quant(func.body.block.args[0]) is None


def test_add_infers_result_type_and_checks_shapes():
    module = build_model()
    func = next(op for op in module.ops if isinstance(op, FuncOp))
    conv = next(op for op in func.walk() if isinstance(op, Conv2DOp))
    q = conv.output_q
    add = AddOp(conv, conv, lhs_q=q, rhs_q=q, output_q=q)
    assert add.output.type == conv.output.type
    add.verify()
    deq = DequantizeOp(add, q)
    assert deq.output.type == TensorType(deq.output.type.element_type, [1, 4, 4, 4])
    deq.verify()


def test_get_param_type_mismatch_is_reported():
    module = build_model()
    func = next(op for op in module.ops if isinstance(op, FuncOp))
    bad = GetParamOp("conv0.bias", TensorType(i32, [5]))
    func.body.block.insert_op_before(bad, func.body.block.first_op)
    with pytest.raises(VerifyException, match="@conv0.bias has type tensor<4xi32>, but the result is tensor<5xi32>"):
        module.verify()


@pytest.mark.parametrize("result_shape, ok", [((6, 3, 3, 4), True), ((6, 3, 3, 8), False), ((6, 3, 3, 2), False)])
def test_grouped_weight_gradient_covers_the_whole_weight(result_shape: tuple[int, ...], ok: bool):
    """groups = 2 (a lite residual module's conv): the weight gradient is [C_out, KH, KW, C_in / groups]."""
    from xdsl.dialects.builtin import f32
    from xdsl.ir import Block

    from qtrain.dialects.qtrain import Conv2DWeightGradOp

    block = Block(arg_types=[TensorType(i8, [1, 6, 6, 8]), TensorType(f32, [1, 6, 6, 6])])
    op = Conv2DWeightGradOp(block.args[0], block.args[1], TensorType(f32, list(result_shape)), strides=(1, 1),
                            padding=(1, 1, 1, 1), groups=2, input_q=QuantParamsAttr.get(0.1, 0))
    block.add_op(op)
    if ok:
        op.verify()
    else:
        with pytest.raises(VerifyException, match="grouped .groups = 2. weight gradient covers every input channel"):
            op.verify()


def test_f32_array_attrs_are_shared_and_exact() -> None:
    """F32ArrayAttr.get builds one attribute per distinct list of float32 bits (the search plans many
    candidates with the same QAS factors): equal lists share it, float32 rounding happens first, and
    -0.0 is not mistaken for 0.0 (equal as floats, different bits and printed differently)."""
    from qtrain.dialects.qtrain.attrs import F32ArrayAttr

    a = F32ArrayAttr.get([0.1, 2.5e8])
    assert F32ArrayAttr.get(np.array([0.1, 2.5e8])) is a
    assert a.get_values() == (float(np.float32(0.1)), 2.5e8)
    assert F32ArrayAttr.get([float(np.float32(0.1)), 2.5e8]) is a  # same float32 bits
    negative, positive = F32ArrayAttr.get([-0.0]), F32ArrayAttr.get([0.0])
    assert negative is not positive and np.signbit(negative.as_array()[0]) and not np.signbit(positive.as_array()[0])
