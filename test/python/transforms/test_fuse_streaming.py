"""qtrain-fuse-streaming: which pairs it fuses, that the fused graph computes the same bits, and what it saves.

The golden model runs the fused op as the two convolutions it stands for, so a fused module must give
the unfused module's forward outputs, losses and trained parameters exactly (int8 and relaxed modes).
The memory plan must drop the expanded tensors from the arena (its independent verifier,
test_plan_memory.verify_plan, needs no rule for the fused op: it has no in-place placement).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_plan_memory import check_module
from testpaths import LIT_INPUTS, MODELS, require_shared_models
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, UnitAttr

from qtrain.dialects.qtrain import Conv2DOp, ParamOp
from qtrain.dialects.qtrain.contract import MEMORY
from qtrain.interpreter import ModelInterpreter, load_module, run_forward, run_train_steps
from qtrain.targets.armv7em.kernels import buffer_size_fused_pointwise_depthwise
from qtrain.transforms.fuse_streaming import FuseStreamingPass, fused_ops
from qtrain.transforms.pipeline import apply_passes, training_passes
from qtrain.transforms.schemes import SchemeError, layer_numbers, network_layers

MODEL = LIT_INPUTS / "inverted_residual.mlir"


def function(module: ModuleOp, name: str) -> func.FuncOp:
    return next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == name)


def pipeline(path_or_module: object, scheme: str, *, fuse: bool, plan: bool = True) -> ModuleOp:
    module = load_module(path_or_module) if not isinstance(path_or_module, ModuleOp) else path_or_module.clone()
    return apply_passes(module, training_passes(scheme, fuse_streaming=fuse, plan=plan, sram_kb=1 << 20))


def memory(module: ModuleOp) -> dict[str, object]:
    return {k: v.value.data if hasattr(v, "value") else v.data  # type: ignore[attr-defined]
            for k, v in module.attributes[MEMORY].data.items()}


@pytest.mark.parametrize("relaxed", [False, True], ids=["int8", "relaxed"])
def test_fused_module_computes_the_same_bits(relaxed: bool) -> None:
    fused = pipeline(MODEL, "last-k=2", fuse=True, plan=False)
    plain = pipeline(MODEL, "last-k=2", fuse=False, plan=False)
    assert len(fused_ops(function(fused, "forward"))) == 1 and len(fused_ops(function(fused, "train_step"))) == 1
    assert not fused_ops(plain)
    rng = np.random.default_rng(3)
    images = rng.integers(-128, 128, (3, 16, 16, 3), dtype=np.int8)
    labels = rng.integers(0, 3, 3)
    a = run_forward(fused, images, interpreter=ModelInterpreter(fused, relaxed=relaxed))
    b = run_forward(plain, images, interpreter=ModelInterpreter(plain, relaxed=relaxed))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    loss_a, params_a = run_train_steps(fused, images, labels, 4, interpreter=ModelInterpreter(fused, relaxed=relaxed))
    loss_b, params_b = run_train_steps(plain, images, labels, 4, interpreter=ModelInterpreter(plain, relaxed=relaxed))
    np.testing.assert_array_equal(loss_a, loss_b)
    assert params_a.keys() == params_b.keys() == {"conv3.weight", "conv3.bias", "conv4.weight", "conv4.bias"}
    for name in params_a:
        np.testing.assert_array_equal(params_a[name], params_b[name])


@pytest.mark.parametrize(("scheme", "forward", "train_step"), [
    ("last-k=2", 1, 1),  # conv1 and conv2 frozen, no gradient through them
    ("last-k=3", 0, 0),  # conv2 trains: its weight gradient reads the expanded tensor
    ("last-k=4", 0, 0),  # conv1 trains
    (f"{LIT_INPUTS / 'inverted_residual_schemes.json'}#ir/stem", 1, 0),  # conv0 trains: masks of conv1/2 read
    ("full", 0, 0),
])
def test_which_pairs_are_fused(scheme: str, forward: int, train_step: int) -> None:
    module = pipeline(MODEL, scheme, fuse=True, plan=False)
    assert len(fused_ops(function(module, "forward"))) == forward
    assert len(fused_ops(function(module, "train_step"))) == train_step


def test_small_intermediate_is_not_fused() -> None:
    """Fusion pays only when the intermediate tensor is larger than the kernel's scratch (its ring)."""
    text = MODEL.read_text()
    module = load_module(text)
    FuseStreamingPass().apply(Context(), module)
    assert len(fused_ops(module)) == 1
    needed = buffer_size_fused_pointwise_depthwise((1, 16, 16, 4), (16, 1, 1, 4), (16, 3, 3, 1), (1, 8, 8, 16), (2, 2))
    assert needed < 16 * 16 * 16
    # the same block on a 2x2 image: a 64-byte intermediate, smaller than the ring it would need
    small = text.replace("16x16x", "2x2x").replace("8x8x", "1x1x").replace("kernel = array<i64: 8, 8>",
                                                                           "kernel = array<i64: 1, 1>")
    module = load_module(small)
    FuseStreamingPass().apply(Context(), module)
    assert not fused_ops(module)
    assert buffer_size_fused_pointwise_depthwise((1, 2, 2, 4), (16, 1, 1, 4), (16, 3, 3, 1), (1, 1, 1, 16),
                                                 (2, 2)) >= 2 * 2 * 16


