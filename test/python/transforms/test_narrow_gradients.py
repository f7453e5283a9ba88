"""qtrain-narrow-gradients: which gradients become bf16, that the rest of the pipeline takes them, and that
the golden model rounds exactly the stored values (training against fp32 gradients stays close)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from testpaths import LIT_INPUTS
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType, bf16, f32
from xdsl.utils.exceptions import PassFailedException

from qtrain import numerics
from qtrain.dialects.qtrain import (
    BiasGradOp,
    Conv2DInputGradOp,
    Conv2DWeightGradOp,
    CrossEntropyGradOp,
    GradAccumulateOp,
    GradConvertOp,
    RequantGradOp,
    SGDUpdateOp,
)
from qtrain.interpreter import load_module, run_train_steps
from qtrain.transforms.narrow_gradients import NarrowGradientsPass
from qtrain.transforms.pipeline import apply_passes, training_passes


def train_step(module: ModuleOp) -> func.FuncOp:
    return next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "train_step")


def element(value) -> object:  # type: ignore[no-untyped-def]
    t = value.type
    return t.element_type if isinstance(t, TensorType) else None


def narrowed(path: object, scheme: str, precision: str = "bf16") -> ModuleOp:
    return apply_passes(load_module(path), training_passes(scheme, grad_precision=precision, plan=False))


def test_f32_leaves_the_module_as_it_is():
    plain = narrowed(LIT_INPUTS / "tiny_model.mlir", "full", "f32")
    again = plain.clone()
    NarrowGradientsPass(precision="f32").apply(Context(), again)
    assert str(again) == str(plain)
    assert not any(element(v) == bf16 for op in plain.walk() for v in op.results)


def test_activation_gradients_narrow_and_what_a_weight_gradient_reads_stays_fp32():
    module = narrowed(LIT_INPUTS / "tiny_model.mlir", "full")
    ops = list(train_step(module).body.block.ops)
    assert element(next(o for o in ops if isinstance(o, CrossEntropyGradOp)).result) == bf16
    # each layer's g_acc is read by its weight gradient, which has only an fp32 kernel: it stays fp32 and
    # is never copied; the input gradients computed from it are bf16 again
    for op in ops:
        if isinstance(op, Conv2DWeightGradOp):
            assert element(op.grad) == f32 and isinstance(op.grad.owner, RequantGradOp)
            assert element(op.grad.owner.grad) == bf16  # read bf16, written fp32 (kernel requant_grad_bf16_f32)
    assert any(isinstance(o, Conv2DInputGradOp) and element(o.result) == bf16 for o in ops)
    # a trained depthwise weight's input gradient has fp32 kernels only: its result is fp32, converted
    # only where a grad_accumulate meets a bf16 gradient
    for o in ops:
        if isinstance(o, GradConvertOp):
            assert all(isinstance(u.operation, GradAccumulateOp) for u in o.result.uses)
        if isinstance(o, Conv2DInputGradOp) and o.groups.value.data > 1:
            assert element(o.result) == f32 and element(o.grad) == f32
    for op in ops:  # parameter gradients are fp32
        if isinstance(op, SGDUpdateOp | BiasGradOp):
            assert element(op.results[0] if op.results else op.grad) == f32


def test_bias_only_keeps_every_activation_gradient_bf16_but_a_trained_weights_input():
    module = narrowed(LIT_INPUTS / "inverted_residual.mlir", "bias-only")
    ops = list(train_step(module).body.block.ops)
    weight_grad_reads = {o.grad for o in ops if isinstance(o, Conv2DWeightGradOp)}  # the classifier's, if any
    grads = [o for o in ops if isinstance(o, RequantGradOp | Conv2DInputGradOp)
             and o.results[0] not in weight_grad_reads]
    assert len(grads) >= 6 and all(element(o.results[0]) == bf16 for o in grads)


def test_golden_model_stores_rounded_values_and_trains_like_fp32():
    images = np.random.default_rng(0).integers(-128, 128, (4, 8, 8, 3), dtype=np.int8)
    labels = np.array([0, 1, 2, 1])
    runs = {}
    for precision in ("f32", "bf16"):
        module = narrowed(LIT_INPUTS / "tiny_model.mlir", "full", precision)
        runs[precision] = run_train_steps(module, images, labels, 4)
    (loss32, p32), (loss16, p16) = runs["f32"], runs["bf16"]
    assert any(not np.array_equal(p16[k], p32[k]) for k in p32)  # the rounding is really applied
    np.testing.assert_allclose(loss16, loss32, rtol=0.02)
    for name in p32:
        scale = float(np.abs(p32[name]).max()) or 1.0
        assert float(np.abs(p16[name].astype(np.float64) - p32[name]).max()) <= 0.05 * scale + 1, name


def test_each_op_stores_its_fp32_result_rounded():
    """The golden model of an op writing bf16 is its fp32 golden model rounded once (relaxed mode keeps it)."""
    from types import SimpleNamespace

    module = narrowed(LIT_INPUTS / "tiny_model.mlir", "full")
    rng = np.random.default_rng(5)
    checked = 0
    for op in train_step(module).body.block.ops:
        if isinstance(op, RequantGradOp) and element(op.result) == bf16 and op.mask is None:
            g = numerics.round_bf16(rng.standard_normal(op.grad.type.get_shape()).astype(np.float32))
            (got,) = op.run_golden(SimpleNamespace(relaxed=False), (g,))
            want = numerics.round_bf16(numerics.requant_grad(g, None, op.multiplier.as_array()))
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
            (relaxed,) = op.run_golden(SimpleNamespace(relaxed=True), (rng.standard_normal(g.shape),))
            assert not np.array_equal(relaxed, numerics.round_bf16(relaxed))
            checked += 1
    assert checked


def test_bad_precision_is_refused():
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    apply_passes(module, training_passes("full", plan=False))
    with pytest.raises(PassFailedException, match="precision must be one of f32, bf16"):
        NarrowGradientsPass(precision="f16").apply(Context(), module)  # type: ignore[arg-type]


def test_qtrain_opt_runs_the_pass(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "qtrain.tools.qtrain_opt", str(LIT_INPUTS / "tiny_model.mlir"), "-p",
         "qtrain-autodiff,qtrain-dead-gradient-elim,qtrain-narrow-gradients{precision=bf16}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "qtrain.cross_entropy_grad" in result.stdout and "xbf16>" in result.stdout
