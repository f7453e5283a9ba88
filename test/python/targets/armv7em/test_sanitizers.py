"""The host build under AddressSanitizer and UndefinedBehaviorSanitizer (issue 17).

- The kernels called with shapes far too large for memory (firmware/huge_shapes.c): every call is
  refused and no size query or dimension check overflows (a signed overflow is a finding).
- Whole models, the generated C plus the kernels and the harness, built with
  -fsanitize=address,undefined: training steps and inference on edge-case images (all -128, all 127,
  uniformly random) for the digits CNN and mcunet-5fps with its 49kb scheme. No finding, and the
  sanitized build computes exactly what the plain host build does (the sanitizers must not change a
  bit of the numerics, so any difference would be a read of uninitialized or foreign memory).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from armv7em_testing import FIRMWARE_SOURCES, needs_clang
from testpaths import MODELS, require_shared_models

from qtrain.targets.armv7em import protocol
from qtrain.targets.armv7em.build import build_firmware, kernel_sources

SANITIZE = "address,undefined"
# Every finding fails the run (-fno-sanitize-recover=all in build_firmware); these make the report
# complete and the exit status nonzero for leaks too.
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}
FINDINGS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "LeakSanitizer", "runtime error:")


def run_clean(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd,
                            env={**os.environ, **SANITIZER_ENV}, stdin=subprocess.DEVNULL)
    report = result.stdout + result.stderr
    assert not any(f in report for f in FINDINGS), report[-4000:]
    assert result.returncode == 0, report[-4000:]
    return result


@needs_clang
def test_kernels_refuse_huge_shapes_without_overflow(tmp_path: Path):
    firmware = build_firmware([FIRMWARE_SOURCES / "huge_shapes.c", *kernel_sources()], tmp_path / "huge_shapes",
                              "host", harness=False, sanitize=SANITIZE).path
    result = run_clean([str(firmware)], tmp_path)
    assert result.stdout.strip().splitlines()[-1] == "0 failures", result.stdout


def edge_images(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([np.full(shape, -128, np.int8), np.full(shape, 127, np.int8),
                     rng.integers(-128, 128, shape, dtype=np.int8)])


def compile_host(model: Path, scheme: str, out: Path, *extra: str) -> Path:
    result = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_compile", str(model), "--scheme", scheme,
                             "--target", "host", "-o", str(out), *extra], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return out


def digits_model(tmp_path: Path) -> tuple[Path, str, tuple[str, ...]]:
    from qtrain.examples.digits.make_task import import_model

    path = tmp_path / "digits.mlir"
    path.write_text(str(import_model()) + "\n")
    return path, "full", ()


def mcunet_model(tmp_path: Path) -> tuple[Path, str, tuple[str, ...]]:
    require_shared_models()
    # int8 weight copies and the 320 KB board, as the host agreement test of the 49kb schemes builds it.
    return (MODELS / "mcunet-5fps.pkl", f"{MODELS / 'schemes.json'}#mcunet-5fps/49kb",
            ("--weight-storage", "i8", "--sram-kb", "320"))


def run_request(firmware: Path, request: bytes, work: Path) -> protocol.HarnessResult:
    (work / "in.bin").write_bytes(request)
    (work / "out.bin").unlink(missing_ok=True)
    run_clean([str(firmware), "in.bin", "out.bin"], work)
    result = protocol.decode_result((work / "out.bin").read_bytes())
    assert result.complete
    return result


@needs_clang
@pytest.mark.parametrize("model", [digits_model, mcunet_model], ids=["digits", "mcunet-5fps-49kb"])
def test_models_train_and_infer_under_asan_and_ubsan(model, tmp_path: Path):
    path, scheme, extra = model(tmp_path)
    build = compile_host(path, scheme, tmp_path / "build", *extra)
    sanitized = build_firmware([build / "model.c", *kernel_sources()], tmp_path / "sanitized", "host",
                               include_dirs=[build], sanitize=SANITIZE).path
    # The harness sees an image as its bytes (NHWC, int8): all -128, all 127, or random, the shape is moot.
    input_bytes = int((build / "model.h").read_text().split("#define QTRAIN_MODEL_INPUT_BYTES ")[1].split()[0])
    images = edge_images((1, 1, input_bytes))
    labels = np.array([0, 1, 2], np.int32)
    requests = {"train": protocol.encode_request(images, labels, protocol.MODE_TRAIN, steps=3),
                "infer": protocol.encode_request(images, labels, protocol.MODE_INFER)}
    for kind, request in requests.items():
        work = tmp_path / kind
        work.mkdir()
        got = run_request(sanitized, request, work)
        plain = run_request(build / "firmware", request, work)
        if kind == "train":
            assert np.all(np.isfinite(got.loss)) and len(got.loss) == 3
            assert np.array_equal(got.loss, plain.loss)
            assert set(got.params) == set(plain.params) and got.params
            for name, value in got.params.items():
                assert np.array_equal(value, plain.params[name]), name
        else:
            assert np.array_equal(got.output_q, plain.output_q) and np.array_equal(got.logits, plain.logits)
