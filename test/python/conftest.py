"""Shared pytest set-up: puts this folder on sys.path so tests can `from testpaths import ...`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testpaths import LIT_INPUTS  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    return LIT_INPUTS / "tiny_model.mlir"