def test_plan_verifies_and_drops_the_intermediate() -> None:
    fused = pipeline(MODEL, "last-k=2", fuse=True)
    plain = pipeline(MODEL, "last-k=2", fuse=False)
    check_module(fused)
    check_module(plain)
    train = function(fused, "train_step")
    (op,) = fused_ops(train)
    assert "qtrain.offsets" in op.attributes and len(op.attributes["qtrain.offsets"].get_values()) == 1
    assert memory(fused)["arena_bytes"] < memory(plain)["arena_bytes"]  # type: ignore[operator]
    # the memory report numbers layers as the unfused network does
    assert layer_numbers(train) == layer_numbers(function(plain, "train_step"))
    assert layer_numbers(train)["conv2.weight"] == 2 and layer_numbers(train)["conv4.bias"] == 4


def test_schemes_refuse_a_fused_network() -> None:
    """Schemes number the unfused network's convs: resolving one on a fused function is an error, not a shift."""
    module = pipeline(MODEL, "last-k=2", fuse=True, plan=False)
    with pytest.raises(SchemeError, match="run qtrain-fuse-streaming after qtrain-sparse-update"):
        network_layers(function(module, "forward"))


def test_emitter_refuses_a_trainable_weight_in_a_fused_op() -> None:
    from qtrain.lowering.emit_c import EmitError, emit_model

    module = pipeline(MODEL, "last-k=2", fuse=True)
    source, _ = emit_model(module)
    assert source.count("qtrain_fused_pointwise_depthwise_s8(&qtrain_ctx") == 2
    param = next(p for p in module.ops if isinstance(p, ParamOp) and p.sym_name.data == "conv1.weight")
    param.trainable = UnitAttr()
    with pytest.raises(EmitError, match="conv1.weight is trainable"):
        emit_model(module)


@pytest.mark.parametrize("model", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
def test_reference_models_49kb(model: str) -> None:
    """The 49 KB schemes train nothing in the early blocks: their expansions are fused, the plan verifies,
    the peak drops where an expansion set it, and the fused forward pass gives the unfused one's bits."""
    require_shared_models()
    from qtrain.frontends.tiny_training import import_tiny_training

    source = import_tiny_training(MODELS / f"{model}.pkl", num_classes=10)
    scheme = f"{MODELS / 'schemes.json'}#{model}/49kb"
    fused = pipeline(source, scheme, fuse=True)
    plain = pipeline(source, scheme, fuse=False)
    check_module(fused)
    ops = fused_ops(function(fused, "train_step"))
    assert ops, "no pair fused"
    first = ops[0]
    assert first.input.type.get_shape()[1:3] == (64, 64)  # type: ignore[attr-defined]  # the 64x64 expansion
    # every fused pair was a frozen 1x1 conv read only by a frozen depthwise conv in the unfused plan
    plain_convs = [o for o in function(plain, "train_step").walk() if isinstance(o, Conv2DOp)]
    assert len(plain_convs) - len([o for o in function(fused, "train_step").walk() if isinstance(o, Conv2DOp)]) \
        == 2 * len(ops)
    # the image + stem pair no longer sets the peak (the stem writes over the image rows it has read):
    # every model's expansions did, and fusing them lowers it
    assert memory(fused)["peak_sram_bytes"] < memory(plain)["peak_sram_bytes"]  # type: ignore[operator]
    assert memory(fused)["arena_bytes"] < memory(plain)["arena_bytes"]  # type: ignore[operator]
    assert layer_numbers(function(fused, "train_step")) == layer_numbers(function(plain, "train_step"))
    images = np.random.default_rng(0).integers(-128, 128, (1, 128, 128, 3), dtype=np.int8)
    np.testing.assert_array_equal(run_forward(fused, images)[0], run_forward(plain, images)[0])

