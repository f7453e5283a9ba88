"""Reading the `.npz` files qtrain's tools and importers take (DESIGN.md "Command-line conventions"):
one reader, one error type (`NpzError`, a `UserError` naming the path; both from `qtrain.files`, which
checks every member before loading it), and the `image` / `label` checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qtrain.files import NpzError as NpzError  # the one reader and its error (qtrain.files checks every member)
from qtrain.files import read_npz as read_npz

INT32 = np.iinfo(np.int32)


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
    return images, labels_int32(labels, path, label_key)


def labels_int32(labels: np.ndarray, path: Path | str, key: str = "label") -> np.ndarray:
    """Integer labels as int32, refusing any value int32 cannot hold (narrowing would wrap it into a
    valid class: 2^32 + 1 would become 1)."""
    labels = np.asarray(labels)
    if labels.size and (int(labels.min()) < INT32.min or int(labels.max()) > INT32.max):
        bad = int(labels.max()) if int(labels.max()) > INT32.max else int(labels.min())
        raise NpzError(f"{path}: '{key}' holds {bad}, which is not a class index (labels are int32)")
    return labels.astype(np.int32)
