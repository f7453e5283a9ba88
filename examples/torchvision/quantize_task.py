"""The float task that export_models.py wrote, quantized for a model's int8 input (the npz the qtrain tools read).

    python examples/torchvision/quantize_task.py MODEL.mlir OUT/task.npz -o task_int8.npz

MODEL.mlir is the imported model (`qtrain-import-onnx MODEL.onnx --calibration OUT/calibration.npz -o
MODEL.mlir`); its `qtrain.input_q` quantizes the float NCHW images into int8 NHWC. Writes `image`, `label`
(the train split), `test_image`, `test_label` (held out) and `input_q`, the DESIGN.md task convention.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the imported model (.mlir)")
    parser.add_argument("task", type=Path, help="task.npz from export_models.py (float NCHW)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    from qtrain.frontends.onnx import input_quant, quantize_images
    from qtrain.interpreter import load_module

    quant = input_quant(load_module(args.model))
    task = np.load(args.task)
    np.savez(args.output, image=quantize_images(task["image"], quant), label=task["label"].astype(np.int64),
             test_image=quantize_images(task["test_image"], quant), test_label=task["test_label"].astype(np.int64),
             input_q=np.array([quant.scale, quant.zp], dtype=np.float64))
    print(f"wrote {args.output}: {len(task['label'])} train + {len(task['test_label'])} test images, int8 NHWC "
          f"{list(task['image'].shape[2:]) + [task['image'].shape[1]]}")


if __name__ == "__main__":
    main()
