"""Export torchvision's mobile CNNs to ONNX the way users do, for the import table of the importer's note.

    .venv-torch/bin/python examples/torchvision/export_models.py -o out/torchvision [--size 128] [--models ...]

Needs torch and torchvision (optional dependencies of this script only; not of qtrain or its tests) plus
onnx and onnxruntime. For each of mobilenet_v3_small, efficientnet_b0, mnasnet0_5, shufflenet_v2_x0_5,
squeezenet1_1 and resnet18 (10 classes, random weights from a fixed seed, BatchNormalization statistics
recalibrated on the task's images so activations have sane ranges) it writes, under OUT/MODEL/:

    legacy.onnx, dynamo.onnx (+ dynamo.onnx.data)   the float model by torch.onnx.export(dynamo=False,
                                                    opset 17) and by the default exporter (dynamo=True,
                                                    its default opset, weights as external data)
    {legacy,dynamo}.{qdq,qop}.onnx                  onnxruntime's static quantization of each (int8
                                                    activations and per-channel int8 weights, QDQ and
                                                    QOperator forms, calibrated on `calibration.npz`,
                                                    after onnxruntime's quant_pre_process)

and, once, OUT/calibration.npz (float NCHW `image`, 64 upright digits), OUT/heldout.npz (`image`,
`label`: the 500 held-out upright digits, the distribution the models are calibrated and pre-trained on)
and OUT/task.npz (the digits task at SIZE x SIZE: the inverted-contrast digits of examples/digits,
upscaled, replicated to 3 channels and standardized; `image` float NCHW train split, `label`,
`test_image`, `test_label`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODELS = ("mobilenet_v3_small", "efficientnet_b0", "mnasnet0_5", "shufflenet_v2_x0_5", "squeezenet1_1", "resnet18")
EXPORTERS = ("legacy", "dynamo")
CALIBRATION = 64
SEED = 0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sys.path.insert(0, str(HERE.parent / "digits"))
    try:
        import data  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return data.load_split()


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """[N, 1, 16, 16] in [0, 1] -> [N, 3, size, size] standardized (bilinear, half-pixel centres)."""
    n, _, h, _ = images.shape
    src = (np.arange(size) + 0.5) * h / size - 0.5
    i0 = np.clip(np.floor(src).astype(int), 0, h - 1)
    i1 = np.clip(i0 + 1, 0, h - 1)
    frac = np.clip(src - i0, 0.0, 1.0).astype(np.float32)
    rows = images[:, 0][:, i0] * (1 - frac)[None, :, None] + images[:, 0][:, i1] * frac[None, :, None]
    out = rows[:, :, i0] * (1 - frac)[None, None, :] + rows[:, :, i1] * frac[None, None, :]
    out = (out - 0.5) / 0.25
    return np.repeat(out[:, None], 3, axis=1).astype(np.float32)


def make_task(size: int) -> dict[str, np.ndarray]:
    train_x, train_y, test_x, test_y = digits_split()
    return {"image": resize(1.0 - train_x, size), "label": train_y, "test_image": resize(1.0 - test_x, size),
            "test_label": test_y}


def pretrain(model, images: np.ndarray, labels: np.ndarray, epochs: int, lr: float = 2e-3) -> None:  # noqa: ANN001
    """A few epochs of Adam on the upright digits (the 'pre-trained model as shipped' of the QEMU demo)."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = np.random.default_rng(SEED)
    model.train()
    for epoch in range(epochs):
        order = generator.permutation(len(images))
        total = 0.0
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            x, y = torch.from_numpy(images[batch]), torch.from_numpy(labels[batch])
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        print(f"  pre-training epoch {epoch + 1}: loss {total / len(order):.3f}", flush=True)
    model.eval()


def build(name: str, classes: int, calibration: np.ndarray, width_mult: float = 1.0, pretrain_epochs: int = 0,
          size: int = 128, lr: float = 2e-3):  # noqa: ANN201 (torch module)
    import torch
    import torchvision

    torch.manual_seed(SEED)
    extra = {"width_mult": width_mult} if width_mult != 1.0 else {}
    model = getattr(torchvision.models, name)(weights=None, num_classes=classes, **extra)
    if pretrain_epochs:
        train_x, train_y, _, _ = digits_split()
        pretrain(model, resize(train_x, size), train_y, pretrain_epochs, lr)
    # BatchNormalization: cumulative statistics of the calibration images, instead of random-init (0, 1)
    # or the momentum-averaged ones of a short pre-training.
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(calibration), 16):
            model(torch.from_numpy(calibration[start:start + 16]))
    return model.eval()


def accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:  # noqa: ANN001
    import torch

    with torch.no_grad():
        logits = np.concatenate([model(torch.from_numpy(images[i:i + 50])).numpy() for i in range(0, len(images), 50)])
    return float(np.mean(logits.argmax(1) == labels))


def export(model, exporter: str, size: int, path: Path) -> None:  # noqa: ANN001
    import torch

    x = torch.zeros(1, 3, size, size)
    if exporter == "legacy":
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"],
                          output_names=["logits"])
    else:
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["image"], output_names=["logits"])
        program.save(str(path), external_data=True)


def quantize(src: Path, calibration: np.ndarray, fmt: str, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{name: calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(src), str(pre))
    form = QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator
    quantize_static(str(pre), str(out), Reader(), quant_format=form, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    pre.unlink()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("out/torchvision"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--exporters", nargs="+", default=list(EXPORTERS), choices=EXPORTERS)
    parser.add_argument("--no-quantize", action="store_true", help="float models only")
    parser.add_argument("--width-mult", type=float, default=1.0,
                        help="width multiplier of mobilenet_v3_small (default 1.0)")
    parser.add_argument("--pretrain-epochs", type=int, default=0,
                        help="pre-train on the upright digits (train split) instead of random weights (default 0)")
    parser.add_argument("--lr", type=float, default=2e-3,
                        help="Adam's learning rate for --pretrain-epochs (default 2e-3; at that rate SqueezeNet's "
                             "ReLU-ended classifier stayed at chance, loss 2.303, for 3 epochs: 5e-4 learns)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    task = make_task(args.size)
    train_x, _, test_x, test_y = digits_split()
    calibration = resize(train_x[:CALIBRATION], args.size)  # upright digits: what the model was "made" on
    np.savez(args.output / "task.npz", **task)
    np.savez(args.output / "calibration.npz", image=calibration)
    np.savez(args.output / "heldout.npz", image=resize(test_x, args.size), label=test_y)
    for name in args.models:
        folder = args.output / name
        folder.mkdir(exist_ok=True)
        model = build(name, args.classes, calibration, args.width_mult if name.startswith("mobilenet_v3") else 1.0,
                      args.pretrain_epochs, args.size, args.lr)
        print(f"{name}: float top-1 {100 * accuracy(model, resize(test_x, args.size), test_y):.1f}% of the "
              f"held-out upright digits, {100 * accuracy(model, task['test_image'], test_y):.1f}% inverted",
              flush=True)
        for exporter in args.exporters:
            start = time.time()
            path = folder / f"{exporter}.onnx"
            export(model, exporter, args.size, path)
            if not args.no_quantize:
                for fmt in ("qdq", "qop"):
                    quantize(path, calibration, fmt, folder / f"{exporter}.{fmt}.onnx")
            print(f"{name} {exporter}: {time.time() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
