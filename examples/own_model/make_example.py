"""Prepare your own float ONNX model and data for qtrain: the worked example of examples/README.md.

    python examples/own_model/make_example.py [-o my_example/] [--model YOUR.onnx] [--calibration-images 256]

What a user with their own model does, on a data set we ship (scikit-learn's digits, via
examples/digits/data.py) and with examples/digits/digits_cnn.onnx playing "your model" (a float CNN
trained on upright digits; any float ONNX CNN with a [1, C, H, W] input works the same way):

1. `cal.npz` — calibration images for the post-training quantization of a float model: key `image`,
   float32 NCHW [N, C, H, W], preprocessed exactly like the model's training input (here: the first 256
   upright training digits, values in [0, 1]). Every tool that reads the .onnx takes it as
   `--calibration cal.npz` and derives the same int8 quantization from it.
2. `my_task.npz` — the fine-tuning task: the same classes seen through a new sensor (here the camera
   is mounted rotated by 90 degrees, which drops the model's held-out accuracy to about 15%).
   Keys (DESIGN.md conventions):
       image       int8 NHWC [N, H, W, C]: training images, quantized with the model's input parameters
       label       int64 [N]
       test_image  int8 NHWC [M, H, W, C]: held-out images (only for the final accuracy)
       test_label  int64 [M]
       input_q     float64 [scale, zero_point] the images were quantized with (the tools check it)
   The input parameters are those the importer derives from cal.npz (`qtrain.input_q` on @forward in
   the output of `qtrain-import-onnx MODEL --calibration cal.npz`); quantizing is
   q = clamp(round_half_even(x / scale) + zero_point, -128, 127), then NCHW -> NHWC.
3. `my_task_float.npz` — the same task as float32 NCHW (`image`, `label`, `test_image`, `test_label`),
   a form `qtrain-search-scheme` also accepts (it quantizes it itself); `qtrain-run`, `qtrain-interpret`
   and hence `qtrain-demo` need the int8 file.
4. `my.onnx` — a copy of the model, so that the commands read like yours.

It prints the commands to run next (examples/README.md explains each).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DIGITS = HERE.parent / "digits"
DEFAULT_MODEL = DIGITS / "digits_cnn.onnx"


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, held-out images, held-out labels): float32 NCHW [N, 1, 16, 16] in [0, 1]."""
    sys.path.insert(0, str(DIGITS))
    try:
        import data  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(DIGITS))
    return data.load_split()


def new_sensor(images: np.ndarray) -> np.ndarray:
    """The task's sensor: the same scene rotated by 90 degrees (float NCHW in, float NCHW out)."""
    return np.ascontiguousarray(np.rot90(images, 1, axes=(2, 3))).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("my_example"), help="folder (default my_example/)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the float ONNX model (default: the "
                        "digits CNN)")
    parser.add_argument("--calibration-images", type=int, default=256, help="images in cal.npz (256)")
    args = parser.parse_args(argv)

    from qtrain.frontends.onnx import import_onnx, input_quant, quantize_images
    from qtrain.interpreter import run_forward

    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    model = out / "my.onnx"
    shutil.copyfile(args.model, model)
    train_x, train_y, test_x, test_y = load_digits_split()

    # 1. calibration images: float NCHW, the model's own input domain (upright digits)
    calibration = out / "cal.npz"
    np.savez(calibration, image=train_x[: args.calibration_images])

    # 2. the task, quantized with the input parameters the importer derives from cal.npz
    module = import_onnx(model, calibration=calibration)
    q = input_quant(module)
    task_x, task_test_x = new_sensor(train_x), new_sensor(test_x)
    task = {
        "image": quantize_images(task_x, q),
        "label": train_y.astype(np.int64),
        "test_image": quantize_images(task_test_x, q),
        "test_label": test_y.astype(np.int64),
        "input_q": np.array([q.scale, q.zp], dtype=np.float64),
    }
    np.savez(out / "my_task.npz", **task)  # pyright: ignore[reportArgumentType]
    # 3. the same task in float NCHW
    np.savez(out / "my_task_float.npz", image=task_x, label=task["label"], test_image=task_test_x,
             test_label=task["test_label"])

    _, before = run_forward(module, task["test_image"])
    _, upright = run_forward(module, quantize_images(test_x, q))
    print(f"wrote {out}/: my.onnx, cal.npz ({args.calibration_images} float NCHW images), my_task.npz "
          f"({len(task['label'])} train + {len(task['test_label'])} test images, int8 NHWC "
          f"{list(task['image'].shape[1:])}, input scale {q.scale:.9g} zero point {q.zp}), my_task_float.npz")
    print(f"the int8 model on the held-out images: {100 * np.mean(upright.argmax(1) == test_y):.1f}% as trained, "
          f"{100 * np.mean(before.argmax(1) == test_y):.1f}% through the new sensor")
    print("next (examples/README.md):")
    print(f"  qtrain-demo --model {model} --data {out}/my_task.npz --calibration {calibration} --budget-kb 24 "
          f"-o {out}/demo")


if __name__ == "__main__":
    main()
