"""Reading and checking an ONNX model: the file, its opsets and ops, the graph's one input and one output.

Accepted: ai.onnx opsets 10..28 (plus com.microsoft version 1 for onnxruntime's contrib ops), only the
ops in `SUPPORTED_OPS`, one graph output, and one runtime input (initializers aside): a static
`[N, C, H, W]` image or `[N, F]` feature vector of FLOAT, INT8 or UINT8 whose batch may be symbolic
(it is fixed to 1). Calibration data for a float model is the `image` array of an `.npz`.

The imported `@forward` keeps int8 ends: a float graph input is quantized by the caller with
`qtrain.input_q` (`quantize_images`: float NCHW `[N, C, H, W]` or `[N, F]` -> int8 NHWC); a float graph
output is the int8 result dequantized with `qtrain.output_q` (the interpreter's `logits`).

Errors are `OnnxImportError` (a `qtrain.errors.UserError`) with a one-line message: the CLI prints it
and exits with status 2.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto
from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects import MAX_TENSOR_BYTES
from qtrain.dialects.qtrain import QuantParamsAttr
from qtrain.errors import UserError
from qtrain.files import NpzError, read_npz
from qtrain.frontends.builder import INPUT_Q_ATTR, quantize_real

SUPPORTED_OPSETS = range(10, 29)
"""ai.onnx opset versions accepted (10 introduced QuantizeLinear/QLinearConv; 28 is onnx 1.23's newest;
the ops used here only gained new data types after opset 21)."""
MS_DOMAIN = "com.microsoft"
SUPPORTED_OPS: dict[str, tuple[str, ...]] = {
    "": (
        "Add",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "Clip",
        "Concat",
        "Constant",
        "Conv",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "Flatten",
        "Gather",
        "Gemm",
        "GlobalAveragePool",
        "GroupNormalization",
        "HardSigmoid",
        "HardSwish",
        "Identity",
        "InstanceNormalization",
        "MatMul",
        "MaxPool",
        "Mul",
        "QLinearConv",
        "QLinearMatMul",
        "QuantizeLinear",
        "Range",
        "ReduceMean",
        "Relu",
        "Reshape",
        "Shape",
        "Sigmoid",
        "Slice",
        "Split",
        "Squeeze",
        "Sub",
        "Transpose",
        "Unsqueeze",
    ),
    MS_DOMAIN: ("QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearConcat", "QLinearGlobalAveragePool",
                "QLinearMul", "QLinearSigmoid"),
}


class OnnxImportError(UserError):
    """A model the importer cannot translate; the message is one line naming the cause."""


class OnnxImportWarning(UserWarning):
    """Something the importer did that the user should know about (calibration fallback, lossy step)."""


def supported_ops_text() -> str:
    ms = ", ".join(f"{MS_DOMAIN}.{op}" for op in SUPPORTED_OPS[MS_DOMAIN])
    return ", ".join(SUPPORTED_OPS[""]) + ", " + ms


def first_line(message: str) -> str:
    """The first non-blank line of an exception message (onnx and protobuf errors span many)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


