"""Train a small float CNN on scikit-learn's digits and export it to ONNX (`digits_cnn.onnx`).

    python examples/digits/train_float_cnn.py [-o digits_cnn.onnx] [--epochs 40] [--export-npz DIR]

A dev-time script: it needs PyTorch (`pip install torch`) and scikit-learn; nothing else in qtrain
(tests included) imports torch. The network exercises what the ONNX importer's float path folds:

    conv 3x3 1->8 + BN + ReLU                       16x16x8
    conv 3x3/2 8->16 + BN + ReLU6                   8x8x16
    residual: conv 3x3 + BN + ReLU, conv 3x3 + BN, add, ReLU
    depthwise conv 3x3/2 + BN + ReLU                4x4x16
    pointwise conv 1x1 16->32 + BN + ReLU           4x4x32
    global average pool, flatten, linear 32->10

Exported with opset 13, BatchNormalization kept as separate nodes (TrainingMode.PRESERVE on an
eval-mode model, so the importer's BN folding is exercised) and a symbolic batch dimension.
Images: `data.py` (float NCHW [N, 1, 16, 16] in [0, 1]); the last 500 of the fixed permutation are
held out. `--export-npz DIR` also writes DIR/calibration.npz (256 training images, key `image`) and
DIR/heldout.npz (`image`, `label`) for `qtrain-import-onnx --calibration` and `qtrain-interpret`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import load_split  # noqa: E402


def build_model():  # -> torch.nn.Module (torch is imported lazily: a dev-time-only dependency)
    import torch.nn as nn

    def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]

    class Residual(nn.Module):
        def __init__(self, ch: int):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(ch, ch), nn.ReLU(), *conv_bn(ch, ch))
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x + self.body(x))

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *conv_bn(1, 8), nn.ReLU(),
                *conv_bn(8, 16, stride=2), nn.ReLU6(),
                Residual(16),
                *conv_bn(16, 16, stride=2, groups=16), nn.ReLU(),
                *conv_bn(16, 32, k=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
            )
            self.classifier = nn.Linear(32, 10)

        def forward(self, x):
            return self.classifier(self.features(x).flatten(1))

    return DigitsCNN()


def shifted(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random translation by up to 2 pixels (zero fill): the only augmentation."""
    out = np.zeros_like(x)
    for i in range(len(x)):
        dy, dx = rng.integers(-2, 3, size=2)
        src = x[i, :, max(0, -dy) : x.shape[2] - max(0, dy), max(0, -dx) : x.shape[3] - max(0, dx)]
        out[i, :, max(0, dy) : max(0, dy) + src.shape[1], max(0, dx) : max(0, dx) + src.shape[2]] = src
    return out


def train(epochs: int, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_train, y_train, x_test, y_test = load_split()
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x_train))
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            xb = torch.from_numpy(shifted(x_train[idx], rng))
            yb = torch.from_numpy(y_train[idx])
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        sched.step()
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"epoch {epoch + 1}: loss {loss.item():.4f}, held-out accuracy {accuracy(model, x_test, y_test):.4f}")
    return model


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model, path: Path) -> None:
    import torch

    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 16, 16),),
        str(path),
        dynamo=False,
        opset_version=13,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        training=torch.onnx.TrainingMode.PRESERVE,
        do_constant_folding=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE / "digits_cnn.onnx")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--export-npz", type=Path, metavar="DIR", help="also write calibration.npz and heldout.npz")
    args = parser.parse_args()
    model = train(args.epochs)
    export(model, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")
    if args.export_npz:
        x_train, _, x_test, y_test = load_split()
        args.export_npz.mkdir(parents=True, exist_ok=True)
        np.savez(args.export_npz / "calibration.npz", image=x_train[:256])
        np.savez(args.export_npz / "heldout.npz", image=x_test, label=y_test)
        print(f"wrote {args.export_npz}/calibration.npz and heldout.npz")


if __name__ == "__main__":
    main()
