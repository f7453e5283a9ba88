"""Instructions per MAC of the kernel library on QEMU's Cortex-M7 (mps2-an500, `-icount shift=0`).

    python -m qtrain.tools.bench_kernels [--only SUBSTRING] [--keep DIR] [--json]

Every case is one kernel call on random data with a layer shape of mcunet-5fps (128 x 128 input;
layers 24..41 are the ones its 49 KB sparse-update scheme runs backward through). The calls are
compiled twice with clang for the Cortex-M7, with the portable C path (QTRAIN_USE_DSP=0) and with the
ARMv7E-M DSP path (QTRAIN_USE_DSP=1, the default there), and each call is timed with the board
layer's instruction counter (CMSDK timer, 40 instructions per tick, plus the few instructions of the
counter read). MACs are the multiply-accumulates of the op (forward: OH*OW*C_out*KH*KW*C_in/groups;
input gradient: the same; weight gradient: OH*OW*C_out*KH*KW*k; the fused pointwise-depthwise kernel:
those of its two convolutions, so it compares with the sum of the two separate kernels' counts, listed
with it). Element-wise kernels report
instructions per element instead. For scale: the reference engine's whole mcunet-5fps/49kb training
step took 167,992,975 instructions for 32.69 M MACs (5.1 per MAC).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qtrain import numerics
from qtrain.targets.armv7em import build
from qtrain.targets.armv7em.kernels import (
    buffer_size_conv2d,
    buffer_size_conv2d_input_grad,
    buffer_size_depthwise_input_grad,
    buffer_size_depthwise_weight_grad,
    buffer_size_fused_pointwise_depthwise,
    calls,
)
from qtrain.targets.armv7em.kernels.calls import Call, ConvParams, In, Weight
from qtrain.tools.plumbing import ArgumentParser, run_tool

SRAM_BUDGET = 200 * 1024  # outputs + scratch of one benchmark program (the board has 320 KB)
FLASH_BUDGET = 700 * 1024


@dataclass
class Case:
    name: str
    kind: str  # "forward", "backward" or "update"
    work: int  # MACs, or elements for element-wise kernels
    unit: str  # "MAC" or "elem"
    call: Call


def _out_hw(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _conv_case(rng: np.random.Generator, name: str, kernel: str, input_shape: Sequence[int], cout: int, k: int,
               stride: int, pad: int, groups: int, *, mask: bool = False) -> Case:
    n, h, w, cin = input_shape
    x = rng.integers(-128, 128, input_shape, dtype=np.int8)
    weight = rng.integers(-127, 128, (cout, k, k, cin // groups), dtype=np.int8)
    bias = rng.integers(-1000, 1000, cout, dtype=np.int32)
    multiplier = numerics.conv2d_multiplier(0.02, rng.uniform(0.002, 0.01, cout), 0.05)
    out_shape = (n, _out_hw(h, k, stride, pad), _out_hw(w, k, stride, pad), cout)
    params = ConvParams(input_zero_point=-5, output_zero_point=3, strides=(stride, stride), padding=(pad, pad),
                        groups=groups, clamp=(-128, 127))
    scratch = buffer_size_conv2d(kernel, input_shape, weight.shape, out_shape, (stride, stride))
    macs = out_shape[1] * out_shape[2] * cout * k * k * (cin // groups)
    call = calls.conv2d(kernel, x, Weight(weight), bias, multiplier, params, out_shape, scratch, mask=mask)
    return Case(name, "forward", macs, "MAC", call)


def _input_grad_case(rng: np.random.Generator, name: str, kernel: str, input_shape: Sequence[int], cout: int, k: int,
                     stride: int, pad: int, groups: int) -> Case:
    n, h, w, cin = input_shape
    weight = rng.integers(-127, 128, (cout, k, k, cin // groups), dtype=np.int8)
    grad_shape = (n, _out_hw(h, k, stride, pad), _out_hw(w, k, stride, pad), cout)
    grad = rng.standard_normal(grad_shape).astype(np.float32)
    params = ConvParams(strides=(stride, stride), padding=(pad, pad), groups=groups)
    if kernel == "depthwise":
        scratch = buffer_size_depthwise_input_grad(input_shape, weight.shape, (stride, stride), (pad, pad))
    else:
        scratch = buffer_size_conv2d_input_grad(kernel, weight.shape)
    macs = grad_shape[1] * grad_shape[2] * cout * k * k * (cin // groups)
    return Case(name, "backward", macs, "MAC",
                calls.conv2d_input_grad(kernel, grad, Weight(weight), params, input_shape, scratch))


def _weight_grad_case(rng: np.random.Generator, name: str, input_shape: Sequence[int], cout: int, k: int,
                      slice_channels: int, *, fused: str | None = None) -> Case:
    n, h, w, _ = input_shape
    x = rng.integers(-128, 128, (n, h, w, slice_channels), dtype=np.int8)
    grad = rng.standard_normal((n, h, w, cout)).astype(np.float32)
    params = ConvParams(input_zero_point=-7)
    filter_shape = (cout, k, k, slice_channels)
    macs = h * w * cout * k * k * slice_channels
    if fused is None:
        call = calls.conv2d_weight_grad(x, grad, params, filter_shape)
    else:
        dtype = np.int8 if fused == "s8" else np.float32
        param = rng.integers(-100, 100, filter_shape).astype(dtype)
        call = calls.conv2d_weight_grad_sgd_update(x, grad, params, param, 0.01, rng.uniform(1, 10, cout))
    return Case(name, "backward", macs, "MAC", call)


def _depthwise_weight_grad_case(rng: np.random.Generator, name: str, input_shape: Sequence[int], k: int, stride: int,
                                pad: int) -> Case:
    n, h, w, c = input_shape
    x = rng.integers(-128, 128, input_shape, dtype=np.int8)
    grad_shape = (n, _out_hw(h, k, stride, pad), _out_hw(w, k, stride, pad), c)
    grad = rng.standard_normal(grad_shape).astype(np.float32)
    params = ConvParams(input_zero_point=-7, strides=(stride, stride), padding=(pad, pad), groups=c)
    filter_shape = (c, k, k, 1)
    scratch = buffer_size_depthwise_weight_grad(input_shape, grad_shape, filter_shape, (stride, stride))
    macs = grad_shape[1] * grad_shape[2] * c * k * k
    return Case(name, "backward", macs, "MAC", calls.depthwise_weight_grad(x, grad, params, 0, filter_shape, scratch))


def _fused_case(rng: np.random.Generator, name: str, input_shape: Sequence[int], c_mid: int, k: int, stride: int,
                pad: int, scratch: int = 0) -> Case:
    """qtrain_fused_pointwise_depthwise_s8: a 1x1 conv to c_mid channels streamed into a k x k depthwise conv,
    given max(its minimum, `scratch`) bytes of scratch (a model's shared scratch area is often larger than the
    minimum; the kernel then takes fewer channel blocks). MACs are those of the two convolutions it replaces."""
    n, h, w, cin = input_shape
    x = rng.integers(-128, 128, input_shape, dtype=np.int8)
    pw = rng.integers(-127, 128, (c_mid, 1, 1, cin), dtype=np.int8)
    dw = rng.integers(-127, 128, (c_mid, k, k, 1), dtype=np.int8)
    pw_bias = rng.integers(-1000, 1000, c_mid, dtype=np.int32)
    dw_bias = rng.integers(-1000, 1000, c_mid, dtype=np.int32)
    pw_m = numerics.conv2d_multiplier(0.02, rng.uniform(0.002, 0.01, c_mid), 0.05)
    dw_m = numerics.conv2d_multiplier(0.05, rng.uniform(0.002, 0.01, c_mid), 0.05)
    out_shape = (n, _out_hw(h, k, stride, pad), _out_hw(w, k, stride, pad), c_mid)
    pw_params = ConvParams(input_zero_point=-5, output_zero_point=3)
    dw_params = ConvParams(input_zero_point=3, output_zero_point=-2, strides=(stride, stride), padding=(pad, pad),
                           groups=c_mid)
    scratch = max(scratch, buffer_size_fused_pointwise_depthwise(input_shape, pw.shape, dw.shape, out_shape,
                                                                 (stride, stride)))
    macs = h * w * c_mid * cin + out_shape[1] * out_shape[2] * c_mid * k * k
    call = calls.fused_pointwise_depthwise(x, pw, pw_bias, pw_m, pw_params, dw, dw_bias, dw_m, dw_params, out_shape,
                                           scratch)
    return Case(name, "forward", macs, "MAC", call)


def cases(rng: np.random.Generator) -> list[Case]:
    """The benchmark cases (mcunet-5fps layer shapes)."""
    out: list[Case] = [
        _conv_case(rng, "stem (small-k) 3x3/2 128x128x3->16", "small_k", (1, 128, 128, 3), 16, 3, 2, 1, 1),
        _conv_case(rng, "stem (generic) 3x3/2 128x128x3->16", "generic", (1, 128, 128, 3), 16, 3, 2, 1, 1),
        _conv_case(rng, "1x1 64x64x8->32", "1x1", (1, 64, 64, 8), 32, 1, 1, 0, 1),
        _conv_case(rng, "1x1 32x32x16->48", "1x1", (1, 32, 32, 16), 48, 1, 1, 0, 1),
        _conv_case(rng, "1x1 16x16x24->120", "1x1", (1, 16, 16, 24), 120, 1, 1, 0, 1),
        _conv_case(rng, "1x1 32x32x48->16", "1x1", (1, 32, 32, 48), 16, 1, 1, 0, 1),
        _conv_case(rng, "1x1 8x8x160->40", "1x1", (1, 8, 8, 160), 40, 1, 1, 0, 1),
        _conv_case(rng, "1x1 4x4x576->160", "1x1", (1, 4, 4, 576), 160, 1, 1, 0, 1),
        _conv_case(rng, "1x1 4x4x576->160 +mask", "1x1", (1, 4, 4, 576), 160, 1, 1, 0, 1, mask=True),
        _conv_case(rng, "dw 3x3/1 32x32x48", "depthwise", (1, 32, 32, 48), 48, 3, 1, 1, 48),
        _conv_case(rng, "dw 3x3/1 32x32x48 +mask", "depthwise", (1, 32, 32, 48), 48, 3, 1, 1, 48, mask=True),
        _conv_case(rng, "dw 3x3/2 64x64x32", "depthwise", (1, 64, 64, 32), 32, 3, 2, 1, 32),
        _conv_case(rng, "dw 5x5/1 8x8x160", "depthwise", (1, 8, 8, 160), 160, 5, 1, 2, 160),
        _conv_case(rng, "dw 7x7/1 8x8x160", "depthwise", (1, 8, 8, 160), 160, 7, 1, 3, 160),
        _conv_case(rng, "dw 7x7/2 32x32x48", "depthwise", (1, 32, 32, 48), 48, 7, 2, 3, 48),
        _conv_case(rng, "dw (generic) 3x3/1 32x32x48", "generic", (1, 32, 32, 48), 48, 3, 1, 1, 48),
        # the fused kernel, each with the two separate kernels it replaces (listed above or here)
        _fused_case(rng, "fused 64x64x8->32 + dw 3x3/2", (1, 64, 64, 8), 32, 3, 2, 1),
        _fused_case(rng, "fused 64x64x8->32 + dw 3x3/2 6KB", (1, 64, 64, 8), 32, 3, 2, 1, 6144),
        _fused_case(rng, "fused 64x64x8->32 + dw 3x3/2 12KB", (1, 64, 64, 8), 32, 3, 2, 1, 12288),
        _fused_case(rng, "fused 32x32x16->48 + dw 3x3/1", (1, 32, 32, 16), 48, 3, 1, 1),
        _fused_case(rng, "fused 32x32x16->48 + dw 3x3/1 6KB", (1, 32, 32, 16), 48, 3, 1, 1, 6144),
        _fused_case(rng, "fused 32x32x16->48 + dw 7x7/2", (1, 32, 32, 16), 48, 7, 2, 3),
        _fused_case(rng, "fused 32x32x16->48 + dw 7x7/2 6KB", (1, 32, 32, 16), 48, 7, 2, 3, 6144),
        _conv_case(rng, "1x1 8x8x40->160", "1x1", (1, 8, 8, 40), 160, 1, 1, 0, 1),
        _fused_case(rng, "fused 8x8x40->160 + dw 7x7/1", (1, 8, 8, 40), 160, 7, 1, 3),
        _fused_case(rng, "fused 8x8x40->160 + dw 7x7/1 6KB", (1, 8, 8, 40), 160, 7, 1, 3, 6144),
        _conv_case(rng, "generic 3x3/1 16x16x16->16", "generic", (1, 16, 16, 16), 16, 3, 1, 1, 1),
        _input_grad_case(rng, "in-grad 1x1 4x4x576<-160", "1x1", (1, 4, 4, 576), 160, 1, 1, 0, 1),
        _input_grad_case(rng, "in-grad 1x1 8x8x48<-144", "1x1", (1, 8, 8, 48), 144, 1, 1, 0, 1),
        _input_grad_case(rng, "in-grad dw 3x3/1 8x8x144", "depthwise", (1, 8, 8, 144), 144, 3, 1, 1, 144),
        _input_grad_case(rng, "in-grad dw 5x5/1 4x4x384", "depthwise", (1, 4, 4, 384), 384, 5, 1, 2, 384),
        _input_grad_case(rng, "in-grad dw 7x7/2 8x8x240", "depthwise", (1, 8, 8, 240), 240, 7, 2, 3, 240),
        _input_grad_case(rng, "in-grad generic 3x3/1 8x8x16<-16", "generic", (1, 8, 8, 16), 16, 3, 1, 1, 1),
        _weight_grad_case(rng, "w-grad 1x1 8x8 12->144", (1, 8, 8, 48), 144, 1, 12),
        _weight_grad_case(rng, "w-grad 1x1 8x8 24->240", (1, 8, 8, 48), 240, 1, 24),
        _weight_grad_case(rng, "w-grad+sgd(s8) 1x1 8x8 24->240", (1, 8, 8, 48), 240, 1, 24, fused="s8"),
        _weight_grad_case(rng, "w-grad+sgd(f32) 1x1 8x8 24->240", (1, 8, 8, 48), 240, 1, 24, fused="f32"),
        _weight_grad_case(rng, "w-grad classifier 160->10", (1, 1, 1, 160), 10, 1, 160),
        _weight_grad_case(rng, "w-grad generic 3x3 8x8 16->16", (1, 8, 8, 16), 16, 3, 16),
        _depthwise_weight_grad_case(rng, "w-grad dw 3x3/1 8x8x144", (1, 8, 8, 144), 3, 1, 1),
    ]
    n = 16 * 16 * 48
    a = rng.integers(-128, 128, n, dtype=np.int8)
    b = rng.integers(-128, 128, n, dtype=np.int8)
    add = calls.Call("qtrain_add_s8", [In(a), In(b), calls.I32(n), calls.F32(0.7), calls.F32(0.4), calls.F32(3.5),
                                       calls.I32(-128), calls.I32(127), calls.Out((n,), np.dtype(np.int8)),
                                       calls.Null()], returns="void")
    out.append(Case("add 16x16x48", "forward", n, "elem", add))
    g = rng.standard_normal(n).astype(np.float32)
    mask = rng.random(n) < 0.9
    out.append(Case("requant_grad 16x16x48 +mask", "backward", n, "elem",
                    calls.requant_grad(g.reshape(1, 16, 16, 48), mask.reshape(1, 16, 16, 48),
                                       rng.uniform(0.1, 1, 48))))
    p8 = rng.integers(-128, 128, (240, 1, 1, 24), dtype=np.int8)
    out.append(Case("sgd s8 240x24", "update", p8.size, "elem",
                    calls.sgd_update(p8, rng.standard_normal(p8.shape).astype(np.float32), 0.01,
                                     rng.uniform(1, 10, 240))))
    return out


def _group(all_cases: Sequence[Case]) -> list[list[Case]]:
    """Cases packed into programs that fit the board's Flash and SRAM."""
    groups: list[list[Case]] = [[]]
    sram = flash = 0
    for case in all_cases:
        case_sram = sum(o.start().nbytes for o in case.call.outputs) + max(
            (a.size for a in case.call.args if isinstance(a, calls.Scratch)), default=0)
        case_flash = sum(np.asarray(a.array).nbytes for a in case.call.args if isinstance(a, In))
        case_flash += sum(np.asarray(a.data).nbytes for a in case.call.args if isinstance(a, Weight))
        if groups[-1] and (sram + case_sram > SRAM_BUDGET or flash + case_flash > FLASH_BUDGET):
            groups.append([])
            sram = flash = 0
        groups[-1].append(case)
        sram += case_sram
        flash += case_flash
    return groups


