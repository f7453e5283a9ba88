"""`qtrain.frontends.onnx.ptq`: post-training quantization of float models (the weight and bias contract,
calibration and its fallback); a float model quantized by our PTQ must keep its predictions.

Oracle: onnxruntime runs the float model; the numpy interpreter (`qtrain.interpreter`) the imported IR.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper
from onnx_testing import (
    DIGITS,
    forward,
    images,
    load_digits_split,
    params,
    quantized,
    run_ort,
    small_cnn,
)

from qtrain.dialects.qtrain import Conv2DOp
from qtrain.frontends.onnx import (
    OnnxImportError,
    OnnxImportWarning,
    import_onnx,
    input_quant,
    quantize_images,
)
from qtrain.frontends.onnx.oracle import exact_session
from qtrain.interpreter import run_forward

# -- weights and biases -------------------------------------------------------------------------------------


def test_ptq_weights_and_bias_follow_the_contract():
    """Per-channel symmetric weights (max |w| -> 127), bias = rint(b / (s_x s_w)); BN folded exactly."""
    model = small_cnn()
    module = import_onnx(model, calibration=images(16))
    inits = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    factor = inits["g1"] / np.sqrt(inits["v1"] + 1e-5)
    w_fold = inits["w1"] * factor[:, None, None, None]
    b_fold = (inits["b1"] - inits["m1"]) * factor + inits["be1"]
    conv0 = next(op for op in forward(module).walk() if isinstance(op, Conv2DOp))
    p = params(module)
    s_w = conv0.weight_q.scale_array().astype(np.float64)
    w_q = p["conv0.weight"].transpose(0, 3, 1, 2).astype(np.float64)  # OHWI -> OIHW
    assert np.abs(p["conv0.weight"]).reshape(8, -1).max(axis=1).tolist() == [127] * 8
    np.testing.assert_allclose(s_w, np.abs(w_fold).reshape(8, -1).max(axis=1) / 127, rtol=1e-6)
    assert np.all(np.abs(w_q * s_w[:, None, None, None] - w_fold) <= s_w[:, None, None, None] / 2 + 1e-9)
    s_x = np.float64(conv0.input_q.scale)
    np.testing.assert_array_equal(p["conv0.bias"], np.rint(b_fold / (s_x * s_w)).astype(np.int32))
    assert conv0.input_q == input_quant(module)


def test_float_model_ptq_close_to_float(tmp_path: Path):
    model = small_cnn()
    module = import_onnx(model, calibration=images(64, seed=3))
    x = images(64)
    _, logits = run_forward(module, quantize_images(x, module))
    ref = run_ort(model, x)
    assert np.abs(logits - ref).max() <= 0.1 * np.abs(ref).max()
    assert (logits.argmax(1) == ref.argmax(1)).mean() >= 0.9


# -- the digits CNN: PTQ keeps the float model's predictions ---------------------------------------------------


def test_digits_cnn_ptq_agrees_with_float_onnxruntime(tmp_path: Path):
    """Calibrated on 256 training images, the int8 import agrees with onnxruntime's float top-1 on
    >= 98% of the 500 held-out digits (measured: 100%)."""
    model_path = DIGITS / "digits_cnn.onnx"
    assert model_path.stat().st_size < 300_000
    x_train, _, x_test, y_test = load_digits_split()
    module = import_onnx(model_path, calibration=x_train[:256])
    _, logits = run_forward(module, quantize_images(x_test, module))
    session = exact_session(model_path)
    ref = session.run(None, {"image": x_test})[0]
    agreement = float((logits.argmax(1) == ref.argmax(1)).mean())
    float_acc = float((ref.argmax(1) == y_test).mean())
    int8_acc = float((logits.argmax(1) == y_test).mean())
    print(f"digits: top-1 agreement {agreement:.4f}, float accuracy {float_acc:.4f}, int8 accuracy {int8_acc:.4f}")
    assert agreement >= 0.98
    assert int8_acc >= float_acc - 0.02


# -- calibration -----------------------------------------------------------------------------------------------


def test_missing_calibration_warns_and_uses_random_images():
    with pytest.warns(OnnxImportWarning, match=r"no calibration data .* 32 random N\(0, 1\) images \(seed 0\)"):
        module = import_onnx(small_cnn())
    assert input_quant(module).scale > 0


def test_bad_calibration_shape_is_an_error():
    with pytest.raises(OnnxImportError, match=r"calibration images must be float \[N, 1, 8, 8\]"):
        import_onnx(small_cnn(), calibration=np.zeros((4, 8, 8, 1), np.float32))


def test_quantized_model_needs_no_calibration(tmp_path: Path):
    path = quantized(tmp_path, small_cnn(), "qoperator")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxImportWarning)
        import_onnx(path)