# -- files ----------------------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Reads an ONNX file, with the tensors it stores as external data (their `location`s are resolved
    relative to the model file's folder, as the ONNX spec says, not to the current directory);
    OnnxImportError for unreadable, truncated or corrupt files and missing or short external data."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OnnxImportError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        raise OnnxImportError(
            f"{path}: not a valid ONNX protobuf (truncated or corrupt file?): {first_line(str(e)) or type(e).__name__}"
        ) from e
    if not model.HasField("graph") or not model.opset_import:
        raise OnnxImportError(f"{path}: not an ONNX model (no graph or no opset import; truncated or corrupt file?)")
    load_external_data(model, path.resolve().parent, str(path))
    return model


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The initializers (and Constant node values) whose data lives in another file."""
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            tensors += [attr.t] if attr.HasField("t") else list(attr.tensors)
    return [t for t in tensors if t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL]


def load_external_data(model: onnx.ModelProto, base_dir: Path, what: str) -> None:
    """Reads every external tensor of `model` from `base_dir` / its location, checking the file is there, stays
    inside `base_dir` and holds the bytes the tensor names."""
    from onnx.external_data_helper import ExternalDataInfo

    for tensor in external_tensors(model):
        info = ExternalDataInfo(tensor)
        location = (base_dir / info.location).resolve()
        if base_dir.resolve() not in location.parents:
            raise OnnxImportError(
                f"{what}: initializer '{tensor.name}' names external data outside the model's folder: {info.location}")
        try:
            with location.open("rb") as f:
                f.seek(int(info.offset or 0))
                length = int(info.length) if info.length else -1
                raw = f.read(length)
        except OSError as e:
            raise OnnxImportError(
                f"{what}: cannot read the external data of initializer '{tensor.name}' from {location}: "
                f"{e.strerror or e}") from e
        if length >= 0 and len(raw) != length:
            raise OnnxImportError(f"{what}: {location} holds {len(raw)} of the {length} bytes of initializer "
                                  f"'{tensor.name}' (truncated file?)")
        tensor.raw_data = raw
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def load_calibration(path: str | os.PathLike[str]) -> np.ndarray:
    """The `image` array of a calibration `.npz` (float NCHW)."""
    path = Path(path)
    try:
        data = read_npz(path, "calibration")
    except NpzError as e:
        raise OnnxImportError(str(e)) from None
    if "image" not in data:
        raise OnnxImportError(f"{path}: no 'image' array (keys: {', '.join(data) or 'none'})")
    return np.asarray(data["image"])


# -- the model -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphInput:
    """The graph's one runtime input."""

    name: str
    sizes: tuple[int, ...]  # [N, C, H, W] or [N, F], a symbolic batch as 1
    batch: int | None  # the batch size the model fixes; None when symbolic
    elem_type: int  # TensorProto.FLOAT, INT8 or UINT8


