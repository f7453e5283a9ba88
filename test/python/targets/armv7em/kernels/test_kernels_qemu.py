"""The kernel library built for the Cortex-M7 (clang, the DSP path) and run on QEMU mps2-an500.

One generated program runs a selection of calls and compares every output byte for byte with golden
data computed on the host: int8 forward outputs and masks from qtrain.numerics, fp32
backward outputs from the host build of the same kernels (the same C with -ffp-contract=off and fmaf
gives the same bits on x86-64 and on the M7's FPU). Also checks that the portable and DSP firmware
builds agree, and that fmaf really became VFMA (no libcall: there is no libm on the target).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from armv7em_testing import needs_qemu
from test_kernels_backward import GRAD_CASES, input_grad_kernel, input_grad_scratch, make_grad, saved_input
from test_kernels_forward import BAND_CASES, CONV_CASES, ConvCase, kernel_of, make_conv, mirror_size
from test_kernels_fused import CASES as FUSED_CASES
from test_kernels_fused import fused_call, make_fused
from test_kernels_inplace import CASES as IN_PLACE_CASES
from test_kernels_inplace import InPlaceCase, expected_buffer, in_place_call, packed_mask
from test_kernels_inplace_backward import CASES as IN_PLACE_GRAD_CASES
from test_kernels_inplace_backward import in_place_call as in_place_grad_call

from qtrain import numerics
from qtrain.targets.armv7em import build, kernels
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import F32, I32, Call, In, Out

pytestmark = needs_qemu

FORWARD = ["1x1 even zero point", "1x1 odd channels and pixels", "1x1 master slice", "1x1 int8 slice in the middle",
           "dw 3x3/2 odd size",
           "dw 7x7/1 small image", "dw int8 slice", "dw 3x5 asymmetric", "small-k 3x3/2 rgb", "1x1", "generic grouped",
           "generic depthwise multiplier 2", "generic master slice"]

FORWARD_NO_MASK = ["1x1", "1x1 even zero point", "small-k 3x3/2 even zero point", "1x1 odd channels and pixels",
                   "1x1 relu no bias", "1x1 master slice",
                   "1x1 stride 2 batch 2", "dw 3x3/1", "dw 3x3/2 odd size", "dw 5x5/1", "dw 7x7/2",
                   "dw 7x7/1 small image", "small-k 3x3/2 rgb", "small-k 5x5 two channels"]
"""Inference calls (no mask): the assembly fast paths of the Cortex-M7 build take these."""
DEPTHWISE_MORE_SCRATCH = ["dw 3x3/1", "dw 3x3/2 odd size", "dw 5x5/1", "dw 7x7/2", "dw 7x7/1 small image",
                          "dw master slice", "dw 3x3/2 tf padding", "dw 3x3/1 16 channels",
                          "dw 5x5/2 16 channels", "dw 7x7/1 8 channels"]
POINTWISE_MORE_SCRATCH = ["1x1", "1x1 master slice", "1x1 relu no bias", "1x1 stride 2 batch 2",
                          "1x1 int8 slice in the middle"]
"""Pointwise calls with room to widen every weight row (qtrain_quad_widen; C_in a multiple of 8 takes the
widened loop, 20 falls back to the int8 one)."""
FEW_PIXELS = ConvCase("1x1 few pixels wide", (1, 2, 4, 64), 48, (1, 1), zx=7, zy=-6)
"""Eight pixels of 64 channels: with 2 quads x 8 x 64 bytes for the unpacked pixels and 16 widened rows of
20 + 2 * 64 bytes beyond the minimum, the rows go in three blocks (qtrain_quad_blocked)."""
FEW_PIXELS_BLOCKED_EXTRA = 2 * 8 * 64 + 16 * (20 + 2 * 64)
SMALL_K_MORE_SCRATCH = ["small-k 3x3/2 rgb", "small-k 3x3/2 even zero point"]
"""The stem with room for its channel pairs led by their biases and multipliers."""


def _in_place_selection() -> list[InPlaceCase]:
    """A few in-place cases (test_kernels_inplace.py) for the Cortex-M7: the first case of each kind."""
    kinds = [
        lambda c: c.alignment == "tail" and c.mask and c.conv.input_shape[0] == 2 and c.conv.slice is None,
        lambda c: c.alignment == "tail" and c.conv.slice is not None and c.conv.slice[2] == "master",
        lambda c: c.conv.kernel == (1, 1) and c.conv.strides != (1, 1) and c.mask and c.conv.slice is not None,
        lambda c: c.conv.kernel == (1, 1) and c.conv.cout == c.conv.input_shape[3] and c.conv.strides == (1, 1),
        lambda c: c.conv.kernel == (3, 3) and c.conv.strides == (2, 2) and c.mask and c.conv.slice is not None,
        lambda c: c.conv.kernel == (7, 7) and c.conv.input_shape[0] == 2 and c.mask,
        lambda c: c.conv.kernel == (5, 5) and c.conv.strides == (1, 1) and c.conv.padding[0] == 2,
    ]
    return [next(c for c in IN_PLACE_CASES if kind(c)) for kind in kinds]


FUSED = ["3x3/2 mcunet-like", "7x7/2 odd block", "3x5 asymmetric stride 1x2", "3x3/1 batch 2",
         "5x5/2 relu6-like clamps", "5x5/1 no biases"]

BACKWARD = ["1x1 master slice", "1x1 stride 2 batch 2", "classifier", "dw 3x3/2", "dw 7x7/2", "dw master slice",
            "generic grouped", "generic master slice"]
BACKWARD_MORE_SCRATCH = ["dw 3x3/1 16 channels", "dw 7x7/2 8 channels", "dw 5x5/1 20 channels"]
"""Depthwise input gradients with room for eight channels at a time (the assembly loop)."""


def _cases() -> list[tuple[str, Call, list[np.ndarray] | None]]:
    out: list[tuple[str, Call, list[np.ndarray] | None]] = []
    by_name = {c.name: c for c in CONV_CASES}
    for name in FORWARD:
        data = make_conv(by_name[name], seed=5)
        kernel = kernel_of(data.case)
        call = calls.conv2d(kernel, data.x, data.weight, data.bias, data.multiplier, data.params, data.output_shape,
                            mirror_size(data, kernel))
        out.append((f"conv {name}", call, [data.y, np.packbits(data.mask.reshape(-1), bitorder="little")]))
    for name in FORWARD_NO_MASK:
        data = make_conv(by_name[name], seed=7)
        kernel = kernel_of(data.case)
        call = calls.conv2d(kernel, data.x, data.weight, data.bias, data.multiplier, data.params, data.output_shape,
                            mirror_size(data, kernel), mask=False)
        out.append((f"conv {name} no mask", call, [data.y]))
    for case in BAND_CASES:  # the four-channel engine over bands of output rows
        data = make_conv(case, seed=9)
        for mask in (False, True):
            call = calls.conv2d("depthwise", data.x, data.weight, data.bias, data.multiplier, data.params,
                                data.output_shape, mirror_size(data, "depthwise") + 6000, mask=mask)
            expected = [data.y, *([np.packbits(data.mask.reshape(-1), bitorder="little")] if mask else [])]
            out.append((f"conv {case.name}{' mask' if mask else ''}", call, expected))
    for name in DEPTHWISE_MORE_SCRATCH:  # the four-channel engine: whole padded planes in scratch
        data = make_conv(by_name[name], seed=9)
        for mask in (False, True):
            call = calls.conv2d("depthwise", data.x, data.weight, data.bias, data.multiplier, data.params,
                                data.output_shape, mirror_size(data, "depthwise") + 65536, mask=mask)
            expected = [data.y, *([np.packbits(data.mask.reshape(-1), bitorder="little")] if mask else [])]
            out.append((f"conv {name} +scratch{' mask' if mask else ''}", call, expected))
    for i, case in enumerate(_in_place_selection()):
        data = make_conv(case.conv)
        for kernel in ("1x1" if case.conv.kernel == (1, 1) else "depthwise", "wrapper"):
            call, initial = in_place_call(data, kernel, case.alignment, mask=case.mask, seed=i)
            expected = [expected_buffer(data, case.alignment, initial), *([packed_mask(data)] if case.mask else [])]
            out.append((f"in place ({case.alignment}) {kernel} {case.conv.name}", call, expected))

    # the fused pointwise -> depthwise kernel, with its minimum scratch and with room for one channel block
    # and bands of output rows
    by_fused_name = {c.name: c for c in FUSED_CASES}
    for name in FUSED:
        data = make_fused(by_fused_name[name], seed=5)
        out.append((f"fused {name}", fused_call(data), [data.y]))
        out.append((f"fused {name} +scratch", fused_call(data, scratch=data.scratch + 8192), [data.y]))
        out.append((f"fused {name} +32K", fused_call(data, scratch=data.scratch + 32768), [data.y]))

    rng = np.random.default_rng(21)
    a = rng.integers(-128, 128, 45, dtype=np.int8)
    b = rng.integers(-128, 128, 45, dtype=np.int8)
    q = {"lhs_scale": 0.06551136076450348, "lhs_zero_point": -17, "rhs_scale": 0.030629737302660942,
         "rhs_zero_point": -20, "output_scale": 0.008892484940588474, "output_zero_point": -13}
    y, mask = numerics.add_with_mask(a, b, **q, clamp=(-100, 127))
    ra, rb, c = numerics.add_constants(*q.values())
    out.append(("add", Call("qtrain_add_s8", [In(a), In(b), I32(45), F32(ra), F32(rb), F32(c), I32(-100), I32(127),
                                              Out((45,), np.dtype(np.int8)), Out((6,), np.dtype(np.uint8))],
                            returns="void"), [y, np.packbits(mask, bitorder="little")]))
    x = rng.integers(-128, 128, (1, 4, 4, 24), dtype=np.int8)
    m = numerics.avgpool_multiplier(0.05, 0.02, (4, 4))
    y, mask = numerics.avgpool_with_mask(x, kernel=(4, 4), strides=(1, 1), input_scale=0.05, input_zero_point=3,
                                         output_scale=0.02, output_zero_point=-1)
    out.append(("avgpool global", Call("qtrain_avgpool_s8", [
        calls.Dims(x.shape), In(x), I32(4), I32(4), I32(1), I32(1), I32(3), F32(m), I32(-1), calls.Dims(y.shape),
        Out(y.shape, np.dtype(np.int8)), Out((3,), np.dtype(np.uint8))]), [y, np.packbits(mask, bitorder="little")]))
    f = np.concatenate([rng.normal(0, 3, 60), (np.arange(-20, 20) + 0.5) * 0.037]).astype(np.float32)
    out.append(("quantize", Call("qtrain_quantize_f32_s8", [In(f), I32(f.size), F32(0.037), I32(4),
                                                             Out(f.shape, np.dtype(np.int8))], returns="void"),
                [numerics.quantize(f, scale=0.037, zero_point=4)]))
    return out


def _widened_cases() -> list[tuple[str, Call, list[np.ndarray] | None]]:
    """The widened pointwise and stem loops (scratch beyond the minimum), against qtrain.numerics; a program of
    their own (the generated main keeps every call's arguments in its frame, and the other program's is near
    the 16 KB stack)."""
    out: list[tuple[str, Call, list[np.ndarray] | None]] = []
    by_name = {c.name: c for c in CONV_CASES}
    for name in POINTWISE_MORE_SCRATCH:  # widened weight rows
        data = make_conv(by_name[name], seed=11)
        for mask in (False, True):
            call = calls.conv2d("1x1", data.x, data.weight, data.bias, data.multiplier, data.params,
                                data.output_shape, mirror_size(data, "1x1") + 65536, mask=mask)
            expected = [data.y, *([np.packbits(data.mask.reshape(-1), bitorder="little")] if mask else [])]
            out.append((f"conv {name} +scratch{' mask' if mask else ''}", call, expected))
    data = make_conv(FEW_PIXELS, seed=12)
    for mask in (False, True):  # widened rows in blocks, out of place and in place (head-aligned)
        call = calls.conv2d("1x1", data.x, data.weight, data.bias, data.multiplier, data.params, data.output_shape,
                            mirror_size(data, "1x1") + FEW_PIXELS_BLOCKED_EXTRA, mask=mask)
        expected = [data.y, *([np.packbits(data.mask.reshape(-1), bitorder="little")] if mask else [])]
        out.append((f"conv {FEW_PIXELS.name} blocks{' mask' if mask else ''}", call, expected))
        call, initial = in_place_call(data, "1x1", "head", mask=mask, seed=13, extra=FEW_PIXELS_BLOCKED_EXTRA)
        expected = [expected_buffer(data, "head", initial), *([packed_mask(data)] if mask else [])]
        out.append((f"in place (head) {FEW_PIXELS.name} blocks{' mask' if mask else ''}", call, expected))
    for name in SMALL_K_MORE_SCRATCH:
        data = make_conv(by_name[name], seed=14)
        call = calls.conv2d("small_k", data.x, data.weight, data.bias, data.multiplier, data.params,
                            data.output_shape, mirror_size(data, "small_k") + 8192, mask=False)
        out.append((f"conv {name} +scratch", call, [data.y]))

    return out


def _backward_cases(library: object) -> list[tuple[str, Call, list[np.ndarray] | None]]:
    """Backward calls with their outputs from the host build."""
    out: list[tuple[str, Call, list[np.ndarray] | None]] = []
    by_name = {c.name: c for c in GRAD_CASES}
    # in place, with room for the eight-row / eight-channel loops: the first case of each kind and placement
    kinds = {(c.grad.kernel == (1, 1), c.alignment): c for c in reversed(IN_PLACE_GRAD_CASES)}
    for case in kinds.values():
        data = make_grad(case.grad, seed=case.seed)
        kernel = input_grad_kernel(case.grad)
        call, _ = in_place_grad_call(data, kernel, case.alignment, seed=case.seed, extra=16384)
        out.append((f"input grad in place ({case.alignment}) {case.grad.name} +scratch", call, None))
    for name in BACKWARD_MORE_SCRATCH:
        case = by_name[name]
        data = make_grad(case, seed=6)
        out.append((f"input grad {name} +scratch", calls.conv2d_input_grad(
            "depthwise", data.grad, data.weight, data.params, case.input_shape,
            input_grad_scratch(data, "depthwise") + 16384), None))
    for name in BACKWARD:
        case = by_name[name]
        data = make_grad(case, seed=6)
        kernel = input_grad_kernel(case)
        out.append((f"input grad {name}", calls.conv2d_input_grad(kernel, data.grad, data.weight, data.params,
                                                                  case.input_shape, input_grad_scratch(data, kernel)),
                    None))
        saved, _ = saved_input(data)
        if case.depthwise:
            filter_shape = (saved.shape[3], *case.kernel, 1)
            scratch = kernels.buffer_size_depthwise_weight_grad(saved.shape, case.output_shape, filter_shape,
                                                                case.strides)
            start = case.slice[0] if case.slice else 0
            out.append((f"weight grad {name}", calls.depthwise_weight_grad(saved, data.grad, data.params, start,
                                                                          filter_shape, scratch), None))
        else:
            filter_shape = (case.cout, *case.kernel, saved.shape[3] if case.groups == 1 else case.input_shape[3] //
                            case.groups)
            out.append((f"weight grad {name}", calls.conv2d_weight_grad(saved, data.grad, data.params, filter_shape),
                        None))
        if case.groups == 1:
            rng = np.random.default_rng(8)
            param8 = rng.integers(-128, 128, filter_shape, dtype=np.int8)
            out.append((f"fused s8 {name}", calls.conv2d_weight_grad_sgd_update(
                saved, data.grad, data.params, param8, 0.05, rng.uniform(20, 200, case.cout)), None))
            param32 = rng.uniform(-50, 50, filter_shape).astype(np.float32)
            out.append((f"fused f32 {name}", calls.conv2d_weight_grad_sgd_update(
                saved, data.grad, data.params, param32, 0.05, rng.uniform(1, 5, 1)), None))
    rng = np.random.default_rng(9)
    g = rng.standard_normal((1, 3, 5, 7)).astype(np.float32)
    out.append(("requant grad", calls.requant_grad(g, rng.random(g.shape) < 0.6, rng.uniform(0.1, 1, 7)), None))
    out.append(("bias grad", Call("qtrain_bias_grad_f32", [In(g), I32(15), I32(7), Out((7,), np.dtype(np.float32))],
                                  returns="void"), None))
    g16 = rng.standard_normal((1, 3, 5, 16)).astype(np.float32)  # channels a multiple of 8: the assembly loops
    out.append(("requant grad 16", calls.requant_grad(g16, rng.random(g16.shape) < 0.6, rng.uniform(0.1, 1, 16)),
                None))
    out.append(("bias grad 16", Call("qtrain_bias_grad_f32", [In(g16), I32(15), I32(16),
                                                               Out((16,), np.dtype(np.float32))], returns="void"),
                None))
    logits = (rng.standard_normal(10) * 3).astype(np.float32)
    out.append(("cross entropy", Call("qtrain_cross_entropy_f32", [In(logits), I32(10), I32(4),
                                                                   Out((10,), np.dtype(np.float32))], returns="f32"),
                None))
    p32 = rng.integers(-(2**31), 2**31, 12, dtype=np.int64).astype(np.int32)
    grad = (rng.standard_normal(12) * 1e9).astype(np.float32)
    out.append(("sgd s32", calls.sgd_update(p32, grad, 1.0, np.ones(1, np.float32)), None))
    resolved = []
    for name, call, _ in out:
        result, outputs = calls.run_host(library, call)  # type: ignore[arg-type]
        if call.returns == "status":
            assert result == 0, name
        if call.returns == "f32":
            outputs.append(np.array([result], dtype=np.float32))
        resolved.append((name, call, outputs))
    return resolved


def _run(program: str, folder: Path, name: str, dsp: bool) -> subprocess.CompletedProcess[str]:
    source = folder / f"{name}.c"
    source.write_text(program)
    elf = build.build_firmware([source, *build.kernel_sources()], folder / f"{name}.elf", "qemu", harness=False,
                               defines=[f"QTRAIN_USE_DSP={1 if dsp else 0}"])
    return build.run_firmware(elf.path, timeout=120)


@pytest.fixture(scope="module")
def program() -> str:
    library = host.cached_library(dsp=True)
    return calls.c_program([*_cases(), *_backward_cases(library)])


@pytest.mark.parametrize("dsp", [True, False], ids=["dsp", "portable"])
def test_widened_loops_on_qemu_match_the_golden_model(tmp_path: Path, dsp: bool) -> None:
    """Pointwise rows widened whole and in blocks (in place too), masks, slices, no bias, stride 2, and the
    stem's widened channel pairs: every output byte and mask bit as qtrain.numerics computes them."""
    program = calls.c_program(_widened_cases())
    process = _run(program, tmp_path, "widened_check", dsp)
    lines = process.stderr.splitlines()
    failures = [line for line in lines if line.startswith("FAIL")]
    assert not failures, "\n".join(failures)
    assert process.returncode == 0, process.stderr
    cases = sum(1 for line in program.splitlines() if line.startswith("    /* "))
    assert cases == 2 * len(POINTWISE_MORE_SCRATCH) + 4 + len(SMALL_K_MORE_SCRATCH)
    assert sum(1 for line in lines if line.startswith("ok ")) == cases


