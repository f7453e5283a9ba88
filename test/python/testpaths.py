"""Paths shared by the pytest suite (import as `from testpaths import ...`; conftest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MODELS = SHARED / "models" / "tiny-training"
LIT_INPUTS = REPO / "test" / "lit" / "Inputs"


def require_shared_models() -> Path:
    """The reference models folder, or a clear skip when ../shared is absent on this machine."""
    if not MODELS.is_dir():
        pytest.skip(f"reference models not found: {MODELS} (../shared is absent on this machine)")
    return MODELS
