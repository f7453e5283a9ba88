"""scikit-learn's bundled digits (8x8, values 0..16) as the float NCHW images the digits CNN takes.

Numpy only (no torch), so tests and tools can rebuild exactly the images the model was trained on:
each image is scaled to [0, 1] and upscaled 2x (nearest neighbour) to 1x16x16. The split is fixed:
a seeded permutation of the 1797 samples, the last `HELDOUT` of which are held out from training
(and from calibration).
"""

from __future__ import annotations

import numpy as np

SEED = 0
HELDOUT = 500
IMAGE_SIZE = 16


def preprocess(images_8x8: np.ndarray) -> np.ndarray:
    """[N, 8, 8] digit images with values 0..16 -> float32 NCHW [N, 1, 16, 16] in [0, 1]."""
    x = np.asarray(images_8x8, dtype=np.float32) / 16.0
    x = x.repeat(2, axis=1).repeat(2, axis=2)
    return x[:, None, :, :]


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, held-out images, held-out labels); images float32 NCHW."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(SEED).permutation(len(digits.images))
    images = preprocess(digits.images[order])
    labels = digits.target[order].astype(np.int64)
    return images[:-HELDOUT], labels[:-HELDOUT], images[-HELDOUT:], labels[-HELDOUT:]
