"""Post-training quantization: the activation ranges and the weight and bias integers a float model lacks.

- Weights: symmetric per output channel, s_w[c] = max|w_c| / 127, values in [-127, 127] (a quantized
  model's own integers are kept when it has them, see `translate`). Bias: int32 at s_x * s_w[c].
- Activations: per tensor, asymmetric, from the min/max (widened to include 0) of every unquantized
  tensor over the calibration images, run through the float model (BN folded; `evaluate`).
- Calibration images: `--calibration DATA.npz`, key `image`, float NCHW `[N, C, H, W]` (or `[N, F]` for a
  rank-2 input), preprocessed exactly like the model's input. Without them, a warning and the fallback:
  32 images of i.i.d. N(0, 1) values (seed 0), i.e. ranges fit for standardized inputs; for a model whose
  input quantization is known (a quantized model with a few unquantized tensors), 32 images uniform
  over the input's int8 range instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from qtrain.dialects.qtrain.activations import function_f64
from qtrain.dialects.qtrain.maxpool import maxpool
from qtrain.frontends.builder import INT32_MAX, INT32_MIN, range_quant
from qtrain.frontends.onnx.graph import (
    QUANT_PRESERVING,
    AddLayer,
    ConcatLayer,
    ConvLayer,
    Edge,
    GatherLayer,
    GroupNormLayer,
    Layer,
    LutLayer,
    MaxPoolLayer,
    MulLayer,
    PoolLayer,
    RequantLayer,
)
from qtrain.frontends.onnx.model import OnnxImportError, OnnxImportWarning

CALIBRATION_FALLBACK_IMAGES = 32
CALIBRATION_BATCH = 64


# -- numpy float reference of the intermediate graph ---------------------------------------------------------


def conv_nhwc_float(
    x: np.ndarray, w_oihw: np.ndarray, b: np.ndarray, strides: Sequence[int], pads: Sequence[int], groups: int
) -> np.ndarray:
    """Float conv on NHWC input [N, H, W, C] with OIHW weights; returns NHWC."""
    n, h, w, c = x.shape
    o, cg, kh, kw = w_oihw.shape
    pt, pl, pb, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = (h + pt + pb - kh) // strides[0] + 1, (w + pl + pr - kw) // strides[1] + 1
    if groups == 1 and kh == kw == 1:  # pointwise: one matrix product
        return xp[:, : strides[0] * oh : strides[0], : strides[1] * ow : strides[1]] @ w_oihw[:, :, 0, 0].T + b
    if groups == c == o and cg == 1:  # depthwise: one multiply-add per tap
        y = np.zeros((n, oh, ow, o))
        sh, sw = strides
        for i in range(kh):
            for j in range(kw):
                y += xp[:, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] * w_oihw[:, 0, i, j]
        return y + b
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))  # N, OH', OW', C, KH, KW
    win = win[:, :: strides[0], :: strides[1]]
    oh, ow = win.shape[1], win.shape[2]
    win = win.reshape(n, oh, ow, groups, cg, kh, kw)
    wg = w_oihw.reshape(groups, o // groups, cg, kh, kw)
    y = np.einsum("nhwgcij,gocij->nhwgo", win, wg, optimize=True).reshape(n, oh, ow, o)
    return y + b


def avgpool_nhwc_float(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int]) -> np.ndarray:
    win = np.lib.stride_tricks.sliding_window_view(x, tuple(kernel), axis=(1, 2))
    return win[:, :: strides[0], :: strides[1]].mean(axis=(-2, -1))



def group_norm_nhwc_float(x: np.ndarray, groups: int, epsilon: float) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) per sample and group of consecutive channels (biased variance), NHWC."""
    n, h, w, c = x.shape
    g = x.reshape(n, h * w, groups, c // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + epsilon)).reshape(x.shape)


def evaluate(layers: list[Layer], input_edge: Edge, images_nhwc: np.ndarray) -> dict[int, np.ndarray]:
    """Float (unquantized) values of every edge for float NHWC images, keyed by id(edge)."""
    values: dict[int, np.ndarray] = {id(input_edge): images_nhwc}
    for layer in layers:
        if isinstance(layer, ConvLayer):
            y = conv_nhwc_float(
                values[id(layer.input)], layer.w_real, layer.b_real, layer.strides, layer.pads, layer.groups
            )
            y = np.clip(y, *layer.act)
        elif isinstance(layer, AddLayer):
            y = np.clip(values[id(layer.lhs)] + values[id(layer.rhs)], *layer.act)
        elif isinstance(layer, PoolLayer):
            y = avgpool_nhwc_float(values[id(layer.input)], layer.kernel, layer.strides)
        elif isinstance(layer, RequantLayer):
            y = np.clip(values[id(layer.input)], *layer.act)
        elif isinstance(layer, LutLayer):
            y = function_f64(layer.function, values[id(layer.input)], layer.params)
        elif isinstance(layer, MulLayer):
            y = values[id(layer.lhs)] * values[id(layer.rhs)]
        elif isinstance(layer, MaxPoolLayer):
            h, w, _ = layer.output.shape
            y = maxpool(values[id(layer.input)], (h, w), layer.kernel, layer.strides, layer.pads[:2])
        elif isinstance(layer, ConcatLayer):
            y = np.concatenate([values[id(e)] for e in layer.parts], axis=-1)
        elif isinstance(layer, GatherLayer):
            y = values[id(layer.input)][..., list(layer.indices)]
        elif isinstance(layer, GroupNormLayer):
            y = np.clip(group_norm_nhwc_float(values[id(layer.input)], layer.groups, layer.epsilon) * layer.gamma
                        + layer.beta, *layer.act)
        else:
            raise AssertionError(layer)
        values[id(layer.output)] = y
    return values


# -- activation ranges ------------------------------------------------------------------------------------------


def calibrate(layers: list[Layer], input_edge: Edge, input_flat: bool, calibration: np.ndarray | None) -> None:
    """Gives every edge still without a quantization (the graph input and the layers' outputs) the
    range it takes over the calibration images. `input_flat`: the ONNX input is `[N, F]`."""
    if calibration is None:
        # A quantized model whose tail onnxruntime's quantizer left in float (the dynamo exporter's final
        # ReduceMean): a mean of int8 values stays within its input's range, so the input's quantization
        # represents it to half a step without guessing a range from random images.
        for layer in layers:
            if isinstance(layer, PoolLayer) and layer.output.quant is None and layer.input.quant is not None:
                layer.output.quant = layer.input.quant
    edges = [input_edge, *(layer.output for layer in layers if not isinstance(layer, QUANT_PRESERVING))]
    missing = [e for e in edges if e.quant is None]
    if not missing:
        share_quantization(layers, set())
        return
    images = calibration_images(input_edge, input_flat, calibration, missing)
    lo = {id(e): math.inf for e in missing}
    hi = {id(e): -math.inf for e in missing}
    for start in range(0, images.shape[0], CALIBRATION_BATCH):
        values = evaluate(layers, input_edge, images[start : start + CALIBRATION_BATCH])
        for e in missing:
            v = values[id(e)]
            lo[id(e)] = min(lo[id(e)], float(v.min()))
            hi[id(e)] = max(hi[id(e)], float(v.max()))
    for e in missing:
        if not (np.isfinite(lo[id(e)]) and np.isfinite(hi[id(e)])):
            raise OnnxImportError(f"calibration produced non-finite values for tensor '{e.name}'")
        e.quant = range_quant(lo[id(e)], hi[id(e)])
    share_quantization(layers, {id(e) for e in missing})


def share_quantization(layers: list[Layer], calibrated: set[int]) -> None:
    """Quantizations that follow from others: a max pool or channel gather keeps its input's; the inputs
    of a concat that the calibration quantized and that feed only the concat take the concat's (so no
    requantization is needed; the concat's range covers theirs)."""
    uses: dict[int, int] = {}
    for layer in layers:
        for e in layer.inputs():
            uses[id(e)] = uses.get(id(e), 0) + 1
    for layer in layers:
        if isinstance(layer, ConcatLayer):
            for part in layer.parts:
                if id(part) in calibrated and uses[id(part)] == 1 and not isinstance(part.producer, QUANT_PRESERVING):
                    part.quant = layer.output.quant
    for layer in layers:
        if isinstance(layer, QUANT_PRESERVING) and layer.output.quant is None:
            layer.output.quant = layer.input.quant


def calibration_images(
    input_edge: Edge, input_flat: bool, calibration: np.ndarray | None, missing: list[Edge]
) -> np.ndarray:
    """Calibration images as float NHWC [N, H, W, C]: the given ones, checked, or the fallback."""
    h, w, c = input_edge.shape
    expected = (c,) if input_flat else (c, h, w)
    if calibration is not None:
        data = np.asarray(calibration)
        if not np.issubdtype(data.dtype, np.floating) or tuple(data.shape[1:]) != expected or data.shape[0] < 1:
            raise OnnxImportError(
                f"calibration images must be float [N, {', '.join(map(str, expected))}] "
                f"({'[N, F]' if input_flat else 'NCHW'}), got {data.dtype} {list(data.shape)}"
            )
        if not np.all(np.isfinite(data)):
            raise OnnxImportError("calibration images contain NaN or infinity")
        data = data.astype(np.float64)
        return data.reshape(-1, 1, 1, c) if input_flat else data.transpose(0, 2, 3, 1)
    rng = np.random.default_rng(0)
    shape = (CALIBRATION_FALLBACK_IMAGES, h, w, c)
    quant = input_edge.quant
    names = ", ".join(f"'{e.name}'" for e in missing[:3]) + (", ..." if len(missing) > 3 else "")
    if quant is None:
        warnings.warn(
            f"no calibration data (--calibration): activation ranges of {names} come from "
            f"{CALIBRATION_FALLBACK_IMAGES} random N(0, 1) images (seed 0); accuracy depends on how well that "
            "matches the real inputs",
            OnnxImportWarning,
            stacklevel=2,
        )
        return rng.standard_normal(shape)
    warnings.warn(
        f"no calibration data (--calibration): activation ranges of {names} come from "
        f"{CALIBRATION_FALLBACK_IMAGES} random images uniform over the input's int8 range (seed 0)",
        OnnxImportWarning,
        stacklevel=2,
    )
    codes = rng.integers(-128, 128, size=shape)
    return (codes - quant.zp) * quant.scale


# -- weights and biases ------------------------------------------------------------------------------------------


def conv_integers(layer: ConvLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The conv's int8 OIHW weights, float32 per-channel weight scales and int32 bias (at s_x * s_w[c]):
    the model's own integers when it has them (and its bias is at that scale), otherwise quantized here.
    Needs the input's quantization (known after `calibrate`)."""
    in_q = layer.input.quant
    assert in_q is not None
    o = layer.w_real.shape[0]
    if layer.w_int is not None and layer.w_scale is not None:
        w_q = layer.w_int
        w_scale = layer.w_scale.astype(np.float32)
    else:
        amax = np.abs(layer.w_real).reshape(o, -1).max(axis=1)
        w_scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        w_q = np.clip(np.rint(layer.w_real / w_scale.astype(np.float64)[:, None, None, None]), -127, 127)
    bias_scale = np.float64(np.float32(in_q.scale)) * w_scale.astype(np.float64)
    if (
        layer.b_int is not None
        and layer.b_scale is not None
        and np.allclose(layer.b_scale, bias_scale, rtol=1e-6, atol=0)
    ):
        b_q = layer.b_int
    else:
        b_q = np.rint(layer.b_real / bias_scale)
    if b_q.size and (b_q.min() < INT32_MIN or b_q.max() > INT32_MAX):
        warnings.warn(f"{layer.source}: bias saturated to int32", OnnxImportWarning, stacklevel=2)
        b_q = np.clip(b_q, INT32_MIN, INT32_MAX)
    return w_q.astype(np.int8), w_scale, b_q.astype(np.int32)
