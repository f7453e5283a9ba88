"""examples/transfer/make_task.py: the 128x128 task for the paper's models (fixed split, seeded, DESIGN.md npz)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from testpaths import REPO, require_shared_models

pytest.importorskip("sklearn", reason="the task's digits come with scikit-learn")
pytest.importorskip("scipy", reason="the task's rendering uses scipy.ndimage")

MAKER = REPO / "examples" / "transfer" / "make_task.py"


def maker():  # noqa: ANN201 (the example script as a module)
    spec = importlib.util.spec_from_file_location("transfer_make_task", MAKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_task() -> dict[str, np.ndarray]:
    # 32x32 renders the same digits with the same split in a fraction of the time of 128x128.
    return maker().build_task(2 / 255, 0, size=32)


def test_split_is_fixed_disjoint_and_stratified(small_task: dict[str, np.ndarray]) -> None:
    train, held = maker().split()
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == 1797
    assert np.array_equal(np.bincount(small_task["test_label"]), np.full(10, 50))
    assert small_task["image"].shape == (1297, 32, 32, 3) and small_task["image"].dtype == np.int8
    assert small_task["test_image"].shape == (500, 32, 32, 3)
    assert np.array_equal(maker().split()[1], held)  # the same split every time


def test_images_are_the_quantized_photos(small_task: dict[str, np.ndarray]) -> None:
    m = maker()
    photos, labels = m.float_images(32)
    assert photos.min() >= -1.0 and photos.max() <= 1.0
    train, held = m.split()
    expected = np.clip(np.rint(photos[held[:7]] / np.float32(2 / 255)), -128, 127).astype(np.int8)
    assert np.array_equal(small_task["test_image"][:7], expected)
    assert np.array_equal(small_task["label"], labels[train])
    # legible: ink differs from background, so the images span a real range of codes
    assert np.ptp(small_task["image"][:50].astype(np.int16), axis=(1, 2, 3)).min() > 60


def test_orders_permute_only_the_train_split(small_task: dict[str, np.ndarray]) -> None:
    other = maker().build_task(2 / 255, 0, size=32, order=2)
    assert np.array_equal(other["test_image"], small_task["test_image"])
    assert not np.array_equal(other["label"], small_task["label"])
    assert sorted(map(bytes, other["image"])) == sorted(map(bytes, small_task["image"]))


def test_command_writes_the_model_quantized_task(tmp_path) -> None:  # noqa: ANN001
    models = require_shared_models()
    out = tmp_path / "task.npz"
    result = subprocess.run([sys.executable, str(MAKER), "--model", str(models / "mcunet-5fps.pkl"), "--size", "24",
                             "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    task = np.load(out)
    assert task["input_q"].tolist() == pytest.approx([2 / 255, 0])
    assert task["image"].shape == (1297, 24, 24, 3)
    again = subprocess.run([sys.executable, str(MAKER), "--model", str(models / "mcunet-5fps.pkl"), "-o", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr and np.load(out)["image"].shape[1] == 24
    bad = subprocess.run([sys.executable, str(MAKER), "--model", str(tmp_path / "missing.pkl"), "-o", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "does not exist" in bad.stderr
