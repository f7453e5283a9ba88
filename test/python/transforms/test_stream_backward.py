"""qtrain-stream-backward: which chains it streams, that the golden model trains exactly as the unstreamed
module does (fp32 gradients: the same numpy sums), that the plan drops the expanded gradient and verifies,
and that auto never plans above on/off."""

from __future__ import annotations

import numpy as np
import pytest
from test_plan_memory import check_module
from testpaths import LIT_INPUTS, MODELS, require_shared_models
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import Conv2DInputGradOp
from qtrain.dialects.qtrain.streamed_grad import StreamedExpansionInputGradOp
from qtrain.interpreter import load_module, run_train_steps
from qtrain.transforms.pipeline import apply_passes, training_passes
from qtrain.transforms.stream_backward import StreamBackwardPass

MODEL = LIT_INPUTS / "inverted_residual.mlir"


def train_step(module: ModuleOp) -> func.FuncOp:
    return next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "train_step")


def streamed_ops(module: ModuleOp) -> list[StreamedExpansionInputGradOp]:
    return [o for o in train_step(module).walk() if isinstance(o, StreamedExpansionInputGradOp)]


def pipeline(source: object, scheme: str, mode: str, precision: str = "f32", plan: bool = True) -> ModuleOp:
    module = load_module(source) if not isinstance(source, ModuleOp) else source.clone()
    return apply_passes(module, training_passes(scheme, stream_backward=mode, grad_precision=precision, plan=plan,
                                                sram_kb=1 << 20))


def memory(module: ModuleOp) -> dict[str, int]:
    from qtrain.dialects.qtrain.contract import MEMORY

    return {k: v.value.data for k, v in module.attributes[MEMORY].data.items() if hasattr(v, "value")}


def test_bias_only_streams_the_block_and_trains_exactly_as_unstreamed():
    on, off = pipeline(MODEL, "bias-only", "on"), pipeline(MODEL, "bias-only", "off")
    (op,) = streamed_ops(on)
    assert op.bias_grad is not None  # bias-only trains the expansion's bias: a per-channel sum, streamed
    assert not streamed_ops(off)
    depthwise = [o for o in train_step(on).walk() if isinstance(o, Conv2DInputGradOp) and o.groups.value.data > 1]
    assert not depthwise  # the expanded-resolution gradient is gone
    images = np.random.default_rng(0).integers(-128, 128, (3, 16, 16, 3), dtype=np.int8)
    labels = np.array([0, 2, 1])
    loss_on, params_on = run_train_steps(on, images, labels, 3)
    loss_off, params_off = run_train_steps(off, images, labels, 3)
    np.testing.assert_array_equal(loss_on, loss_off)
    for name in params_off:
        np.testing.assert_array_equal(params_on[name], params_off[name], err_msg=name)
    check_module(on)
    assert memory(on)["arena_bytes"] < memory(off)["arena_bytes"]


def test_a_trained_weight_keeps_the_block_unstreamed():
    """full trains both convs' weights: their weight gradients read the expanded gradients."""
    assert not streamed_ops(pipeline(MODEL, "full", "on"))


def test_auto_plans_no_more_than_on_and_off():
    require_shared_models()
    from qtrain.frontends.tiny_training import import_tiny_training

    module = import_tiny_training(MODELS / "proxyless-w0.3.pkl", num_classes=10)
    peaks = {mode: memory(pipeline(module, "bias-only", mode, "bf16"))["peak_sram_bytes"]
             for mode in ("auto", "on", "off")}
    assert peaks["auto"] == min(peaks["on"], peaks["off"])
    assert peaks["on"] < peaks["off"]
    streamed = pipeline(module, "bias-only", "auto", "bf16")
    check_module(streamed)
    assert len(streamed_ops(streamed)) >= 10
    assert peaks["auto"] <= 256 * 1024  # issue 14: proxyless-w0.3 bias-only fits 256 KB


def test_bad_mode_is_refused():
    module = pipeline(MODEL, "bias-only", "off", plan=False)
    with pytest.raises(PassFailedException, match="mode must be one of auto, on, off"):
        StreamBackwardPass(mode="sometimes").apply(Context(), module)  # type: ignore[arg-type]