def measure(all_cases: Sequence[Case], workdir: Path, *, dsp: bool,
            progress: Callable[[str], None] | None = None) -> dict[str, int]:
    """Instruction counts per case name for one build variant."""
    counts: dict[str, int] = {}
    for i, group in enumerate(_group(all_cases)):
        source = workdir / f"bench_{'dsp' if dsp else 'portable'}_{i}.c"
        source.write_text(calls.c_program([(c.name, c.call, None) for c in group], count=True))
        elf = build.build_firmware([source, *build.kernel_sources()], source.with_suffix(".elf"), "qemu",
                                   harness=False, defines=[f"QTRAIN_USE_DSP={1 if dsp else 0}"])
        if progress:
            progress(f"running {elf.path.name}")
        process = build.run_firmware(elf.path, timeout=600)
        if process.returncode != 0:
            raise RuntimeError(f"{elf.path.name} failed ({process.returncode}):\n{process.stderr}")
        for match in re.finditer(r"^count (.+) (\d+)$", process.stderr, re.MULTILINE):
            counts[match.group(1)] = int(match.group(2))
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="run only the cases whose name contains this")
    parser.add_argument("--keep", type=Path, default=None, help="keep the generated programs in this folder")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    for tool in ("clang", "ld.lld", "qemu-system-arm"):
        build.find_tool(tool)
    rng = np.random.default_rng(2024)
    selected = [c for c in cases(rng) if args.only is None or args.only in c.name]
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        portable = measure(selected, workdir, dsp=False)
        dsp = measure(selected, workdir, dsp=True)
    rows = [{"case": c.name, "kind": c.kind, "unit": c.unit, "work": c.work,
             "portable": portable[c.name], "dsp": dsp[c.name]} for c in selected]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'case':<36}{'kind':<10}{'work':>10} {'unit':<5}{'portable':>12}{'/unit':>7}{'dsp':>12}{'/unit':>7}")
    for r in rows:
        print(f"{r['case']:<36}{r['kind']:<10}{r['work']:>10} {r['unit']:<5}{r['portable']:>12}"
              f"{r['portable'] / r['work']:>7.2f}{r['dsp']:>12}{r['dsp'] / r['work']:>7.2f}")
    return 0


if __name__ == "__main__":
    run_tool("bench_kernels", lambda: main(sys.argv[1:]), sys.argv[1:])
