"""A 128x128 RGB 10-class downstream task for the paper's models, built offline from scikit-learn's digits.

    python examples/transfer/make_task.py [--model MODEL.pkl|.mlir] [--size 128] [--order K] [-o task128.npz] [--force]

The MCUNetV3 reference models (`../shared/models/tiny-training/*.pkl`) were pre-trained on ImageNet; the
task shows them something ImageNet does not contain: handwritten digits as a colour camera would see
them. Each of the 1,797 8x8 digits of `sklearn.datasets.load_digits` becomes a 128x128 RGB photo: the
digit, upscaled (bilinear) to a random size between 60% and 90% of the frame, slightly rotated and
offset, drawn in a random ink colour on a random two-colour gradient background (ink and background
at least 0.35 apart in luminance, so every image is legible), then blurred like a lens (Gaussian,
sigma 1 pixel) with sensor noise (sigma 0.03). Everything is seeded: the same command writes the
same bytes on every machine.

Split, fixed: a seeded stratified permutation holds out 500 images (50 per class) as `test_image` /
`test_label`; the other 1,297 are the fine-tuning data `image` / `label`. `--order K` (K >= 1) writes
the train split in another seeded order (the held-out split is unchanged), for accuracy measured over
several data orders; K = 0 (the default) is the fixed order.

Images are quantized with the model's input parameters (`qtrain.input_q` of the imported model:
`q = clip(round_half_even(x / s) + zp, -128, 127)`, x in [-1, 1] for the reference models, which take
s = 2/255, zp = 0) and written int8 NHWC in the DESIGN.md task convention, with `input_q`.
`build_task(...)` returns the same arrays in memory (tests, benchmarks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT.parent / "shared" / "models" / "tiny-training" / "mcunet-5fps.pkl"
SEED = 0
HELDOUT_PER_CLASS = 50
CLASSES = 10


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ink, background top-left, background bottom-right) RGB in [0, 1], ink far enough from both."""
    while True:
        ink, bg0, bg1 = rng.random((3, 3), dtype=np.float32)
        if min(abs(_luminance(ink) - _luminance(bg0)), abs(_luminance(ink) - _luminance(bg1))) >= 0.35:
            return ink, bg0, bg1


def render(digit_8x8: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One 8x8 digit (values 0..16) as a float32 HWC [size, size, 3] photo in [0, 1]."""
    from scipy import ndimage

    ink, bg0, bg1 = _colours(rng)
    # Where each output pixel samples the 8x8 digit: an inverse similarity transform (scale, rotation,
    # offset), bilinear, zero (no ink) outside the digit.
    scale = rng.uniform(0.6, 0.9) * size / 8.0
    angle = np.deg2rad(rng.uniform(-15.0, 15.0))
    centre = size / 2.0 + rng.uniform(-0.08, 0.08, size=2) * size
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
    offset = np.array([3.5, 3.5]) - rot @ centre
    coverage = ndimage.affine_transform(np.asarray(digit_8x8, np.float64) / 16.0, rot, offset=offset,
                                        output_shape=(size, size), order=1, mode="constant", cval=0.0)
    coverage = np.clip(coverage, 0.0, 1.0).astype(np.float32)[..., None]
    # A linear gradient between the two background colours along a random direction.
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    t = (direction[0] * (yy - 0.5) + direction[1] * (xx - 0.5)) / np.abs(direction).sum() + 0.5
    background = bg0 + (bg1 - bg0) * t[..., None]
    photo = background * (1.0 - coverage) + ink * coverage
    photo = ndimage.gaussian_filter(photo, sigma=(1.0, 1.0, 0.0))
    photo = photo + rng.normal(0.0, 0.03, size=photo.shape)
    return np.clip(photo, 0.0, 1.0).astype(np.float32)


def split() -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) into load_digits(): the fixed stratified split."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    rng = np.random.default_rng(SEED)
    held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:HELDOUT_PER_CLASS] for c in range(CLASSES)])
    held = rng.permutation(held)
    train = rng.permutation(np.setdiff1d(np.arange(len(labels)), held))
    return train, held


def float_images(size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(float32 NHWC [1797, size, size, 3] in [-1, 1], labels [1797]) in load_digits() order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SEED + 1)
    photos = np.stack([render(d, size, rng) for d in digits.images])
    return photos * 2.0 - 1.0, digits.target.astype(np.int64)


def quantize(images: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """float images -> int8 codes, `clip(round_half_even(x / s) + zp)` in float32 like the importers."""
    q = np.rint(images.astype(np.float32) / np.float32(scale)) + zp
    return np.clip(q, -128, 127).astype(np.int8)


def build_task(scale: float, zp: int, size: int = 128, order: int = 0) -> dict[str, np.ndarray]:
    """The task's arrays (DESIGN.md npz convention), images quantized with (scale, zp)."""
    images, labels = float_images(size)
    train, held = split()
    if order:
        train = np.random.default_rng(1000 + order).permutation(train)
    q = quantize(images, scale, zp)
    return {"image": q[train], "label": labels[train], "test_image": q[held], "test_label": labels[held],
            "input_q": np.array([scale, zp], dtype=np.float64)}


def model_input_q(path: Path) -> tuple[float, int]:
    """The input quantization of a reference .pkl or an imported .mlir model."""
    from qtrain.frontends.tiny_training import input_quant

    if path.suffix == ".pkl":
        from qtrain.frontends.tiny_training import import_tiny_training

        module = import_tiny_training(path, num_classes=CLASSES)
    else:
        from qtrain.dialects import load_module

        module = load_module(path)
    quant = input_quant(module)
    return float(quant.scale), int(quant.zp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="the model whose input quantization the images take (.pkl or imported .mlir; "
                             "default: the reference mcunet-5fps.pkl)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--order", type=int, default=0, help="train-split order: 0 fixed, K >= 1 another seeded one")
    parser.add_argument("-o", "--output", type=Path, default=Path("task128.npz"))
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"make_task.py: error: {args.model} does not exist (pass --model MODEL.pkl|.mlir)", file=sys.stderr)
        return 2
    if args.size < 16 or args.order < 0:
        print("make_task.py: error: --size must be >= 16 and --order >= 0", file=sys.stderr)
        return 2
    if args.output.exists() and not args.force:
        print(f"make_task.py: error: {args.output} exists (pass --force to replace it)", file=sys.stderr)
        return 2
    scale, zp = model_input_q(args.model)
    task = build_task(scale, zp, args.size, args.order)
    # Written next to the target and renamed over it, so an interrupted run never leaves half a file.
    partial = args.output.with_name(args.output.name + ".partial.npz")
    np.savez_compressed(partial, **task)
    partial.replace(args.output)
    print(f"wrote {args.output}: {len(task['label'])} train + {len(task['test_label'])} held-out images, int8 NHWC "
          f"{list(task['image'].shape[1:])}, quantized with scale {scale:.6g} zero point {zp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
