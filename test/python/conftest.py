"""Shared pytest set-up: puts this folder on sys.path so tests can `from testpaths import ...`."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testpaths import LIT_INPUTS  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    return LIT_INPUTS / "tiny_model.mlir"


@pytest.fixture(autouse=True)
def _signal_handlers_do_not_leak():
    """Every test starts with the default SIGINT / SIGTERM handling and leaves it so: an ignored SIGINT
    left behind by one test (an ignored signal stays ignored across exec) made the Ctrl-C tests that ran
    after it on the same xdist worker see tools that cannot be interrupted."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
