"""`qtrain-lite-residual` (transforms/lite_residual.py) and the TinyTL schemes.

The must-show of the TinyTL issue: inserting the modules is an exact no-op, for the three reference models
and the digits CNN, bit for bit on the forward int8 outputs of several inputs, both right after the pass
and after the whole training pipeline of `--scheme tinytl-l+b`. Also: the block-detection rule on the
reference models (checked against the pickles' own block structure), TinyTL's kernel/pool rule, the
calibration, the add's numerics that make the no-op exact, and what each TinyTL scheme trains.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from testpaths import LIT_INPUTS, MODELS, REPO, require_shared_models
from xdsl.utils.exceptions import PassFailedException

from qtrain import numerics
from qtrain.dialects.qtrain.contract import FORWARD, TRAIN_STEP, find_func
from qtrain.interpreter import ModelInterpreter, initial_params, load_module, run_forward, run_train_steps
from qtrain.transforms.lite_residual import (
    LiteResidualPass,
    Settings,
    block_inputs,
    calibrate,
    find_blocks,
    geometry,
    largest_divisor,
    make_divisible,
)
from qtrain.transforms.pipeline import apply_passes, training_passes
from qtrain.transforms.schemes import SchemeError, lite_residual_modules, parse_scheme
from qtrain.transforms.sparse_update import SparseUpdatePass

BLOCKS_MODEL = LIT_INPUTS / "lite_residual_blocks.mlir"
REFERENCE_MODELS = ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"]


def reference_model(name: str):  # noqa: ANN201
    from qtrain.frontends.tiny_training import import_tiny_training

    require_shared_models()
    return import_tiny_training(MODELS / f"{name}.pkl", num_classes=10)


def digits_model():  # noqa: ANN201
    from qtrain.frontends.onnx import import_onnx

    with pytest.warns(UserWarning):  # the digits CNN is a float model, quantized here without calibration data
        return import_onnx(REPO / "examples" / "digits" / "digits_cnn.onnx")


def images_for(module, n: int, seed: int = 0) -> np.ndarray:  # noqa: ANN001
    shape = find_func(module, FORWARD).body.block.args[0].type.get_shape()  # type: ignore[union-attr]
    return np.random.default_rng(seed).integers(-128, 128, (n, *shape[1:]), dtype=np.int8)


# -- the no-op -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*REFERENCE_MODELS, "digits"])
def test_insertion_is_an_exact_no_op(name: str):
    """output_q bit for bit on 6 inputs: the imported model, after qtrain-lite-residual (every block but the
    first), and the @forward of the whole tinytl-l+b training pipeline (planned, as qtrain-compile builds it)."""
    module = digits_model() if name == "digits" else reference_model(name)
    images = images_for(module, 6)
    before, _ = run_forward(module, images)
    inserted = module.clone()
    LiteResidualPass.with_images(images).apply(None, inserted)  # type: ignore[arg-type]
    inserted.verify()
    blocks = find_blocks(find_func(module, FORWARD))  # type: ignore[arg-type]
    assert len(lite_residual_modules(find_func(inserted, FORWARD))) == len(blocks) - 1  # type: ignore[arg-type]
    after, _ = run_forward(inserted, images)
    np.testing.assert_array_equal(after, before)
    compiled = apply_passes(module.clone(), training_passes("tinytl-l+b", calibration=images, sram_kb=1 << 20))
    assert find_func(compiled, TRAIN_STEP) is not None
    assert "qtrain.group_norm" in str(find_func(compiled, FORWARD))
    trained_forward, _ = run_forward(compiled, images)
    np.testing.assert_array_equal(trained_forward, before)


def test_the_branch_output_is_exactly_zero_until_trained():
    """With gamma = beta = 0 every module's branch writes exactly 0 (its zero point), whatever the input, and
    its add returns the main branch unchanged."""
    module = load_module(BLOCKS_MODEL)
    images = images_for(module, 3)
    LiteResidualPass.with_images(images).apply(None, module)  # type: ignore[arg-type]
    forward = find_func(module, FORWARD)
    adds = [op for op in forward.walk() if op.name == "qtrain.add" and "qtrain.lite_residual" in op.attributes]  # type: ignore
    assert len(adds) == 3
    values = block_inputs(module, forward, [v for add in adds for v in (add.rhs, add.lhs, add.output)],  # type: ignore
                          images)
    for branch, main, total in zip(values[0::3], values[1::3], values[2::3], strict=True):
        assert (branch == 0).all()
        np.testing.assert_array_equal(total, main)


@pytest.mark.parametrize("scale", [0.0013, 0.02, 0.37, 1.9])
def test_adding_an_exact_zero_branch_returns_the_main_branch(scale: float):
    """qtrain.add's arithmetic (onnxruntime's) with lhs_q = output_q and a rhs of the same scale and zero point
    0 holding 0: every int8 lhs comes back unchanged, at every lhs zero point."""
    a = np.arange(-128, 128, dtype=np.int8)
    for za in range(-128, 128, 5):
        y = numerics.add(a, np.zeros_like(a), lhs_scale=scale, lhs_zero_point=za, rhs_scale=scale, rhs_zero_point=0,
                         output_scale=scale, output_zero_point=za)
        np.testing.assert_array_equal(y, a)


# -- blocks and geometry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_blocks_of_the_reference_models_are_their_mbconv_blocks(name: str):
    """The detection rule finds exactly the pickle's blocks: same count, strides and shortcuts."""
    from qtrain.frontends.tiny_training import load_pkl, parse_model

    module = reference_model(name)
    reference = parse_model(load_pkl(MODELS / f"{name}.pkl"))
    blocks = find_blocks(find_func(module, FORWARD))  # type: ignore[arg-type]
    assert len(blocks) == len(reference.blocks)
    for found, block in zip(blocks, reference.blocks, strict=True):
        assert found.stride == (block.depthwise.stride, block.depthwise.stride)
        assert (found.shortcut is not None) == (block.residual is not None)
        assert found.projection.output.type.get_shape()[3] == block.pointwise2.out_channels  # type: ignore


