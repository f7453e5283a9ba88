"""The project's downstream task: digits seen through a "new sensor" that inverts the contrast.

    python examples/digits/make_task.py [-o task.npz] [--model-out digits.mlir]

The digits CNN (`digits_cnn.onnx`, trained on upright digits by `train_float_cnn.py`) is imported with
the project's PTQ, calibrated on 256 upright training images (`import_model`): the model as it would
ship. The task shows it the same classes through a sensor with inverted contrast (x -> 1 - x), which
drops its test accuracy from 98.6% to 20.0% (`main` prints both); fine-tuning on the device has to
recover it.

Split, fixed: the test split is the 500 images `data.py` holds out from pre-training (so no test image
was ever seen by the model, in either contrast), the train split (fine-tuning data) the other 1297.
Written as an npz in the DESIGN.md convention, images quantized with the imported model's
`qtrain.input_q` (int8 NHWC [N, 16, 16, 1]):

    image, label            the train split (what a search or a fine-tuning run may use)
    test_image, test_label  the held-out test split (only for the final accuracy)
    input_q                 float64 [scale, zero_point] the images were quantized with; tools that take
                            int8 images check it against the model's `qtrain.input_q`

`build_task(module)` builds the same arrays in memory (tests, benchmarks). `--model-out` writes the
imported forward-only model the images belong to, for `qtrain-search-scheme` / `qtrain-compile`
(an `.onnx` given to those tools needs `--calibration` with the same 256 images to get the same
input quantization; the .mlir avoids that).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL_ONNX = HERE / "digits_cnn.onnx"
CALIBRATION_IMAGES = 256


def _data():  # noqa: ANN202 (the sibling module data.py, importable without installing examples/)
    sys.path.insert(0, str(HERE))
    try:
        import data  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(HERE))
    return data


def invert(images: np.ndarray) -> np.ndarray:
    """The new sensor: float images in [0, 1] with inverted contrast."""
    return (1.0 - np.asarray(images, dtype=np.float32)).astype(np.float32)


def calibration_images() -> np.ndarray:
    """The upright float NCHW images the shipped model was calibrated on (first 256 of the train split)."""
    train_x, _, _, _ = _data().load_split()
    return train_x[:CALIBRATION_IMAGES]


def import_model():  # noqa: ANN201 (-> xdsl ModuleOp; xdsl imported lazily)
    """The digits CNN as forward-only qtrain IR, PTQ-calibrated on upright digits."""
    from qtrain.frontends.onnx import import_onnx

    return import_onnx(MODEL_ONNX, calibration=calibration_images())


def build_task(module=None) -> dict[str, np.ndarray]:  # noqa: ANN001 (ModuleOp | None)
    """The task's arrays (see the module docstring), quantized with `module`'s input parameters
    (default: `import_model()`)."""
    from qtrain.frontends.onnx import input_quant, quantize_images

    if module is None:
        module = import_model()
    train_x, train_y, test_x, test_y = _data().load_split()
    quant = input_quant(module)
    return {
        "image": quantize_images(invert(train_x), quant),
        "label": train_y.astype(np.int64),
        "test_image": quantize_images(invert(test_x), quant),
        "test_label": test_y.astype(np.int64),
        "input_q": np.array([quant.scale, quant.zp], dtype=np.float64),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("task.npz"), help="task npz (default task.npz)")
    parser.add_argument("--model-out", type=Path, help="also write the imported forward-only model (.mlir)")
    args = parser.parse_args(argv)
    from qtrain.interpreter import run_forward

    module = import_model()
    task = build_task(module)
    np.savez(args.output, **task)  # pyright: ignore[reportArgumentType]
    print(f"wrote {args.output}: {len(task['label'])} train + {len(task['test_label'])} test images, "
          f"int8 NHWC {list(task['image'].shape[1:])}, input scale {task['input_q'][0]:.9g} "
          f"zero point {int(task['input_q'][1])}")
    if args.model_out:
        args.model_out.write_text(str(module) + "\n")
        print(f"wrote {args.model_out}")
    from qtrain.frontends.onnx import quantize_images

    _, _, test_x, test_y = _data().load_split()
    _, upright = run_forward(module, quantize_images(test_x, module))
    _, inverted = run_forward(module, task["test_image"])
    print(f"pre-trained model on the test split: upright {100 * np.mean(upright.argmax(1) == test_y):.1f}%, "
          f"inverted contrast {100 * np.mean(inverted.argmax(1) == test_y):.1f}%")


if __name__ == "__main__":
    main()