@pytest.mark.parametrize("dsp", [True, False], ids=["dsp", "portable"])
def test_kernels_on_qemu_match_the_host_bit_for_bit(tmp_path: Path, program: str, dsp: bool) -> None:
    process = _run(program, tmp_path, "kernel_check", dsp)
    lines = process.stderr.splitlines()
    failures = [line for line in lines if line.startswith("FAIL")]
    assert not failures, "\n".join(failures)
    assert process.returncode == 0, process.stderr
    cases = sum(1 for line in program.splitlines() if line.startswith("    /* "))
    assert cases > 40
    assert sum(1 for line in lines if line.startswith("ok ")) == cases


def test_fmaf_is_a_vfma_instruction_on_the_cortex_m7(tmp_path: Path) -> None:
    """The add kernel's fused multiply-adds compile to VFMA.F32 (and nothing calls a missing fmaf)."""
    source = build.KERNEL_DIR / "qtrain_add_s8.c"
    assembly = subprocess.run([build.find_tool("clang"), *build.compile_flags("qemu"), "-S", "-o", "-", str(source)],
                              capture_output=True, text=True, check=True).stdout
    assert len(re.findall(r"^\s*vfma\.f32\s", assembly, re.MULTILINE)) >= 2
    assert not re.search(r"\bbl?\s+fmaf\b", assembly)


def test_dsp_path_uses_the_simd_instructions() -> None:
    source = build.KERNEL_DIR / "qtrain_depthwise_conv2d_s8.c"
    assembly = subprocess.run([build.find_tool("clang"), *build.compile_flags("qemu"), "-S", "-o", "-", str(source)],
                              capture_output=True, text=True, check=True).stdout
    assert re.search(r"^\s*smlad\s", assembly, re.MULTILINE)
    portable = subprocess.run([build.find_tool("clang"), *build.compile_flags("qemu"), "-DQTRAIN_USE_DSP=0", "-S",
                               "-o", "-", str(source)], capture_output=True, text=True, check=True).stdout
    assert not re.search(r"^\s*smlad\s", portable, re.MULTILINE)
