"""`qtrain-opt` as a user sees it: exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from testpaths import LIT_INPUTS


def run_opt(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "qtrain.tools.qtrain_opt", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)


def test_valid_model_exits_zero(tiny_model_path: Path):
    result = run_opt(str(tiny_model_path), "-p", "qtrain-verify-quant-chain")
    assert result.returncode == 0, result.stderr
    assert "func.func @forward" in result.stdout


def test_verifier_error_exit_2_without_traceback():
    result = run_opt(str(LIT_INPUTS / "invalid_conv.mlir"))
    assert result.returncode == 2
    assert result.stderr.startswith("qtrain-opt: error: qtrain.conv2d: output must be tensor<1x4x4x4xi8>")
    assert "Traceback" not in result.stderr


def test_parse_error_exit_2():
    result = run_opt(stdin='%x = "test.op"() : () -> tensor<1x4xi8>\n%y = qtrain.reshape %x :\n')
    assert result.returncode == 2
    assert "qtrain-opt: error:" in result.stderr and "Traceback" not in result.stderr


def test_bad_pass_option_exit_2(tiny_model_path: Path):
    result = run_opt(str(tiny_model_path), "-p", "qtrain-verify-quant-chain{bogus=1}")
    assert result.returncode == 2
    assert "bogus" in result.stderr and "Traceback" not in result.stderr


def test_debug_flag_shows_traceback():
    result = run_opt(str(LIT_INPUTS / "invalid_conv.mlir"), "--debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
