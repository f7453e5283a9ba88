"""The xDSL interpreter of qtrain IR: loading, op plumbing, parameter state, run_forward, training loop."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from qtrain_ir_builders import (
    SMALL_MODEL,
    ModuleBuilder,
    add_op,
    avgpool_op,
    dequantize_op,
    mcunet_like,
    printed,
    quant,
    quantize_op,
    random_images,
    reshape_op,
    small_model_reference,
    tensor,
    train_step_module,
)
from xdsl.dialects.builtin import ModuleOp, f32

from qtrain import numerics
from qtrain.interpreter import (
    InputError,
    ModelInterpreter,
    ModelLoadError,
    load_module,
    run_forward,
    run_train_steps,
)

# -- loading -------------------------------------------------------------------------------------------


def test_load_module_from_text_and_from_path(tmp_path: Path) -> None:
    path = tmp_path / "small.mlir"
    path.write_text(SMALL_MODEL)
    assert printed(load_module(SMALL_MODEL)) == printed(load_module(path)) == printed(load_module(str(path)))


def test_load_module_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read .*nope.mlir"):
        load_module(tmp_path / "nope.mlir")


def test_load_module_parse_error() -> None:
    with pytest.raises(ModelLoadError, match="parse error"):
        load_module(SMALL_MODEL.replace("qtrain.avgpool", "qtrain.avgpol"))


def test_load_module_verify_error() -> None:
    bad = SMALL_MODEL.replace("-> tensor<1x4x4x3xi8>\n", "-> tensor<1x3x3x3xi8>\n").replace(
        "tensor<1x4x4x3xi8> -> tensor<1x1x1x3xi8>", "tensor<1x3x3x3xi8> -> tensor<1x1x1x3xi8>")
    with pytest.raises(ModelLoadError, match="verification failed: .*conv2d: output must be tensor<1x4x4x3xi8>"):
        load_module(bad)


# -- running -------------------------------------------------------------------------------------------


def test_run_forward_small_model_matches_the_kernels() -> None:
    images = random_images(5)
    output_q, logits = run_forward(load_module(SMALL_MODEL), images)
    expected = small_model_reference(images)
    assert output_q.dtype == np.int8 and logits.dtype == np.float32
    assert output_q.shape == logits.shape == (5, 3)
    assert np.array_equal(output_q, expected)
    assert np.array_equal(logits, (expected.astype(np.float32) - 3) * np.float32(0.05))


@pytest.mark.parametrize("depthwise", [False, True], ids=["conv", "depthwise"])
def test_conv_attributes_reach_the_kernel(depthwise: bool) -> None:
    """Asymmetric strides and padding, clamp, per-channel scales and groups: any mix-up changes results."""
    rng = np.random.default_rng(3)
    cin = 4
    cout, groups = (8, 4) if depthwise else (6, 2)
    weight = rng.integers(-128, 128, size=(cout, 3, 2, cin // groups), dtype=np.int8)
    bias = rng.integers(-500, 500, size=cout, dtype=np.int32)
    scales = rng.uniform(0.005, 0.02, cout).astype(np.float32)
    kwargs = dict(strides=(2, 1), padding=(1, 0, 2, 1), groups=groups)
    b = ModuleBuilder([tensor((1, 9, 7, cin))])
    y = b.conv(b.args[0], "c", weight, bias, input_q=quant(0.03, -4), weight_q=quant(scales.tolist(), 0, 0),
               output_q=quant(0.04, 6), clamp=(0, 100), **kwargs)  # pyright: ignore[reportArgumentType]
    module = b.build([y])
    x = rng.integers(-128, 128, size=(1, 9, 7, cin), dtype=np.int8)
    (got,) = ModelInterpreter(load_module(printed(module))).call("forward", x)
    expected = numerics.conv2d(x, weight, bias, input_scale=0.03, input_zero_point=-4, weight_scales=scales,
                               output_scale=0.04, output_zero_point=6, clamp=(0, 100), **kwargs)  # pyright: ignore
    assert np.array_equal(got, expected)
    assert got.min() >= 0 and got.max() <= 100 and len(np.unique(got)) > 10


def test_add_operand_order_and_clamp_reach_the_kernel() -> None:
    rng = np.random.default_rng(4)
    a, c = (rng.integers(-128, 128, size=(1, 3, 3, 8), dtype=np.int8) for _ in range(2))
    b = ModuleBuilder([tensor(a.shape), tensor(c.shape)])
    y = b.add(add_op(b.args[0], b.args[1], quant(0.02, 3), quant(0.07, -9), quant(0.05, 1), clamp=(1, 127)))
    (got,) = ModelInterpreter(b.build([y])).call("forward", a, c)
    expected = numerics.add(a, c, lhs_scale=0.02, lhs_zero_point=3, rhs_scale=0.07, rhs_zero_point=-9,
                            output_scale=0.05, output_zero_point=1, clamp=(1, 127))
    assert np.array_equal(got, expected)


def test_run_forward_entry_returning_dequantized_logits() -> None:
    b = ModuleBuilder([tensor((1, 4, 4, 3))])
    p = b.add(avgpool_op(b.args[0], (4, 4), (1, 1), quant(0.1, 2), quant(0.05, -7)))
    r = b.add(reshape_op(p, (1, 3)))
    d = b.add(dequantize_op(r, quant(0.05, -7)))
    images = random_images(3, (4, 4, 3))
    output_q, logits = run_forward(b.build([d]), images)
    expected = numerics.avgpool(images, kernel=(4, 4), strides=(1, 1), input_scale=0.1, input_zero_point=2,
                                output_scale=0.05, output_zero_point=-7).reshape(3, 3)
    assert np.array_equal(output_q, expected)
    assert np.array_equal(logits, numerics.dequantize(expected, scale=0.05, zero_point=-7))


def float_entry_module() -> ModuleOp:
    b = ModuleBuilder([tensor((1, 2, 3, 4), f32)])
    q = b.add(quantize_op(b.args[0], quant(0.1, 5)))
    p = b.add(avgpool_op(q, (2, 3), (1, 1), quant(0.1, 5), quant(0.1, 5)))
    return b.build([b.add(reshape_op(p, (1, 4)))])


def test_run_forward_float_entry_takes_nhwc_or_nchw() -> None:
    nhwc = np.random.default_rng(5).normal(0, 3, size=(2, 2, 3, 4)).astype(np.float32)
    module = float_entry_module()
    q1, l1 = run_forward(module, nhwc)
    q2, l2 = run_forward(module, nhwc.transpose(0, 3, 1, 2).copy())
    assert np.array_equal(q1, q2) and np.array_equal(l1, l2)
    expected = numerics.avgpool(numerics.quantize(nhwc, scale=0.1, zero_point=5), kernel=(2, 3), strides=(1, 1),
                                input_scale=0.1, input_zero_point=5, output_scale=0.1, output_zero_point=5)
    assert np.array_equal(q1, expected.reshape(2, 4))


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 4, 4, 2), np.float32), "image must be int8"),
        (np.zeros((2, 4, 4, 2), np.int32), "image must be int8"),
        (np.zeros((2, 4, 5, 2), np.int8), r"image must have shape \[N, 4, 4, 2\] \(NHWC\)"),
        (np.zeros((4, 4, 2), np.int8), r"image must have shape \[N, 4, 4, 2\]"),
    ],
    ids=["float", "int32", "width", "no-batch-dim"],
)
def test_run_forward_rejects_bad_images(images: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        run_forward(load_module(SMALL_MODEL), images)


def test_run_forward_unknown_entry() -> None:
    with pytest.raises(InputError, match=r"no function @predict \(functions: @forward\)"):
        run_forward(load_module(SMALL_MODEL), random_images(1), entry="predict")


def test_parameter_state_is_per_interpreter_and_replaceable() -> None:
    module = load_module(SMALL_MODEL)
    images = random_images(4)
    runner = ModelInterpreter(module)
    assert np.array_equal(runner.params["c_w"], np.ones((3, 3, 3, 2), np.int8))  # splat read back in full
    new_bias = np.array([4000, -4000, 123], np.int32)
    runner.params["c_b"] = new_bias
    changed, _ = run_forward(module, images, interpreter=runner)
    assert np.array_equal(changed, small_model_reference(images, new_bias))
    assert not np.array_equal(changed, small_model_reference(images))
    fresh, _ = run_forward(module, images)
    assert np.array_equal(fresh, small_model_reference(images))


def test_run_train_steps_wraps_around_the_samples() -> None:
    module = train_step_module()
    images, labels = random_images(3), np.array([2, 0, 1])
    losses, params = run_train_steps(module, images, labels, 7)
    _, logits = run_forward(module, images)
    expected = [numerics.cross_entropy(logits[s % 3], int(labels[s % 3])) for s in range(7)]
    assert losses.dtype == np.float32 and losses.shape == (7,)
    assert np.array_equal(losses, np.array(expected, np.float32))
    assert list(params) == ["c_b"]  # only trainable parameters
    assert np.array_equal(params["c_b"], np.array([1, 2, 3], np.int32))


def test_run_train_steps_rejects_mismatched_labels() -> None:
    module = train_step_module()
    with pytest.raises(InputError, match=r"label must have shape \[3\]"):
        run_train_steps(module, random_images(3), np.array([1, 2]), 2)


# -- a realistic network -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mcunet() -> ModuleOp:
    return load_module(printed(mcunet_like(np.random.default_rng(0))))


def test_mcunet_like_forward_is_fast_and_deterministic(mcunet: ModuleOp) -> None:
    images = random_images(2, (128, 128, 3), seed=1)
    runner = ModelInterpreter(mcunet)
    start = time.perf_counter()
    output_q, logits = run_forward(mcunet, images, interpreter=runner)
    per_image = (time.perf_counter() - start) / 2
    assert per_image < 2.0, f"{per_image:.2f} s per 128x128 image"
    assert output_q.shape == (2, 10) and output_q.dtype == np.int8
    assert np.array_equal(logits, numerics.dequantize(output_q, scale=0.1, zero_point=3))
    again, _ = run_forward(mcunet, images[1:])
    assert np.array_equal(again[0], output_q[1])


def test_mcunet_like_has_the_reference_layer_count(mcunet: ModuleOp) -> None:
    from qtrain.dialects.qtrain import AddOp, Conv2DOp

    convs = [op for op in mcunet.walk() if isinstance(op, Conv2DOp)]
    assert len(convs) == 43
    assert sum(isinstance(op, AddOp) for op in mcunet.walk()) > 0
    assert sum(op.is_depthwise for op in convs) == 14


MASKED_MODEL = """
builtin.module {
  qtrain.param @w = dense<[[[[3]], [[-2]]], [[[1]], [[5]]]]> : tensor<2x2x1x1xi8>
  func.func @forward(%x: tensor<1x5x3x1xi8>, %y: tensor<1x4x3x2xi8>)
      -> (tensor<1x4x3x2xi8>, tensor<1x4x3x2xi1>, tensor<1x4x3x2xi8>, tensor<1x4x3x2xi1>, tensor<1x1x1x2xi1>) {
    %w = qtrain.get_param @w : tensor<2x2x1x1xi8>
    %c, %cm = qtrain.conv2d %x, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64,
        input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.05], zp = 0>,
        output_q = #qtrain.quant<scales = [0.01], zp = 0>, clamp = array<i64: 0, 127>}
        : (tensor<1x5x3x1xi8>, tensor<2x2x1x1xi8>) -> tensor<1x4x3x2xi8>, tensor<1x4x3x2xi1>
    %a, %am = qtrain.add %c, %y {lhs_q = #qtrain.quant<scales = [0.01], zp = 0>,
        rhs_q = #qtrain.quant<scales = [0.02], zp = 1>, output_q = #qtrain.quant<scales = [0.03], zp = -2>}
        : (tensor<1x4x3x2xi8>, tensor<1x4x3x2xi8>) -> tensor<1x4x3x2xi8>, tensor<1x4x3x2xi1>
    %p, %pm = qtrain.avgpool %a {kernel = array<i64: 4, 3>, strides = array<i64: 1, 1>,
        input_q = #qtrain.quant<scales = [0.03], zp = -2>, output_q = #qtrain.quant<scales = [0.0001], zp = 0>}
        : tensor<1x4x3x2xi8> -> tensor<1x1x1x2xi8>, tensor<1x1x1x2xi1>
    func.return %c, %cm, %a, %am, %pm
        : tensor<1x4x3x2xi8>, tensor<1x4x3x2xi1>, tensor<1x4x3x2xi8>, tensor<1x4x3x2xi1>, tensor<1x1x1x2xi1>
  }
}
"""


def test_ops_with_a_mask_result_return_the_saturation_mask() -> None:
    rng = np.random.default_rng(12)
    x = rng.integers(-128, 128, size=(1, 5, 3, 1), dtype=np.int8)
    y = rng.integers(-128, 128, size=(1, 4, 3, 2), dtype=np.int8)
    c, cm, a, am, pm = ModelInterpreter(load_module(MASKED_MODEL)).call("forward", x, y)
    w = np.array([3, -2, 1, 5], np.int8).reshape(2, 2, 1, 1)
    ec, ecm = numerics.conv2d_with_mask(x, w, input_scale=0.1, input_zero_point=0, weight_scales=0.05,
                                        output_scale=0.01, output_zero_point=0, clamp=(0, 127))
    ea, eam = numerics.add_with_mask(ec, y, lhs_scale=0.01, lhs_zero_point=0, rhs_scale=0.02, rhs_zero_point=1,
                                     output_scale=0.03, output_zero_point=-2)
    _, epm = numerics.avgpool_with_mask(ea, kernel=(4, 3), strides=(1, 1), input_scale=0.03, input_zero_point=-2,
                                        output_scale=0.0001, output_zero_point=0)
    for got, want in ((c, ec), (cm, ecm), (a, ea), (am, eam), (pm, epm)):
        assert got.dtype == want.dtype and np.array_equal(got, want)
    assert cm.dtype == np.bool_ and cm.any() and not cm.all()  # the ReLU clamp cut some outputs
    assert not pm.any()  # the tiny pool output scale saturates both channels