def test_blocks_of_the_digits_cnn():
    """One residual block without a depthwise conv (rule b) and one depthwise + projection (rule a)."""
    blocks = find_blocks(find_func(digits_model(), FORWARD))  # type: ignore[arg-type]
    assert [(b.stride, b.shortcut is not None) for b in blocks] == [((1, 1), True), ((2, 2), False)]


def test_tinytl_helpers():
    assert [make_divisible(v, 8) for v in (8, 12, 16, 20, 40, 96, 7.5)] == [8, 16, 16, 24, 40, 96, 8]
    assert [largest_divisor(n, 8) for n in (16, 24, 12, 7, 9)] == [8, 8, 6, 7, 3]


def test_kernel_and_pool_follow_tinytl():
    """k shrinks 5 -> 3 -> 1 while the pooled resolution is smaller; at resolution 1 the pool is global."""
    module = load_module(BLOCKS_MODEL)
    blocks = find_blocks(find_func(module, FORWARD))  # type: ignore[arg-type]
    shapes = [(geometry(b, Settings()).pool_kernel, geometry(b, Settings()).kernel, geometry(b, Settings()).branch_hw)
              for b in blocks]
    # inputs 8x8, 8x8, 4x4, 2x2: pooled 4, 4, 2, 1
    assert shapes == [((2, 2), 3, (4, 4)), ((2, 2), 3, (2, 2)), ((2, 2), 1, (1, 1)), ((2, 2), 1, (1, 1))]
    assert geometry(blocks[3], Settings()).pool_strides == (1, 1)  # global: the whole 2x2
    assert geometry(blocks[0], Settings(kernel=7)).kernel == 3
    assert geometry(blocks[0], Settings(downsample=1)).kernel == 5


