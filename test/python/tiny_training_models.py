"""The tiny-training reference models for the tests of their importer and of the ONNX exporter: the three
MCUNetV3 models (read from ../shared/models/tiny-training; tests skip when it is absent), a small
synthetic model in the same pickle format, and onnxruntime as the oracle.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from testpaths import require_shared_models
from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects.qtrain import Conv2DOp
from qtrain.frontends.onnx.oracle import exact_session
from qtrain.frontends.tiny_training import ReferenceModel, forward_function, import_tiny_training, load_pkl, parse_model

MODEL_NAMES = ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"]


def models_dir() -> Path:
    return require_shared_models()


def convs(module: ModuleOp) -> list[Conv2DOp]:
    return [op for op in forward_function(module).walk() if isinstance(op, Conv2DOp)]


def sample_images(shape: tuple[int, int, int], count: int, seed: int) -> np.ndarray:
    """`count` uniformly random int8 images plus three structured ones (all -128, all 127, a ramp)."""
    rng = np.random.default_rng(seed)
    random = rng.integers(-128, 128, size=(count, *shape), dtype=np.int8)
    h, w, c = shape
    ramp = np.broadcast_to(np.linspace(-128, 127, w).astype(np.int8)[None, :, None], shape)
    special = np.stack([np.full(shape, -128, np.int8), np.full(shape, 127, np.int8), ramp])
    return np.concatenate([random, special])


def ort_forward(onnx_path: Path, images_nhwc: np.ndarray) -> np.ndarray:
    session = exact_session(onnx_path)
    rows = [
        session.run(None, {"image": np.ascontiguousarray(img[None].transpose(0, 3, 1, 2))})[0]
        for img in images_nhwc
    ]
    return np.concatenate(rows).astype(np.int8)


def write_torch_zip(path: Path, obj: Any, folder: str = "archive") -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{folder}/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr(f"{folder}/version", "3\n")
    return path


def synthetic_conv(
    rng: np.random.Generator, cin: int, cout: int, k: int, stride: int, groups: int, size: int,
    xq: tuple[float, int], yq: tuple[float, int],
) -> dict[str, Any]:
    weight = rng.integers(-127, 128, size=(cout, cin // groups, k, k), dtype=np.int8)
    return {
        "in_channel": cin, "out_channel": cout, "in_shape": size, "out_shape": (size + 2 * (k // 2) - k) // stride + 1,
        "kernel_size": (k, k), "stride": stride, "groups": groups, "depthwise": groups > 1, "act": None,
        "params": {
            "weight": weight,
            "bias": rng.integers(-3000, 3000, size=cout, dtype=np.int32),
            "x_scale": xq[0], "x_zero": xq[1], "y_scale": yq[0], "y_zero": yq[1],
            "w_scales": rng.uniform(0.002, 0.02, size=cout).astype(np.float32),
        },
    }


def synthetic_model(seed: int = 0) -> dict[str, Any]:
    """8x8x3 input; first conv; a block without pointwise1 and with a residual; a block with
    pointwise1 and stride 2; a 12-row classifier. The quantization chain is consistent."""
    rng = np.random.default_rng(seed)
    q_in, relu, a, b, s, c = (2 / 255, 0), (6 / 255, -128), (0.05, 3), (0.07, -5), (0.06, 1), (0.09, -2)
    first = synthetic_conv(rng, 3, 4, 3, 2, 1, 8, q_in, relu)
    block0 = {
        "pointwise1": None,
        "depthwise": synthetic_conv(rng, 4, 4, 3, 1, 4, 4, relu, relu),
        "pointwise2": synthetic_conv(rng, 4, 4, 1, 1, 1, 4, relu, b),
        "residual": {"in_channel": 4, "in_shape": 4, "params": {"x_scale": relu[0], "x_zero": relu[1],
                                                                "y_scale": s[0], "y_zero": s[1]}},
        "se": None,
    }
    block1 = {
        "pointwise1": synthetic_conv(rng, 4, 8, 1, 1, 1, 4, s, relu),
        "depthwise": synthetic_conv(rng, 8, 8, 5, 2, 8, 4, relu, relu),
        "pointwise2": synthetic_conv(rng, 8, 6, 1, 1, 1, 2, relu, a),
        "residual": None,
        "se": None,
    }
    classifier = synthetic_conv(rng, 6, 12, 1, 1, 1, 1, a, c)
    for key in ("in_shape", "out_shape", "act", "depthwise"):
        classifier.pop(key)
    return {"first_conv": first, "blocks": [block0, block1], "feature_mix": None, "classifier": classifier}


@dataclass
class Imported:
    name: str
    raw: dict[str, Any]
    model: ReferenceModel
    module: ModuleOp


def load_reference(name: str) -> Imported:
    """One of the three reference models, loaded, parsed and imported with a 10-class head."""
    path = models_dir() / f"{name}.pkl"
    raw = load_pkl(path)
    return Imported(name, raw, parse_model(raw), import_tiny_training(path, num_classes=10))
