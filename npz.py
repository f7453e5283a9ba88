"""Reading the `.npz` files qtrain's tools and importers take (DESIGN.md "Command-line conventions"):
one reader, one error type (`NpzError`, a `UserError` naming the path), and the `image` / `label` checks.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from qtrain.errors import UserError


class NpzError(UserError):
    """An .npz input that is missing, unreadable, or does not hold what the tool needs."""


def read_npz(path: Path, what: str = "inputs") -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickles), or an `NpzError` naming the path."""
    path = Path(path)
    if path.is_dir():
        raise NpzError(f"cannot read {what} {path}: is a directory")
    if not path.is_file():
        raise NpzError(f"no such {what} file: {path}")
    if not zipfile.is_zipfile(path):
        raise NpzError(f"cannot read {path}: not an .npz archive (np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise NpzError(f"cannot read {path}: {' '.join(str(e).split())}") from None


def images_and_labels(arrays: dict[str, np.ndarray], path: Path, image_key: str = "image", label_key: str = "label",
                      *, need_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(images int8 [N, H, W, C], labels int32 [N] or None) from `arrays[image_key]` / `[label_key]`."""
    if image_key not in arrays:
        raise NpzError(f"{path} has no '{image_key}' array (keys: {', '.join(sorted(arrays)) or 'none'})")
    images = arrays[image_key]
    if images.dtype != np.int8 or images.ndim != 4 or len(images) == 0:
        raise NpzError(f"{path}: '{image_key}' must be int8 NHWC [N, H, W, C] (already quantized with the model's "
                       f"input parameters), got {images.dtype} {list(images.shape)}")
    if label_key not in arrays:
        if need_labels:
            raise NpzError(f"{path} has no '{label_key}' array, which training needs")
        return images, None
    labels = arrays[label_key]
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise NpzError(f"{path}: '{label_key}' must be integers of shape [{len(images)}], got {labels.dtype} "
                       f"{list(labels.shape)}")
    return images, labels.astype(np.int32)