def test_a_module_has_tinytls_layers():
    module = load_module(BLOCKS_MODEL)
    LiteResidualPass.with_images(images_for(module, 2), blocks=(1,)).apply(None, module)  # type: ignore[arg-type]
    ops = [op for op in find_func(module, FORWARD).walk() if "qtrain.lite_residual" in op.attributes]  # type: ignore
    assert [op.name for op in ops] == ["qtrain.avgpool", "qtrain.conv2d", "qtrain.group_norm", "qtrain.conv2d",
                                       "qtrain.group_norm", "qtrain.upsample", "qtrain.add"]
    conv1, norm1, conv2, norm2 = ops[1], ops[2], ops[3], ops[4]
    assert conv1.groups.value.data == 2 and conv1.bias is None and conv2.bias is None  # type: ignore[attr-defined]
    assert norm1.clamp.get_values() == (norm1.output_q.zp, 127)  # type: ignore[attr-defined]  # ReLU
    assert "qtrain.lite_residual_final" in norm2.attributes and norm2.clamp is None  # type: ignore[attr-defined]


# -- calibration ------------------------------------------------------------------------------------------------


def test_calibration_once_equals_calibration_in_the_pass():
    module = load_module(BLOCKS_MODEL)
    images = images_for(module, 5, seed=3)
    a, b = module.clone(), module.clone()
    LiteResidualPass.with_images(images).apply(None, a)  # type: ignore[arg-type]
    LiteResidualPass.with_calibration(calibrate(module, images)).apply(None, b)  # type: ignore[arg-type]
    assert str(a) == str(b)
    seeded = LiteResidualPass.with_calibration(calibrate(module, images, settings=Settings(seed=1)))
    assert seeded.seed == 1  # the pass takes its settings from the calibration
    object.__setattr__(seeded, "seed", 0)  # a calibration for other settings than the pass's is refused
    with pytest.raises(PassFailedException, match="other settings"):
        seeded.apply(None, module.clone())  # type: ignore[arg-type]