def check_model(model: onnx.ModelProto) -> int:
    """Checks that the importer supports `model` (opsets, ops, one output, one input, onnx's checker);
    returns its ai.onnx opset version. OnnxImportError for anything else."""
    if not model.HasField("graph") or not model.opset_import:
        raise OnnxImportError("not an ONNX model (no graph or no opset import; truncated or corrupt file?)")
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    version = versions.get("ai.onnx")
    if version is None:
        raise OnnxImportError("the model imports no ai.onnx opset")
    if version not in SUPPORTED_OPSETS:
        raise OnnxImportError(
            f"unsupported ai.onnx opset {version}; supported: {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    if MS_DOMAIN in versions and versions[MS_DOMAIN] != 1:
        raise OnnxImportError(f"unsupported {MS_DOMAIN} opset {versions[MS_DOMAIN]}; supported: 1")
    graph = model.graph
    unsupported: dict[str, tuple[int, str]] = {}
    for node in graph.node:
        domain = "" if node.domain in ("", "ai.onnx") else node.domain
        if node.op_type not in SUPPORTED_OPS.get(domain, ()):
            op = node.op_type if not domain else f"{domain}.{node.op_type}"
            count, first = unsupported.get(op, (0, node.name or (node.output[0] if node.output else "?")))
            unsupported[op] = (count + 1, first)
    if unsupported:
        listed = "; ".join(f"'{op}' x{count} (first: node '{first}')" for op, (count, first) in unsupported.items())
        raise OnnxImportError(f"unsupported ops: {listed}; supported ops: {supported_ops_text()}")
    stored_elsewhere = external_tensors(model)
    if stored_elsewhere:
        raise OnnxImportError(
            f"initializer '{stored_elsewhere[0].name}' stores its data in another file "
            f"({len(stored_elsewhere)} tensors do); import the model from its path (the data is read "
            "relative to the model file) or load it with onnx.load(path) first")
    if len(graph.output) != 1:
        raise OnnxImportError(f"the graph has {len(graph.output)} outputs; qtrain models have one")
    graph_input(graph)  # before the checker, whose messages about inputs are less specific
    try:
        # full_check adds strict type and shape inference: a weight of the wrong dtype, a declared shape
        # that contradicts the graph.
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # checker raises ValidationError, InferenceError and assorted C++ errors
        if not _deprecated_group_norm(model, version, str(e)):
            raise OnnxImportError(f"invalid ONNX model: {first_line(str(e))}") from e
    return version


def _deprecated_group_norm(model: onnx.ModelProto, version: int, message: str) -> bool:
    """onnx >= 1.19's checker refuses GroupNormalization-18 (deprecated by opset 21: per-group scale and bias
    were a spec bug), which older exporters wrote and onnxruntime still runs. Such a model is valid when the
    copy onnx's own version converter brings to opset 21 checks."""
    if not 18 <= version < 21 or "GroupNormalization is deprecated" not in message:
        return False
    try:
        onnx.checker.check_model(onnx.version_converter.convert_version(model, 21))
    except Exception:
        return False
    return True


def graph_input(graph: onnx.GraphProto) -> GraphInput:
    """The one runtime input and its sizes (a symbolic batch as 1); errors for anything else."""
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs) or "none"
        raise OnnxImportError(f"qtrain models take one image input; the graph's runtime inputs are {names}")
    info = inputs[0]
    if not info.type.HasField("tensor_type"):
        raise OnnxImportError(f"input '{info.name}' is not a tensor")
    ttype = info.type.tensor_type
    if ttype.elem_type not in (TensorProto.FLOAT, TensorProto.INT8, TensorProto.UINT8):
        raise OnnxImportError(
            f"input '{info.name}' has element type {TensorProto.DataType.Name(ttype.elem_type)}; "
            "supported: FLOAT, INT8, UINT8"
        )
    if not ttype.HasField("shape"):
        raise OnnxImportError(f"input '{info.name}' has no shape; qtrain needs a static [N, C, H, W] or [N, F] input")
    dims = list(ttype.shape.dim)
    if len(dims) not in (2, 4):
        raise OnnxImportError(
            f"input '{info.name}' has rank {len(dims)}; qtrain needs an image [N, C, H, W] or features [N, F]"
        )
    sizes: list[int] = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            sizes.append(d.dim_value)
        elif i == 0:
            sizes.append(1)  # a symbolic batch: fixed to 1
        else:
            what = f"'{d.dim_param}'" if d.HasField("dim_param") else "unknown"
            raise OnnxImportError(
                f"input '{info.name}' has a dynamic dimension ({what}) at index {i}; qtrain needs static "
                "C, H, W (only the batch dimension may be symbolic)"
            )
    if math.prod(sizes[1:]) * 4 > MAX_TENSOR_BYTES:
        raise OnnxImportError(f"input '{info.name}' of shape {sizes} is too large: one image must stay under "
                              f"{MAX_TENSOR_BYTES >> 20} MB")
    dim0 = dims[0]
    batch = dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else None
    return GraphInput(info.name, tuple(sizes), batch, ttype.elem_type)


# -- the imported model's input ------------------------------------------------------------------------------


def input_quant(module: ModuleOp) -> QuantParamsAttr:
    """`qtrain.input_q` of `@forward`: how real-valued images are quantized into its int8 input."""
    for op in module.body.block.ops:
        attr = op.attributes.get(INPUT_Q_ATTR)
        if isinstance(attr, QuantParamsAttr):
            return attr
    raise ValueError(f"the module has no function with a {INPUT_Q_ATTR} attribute")


def quantize_images(images: np.ndarray, quant: QuantParamsAttr | ModuleOp) -> np.ndarray:
    """Float NCHW `[N, C, H, W]` (or `[N, F]`) images -> the int8 NHWC `[N, H, W, C]` the forward takes."""
    q = input_quant(quant) if isinstance(quant, ModuleOp) else quant
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 2:
        x = x.reshape(x.shape[0], 1, 1, x.shape[1])
    elif x.ndim == 4:
        x = x.transpose(0, 2, 3, 1)
    else:
        raise ValueError(f"images must be [N, C, H, W] or [N, F], got shape {list(x.shape)}")
    return np.ascontiguousarray(quantize_real(x, q))
