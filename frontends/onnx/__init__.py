"""ONNX importer: float, QDQ and QOperator CNNs -> forward-only qtrain IR.

One module per job:
- `model`: reading and checking the model (the file, opsets, supported ops, the graph's one input and
  one output), calibration `.npz` files, `OnnxImportError` / `OnnxImportWarning`, and how callers
  quantize images for the imported `@forward` (`input_quant`, `quantize_images`);
- `translate`: ONNX nodes -> qtrain IR (`OnnxImporter` and its per-op handlers, `import_onnx`), through
  the intermediate graph of `graph`;
- `ptq`: post-training quantization of what a float model leaves unquantized (calibration, activation
  ranges, weights and biases).

Output (see `frontends/builder.py`): module-level `qtrain.param`s `conv{L}.weight` (int8 OHWI, symmetric
per-output-channel scales) and `conv{L}.bias` (int32 at scale s_x * s_w[c]; every conv gets one, zeros
when the model has none, so bias-only schemes can train it), L counting convs in forward order (a
Gemm/MatMul classifier is a conv too), and `func.func @forward(%image: tensor<1xHxWxCxi8>) ->
tensor<1xKxi8>` carrying `qtrain.input_q` / `qtrain.output_q`.

Supported models (ai.onnx opsets 10..28, plus com.microsoft version 1 for onnxruntime's contrib ops):

| ONNX                                               | qtrain                                                   |
| -------------------------------------------------- | -------------------------------------------------------- |
| Conv (+ BatchNormalization, + Relu / Clip)         | `qtrain.conv2d` (BN folded, activation as `clamp`)       |
| Gemm, MatMul (+ Add of a constant vector)          | `qtrain.conv2d` with a kernel covering the whole input   |
| Add (+ Relu / Clip)                                | `qtrain.add`                                             |
| GlobalAveragePool, AveragePool (no padding)        | `qtrain.avgpool`                                         |
| Flatten, Reshape (flatten / unflatten only)        | nothing (a view), `qtrain.reshape` for the output        |
| QuantizeLinear, DequantizeLinear                   | the quantization of the tensor they sit on               |
| QLinearConv, QLinearMatMul                         | `qtrain.conv2d` (bit-exact integer weights and bias)     |
| com.microsoft QLinearAdd, QLinearGlobalAveragePool,| `qtrain.add`, `qtrain.avgpool`, `qtrain.conv2d`          |
| QLinearAveragePool, QGemm                          |                                                          |
| GroupNormalization (opset 18: per-group scale/bias;| `qtrain.group_norm` (gamma/beta fp32 params `gn{G}.*`;  |
| 21: per channel), InstanceNormalization, PyTorch's | a following Mul / Add of a per-channel constant folds    |
| GroupNorm export: Reshape [N, G, -1] ->            | into gamma and beta, a Relu / Clip into its clamp)       |
| InstanceNormalization -> Reshape back (a constant  |                                                          |
| or Shape) -> Mul -> Add                            |                                                          |
| Relu / Clip with no foldable producer              | `qtrain.avgpool` 1x1 (a requantization whose saturation  |
|                                                    | implements the range)                                    |
| HardSwish, HardSigmoid, Sigmoid, x * Sigmoid(x),   | `qtrain.lut` (a 256-entry int8 table, SiLU fused in      |
| com.microsoft QLinearSigmoid                       | float models; bit-exact with onnxruntime's kernels)      |
| Mul (same shape, or SE's [N, C, 1, 1] factor),     | `qtrain.mul` (onnxruntime's QLinearMul arithmetic); by a |
| com.microsoft QLinearMul                           | per-channel constant: folded into the producing conv     |
| ReduceMean over H and W (the dynamo exporter's     | `qtrain.avgpool` (global)                                |
| global pooling), keepdims 0 or 1                   |                                                          |
| MaxPool (pads, ceil_mode)                          | `qtrain.maxpool` (keeps its input's quantization)        |
| Concat (channels), com.microsoft QLinearConcat     | `qtrain.concat` (+ `qtrain.lut` identity requantization) |
| Split / Slice on channels, channel shuffle         | `qtrain.gather_channels`                                 |
| (Reshape [N, g, C/g, H, W], Transpose, Reshape)    |                                                          |
| Shape, Gather, Div, Sub, Cast, Unsqueeze, ... on   | folded at import (the legacy exporter's shape arithmetic)|
| constants                                          |                                                          |
| Identity, Dropout, Constant                        | nothing                                                  |

Tensors stored as external data (the dynamo exporter's weights) are read from files next to the model.
A model with unsupported ops fails with one error listing each of them, its count and its first node.

Layout, the quantization of QOperator / QDQ models and the folding of activations: `translate`. The
PTQ of float models and its calibration fallback: `ptq`.

Errors are `OnnxImportError` (a `qtrain.errors.UserError`) with a one-line message (the CLI prints it
and exits with status 2).
"""

from qtrain.frontends.onnx.model import (
    MS_DOMAIN,
    SUPPORTED_OPS,
    SUPPORTED_OPSETS,
    OnnxImportError,
    OnnxImportWarning,
    input_quant,
    load_calibration,
    load_model,
    quantize_images,
    supported_ops_text,
)
from qtrain.frontends.onnx.translate import OnnxImporter, import_onnx

__all__ = [
    "MS_DOMAIN",
    "SUPPORTED_OPS",
    "SUPPORTED_OPSETS",
    "OnnxImportError",
    "OnnxImportWarning",
    "OnnxImporter",
    "import_onnx",
    "input_quant",
    "load_calibration",
    "load_model",
    "quantize_images",
    "supported_ops_text",
]