def test_calibrated_scales_fit_the_calibration_images():
    """The first conv's calibrated output range holds the calibration images' branch (few saturations), and
    a different image set gives different scales (the data decides)."""
    module = load_module(BLOCKS_MODEL)
    images = images_for(module, 8, seed=4)
    inserted = module.clone()
    LiteResidualPass.with_images(images, blocks=(1,)).apply(None, inserted)  # type: ignore[arg-type]
    conv1 = next(op for op in find_func(inserted, FORWARD).walk()  # type: ignore[union-attr]
                 if op.name == "qtrain.conv2d" and "qtrain.lite_residual" in op.attributes)
    runner = ModelInterpreter(inserted)
    for image in images:
        runner.call(FORWARD, image[None])
        assert runner.saturation_masks[conv1].mean() > 0.95
    other = calibrate(module, (images // 4).astype(np.int8), blocks=(1,))
    assert other.scales[1] != calibrate(module, images, blocks=(1,)).scales[1]


def test_calibration_images_from_a_file(tmp_path):
    module = load_module(BLOCKS_MODEL)
    images = images_for(module, 4, seed=5)
    np.savez(tmp_path / "task.npz", image=images, label=np.zeros(4, np.int64))
    a, b = module.clone(), module.clone()
    LiteResidualPass(calibration=str(tmp_path / "task.npz")).apply(None, a)  # type: ignore[arg-type]
    LiteResidualPass.with_images(images).apply(None, b)  # type: ignore[arg-type]
    assert str(a) == str(b)
    np.savez(tmp_path / "bad.npz", image=images.astype(np.float32))
    with pytest.raises(PassFailedException, match="calibration images must be int8 NHWC"):
        LiteResidualPass(calibration=str(tmp_path / "bad.npz")).apply(None, module.clone())  # type: ignore[arg-type]


def test_without_images_a_warning_names_the_stand_in():
    module = load_module(BLOCKS_MODEL)
    with pytest.warns(UserWarning, match="no calibration images"):
        LiteResidualPass().apply(None, module)  # type: ignore[arg-type]


# -- schemes ----------------------------------------------------------------------------------------------------


def trained(scheme: str, module=None) -> dict[str, dict]:  # noqa: ANN001
    module = module if module is not None else load_module(BLOCKS_MODEL)
    images = images_for(module, 2)
    apply_passes(module, training_passes(scheme, calibration=images, plan=False))
    from qtrain.transforms.plan_memory import trainable_list

    return {t["name"]: t for t in trainable_list(module, find_func(module, TRAIN_STEP))}


MODULE_PARTS = ["conv1.weight", "gn1.gamma", "gn1.beta", "conv2.weight", "gn2.gamma", "gn2.beta"]


def test_tinytl_b_is_bias_only():
    assert trained("tinytl-b") == trained("bias-only")


def test_tinytl_l_trains_the_modules_and_the_classifier():
    got = trained("tinytl-l")
    modules = {f"lite_residual{b}.{part}" for b in (1, 2, 3) for part in MODULE_PARTS}
    assert set(got) == modules | {"conv11.weight", "conv11.bias"}
    assert got["lite_residual2.gn1.gamma"]["kind"] == "weight" and got["lite_residual2.gn1.gamma"]["layer"] is None
    assert got["lite_residual2.gn1.gamma"]["lite_residual"] == 2 and got["lite_residual2.gn1.gamma"]["storage"] == "f32"
    assert got["conv11.weight"]["layer"] == 11  # the modules' convs are not layers of schemes.json's numbering


def test_tinytl_l_plus_b_freezes_each_modules_last_beta():
    got = trained("tinytl-l+b")
    biases = {f"conv{i}.bias" for i in range(12)}
    modules = {f"lite_residual{b}.{part}" for b in (1, 2, 3) for part in MODULE_PARTS if part != "gn2.beta"}
    assert set(got) == modules | biases | {"conv11.weight"}


def test_a_per_layer_scheme_picks_modules(tmp_path):
    schemes = tmp_path / "schemes.json"
    schemes.write_text(json.dumps({"m": {"x": {"n_bias_update": 0, "manual_weight_idx": [8],
                                               "weight_update_ratio": [0.5], "lite_residual_blocks": [2]}}}))
    got = trained(f"{schemes}#m/x")
    assert {n for n in got if n.startswith("lite_residual")} == {f"lite_residual2.{p}" for p in MODULE_PARTS}
    assert got["conv8.weight"]["channels"] == [0, 16]
    assert parse_scheme(f"{schemes}#m/x").module_blocks == (2,)


def test_l_schemes_need_modules_in_the_graph():
    module = load_module(BLOCKS_MODEL)
    apply_passes(module, training_passes("bias-only", plan=False)[:1])  # autodiff only: no module inserted
    with pytest.raises(PassFailedException, match="trains lite residual modules, but the network has none"):
        SparseUpdatePass(scheme="tinytl-l").apply(None, module)  # type: ignore[arg-type]
    with pytest.raises(SchemeError, match="unknown scheme 'tinytl'"):
        parse_scheme("tinytl")


def test_a_module_learns():
    """tinytl-l on the int8 graph: the last GroupNorm's gamma leaves 0 at the first step (its gradient is
    sum g * xhat), then the rest of the branch learns and the forward output changes."""
    module = load_module(BLOCKS_MODEL)
    images = images_for(module, 8, seed=6)
    labels = np.arange(8) % 3
    apply_passes(module, training_passes("tinytl-l", calibration=images, plan=False, lr=0.02))
    before, _ = run_forward(module, images)
    runner = ModelInterpreter(module)
    run_train_steps(module, images, labels, 16, interpreter=runner)
    assert np.abs(runner.sram_copy("lite_residual1.gn2.gamma")).max() > 0
    conv1 = runner.sram_copy("lite_residual1.conv1.weight")
    assert not np.array_equal(conv1, initial_params(module)["lite_residual1.conv1.weight"].astype(np.float32))
    after, _ = run_forward(module, images, interpreter=runner)
    assert not np.array_equal(after, before)
